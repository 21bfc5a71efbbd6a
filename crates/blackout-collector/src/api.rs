//! The collector's HTTP API.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/observations` | a [`Batch`] as JSON or compact ([`crate::wire`]), `Authorization: Bearer TOKEN` |
//! | `GET /api/v1/catalog` | the catalog files the collector knows, as JSON |
//! | `GET /api/v1/status` | the detector's view: per entity and signal value, baseline, state |
//! | `GET /api/v1/events` | outage events, newest first (`?open=true`, `?country=KZ`, `?limit=N`) |
//! | `GET /healthz` | `ok` |
//!
//! `/metrics` and the status page are `blackout-expose`'s; [`crate::serve`] serves
//! whatever router it is given (the binaries merge both).
//!
//! An upload's body is read under a deadline (`body_timeout_secs`, extended by one second
//! per `body_min_bytes_per_sec` received: a trickle cannot keep it open, a slow link with
//! a large batch can) and into memory taken from the agent's share of the body budget
//! ([`crate::budget`]): a declared `Content-Length` is reserved before the first byte,
//! a chunked body grows its reservation as it arrives. A body under a content coding
//! (`zstd`, `gzip`) is decoded into memory taken from the same budget, and its decoded
//! size is held to `max_body_bytes` (413 beyond): a small bomb costs what it expands to
//! up to the limit, never more. A content type or coding the collector does not speak
//! is answered 415 (with `Accept-Encoding`), which tells a newer agent to fall back.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::auth::Uploader;
use crate::budget::{BodyBudget, Reservation};
use crate::facts::BatchResult;
use crate::ingest::{Collector, IngestError};
use crate::wire::{self, DecodeError, ParseError};

