//! Ingest: authenticate, validate, log durably, then apply a batch to the live state.
//! [`Collector::new`] rebuilds that state at start, from a snapshot and the log.

use std::sync::Arc;
use std::sync::Mutex;

use blackout_detect::{Engine, EventChange, Snapshot};
use blackout_model::catalog::{CatalogFile, Target};
use blackout_model::observation::Batch;
use chrono::{DateTime, Utc};

use crate::auth::{Tokens, Uploader};
use crate::config::CollectorConfig;
use crate::facts::{BatchResult, Counters};
use crate::lock::{LockError, StateDirLock};
use crate::log::{LogError, ObservationLog};
use crate::snapshot::{self, Header, SnapshotError};
use crate::state::State;
use crate::validate::Validator;

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

/// Why a collector cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("catalog: {0}")]
    Catalog(String),
    /// Another collector holds the state directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("could not read back the observation log: {0}")]
    Restore(#[from] LogError),
}

/// The state and what only the live collector has: the open log and the detector's view
/// after the last tick.
pub(crate) struct Live {
    pub(crate) state: State,
    pub(crate) log: Option<ObservationLog>,
    /// The engine's view after the last `tick`, for scrapes and the API.
    pub(crate) verdicts: Snapshot,
}

/// What a reload replaces: the agents and the catalogs, and what is derived from them.
pub struct Catalog {
    pub files: Vec<CatalogFile>,
    pub targets: Vec<Target>,
    /// (agent id, SHA-256 of its token).
    pub agents: Vec<(String, [u8; 32])>,
    tokens: Tokens,
    validator: Validator,
}

impl Catalog {
    fn new(
        config: &CollectorConfig,
        agents: Vec<(String, [u8; 32])>,
        files: Vec<CatalogFile>,
    ) -> Result<Catalog, String> {
        let targets = blackout_model::catalog::expand(&files).map_err(|e| e.to_string())?;
        Ok(Catalog {
            validator: Validator::new(&targets, config.max_age_secs, config.max_future_secs),
            tokens: Tokens::new(&agents),
            files,
            targets,
            agents,
        })
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

/// The outcome of the last reload, for `blackout_config_last_reload_*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReloadStatus {
    pub successful: bool,
    /// The start counts as the first successful load.
    pub last_success: DateTime<Utc>,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub agents: usize,
    pub targets: usize,
    pub agents_added: Vec<String>,
    pub agents_removed: Vec<String>,
}

/// The collector's shared state. Every HTTP handler and the in-process agent go through it.
pub struct Collector {
    /// The configuration at start; what a reload changes (agents, catalogs) is in
    /// [`Collector::current`], the rest takes a restart.
    pub config: CollectorConfig,
    current: std::sync::RwLock<Arc<Catalog>>,
    reload_status: Mutex<ReloadStatus>,
    pub(crate) live: Mutex<Live>,
    pub(crate) facts: Mutex<Counters>,
    /// The settings a snapshot must have been taken under to be used.
    fingerprint: String,
    restore: Mutex<Restore>,
    /// Held as long as the collector lives: no other collector opens its state directory.
    _state_lock: Option<StateDirLock>,
    /// The BGP signal, when `[bgp]` is configured.
    pub bgp: Option<crate::bgp::Bgp>,
}

/// How the collector got its state at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restore {
    /// From a snapshot plus the log written after it (else from the whole log).
    pub from_snapshot: bool,
    /// Batches read back from the log and applied.
    pub replayed_batches: usize,
    /// Batches read back that were already applied (logged twice, e.g. by two
    /// collectors sharing the directory before it was locked): skipped, as live ingest
    /// skips a re-sent batch.
    pub duplicate_batches: usize,
}

