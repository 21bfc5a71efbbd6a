//! HTTP(S) probes with reqwest and rustls.
//!
//! reqwest hides its phases, so the phase that failed is read back from the error's
//! source chain (see `classify`). The RTT is the time to the response headers (first
//! byte); the body is not read, a probe asks "does the service answer", not "how fast is
//! the page".

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::{Client, Url};

use super::classify::reqwest_failure;
use super::{Outcome, ProbeError, ProbeSettings, Prober};
use crate::catalog::{Target, TargetKind};
use crate::observation::{Failure, Phase, Signal};

/// Pinned clients are cached per (host, address, port); more than this many distinct
/// pinnings and the cache starts over, so a hostile catalog cannot grow it without bound.
const MAX_PINNED_CLIENTS: usize = 4096;

/// Probes HTTP(S) URLs.
pub struct HttpProber {
    timeout: Duration,
    max_redirects: usize,
    shared: Client,
    pinned: Mutex<HashMap<(String, IpAddr, u16), Client>>,
    extra_roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for HttpProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProber")
            .field("timeout", &self.timeout)
            .field("max_redirects", &self.max_redirects)
            .finish()
    }
}

impl HttpProber {
    pub fn new(settings: &ProbeSettings) -> Result<Self, ProbeError> {
        Self::with_roots(settings, Vec::new())
    }

    /// With extra trusted roots (tests with their own CA; private deployments).
    pub fn with_roots(
        settings: &ProbeSettings,
        extra_roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, ProbeError> {
        let mut p = HttpProber {
            timeout: settings.timeout,
            max_redirects: settings.http_max_redirects,
            shared: Client::new(),
            pinned: Mutex::new(HashMap::new()),
            extra_roots,
        };
        p.shared = p.builder().build().map_err(setup_error)?;
        Ok(p)
    }

    fn builder(&self) -> reqwest::ClientBuilder {
        let mut b = Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::limited(self.max_redirects))
            .no_proxy()
            .user_agent(concat!("blackout/", env!("CARGO_PKG_VERSION")))
            // Each probe should measure a fresh handshake, not an idle pooled connection.
            .pool_max_idle_per_host(0);
        for root in &self.extra_roots {
            b = b.add_root_certificate(root.clone());
        }
        b
    }

    fn client_for(&self, url: &Url, address: Option<IpAddr>) -> Result<Client, ProbeError> {
        let (Some(ip), Some(host)) = (address, url.host_str()) else {
            return Ok(self.shared.clone());
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let key = (host.to_string(), ip, port);
        let mut cache = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let client = self
            .builder()
            .resolve(host, SocketAddr::new(ip, port))
            .build()
            .map_err(setup_error)?;
        if cache.len() >= MAX_PINNED_CLIENTS {
            cache.clear();
        }
        cache.insert(key, client.clone());
        Ok(client)
    }

    /// One GET of `url`, optionally pinned to `address`.
    pub async fn get(
        &self,
        url: &Url,
        address: Option<IpAddr>,
        expect_status: &[u16],
    ) -> Result<Outcome, ProbeError> {
        let client = self.client_for(url, address)?;
        let start = Instant::now();
        let resp = client.get(url.clone()).send().await;
        let rtt = start.elapsed();
        Ok(match resp {
            Ok(r) => {
                let status = r.status().as_u16();
                let good = if expect_status.is_empty() {
                    (200..400).contains(&status)
                } else {
                    expect_status.contains(&status)
                };
                if good {
                    Outcome::ok(rtt)
                } else {
                    let mut o = Outcome::failed(Phase::HttpRoundTrip, Failure::HttpStatus);
                    o.rtt = Some(rtt);
                    o
                }
            }
            Err(e) => {
                let (phase, failure) = reqwest_failure(&e);
                tracing::debug!(url = %url, ?phase, ?failure, error = %e, "http probe failed");
                Outcome::failed(phase, failure)
            }
        })
    }
}

fn setup_error(e: reqwest::Error) -> ProbeError {
    ProbeError::Setup {
        signal: Signal::Http,
        reason: e.to_string(),
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
