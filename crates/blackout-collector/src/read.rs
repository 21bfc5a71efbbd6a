//! The read model: what the exposition (metrics, status page) may see of the collector.
//! A read-only view; renderers never reach into the collector's state.

use std::collections::HashMap;
use std::sync::Arc;

use blackout_detect::{EntityKey, Event, SeriesTrail, Snapshot};
use chrono::{DateTime, Utc};

use crate::facts::Counters;
use crate::ingest::Collector;
use crate::store::LatestAggregate;

/// A read-only handle on a collector, for the exposition.
#[derive(Clone)]
pub struct ReadModel {
    collector: Arc<Collector>,
}

/// What a scrape needs, taken at one instant under the collector's lock.
#[derive(Debug)]
pub struct Scrape {
    /// The latest round as measured, within `freshness_secs`.
    pub latest: LatestAggregate,
    /// The detector's view after the last tick.
    pub verdicts: Snapshot,
    /// (country, kind) of every open event.
    pub open_events: Vec<(String, &'static str)>,
    /// When each agent's last batch was accepted.
    pub last_report: HashMap<String, DateTime<Utc>>,
    pub counters: Counters,
    /// The outcome of the last configuration reload.
    pub reload: crate::ingest::ReloadStatus,
    /// When the scrape was taken.
    pub at: DateTime<Utc>,
    /// The BGP sources and table, when `[bgp]` is configured.
    pub bgp: Option<crate::bgp::BgpFacts>,
}

impl ReadModel {
    pub fn new(collector: Arc<Collector>) -> ReadModel {
        ReadModel { collector }
    }

    /// The catalogs in force (countries, their names, controls), as of the last reload.
    pub fn catalog(&self) -> std::sync::Arc<crate::ingest::Catalog> {
        self.collector.current()
    }

    /// How much history the detector needs before its full verdicts (latency and loss
    /// included).
    pub fn warmup_secs(&self) -> u64 {
        let d = &self.collector.config.detect;
        d.warmup_bins() as u64 * d.bin_secs
    }

    /// How much history the detector needs before its first verdict on reachability.
    pub fn first_verdict_secs(&self) -> u64 {
        let d = &self.collector.config.detect;
        d.first_verdict_bins() as u64 * d.bin_secs
    }

    /// The detector's view after the last tick.
    pub fn verdicts(&self) -> Snapshot {
        self.collector.snapshot()
    }

    /// Events, newest first; only open ones if `open_only`; at most `limit`.
    pub fn events(&self, open_only: bool, country: Option<&str>, limit: usize) -> Vec<Event> {
        self.collector.events(open_only, country, limit)
    }

    /// Value and baseline per bin of the entities `which` accepts, from `since` on (at
    /// most [`blackout_detect::TRAIL_SECS`] back): the detector's own per-bin record.
    pub fn trails(
        &self,
        which: impl Fn(&EntityKey) -> bool,
        since: DateTime<Utc>,
    ) -> Vec<SeriesTrail> {
        self.collector.trails(which, since)
    }

    /// How long a bin is.
    pub fn bin_secs(&self) -> u64 {
        self.collector.config.detect.bin_secs
    }

    /// When each agent's last batch was accepted.
    pub fn last_reports(&self) -> HashMap<String, DateTime<Utc>> {
        self.collector.lock().state.last_report.clone()
    }

    /// The counters alone.
    pub fn counters(&self) -> Counters {
        self.collector.facts().clone()
    }

    /// Everything a metrics scrape reads, consistent with itself.
    pub fn scrape(&self, now: DateTime<Utc>) -> Scrape {
        let c = &self.collector;
        let (latest, verdicts, open_events, last_report) = {
            let live = c.lock();
            let open = live
                .state
                .engine
                .open_events()
                .map(|e| (e.entity.country().to_string(), e.kind.as_str()))
                .collect();
            (
                live.state
                    .view
                    .aggregate(now, c.config.freshness_secs as i64, &c.config.detect),
                live.verdicts.clone(),
                open,
                live.state.last_report.clone(),
            )
        };
        Scrape {
            latest,
            verdicts,
            open_events,
            last_report,
            counters: c.facts().clone(),
            reload: c.reload_status(),
            at: now,
            bgp: c.bgp.as_ref().map(|b| b.facts()),
        }
    }
}

impl Collector {
    /// The read model of this collector.
    pub fn read_model(self: &Arc<Self>) -> ReadModel {
        ReadModel::new(self.clone())
    }
}
