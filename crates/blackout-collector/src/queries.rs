//! Questions the API and the agents ask of the collector: the catalog an agent should
//! probe (fleet assignment), the detector's verdicts, the events.

use blackout_detect::{EntityKey, Event, SeriesTrail, Snapshot};
use blackout_model::catalog::CatalogFile;
use chrono::{DateTime, Utc};

use crate::ingest::Collector;

impl Collector {
    /// The catalog an agent should probe: its share under fleet assignment (`assign_k`),
    /// or everything. The fleet is the agents heard from within `agent_timeout_secs`, plus
    /// the one asking, so shares rebalance as agents come and go.
    pub fn catalog_for(&self, agent: Option<&str>, now: DateTime<Utc>) -> Vec<CatalogFile> {
        let catalog = self.current();
        let (Some(k), Some(agent)) = (self.config.assign_k, agent) else {
            return catalog.files.clone();
        };
        let fleet = self.fleet_with(agent, now);
        let share = crate::assign::assign_ids(catalog.targets().ids(), &fleet, k);
        let Some(idx) = share.get(agent) else {
            return Vec::new();
        };
        // The collector keeps no expanded targets: the share is picked as the files
        // expand again, in the same order as the indices (ascending), straight into
        // the files served. One share is built at a time: at a million targets each
        // is hundreds of MB until sent, and agents ask together when they start.
        let _one = self.catalog_build.lock().unwrap_or_else(|p| p.into_inner());
        let mut mine = blackout_model::catalog::FilesBuilder::default();
        let (mut i, mut next) = (0usize, idx.iter().peekable());
        for f in &catalog.files {
            f.expand_each(|t| {
                if next.peek() == Some(&&i) {
                    next.next();
                    mine.push(&t);
                }
                i += 1;
            });
        }
        mine.finish()
    }

    /// The catalog as written with the rule of `agent`'s share (`?share=rule`), for agents
    /// that take their share themselves; `None` without `assign_k` (every agent probes
    /// everything: [`Collector::catalog_for`] answers).
    pub fn shared_catalog_for(
        &self,
        agent: &str,
        now: DateTime<Utc>,
    ) -> Option<blackout_model::catalog::SharedCatalog> {
        let k = self.config.assign_k?;
        let mut fleet = self.fleet_with(agent, now);
        fleet.sort_unstable();
        Some(blackout_model::catalog::SharedCatalog {
            files: self.current().files.clone(),
            assignment: blackout_model::catalog::Assignment {
                agent: agent.to_string(),
                k,
                fleet,
            },
        })
    }

    /// The agents reporting within `agent_timeout_secs`, and `agent`.
    fn fleet_with(&self, agent: &str, now: DateTime<Utc>) -> Vec<String> {
        let mut fleet: Vec<String> = {
            let live = self.lock();
            let oldest = now - chrono::Duration::seconds(self.config.agent_timeout_secs as i64);
            live.state
                .last_report
                .iter()
                .filter(|(_, t)| **t >= oldest)
                .map(|(a, _)| a.clone())
                .collect()
        };
        if !fleet.iter().any(|a| a == agent) {
            fleet.push(agent.to_string());
        }
        fleet
    }

    /// The detector's view after the last tick.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().verdicts.clone()
    }

    /// Events, newest first; only open ones if `open_only`; at most `limit`.
    pub fn events(&self, open_only: bool, country: Option<&str>, limit: usize) -> Vec<Event> {
        let live = self.lock();
        let mut v: Vec<Event> = live
            .state
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

    /// The detector's trails (value and baseline per bin) of the entities `which`
    /// accepts, from `since` on.
    pub fn trails(
        &self,
        which: impl Fn(&EntityKey) -> bool,
        since: DateTime<Utc>,
    ) -> Vec<SeriesTrail> {
        self.lock().state.engine.trails(which, since)
    }

    /// Number of targets with at least one reading.
    pub fn targets_seen(&self) -> usize {
        self.lock().state.view.target_count()
    }
}
