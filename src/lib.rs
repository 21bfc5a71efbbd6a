//! blackout: an Internet-shutdown detector.
//!
//! The module tree follows the data path:
//!
//! ```text
//! catalog (targets) -> probe -> observation -> agent (schedule, spool, upload)
//!   -> collector (ingest, store) -> detect (vantage health, aggregate, baseline,
//!   state, events) -> expose (Prometheus metrics, status page)
//! ```
//!
//! `detect` is pure: no I/O and no clock. Time is passed in, so the same engine runs
//! live in the collector, offline in `replay`, and under the simulator in tests.

pub mod agent;
pub mod catalog;
pub mod collector;
pub mod detect;
pub mod expose;
pub mod logging;
pub mod observation;
pub mod probe;
pub mod replay;

pub use observation::{Batch, Failure, Observation, Phase, Signal};
