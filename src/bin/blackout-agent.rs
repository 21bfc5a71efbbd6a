//! blackout-agent: the probe agent. Minimal entry point with the ad-hoc `probe` command;
//! the lead's binary adds `run`.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "blackout-agent", version, about = "blackout probe agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Probe targets from a file once each and print one JSON line per target.
    Probe(blackout::probe::adhoc::ProbeArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Probe(args) => blackout::probe::adhoc::run(&args).await?,
    }
    Ok(())
}
