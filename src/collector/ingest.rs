//! Ingest: authenticate, validate, log durably, then apply a batch to the live state.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::config::CollectorConfig;
use super::log::{LogError, ObservationLog};
use super::store::{HEALTHY_CONTROL_SHARE, LatestView};
use crate::catalog::{CatalogFile, Target};
use crate::detect::{ChangeKind, Engine, EntityKey, Event, Snapshot};
use crate::expose::metrics::Metrics;
use crate::observation::{Batch, Signal};

/// Why a batch was not accepted. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing or unknown token")]
    Unauthorized,
    #[error("token of agent {token_agent:?} used for agent {batch_agent:?}")]
    Forbidden {
        token_agent: String,
        batch_agent: String,
    },
    /// A record is invalid: the whole batch is refused, nothing of it is applied.
    #[error("{0}")]
    Invalid(String),
    #[error("could not store the batch durably: {0}")]
    Storage(#[from] LogError),
}

/// Who is uploading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uploader {
    /// The agent inside `blackout standalone`: trusted, no token.
    InProcess,
    /// A bearer token from the HTTP request, if any.
    Token(Option<String>),
}

/// What a target is, as the collector's catalog knows it: observations must agree.
#[derive(Debug, Clone)]
struct KnownTarget {
    country: String,
    asn: u32,
    signal: Signal,
    control: bool,
}

/// Points of a country signal's history kept for the status page's sparklines.
pub const SPARK_POINTS: usize = 288;

/// (bin end in Unix seconds, value, baseline) of one (country, signal).
pub type Spark = VecDeque<(i64, Option<f64>, Option<f64>)>;

struct State {
    view: LatestView,
    seen_batches: HashSet<String>,
    log: Option<ObservationLog>,
    engine: Engine,
    /// When each agent's last batch was accepted.
    last_report: HashMap<String, DateTime<Utc>>,
    /// The engine's view after the last `tick`, for scrapes and the API.
    snapshot: Snapshot,
    sparks: BTreeMap<(String, crate::observation::Signal), Spark>,
    /// Each agent's last reported count of dropped observations, to turn its reports
    /// (which restart from 0 with the agent) into a counter.
    spool_dropped: HashMap<String, u64>,
}

/// The collector's shared state. Every HTTP handler and the in-process agent go through it.
pub struct Collector {
    pub config: CollectorConfig,
    pub metrics: Metrics,
    pub catalog_files: Vec<CatalogFile>,
    pub targets: Vec<Target>,
    known: HashMap<String, KnownTarget>,
    tokens: HashMap<[u8; 32], String>,
    state: Mutex<State>,
    /// The settings a snapshot must have been taken under to be used.
    fingerprint: String,
    restore: Mutex<Restore>,
}

/// How the collector got its state at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restore {
    /// From a snapshot plus the log written after it (else from the whole log).
    pub from_snapshot: bool,
    /// Batches read back from the log.
    pub replayed_batches: usize,
}

/// The snapshot in `dir`, if there is one that gives the same state as replaying the
/// whole log would; says why when there is one that does not.
fn usable_snapshot(
    dir: &std::path::Path,
    fingerprint: &str,
    config: &CollectorConfig,
) -> Option<super::snapshot::Snapshot> {
    let why = match super::snapshot::load(dir) {
        Ok(None) => return None,
        Ok(Some(s)) if s.fingerprint != fingerprint => {
            "it was taken with other detector settings or another version".to_string()
        }
        Ok(Some(s))
            if !ObservationLog::can_resume_from(dir, &s.log, config.retention_days, Utc::now()) =>
        {
            format!(
                "its log position ({} at byte {}) no longer exists",
                s.log.segment, s.log.offset
            )
        }
        Ok(Some(s)) => return Some(s),
        Err(e) => e.to_string(),
    };
    tracing::warn!(reason = %why, "not using the collector snapshot; replaying the whole log");
    None
}

/// Summary of an accepted batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ack {
    pub batch_id: String,
    pub accepted: usize,
    /// True when the batch had been accepted before: it is acknowledged again, not counted.
    pub duplicate: bool,
}

