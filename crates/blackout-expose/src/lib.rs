//! Exposition: the Prometheus metrics and the status page, both functions of the
//! collector's read model, and the HTTP router that serves them (`/metrics`, `/`).

pub mod metrics;
pub mod names;
pub mod status_page;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use blackout_collector::ReadModel;

/// The build that serves the metrics, as `blackout_build_info` labels (the binaries know
/// it; see the root package's build script).
#[derive(Debug, Clone, Copy)]
pub struct BuildInfo {
    pub version: &'static str,
    pub revision: &'static str,
    pub build_date: &'static str,
}

impl BuildInfo {
    /// This crate's version, revision unknown (tests and library users).
    pub const UNKNOWN: BuildInfo = BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        revision: "unknown",
        build_date: "unknown",
    };
}

/// `GET /metrics` (Prometheus text exposition) and `GET /` (the status page).
pub fn router(read: ReadModel, build: BuildInfo) -> Router {
    let metrics = Arc::new(metrics::Metrics::new(build));
    let r = read.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let (read, metrics) = (r.clone(), metrics.clone());
                async move { get_metrics(read, metrics) }
            }),
        )
        .route(
            "/",
            get(move || {
                let read = read.clone();
                async move { get_status_page(read).await }
            }),
        )
}

fn get_metrics(read: ReadModel, metrics: Arc<metrics::Metrics>) -> Response {
    let body = metrics.render(&read.scrape(chrono::Utc::now()), &read.catalog().files);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn get_status_page(read: ReadModel) -> Response {
    let body = tokio::task::spawn_blocking(move || {
        status_page::render(&status_page::view_from(&read, chrono::Utc::now()))
    })
    .await;
    match body {
        Ok(b) => status_page::html(b),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("status page: {e}"),
        )
            .into_response(),
    }
}
