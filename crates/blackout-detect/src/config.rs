//! Detection settings: every default is a documented constant.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use blackout_model::observation::Signal;

/// One collection round: the agents' default round is five minutes.
pub const DEFAULT_BIN_SECS: u64 = 300;
/// Slack after a bin's end before it is evaluated, for uploads in flight.
pub const DEFAULT_GRACE_SECS: u64 = 30;
/// Raw per-agent data of closed bins is kept this long so that late uploads re-aggregate
/// their bin; older late data (up to the baseline window) only adds to event evidence.
pub const DEFAULT_LATE_WINDOW_SECS: u64 = 3600;
/// Trailing window of the seasonal (same time of day) baseline.
pub const DEFAULT_BASELINE_WINDOW_SECS: u64 = 7 * 86_400;
/// Window of the warm-up fallback baseline (median of the recent past).
pub const DEFAULT_RECENT_WINDOW_SECS: u64 = 3 * 3600;
/// History needed before the first verdict (and at least `DEFAULT_MIN_WARMUP_BINS` bins).
pub const DEFAULT_WARMUP_SECS: u64 = 3600;
pub const DEFAULT_MIN_WARMUP_BINS: u32 = 4;
/// History after which reachability gets a first verdict (from a baseline of what was
/// seen so far), long before the full warm-up: with 300 s bins, one bin of history, so
/// the second bin is judged when it closes, 5 to 10 minutes after the start (plus the
/// grace).
pub const DEFAULT_FIRST_VERDICT_SECS: u64 = 300;
/// IODA's active-probing thresholds: warning below 80 %, outage below 50 % of the baseline.
pub const DEFAULT_WARNING_RATIO: f64 = 0.8;
pub const DEFAULT_OUTAGE_RATIO: f64 = 0.5;
/// Hysteresis: a degraded series is normal again only at 90 % of its baseline.
pub const DEFAULT_RECOVERY_RATIO: f64 = 0.9;
pub const DEFAULT_WARNING_MIN_BINS: u32 = 2;
pub const DEFAULT_OUTAGE_MIN_BINS: u32 = 1;
pub const DEFAULT_RECOVERY_MIN_BINS: u32 = 1;
/// A target is down when more than this share of the healthy agents that probed it failed.
pub const DEFAULT_DOWN_QUORUM: f64 = 0.5;
/// An agent is unhealthy in a bin when more than this share of its control probes failed.
pub const DEFAULT_CONTROL_FAIL_SHARE: f64 = 0.5;
/// Fewer targets with a verdict than this give no value (one target is an anecdote).
pub const DEFAULT_MIN_TARGETS: u32 = 2;
/// A drop counts only when at least this many targets are missing against the baseline
/// (observation input; aggregate series carry no target counts).
pub const DEFAULT_MIN_TARGETS_DOWN: u32 = 2;
/// Throttling: median RTT at least this many times its baseline ...
pub const DEFAULT_THROTTLE_RTT_FACTOR: f64 = 3.0;
/// ... and at least this many milliseconds above the targets' own averages (median), so
/// that jitter on sub-millisecond paths (a LAN, a busy vantage point) is not throttling.
pub const DEFAULT_THROTTLE_RTT_MIN_ADDED_MS: f64 = 10.0;
/// ... or at least this many milliseconds added (median) and the RTT up by half, even
/// below the factor (a 200 ms path 150 ms slower); both the factor and this, or twice
/// this, are throttling from one bin on.
pub const DEFAULT_THROTTLE_RTT_ADDED_MS: f64 = 100.0;
/// ... or probe loss on reachable targets at least this much above its baseline (as a
/// share of what answered; at the sample's lower bound): alone for `throttle_min_bins`,
/// half of it together with high latency in one bin.
pub const DEFAULT_THROTTLE_LOSS_INCREASE: f64 = 0.25;
pub const DEFAULT_THROTTLE_MIN_BINS: u32 = 2;
/// Service blocking: services failing while the network is normal for this many bins in
/// a row before a country's event opens (a network's: at least 2; after a network outage,
/// whose services often come back a bin later: 2).
pub const DEFAULT_SERVICE_MIN_BINS: u32 = 1;
/// National: more than this share of a country's networks (ASNs, regions) are disrupted.
pub const DEFAULT_NATIONAL_NETWORK_SHARE: f64 = 0.5;
/// National: at least this share of a country's signals are disrupted.
pub const DEFAULT_NATIONAL_SIGNAL_SHARE: f64 = 0.5;

/// BGP: a drop of a country's or network's visible share counts once it has lasted this
/// long (readings of the BGP sources, not bins): a route withdrawn and announced again
/// within it (path hunting, one noisy reading) is no event, a withdrawal that stays opens
/// or marks the event this long after it was heard, without waiting for a bin to close.
pub const DEFAULT_BGP_CONFIRM_SECS: u64 = 60;

