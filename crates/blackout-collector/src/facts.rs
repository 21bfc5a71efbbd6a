//! What the collector counts as it ingests: facts, not metrics. The exposition turns them
//! into Prometheus counters and gauges; the collector knows nothing of Prometheus.

use std::collections::BTreeMap;

use blackout_detect::EventKind;
use blackout_model::observation::{Batch, Failure, Phase, Signal};

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

/// Counts since the collector's state began, and the latest per-agent reports. Saved in
/// the snapshot ([`SavedCounters`]), so a restart goes on counting from there; the log
/// written after the snapshot is replayed through them (each replayed batch counts as
/// accepted, as it was). What the log does not hold (refused uploads) after the last
/// snapshot is lost by a crash: Prometheus reads the fall as a counter reset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Uploads by result, indexed as [`BatchResult::ALL`].
    pub batches: [u64; BatchResult::ALL.len()],
    /// Connections the server closed or refused, indexed as [`ConnectionDrop::ALL`].
    pub connections_dropped: [u64; ConnectionDrop::ALL.len()],
    /// Connections open now: (trusted, untrusted), as the server admits them.
    pub connections_open: (u64, u64),
    /// Bytes of decodable upload bodies as they arrived (before any content coding was
    /// undone), indexed as [`crate::wire::Encoding::ALL`].
    pub upload_bytes: [u64; crate::wire::Encoding::ALL.len()],
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
    /// Catalogs each agent refused as over a limit, summed over its restarts.
    pub agent_catalog_refusals: BTreeMap<String, u64>,
    /// Block probes each agent skipped for politeness, summed over its restarts.
    pub agent_politeness_skips: BTreeMap<String, u64>,
    /// Events opened, per (country, kind).
    pub events_opened: BTreeMap<(String, &'static str), u64>,
    /// Accepted observations whose region differed from the catalog's and was replaced
    /// by it, per agent (live uploads only: the log holds the catalog's value).
    pub regions_replaced: BTreeMap<String, u64>,
    /// Damaged records of the observation log set aside when it was read back at start.
    pub log_damaged_records: u64,
}

/// [`Counters`] as the snapshot stores them: labels as strings, so a vocabulary that
/// grows (a new failure, a new result) never shifts what an older snapshot meant; a
/// label this version does not know is dropped on load.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedCounters {
    batches: Vec<(String, u64)>,
    observations_ingested: Vec<(String, String, u64)>,
    observation_failures: Vec<(String, String, String, String, u64)>,
    agent_last_measurement: Vec<(String, f64)>,
    agent_spool_observations: Vec<(String, i64)>,
    agent_spool_dropped: Vec<(String, u64)>,
    events_opened: Vec<(String, String, u64)>,
    agent_catalog_refusals: Vec<(String, u64)>,
    agent_politeness_skips: Vec<(String, u64)>,
}

/// The closed-set value whose label is `s`, from the serde names the labels are.
fn from_label<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

