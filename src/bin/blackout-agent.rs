//! `blackout-agent`: the probe agent operators run on vantage points.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use blackout_agent::AgentConfig;
use blackout_agent::upload::{HttpSink, collector_client};

#[derive(Parser)]
#[command(name = "blackout-agent", version = blackout::LONG_VERSION, about = "blackout probe agent")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log level [default: RUST_LOG if set, else info]. RUST_LOG also takes per-module
    /// directives (`RUST_LOG=info,blackout_agent=debug`); this flag, when given, wins.
    #[arg(long, global = true, value_parser = blackout::logging::LEVELS)]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Probe the catalog round after round and upload to the collector.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Probe targets once each and print one JSON line per target (like fping).
    Probe(blackout_tools::adhoc::ProbeArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    blackout::logging::init(&cli.log_format, cli.log_level.as_deref());
    match cli.cmd {
        Cmd::Probe(args) => {
            // fping's exit status: 0 all answered, 1 some did not, 2 could not run.
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            match rt.block_on(blackout_tools::adhoc::run(&args)) {
                Ok(s) if s.all_answered() => Ok(()),
                Ok(_) => std::process::exit(1),
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "Error: {e}");
                    std::process::exit(2)
                }
            }
        }
        Cmd::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cfg.worker_threads)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(run(cfg))
        }
    }
}

async fn run(cfg: AgentConfig) -> Result<()> {
    let stop = CancellationToken::new();
    tokio::spawn(blackout::signals::stop_on_signal(stop.clone()));
    let url = cfg
        .collector_url
        .clone()
        .context("collector_url is required")?;
    let client = collector_client(cfg.ca_file.as_deref(), std::time::Duration::from_secs(30))?;
    // One spool and one upload loop per collector (side-by-side collectors).
    let mut sinks: Vec<Arc<dyn blackout_agent::upload::Sink>> = Vec::new();
    for u in &cfg.collector_urls {
        sinks.push(Arc::new(HttpSink::new(
            u,
            cfg.token.clone(),
            client.clone(),
        )?));
    }
    if !cfg.catalog.is_empty() {
        let mut files = Vec::new();
        for p in &cfg.catalog {
            files.extend(blackout_model::catalog::load_path(p)?);
        }
        let table = blackout_agent::run::select_table(&cfg, &files)?;
        drop(files);
        let (_keep, rx) = tokio::sync::watch::channel(Arc::new(table));
        blackout_agent::run::run_with_updates(cfg, rx, sinks, stop).await?;
        return Ok(());
    }
    // The collector hands out this agent's share and rebalances it over time.
    let fetch = {
        let (client, url, id, token, stop) = (
            client.clone(),
            url.clone(),
            cfg.agent_id.clone(),
            cfg.token.clone(),
            stop.clone(),
        );
        move || {
            let (client, url, id, token, stop) = (
                client.clone(),
                url.clone(),
                id.clone(),
                token.clone(),
                stop.clone(),
            );
            async move {
                blackout_agent::run::fetch_catalog(&client, &url, &id, token.as_deref(), &stop)
                    .await
            }
        }
    };
    let Some(mut files) = fetch().await else {
        return Ok(());
    };
    let table = blackout_agent::run::select_table(&cfg, &files)?;
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(table));
    {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(cfg.catalog_refresh) => {}
                    _ = stop.cancelled() => return,
                }
                let Some(new) = fetch().await else { return };
                // Compared as files: a whole-IPv4 catalog is a few dozen entries,
                // its table millions of blocks.
                if new == files {
                    continue;
                }
                match blackout_agent::run::select_table(&cfg, &new) {
                    Ok(t) => {
                        files = new;
                        let _ = tx.send(Arc::new(t));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "new catalog from the collector refused; keeping the old one")
                    }
                }
            }
        });
    }
    blackout_agent::run::run_with_updates(cfg, rx, sinks, stop).await?;
    Ok(())
}
