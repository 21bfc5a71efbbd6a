//! TCP connect probes: many hosts drop ICMP but accept a handshake on 443 or 80.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::net::TcpStream;

use super::address::AddressPolicy;
use super::classify::io_failure;
use super::{Outcome, ProbeError, Prober};
use blackout_model::catalog::{Target, TargetKind};
use blackout_model::observation::{Failure, Phase, Signal};

/// Connects and closes at once; the handshake time is the RTT.
#[derive(Debug, Clone)]
pub struct TcpProber {
    timeout: Duration,
    policy: Arc<AddressPolicy>,
}

impl TcpProber {
    pub fn new(timeout: Duration) -> Self {
        TcpProber {
            timeout,
            policy: Arc::default(),
        }
    }

    /// Contacts only the addresses `policy` allows.
    pub fn with_policy(self, policy: Arc<AddressPolicy>) -> Self {
        TcpProber { policy, ..self }
    }

    /// One connect attempt to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> Outcome {
        if let Err(r) = self.policy.check_ip(addr.ip()) {
            return Outcome::failed(Phase::Connect, r.failure());
        }
        let start = Instant::now();
        match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let rtt = start.elapsed();
                // Close without lingering: the probe needs the handshake, not the session.
                drop(stream);
                Outcome::ok(rtt)
            }
            Ok(Err(e)) => Outcome::failed(Phase::Connect, io_failure(&e)),
            Err(_) => Outcome::failed(Phase::Connect, Failure::Timeout),
        }
    }
}

impl Prober for TcpProber {
    fn signal(&self) -> Signal {
        Signal::Tcp
    }

    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>> {
        Box::pin(async move {
            match &target.kind {
                TargetKind::Tcp { address } => Ok(self.connect(*address).await),
                _ => Err(ProbeError::WrongKind {
                    id: target.id.clone(),
                    expected: Signal::Tcp,
                }),
            }
        })
    }
}
