//! HTTP(S) probes that drive their phases themselves: resolve, TCP connect, TLS, first byte.
//!
//! Why hyper's client connection API and not reqwest (which the agent keeps for uploads and
//! the catalog fetch): reqwest hides its phases. Its connector, `connector_layer` included,
//! is one service doing DNS, TCP and TLS together, so connect and TLS cannot be timed apart,
//! and the phase that failed could only be guessed back from an error chain. Here each
//! phase is its own step: timed on its own, bounded by the probe's deadline, and a failure
//! carries the phase it happened in, exactly.
//!
//! - resolve: hickory's resolver from the system configuration (as the DNS probe's
//!   `system` lookups), not getaddrinfo: its errors say NXDOMAIN, SERVFAIL or timeout
//!   (getaddrinfo's say it only in text), a lookup is a cancellable future rather than a
//!   blocking thread per probe, and its cache is off so the time measures the resolver.
//!   A pinned `address`, or a URL that names an IP, skips it.
//! - connect: each resolved address in turn, with an equal share of the time left, so one
//!   blackholed address does not hide a working one.
//! - tls: tokio-rustls with the roots reqwest trusts (rustls-platform-verifier) plus the
//!   extra roots; SNI = the URL's host; ALPN h2 and http/1.1.
//! - first byte: the request over HTTP/2 when ALPN chose it, else HTTP/1.1, until the
//!   response head. The body is never read: the connection is dropped.
//!
//! Redirects are followed by hand, up to `http_max_redirects`, each hop on a new connection
//! with its phases added to the totals; a hop to another host resolves again. The status
//! of the last response is checked: the expected ones, else 200-399. `rtt` is the time from
//! the probe's start to the response head of the last hop.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use hickory_resolver::TokioResolver;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio::time::timeout_at;
use url::{Host, Url};

use super::address::AddressPolicy;
use super::classify::{hickory_failure, hyper_failure, io_failure, tls_failure};
use super::{HttpTimings, Outcome, ProbeError, ProbeSettings, Prober};
use blackout_model::catalog::{Target, TargetKind};
use blackout_model::observation::{Failure, Phase, Signal};

const USER_AGENT: &str = concat!("blackout/", env!("CARGO_PKG_VERSION"));

/// A failed phase: what the outcome reports.
type PhaseFailure = (Phase, Failure);

/// Probes HTTP(S) URLs.
pub struct HttpProber {
    timeout: Duration,
    max_redirects: usize,
    tls: tokio_rustls::TlsConnector,
    resolver: OnceCell<Result<TokioResolver, String>>,
    policy: Arc<AddressPolicy>,
}

impl std::fmt::Debug for HttpProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProber")
            .field("timeout", &self.timeout)
            .field("max_redirects", &self.max_redirects)
            .finish()
    }
}

/// The response head of one hop.
struct Head {
    status: StatusCode,
    location: Option<String>,
}

impl HttpProber {
    pub fn new(settings: &ProbeSettings) -> Result<Self, ProbeError> {
        Self::with_roots(settings, Vec::new())
    }

    /// With extra trusted roots (tests with their own CA; private deployments), DER.
    pub fn with_roots(
        settings: &ProbeSettings,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, ProbeError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = if extra_roots.is_empty() {
            rustls_platform_verifier::Verifier::new(provider.clone())
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
        }
        .map_err(|e| setup_error(format!("certificate verifier: {e}")))?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(HttpProber {
            timeout: settings.timeout,
            max_redirects: settings.http_max_redirects,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            resolver: OnceCell::new(),
            policy: settings.address_policy.clone(),
        })
    }

    async fn resolver(&self) -> Result<&TokioResolver, ProbeError> {
        let timeout = self.timeout;
        let r = self
            .resolver
            .get_or_init(|| async move { super::dns::system_resolver(timeout) })
            .await;
        r.as_ref()
            .map_err(|reason| setup_error(format!("system resolver: {reason}")))
    }

