//! The collector's HTTP server: its own accept loop (hyper; HTTP/1.1 and HTTP/2; TLS
//! when configured) and the admission rules that keep unauthenticated traffic from
//! taking the capacity agents and scrapes need (limits in [`HttpLimits`]):
//!
//! - at most `max_connections` open, `reserved_connections` of them only for *trusted*
//!   connections: a peer in `trusted_networks` (trusted from its first byte), or a
//!   connection that has sent a request with an agent's token;
//! - at most `max_connections_per_ip` open from one address outside `trusted_networks`;
//! - a complete request head within `request_head_timeout_secs` of the connection's
//!   start or of its previous response: bytes trickled in do not extend it;
//! - when a newcomer finds every slot it may use taken, the untrusted connection that has
//!   waited longest without a request in progress is closed to make room. A slowloris
//!   keeps its slot only until newer connections arrive, while a client that sends its
//!   request head at once is served.
//!
//! Body deadlines and memory budgets are the upload handler's ([`crate::api`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpLimits;
use crate::facts::ConnectionDrop;
use crate::ingest::Collector;

/// After a stop is asked, connections still open this long are closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One open connection, as the admission table and its own task see it.
struct Conn {
    id: u64,
    ip: IpAddr,
    trusted: AtomicBool,
    /// Requests whose response has not been returned yet (HTTP/2 may have several).
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight (ms since the server's start):
    /// its next request head is due `request_head_timeout_secs` after this.
    idle_since_ms: AtomicU64,
    /// Told when the connection is evicted.
    evict: Notify,
}

#[derive(Default)]
struct Table {
    open: HashMap<u64, Arc<Conn>>,
    per_ip: HashMap<IpAddr, usize>,
    untrusted: usize,
    next_id: u64,
}

/// Who may open a connection, and who is closed to make room.
struct Admission {
    limits: HttpLimits,
    table: Mutex<Table>,
    started: Instant,
    collector: Arc<Collector>,
}

impl Admission {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("admission table lock")
    }

    /// A slot for a connection from `ip`, or why there is none.
    fn admit(&self, ip: IpAddr) -> Result<Arc<Conn>, ConnectionDrop> {
        let l = &self.limits;
        let trusted = l.trusts(ip);
        let mut t = self.lock();
        if !trusted && t.per_ip.get(&ip).copied().unwrap_or(0) >= l.max_connections_per_ip {
            return Err(ConnectionDrop::PerIpLimit);
        }
        let full = t.open.len() >= l.max_connections
            || (!trusted && t.untrusted >= l.max_connections - l.reserved_connections);
        if full {
            // The untrusted connection idle longest: most likely a slowloris, and if it
            // is a slow client, it had `idle_since` to send a head and did not.
            let victim = t
                .open
                .values()
                .filter(|c| {
                    !c.trusted.load(Ordering::Relaxed) && c.in_flight.load(Ordering::Relaxed) == 0
                })
                .min_by_key(|c| (c.idle_since_ms.load(Ordering::Relaxed), c.id))
                .cloned();
            let Some(victim) = victim else {
                return Err(ConnectionDrop::Full);
            };
            Self::remove(l, &mut t, victim.id);
            victim.evict.notify_one();
            self.collector
                .facts()
                .connection_dropped(ConnectionDrop::Evicted);
        }
        let id = t.next_id;
        t.next_id += 1;
        let conn = Arc::new(Conn {
            id,
            ip,
            trusted: AtomicBool::new(trusted),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
        });
        if !trusted {
            t.untrusted += 1;
            *t.per_ip.entry(ip).or_default() += 1;
        }
        t.open.insert(id, conn.clone());
        self.publish(&t);
        Ok(conn)
    }

    /// Frees a connection's slot (once: an evicted connection was removed already).
    fn remove(limits: &HttpLimits, t: &mut Table, id: u64) {
        let Some(c) = t.open.remove(&id) else {
            return;
        };
        if !c.trusted.load(Ordering::Relaxed) {
            t.untrusted -= 1;
        }
        if !limits.trusts(c.ip)
            && let Some(n) = t.per_ip.get_mut(&c.ip)
        {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&c.ip);
            }
        }
    }

    fn release(&self, conn: &Conn) {
        let mut t = self.lock();
        Self::remove(&self.limits, &mut t, conn.id);
        self.publish(&t);
    }

    /// The connection has shown an agent's token: it may use the reserved slots, and is
    /// no longer closed to make room.
    fn promote(&self, conn: &Conn) {
        let mut t = self.lock();
        if t.open.contains_key(&conn.id) && !conn.trusted.swap(true, Ordering::Relaxed) {
            t.untrusted -= 1;
            self.publish(&t);
        }
    }

    fn count(&self, why: ConnectionDrop) {
        self.collector.facts().connection_dropped(why);
    }

    /// Shows the table's counts to the exposition (called with the table locked, so
    /// that the last writer has the latest counts).
    fn publish(&self, t: &Table) {
        let untrusted = t.untrusted as u64;
        self.collector.facts().connections_open = (t.open.len() as u64 - untrusted, untrusted);
    }
}

