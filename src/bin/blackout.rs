//! `blackout`: the collector, the standalone mode, and the offline tools.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use blackout::InProcessSink;
use blackout_agent::AgentConfig;
use blackout_collector::{Collector, CollectorConfig};
use blackout_model::catalog::CatalogFile;

#[derive(Parser)]
#[command(name = "blackout", version = blackout::LONG_VERSION, about = "blackout: Internet-shutdown detector")]
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
    /// Run the collector: ingest agents' observations, detect, expose metrics.
    Collector {
        /// collector.toml (optional: defaults accept no uploads until agents are configured).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides the config file).
        #[arg(long, value_parser = blackout::parse_listen)]
        listen: Option<SocketAddr>,
    },
    /// Collector and one agent in one process, on the shipped catalogs: the place to start.
    Standalone {
        /// Address of the status page, API and /metrics [default: 127.0.0.1:9797].
        #[arg(long, value_parser = blackout::parse_listen)]
        listen: Option<SocketAddr>,
        /// collector.toml for the collector half (e.g. its [detect] table); the detector's
        /// bin is then the config's, not one round.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Catalog files or directories instead of the shipped ones. The shipped control
        /// targets are added unless the files have their own (or `--no-controls`).
        #[arg(long)]
        catalog: Vec<PathBuf>,
        /// Watch only these countries (ISO 3166 alpha-2, e.g. KZ; repeatable), from the
        /// shipped catalogs or those of `--catalog`; the control targets come too.
        #[arg(long, value_name = "CC")]
        country: Vec<String>,
        /// Probe no control targets. Then this machine's own outage cannot be told from
        /// the countries' and would look like them going dark: for labs only.
        #[arg(long)]
        no_controls: bool,
        /// Seconds in which every target is probed once.
        #[arg(long, default_value_t = blackout_agent::config::DEFAULT_ROUND_SECS)]
        round_secs: u64,
        /// Keep accepted observations here (survives restarts).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Probe private and reserved ranges (labs and tests only).
        #[arg(long)]
        allow_reserved: bool,
    },
    /// Run the detector over recorded data and print events as JSON Lines.
    Replay(blackout_tools::replay::ReplayArgs),
    /// Bytes per observation of each upload encoding over the batches of a collector's log.
    WireSizes(blackout_tools::wire::WireSizesArgs),
    /// Measure detection quality (precision, recall, delay) on real and simulated data.
    Quality(blackout_tools::quality::QualityArgs),
    /// Run the real adaptive ICMP prober against a simulated sparse Internet, feed the
    /// detector, and report coverage, false block-downs, precision, recall and delay.
    ProbeSim(blackout_tools::probe_sim::ProbeSimArgs),
    /// Build target catalogs from public registry data.
    #[command(subcommand)]
    Catalog(blackout_tools::catalog::CatalogCommand),
    /// Validate configuration and catalog files, and say what is wrong and where.
    CheckConfig {
        #[arg(long)]
        collector: Option<PathBuf>,
        #[arg(long)]
        agent: Option<PathBuf>,
        #[arg(long)]
        catalog: Vec<PathBuf>,
    },
}

fn load_catalogs(paths: &[PathBuf]) -> Result<Vec<CatalogFile>> {
    if paths.is_empty() {
        return Ok(blackout::embedded()?);
    }
    let mut files = Vec::new();
    for p in paths {
        files.extend(blackout_model::catalog::load_path(p)?);
    }
    Ok(files)
}

/// The catalogs standalone probes: those of `countries` (all if empty), and control
/// targets always, unless turned off: without them an agent's own outage is
/// indistinguishable from the countries going dark.
fn watched(
    files: Vec<CatalogFile>,
    countries: &[String],
    no_controls: bool,
) -> Result<Vec<CatalogFile>> {
    let mut out: Vec<CatalogFile> = files
        .into_iter()
        .filter(|f| {
            f.control
                || countries.is_empty()
                || countries.iter().any(|c| c.eq_ignore_ascii_case(&f.country))
        })
        .collect();
    for c in countries {
        anyhow::ensure!(
            out.iter()
                .any(|f| !f.control && f.country.eq_ignore_ascii_case(c)),
            "--country {c}: no catalog for this country"
        );
    }
    if no_controls {
        out.retain(|f| !f.control);
        tracing::warn!(
            "--no-controls: no control targets; this machine's own outage will look like the countries going dark"
        );
    } else if !out.iter().any(|f| f.control) {
        let controls: Vec<CatalogFile> = blackout::embedded()?
            .into_iter()
            .filter(|f| f.control)
            .collect();
        tracing::info!(
            files = controls.len(),
            "the catalogs given have no control targets: adding the shipped ones"
        );
        out.extend(controls);
    }
    Ok(out)
}

