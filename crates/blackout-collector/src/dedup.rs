//! Deduplication: a batch sent again (a lost acknowledgement, a spool replayed after a
//! crash) is acknowledged again but applied once.

use std::collections::HashSet;

use blackout_model::observation::Batch;
use serde::{Deserialize, Serialize};

/// The batches accepted so far, by agent and batch id.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeenBatches(HashSet<String>);

impl SeenBatches {
    pub fn contains(&self, batch: &Batch) -> bool {
        self.0.contains(&key(batch))
    }

    pub fn insert(&mut self, batch: &Batch) {
        self.0.insert(key(batch));
    }
}

/// Batch ids are unique per agent: keyed with the agent, so that no agent can claim
/// (and so suppress) another agent's batch ids.
fn key(batch: &Batch) -> String {
    format!("{}\n{}", batch.agent, batch.batch_id)
}
