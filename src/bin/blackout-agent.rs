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
        /// Serve the agent's /metrics, /-/healthy, /-/ready and /-/reload here (IP:PORT,
        /// :PORT or HOST:PORT); overrides `metrics_listen` in the config.
        #[arg(long, value_parser = blackout::parse_listen)]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Probe targets once each and print one JSON line per target (like fping).
    Probe(blackout_tools::adhoc::ProbeArgs),
    /// Show what a spool directory holds (files are compact and compressed): one JSON
    /// line per batch, oldest first, or with --summary its size against the same batches
    /// as JSON. Read-only: safe beside a running agent.
    Spool {
        dir: PathBuf,
        #[arg(long)]
        summary: bool,
    },
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
        Cmd::Spool { dir, summary } => spool_show(&dir, summary),
        Cmd::Run {
            config,
            metrics_listen,
        } => {
            let cfg = agent_config(&config, metrics_listen)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cfg.worker_threads)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(run(cfg, config, metrics_listen))
        }
    }
}

fn spool_show(dir: &std::path::Path, summary: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    blackout_agent::spool::show(dir, summary, &mut out)?;
    Ok(())
}

/// The configuration as the command line gives it: the file with `--metrics-listen` over
/// it. Read at the start and at each reload.
fn agent_config(
    path: &std::path::Path,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<AgentConfig> {
    let mut cfg = AgentConfig::load(path)?;
    if metrics_listen.is_some() {
        cfg.metrics_listen = metrics_listen;
    }
    Ok(cfg)
}

fn load_catalogs(cfg: &AgentConfig) -> Result<Vec<blackout_model::catalog::CatalogFile>> {
    let mut files = Vec::new();
    for p in &cfg.catalog {
        files.extend(blackout_model::catalog::load_path(p)?);
    }
    Ok(files)
}

/// Re-reads the config file and the local catalogs and applies them, whole or not at
/// all: the targets go to the run loop through `table` (local catalogs only: a catalog
/// from the collector is the collector's to change), the pacing through `pacing`; the
/// spool, the round's state and the block states stay. A setting only a restart can
/// apply refuses the reload, naming it.
fn reload_agent(
    path: &std::path::Path,
    metrics_listen: Option<std::net::SocketAddr>,
    current: &std::sync::Mutex<AgentConfig>,
    table: Option<&tokio::sync::watch::Sender<Arc<blackout_agent::table::TargetTable>>>,
    pacing: &tokio::sync::watch::Sender<blackout_agent::run::Pacing>,
) -> std::result::Result<String, String> {
    let new = agent_config(path, metrics_listen).map_err(|e| format!("{e:#}"))?;
    let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
    let changed = cur.restart_only_changes(&new);
    if !changed.is_empty() {
        return Err(format!(
            "{}: {} changed: only a restart applies {}; nothing reloaded",
            path.display(),
            changed.join(", "),
            if changed.len() == 1 { "it" } else { "them" }
        ));
    }
    let new_table = match table {
        Some(_) => {
            let files = load_catalogs(&new).map_err(|e| format!("{e:#}"))?;
            let t = blackout_agent::run::select_table(&new, &files)
                .map_err(|e| format!("{}: key `catalog`: {e}", path.display()))?;
            Some(Arc::new(t))
        }
        None => None,
    };
    let targets = new_table.as_ref().map(|t| t.len());
    if let (Some(tx), Some(t)) = (table, new_table) {
        tx.send_replace(t);
    }
    if let Some(note) =
        blackout_agent::config::politeness_note(new.round, new.icmp_max_probes_per_block_hour)
    {
        tracing::warn!("{note}");
    }
    let p = blackout_agent::run::Pacing::of(&new);
    pacing.send_if_modified(|old| std::mem::replace(old, p) != p);
    *cur = new;
    Ok(match targets {
        Some(n) => format!(
            "reloaded: {n} targets, round_secs {}, from the next round",
            p.round.as_secs()
        ),
        None => format!(
            "reloaded: round_secs {}, from the next round (the catalog comes from the collector)",
            p.round.as_secs()
        ),
    })
}

async fn run(
    cfg: AgentConfig,
    path: PathBuf,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<()> {
    let stats = &blackout_agent::metrics::STATS;
    stats.config_loaded(chrono::Utc::now());
    let stop = CancellationToken::new();
    tokio::spawn(blackout::signals::stop_on_signal(stop.clone()));
    // Local catalogs are read now, so that a bad one stops the start.
    let local = if cfg.catalog.is_empty() {
        None
    } else {
        let files = load_catalogs(&cfg)?;
        let table = blackout_agent::run::select_table(&cfg, &files)?;
        Some(tokio::sync::watch::channel(Arc::new(table)))
    };
    let (pacing_tx, pacing_rx) = tokio::sync::watch::channel(blackout_agent::run::Pacing::of(&cfg));
    let reload: blackout::Reload = {
        let current = std::sync::Mutex::new(cfg.clone());
        let table_tx = local.as_ref().map(|(tx, _)| tx.clone());
        Arc::new(move || {
            let r = reload_agent(
                &path,
                metrics_listen,
                &current,
                table_tx.as_ref(),
                &pacing_tx,
            );
            match &r {
                Ok(done) => {
                    stats.config_loaded(chrono::Utc::now());
                    tracing::info!(result = %done, "configuration reloaded");
                }
                Err(e) => {
                    stats.reload_failed();
                    tracing::error!(error = %e, "configuration reload failed; the previous configuration stays in force");
                }
            }
            r
        })
    };
    // Before anything slow (the catalog fetch): SIGHUP's default action ends the process.
    tokio::spawn(blackout::reload_on_sighup(reload.clone(), stop.clone()));
    if let Some(addr) = cfg.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (metrics_listen)"))?;
        tracing::info!(listen = %addr, "serving /metrics, /-/healthy, /-/ready, /-/reload");
        let (app, stop) = (blackout::agent_http::router(reload), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "the metrics endpoint failed");
            }
        });
    }
    let url = cfg
        .collector_url
        .clone()
        .context("collector_url is required")?;
    let client = collector_client(cfg.ca_file.as_deref(), std::time::Duration::from_secs(30))?;
    // One spool and one upload loop per collector (side-by-side collectors).
    let mut sinks: Vec<Arc<dyn blackout_agent::upload::Sink>> = Vec::new();
    for u in &cfg.collector_urls {
        sinks.push(Arc::new(
            HttpSink::new(u, cfg.token.clone(), client.clone())?
                .with_upload_interval(cfg.upload_interval),
        ));
    }
    if let Some((_keep, rx)) = local {
        blackout_agent::run::run_with_updates(cfg, rx, pacing_rx, sinks, stop).await?;
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
        let limits = cfg.catalog_limits;
        move || {
            let (client, url, id, token, stop) = (
                client.clone(),
                url.clone(),
                id.clone(),
                token.clone(),
                stop.clone(),
            );
            async move {
                blackout_agent::run::fetch_catalog(
                    &client,
                    &url,
                    &id,
                    token.as_deref(),
                    &limits,
                    &stop,
                )
                .await
            }
        }
    };
    let Some(mut files) = fetch().await else {
        return Ok(());
    };
    let table = blackout_agent::run::select_fetched(&cfg, &files)?;
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
                // Compared as files and fleet: a whole-IPv4 catalog is a few dozen
                // entries, its table millions of blocks.
                if new == files {
                    continue;
                }
                match blackout_agent::run::select_fetched(&cfg, &new) {
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
    blackout_agent::run::run_with_updates(cfg, rx, pacing_rx, sinks, stop).await?;
    Ok(())
}