    /// One GET of `url`, optionally pinned to `address`, redirects followed.
    pub async fn get(
        &self,
        url: &Url,
        address: Option<IpAddr>,
        expect_status: &[u16],
    ) -> Result<Outcome, ProbeError> {
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + self.timeout);
        let mut timings = HttpTimings::default();
        // Addresses known for a host in this probe: the pinned one, then what was resolved,
        // so that a redirect within the host does not resolve again.
        let mut known: Vec<(String, Vec<IpAddr>)> = Vec::new();
        if let (Some(ip), Some(host)) = (address, url.host_str()) {
            known.push((host.to_string(), vec![ip]));
        }
        let mut url = url.clone();
        for _hop in 0..=self.max_redirects {
            let head = match self.hop(&url, &mut known, deadline, &mut timings).await? {
                Ok(head) => head,
                Err((phase, failure)) => return Ok(failed(phase, failure, timings, None)),
            };
            if let Some(next) = redirect(&url, &head) {
                url = next;
                continue;
            }
            let rtt = start.elapsed();
            let status = head.status.as_u16();
            let good = if expect_status.is_empty() {
                (200..400).contains(&status)
            } else {
                expect_status.contains(&status)
            };
            if !good {
                tracing::debug!(url = %url, status, "http probe: unexpected status");
                return Ok(failed(
                    Phase::HttpRoundTrip,
                    Failure::HttpStatus,
                    timings,
                    Some(rtt),
                ));
            }
            let mut o = Outcome::ok(rtt);
            o.timings = (!timings.is_empty()).then_some(timings);
            return Ok(o);
        }
        Ok(failed(
            Phase::HttpRoundTrip,
            Failure::HttpTooManyRedirects,
            timings,
            None,
        ))
    }

    /// One request on a new connection: resolve (unless known), connect, TLS, response head.
    async fn hop(
        &self,
        url: &Url,
        known: &mut Vec<(String, Vec<IpAddr>)>,
        deadline: tokio::time::Instant,
        timings: &mut HttpTimings,
    ) -> Result<Result<Head, PhaseFailure>, ProbeError> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(ProbeError::BadTarget {
                    id: url.to_string(),
                    reason: format!("scheme {other:?} is not http or https"),
                });
            }
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let (addresses, server_name) = match url.host() {
            Some(Host::Ipv4(ip)) => (vec![IpAddr::V4(ip)], Some(ServerName::from(IpAddr::V4(ip)))),
            Some(Host::Ipv6(ip)) => (vec![IpAddr::V6(ip)], Some(ServerName::from(IpAddr::V6(ip)))),
            Some(Host::Domain(name)) => {
                let addresses = match known.iter().find(|(h, _)| h == name) {
                    Some((_, a)) => a.clone(),
                    None => match self.resolve(name, deadline, timings).await? {
                        Ok(a) => {
                            known.push((name.to_string(), a.clone()));
                            a
                        }
                        Err(f) => return Ok(Err(f)),
                    },
                };
                // Url accepts some host names that rustls cannot put in SNI (e.g. with `_`).
                (addresses, ServerName::try_from(name.to_string()).ok())
            }
            None => {
                return Err(ProbeError::BadTarget {
                    id: url.to_string(),
                    reason: "URL has no host".into(),
                });
            }
        };
        // Every hop, whatever led to it (a literal, a pinned address, a resolved name, a
        // redirect): only allowed addresses are contacted.
        let addresses = match self.policy.allowed(&addresses) {
            Ok(a) => a,
            Err(r) => {
                tracing::debug!(url = %url, refusal = ?r, "http probe: address refused");
                return Ok(Err((Phase::Connect, r.failure())));
            }
        };
        let tls = https.then_some(server_name);
        Ok(self
            .connect_and_request(url, &addresses, port, tls, deadline, timings)
            .await)
    }

    async fn resolve(
        &self,
        name: &str,
        deadline: tokio::time::Instant,
        timings: &mut HttpTimings,
    ) -> Result<Result<Vec<IpAddr>, PhaseFailure>, ProbeError> {
        let resolver = self.resolver().await?;
        let t = Instant::now();
        let failure = match timeout_at(deadline, resolver.lookup_ip(name)).await {
            Err(_) => Failure::Timeout,
            Ok(Ok(lookup)) => {
                let a: Vec<IpAddr> = lookup.iter().collect();
                if !a.is_empty() {
                    HttpTimings::add(&mut timings.resolve, t.elapsed());
                    return Ok(Ok(a));
                }
                Failure::DnsNoAnswer
            }
            Ok(Err(e)) => {
                tracing::debug!(host = name, error = %e, "http probe: resolve failed");
                hickory_failure(&e)
            }
        };
        Ok(Err((Phase::Resolve, failure)))
    }

    /// `tls`: None for plain HTTP, else the server name for SNI and verification (None if
    /// the host cannot be one: a TLS failure).
    async fn connect_and_request(
        &self,
        url: &Url,
        addresses: &[IpAddr],
        port: u16,
        tls: Option<Option<ServerName<'static>>>,
        deadline: tokio::time::Instant,
        timings: &mut HttpTimings,
    ) -> Result<Head, PhaseFailure> {
        let t = Instant::now();
        let tcp = connect(addresses, port, deadline).await?;
        HttpTimings::add(&mut timings.connect, t.elapsed());
        let Some(server_name) = tls else {
            return request(tcp, false, url, deadline, timings).await;
        };
        let Some(server_name) = server_name else {
            return Err((Phase::TlsHandshake, Failure::TlsError));
        };
        let t = Instant::now();
        let stream = match timeout_at(deadline, self.tls.connect(server_name, tcp)).await {
            Err(_) => return Err((Phase::TlsHandshake, Failure::Timeout)),
            Ok(Err(e)) => {
                tracing::debug!(url = %url, error = %e, "http probe: TLS handshake failed");
                return Err((Phase::TlsHandshake, tls_failure(&e)));
            }
            Ok(Ok(s)) => s,
        };
        HttpTimings::add(&mut timings.tls, t.elapsed());
        let h2 = stream.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
        request(stream, h2, url, deadline, timings).await
    }
}