impl Collector {
    /// Builds the collector, replaying its durable log if it has a state directory.
    pub fn new(
        config: CollectorConfig,
        catalog_files: Vec<CatalogFile>,
    ) -> Result<Collector, IngestError> {
        let targets = crate::catalog::expand(&catalog_files)
            .map_err(|e| IngestError::Invalid(e.to_string()))?;
        let known = targets
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    KnownTarget {
                        country: t.country.clone(),
                        asn: t.asn,
                        signal: t.signal(),
                        control: t.control,
                    },
                )
            })
            .collect();
        let tokens = config
            .agents
            .iter()
            .map(|(id, hash)| (*hash, id.clone()))
            .collect();
        let metrics = Metrics::new();
        for f in catalog_files.iter().filter(|f| !f.control) {
            metrics
                .country_status
                .with_label_values(&[&f.country])
                .set(0);
        }
        let fingerprint = super::snapshot::fingerprint(&config.detect);
        let saved = config
            .state_dir
            .as_deref()
            .and_then(|dir| usable_snapshot(dir, &fingerprint, &config));
        let from = saved.as_ref().map(|s| s.log.clone());
        let state = match saved {
            Some(s) => {
                tracing::info!(
                    taken_at = %s.taken_at,
                    segment = %s.log.segment,
                    offset = s.log.offset,
                    "restoring the collector from its snapshot; replaying the log written since"
                );
                let engine = s.engine.with_config(config.detect.clone());
                for (agent, t) in &s.last_report {
                    metrics
                        .agent_last_report
                        .with_label_values(&[agent])
                        .set(t.timestamp_millis() as f64 / 1000.0);
                }
                State {
                    view: s.view,
                    seen_batches: s.seen_batches,
                    log: None,
                    snapshot: engine.snapshot(),
                    engine,
                    last_report: s.last_report,
                    sparks: s.sparks,
                    spool_dropped: s.spool_dropped,
                }
            }
            None => {
                let engine = Engine::new(config.detect.clone());
                State {
                    view: LatestView::default(),
                    seen_batches: HashSet::new(),
                    log: None,
                    snapshot: engine.snapshot(),
                    engine,
                    last_report: HashMap::new(),
                    sparks: BTreeMap::new(),
                    spool_dropped: HashMap::new(),
                }
            }
        };
        let state_dir = config.state_dir.clone();
        let retention_days = config.retention_days;
        let c = Collector {
            config,
            metrics,
            catalog_files,
            targets,
            known,
            tokens,
            state: Mutex::new(state),
            fingerprint,
            restore: Mutex::new(Restore {
                from_snapshot: from.is_some(),
                replayed_batches: 0,
            }),
        };
        if let Some(dir) = &state_dir {
            let mut st = c.state.lock().expect("collector state lock");
            let mut n = 0usize;
            let log = ObservationLog::open_replaying(
                dir,
                retention_days,
                Utc::now(),
                from.as_ref(),
                &mut |b| {
                    c.apply(&mut st, &b);
                    n += 1;
                },
            )?;
            st.log = Some(log);
            c.restore.lock().expect("restore lock").replayed_batches = n;
            if n > 0 {
                tracing::info!(
                    batches = n,
                    "restored accepted batches from the observation log"
                );
            }
        }
        Ok(c)
    }

    /// How the state was restored at start.
    pub fn restore_info(&self) -> Restore {
        *self.restore.lock().expect("restore lock")
    }

    /// Writes a snapshot of the whole state next to the log (see
    /// [`super::snapshot`]). Encoding holds the state lock, so that the snapshot and its
    /// log position agree; the file is written after it is released. Without a state
    /// directory there is nothing to do.
    pub fn write_snapshot(&self, now: DateTime<Utc>) -> Result<(), super::snapshot::SnapshotError> {
        let Some(dir) = &self.config.state_dir else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let bytes = {
            let st = self.state.lock().expect("collector state lock");
            let Some(log) = &st.log else {
                return Ok(());
            };
            let pos = log.position();
            super::snapshot::encode(&super::snapshot::SnapshotRef {
                fingerprint: &self.fingerprint,
                taken_at: now,
                log: &pos,
                engine: &st.engine,
                view: &st.view,
                seen_batches: &st.seen_batches,
                last_report: &st.last_report,
                sparks: &st.sparks,
                spool_dropped: &st.spool_dropped,
            })?
        };
        let encoded = started.elapsed();
        super::snapshot::write(dir, &bytes)?;
        tracing::debug!(
            bytes = bytes.len(),
            encode_ms = encoded.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "collector snapshot written"
        );
        Ok(())
    }

    /// The agent id a token belongs to.
    fn authenticate(&self, up: &Uploader, batch_agent: &str) -> Result<(), IngestError> {
        let token = match up {
            Uploader::InProcess => return Ok(()),
            Uploader::Token(t) => t.as_deref().ok_or(IngestError::Unauthorized)?,
        };
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let agent = self.tokens.get(&hash).ok_or(IngestError::Unauthorized)?;
        if agent != batch_agent {
            return Err(IngestError::Forbidden {
                token_agent: agent.clone(),
                batch_agent: batch_agent.to_string(),
            });
        }
        Ok(())
    }

    /// Checks every record; the first bad one refuses the whole batch.
    fn validate(&self, batch: &Batch, now: DateTime<Utc>) -> Result<(), IngestError> {
        if batch.batch_id.is_empty() || batch.batch_id.len() > 128 {
            return Err(IngestError::Invalid(
                "field `batch_id`: must be 1 to 128 characters".into(),
            ));
        }
        let oldest = now - chrono::Duration::seconds(self.config.max_age_secs as i64);
        let newest = now + chrono::Duration::seconds(self.config.max_future_secs as i64);
        for (i, o) in batch.observations.iter().enumerate() {
            let bad = |msg: String| {
                IngestError::Invalid(format!("observations[{i}] (target {:?}) {msg}", o.target))
            };
            o.validate().map_err(|e| bad(e.to_string()))?;
            if o.agent != batch.agent {
                return Err(bad(format!(
                    "field `agent`: {:?} differs from the batch's agent {:?}",
                    o.agent, batch.agent
                )));
            }
            if o.measured_at < oldest || o.measured_at > newest {
                return Err(bad(format!(
                    "field `measured_at`: {} is outside the accepted window {} .. {}",
                    o.measured_at.to_rfc3339(),
                    oldest.to_rfc3339(),
                    newest.to_rfc3339()
                )));
            }
            let Some(k) = self.known.get(&o.target) else {
                return Err(bad("field `target`: not in the collector's catalog".into()));
            };
            if k.country != o.country
                || k.asn != o.asn
                || k.signal != o.signal
                || k.control != o.control
            {
                return Err(bad(format!(
                    "fields `country`/`asn`/`signal`/`control`: the catalog says {} AS{} {} control={}",
                    k.country, k.asn, k.signal, k.control
                )));
            }
        }
        Ok(())
    }

    /// Accepts a batch: authenticated, validated whole, durably logged, then applied.
    pub fn ingest(
        &self,
        uploader: &Uploader,
        batch: Batch,
        now: DateTime<Utc>,
    ) -> Result<Ack, IngestError> {
        let result = self.ingest_inner(uploader, batch, now);
        let label = match &result {
            Ok(a) if a.duplicate => "duplicate",
            Ok(_) => "accepted",
            Err(IngestError::Unauthorized | IngestError::Forbidden { .. }) => "unauthorized",
            Err(_) => "rejected",
        };
        self.metrics.batches.with_label_values(&[label]).inc();
        result
    }

    fn ingest_inner(
        &self,
        uploader: &Uploader,
        batch: Batch,
        now: DateTime<Utc>,
    ) -> Result<Ack, IngestError> {
        self.authenticate(uploader, &batch.agent)?;
        self.validate(&batch, now)?;
        let mut st = self.state.lock().expect("collector state lock");
        if st.seen_batches.contains(&dedup_key(&batch)) {
            return Ok(Ack {
                batch_id: batch.batch_id,
                accepted: 0,
                duplicate: true,
            });
        }
        if let Some(log) = st.log.as_mut() {
            log.append(&batch)?;
        }
        self.apply(&mut st, &batch);
        st.last_report.insert(batch.agent.clone(), now);
        self.metrics
            .agent_last_report
            .with_label_values(&[&batch.agent])
            .set(now.timestamp_millis() as f64 / 1000.0);
        Ok(Ack {
            accepted: batch.observations.len(),
            batch_id: batch.batch_id,
            duplicate: false,
        })
    }

    fn apply(&self, st: &mut State, batch: &Batch) {
        st.seen_batches.insert(dedup_key(batch));
        let mut newest: Option<DateTime<Utc>> = None;
        let mut counts = [0u64; 4];
        for o in &batch.observations {
            st.view.record(o);
            st.engine.ingest(o);
            counts[o.signal as usize] += 1;
            if let (Some(p), Some(f)) = (o.phase, o.failure) {
                self.metrics
                    .observation_failures
                    .with_label_values(&[&batch.agent, o.signal.as_str(), p.as_str(), f.as_str()])
                    .inc();
            }
            newest = newest.max(Some(o.measured_at));
        }
        for s in Signal::ALL {
            let n = counts[s as usize];
            if n > 0 {
                self.metrics
                    .observations_ingested
                    .with_label_values(&[&batch.agent, s.as_str()])
                    .inc_by(n);
            }
        }
        if let Some(t) = newest {
            let g = self
                .metrics
                .agent_last_measurement
                .with_label_values(&[&batch.agent]);
            g.set(g.get().max(t.timestamp_millis() as f64 / 1000.0));
        }
        if let Some(s) = batch.spool {
            self.metrics
                .agent_spool_observations
                .with_label_values(&[&batch.agent])
                .set(s.observations.min(i64::MAX as u64) as i64);
            let last = st
                .spool_dropped
                .insert(batch.agent.clone(), s.dropped_observations);
            // Below the last report: the agent restarted and counts from zero again.
            let added = match last {
                Some(l) if s.dropped_observations >= l => s.dropped_observations - l,
                _ => s.dropped_observations,
            };
            let c = self
                .metrics
                .agent_spool_dropped
                .with_label_values(&[&batch.agent]);
            if added > 0 {
                c.inc_by(added);
            }
        }
    }

    /// Lets the detector close the bins that are over at `now`, and records what changed.
    /// When the detector can next close a bin (see `Engine::next_close_at`).
    pub fn next_close_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let st = self.state.lock().expect("collector state lock");
        st.engine.next_close_at(now)
    }

    pub fn tick(&self, now: DateTime<Utc>) -> Vec<crate::detect::EventChange> {
        let mut st = self.state.lock().expect("collector state lock");
        let changes = st.engine.advance(now);
        for c in &changes {
            let e = &c.event;
            let country = e.entity.country().to_string();
            if c.change == ChangeKind::Opened {
                self.metrics
                    .events_total
                    .with_label_values(&[&country, e.kind.as_str()])
                    .inc();
            }
            let fields = (
                e.id,
                e.entity.to_string(),
                e.kind.as_str(),
                e.start.to_rfc3339(),
            );
            match c.change {
                ChangeKind::Opened => {
                    tracing::warn!(id = fields.0, entity = %fields.1, kind = fields.2, start = %fields.3, severity = ?e.severity, "outage event opened")
                }
                ChangeKind::Updated => {
                    tracing::info!(id = fields.0, entity = %fields.1, kind = fields.2, severity = ?e.severity, "outage event updated")
                }
                ChangeKind::Closed => {
                    tracing::warn!(id = fields.0, entity = %fields.1, kind = fields.2, end = ?e.end, "outage event closed")
                }
            }
        }
        let snap = st.engine.snapshot();
        if snap.at != st.snapshot.at
            && let Some(at) = snap.at
        {
            for ent in &snap.entities {
                let EntityKey::Country(cc) = &ent.entity else {
                    continue;
                };
                for sig in &ent.signals {
                    let q = st.sparks.entry((cc.clone(), sig.signal)).or_default();
                    if q.len() == SPARK_POINTS {
                        q.pop_front();
                    }
                    q.push_back((at.timestamp(), sig.value, sig.baseline));
                }
            }
        }
        st.snapshot = snap;
        changes
    }

    /// The catalog an agent should probe: its share under fleet assignment (`assign_k`),
    /// or everything. The fleet is the agents heard from within `agent_timeout_secs`, plus
    /// the one asking, so shares rebalance as agents come and go.
    pub fn catalog_for(&self, agent: Option<&str>, now: DateTime<Utc>) -> Vec<CatalogFile> {
        let (Some(k), Some(agent)) = (self.config.assign_k, agent) else {
            return self.catalog_files.clone();
        };
        let mut fleet: Vec<String> = {
            let st = self.state.lock().expect("collector state lock");
            let oldest = now - chrono::Duration::seconds(self.config.agent_timeout_secs as i64);
            st.last_report
                .iter()
                .filter(|(_, t)| **t >= oldest)
                .map(|(a, _)| a.clone())
                .collect()
        };
        if !fleet.iter().any(|a| a == agent) {
            fleet.push(agent.to_string());
        }
        let share = crate::catalog::assign::assign(&self.targets, &fleet, k);
        let mine: Vec<&Target> = share
            .get(agent)
            .map(|idx| idx.iter().map(|i| &self.targets[*i]).collect())
            .unwrap_or_default();
        crate::catalog::to_files(&mine)
    }

    /// The detector's view after the last tick.
    pub fn snapshot(&self) -> Snapshot {
        self.state
            .lock()
            .expect("collector state lock")
            .snapshot
            .clone()
    }

    /// Events, newest first; only open ones if `open_only`; at most `limit`.
    pub fn events(&self, open_only: bool, country: Option<&str>, limit: usize) -> Vec<Event> {
        let st = self.state.lock().expect("collector state lock");
        let mut v: Vec<Event> = st
            .engine
            .events()
            .filter(|e| !open_only || e.is_open())
            .filter(|e| country.is_none_or(|c| e.entity.country() == c))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.start.cmp(&a.start).then(b.id.cmp(&a.id)));
        v.truncate(limit);
        v
    }

    /// Sparkline history per (country, signal).
    pub fn sparks(&self) -> BTreeMap<(String, crate::observation::Signal), Spark> {
        self.state
            .lock()
            .expect("collector state lock")
            .sparks
            .clone()
    }

    /// Recomputes the aggregate gauges and returns the text exposition.
    pub fn render_metrics(&self, now: DateTime<Utc>) -> String {
        let (agg, snap, open) = {
            let st = self.state.lock().expect("collector state lock");
            let open: Vec<(String, &'static str)> = st
                .engine
                .open_events()
                .map(|e| (e.entity.country().to_string(), e.kind.as_str()))
                .collect();
            (
                st.view.aggregate(now, self.config.freshness_secs as i64),
                st.snapshot.clone(),
                open,
            )
        };
        let m = &self.metrics;
        self.render_detector(&snap, &open);
        m.targets.reset();
        m.reachable_ratio.reset();
        m.asn_targets.reset();
        m.asn_reachable_ratio.reset();
        m.rtt_median.reset();
        m.http_phase.reset();
        for ((country, phase), secs) in &agg.http_phase_median_seconds {
            m.http_phase
                .with_label_values(&[country.as_str(), phase])
                .set(*secs);
        }
        for (agent, share) in &agg.agent_control {
            let healthy = share.is_none_or(|s| s >= HEALTHY_CONTROL_SHARE);
            m.agent_healthy
                .with_label_values(&[agent])
                .set(healthy as i64);
        }
        for ((country, signal), share) in &agg.country {
            m.targets
                .with_label_values(&[country, signal.as_str()])
                .set(share.targets as i64);
            if let Some(r) = share.ratio() {
                m.reachable_ratio
                    .with_label_values(&[country, signal.as_str()])
                    .set(r);
            }
            if let Some(rtt) = share.rtt_median_seconds {
                m.rtt_median
                    .with_label_values(&[country, signal.as_str()])
                    .set(rtt);
            }
        }
        for ((country, asn, signal), share) in &agg.asn {
            let asn_s = asn.to_string();
            m.asn_targets
                .with_label_values(&[country, &asn_s, signal.as_str()])
                .set(share.targets as i64);
            if let Some(r) = share.ratio() {
                m.asn_reachable_ratio
                    .with_label_values(&[country, &asn_s, signal.as_str()])
                    .set(r);
            }
        }
        m.encode()
    }

    /// Sets the detector's gauges from a snapshot. Countries of the catalog keep a status
    /// series (0 until the detector says otherwise) so alerts see them from the start.
    fn render_detector(&self, snap: &Snapshot, open: &[(String, &'static str)]) {
        let m = &self.metrics;
        for g in [
            &m.country_signal_value,
            &m.country_signal_baseline,
            &m.country_signal_ratio,
            &m.asn_signal_value,
            &m.asn_signal_baseline,
            &m.asn_signal_ratio,
        ] {
            g.reset();
        }
        m.country_signal_status.reset();
        m.asn_status.reset();
        m.region_status.reset();
        m.events_open.reset();
        for f in self.catalog_files.iter().filter(|f| !f.control) {
            m.country_status.with_label_values(&[&f.country]).set(0);
        }
        let set = |g: &prometheus::GaugeVec, labels: &[&str], v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                g.with_label_values(labels).set(v);
            }
        };
        for e in &snap.entities {
            let state = e.state.code() as i64;
            match &e.entity {
                EntityKey::Country(cc) => {
                    m.country_status.with_label_values(&[cc]).set(state);
                    for s in &e.signals {
                        let l = [cc.as_str(), s.signal.as_str()];
                        set(&m.country_signal_value, &l, s.value);
                        set(&m.country_signal_baseline, &l, s.baseline);
                        set(&m.country_signal_ratio, &l, s.ratio);
                        if let Some(st) = s.state {
                            m.country_signal_status
                                .with_label_values(&l)
                                .set(st.code() as i64);
                        }
                    }
                }
                EntityKey::Asn { country, asn } if !country.is_empty() => {
                    let asn = asn.to_string();
                    m.asn_status.with_label_values(&[country, &asn]).set(state);
                    for s in &e.signals {
                        let l = [country.as_str(), asn.as_str(), s.signal.as_str()];
                        set(&m.asn_signal_value, &l, s.value);
                        set(&m.asn_signal_baseline, &l, s.baseline);
                        set(&m.asn_signal_ratio, &l, s.ratio);
                    }
                }
                EntityKey::Region { country, region } => {
                    m.region_status
                        .with_label_values(&[country, region])
                        .set(state);
                }
                EntityKey::Asn { .. } => {}
            }
        }
        for (country, kind) in open {
            m.events_open
                .with_label_values(&[country.as_str(), kind])
                .inc();
        }
        m.vantage_healthy_agents
            .with_label_values::<&str>(&[])
            .set(snap.agents.iter().filter(|a| a.healthy).count() as i64);
    }

    /// Number of targets with at least one reading.
    pub fn targets_seen(&self) -> usize {
        self.state
            .lock()
            .expect("collector state lock")
            .view
            .target_count()
    }
}

