//! The collector: ingest (HTTP API, auth, validation), durable log, the latest view, and
//! the hand-off to `detect` and `expose`.

pub mod api;
pub mod config;
pub mod ingest;
pub mod log;
pub mod snapshot;
pub mod store;
pub mod tls;

pub use api::{router, serve};
pub use config::CollectorConfig;
pub use ingest::{Collector, IngestError};
