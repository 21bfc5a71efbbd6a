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
    /// Valid, but the durable log could not take it (503): the collector's fault, not
    /// the agent's.
    StorageError,
    /// The body did not arrive within its deadline (408).
    BodyTimeout,
}

impl BatchResult {
    pub const ALL: [BatchResult; 7] = [
        BatchResult::Accepted,
        BatchResult::Duplicate,
        BatchResult::Rejected,
        BatchResult::Unauthorized,
        BatchResult::Overloaded,
        BatchResult::StorageError,
        BatchResult::BodyTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchResult::Accepted => "accepted",
            BatchResult::Duplicate => "duplicate",
            BatchResult::Rejected => "rejected",
            BatchResult::Unauthorized => "unauthorized",
            BatchResult::Overloaded => "overloaded",
            BatchResult::StorageError => "storage_error",
            BatchResult::BodyTimeout => "body_timeout",
        }
    }
}

/// Why the HTTP server closed or refused a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnectionDrop {
    /// Its peer address already had `max_connections_per_ip` open.
    PerIpLimit,
    /// Every slot it could use was taken by connections that could not be closed.
    Full,
    /// Closed, unauthenticated and between requests, to make room for a new connection.
    Evicted,
    /// No complete request head within `request_head_timeout_secs`.
    HeadTimeout,
}

impl ConnectionDrop {
    pub const ALL: [ConnectionDrop; 4] = [
        ConnectionDrop::PerIpLimit,
        ConnectionDrop::Full,
        ConnectionDrop::Evicted,
        ConnectionDrop::HeadTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionDrop::PerIpLimit => "per_ip_limit",
            ConnectionDrop::Full => "full",
            ConnectionDrop::Evicted => "evicted",
            ConnectionDrop::HeadTimeout => "head_timeout",
        }
    }
}

/// Counts since the collector started (a restart replays the log through them again),
/// and the latest per-agent reports. Kept in memory only, as Prometheus counters are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Uploads by result, indexed as [`BatchResult::ALL`].
    pub batches: [u64; BatchResult::ALL.len()],
    /// Connections the server closed or refused, indexed as [`ConnectionDrop::ALL`].
    pub connections_dropped: [u64; ConnectionDrop::ALL.len()],
    /// Connections open now: (trusted, untrusted), as the server admits them.
    pub connections_open: (u64, u64),
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

    pub fn connection_dropped(&mut self, why: ConnectionDrop) {
        self.connections_dropped[why as usize] += 1;
    }

    pub fn connections_dropped(&self, why: ConnectionDrop) -> u64 {
        self.connections_dropped[why as usize]
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