impl Counters {
    pub fn save(&self) -> SavedCounters {
        SavedCounters {
            batches: BatchResult::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), self.batches(*r)))
                .collect(),
            observations_ingested: self
                .observations_ingested
                .iter()
                .map(|((a, s), n)| (a.clone(), s.as_str().to_string(), *n))
                .collect(),
            observation_failures: self
                .observation_failures
                .iter()
                .map(|((a, s, p, f), n)| {
                    (
                        a.clone(),
                        s.as_str().to_string(),
                        p.to_string(),
                        f.to_string(),
                        *n,
                    )
                })
                .collect(),
            agent_last_measurement: self
                .agent_last_measurement
                .iter()
                .map(|(a, t)| (a.clone(), *t))
                .collect(),
            agent_spool_observations: self
                .agent_spool_observations
                .iter()
                .map(|(a, n)| (a.clone(), *n))
                .collect(),
            agent_spool_dropped: self
                .agent_spool_dropped
                .iter()
                .map(|(a, n)| (a.clone(), *n))
                .collect(),
            events_opened: self
                .events_opened
                .iter()
                .map(|((c, k), n)| (c.clone(), k.to_string(), *n))
                .collect(),
            agent_catalog_refusals: self
                .agent_catalog_refusals
                .iter()
                .map(|(a, n)| (a.clone(), *n))
                .collect(),
            agent_politeness_skips: self
                .agent_politeness_skips
                .iter()
                .map(|(a, n)| (a.clone(), *n))
                .collect(),
        }
    }

    pub fn restore(saved: &SavedCounters) -> Counters {
        let mut c = Counters::default();
        for (label, n) in &saved.batches {
            if let Some(r) = BatchResult::ALL.iter().find(|r| r.as_str() == label) {
                c.batches[*r as usize] = *n;
            }
        }
        for (a, s, n) in &saved.observations_ingested {
            if let Some(s) = from_label::<Signal>(s) {
                c.observations_ingested.insert((a.clone(), s), *n);
            }
        }
        for (a, s, p, f, n) in &saved.observation_failures {
            if let (Some(s), Some(p), Some(f)) = (
                from_label::<Signal>(s),
                from_label::<Phase>(p),
                from_label::<Failure>(f),
            ) {
                c.observation_failures
                    .insert((a.clone(), s, p.as_str(), f.as_str()), *n);
            }
        }
        c.agent_last_measurement = saved.agent_last_measurement.iter().cloned().collect();
        c.agent_spool_observations = saved.agent_spool_observations.iter().cloned().collect();
        c.agent_spool_dropped = saved.agent_spool_dropped.iter().cloned().collect();
        c.agent_catalog_refusals = saved.agent_catalog_refusals.iter().cloned().collect();
        c.agent_politeness_skips = saved.agent_politeness_skips.iter().cloned().collect();
        for (country, k, n) in &saved.events_opened {
            if let Some(k) = from_label::<EventKind>(k) {
                c.events_opened.insert((country.clone(), k.as_str()), *n);
            }
        }
        c
    }

    pub fn batch(&mut self, result: BatchResult) {
        self.batches[result as usize] += 1;
    }

    pub fn batches(&self, result: BatchResult) -> u64 {
        self.batches[result as usize]
    }

    pub fn upload(&mut self, encoding: crate::wire::Encoding, bytes: u64) {
        self.upload_bytes[encoding as usize] += bytes;
    }

    pub fn upload_bytes(&self, encoding: crate::wire::Encoding) -> u64 {
        self.upload_bytes[encoding as usize]
    }

    pub fn connection_dropped(&mut self, why: ConnectionDrop) {
        self.connections_dropped[why as usize] += 1;
    }

    pub fn connections_dropped(&self, why: ConnectionDrop) -> u64 {
        self.connections_dropped[why as usize]
    }

    /// Counts the observations of an applied batch.
    pub fn observations(&mut self, batch: &Batch) {
        let mut counts = [0u64; Signal::ALL.len()];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_the_snapshot_and_unknown_labels_are_dropped() {
        let mut c = Counters::default();
        c.batch(BatchResult::Accepted);
        c.batch(BatchResult::Accepted);
        c.batch(BatchResult::StorageError);
        c.observations_ingested
            .insert(("a1".into(), Signal::Dns), 7);
        c.observation_failures.insert(
            (
                "a1".into(),
                Signal::Http,
                Phase::Connect.as_str(),
                Failure::Timeout.as_str(),
            ),
            3,
        );
        c.agent_last_measurement.insert("a1".into(), 1.5e9);
        c.agent_spool_observations.insert("a1".into(), 12);
        c.agent_spool_dropped.insert("a1".into(), 4);
        c.agent_catalog_refusals.insert("a1".into(), 1);
        c.agent_politeness_skips.insert("a1".into(), 6);
        c.events_opened
            .insert(("KZ".into(), EventKind::NationalBlackout.as_str()), 2);
        let saved = c.save();
        let bytes = postcard::to_stdvec(&saved).unwrap();
        let back: SavedCounters = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(Counters::restore(&back), c);

        // A snapshot from a version with a label this one does not know.
        let mut odd = saved.clone();
        odd.batches.push(("teleported".into(), 9));
        odd.events_opened
            .push(("KZ".into(), "alien_invasion".into(), 1));
        odd.observation_failures.push((
            "a1".into(),
            "http".into(),
            "connect".into(),
            "gremlins".into(),
            1,
        ));
        assert_eq!(Counters::restore(&odd), c);
    }
}
