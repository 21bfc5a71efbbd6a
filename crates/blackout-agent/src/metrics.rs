//! The agent's own metrics, served on its `metrics_listen` address so that a fleet can be
//! scraped directly, not only through the collector. One table ([`METRICS`]: name, type,
//! help, labels) declares them; the binary builds the registry from it and
//! `docs/metrics.md` is checked against it. The values live in [`STATS`], counted where
//! things happen (run loop, batcher, upload loop) and read at each scrape.
//!
//! Labels only from closed sets: `signal` and `result`. Four names are those the
//! collector relays for each agent (with an `agent` label) from the spool status the
//! agent sends with its uploads: same meaning, same name.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use blackout_model::observation::Signal;

use crate::spool::Spool;

pub const CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "blackout_agent_config_last_reload_successful";
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
    "blackout_agent_config_last_reload_success_timestamp_seconds";
pub const PROBES_TOTAL: &str = "blackout_agent_probes_total";
pub const OBSERVATIONS_SPOOLED_TOTAL: &str = "blackout_agent_observations_spooled_total";
/// Also relayed by the collector, per agent.
pub const SPOOL_OBSERVATIONS: &str = "blackout_agent_spool_observations";
pub const SPOOL_BYTES: &str = "blackout_agent_spool_bytes";
/// Also relayed by the collector, per agent.
pub const SPOOL_DROPPED_OBSERVATIONS_TOTAL: &str =
    "blackout_agent_spool_dropped_observations_total";
pub const UPLOADS_TOTAL: &str = "blackout_agent_uploads_total";
pub const LAST_UPLOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
    "blackout_agent_last_upload_success_timestamp_seconds";
pub const CATALOG_TARGETS: &str = "blackout_agent_catalog_targets";
/// Also relayed by the collector, per agent.
pub const POLITENESS_SKIPS_TOTAL: &str = "blackout_agent_politeness_skips_total";
/// Also relayed by the collector, per agent.
pub const CATALOG_REFUSALS_TOTAL: &str = "blackout_agent_catalog_refusals_total";
pub const ROUNDS_TOTAL: &str = "blackout_agent_rounds_total";
pub const ROUND_DURATION_SECONDS: &str = "blackout_agent_round_duration_seconds";
pub const ROUND_LAG_SECONDS: &str = "blackout_agent_round_lag_seconds";

