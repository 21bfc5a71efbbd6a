//! The agent's seam to the network: the run loop is generic over [`Network`], so that its
//! pacing and bookkeeping run in tests on a fake network, with tokio's paused clock.
//! [`ProbeSet`] is the real one.

use std::fmt::Display;

use blackout_model::catalog::Target;
use blackout_probe::icmp::BlockState;
use blackout_probe::{Outcome, ProbeError, ProbeSet};
use futures::future::BoxFuture;
use ipnet::IpNet;

/// What the agent's loop asks of the network. A network failure is an `Ok` outcome that
/// failed; `Err` means the probe could not run.
pub trait Network: Send + Sync + 'static {
    /// The adaptive state a compact ICMP block starts with.
    fn new_block_state(&self) -> BlockState;

    /// One adaptive round on a compact ICMP block; `st` is its state, carried over rounds.
    fn probe_block<'a>(
        &'a self,
        st: &'a mut BlockState,
        id: &'a (dyn Display + Sync),
        net: &'a IpNet,
        availability: Option<f64>,
    ) -> BoxFuture<'a, Result<Outcome, ProbeError>>;

    /// Probes one target once with the prober of its kind.
    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>>;
}

impl Network for ProbeSet {
    fn new_block_state(&self) -> BlockState {
        self.icmp.new_block_state()
    }

    fn probe_block<'a>(
        &'a self,
        st: &'a mut BlockState,
        id: &'a (dyn Display + Sync),
        net: &'a IpNet,
        availability: Option<f64>,
    ) -> BoxFuture<'a, Result<Outcome, ProbeError>> {
        Box::pin(self.icmp.probe_block_with(st, id, net, &[], availability))
    }

    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>> {
        Box::pin(ProbeSet::probe(self, target))
    }
}