/// The collector's configuration as the command line gives it: the file (if any) with
/// `--listen` over it, catalog paths relative to the file. Read at start and at each
/// reload.
fn collector_config(
    path: Option<&std::path::Path>,
    listen: Option<SocketAddr>,
) -> Result<CollectorConfig> {
    let mut cfg = match path {
        Some(p) => CollectorConfig::load(p)?,
        None => CollectorConfig::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let (Some(p), false) = (path, cfg.catalog.is_empty()) {
        let base = p.parent().map(|b| b.to_path_buf()).unwrap_or_default();
        cfg.catalog = cfg.catalog.iter().map(|c| base.join(c)).collect();
    }
    Ok(cfg)
}

async fn run_collector(config: Option<PathBuf>, listen_flag: Option<SocketAddr>) -> Result<()> {
    let cfg = collector_config(config.as_deref(), listen_flag)?;
    let files = load_catalogs(&cfg.catalog)?;
    let listen = cfg.listen;
    let stop = CancellationToken::new();
    tokio::spawn(blackout::signals::stop_on_signal(stop.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let Some((listener, collector)) =
        blackout::while_starting(listener, stop.clone(), move || Collector::new(cfg, files))
            .await?
    else {
        return Ok(());
    };
    let collector = Arc::new(collector?);
    tracing::info!(%listen, targets = collector.current().targets().len(), agents = collector.config.agents.len(), "collector listening");
    let reload: blackout::Reload = {
        let collector = collector.clone();
        Arc::new(move || {
            let r = match collector_config(config.as_deref(), listen_flag)
                .and_then(|cfg| Ok((load_catalogs(&cfg.catalog)?, cfg)))
            {
                Ok((files, cfg)) => collector.reload(&cfg, files, chrono::Utc::now()),
                Err(e) => {
                    collector.reload_failed();
                    Err(format!("{e:#}"))
                }
            };
            match r {
                Ok(done) => {
                    tracing::info!(
                        agents = done.agents,
                        targets = done.targets,
                        added = ?done.agents_added,
                        removed = ?done.agents_removed,
                        "configuration reloaded"
                    );
                    Ok(format!(
                        "reloaded: {} agents, {} targets",
                        done.agents, done.targets
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload failed; the previous configuration stays in force");
                    Err(e)
                }
            }
        })
    };
    tokio::spawn(blackout::reload_on_sighup(reload.clone(), stop.clone()));
    blackout::serve(collector, listener, stop.cancelled_owned(), Some(reload)).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    blackout::logging::init(&cli.log_format, cli.log_level.as_deref());
    match cli.cmd {
        Cmd::Collector { config, listen } => run_collector(config, listen).await,
        Cmd::Standalone {
            listen,
            config,
            catalog,
            country,
            no_controls,
            round_secs,
            state_dir,
            allow_reserved,
        } => {
            anyhow::ensure!(round_secs > 0, "--round-secs must be greater than 0");
            let mut cfg = match &config {
                Some(p) => CollectorConfig::load(p)?,
                None => {
                    let mut c = CollectorConfig::default();
                    // One bin per round: each bin then holds one reading of every target.
                    c.detect.bin_secs = round_secs;
                    c.detect
                        .validate()
                        .map_err(|m| anyhow::anyhow!("--round-secs: {m}"))?;
                    c
                }
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if state_dir.is_some() {
                cfg.state_dir = state_dir.clone();
            }
            let listen = cfg.listen;
            let catalog = if catalog.is_empty() {
                let base = config
                    .as_ref()
                    .and_then(|p| p.parent().map(|b| b.to_path_buf()))
                    .unwrap_or_default();
                cfg.catalog.iter().map(|c| base.join(c)).collect()
            } else {
                catalog
            };
            let files = watched(load_catalogs(&catalog)?, &country, no_controls)?;
            let spool_dir = cfg.state_dir.as_ref().map(|d| d.join("spool"));
            let stop = CancellationToken::new();
            tokio::spawn(blackout::signals::stop_on_signal(stop.clone()));
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let started = {
                let files = files.clone();
                blackout::while_starting(listener, stop.clone(), move || Collector::new(cfg, files))
                    .await?
            };
            let Some((listener, collector)) = started else {
                return Ok(());
            };
            let collector = Arc::new(collector?);
            let mut agent = AgentConfig::standalone();
            agent.round = std::time::Duration::from_secs(round_secs);
            agent.allow_reserved = allow_reserved;
            agent.spool_dir = spool_dir;
            let targets = blackout_agent::run::select_targets(&agent, &files)?;
            tracing::info!(%listen, targets = targets.len(), "standalone: status page, API and /metrics at http://{listen}/");
            collector.note_upload_interval(
                &agent.agent_id,
                agent
                    .upload_interval
                    .as_secs()
                    .clamp(1, u64::from(u32::MAX)) as u32,
            );
            let sink = Arc::new(InProcessSink(collector.clone()));
            let agent_task = tokio::spawn(blackout_agent::run(agent, targets, sink, stop.clone()));
            // Standalone has no configuration to re-read worth a reload (its catalogs are
            // its agent's too): a SIGHUP must still not kill it.
            tokio::spawn(ignore_sighup(stop.clone()));
            blackout::serve(collector, listener, stop.clone().cancelled_owned(), None).await?;
            agent_task.await??;
            Ok(())
        }
        Cmd::Replay(args) => Ok(blackout_tools::replay::run(&args)?),
        Cmd::WireSizes(args) => Ok(blackout_tools::wire::run(&args)?),
        Cmd::Quality(args) => Ok(blackout_tools::quality::run(&args)?),
        Cmd::ProbeSim(args) => Ok(blackout_tools::probe_sim::run(&args)?),
        Cmd::Catalog(cmd) => Ok(blackout_tools::catalog::run(&cmd)?),
        Cmd::CheckConfig {
            collector,
            agent,
            catalog,
        } => check_config(collector, agent, catalog),
    }
}

/// `check-config`: every file is checked, every error in each is printed (one line each,
/// naming file and key), and the catalogs the configs name are loaded as the daemons
/// would load them. Exit status 1 when anything is wrong.
fn check_config(
    collector: Option<PathBuf>,
    agent: Option<PathBuf>,
    catalog: Vec<PathBuf>,
) -> Result<()> {
    anyhow::ensure!(
        collector.is_some() || agent.is_some() || !catalog.is_empty(),
        "nothing to check: give --collector, --agent and/or --catalog"
    );
    let mut failed = 0usize;
    // Errors on stderr, `ok` lines and notes on stdout, as scripts expect.
    let mut fail = |e: &dyn std::fmt::Display| {
        failed += 1;
        let _ = writeln!(std::io::stderr(), "{e}");
    };
    // As the daemons load them: no path means the embedded catalogs (collector) or the
    // collector's (agent).
    let check_catalogs = |paths: &[PathBuf], from: &std::path::Path| -> Result<usize, String> {
        let files =
            load_catalogs(paths).map_err(|e| format!("{}: key `catalog`: {e}", from.display()))?;
        blackout_model::catalog::expand(&files)
            .map(|t| t.len())
            .map_err(|e| format!("{}: key `catalog`: {e}", from.display()))
    };
    if let Some(p) = collector {
        match CollectorConfig::load(&p) {
            Ok(c) => {
                let base = p.parent().map(|b| b.to_path_buf()).unwrap_or_default();
                let paths: Vec<PathBuf> = c.catalog.iter().map(|c| base.join(c)).collect();
                match check_catalogs(&paths, &p) {
                    Ok(n) => println!(
                        "{}: ok ({} agents, listen {}, {n} targets{})",
                        p.display(),
                        c.agents.len(),
                        c.listen,
                        if paths.is_empty() {
                            " from the embedded catalogs"
                        } else {
                            ""
                        }
                    ),
                    Err(e) => fail(&e),
                }
            }
            Err(e) => fail(&e),
        }
    }
    if let Some(p) = agent {
        match AgentConfig::check(&p) {
            Ok((c, notes)) => match (c.catalog.is_empty())
                .then_some(0)
                .map_or_else(|| check_catalogs(&c.catalog, &p), Ok)
            {
                Ok(n) => {
                    for note in &notes {
                        println!("{}: note: {note}", p.display());
                    }
                    println!(
                        "{}: ok (agent {}{})",
                        p.display(),
                        c.agent_id,
                        if c.catalog.is_empty() {
                            ", catalog from the collector".to_string()
                        } else {
                            format!(", {n} targets")
                        }
                    );
                }
                Err(e) => fail(&e),
            },
            Err(e) => fail(&e),
        }
    }
    for p in catalog {
        match blackout_model::catalog::load_path(&p)
            .map_err(|e| e.to_string())
            .and_then(|files| {
                let n = blackout_model::catalog::expand(&files)
                    .map_err(|e| e.to_string())?
                    .len();
                Ok((files.len(), n))
            }) {
            Ok((files, targets)) => {
                println!("{}: ok ({files} files, {targets} targets)", p.display())
            }
            Err(e) => fail(&e),
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of the files checked have errors (above)");
    }
    Ok(())
}

async fn ignore_sighup(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => tracing::warn!("SIGHUP: standalone does not reload; restart it to apply new catalogs"),
            _ = stop.cancelled() => return,
        }
    }
}