/// Connects to the addresses in turn; each attempt gets an equal share of the time left.
async fn connect(
    addresses: &[IpAddr],
    port: u16,
    deadline: tokio::time::Instant,
) -> Result<TcpStream, PhaseFailure> {
    let mut last = Failure::Unknown;
    for (i, ip) in addresses.iter().enumerate() {
        let now = tokio::time::Instant::now();
        let left = deadline.saturating_duration_since(now);
        let attempt_deadline = now + left / (addresses.len() - i) as u32;
        match timeout_at(
            attempt_deadline,
            TcpStream::connect(SocketAddr::new(*ip, port)),
        )
        .await
        {
            Ok(Ok(s)) => {
                // Small requests: do not let Nagle hold the request back.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => {
                tracing::debug!(address = %ip, port, error = %e, "http probe: connect failed");
                last = io_failure(&e);
            }
            Err(_) => last = Failure::Timeout,
        }
    }
    Err((Phase::Connect, last))
}

/// Sends the GET over HTTP/1.1 or HTTP/2 and waits for the response head.
async fn request<T>(
    io: T,
    h2: bool,
    url: &Url,
    deadline: tokio::time::Instant,
    timings: &mut HttpTimings,
) -> Result<Head, PhaseFailure>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let t = Instant::now();
    let exchange = async {
        let io = TokioIo::new(io);
        if h2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            drive(conn, send.send_request(build_request(url, true))).await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
            drive(conn, send.send_request(build_request(url, false))).await
        }
    };
    let resp = match timeout_at(deadline, exchange).await {
        Err(_) => return Err((Phase::HttpRoundTrip, Failure::Timeout)),
        Ok(Err(e)) => {
            tracing::debug!(url = %url, error = %e, "http probe: request failed");
            return Err((Phase::HttpRoundTrip, hyper_failure(&e)));
        }
        Ok(Ok(r)) => r,
    };
    HttpTimings::add(&mut timings.first_byte, t.elapsed());
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Dropping the response and the connection closes the socket: the body is not read.
    Ok(Head {
        status: resp.status(),
        location,
    })
}

/// Polls the connection and the response together until the head arrives: hyper's
/// connection future does the I/O, the response future only waits for it.
async fn drive<C, R>(conn: C, resp: R) -> Result<Response<Incoming>, hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
    R: Future<Output = Result<Response<Incoming>, hyper::Error>>,
{
    tokio::pin!(conn, resp);
    tokio::select! {
        biased;
        r = &mut resp => r,
        c = &mut conn => match c {
            // The connection's own error says more (reset, eof) than the cancelled request.
            Err(e) => Err(e),
            Ok(()) => resp.await,
        },
    }
}

