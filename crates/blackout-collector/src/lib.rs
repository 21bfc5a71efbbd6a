//! The collector: ingest (HTTP API, authentication, validation, dedup), the durable log,
//! the state and its snapshots, fleet assignment, and the read model the exposition
//! reads. It knows nothing of Prometheus or HTML: `blackout-expose` renders the read
//! model.

pub mod aggregates;
pub mod api;
pub mod assign;
pub mod auth;
pub mod bgp;
pub mod budget;
pub mod config;
pub mod dedup;
pub mod facts;
pub mod ingest;
pub mod lock;
pub mod log;
pub mod queries;
pub mod read;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod tls;
pub mod validate;
pub mod wire;

pub use api::router;
pub use auth::Uploader;
pub use config::CollectorConfig;
pub use facts::{BatchResult, ConnectionDrop, Counters};
pub use ingest::{Catalog, Collector, IngestError, ReloadStatus, Reloaded, StartError};
pub use read::{ReadModel, Scrape};
pub use server::serve;
pub use state::State;
pub use wire::Encoding;