/// Whether the request carries the token of a configured agent.
fn has_agent_token(collector: &Collector, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
        .is_some_and(|t| collector.agent_of_token(t).is_some())
}

/// Counts a request as in flight until dropped (the handler's future finished or was
/// cancelled), then restarts the connection's head deadline.
struct InFlight {
    conn: Arc<Conn>,
    admission: Arc<Admission>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(self.admission.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves when the connection has had no request in flight for the head timeout.
async fn head_deadline(conn: &Conn, admission: &Admission) {
    let timeout_ms = admission.limits.request_head_timeout_secs * 1000;
    loop {
        let due = conn.idle_since_ms.load(Ordering::Relaxed) + timeout_ms;
        let now = admission.now_ms();
        if now >= due {
            if conn.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            // A request is being served: its body has its own deadline. Look again later.
            tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(due - now)).await;
        }
    }
}

/// Serves one admitted connection until it ends, misses its head deadline, is evicted,
/// or the server stops.
async fn connection<I>(
    io: I,
    conn: Arc<Conn>,
    admission: Arc<Admission>,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let serve = {
        let (conn, admission) = (conn.clone(), admission.clone());
        async move {
            match tls {
                Some(acceptor) => match acceptor.accept(io).await {
                    Ok(io) => http(io, conn, admission, app, stop).await,
                    Err(e) => tracing::debug!(peer = %conn.ip, error = %e, "TLS handshake failed"),
                },
                None => http(io, conn, admission, app, stop).await,
            }
        }
    };
    tokio::select! {
        () = serve => {}
        () = conn.evict.notified() => {
            tracing::debug!(peer = %conn.ip, "connection closed to make room for a new one");
        }
        () = head_deadline(&conn, &admission) => {
            admission.count(ConnectionDrop::HeadTimeout);
            tracing::debug!(peer = %conn.ip, "no complete request head in time: connection closed");
        }
    }
    admission.release(&conn);
}

async fn http<I>(
    io: I,
    conn: Arc<Conn>,
    admission: Arc<Admission>,
    app: Router,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inner = TowerToHyperService::new(app);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        use hyper::service::Service as _;
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight {
            conn: conn.clone(),
            admission: admission.clone(),
        };
        if !conn.trusted.load(Ordering::Relaxed) && has_agent_token(&admission.collector, &req) {
            admission.promote(&conn);
        }
        let fut = inner.call(req.map(Body::new));
        async move {
            let r = fut.await;
            drop(guard);
            r
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let served = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        () = stop.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves `app` (the collector's [`crate::router`], merged with the exposition's) on
/// `listener` until `shutdown` resolves: HTTPS when the configuration names a
/// certificate and key, plain HTTP otherwise. Drives the detector's clock and writes
/// snapshots meanwhile.
pub async fn serve(
    collector: Arc<Collector>,
    app: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::spawn(crate::api::tick_forever(Arc::downgrade(&collector)));
    crate::bgp::start(&collector).await?;
    let tls = match &collector.config.tls {
        Some(files) => {
            let cfg = crate::tls::server_config(files).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?;
            Some(tokio_rustls::TlsAcceptor::from(cfg))
        }
        None => None,
    };
    let admission = Arc::new(Admission {
        limits: collector.config.http.clone(),
        table: Mutex::new(Table::default()),
        started: Instant::now(),
        collector: collector.clone(),
    });
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn = match admission.admit(peer.ip().to_canonical()) {
            Ok(c) => c,
            Err(why) => {
                admission.count(why);
                tracing::debug!(%peer, reason = why.as_str(), "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(
            stream,
            conn,
            admission.clone(),
            app.clone(),
            tls.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the grace period: closing them"
        );
    }
    crate::api::snapshot_at_stop(&collector).await;
    Ok(())
}
