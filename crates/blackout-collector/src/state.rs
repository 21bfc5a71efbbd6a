//! The collector's state and how a batch and the clock change it. [`State`] is the one
//! shape of it: what the live collector holds and what a snapshot saves.

use std::collections::HashMap;

use blackout_detect::{ChangeKind, Engine, EventChange, Snapshot};
use blackout_model::observation::Batch;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::dedup::SeenBatches;
use crate::facts::Counters;
use crate::store::LatestView;

/// Everything the collector learned from the batches it accepted. A snapshot saves this
/// (see [`crate::snapshot`]); the log can rebuild it.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub engine: Engine,
    pub view: LatestView,
    pub seen_batches: SeenBatches,
    /// When each agent's last batch was accepted.
    pub last_report: HashMap<String, DateTime<Utc>>,
    /// Each agent's last reported count of dropped observations, to turn its reports
    /// (which restart from 0 with the agent) into a counter.
    pub spool_dropped: HashMap<String, u64>,
    /// The same for each agent's count of refused catalogs.
    pub catalog_refusals: HashMap<String, u64>,
    /// The same for each agent's count of block probes skipped for politeness.
    pub politeness_skips: HashMap<String, u64>,
    /// What the operator was last told about the vantage (see [`VantageLog`]).
    #[serde(skip)]
    pub vantage_log: VantageLog,
}

/// Whether the loss of every healthy vantage point has been logged and not yet its end.
#[derive(Debug, Default)]
pub struct VantageLog {
    lost: bool,
    /// Some agent has reported a control probe: from then on, an end of the loss needs a
    /// control that answers (an agent that has not probed its controls yet is counted
    /// healthy by the detector, which would log a recovery that is none).
    controls_seen: bool,
}

impl State {
    pub fn new(engine: Engine) -> State {
        State {
            engine,
            view: LatestView::default(),
            seen_batches: SeenBatches::default(),
            last_report: HashMap::new(),
            spool_dropped: HashMap::new(),
            catalog_refusals: HashMap::new(),
            politeness_skips: HashMap::new(),
            vantage_log: VantageLog::default(),
        }
    }

    /// Applies an accepted (or replayed) batch that arrived on `day` (UTC).
    pub fn apply(&mut self, batch: &Batch, day: NaiveDate, facts: &mut Counters) {
        self.seen_batches.insert(batch, day);
        for o in &batch.observations {
            let target = self.engine.ingest(o);
            self.view.record(target, o);
        }
        facts.observations(batch);
        if let Some(s) = batch.spool {
            facts.agent_spool_observations.insert(
                batch.agent.clone(),
                s.observations.min(i64::MAX as u64) as i64,
            );
            let last = self
                .spool_dropped
                .insert(batch.agent.clone(), s.dropped_observations);
            // Below the last report: the agent restarted and counts from zero again.
            let added = match last {
                Some(l) if s.dropped_observations >= l => s.dropped_observations - l,
                _ => s.dropped_observations,
            };
            *facts
                .agent_spool_dropped
                .entry(batch.agent.clone())
                .or_default() += added;
            let last = self
                .catalog_refusals
                .insert(batch.agent.clone(), s.catalog_refusals);
            let added = match last {
                Some(l) if s.catalog_refusals >= l => s.catalog_refusals - l,
                _ => s.catalog_refusals,
            };
            *facts
                .agent_catalog_refusals
                .entry(batch.agent.clone())
                .or_default() += added;
            let last = self
                .politeness_skips
                .insert(batch.agent.clone(), s.politeness_skips);
            let added = match last {
                Some(l) if s.politeness_skips >= l => s.politeness_skips - l,
                _ => s.politeness_skips,
            };
            *facts
                .agent_politeness_skips
                .entry(batch.agent.clone())
                .or_default() += added;
        }
    }

    /// Lets the detector close the bins that are over at `now`; logs and counts the
    /// events that changed. `verdicts` is
    /// the detector's view after the previous tick; it is replaced by the new one.
    pub fn tick(
        &mut self,
        now: DateTime<Utc>,
        verdicts: &mut Snapshot,
        facts: &mut Counters,
    ) -> Vec<EventChange> {
        let changes = self.engine.advance(now);
        for c in &changes {
            let e = &c.event;
            if c.change == ChangeKind::Opened {
                *facts
                    .events_opened
                    .entry((e.entity.country().to_string(), e.kind.as_str()))
                    .or_default() += 1;
            }
            log_change(c);
        }
        let snap = self.engine.snapshot();
        self.vantage_log.update(&snap);
        *verdicts = snap;
        changes
    }
}

impl VantageLog {
    /// The loss of every healthy vantage point is for the operator: one WARN when it
    /// starts and one when it ends, not one per bin (the page, `/api/v1/status` and the
    /// metrics show it meanwhile).
    fn update(&mut self, snap: &Snapshot) {
        let v = &snap.vantage;
        self.controls_seen |= v.control_ok + v.control_failed > 0;
        if !v.healthy && !self.lost {
            self.lost = true;
            tracing::warn!(
                reason = "no_healthy_vantage",
                agents = v.agents,
                healthy_agents = v.healthy_agents,
                control_ok = v.control_ok,
                control_failed = v.control_failed,
                "no healthy vantage point: every agent's control targets fail or no agent reports; no verdicts until one is healthy again"
            );
        } else if v.healthy && self.lost && (v.control_ok > 0 || !self.controls_seen) {
            self.lost = false;
            tracing::warn!(
                agents = v.agents,
                healthy_agents = v.healthy_agents,
                control_ok = v.control_ok,
                control_failed = v.control_failed,
                "healthy vantage point again: verdicts resume"
            );
        }
    }
}

/// Event changes are for the operator: opened and closed at WARN.
fn log_change(c: &EventChange) {
    let e = &c.event;
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
