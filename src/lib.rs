//! blackout: an Internet-shutdown detector. The crates follow the data path:
//!
//! ```text
//! blackout-model (observation, failure vocabulary, catalog format)
//!   <- blackout-probe <- blackout-agent (schedule, spool, upload)
//!   <- blackout-detect (pure) <- blackout-collector (ingest, log, state, read model)
//!   <- blackout-expose (metrics, status page)
//! blackout-tools (replay, quality, catalog build, ad-hoc probes) and this package (the
//! binaries and their wiring) on top.
//! ```
//!
//! This package holds what only the binaries need: the catalogs compiled in, the
//! in-process sink of `standalone`, the server that merges the collector's and the
//! exposition's routes, and log set-up.

pub mod embedded;
pub mod logging;
pub mod standalone;

use std::sync::Arc;

use blackout_collector::Collector;

pub use embedded::{embedded, embedded_names};
pub use standalone::InProcessSink;

/// Serves the collector's API and the exposition (`/metrics`, the status page) on
/// `listener` until `shutdown` resolves (see [`blackout_collector::serve`]).
pub async fn serve(
    collector: Arc<Collector>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = blackout_collector::router(collector.clone())
        .merge(blackout_expose::router(collector.read_model()));
    blackout_collector::serve(collector, app, listener, shutdown).await
}
