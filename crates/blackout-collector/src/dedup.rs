//! Deduplication: a batch sent again (a lost acknowledgement, a spool replayed after a
//! crash) is acknowledged again but applied once.
//!
//! Each id is kept with the UTC day its batch arrived, and forgotten when that day falls
//! out of the log's retention, as the log segment holding the batch is: what is kept is
//! what a full replay of the log would rebuild, so it is bounded by the retention window
//! (a re-sent batch older than that is refused as too old: see [`crate::log`]).

use std::collections::HashMap;

use blackout_model::observation::Batch;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// The batches accepted so far, by agent and batch id, with their day of arrival.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SeenBatches {
    /// Key -> day of arrival (days from the Common Era, as [`Datelike::num_days_from_ce`]).
    by_key: HashMap<String, i32>,
    /// The cut-off of the last pruning: pruning again at the same day is free.
    #[serde(skip)]
    pruned_before: i32,
}

impl SeenBatches {
    pub fn contains(&self, batch: &Batch) -> bool {
        self.by_key.contains_key(&key(batch))
    }

    /// Remembers a batch that arrived on `day`.
    pub fn insert(&mut self, batch: &Batch, day: NaiveDate) {
        self.by_key.insert(key(batch), day.num_days_from_ce());
    }

    /// Forgets the batches that arrived before `oldest_kept` (the first day the log keeps).
    pub fn prune(&mut self, oldest_kept: NaiveDate) {
        let cut = oldest_kept.num_days_from_ce();
        if cut <= self.pruned_before {
            return;
        }
        self.by_key.retain(|_, day| *day >= cut);
        self.pruned_before = cut;
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Batch ids are unique per agent: keyed with the agent, so that no agent can claim
/// (and so suppress) another agent's batch ids.
fn key(batch: &Batch) -> String {
    format!("{}\n{}", batch.agent, batch.batch_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str) -> Batch {
        Batch {
            batch_id: id.into(),
            agent: "a".into(),
            observations: Vec::new(),
            spool: None,
        }
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn ids_are_forgotten_with_the_day_their_segment_expires() {
        let mut s = SeenBatches::default();
        s.insert(&batch("old"), day("2026-11-01"));
        s.insert(&batch("mid"), day("2026-11-02"));
        s.insert(&batch("new"), day("2026-11-03"));
        s.prune(day("2026-11-02"));
        assert!(!s.contains(&batch("old")));
        assert!(s.contains(&batch("mid")) && s.contains(&batch("new")));
        assert_eq!(s.len(), 2);
        // The same cut-off again is a no-op; a later one forgets more.
        s.prune(day("2026-11-02"));
        assert_eq!(s.len(), 2);
        s.prune(day("2026-11-04"));
        assert!(s.is_empty());
    }
}