fn build_request(url: &Url, h2: bool) -> Request<Empty<Bytes>> {
    let b = Request::get(if h2 {
        // HTTP/2 takes scheme and authority from the URI (`:scheme`, `:authority`).
        let mut u = url.clone();
        u.set_fragment(None);
        u.to_string()
    } else {
        let mut p = url.path().to_string();
        if let Some(q) = url.query() {
            p.push('?');
            p.push_str(q);
        }
        p
    })
    .header(header::USER_AGENT, USER_AGENT)
    .header(header::ACCEPT, "*/*");
    let b = if h2 {
        b
    } else {
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        // The connection is dropped after the head: say so, and let the server close first.
        b.header(header::HOST, host)
            .header(header::CONNECTION, "close")
    };
    b.body(Empty::new())
        .expect("a GET built from a parsed URL is a valid request")
}

/// The next URL if the head is a redirect that can be followed.
fn redirect(url: &Url, head: &Head) -> Option<Url> {
    if !matches!(head.status.as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let next = url.join(head.location.as_deref()?).ok()?;
    matches!(next.scheme(), "http" | "https").then_some(next)
}

fn failed(phase: Phase, failure: Failure, timings: HttpTimings, rtt: Option<Duration>) -> Outcome {
    let mut o = Outcome::failed(phase, failure);
    o.rtt = rtt;
    o.timings = (!timings.is_empty()).then_some(timings);
    o
}

fn setup_error(reason: String) -> ProbeError {
    ProbeError::Setup {
        signal: Signal::Http,
        reason,
    }
}

impl Prober for HttpProber {
    fn signal(&self) -> Signal {
        Signal::Http
    }

    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>> {
        Box::pin(async move {
            let TargetKind::Http {
                url,
                address,
                expect_status,
            } = &target.kind
            else {
                return Err(ProbeError::WrongKind {
                    id: target.id.clone(),
                    expected: Signal::Http,
                });
            };
            let url = Url::parse(url).map_err(|e| ProbeError::BadTarget {
                id: target.id.clone(),
                reason: format!("bad URL: {e}"),
            })?;
            self.get(&url, *address, expect_status).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, location: Option<&str>) -> Head {
        Head {
            status: StatusCode::from_u16(status).unwrap(),
            location: location.map(str::to_string),
        }
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        let base = Url::parse("https://a.example/x/y?q=1").unwrap();
        let cases = [
            (301, Some("/z"), Some("https://a.example/z")),
            (302, Some("w"), Some("https://a.example/x/w")),
            (303, Some("//b.example/"), Some("https://b.example/")),
            (
                307,
                Some("http://c.example:8080/p"),
                Some("http://c.example:8080/p"),
            ),
            (308, Some("?r=2"), Some("https://a.example/x/y?r=2")),
            // Not followed: no Location, a scheme we do not speak, not a redirect.
            (302, None, None),
            (302, Some("ftp://a.example/"), None),
            (300, Some("/z"), None),
            (200, Some("/z"), None),
        ];
        for (status, loc, want) in cases {
            let got = redirect(&base, &head(status, loc)).map(|u| u.to_string());
            assert_eq!(got.as_deref(), want, "{status} {loc:?}");
        }
    }

    #[test]
    fn requests_carry_host_for_http1_and_authority_for_h2() {
        let url = Url::parse("http://a.example:8080/p?q=1#frag").unwrap();
        let r = build_request(&url, false);
        assert_eq!(r.uri(), "/p?q=1");
        assert_eq!(r.headers()[header::HOST], "a.example:8080");
        let r = build_request(&Url::parse("https://a.example/").unwrap(), false);
        assert_eq!(r.headers()[header::HOST], "a.example");
        let r = build_request(&url, true);
        assert_eq!(r.uri(), "http://a.example:8080/p?q=1");
        assert!(r.headers().get(header::HOST).is_none());
        assert!(r.headers().get(header::CONNECTION).is_none());
    }
}