/// The type of a metric, as the exposition declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric the agent exports.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// Every metric the agent exports itself (besides `blackout_build_info` and `process_*`).
pub const METRICS: &[Def] = &[
    Def {
        name: CONFIG_LAST_RELOAD_SUCCESSFUL,
        kind: Kind::Gauge,
        help: "Whether the agent's last configuration reload (SIGHUP or POST /-/reload) succeeded; 1 from the start.",
        labels: &[],
    },
    Def {
        name: CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
        kind: Kind::Gauge,
        help: "When the agent's configuration in force was loaded (start or last successful reload), Unix seconds.",
        labels: &[],
    },
    Def {
        name: PROBES_TOTAL,
        kind: Kind::Counter,
        help: "Probes run (each an observation), per signal; skipped and could-not-run probes are not counted.",
        labels: &["signal"],
    },
    Def {
        name: OBSERVATIONS_SPOOLED_TOTAL,
        kind: Kind::Counter,
        help: "Observations written to the spool (once, whatever the number of collectors).",
        labels: &[],
    },
    Def {
        name: SPOOL_OBSERVATIONS,
        kind: Kind::Gauge,
        help: "Observations in the spool waiting for upload, summed over the collectors' spools.",
        labels: &[],
    },
    Def {
        name: SPOOL_BYTES,
        kind: Kind::Gauge,
        help: "Bytes of the batches in the spool, summed over the collectors' spools.",
        labels: &[],
    },
    Def {
        name: SPOOL_DROPPED_OBSERVATIONS_TOTAL,
        kind: Kind::Counter,
        help: "Observations dropped from a full spool (spool_max_bytes) or refused by a collector, since the agent started.",
        labels: &[],
    },
    Def {
        name: UPLOADS_TOTAL,
        kind: Kind::Counter,
        help: "Upload attempts per result: accepted, failed (will be retried), rejected (dropped), too_large (split).",
        labels: &["result"],
    },
    Def {
        name: LAST_UPLOAD_SUCCESS_TIMESTAMP_SECONDS,
        kind: Kind::Gauge,
        help: "When a collector last accepted a batch from this agent, Unix seconds (0: never since the start).",
        labels: &[],
    },
    Def {
        name: CATALOG_TARGETS,
        kind: Kind::Gauge,
        help: "Targets in the catalog in force (after the reserved and opt-out filters), per signal.",
        labels: &["signal"],
    },
    Def {
        name: POLITENESS_SKIPS_TOTAL,
        kind: Kind::Counter,
        help: "Block probes skipped because the block's politeness budget (icmp_max_probes_per_block_hour) was spent.",
        labels: &[],
    },
    Def {
        name: CATALOG_REFUSALS_TOTAL,
        kind: Kind::Counter,
        help: "Catalogs from the collector refused as over max_catalog_bytes or max_targets.",
        labels: &[],
    },
    Def {
        name: ROUNDS_TOTAL,
        kind: Kind::Counter,
        help: "Rounds completed.",
        labels: &[],
    },
    Def {
        name: ROUND_DURATION_SECONDS,
        kind: Kind::Gauge,
        help: "Duration of the last completed round (round_secs when the agent keeps up).",
        labels: &[],
    },
    Def {
        name: ROUND_LAG_SECONDS,
        kind: Kind::Gauge,
        help: "How late the current round runs behind its schedule: the delay of the latest probe launch, or of the round's end; 0 on time.",
        labels: &[],
    },
];

/// What an upload attempt came to, for [`UPLOADS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadResult {
    Accepted,
    Failed,
    Rejected,
    TooLarge,
}

impl UploadResult {
    pub const ALL: [UploadResult; 4] = [
        UploadResult::Accepted,
        UploadResult::Failed,
        UploadResult::Rejected,
        UploadResult::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UploadResult::Accepted => "accepted",
            UploadResult::Failed => "failed",
            UploadResult::Rejected => "rejected",
            UploadResult::TooLarge => "too_large",
        }
    }
}

fn signal_index(s: Signal) -> usize {
    Signal::PROBED
        .iter()
        .position(|x| *x == s)
        .expect("PROBED lists every signal an agent measures")
}

/// The agent's live numbers. One per process (as [`crate::run::POLITENESS_SKIPS`] and
/// [`crate::catalog::REFUSALS`]): an agent process runs one agent.
#[derive(Debug)]
pub struct Stats {
    probes: [AtomicU64; 4],
    targets: [AtomicU64; 4],
    uploads: [AtomicU64; 4],
    observations_spooled: AtomicU64,
    last_upload_success_ms: AtomicI64,
    rounds: AtomicU64,
    round_duration_us: AtomicU64,
    round_lag_us: AtomicU64,
    ready: AtomicBool,
    reload_failed: AtomicBool,
    loaded_at_ms: AtomicI64,
    /// The spools of the running agent, read at each scrape.
    spools: Mutex<Vec<Arc<Mutex<Spool>>>>,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// The process's agent.
pub static STATS: Stats = Stats {
    probes: [ZERO; 4],
    targets: [ZERO; 4],
    uploads: [ZERO; 4],
    observations_spooled: AtomicU64::new(0),
    last_upload_success_ms: AtomicI64::new(0),
    rounds: AtomicU64::new(0),
    round_duration_us: AtomicU64::new(0),
    round_lag_us: AtomicU64::new(0),
    ready: AtomicBool::new(false),
    reload_failed: AtomicBool::new(false),
    loaded_at_ms: AtomicI64::new(0),
    spools: Mutex::new(Vec::new()),
};

/// The spools' content at a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolTotals {
    pub observations: u64,
    pub bytes: u64,
    pub dropped_observations: u64,
}

