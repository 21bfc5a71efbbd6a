//! Ingest: authenticate, validate, log durably, then apply a batch to the live state.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::config::CollectorConfig;
use super::log::{LogError, ObservationLog};
use super::store::{HEALTHY_CONTROL_SHARE, LatestView};
use crate::catalog::{CatalogFile, Target};
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

struct State {
    view: LatestView,
    seen_batches: HashSet<String>,
    log: Option<ObservationLog>,
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
        let (log, replayed) = match &config.state_dir {
            Some(dir) => {
                let (log, batches) =
                    ObservationLog::open_with_retention(dir, config.retention_days, Utc::now())?;
                (Some(log), batches)
            }
            None => (None, Vec::new()),
        };
        let c = Collector {
            config,
            metrics,
            catalog_files,
            targets,
            known,
            tokens,
            state: Mutex::new(State {
                view: LatestView::default(),
                seen_batches: HashSet::new(),
                log,
            }),
        };
        let n = replayed.len();
        {
            let mut st = c.state.lock().expect("collector state lock");
            for b in &replayed {
                c.apply(&mut st, b);
            }
        }
        if n > 0 {
            tracing::info!(
                batches = n,
                "restored accepted batches from the observation log"
            );
        }
        Ok(c)
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
    }

    /// Recomputes the aggregate gauges and returns the text exposition.
    pub fn render_metrics(&self, now: DateTime<Utc>) -> String {
        let agg = {
            let st = self.state.lock().expect("collector state lock");
            st.view.aggregate(now, self.config.freshness_secs as i64)
        };
        let m = &self.metrics;
        m.targets.reset();
        m.reachable_ratio.reset();
        m.asn_targets.reset();
        m.asn_reachable_ratio.reset();
        m.rtt_median.reset();
        m.asn_status.reset();
        for (agent, share) in &agg.agent_control {
            let healthy = share.is_none_or(|s| s >= HEALTHY_CONTROL_SHARE);
            m.agent_healthy
                .with_label_values(&[agent])
                .set(healthy as i64);
        }
        let mut country_worst: HashMap<&str, i64> = HashMap::new();
        for ((country, signal), share) in &agg.country {
            m.targets
                .with_label_values(&[country, signal.as_str()])
                .set(share.targets as i64);
            if let Some(r) = share.ratio() {
                m.reachable_ratio
                    .with_label_values(&[country, signal.as_str()])
                    .set(r);
                let w = country_worst.entry(country).or_insert(0);
                *w = (*w).max(fixed_threshold_status(r));
            }
            if let Some(rtt) = share.rtt_median_seconds {
                m.rtt_median
                    .with_label_values(&[country, signal.as_str()])
                    .set(rtt);
            }
        }
        let mut asn_worst: HashMap<(&str, u32), i64> = HashMap::new();
        for ((country, asn, signal), share) in &agg.asn {
            let asn_s = asn.to_string();
            m.asn_targets
                .with_label_values(&[country, &asn_s, signal.as_str()])
                .set(share.targets as i64);
            if let Some(r) = share.ratio() {
                m.asn_reachable_ratio
                    .with_label_values(&[country, &asn_s, signal.as_str()])
                    .set(r);
                let w = asn_worst.entry((country, *asn)).or_insert(0);
                *w = (*w).max(fixed_threshold_status(r));
            }
        }
        for (country, s) in country_worst {
            m.country_status.with_label_values(&[country]).set(s);
        }
        for ((country, asn), s) in asn_worst {
            m.asn_status
                .with_label_values(&[country, &asn.to_string()])
                .set(s);
        }
        m.encode()
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

/// Interim verdict from the raw reachable share, before baselines are learned.
pub fn fixed_threshold_status(ratio: f64) -> i64 {
    if ratio < 0.2 {
        2
    } else if ratio < 0.5 {
        1
    } else {
        0
    }
}