/// The snapshot in `dir`, if there is one that gives the same state as replaying the
/// whole log would; says why when there is one that does not.
fn usable_snapshot(
    dir: &std::path::Path,
    fingerprint: &str,
    config: &CollectorConfig,
) -> Option<snapshot::Saved> {
    let why = match snapshot::load(dir) {
        Ok(None) => return None,
        Ok(Some((h, ..))) if h.fingerprint != fingerprint => {
            "it was taken with other detector settings or another version".to_string()
        }
        Ok(Some((h, ..)))
            if !ObservationLog::can_resume_from(dir, &h.log, config.retention_days, Utc::now()) =>
        {
            format!(
                "its log position ({} at byte {}) no longer exists",
                h.log.segment, h.log.offset
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
    ) -> Result<Collector, StartError> {
        let catalog = Arc::new(
            Catalog::new(&config, config.agents.clone(), catalog_files)
                .map_err(StartError::Catalog)?,
        );
        let fingerprint = snapshot::fingerprint(&config.detect);
        let bgp = config
            .bgp
            .clone()
            .map(|b| crate::bgp::Bgp::new(b, &catalog.targets));
        // Before anything in the directory is read: another collector may be writing it.
        let state_lock = config
            .state_dir
            .as_deref()
            .map(StateDirLock::acquire)
            .transpose()?;
        let saved = config
            .state_dir
            .as_deref()
            .and_then(|dir| usable_snapshot(dir, &fingerprint, &config));
        let from = saved.as_ref().map(|(h, ..)| h.log.clone());
        let mut counters = Counters::default();
        let state = match saved {
            Some((h, mut state, saved_counters)) => {
                counters = Counters::restore(&saved_counters);
                tracing::info!(
                    taken_at = %h.taken_at,
                    segment = %h.log.segment,
                    offset = h.log.offset,
                    "restoring the collector from its snapshot; replaying the log written since"
                );
                state.engine = state.engine.with_config(config.detect.clone());
                state
            }
            None => State::new(Engine::new(config.detect.clone())),
        };
        let live = Live {
            verdicts: state.engine.snapshot(),
            state,
            log: None,
        };
        let state_dir = config.state_dir.clone();
        let retention_days = config.retention_days;
        let aggregates = crate::aggregates::AggregatePolicy {
            bin_secs: config.detect.bin_secs,
            retention_days: config.aggregate_retention_days,
        };
        let c = Collector {
            config,
            current: std::sync::RwLock::new(catalog.clone()),
            reload_status: Mutex::new(ReloadStatus {
                successful: true,
                last_success: Utc::now(),
            }),
            live: Mutex::new(live),
            facts: Mutex::new(counters),
            fingerprint,
            restore: Mutex::new(Restore {
                from_snapshot: from.is_some(),
                replayed_batches: 0,
                duplicate_batches: 0,
            }),
            _state_lock: state_lock,
            bgp,
        };
        if let Some(dir) = &state_dir {
            let mut live = c.lock();
            let mut facts = c.facts();
            let (mut n, mut dup) = (0usize, 0usize);
            let now = Utc::now();
            let log = ObservationLog::open_replaying_with(
                dir,
                retention_days,
                Some(aggregates),
                now,
                from.as_ref(),
                &mut |mut b, day| {
                    if live.state.seen_batches.contains(&b) {
                        dup += 1;
                        return;
                    }
                    // Logs of earlier versions hold the agents' regions.
                    catalog.validator.canonicalize(&mut b);
                    // Every logged batch was accepted once: counted again as it is
                    // replayed, on top of the snapshot's counts (if any).
                    facts.batch(BatchResult::Accepted);
                    live.state.apply(&b, day, &mut facts);
                    n += 1;
                },
            )?;
            facts.log_damaged_records = log.damaged_at_open();
            live.log = Some(log);
            live.state
                .seen_batches
                .prune(oldest_kept_day(now, retention_days));
            let mut restore = c.restore.lock().expect("restore lock");
            restore.replayed_batches = n;
            restore.duplicate_batches = dup;
            if n > 0 {
                tracing::info!(
                    batches = n,
                    "restored accepted batches from the observation log"
                );
            }
            if dup > 0 {
                tracing::warn!(
                    batches = dup,
                    "the observation log holds batches twice; each was applied once"
                );
            }
        }
        Ok(c)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().expect("collector state lock")
    }

    pub(crate) fn facts(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.facts.lock().expect("collector counters lock")
    }

    /// How the state was restored at start.
    pub fn restore_info(&self) -> Restore {
        *self.restore.lock().expect("restore lock")
    }

    /// The agents and catalogs in force (replaced by each successful reload).
    pub fn current(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configured agent a token belongs to.
    pub fn agent_of_token(&self, token: &str) -> Option<String> {
        self.current().tokens.agent_of(token).map(str::to_string)
    }

    /// The outcome of the last reload.
    pub fn reload_status(&self) -> ReloadStatus {
        *self.reload_status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the agents and the catalogs with those of `config` and `files`, whole or
    /// not at all: a setting that only a restart can change (the listen address, the
    /// state directory, the detector...) refuses the reload, naming it, and the old
    /// configuration stays in force. State, log and counters are kept; observations of
    /// targets no longer in the catalog are refused from now on.
    pub fn reload(
        &self,
        config: &CollectorConfig,
        files: Vec<CatalogFile>,
        now: DateTime<Utc>,
    ) -> Result<Reloaded, String> {
        let r = self.try_reload(config, files);
        let mut st = self.reload_status.lock().unwrap_or_else(|p| p.into_inner());
        st.successful = r.is_ok();
        if r.is_ok() {
            st.last_success = now;
        }
        r
    }

    /// A reload that failed before it reached [`Collector::reload`] (an unreadable or
    /// invalid file): the old configuration stays, and the status says so.
    pub fn reload_failed(&self) {
        self.reload_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .successful = false;
    }

    fn try_reload(
        &self,
        config: &CollectorConfig,
        files: Vec<CatalogFile>,
    ) -> Result<Reloaded, String> {
        let old = &self.config;
        let fixed: [(&str, bool); 14] = [
            ("listen", config.listen != old.listen),
            ("state_dir", config.state_dir != old.state_dir),
            ("tls_cert_file/tls_key_file", config.tls != old.tls),
            (
                "retention_days",
                config.retention_days != old.retention_days,
            ),
            ("max_age_secs", config.max_age_secs != old.max_age_secs),
            (
                "max_future_secs",
                config.max_future_secs != old.max_future_secs,
            ),
            (
                "freshness_secs",
                config.freshness_secs != old.freshness_secs,
            ),
            (
                "max_body_bytes",
                config.max_body_bytes != old.max_body_bytes,
            ),
            ("assign_k", config.assign_k != old.assign_k),
            (
                "agent_timeout_secs",
                config.agent_timeout_secs != old.agent_timeout_secs,
            ),
            (
                "snapshot_interval_secs",
                config.snapshot_interval_secs != old.snapshot_interval_secs,
            ),
            ("the connection and upload limits", config.http != old.http),
            ("detect", config.detect != old.detect),
            ("bgp", config.bgp != old.bgp),
        ];
        let changed: Vec<&str> = fixed.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
        if !changed.is_empty() {
            return Err(format!(
                "{} changed: only a restart applies {}; nothing reloaded",
                changed.join(", "),
                if changed.len() == 1 { "it" } else { "them" }
            ));
        }
        let new = Catalog::new(old, config.agents.clone(), files)?;
        let before = self.current();
        let ids = |c: &Catalog| -> std::collections::BTreeSet<String> {
            c.agents.iter().map(|(a, _)| a.clone()).collect()
        };
        let (was, now_ids) = (ids(&before), ids(&new));
        let report = Reloaded {
            agents: new.agents.len(),
            targets: new.targets.len(),
            agents_added: now_ids.difference(&was).cloned().collect(),
            agents_removed: was.difference(&now_ids).cloned().collect(),
        };
        if let Some(bgp) = &self.bgp {
            bgp.feed
                .table()
                .replace_space(blackout_bgp::Space::from_targets(&new.targets));
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(report)
    }

    /// Counts an upload's result (the HTTP API counts those it refuses before ingest).
    pub fn count_batch(&self, result: BatchResult) {
        self.facts().batch(result);
    }

    /// Counts the bytes of an upload body that decoded, as they came over the wire.
    pub fn count_upload(&self, encoding: crate::wire::Encoding, bytes: u64) {
        self.facts().upload(encoding, bytes);
    }

    /// Writes a snapshot of the whole state next to the log (see [`crate::snapshot`]).
    /// Encoding holds the state lock, so that the snapshot and its log position agree;
    /// the file is written after it is released. Without a state directory there is
    /// nothing to do.
    pub fn write_snapshot(&self, now: DateTime<Utc>) -> Result<(), SnapshotError> {
        let Some(dir) = &self.config.state_dir else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let bytes = {
            let live = self.lock();
            let Some(log) = &live.log else {
                return Ok(());
            };
            let header = Header {
                fingerprint: self.fingerprint.clone(),
                taken_at: now,
                log: log.position(),
            };
            // Both under the state lock (taken before the counters' everywhere), so the
            // counters are those of exactly the state saved.
            let counters = self.facts().save();
            snapshot::encode(&header, &live.state, &counters)?
        };
        let encoded = started.elapsed();
        snapshot::write(dir, &bytes)?;
        tracing::debug!(
            bytes = bytes.len(),
            encode_ms = encoded.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "collector snapshot written"
        );
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
        self.count_batch(match &result {
            Ok(a) if a.duplicate => BatchResult::Duplicate,
            Ok(_) => BatchResult::Accepted,
            Err(IngestError::Unauthorized | IngestError::Forbidden { .. }) => {
                BatchResult::Unauthorized
            }
            Err(IngestError::Storage(_)) => BatchResult::StorageError,
            Err(IngestError::Invalid(_)) => BatchResult::Rejected,
        });
        result
    }

    fn ingest_inner(
        &self,
        uploader: &Uploader,
        mut batch: Batch,
        now: DateTime<Utc>,
    ) -> Result<Ack, IngestError> {
        let catalog = self.current();
        catalog.tokens.authenticate(uploader, &batch.agent)?;
        catalog.validator.validate(&batch, now)?;
        let replaced = catalog.validator.canonicalize(&mut batch);
        let mut live = self.lock();
        if live.state.seen_batches.contains(&batch) {
            return Ok(Ack {
                batch_id: batch.batch_id,
                accepted: 0,
                duplicate: true,
            });
        }
        if let Some(log) = live.log.as_mut() {
            log.append(&batch)?;
        }
        let mut facts = self.facts();
        if replaced > 0 {
            *facts
                .regions_replaced
                .entry(batch.agent.clone())
                .or_default() += replaced;
        }
        live.state.apply(&batch, now.date_naive(), &mut facts);
        drop(facts);
        live.state.last_report.insert(batch.agent.clone(), now);
        Ok(Ack {
            accepted: batch.observations.len(),
            batch_id: batch.batch_id,
            duplicate: false,
        })
    }

    /// When the detector can next close a bin (see `Engine::next_close_at`).
    pub fn next_close_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.lock().state.engine.next_close_at(now)
    }

    /// Readings of the BGP table: each becomes a value of its entity's `bgp` series at
    /// once, not at the next probing round.
    pub fn ingest_bgp(&self, readings: &[blackout_model::bgp::BgpVisibility]) {
        let mut live = self.lock();
        for v in readings {
            live.state.engine.ingest_bgp(v);
        }
    }

    /// Lets the detector close the bins that are over at `now`, and records what changed.
    pub fn tick(&self, now: DateTime<Utc>) -> Vec<EventChange> {
        let mut live = self.lock();
        let Live {
            state, verdicts, ..
        } = &mut *live;
        state
            .seen_batches
            .prune(oldest_kept_day(now, self.config.retention_days));
        state.tick(now, verdicts, &mut self.facts())
    }
}

/// The first UTC day whose log segment (and so whose batch ids) the retention keeps.
fn oldest_kept_day(now: DateTime<Utc>, retention_days: u32) -> chrono::NaiveDate {
    now.date_naive() - chrono::Days::new(u64::from(retention_days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use blackout_model::observation::{Observation, Signal};
    use std::collections::HashMap;

    fn collector(k: Option<usize>) -> Collector {
        let cat = blackout_model::catalog::parse(
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
        blackout_model::catalog::parse(
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
        spool: Option<blackout_model::observation::SpoolStatus>,
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
        blackout_model::catalog::expand(files)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect()
    }

    #[test]
    fn fleet_assignment_covers_every_target_k_times_and_rebalances() {
        let c = collector(Some(2));
        let now = Utc::now();
        let all = ids(&c.current().files);
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
    fn seen_batch_ids_are_bounded_by_the_retention_and_replay_applies_each_once() {
        let d = tempfile::tempdir().unwrap();
        let cfg = CollectorConfig {
            state_dir: Some(d.path().to_path_buf()),
            retention_days: 2,
            max_age_secs: 3600,
            ..CollectorConfig::default()
        };
        let now = Utc::now();
        {
            let c = Collector::new(cfg.clone(), vec![control_catalog()]).unwrap();
            for n in 0..3 {
                report_spool(&c, "a1", n, None, now);
            }
            assert_eq!(c.lock().state.seen_batches.len(), 3);
            // Ticks within the retention keep them; once their day is out of it, they go.
            c.tick(now + chrono::Duration::days(2));
            assert_eq!(c.lock().state.seen_batches.len(), 3);
            c.tick(now + chrono::Duration::days(3));
            assert!(c.lock().state.seen_batches.is_empty());
        }
        // The log holds a batch twice (two writers before the lock): applied once.
        let seg = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".jsonl"))
            .unwrap();
        let text = std::fs::read_to_string(&seg).unwrap();
        let first = text.split_inclusive('\n').next().unwrap().to_string();
        std::fs::write(&seg, text + &first).unwrap();
        let c = Collector::new(cfg, vec![control_catalog()]).unwrap();
        let r = c.restore_info();
        assert_eq!((r.replayed_batches, r.duplicate_batches), (3, 1));
        let ingested: u64 = c.facts().observations_ingested.values().sum();
        assert_eq!(ingested, 3);
    }

    mod snapshots {
        use super::*;
        use blackout_detect::DetectConfig;

        const BIN: i64 = 60;

        fn catalog() -> Vec<CatalogFile> {
            let cat = blackout_model::catalog::parse(
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
            let targets = blackout_model::catalog::expand(&catalog()).unwrap();
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
                                phase: (!ok)
                                    .then_some(blackout_model::observation::Phase::IcmpEcho),
                                failure: (!ok)
                                    .then_some(blackout_model::observation::Failure::Timeout),
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
                        spool: Some(blackout_model::observation::SpoolStatus {
                            observations: bin as u64,
                            dropped_observations: 0,
                            catalog_refusals: 0,
                            politeness_skips: 0,
                        }),
                    }
                })
                .collect()
        }

        fn end_of(t0: DateTime<Utc>, bin: i64) -> DateTime<Utc> {
            t0 + chrono::Duration::seconds((bin + 1) * BIN + 6)
        }

        /// What an operator sees: verdicts, events, agents, and what the metrics are
        /// rendered from (the read model's scrape; the counters of batches and
        /// observations count the replayed log too, and are left out).
        fn seen(c: &Collector, now: DateTime<Utc>) -> (String, String, String) {
            let snap = serde_json::to_string(&c.snapshot()).unwrap();
            let events = serde_json::to_string(&c.events(false, None, 100)).unwrap();
            (snap, events, read_scrape(c, now))
        }

        fn read_scrape(c: &Collector, now: DateTime<Utc>) -> String {
            let live = c.lock();
            let mut last: Vec<_> = live.state.last_report.iter().collect();
            last.sort();
            let mut counters = c.facts().clone();
            counters.batches = Default::default();
            counters.observations_ingested.clear();
            counters.observation_failures.clear();
            let open: Vec<_> = live
                .state
                .engine
                .open_events()
                .map(|e| (e.entity.country().to_string(), e.kind.as_str()))
                .collect();
            let agg =
                live.state
                    .view
                    .aggregate(now, c.config.freshness_secs as i64, &c.config.detect);
            format!(
                "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{open:?}\n{last:?}\n{counters:?}",
                agg.country
                    .iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
                agg.asn.iter().collect::<std::collections::BTreeMap<_, _>>(),
                agg.agent_control
                    .iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
                agg.http_phase_median_seconds
                    .iter()
                    .map(|(k, v)| (k, v.to_bits()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                live.verdicts,
            )
        }

        #[test]
        fn a_restart_from_the_snapshot_is_the_state_that_was_saved() {
            let d = tempfile::tempdir().unwrap();
            let now = Utc::now();
            let t0 = DateTime::from_timestamp(now.timestamp() - 3600 - now.timestamp() % BIN, 0)
                .unwrap();
            let mut live = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
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
            // The crashed one's lock is gone with its process; it is kept here to compare.
            live._state_lock = None;
            let restored = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            assert_eq!(
                restored.restore_info(),
                Restore {
                    from_snapshot: true,
                    replayed_batches: 10,
                    duplicate_batches: 0,
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

        /// The pages' trails are state like the rest: a restart from the snapshot and a
        /// replay of the whole log (no snapshot) both give the live collector's.
        #[test]
        fn trails_come_back_from_the_snapshot_and_from_the_log() {
            let d = tempfile::tempdir().unwrap();
            let now = Utc::now();
            let t0 = DateTime::from_timestamp(now.timestamp() - 3600 - now.timestamp() % BIN, 0)
                .unwrap();
            let live = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            for bin in 0..13 {
                for b in batches(t0, bin) {
                    live.ingest(&Uploader::InProcess, b, now).unwrap();
                }
                live.tick(end_of(t0, bin));
            }
            live.write_snapshot(end_of(t0, 12)).unwrap();
            let want = live.trails(|_| true, t0);
            assert!(
                want.iter()
                    .any(|t| t.points.len() == 13 && t.points.iter().any(|p| p.baseline.is_some())),
                "{want:?}"
            );
            drop(live);
            let restored = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            assert!(restored.restore_info().from_snapshot);
            restored.tick(end_of(t0, 12));
            assert_eq!(restored.trails(|_| true, t0), want, "from the snapshot");
            drop(restored);
            std::fs::remove_file(d.path().join(crate::snapshot::FILE)).unwrap();
            let replayed = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            assert!(!replayed.restore_info().from_snapshot);
            replayed.tick(end_of(t0, 12));
            assert_eq!(replayed.trails(|_| true, t0), want, "from the log alone");
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
                duplicate_batches: 0,
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
                    replayed_batches: 1,
                    duplicate_batches: 0,
                }
            );
            drop(c);
            std::fs::copy(&copy, &seg).unwrap();
            // Damaged: a warning and a full replay, never a failed start.
            let snap = d.path().join(crate::snapshot::FILE);
            let mut bytes = std::fs::read(&snap).unwrap();
            bytes.truncate(bytes.len() / 2);
            std::fs::write(&snap, &bytes).unwrap();
            let c = Collector::new(config(d.path(), 0.8), catalog()).unwrap();
            assert_eq!(c.restore_info(), full);
        }
    }
}
