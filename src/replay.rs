//! `blackout replay`: the detection engine over recorded data.

/// Arguments of `blackout replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {}

pub fn run(_args: &ReplayArgs) -> Result<(), ReplayError> {
    unimplemented!("placeholder: the detect helper replaces this module")
}
