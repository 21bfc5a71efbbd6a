//! When each target of a round is probed.
//!
//! Probes are spread evenly over the round with jitter, so a round never starts with a
//! burst, and never faster than the global probes-per-second cap; the order is shuffled
//! anew each round so no target is always probed at the same moment.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

/// The plan of one round: (offset from the round's start, target index), by offset.
pub fn plan(
    targets: usize,
    round: Duration,
    max_per_sec: u32,
    seed: u64,
) -> Vec<(Duration, usize)> {
    if targets == 0 {
        return Vec::new();
    }
    let even = round.as_secs_f64() / targets as f64;
    let spacing = even.max(1.0 / max_per_sec.max(1) as f64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..targets).collect();
    order.shuffle(&mut rng);
    order
        .into_iter()
        .enumerate()
        .map(|(slot, idx)| {
            // Jitter within the slot keeps the spacing on average and never reorders.
            let jitter: f64 = rng.random_range(0.0..spacing);
            (Duration::from_secs_f64(slot as f64 * spacing + jitter), idx)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_over_the_round_without_burst() {
        let p = plan(1000, Duration::from_secs(100), 10_000, 7);
        assert_eq!(p.len(), 1000);
        let mut seen = vec![false; 1000];
        for (_, i) in &p {
            seen[*i] = true;
        }
        assert!(seen.iter().all(|s| *s), "every target once");
        // No more than 2 probes in any 0.1 s window (0.1 s spacing on average).
        for w in p.windows(3) {
            assert!(w[2].0 - w[0].0 > Duration::from_millis(100), "{w:?}");
        }
        assert!(p.last().unwrap().0 < Duration::from_secs(100));
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0), "sorted");
    }

    #[test]
    fn rate_cap_stretches_the_round() {
        let p = plan(1000, Duration::from_secs(1), 100, 1);
        // 1000 probes at 100/s need ~10 s whatever the round says.
        assert!(p.last().unwrap().0 >= Duration::from_secs_f64(9.98));
    }

    #[test]
    fn order_changes_with_the_seed() {
        let a: Vec<usize> = plan(50, Duration::from_secs(50), 100, 1)
            .iter()
            .map(|x| x.1)
            .collect();
        let b: Vec<usize> = plan(50, Duration::from_secs(50), 100, 2)
            .iter()
            .map(|x| x.1)
            .collect();
        assert_ne!(a, b);
    }
}
