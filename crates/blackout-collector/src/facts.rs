//! What the collector counts as it ingests: facts, not metrics. The exposition turns them
//! into Prometheus counters and gauges; the collector knows nothing of Prometheus.

use std::collections::BTreeMap;

use blackout_model::observation::{Batch, Signal};

/// What became of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BatchResult {
    Accepted,
    Duplicate,
    Rejected,
    Unauthorized,
    Overloaded,
}

impl BatchResult {
    pub const ALL: [BatchResult; 5] = [
        BatchResult::Accepted,
        BatchResult::Duplicate,
        BatchResult::Rejected,
        BatchResult::Unauthorized,
        BatchResult::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchResult::Accepted => "accepted",
            BatchResult::Duplicate => "duplicate",
            BatchResult::Rejected => "rejected",
            BatchResult::Unauthorized => "unauthorized",
            BatchResult::Overloaded => "overloaded",
        }
    }
}

/// Counts since the collector started (a restart replays the log through them again),
/// and the latest per-agent reports. Kept in memory only, as Prometheus counters are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Uploads by result, indexed as [`BatchResult::ALL`].
    pub batches: [u64; 5],
    /// Observations accepted, per (agent, signal).
    pub observations_ingested: BTreeMap<(String, Signal), u64>,
    /// Accepted observations of failed probes, per (agent, signal, phase, failure).
    pub observation_failures: BTreeMap<(String, Signal, &'static str, &'static str), u64>,
    /// Newest measurement time per agent, Unix seconds.
    pub agent_last_measurement: BTreeMap<String, f64>,
    /// Observations waiting in each agent's spool, as it last reported.
    pub agent_spool_observations: BTreeMap<String, i64>,
    /// Observations each agent dropped from its full spool, summed over its restarts.
    pub agent_spool_dropped: BTreeMap<String, u64>,
    /// Events opened, per (country, kind).
    pub events_opened: BTreeMap<(String, &'static str), u64>,
    /// Accepted observations whose region differed from the catalog's and was replaced
    /// by it, per agent (live uploads only: the log holds the catalog's value).
    pub regions_replaced: BTreeMap<String, u64>,
    /// Damaged records of the observation log set aside when it was read back at start.
    pub log_damaged_records: u64,
}

impl Counters {
    pub fn batch(&mut self, result: BatchResult) {
        self.batches[result as usize] += 1;
    }

    pub fn batches(&self, result: BatchResult) -> u64 {
        self.batches[result as usize]
    }

    /// Counts the observations of an applied batch.
    pub fn observations(&mut self, batch: &Batch) {
        let mut counts = [0u64; 4];
        let mut newest = None;
        for o in &batch.observations {
            counts[o.signal as usize] += 1;
            if let (Some(p), Some(f)) = (o.phase, o.failure) {
                *self
                    .observation_failures
                    .entry((batch.agent.clone(), o.signal, p.as_str(), f.as_str()))
                    .or_default() += 1;
            }
            newest = newest.max(Some(o.measured_at));
        }
        for s in Signal::ALL {
            let n = counts[s as usize];
            if n > 0 {
                *self
                    .observations_ingested
                    .entry((batch.agent.clone(), s))
                    .or_default() += n;
            }
        }
        if let Some(t) = newest {
            let g = self
                .agent_last_measurement
                .entry(batch.agent.clone())
                .or_default();
            *g = g.max(t.timestamp_millis() as f64 / 1000.0);
        }
    }
}