/// Batch ids are unique per agent: keyed with the agent, so that no agent can claim
/// (and so suppress) another agent's batch ids.
fn dedup_key(batch: &Batch) -> String {
    format!("{}\n{}", batch.agent, batch.batch_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::Observation;

    fn collector(k: Option<usize>) -> Collector {
        let cat = crate::catalog::parse(
            "country = \"XA\"\n[[icmp]]\nprefix = \"198.18.0.0/20\"\nasn = 64500\n[[tcp]]\naddress = \"198.18.0.1:443\"\nasn = 64500\n",
            "xa.toml",
        )
        .unwrap();
        let cfg = CollectorConfig {
            assign_k: k,
            ..CollectorConfig::default()
        };
        Collector::new(cfg, vec![cat, control_catalog()]).unwrap()
    }

    fn control_catalog() -> CatalogFile {
        crate::catalog::parse(
            "country = \"ZZ\"\ncontrol = true\n[[tcp]]\naddress = \"192.0.2.1:443\"\nasn = 1\n",
            "control.toml",
        )
        .unwrap()
    }

    fn report(c: &Collector, agent: &str, now: DateTime<Utc>) {
        report_spool(c, agent, 1, None, now);
    }

    fn report_spool(
        c: &Collector,
        agent: &str,
        n: u32,
        spool: Option<crate::observation::SpoolStatus>,
        now: DateTime<Utc>,
    ) {
        let o = Observation {
            agent: agent.into(),
            target: "tcp:192.0.2.1:443".into(),
            country: "ZZ".into(),
            asn: 1,
            region: None,
            signal: Signal::Tcp,
            control: true,
            measured_at: now,
            ok: true,
            phase: None,
            failure: None,
            rtt_ms: Some(1.0),
            block: None,
            timings_ms: None,
        };
        let b = Batch {
            batch_id: format!("{agent}-{n}"),
            agent: agent.into(),
            observations: vec![o],
            spool,
        };
        c.ingest(&Uploader::InProcess, b, now).unwrap();
    }

    fn ids(files: &[CatalogFile]) -> Vec<String> {
        crate::catalog::expand(files)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect()
    }

    #[test]
    fn fleet_assignment_covers_every_target_k_times_and_rebalances() {
        let c = collector(Some(2));
        let now = Utc::now();
        let all = ids(&c.catalog_files);
        // Alone, an agent gets everything.
        assert_eq!(ids(&c.catalog_for(Some("a1"), now)).len(), all.len());
        for a in ["a1", "a2", "a3"] {
            report(&c, a, now);
        }
        let mut count: HashMap<String, usize> = HashMap::new();
        for a in ["a1", "a2", "a3"] {
            let mine = ids(&c.catalog_for(Some(a), now));
            assert!(
                mine.contains(&"tcp:192.0.2.1:443".to_string()),
                "controls go to all"
            );
            assert!(mine.len() < all.len(), "{a} has a share, not everything");
            for id in mine {
                *count.entry(id).or_default() += 1;
            }
        }
        for id in &all {
            let want = if id == "tcp:192.0.2.1:443" { 3 } else { 2 };
            assert_eq!(count.get(id), Some(&want), "{id}");
        }
        // a3 falls silent: after the timeout, a1 and a2 share everything between them.
        let later = now + chrono::Duration::seconds(c.config.agent_timeout_secs as i64 + 1);
        report(&c, "a1", later);
        let a2 = ids(&c.catalog_for(Some("a2"), later));
        assert_eq!(
            a2.len(),
            all.len(),
            "k = 2 with two agents: both probe everything"
        );
        // Without assignment, everyone gets the whole catalog.
        let plain = collector(None);
        assert_eq!(ids(&plain.catalog_for(Some("a1"), now)).len(), all.len());
    }

    #[test]
    fn spool_reports_become_a_backlog_gauge_and_a_drop_counter() {
        use crate::observation::SpoolStatus;
        let c = collector(None);
        let now = Utc::now();
        let st = |observations, dropped_observations| {
            Some(SpoolStatus {
                observations,
                dropped_observations,
            })
        };
        let text = |c: &Collector| c.render_metrics(now);
        let line = |t: &str, name: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("{name}{{agent=\"a1\"}}")))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        use crate::expose::names::{
            AGENT_SPOOL_DROPPED_OBSERVATIONS_TOTAL as DROPPED, AGENT_SPOOL_OBSERVATIONS as WAITING,
        };
        let expect = |waiting: &str, dropped: &str| {
            let t = text(&c);
            assert_eq!(line(&t, WAITING).as_deref(), Some(waiting));
            assert_eq!(line(&t, DROPPED).as_deref(), Some(dropped));
        };
        report_spool(&c, "a1", 1, st(40, 0), now);
        report_spool(&c, "a1", 2, st(900, 7), now);
        expect("900", "7");
        // More drops, then an agent restart (its count starts again at 2).
        report_spool(&c, "a1", 3, st(1000, 10), now);
        report_spool(&c, "a1", 4, st(5, 2), now);
        expect("5", "12");
        // A batch without a report (an older agent) changes nothing.
        report_spool(&c, "a1", 5, None, now);
        assert_eq!(
            line(&text(&c), crate::expose::names::AGENT_SPOOL_OBSERVATIONS).as_deref(),
            Some("5")
        );
    }

    mod snapshots {
        use super::*;
        use crate::detect::DetectConfig;

        const BIN: i64 = 60;

        fn catalog() -> Vec<CatalogFile> {
            let cat = crate::catalog::parse(
                "country = \"XA\"\n[[icmp]]\nprefix = \"198.18.0.0/21\"\nasn = 64500\n[[icmp]]\nprefix = \"198.18.8.0/21\"\nasn = 64501\n",
                "xa.toml",
            )
            .unwrap();
            vec![cat, control_catalog()]
        }

        fn config(dir: &std::path::Path, warning_ratio: f64) -> CollectorConfig {
            CollectorConfig {
                state_dir: Some(dir.to_path_buf()),
                detect: DetectConfig {
                    bin_secs: BIN as u64,
                    grace_secs: 5,
                    warmup_secs: 4 * BIN as u64,
                    min_warmup_bins: 4,
                    warning_ratio,
                    ..DetectConfig::default()
                },
                ..CollectorConfig::default()
            }
        }

        /// One bin of reports from two agents; AS64501 is dark from bin 10 on.
        fn batches(t0: DateTime<Utc>, bin: i64) -> Vec<Batch> {
            let targets = crate::catalog::expand(&catalog()).unwrap();
            ["a1", "a2"]
                .iter()
                .map(|agent| {
                    let at = t0 + chrono::Duration::seconds(bin * BIN + 7);
                    let observations = targets
                        .iter()
                        .map(|t| {
                            let ok = t.control || t.asn != 64501 || bin < 10;
                            Observation {
                                agent: agent.to_string(),
                                target: t.id.clone(),
                                country: t.country.clone(),
                                asn: t.asn,
                                region: None,
                                signal: t.signal(),
                                control: t.control,
                                measured_at: at,
                                ok,
                                phase: (!ok).then_some(crate::observation::Phase::IcmpEcho),
                                failure: (!ok).then_some(crate::observation::Failure::Timeout),
                                rtt_ms: ok.then_some(30.0),
                                block: None,
                                timings_ms: None,
                            }
                        })
                        .collect();
                    Batch {
                        batch_id: format!("{agent}-{bin}"),
                        agent: agent.to_string(),
                        observations,
                        spool: Some(crate::observation::SpoolStatus {
                            observations: bin as u64,
                            dropped_observations: 0,
                        }),
                    }
                })
                .collect()
        }

        fn end_of(t0: DateTime<Utc>, bin: i64) -> DateTime<Utc> {
            t0 + chrono::Duration::seconds((bin + 1) * BIN + 6)
        }

        /// What an operator sees: verdicts, events, agents, metrics.
        fn seen(c: &Collector, now: DateTime<Utc>) -> (String, String, Vec<String>) {
            let snap = serde_json::to_string(&c.snapshot()).unwrap();
            let events = serde_json::to_string(&c.events(false, None, 100)).unwrap();
            let metrics = c
                .render_metrics(now)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with("blackout_batches_total"))
                .filter(|l| !l.starts_with("blackout_observations_ingested_total"))
                .filter(|l| !l.starts_with("blackout_observation_failures_total"))
                .map(str::to_string)
                .collect();
            (snap, events, metrics)
        }

        #[test]
        fn a_restart_from_the_snapshot_is_the_state_that_was_saved() {
            let d = tempfile::tempdir().unwrap();
            let now = Utc::now();
            let t0 = DateTime::from_timestamp(now.timestamp() - 3600 - now.timestamp() % BIN, 0)
                .unwrap();
            let live = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            for bin in 0..8 {
                for b in batches(t0, bin) {
                    live.ingest(&Uploader::InProcess, b, now).unwrap();
                }
                live.tick(end_of(t0, bin));
            }
            live.write_snapshot(end_of(t0, 7)).unwrap();
            // After the snapshot the outage begins; then the collector crashes (no snapshot
            // at the stop) before its clock closes another bin, so that the live one and
            // the restored one have seen the same (a restored collector closes the bins
            // of the replayed tail at its first tick, not when they ended).
            for bin in 8..13 {
                for b in batches(t0, bin) {
                    live.ingest(&Uploader::InProcess, b, now).unwrap();
                }
            }
            let restored = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            assert_eq!(
                restored.restore_info(),
                Restore {
                    from_snapshot: true,
                    replayed_batches: 10
                }
            );
            let end = end_of(t0, 12);
            live.tick(end);
            restored.tick(end);
            let (a, b) = (seen(&live, end), seen(&restored, end));
            assert!(
                a.1.contains("partial"),
                "the fixture makes an event: {}",
                a.1
            );
            assert_eq!(a.0, b.0, "detector view");
            assert_eq!(a.1, b.1, "events");
            assert_eq!(a.2, b.2, "metrics");
            // Batches accepted before the snapshot are still known.
            let again = batches(t0, 3).remove(0);
            assert!(
                restored
                    .ingest(&Uploader::InProcess, again, now)
                    .unwrap()
                    .duplicate
            );
        }

        #[test]
        fn a_snapshot_that_does_not_fit_is_not_used() {
            let d = tempfile::tempdir().unwrap();
            let now = Utc::now();
            let t0 = DateTime::from_timestamp(now.timestamp() - 3600 - now.timestamp() % BIN, 0)
                .unwrap();
            {
                let c = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
                for bin in 0..4 {
                    for b in batches(t0, bin) {
                        c.ingest(&Uploader::InProcess, b, now).unwrap();
                    }
                }
                c.write_snapshot(now).unwrap();
            }
            let full = Restore {
                from_snapshot: false,
                replayed_batches: 8,
            };
            // Other detector settings: the saved engine would not be what they make.
            let c = Collector::new(config(d.path(), 0.7), catalog()).unwrap();
            assert_eq!(c.restore_info(), full);
            drop(c);
            // The log was cut back below the snapshot's position.
            let seg = std::fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().ends_with(".jsonl"))
                .unwrap();
            let text = std::fs::read_to_string(&seg).unwrap();
            let first_line = text.split_inclusive('\n').next().unwrap();
            let copy = d.path().join("keep.jsonl.bak");
            std::fs::copy(&seg, &copy).unwrap();
            std::fs::write(&seg, first_line).unwrap();
            let c = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            assert_eq!(
                c.restore_info(),
                Restore {
                    from_snapshot: false,
                    replayed_batches: 1
                }
            );
            drop(c);
            std::fs::copy(&copy, &seg).unwrap();
            // Damaged: a warning and a full replay, never a failed start.
            let snap = d.path().join(crate::collector::snapshot::FILE);
            let mut bytes = std::fs::read(&snap).unwrap();
            bytes.truncate(bytes.len() / 2);
            std::fs::write(&snap, &bytes).unwrap();
            let c = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            assert_eq!(c.restore_info(), full);
        }
    }
}
