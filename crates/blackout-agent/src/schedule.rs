//! When each target of a round is probed.
//!
//! Probes are spread evenly over the round with jitter, so a round never starts with a
//! burst, and never faster than the global probes-per-second cap; the order is shuffled
//! anew each round so no target is always probed at the same moment.
//!
//! A round is generated on the fly ([`Round`] is an iterator): at the sustained scale
//! (4.2M blocks) a materialised plan would cost ~130 MB per round. The shuffle is a seeded
//! bijection of `0..n` (mixing rounds on the enclosing power of two, cycle-walked into
//! `0..n`), so every target comes exactly once without remembering which already came.

use std::time::Duration;

use rand::{Rng, RngExt, SeedableRng};

/// The plan of one round: (offset from the round's start, target index), by offset.
pub fn plan(
    targets: usize,
    round: Duration,
    max_per_sec: u32,
    seed: u64,
) -> Vec<(Duration, usize)> {
    Round::new(targets, round, max_per_sec, seed).collect()
}

/// A seeded permutation of `0..n` that needs no memory per element.
#[derive(Debug, Clone)]
struct Permutation {
    n: u64,
    mask: u64,
    shift: u32,
    keys: [u64; 3],
}

impl Permutation {
    fn new(n: u64, rng: &mut impl Rng) -> Self {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let bits = bits.max(1);
        Permutation {
            n,
            mask: if bits >= 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            },
            shift: (bits / 2).max(1),
            // Odd multipliers are bijections modulo a power of two.
            keys: [rng.next_u64() | 1, rng.next_u64() | 1, rng.next_u64()],
        }
    }

    /// One bijective mixing step on `0..=mask`: add, multiply by odd, xor-shift (each a
    /// bijection on the power-of-two range), twice.
    fn mix(&self, mut x: u64) -> u64 {
        for k in &self.keys[..2] {
            x = x.wrapping_add(self.keys[2]) & self.mask;
            x = x.wrapping_mul(*k) & self.mask;
            x ^= x >> self.shift;
        }
        x
    }

    /// Cycle-walking: the power-of-two range is less than twice `n`, so this takes two
    /// steps on average and stays a bijection of `0..n`.
    fn at(&self, i: u64) -> u64 {
        let mut x = self.mix(i);
        while x >= self.n {
            x = self.mix(x);
        }
        x
    }
}

/// One round's plan, lazily: yields (offset from the round's start, target index) in
/// order of offset.
#[derive(Debug)]
pub struct Round {
    perm: Permutation,
    spacing: f64,
    next: u64,
    rng: rand::rngs::StdRng,
}

impl Round {
    pub fn new(targets: usize, round: Duration, max_per_sec: u32, seed: u64) -> Round {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let even = round.as_secs_f64() / targets.max(1) as f64;
        let spacing = even.max(1.0 / max_per_sec.max(1) as f64);
        Round {
            perm: Permutation::new(targets as u64, &mut rng),
            spacing,
            next: 0,
            rng,
        }
    }

    /// Time between two consecutive probes, on average.
    pub fn spacing(&self) -> Duration {
        Duration::from_secs_f64(self.spacing)
    }
}

impl Iterator for Round {
    type Item = (Duration, usize);

    fn next(&mut self) -> Option<(Duration, usize)> {
        if self.next >= self.perm.n {
            return None;
        }
        let slot = self.next;
        self.next += 1;
        // Jitter within the slot keeps the spacing on average and never reorders.
        let jitter: f64 = self.rng.random_range(0.0..self.spacing);
        let offset = Duration::from_secs_f64(slot as f64 * self.spacing + jitter);
        Some((offset, self.perm.at(slot) as usize))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.perm.n - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Round {}

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

    #[test]
    fn every_size_is_a_permutation() {
        for n in [0usize, 1, 2, 3, 5, 64, 65, 1000, 4097, 65_537] {
            for seed in 0..3 {
                let mut seen = vec![false; n];
                for (_, i) in Round::new(n, Duration::from_secs(10), 1_000_000, seed) {
                    assert!(!seen[i], "n {n} seed {seed}: {i} twice");
                    seen[i] = true;
                }
                assert!(seen.iter().all(|s| *s), "n {n} seed {seed}: one missing");
            }
        }
    }

    #[test]
    fn shuffled_not_sequential() {
        // Neighbouring blocks are co-located: consecutive probes must not walk the list.
        let order: Vec<usize> = Round::new(10_000, Duration::from_secs(10), 1_000_000, 9)
            .map(|x| x.1)
            .collect();
        let adjacent = order
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) <= 1)
            .count();
        assert!(adjacent < 50, "{adjacent} consecutive neighbours");
        let first_tenth = order[..1000].iter().filter(|i| **i < 1000).count();
        assert!((50..200).contains(&first_tenth), "{first_tenth}");
    }
}
