//! Interim dispatcher (replaced by the probes branch).

use std::time::{Duration, Instant};

use super::{Outcome, ProbeError, ProbeSettings};
use crate::catalog::{Target, TargetKind};
use crate::observation::{Failure, Phase};

pub struct ProbeSet {
    settings: ProbeSettings,
}

impl ProbeSet {
    pub async fn new(settings: &ProbeSettings) -> Result<ProbeSet, ProbeError> {
        Ok(ProbeSet {
            settings: settings.clone(),
        })
    }

    pub async fn probe(&self, target: &Target) -> Result<Outcome, ProbeError> {
        match &target.kind {
            TargetKind::Tcp { address } => {
                let start = Instant::now();
                match tokio::time::timeout(
                    self.settings.timeout,
                    tokio::net::TcpStream::connect(address),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(Outcome::ok(start.elapsed())),
                    Ok(Err(_)) => Ok(Outcome::failed(Phase::Connect, Failure::Refused)),
                    Err(_) => Ok(Outcome::failed(Phase::Connect, Failure::Timeout)),
                }
            }
            _ => Err(ProbeError::Setup {
                signal: target.signal(),
                reason: "interim".into(),
            }),
        }
    }
}

#[allow(dead_code)]
const _: Duration = Duration::ZERO;
