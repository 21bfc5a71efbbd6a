//! Throttling evidence of one bin: latency and loss, each weighed on its own, then
//! together. Pure functions of the bin's readings and the series' baselines, so that each
//! decision is unit-tested here and the engine only steps its trackers.
//!
//! Why graded evidence: throttling used to need `throttle_min_bins` (2) bins of high
//! latency whatever its size, i.e. 2.1 bins from the start at best. A delay that is large
//! both against the path's own RTT and in milliseconds, or a delay seen together with
//! loss, is not noise: one bin of it is enough. One weak reading still needs the run.

use super::config::DetectConfig;

/// How much one bin says about throttling, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Evidence {
    None,
    /// Counts only over `throttle_min_bins` bins, or together with the other kind.
    Moderate,
    /// One bin is enough.
    Strong,
}

/// One-sided 95 % score (Wilson) bound: a loss figure from a few probes must not look as
/// sure as one from thousands (4 lost of 12 is at least 16 % lost, not 33 %).
const LOSS_Z: f64 = 1.645;

/// Fewer probes than this say nothing about loss, whatever they show.
pub(crate) const MIN_LOSS_PROBES: u64 = 8;

/// The lowest loss share compatible with `lost` of `sent` (Wilson score lower bound).
pub(crate) fn loss_lower_bound(lost: u64, sent: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    let n = sent as f64;
    let p = lost as f64 / n;
    let z2 = LOSS_Z * LOSS_Z;
    let centre = p + z2 / (2.0 * n);
    let half = LOSS_Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half) / (1.0 + z2 / n)).max(0.0)
}

/// Loss of one bin against its baseline: the share of the echoes (connects, queries) that
/// answered normally and no longer do, `(loss - base) / (1 - base)`, taken at the lower
/// bound of the bin's loss. Relative to what answered, because on sparse blocks most
/// echoes go unanswered anyway (a baseline "loss" of 0.6 is the addresses that never
/// answer): 30 % more loss there is 0.6 -> 0.72, an excess of 0.3.
pub(crate) fn loss_evidence(
    cfg: &DetectConfig,
    lost: u64,
    sent: u64,
    base: f64,
    degraded: bool,
) -> Evidence {
    if sent < MIN_LOSS_PROBES {
        return Evidence::None;
    }
    let base = base.clamp(0.0, 0.95);
    let excess = (loss_lower_bound(lost, sent) - base) / (1.0 - base);
    let inc = cfg.throttle_loss_increase;
    if excess >= inc {
        Evidence::Strong
    } else if excess >= inc * 0.5 || (degraded && excess >= inc * 0.25) {
        Evidence::Moderate
    } else {
        Evidence::None
    }
}

/// Latency of one bin against its baseline. `ratio`: the bin's median RTT ratio over its
/// baseline; `added_ms`: the median delay added per target in milliseconds (None for
/// aggregate series, whose unit is unknown: they are judged on the ratio alone and never
/// strongly).
///
/// - relative: `ratio >= throttle_rtt_factor` with at least `throttle_rtt_min_added_ms`
///   added (0.2 ms jittering to 1 ms on a fast path is not throttling);
/// - absolute: at least `throttle_rtt_added_ms` added and the RTT up by half (a slow path
///   that gets 150 ms slower is throttled even when its ratio stays under 3);
/// - both, or twice the absolute delay, is strong.
pub(crate) fn rtt_evidence(
    cfg: &DetectConfig,
    ratio: f64,
    added_ms: Option<f64>,
    degraded: bool,
) -> Evidence {
    let factor = cfg.throttle_rtt_factor;
    let Some(added) = added_ms else {
        let stay = degraded && ratio >= 1.0 + (factor - 1.0) * 0.5;
        return if ratio >= factor || stay {
            Evidence::Moderate
        } else {
            Evidence::None
        };
    };
    let min_added = cfg.throttle_rtt_min_added_ms;
    let abs_ms = cfg.throttle_rtt_added_ms;
    let relative = ratio >= factor && added >= min_added;
    let absolute = added >= abs_ms && ratio >= ABSOLUTE_MIN_RATIO;
    if (relative && added >= abs_ms) || (added >= 2.0 * abs_ms && ratio >= ABSOLUTE_MIN_RATIO) {
        return Evidence::Strong;
    }
    // Hysteresis: a throttled series stays so at half the thresholds.
    let stay = degraded
        && ((ratio >= 1.0 + (factor - 1.0) * 0.5 && added >= min_added * 0.5)
            || (added >= abs_ms * 0.5 && ratio >= 1.0 + (ABSOLUTE_MIN_RATIO - 1.0) * 0.5));
    if relative || absolute || stay {
        Evidence::Moderate
    } else {
        Evidence::None
    }
}

/// An absolute delay counts only when it is also a visible share of the path's RTT: on a
/// 600 ms satellite path 100 ms more is weather.
const ABSOLUTE_MIN_RATIO: f64 = 1.5;

