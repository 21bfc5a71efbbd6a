//! `blackout-agent probe`: probe targets from a file once each and print JSON lines.

/// Arguments of `blackout-agent probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {}

/// Runs the ad-hoc probe command.
pub async fn run(_args: &ProbeArgs) -> Result<(), crate::probe::ProbeError> {
    unimplemented!("placeholder: the probes helper replaces this module")
}
