//! Exposition: the Prometheus metrics and the status page, both functions of the
//! collector's read model, and the HTTP router that serves them (`/metrics`, `/`,
//! `/country/CC`, `/api/v1/country/CC`).

pub mod country_page;
pub mod metrics;
pub mod names;
pub mod status_page;

use std::sync::Arc;

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
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

/// `GET /metrics` (Prometheus text exposition), `GET /` (the status page, `?q=` filters
/// its countries by name or code), `GET /country/CC` (a country's page) and
/// `GET /api/v1/country/CC` (its data as JSON).
pub fn router(read: ReadModel, build: BuildInfo) -> Router {
    let metrics = Arc::new(metrics::Metrics::new(build));
    let r = read.clone();
    let (rc, rj) = (read.clone(), read.clone());
    Router::new()
        .route(
            "/country/{cc}",
            get(move |Path(cc): Path<String>| {
                let read = rc.clone();
                async move { get_country(read, cc, false).await }
            }),
        )
        .route(
            "/api/v1/country/{cc}",
            get(move |Path(cc): Path<String>| {
                let read = rj.clone();
                async move { get_country(read, cc, true).await }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let (read, metrics) = (r.clone(), metrics.clone());
                async move { get_metrics(read, metrics) }
            }),
        )
        .route(
            "/",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let read = read.clone();
                async move { get_status_page(read, q.get("q").cloned().unwrap_or_default()).await }
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

async fn get_status_page(read: ReadModel, filter: String) -> Response {
    let body = tokio::task::spawn_blocking(move || {
        let mut view = status_page::view_from(&read, chrono::Utc::now());
        view.filter = filter;
        status_page::render(&view)
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

/// A country's page or its JSON; 404 (a page, or `{"error": ...}`) when no catalog
/// watches the code.
async fn get_country(read: ReadModel, code: String, json: bool) -> Response {
    let view = tokio::task::spawn_blocking(move || {
        let v = country_page::view_from(&read, &code, chrono::Utc::now());
        (v, code)
    })
    .await;
    let (view, code) = match view {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("country page: {e}"),
            )
                .into_response();
        }
    };
    match (view, json) {
        (Some(v), true) => axum::Json(v).into_response(),
        (Some(v), false) => status_page::html(country_page::render(&v)),
        (None, true) => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": format!("country {code:?}: not watched by any catalog of this collector")
            })),
        )
            .into_response(),
        (None, false) => {
            let mut r = status_page::html(country_page::render_not_found(&code));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}
