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

pub mod agent_http;
pub mod embedded;
pub mod logging;
pub mod signals;
pub mod standalone;

use std::sync::Arc;

use blackout_collector::Collector;

pub use embedded::{embedded, embedded_names};

pub use blackout_model::listen::parse_listen;

/// What `--version` prints after the binary's name: version, git commit, build date.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("BLACKOUT_REVISION"),
    ", built ",
    env!("BLACKOUT_BUILD_DATE"),
    ")"
);

/// This build, for `blackout_build_info`.
pub const BUILD: blackout_expose::BuildInfo = blackout_expose::BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    revision: env!("BLACKOUT_REVISION"),
    build_date: env!("BLACKOUT_BUILD_DATE"),
};
pub use standalone::InProcessSink;

/// Answers on `listener` while `start` (the log replay) runs on its own thread, so a
/// supervisor's liveness check passes during a long replay: `GET /-/healthy` is 200,
/// everything else (`/-/ready`, `/healthz`, the API) is 503 until `start` returns.
/// Returns the listener for the real server and what `start` returned, or `None` when
/// `stop` was cancelled first (a SIGTERM during a replay stops at once: the log is the
/// record, nothing is lost by not finishing it).
pub async fn while_starting<T: Send + 'static>(
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
    start: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Option<(tokio::net::TcpListener, T)>> {
    // Two descriptors of one socket: the first is closed when the start is over, and the
    // connections still in the backlog are the real server's.
    let socket = listener.into_std()?;
    let early = tokio::net::TcpListener::from_std(socket.try_clone()?)?;
    let listener = tokio::net::TcpListener::from_std(socket)?;
    let done = stop.child_token();
    let server = tokio::spawn(answer_starting(early, done.clone()));
    // A thread of its own, not the runtime's blocking pool: the runtime waits for its
    // blocking tasks when it shuts down, and a stop must not wait for the replay.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("start".into())
        .spawn(move || {
            let _ = tx.send(start());
        })?;
    let started = tokio::select! {
        r = rx => Some(r.map_err(|_| std::io::Error::other("the start thread panicked"))?),
        _ = stop.cancelled() => None,
    };
    done.cancel();
    let _ = server.await;
    Ok(started.map(|t| (listener, t)))
}

/// The server of the start: one request per connection, and a connection once accepted
/// is answered even when the start ends meanwhile (a graceful shutdown would close
/// the ones whose request has not been read yet).
async fn answer_starting(
    listener: tokio::net::TcpListener,
    done: tokio_util::sync::CancellationToken,
) {
    use hyper::{Response, StatusCode, body::Incoming, service::service_fn};
    let answer = |req: hyper::Request<Incoming>| async move {
        let (status, body) = if req.uri().path() == "/-/healthy" {
            (StatusCode::OK, "Healthy\n")
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: replaying the observation log\n",
            )
        };
        Response::builder()
            .status(status)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                body.as_bytes(),
            )))
    };
    loop {
        let io = tokio::select! {
            r = listener.accept() => match r {
                Ok((io, _)) => io,
                Err(e) => {
                    tracing::debug!(error = %e, "accept while starting");
                    continue;
                }
            },
            _ = done.cancelled() => return,
        };
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .header_read_timeout(std::time::Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(io), service_fn(answer));
            let _ = conn.await;
        });
    }
}

/// Serves the collector's API and the exposition (`/metrics`, the status page) on
/// `listener` until `shutdown` resolves (see [`blackout_collector::serve`]).
pub async fn serve(
    collector: Arc<Collector>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    reload: Option<Reload>,
) -> std::io::Result<()> {
    let mut app = blackout_collector::router(collector.clone())
        .merge(blackout_expose::router(collector.read_model(), BUILD))
        // The Prometheus ecosystem's probes: alive, and ready (replay done, the detector has
        // its state: the server is only built after both).
        .route("/-/healthy", axum::routing::get(|| async { "Healthy\n" }))
        .route("/-/ready", axum::routing::get(|| async { "Ready\n" }));
    if let Some(reload) = reload {
        app = app.route("/-/reload", reload_route(reload));
    }
    blackout_collector::serve(collector, app, listener, shutdown).await
}

/// Re-reads the configuration and catalogs and applies them (see
/// [`blackout_collector::Collector::reload`]); says what changed, or why nothing did.
pub type Reload = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// `POST /-/reload` as Prometheus has it: 200 when the new configuration is in force,
/// 500 with the reason when the old one stays.
pub fn reload_route(reload: Reload) -> axum::routing::MethodRouter {
    axum::routing::post(move || {
        let reload = reload.clone();
        async move {
            match tokio::task::spawn_blocking(move || reload()).await {
                Ok(Ok(done)) => (axum::http::StatusCode::OK, format!("{done}\n")),
                Ok(Err(e)) => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{e}\n"),
                ),
                Err(e) => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{e}\n"),
                ),
            }
        }
    })
}

/// Calls `reload` on every SIGHUP until `stop`: the signal re-reads the configuration
/// (it used to kill the collector, exit 129, with no snapshot written).
pub async fn reload_on_sighup(reload: Reload, stop: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = stop.cancelled() => return,
        }
        let reload = reload.clone();
        let _ = tokio::task::spawn_blocking(move || reload()).await;
    }
}
