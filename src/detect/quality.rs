//! `blackout quality`: precision, recall and delay on real data and simulated scenarios.

/// Arguments of `blackout quality`.
#[derive(Debug, Clone, clap::Args)]
pub struct QualityArgs {}

#[derive(Debug, thiserror::Error)]
pub enum QualityError {}

pub fn run(_args: &QualityArgs) -> Result<(), QualityError> {
    unimplemented!("placeholder: the detect helper replaces this module")
}