/// Batches decoded and applied at once; beyond this the collector answers 503 with
/// Retry-After instead of queueing without bound. Taken once the body is read, so a
/// slow body holds none.
pub const MAX_CONCURRENT_INGESTS: usize = 64;
/// Longest time spent reading (and dropping) the body of a refused upload.
pub const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);
/// What an overloaded collector asks agents to wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 2;
/// A chunked body's reservation grows by at least this much at a time.
const GROWTH_STEP_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct AppState {
    collector: Arc<Collector>,
    ingest_slots: Arc<Semaphore>,
    budget: Arc<BodyBudget>,
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn overloaded(app: &AppState, what: &str) -> Response {
    app.collector.count_batch(BatchResult::Overloaded);
    let mut r = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("collector busy ({what}), retry later"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

/// Reads and throws away a body (chunk by chunk: no memory held), so that the client,
/// still sending it, reads our answer and its Retry-After instead of a reset
/// connection. Bounded in size and time; past either the connection is dropped.
async fn discard(body: Body, limit: usize) {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DISCARD_TIMEOUT, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    crate::auth::bearer_token(v).map(str::to_string)
}

/// Why a body could not be read whole.
enum BodyError {
    TooLarge,
    /// Its deadline passed: (bytes received, seconds it had).
    Timeout(usize, u64),
    /// The agent's share or the whole budget cannot hold more.
    Budget,
    Broken(String),
}

/// Reads an upload's body into memory held in `reservation`, under its deadline.
async fn read_body(
    app: &AppState,
    agent: &str,
    body: Body,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, BodyError> {
    let limits = &app.collector.config.http;
    let limit = app.collector.config.max_body_bytes;
    let started = Instant::now();
    let deadline = |received: usize| {
        let secs = limits.body_timeout_secs + received as u64 / limits.body_min_bytes_per_sec;
        (started + Duration::from_secs(secs), secs)
    };
    let mut buf: Vec<u8> = Vec::with_capacity(reservation.bytes());
    let mut stream = body.into_data_stream();
    loop {
        let (due, secs) = deadline(buf.len());
        let chunk = match tokio::time::timeout_at(due, stream.next()).await {
            Err(_) => return Err(BodyError::Timeout(buf.len(), secs)),
            Ok(None) => return Ok(buf),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(c))) => c,
        };
        let need = buf.len() + chunk.len();
        if need > limit {
            return Err(BodyError::TooLarge);
        }
        if need > reservation.bytes() {
            // Reserve ahead, as a Vec grows: what is reserved is what is allocated.
            let want = need
                .max(2 * reservation.bytes())
                .max(GROWTH_STEP_BYTES)
                .min(limit);
            if !app.budget.grow(agent, reservation, want) {
                return Err(BodyError::Budget);
            }
            buf.reserve_exact(reservation.bytes() - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
}

async fn post_observations(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Authentication before anything else: an unknown client costs no body read, no
    // decoding, and learns nothing about the format. (In-process agents do not come
    // through HTTP.)
    let token = bearer(&headers);
    let Some(token_agent) = token
        .as_deref()
        .and_then(|t| app.collector.agent_of_token(t))
    else {
        app.collector.count_batch(BatchResult::Unauthorized);
        return json_error(StatusCode::UNAUTHORIZED, "missing or unknown token".into());
    };
    let limit = app.collector.config.max_body_bytes;
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let (encoding, coding) = match wire::negotiate(
        header_str(header::CONTENT_TYPE),
        header_str(header::CONTENT_ENCODING),
    ) {
        Ok(n) => n,
        Err(e) => {
            discard(body, limit).await;
            let mut r = json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string());
            r.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static(wire::ACCEPTED_CODINGS),
            );
            return r;
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body of {} bytes exceeds the limit of {limit} bytes",
                declared.unwrap_or(0)
            ),
        );
    }
    // A declared length is reserved before the body is read: what is beyond the budget
    // is refused at the cost of its headers. An undeclared one grows as it arrives.
    let mut memory = app.budget.empty();
    if let Some(n) = declared
        && !app.budget.grow(&token_agent, &mut memory, n.max(1))
    {
        discard(body, limit).await;
        return overloaded(&app, "memory budget");
    }
    let body = match read_body(&app, &token_agent, body, &mut memory).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds the limit of {limit} bytes"),
            );
        }
        Err(BodyError::Budget) => return overloaded(&app, "memory budget"),
        Err(BodyError::Timeout(received, secs)) => {
            app.collector.count_batch(BatchResult::BodyTimeout);
            tracing::debug!(
                agent = %token_agent,
                received_bytes = received,
                deadline_secs = secs,
                "upload body too slow"
            );
            let mut r = json_error(
                StatusCode::REQUEST_TIMEOUT,
                format!("body not received within {secs} s ({received} bytes arrived)"),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Err(BodyError::Broken(e)) => {
            return json_error(StatusCode::BAD_REQUEST, format!("body broke off: {e}"));
        }
    };
    let Ok(_slot) = app.ingest_slots.clone().try_acquire_owned() else {
        return overloaded(&app, "ingest slots");
    };
    let wire_bytes = body.len() as u64;
    let mut decoded_memory = app.budget.empty();
    let decoded = match wire::decompress(coding, &body, limit, &mut |n| {
        app.budget.grow(&token_agent, &mut decoded_memory, n)
    }) {
        Ok(d) => d,
        Err(DecodeError::TooLarge(_)) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decoded body exceeds the limit of {limit} bytes"),
            );
        }
        Err(DecodeError::Budget) => return overloaded(&app, "memory budget"),
        Err(e @ DecodeError::Corrupt { .. }) => {
            app.collector.count_batch(BatchResult::Rejected);
            return json_error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let parsed = wire::parse(encoding, decoded.as_deref().unwrap_or(&body), limit);
    drop(decoded);
    let batch = match parsed {
        Ok(b) => b,
        Err(ParseError::TooLarge(e)) => {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(ParseError::Malformed(e)) => {
            app.collector.count_batch(BatchResult::Rejected);
            return json_error(StatusCode::BAD_REQUEST, format!("malformed batch: {e}"));
        }
    };
    app.collector.count_upload(encoding, wire_bytes);
    drop(body);
    if batch.agent != token_agent {
        app.collector.count_batch(BatchResult::Unauthorized);
        let e = IngestError::Forbidden {
            token_agent,
            batch_agent: batch.agent,
        };
        return json_error(StatusCode::FORBIDDEN, e.to_string());
    }
    let declared_interval = headers
        .get(crate::silence::UPLOAD_INTERVAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::silence::parse_interval);
    let agent = batch.agent.clone();
    let uploader = Uploader::Token(token);
    let collector = app.collector.clone();
    let result =
        tokio::task::spawn_blocking(move || collector.ingest(&uploader, batch, chrono::Utc::now()))
            .await;
    drop(memory);
    drop(decoded_memory);
    match result {
        Ok(Ok(ack)) => {
            if let Some(secs) = declared_interval {
                app.collector.note_upload_interval(&agent, secs);
            }
            (StatusCode::OK, axum::Json(ack)).into_response()
        }
        Ok(Err(e)) => {
            let status = match &e {
                IngestError::Unauthorized => StatusCode::UNAUTHORIZED,
                IngestError::Forbidden { .. } => StatusCode::FORBIDDEN,
                IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
                IngestError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut r = json_error(status, e.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(error = %e, "could not store a batch");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS * 5));
            }
            r
        }
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest task: {e}"),
        ),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogQuery {
    agent: Option<String>,
    /// `rule`: the catalog as written and the rule of the agent's share, which the agent
    /// applies itself, instead of the list of its targets.
    share: Option<ShareForm>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum ShareForm {
    Rule,
}

async fn get_catalog(
    State(app): State<AppState>,
    query: Result<axum::extract::Query<CatalogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(q) => q.0,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let now = chrono::Utc::now();
    if let (Some(ShareForm::Rule), Some(agent)) = (&q.share, q.agent.as_deref())
        && let Some(shared) = app.collector.shared_catalog_for(agent, now)
    {
        return axum::Json(shared).into_response();
    }
    let files = app.collector.catalog_for(q.agent.as_deref(), now);
    axum::Json(files).into_response()
}

async fn get_status(State(app): State<AppState>) -> Response {
    axum::Json(app.collector.snapshot()).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    open: bool,
    country: Option<String>,
    limit: Option<usize>,
}

async fn get_events(
    State(app): State<AppState>,
    query: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(q) => q.0,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    axum::Json(app.collector.events(q.open, q.country.as_deref(), limit)).into_response()
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
        .route("/api/v1/status", get(get_status))
        .route("/api/v1/events", get(get_events))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(AppState {
            budget: Arc::new(BodyBudget::new(
                &collector.config.http,
                &collector.config.agents,
            )),
            collector,
            ingest_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_INGESTS)),
        })
}

/// A snapshot at a clean stop: the next start replays nothing.
pub(crate) async fn snapshot_at_stop(collector: &Arc<Collector>) {
    if collector.config.snapshot_interval_secs > 0 {
        let c = collector.clone();
        let written =
            tokio::task::spawn_blocking(move || c.write_snapshot(chrono::Utc::now())).await;
        if let Ok(Err(e)) = written {
            tracing::error!(error = %e, "cannot write the collector snapshot");
        }
    }
}

/// Drives the detector's clock: closes bins as they end, a few times per bin.
/// Wake-up after a bin's closing instant: `advance` works in whole seconds of the clock.
const CLOSE_SLACK_MS: i64 = 20;

pub(crate) async fn tick_forever(collector: std::sync::Weak<Collector>) {
    let period = match collector.upgrade() {
        Some(c) => std::time::Duration::from_secs((c.config.detect.bin_secs / 10).clamp(1, 10)),
        None => return,
    };
    let mut last_snapshot = tokio::time::Instant::now();
    loop {
        // Wake when the next bin can close (verdicts as soon as the grace allows), and
        // at least every `period` for late data and snapshots.
        let wait = match collector.upgrade() {
            Some(c) => {
                let now = chrono::Utc::now();
                let next = c.next_close_at(now) + chrono::Duration::milliseconds(CLOSE_SLACK_MS);
                (next - now).to_std().unwrap_or_default().min(period)
            }
            None => return,
        };
        tokio::time::sleep(wait).await;
        let Some(c) = collector.upgrade() else {
            return;
        };
        let every = c.config.snapshot_interval_secs;
        let snapshot_due =
            every > 0 && last_snapshot.elapsed() >= std::time::Duration::from_secs(every);
        let written = tokio::task::spawn_blocking(move || {
            let now = chrono::Utc::now();
            c.tick(now);
            snapshot_due.then(|| c.write_snapshot(now))
        })
        .await;
        if snapshot_due {
            last_snapshot = tokio::time::Instant::now();
        }
        if let Ok(Some(Err(e))) = written {
            tracing::error!(error = %e, "cannot write the collector snapshot");
        }
    }
}