impl Stats {
    pub fn probe(&self, s: Signal) {
        self.probes[signal_index(s)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn probes(&self, s: Signal) -> u64 {
        self.probes[signal_index(s)].load(Ordering::Relaxed)
    }

    /// The catalog in force: targets per signal, in [`Signal::PROBED`] order.
    pub fn set_targets(&self, per_signal: [u64; 4]) {
        for (a, n) in self.targets.iter().zip(per_signal) {
            a.store(n, Ordering::Relaxed);
        }
    }

    pub fn targets(&self, s: Signal) -> u64 {
        self.targets[signal_index(s)].load(Ordering::Relaxed)
    }

    pub fn spooled(&self, observations: u64) {
        self.observations_spooled
            .fetch_add(observations, Ordering::Relaxed);
    }

    pub fn observations_spooled(&self) -> u64 {
        self.observations_spooled.load(Ordering::Relaxed)
    }

    pub fn upload(&self, r: UploadResult, now: chrono::DateTime<chrono::Utc>) {
        self.uploads[r as usize].fetch_add(1, Ordering::Relaxed);
        if r == UploadResult::Accepted {
            self.last_upload_success_ms
                .store(now.timestamp_millis(), Ordering::Relaxed);
        }
    }

    pub fn uploads(&self, r: UploadResult) -> u64 {
        self.uploads[r as usize].load(Ordering::Relaxed)
    }

    /// Unix seconds of the last accepted upload, 0 if none.
    pub fn last_upload_success(&self) -> f64 {
        self.last_upload_success_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn round_done(&self, took: std::time::Duration) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.round_duration_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    pub fn round_duration(&self) -> f64 {
        self.round_duration_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    pub fn set_round_lag(&self, lag: std::time::Duration) {
        self.round_lag_us
            .store(lag.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn round_lag(&self) -> f64 {
        self.round_lag_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The agent has its catalog and probes (`/-/ready`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The configuration in force was loaded at `now` (the start or a successful reload).
    pub fn config_loaded(&self, now: chrono::DateTime<chrono::Utc>) {
        self.reload_failed.store(false, Ordering::Relaxed);
        self.loaded_at_ms
            .store(now.timestamp_millis(), Ordering::Relaxed);
    }

    /// A reload failed: the previous configuration stays in force.
    pub fn reload_failed(&self) {
        self.reload_failed.store(true, Ordering::Relaxed);
    }

    pub fn last_reload_successful(&self) -> bool {
        !self.reload_failed.load(Ordering::Relaxed)
    }

    pub fn config_loaded_at(&self) -> f64 {
        self.loaded_at_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub(crate) fn add_spool(&self, s: Arc<Mutex<Spool>>) {
        self.spools.lock().expect("spools lock").push(s);
    }

    pub(crate) fn remove_spool(&self, s: &Arc<Mutex<Spool>>) {
        self.spools
            .lock()
            .expect("spools lock")
            .retain(|x| !Arc::ptr_eq(x, s));
    }

    /// What the spools hold now. Takes each spool's lock, which a batch write holds
    /// while it syncs to disk: call it off the async runtime.
    pub fn spool_totals(&self) -> SpoolTotals {
        let spools = self.spools.lock().expect("spools lock").clone();
        let mut t = SpoolTotals::default();
        for s in spools {
            let s = s.lock().expect("spool lock");
            t.observations += s.observations();
            t.bytes += s.bytes();
            t.dropped_observations += s.dropped_observations();
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_unique_agent_names_with_closed_labels() {
        let mut seen = std::collections::HashSet::new();
        for d in METRICS {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("blackout_agent_"), "{}", d.name);
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
            for l in d.labels {
                assert!(["signal", "result"].contains(l), "{}: label {l}", d.name);
            }
        }
    }
}