/// What the bin's evidence means for the latency and loss trackers: (latency bad, loss
/// bad, one bin is enough). Latency and loss that agree in the same bin are strong
/// together; loss alone must be strong to count at all (a lossy bin without delay is more
/// often a lossy vantage than a throttle).
pub(crate) fn combine(rtt: Evidence, loss: Evidence) -> (bool, bool, bool) {
    let rtt_bad = rtt >= Evidence::Moderate;
    let loss_bad = loss == Evidence::Strong || (loss >= Evidence::Moderate && rtt_bad);
    let one_bin = rtt == Evidence::Strong || (rtt_bad && loss >= Evidence::Moderate);
    (rtt_bad, loss_bad, one_bin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Evidence::*;

    fn cfg() -> DetectConfig {
        DetectConfig::default()
    }

    #[test]
    fn loopback_jitter_is_no_evidence() {
        // 0.2 ms baseline jittering to 1 ms: five times the RTT, 0.8 ms added.
        assert_eq!(rtt_evidence(&cfg(), 5.0, Some(0.8), false), None);
        assert_eq!(rtt_evidence(&cfg(), 5.0, Some(0.8), true), None);
    }

    #[test]
    fn three_hundred_ms_added_is_strong_on_fast_and_slow_paths() {
        // 20 ms path: ratio 16; 200 ms path: ratio 2.5 (under the factor of 3).
        assert_eq!(rtt_evidence(&cfg(), 16.0, Some(300.0), false), Strong);
        assert_eq!(rtt_evidence(&cfg(), 2.5, Some(300.0), false), Strong);
        // Loopback lab: 0.2 ms + 300 ms.
        assert_eq!(rtt_evidence(&cfg(), 1500.0, Some(300.0), false), Strong);
    }

    #[test]
    fn one_hundred_fifty_ms_on_a_slow_path_is_moderate_and_loss_makes_it_one_bin() {
        // 200 ms path + 150 ms: ratio 1.75, under the factor, but far in milliseconds.
        let rtt = rtt_evidence(&cfg(), 1.75, Some(150.0), false);
        assert_eq!(rtt, Moderate);
        assert_eq!(combine(rtt, None), (true, false, false), "two bins alone");
        // 30 % loss over a 2 % baseline, 120 echoes: at its lower bound (25 %) moderate.
        let loss = loss_evidence(&cfg(), 38, 120, 0.02, false);
        assert_eq!(loss, Moderate);
        assert_eq!(combine(rtt, loss), (true, true, true), "one bin together");
        // Half of them lost: strong on its own.
        assert_eq!(loss_evidence(&cfg(), 60, 120, 0.02, false), Strong);
        // Even a loss only moderately sure (12 echoes) settles it in one bin.
        let few = loss_evidence(&cfg(), 4, 12, 0.0, false);
        assert_eq!(few, Moderate);
        assert_eq!(combine(rtt, few), (true, true, true));
    }

    #[test]
    fn satellite_weather_is_not_throttling() {
        // 600 ms path + 120 ms: ratio 1.2.
        assert_eq!(rtt_evidence(&cfg(), 1.2, Some(120.0), false), None);
    }

    #[test]
    fn a_small_relative_rise_needs_two_bins() {
        // 30 ms path tripled (+60 ms): relative only.
        let rtt = rtt_evidence(&cfg(), 3.0, Some(60.0), false);
        assert_eq!(rtt, Moderate);
        assert_eq!(combine(rtt, None), (true, false, false));
    }

    #[test]
    fn aggregate_latency_is_judged_on_its_ratio_and_never_strongly() {
        assert_eq!(rtt_evidence(&cfg(), 3.5, Option::None, false), Moderate);
        assert_eq!(rtt_evidence(&cfg(), 1.35, Option::None, false), None);
        assert_eq!(rtt_evidence(&cfg(), 2.2, Option::None, true), Moderate);
    }

    #[test]
    fn loss_from_few_probes_is_weighed_by_its_sample() {
        // 3 of 7: too few to say anything.
        assert_eq!(loss_evidence(&cfg(), 3, 7, 0.0, false), None);
        // 2 of 10 lost over a 5 % baseline: within noise.
        assert_eq!(loss_evidence(&cfg(), 2, 10, 0.05, false), None);
        // 30 of 100 over 5 %: its lower bound (23 %) is 0.19 above: moderate.
        assert_eq!(loss_evidence(&cfg(), 30, 100, 0.05, false), Moderate);
        // 40 of 100: strong.
        assert_eq!(loss_evidence(&cfg(), 40, 100, 0.05, false), Strong);
        assert!((loss_lower_bound(4, 12) - 0.159).abs() < 0.005);
    }

    #[test]
    fn loss_on_sparse_blocks_is_relative_to_what_answered() {
        // Blocks where 60 % of echoes never answer: 72 % is 30 % of the answers lost,
        // 0.24 above at its lower bound (an absolute rise of 0.12 would be nothing).
        assert_eq!(loss_evidence(&cfg(), 720, 1000, 0.6, false), Moderate);
        assert_eq!(loss_evidence(&cfg(), 750, 1000, 0.6, false), Strong);
        // 65 % there is noise in the availability, not throttling.
        assert_eq!(loss_evidence(&cfg(), 650, 1000, 0.6, false), None);
    }

    #[test]
    fn loss_alone_must_be_strong_and_then_still_needs_the_run() {
        assert_eq!(combine(None, Moderate), (false, false, false));
        assert_eq!(combine(None, Strong), (false, true, false));
    }
}
