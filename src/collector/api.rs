//! The collector's HTTP API.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/observations` | a [`Batch`] as JSON, `Authorization: Bearer TOKEN` |
//! | `GET /api/v1/catalog` | the catalog files the collector knows, as JSON |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /healthz` | `ok` |

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Semaphore;

use super::ingest::{Collector, IngestError, Uploader};
use crate::observation::Batch;

/// Batches decoded and applied at once; beyond this the collector answers 503 with
/// Retry-After instead of queueing without bound.
pub const MAX_CONCURRENT_INGESTS: usize = 64;

#[derive(Clone)]
struct AppState {
    collector: Arc<Collector>,
    ingest_slots: Arc<Semaphore>,
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

async fn post_observations(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(_slot) = app.ingest_slots.clone().try_acquire_owned() else {
        app.collector
            .metrics
            .batches
            .with_label_values(&["overloaded"])
            .inc();
        let mut r = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "collector busy, retry later".into(),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let uploader = Uploader::Token(bearer(&headers));
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            // Authentication first: an anonymous client learns nothing about the format.
            if bearer(&headers).is_none() {
                return json_error(StatusCode::UNAUTHORIZED, "missing bearer token".into());
            }
            app.collector
                .metrics
                .batches
                .with_label_values(&["rejected"])
                .inc();
            return json_error(StatusCode::BAD_REQUEST, format!("malformed batch: {e}"));
        }
    };
    let collector = app.collector.clone();
    let result =
        tokio::task::spawn_blocking(move || collector.ingest(&uploader, batch, chrono::Utc::now()))
            .await;
    match result {
        Ok(Ok(ack)) => (StatusCode::OK, axum::Json(ack)).into_response(),
        Ok(Err(e)) => {
            let status = match &e {
                IngestError::Unauthorized => StatusCode::UNAUTHORIZED,
                IngestError::Forbidden { .. } => StatusCode::FORBIDDEN,
                IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
                IngestError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(error = %e, "could not store a batch");
            }
            json_error(status, e.to_string())
        }
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest task: {e}"),
        ),
    }
}

async fn get_metrics(State(app): State<AppState>) -> Response {
    let body = app.collector.render_metrics(chrono::Utc::now());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn get_catalog(State(app): State<AppState>) -> Response {
    axum::Json(&app.collector.catalog_files).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// The collector's routes.
pub fn router(collector: Arc<Collector>) -> Router {
    let limit = collector.config.max_body_bytes;
    Router::new()
        .route("/api/v1/observations", post(post_observations))
        .route("/api/v1/catalog", get(get_catalog))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(healthz))
        .route("/", crate::expose::status_page::route(collector.clone()))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(AppState {
            collector,
            ingest_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_INGESTS)),
        })
}

/// Serves the collector on `listener` until `shutdown` resolves.
pub async fn serve(
    collector: Arc<Collector>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(collector))
        .with_graceful_shutdown(shutdown)
        .await
}
