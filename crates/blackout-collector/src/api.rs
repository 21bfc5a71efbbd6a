//! The collector's HTTP API.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/observations` | a [`Batch`] as JSON, `Authorization: Bearer TOKEN` |
//! | `GET /api/v1/catalog` | the catalog files the collector knows, as JSON |
//! | `GET /api/v1/status` | the detector's view: per entity and signal value, baseline, state |
//! | `GET /api/v1/events` | outage events, newest first (`?open=true`, `?country=KZ`, `?limit=N`) |
//! | `GET /healthz` | `ok` |
//!
//! `/metrics` and the status page are `blackout-expose`'s; [`serve`] serves whatever
//! router it is given (the binaries merge both).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Uploader;
use crate::facts::BatchResult;
use crate::ingest::{Collector, IngestError};
use blackout_model::observation::Batch;

/// Batches decoded and applied at once; beyond this the collector answers 503 with
/// Retry-After instead of queueing without bound.
pub const MAX_CONCURRENT_INGESTS: usize = 64;
/// Request bodies held in memory at once, summed (their declared lengths, or the body
/// limit when undeclared). With the body limit this bounds the ingest path's memory:
/// at most this many bytes of JSON, and their decoded batches, are alive at a time.
pub const MAX_INFLIGHT_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Open connections; beyond, accepting waits and the kernel's backlog queues them.
pub const MAX_CONNECTIONS: usize = 2048;
/// A connection that moves no byte for this long is closed (slow or dead clients must
/// not hold a connection slot for ever).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest time spent reading (and dropping) the body of a refused upload.
pub const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);
/// What an overloaded collector asks agents to wait, in seconds.
pub const RETRY_AFTER_SECS: u64 = 2;

#[derive(Clone)]
struct AppState {
    collector: Arc<Collector>,
    ingest_slots: Arc<Semaphore>,
    /// One permit per KiB of request body in memory.
    body_budget: Arc<Semaphore>,
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
    use futures::StreamExt;
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
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
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
        .and_then(|t| app.collector.tokens().agent_of(t))
        .map(str::to_string)
    else {
        app.collector.count_batch(BatchResult::Unauthorized);
        return json_error(StatusCode::UNAUTHORIZED, "missing or unknown token".into());
    };
    let limit = app.collector.config.max_body_bytes;
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
    // The memory is reserved before the body is read: under any offered load, what is
    // beyond the budget is refused at the cost of its headers.
    let kib = (declared.unwrap_or(limit).max(1)).div_ceil(1024);
    let kib = u32::try_from(kib).unwrap_or(u32::MAX);
    let Ok(_memory) = app.body_budget.clone().try_acquire_many_owned(kib) else {
        discard(body, limit).await;
        return overloaded(&app, "memory budget");
    };
    let Ok(_slot) = app.ingest_slots.clone().try_acquire_owned() else {
        discard(body, limit).await;
        return overloaded(&app, "ingest slots");
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds the limit of {limit} bytes, or broke off: {e}"),
            );
        }
    };
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            app.collector.count_batch(BatchResult::Rejected);
            return json_error(StatusCode::BAD_REQUEST, format!("malformed batch: {e}"));
        }
    };
    drop(body);
    if batch.agent != token_agent {
        app.collector.count_batch(BatchResult::Unauthorized);
        let e = IngestError::Forbidden {
            token_agent,
            batch_agent: batch.agent,
        };
        return json_error(StatusCode::FORBIDDEN, e.to_string());
    }
    let uploader = Uploader::Token(token);
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
}

async fn get_catalog(
    State(app): State<AppState>,
    query: Result<axum::extract::Query<CatalogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(q) => q.0,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let files = app
        .collector
        .catalog_for(q.agent.as_deref(), chrono::Utc::now());
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
            collector,
            ingest_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_INGESTS)),
            body_budget: Arc::new(Semaphore::new(MAX_INFLIGHT_BODY_BYTES / 1024)),
        })
}

/// A connection holding one of [`MAX_CONNECTIONS`] slots, closed after [`IDLE_TIMEOUT`]
/// without a byte in either direction.
pub struct Guarded<T> {
    inner: T,
    idle: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<T> Guarded<T> {
    fn progressed(&mut self) {
        self.idle
            .as_mut()
            .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
    }

    fn check_idle<R>(
        &mut self,
        cx: &mut Context<'_>,
        p: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match p {
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                self.progressed();
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.check_idle(cx, p)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check_idle(cx, p)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check_idle(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Wraps a listener so that at most [`MAX_CONNECTIONS`] connections are open at once.
pub struct Bounded<L> {
    inner: L,
    slots: Arc<Semaphore>,
}

impl<L: axum::serve::Listener> axum::serve::Listener for Bounded<L> {
    type Io = Guarded<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (io, addr) = self.inner.accept().await;
        let idle = Box::pin(tokio::time::sleep(IDLE_TIMEOUT));
        (
            Guarded {
                inner: io,
                idle,
                _slot: slot,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn bounded<L>(inner: L) -> Bounded<L> {
    Bounded {
        inner,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    }
}

/// Serves `app` (the collector's [`router`], merged with the exposition's) on `listener`
/// until `shutdown` resolves: HTTPS when the configuration names a certificate and key,
/// plain HTTP otherwise. Drives the detector's clock and writes snapshots meanwhile.
pub async fn serve(
    collector: Arc<Collector>,
    app: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::spawn(tick_forever(Arc::downgrade(&collector)));
    let served = match &collector.config.tls {
        Some(files) => {
            let cfg = super::tls::server_config(files).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?;
            let tls = super::tls::TlsListener::new(listener, cfg)?;
            axum::serve(bounded(tls), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(bounded(listener), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    // A snapshot at a clean stop: the next start replays nothing.
    if collector.config.snapshot_interval_secs > 0 {
        let c = collector.clone();
        let written =
            tokio::task::spawn_blocking(move || c.write_snapshot(chrono::Utc::now())).await;
        if let Ok(Err(e)) = written {
            tracing::error!(error = %e, "cannot write the collector snapshot");
        }
    }
    served
}

/// Drives the detector's clock: closes bins as they end, a few times per bin.
/// Wake-up after a bin's closing instant: `advance` works in whole seconds of the clock.
const CLOSE_SLACK_MS: i64 = 20;

async fn tick_forever(collector: std::sync::Weak<Collector>) {
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