/// Per-signal override of the ratio thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalThresholds {
    pub warning_ratio: f64,
    pub outage_ratio: f64,
}

/// Settings of the detection engine (the `[detect]` table of the collector's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    pub bin_secs: u64,
    pub grace_secs: u64,
    pub late_window_secs: u64,
    pub baseline_window_secs: u64,
    pub recent_window_secs: u64,
    pub warmup_secs: u64,
    pub min_warmup_bins: u32,
    pub first_verdict_secs: u64,
    pub warning_ratio: f64,
    pub outage_ratio: f64,
    pub recovery_ratio: f64,
    pub warning_min_bins: u32,
    pub outage_min_bins: u32,
    pub recovery_min_bins: u32,
    pub down_quorum: f64,
    pub control_fail_share: f64,
    pub min_targets: u32,
    pub min_targets_down: u32,
    pub throttle_rtt_factor: f64,
    pub throttle_rtt_min_added_ms: f64,
    pub throttle_rtt_added_ms: f64,
    pub throttle_loss_increase: f64,
    pub throttle_min_bins: u32,
    pub service_min_bins: u32,
    pub national_network_share: f64,
    pub national_signal_share: f64,
    pub bgp_confirm_secs: u64,
    /// Overrides of `warning_ratio`/`outage_ratio` per signal, e.g. `[detect.signals.dns]`.
    pub signals: BTreeMap<Signal, SignalThresholds>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            bin_secs: DEFAULT_BIN_SECS,
            grace_secs: DEFAULT_GRACE_SECS,
            late_window_secs: DEFAULT_LATE_WINDOW_SECS,
            baseline_window_secs: DEFAULT_BASELINE_WINDOW_SECS,
            recent_window_secs: DEFAULT_RECENT_WINDOW_SECS,
            warmup_secs: DEFAULT_WARMUP_SECS,
            min_warmup_bins: DEFAULT_MIN_WARMUP_BINS,
            first_verdict_secs: DEFAULT_FIRST_VERDICT_SECS,
            warning_ratio: DEFAULT_WARNING_RATIO,
            outage_ratio: DEFAULT_OUTAGE_RATIO,
            recovery_ratio: DEFAULT_RECOVERY_RATIO,
            warning_min_bins: DEFAULT_WARNING_MIN_BINS,
            outage_min_bins: DEFAULT_OUTAGE_MIN_BINS,
            recovery_min_bins: DEFAULT_RECOVERY_MIN_BINS,
            down_quorum: DEFAULT_DOWN_QUORUM,
            control_fail_share: DEFAULT_CONTROL_FAIL_SHARE,
            min_targets: DEFAULT_MIN_TARGETS,
            min_targets_down: DEFAULT_MIN_TARGETS_DOWN,
            throttle_rtt_factor: DEFAULT_THROTTLE_RTT_FACTOR,
            throttle_rtt_min_added_ms: DEFAULT_THROTTLE_RTT_MIN_ADDED_MS,
            throttle_rtt_added_ms: DEFAULT_THROTTLE_RTT_ADDED_MS,
            throttle_loss_increase: DEFAULT_THROTTLE_LOSS_INCREASE,
            throttle_min_bins: DEFAULT_THROTTLE_MIN_BINS,
            service_min_bins: DEFAULT_SERVICE_MIN_BINS,
            national_network_share: DEFAULT_NATIONAL_NETWORK_SHARE,
            national_signal_share: DEFAULT_NATIONAL_SIGNAL_SHARE,
            bgp_confirm_secs: DEFAULT_BGP_CONFIRM_SECS,
            signals: BTreeMap::new(),
        }
    }
}

fn share(key: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(format!("{key}: {v} must be in (0, 1]"))
    }
}

