//! The probe agent: scheduler (rounds, pacing, politeness), durable spool, upload.

pub mod catalog;
pub mod config;
pub mod filter;
pub mod metrics;
pub mod network;
pub mod run;
pub mod schedule;
pub mod spool;
pub mod table;
pub mod upload;

pub use config::AgentConfig;
pub use network::Network;
pub use run::{AgentError, run, run_multi};
