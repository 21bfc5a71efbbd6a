//! What the two ends of blackout share: the observation that travels from agent to
//! collector (with the closed failure vocabulary), and the catalog format (what the
//! agents probe).

pub mod assign;
pub mod bgp;
#[cfg(feature = "catalog")]
pub mod catalog;
pub mod compact;
pub mod listen;
pub mod observation;

pub use observation::{Batch, Failure, Observation, Phase, Signal};