impl DetectConfig {
    /// The one rule for a healthy vantage point, used by the detector for each bin and
    /// by the collector for its latest readings: an agent is healthy when at most
    /// `control_fail_share` of its control probes failed. With no control probe there is
    /// nothing to judge, and the caller decides (see [`crate::Engine`]).
    pub fn vantage_healthy(&self, control_ok: u64, control_failed: u64) -> bool {
        control_failed as f64 <= self.control_fail_share * (control_ok + control_failed) as f64
    }

    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.bin_secs == 0 || self.bin_secs > 86_400 {
            return Err(format!("bin_secs: {} must be in 1..=86400", self.bin_secs));
        }
        if self.baseline_window_secs < self.bin_secs {
            return Err("baseline_window_secs: must be at least bin_secs".into());
        }
        if self.recent_window_secs < self.bin_secs {
            return Err("recent_window_secs: must be at least bin_secs".into());
        }
        for (key, v) in [
            ("warning_ratio", self.warning_ratio),
            ("outage_ratio", self.outage_ratio),
            ("recovery_ratio", self.recovery_ratio),
            ("down_quorum", self.down_quorum),
            ("control_fail_share", self.control_fail_share),
            ("throttle_loss_increase", self.throttle_loss_increase),
            ("national_network_share", self.national_network_share),
            ("national_signal_share", self.national_signal_share),
        ] {
            share(key, v)?;
        }
        if self.bgp_confirm_secs > self.late_window_secs.max(self.bin_secs) {
            return Err(format!(
                "bgp_confirm_secs: {} must not exceed late_window_secs (or bin_secs)",
                self.bgp_confirm_secs
            ));
        }
        if self.outage_ratio >= self.warning_ratio {
            return Err("outage_ratio: must be below warning_ratio".into());
        }
        if self.recovery_ratio < self.warning_ratio {
            return Err("recovery_ratio: must be at least warning_ratio".into());
        }
        for (key, v) in [
            ("warning_min_bins", self.warning_min_bins),
            ("outage_min_bins", self.outage_min_bins),
            ("recovery_min_bins", self.recovery_min_bins),
            ("throttle_min_bins", self.throttle_min_bins),
            ("service_min_bins", self.service_min_bins),
            ("min_targets", self.min_targets),
        ] {
            if v == 0 {
                return Err(format!("{key}: must be at least 1"));
            }
        }
        if !(self.throttle_rtt_factor.is_finite() && self.throttle_rtt_factor > 1.0) {
            return Err("throttle_rtt_factor: must be above 1".into());
        }
        if !(self.throttle_rtt_min_added_ms.is_finite() && self.throttle_rtt_min_added_ms >= 0.0) {
            return Err("throttle_rtt_min_added_ms: must be a number of milliseconds >= 0".into());
        }
        if !(self.throttle_rtt_added_ms.is_finite()
            && self.throttle_rtt_added_ms >= self.throttle_rtt_min_added_ms)
        {
            return Err(
                "throttle_rtt_added_ms: must be a number of milliseconds >= throttle_rtt_min_added_ms"
                    .into(),
            );
        }
        for (signal, t) in &self.signals {
            share(&format!("signals.{signal}.warning_ratio"), t.warning_ratio)?;
            share(&format!("signals.{signal}.outage_ratio"), t.outage_ratio)?;
            if t.outage_ratio >= t.warning_ratio {
                return Err(format!(
                    "signals.{signal}.outage_ratio: must be below its warning_ratio"
                ));
            }
            if self.recovery_ratio < t.warning_ratio {
                return Err(format!(
                    "signals.{signal}.warning_ratio: must not exceed recovery_ratio"
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn thresholds(&self, signal: Signal) -> (f64, f64) {
        match self.signals.get(&signal) {
            Some(t) => (t.warning_ratio, t.outage_ratio),
            None => (self.warning_ratio, self.outage_ratio),
        }
    }

    pub(crate) fn bins(&self, secs: u64) -> i64 {
        (secs.div_ceil(self.bin_secs)).max(1) as i64
    }

    /// Bins of history needed before the first verdict.
    pub fn warmup_bins(&self) -> u32 {
        (self.bins(self.warmup_secs) as u32).max(self.min_warmup_bins)
    }

    /// Bins of history before reachability's first verdict: at least one, never more
    /// than the full warm-up.
    pub fn first_verdict_bins(&self) -> u32 {
        (self.bins(self.first_verdict_secs) as u32)
            .max(1)
            .min(self.warmup_bins())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        assert_eq!(DetectConfig::default().validate(), Ok(()));
        type Mutation = fn(&mut DetectConfig);
        let cases: Vec<(Mutation, &str)> = vec![
            (|c| c.bin_secs = 0, "bin_secs"),
            (|c| c.outage_ratio = 0.9, "outage_ratio"),
            (|c| c.down_quorum = 1.5, "down_quorum"),
            (|c| c.recovery_ratio = 0.7, "recovery_ratio"),
            (|c| c.warning_min_bins = 0, "warning_min_bins"),
            (
                |c| {
                    c.signals.insert(
                        Signal::Dns,
                        SignalThresholds {
                            warning_ratio: 0.5,
                            outage_ratio: 0.6,
                        },
                    );
                },
                "signals.dns.outage_ratio",
            ),
        ];
        for (mutate, key) in cases {
            let mut c = DetectConfig::default();
            mutate(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(key), "{e} should name {key}");
        }
    }

    #[test]
    fn toml_rejects_unknown_keys() {
        let e = toml::from_str::<DetectConfig>("bin_sec = 60").unwrap_err();
        assert!(e.to_string().contains("bin_sec"), "{e}");
        let c: DetectConfig = toml::from_str(
            "bin_secs = 60\n[signals.dns]\nwarning_ratio = 0.7\noutage_ratio = 0.4\n",
        )
        .unwrap();
        assert_eq!(c.bin_secs, 60);
        assert_eq!(c.thresholds(Signal::Dns), (0.7, 0.4));
        assert_eq!(c.thresholds(Signal::Icmp), (0.8, 0.5));
    }
}
