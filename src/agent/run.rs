//! The agent's main loop: rounds of probes, observations into batches, batches into the
//! spool, the spool to the collector.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::AgentConfig;
use super::filter::{Refusal, TargetFilter};
use super::schedule;
use super::spool::{Spool, SpoolError};
use super::upload::{Backoff, Sink, upload_loop};
use crate::catalog::{CatalogError, CatalogFile, Target};
use crate::observation::{Batch, Observation, Signal};
use crate::probe::{ProbeError, ProbeSet, ProbeSettings};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("no targets left to probe ({refused} refused as reserved or opted out)")]
    NoTargets { refused: usize },
}

/// Fetches the catalog from the collector, retrying until it answers or `stop` fires.
pub async fn fetch_catalog(
    client: &reqwest::Client,
    base: &reqwest::Url,
    agent_id: &str,
    token: Option<&str>,
    stop: &CancellationToken,
) -> Option<Vec<CatalogFile>> {
    let mut url = base.join("api/v1/catalog").ok()?;
    url.query_pairs_mut().append_pair("agent", agent_id);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let mut req = client.get(url.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let err = match req.send().await {
            Ok(r) if r.status().is_success() => match r.json::<Vec<CatalogFile>>().await {
                Ok(files) => {
                    let bad = files.iter().find_map(|f| f.check().err());
                    match bad {
                        None => return Some(files),
                        Some(m) => format!("invalid catalog from the collector: {m}"),
                    }
                }
                Err(e) => format!("catalog from the collector is not valid JSON: {e}"),
            },
            Ok(r) => format!("collector answered {}", r.status()),
            Err(e) => format!("collector unreachable: {e}"),
        };
        let d = backoff.next_delay();
        tracing::warn!(error = %err, retry_in_secs = d.as_secs_f64(), "cannot fetch the catalog");
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// Keeps only what this agent may probe, logging what it refused.
pub fn select_targets(cfg: &AgentConfig, files: &[CatalogFile]) -> Result<Vec<Target>, AgentError> {
    let all = crate::catalog::expand(files)?;
    let filter = TargetFilter::new(cfg.allow_reserved, cfg.opt_out.clone());
    let (mut reserved, mut opted_out) = (0usize, 0usize);
    let targets: Vec<Target> = all
        .into_iter()
        .filter(|t| match filter.check(t) {
            Ok(()) => true,
            Err(Refusal::Reserved) => {
                reserved += 1;
                false
            }
            Err(Refusal::OptedOut) => {
                opted_out += 1;
                false
            }
        })
        .collect();
    if reserved + opted_out > 0 {
        tracing::info!(reserved, opted_out, "targets refused");
    }
    if targets.is_empty() {
        return Err(AgentError::NoTargets {
            refused: reserved + opted_out,
        });
    }
    Ok(targets)
}

fn seed_of(agent: &str, round: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    agent.hash(&mut h);
    round.hash(&mut h);
    h.finish()
}

/// Collects observations into batches and puts them in the spool.
async fn batcher(
    agent: String,
    mut rx: mpsc::Receiver<Observation>,
    spools: Vec<(Arc<Mutex<Spool>>, Arc<Notify>)>,
    batch_max: usize,
    interval: Duration,
) {
    let mut pending: Vec<Observation> = Vec::new();
    let mut seq = 0u64;
    let boot = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let mut tick = tokio::time::interval(interval);
    let flush = |pending: &mut Vec<Observation>, seq: &mut u64| {
        if pending.is_empty() {
            return;
        }
        *seq += 1;
        let batch = Batch {
            // Unique across restarts: the boot time in ns plus a counter.
            batch_id: format!("{agent}-{boot:x}-{seq}"),
            agent: agent.clone(),
            observations: std::mem::take(pending),
            spool: None,
        };
        let n = batch.observations.len();
        // One spool per collector: each collector's copy is acknowledged on its own.
        for (spool, more) in &spools {
            match spool.lock().expect("spool lock").push(batch.clone()) {
                Ok(()) => more.notify_one(),
                Err(e) => {
                    tracing::error!(error = %e, observations = n, "cannot write to the spool; observations lost")
                }
            }
        }
    };
    loop {
        tokio::select! {
            o = rx.recv() => match o {
                Some(o) => {
                    pending.push(o);
                    if pending.len() >= batch_max {
                        flush(&mut pending, &mut seq);
                    }
                }
                None => {
                    flush(&mut pending, &mut seq);
                    return;
                }
            },
            _ = tick.tick() => flush(&mut pending, &mut seq),
        }
    }
}

/// Runs the agent until `stop` fires: probes `targets` round after round and hands the
/// observations to `sink` through the spool.
pub async fn run(
    cfg: AgentConfig,
    targets: Vec<Target>,
    sink: Arc<dyn Sink>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    run_multi(cfg, targets, vec![sink], stop).await
}

/// As [`run`], uploading every batch to each of `sinks` (several collectors side by
/// side). The first sink's spool is `spool_dir`; the n-th's is `spool_dir/collector-n`.
pub async fn run_multi(
    cfg: AgentConfig,
    targets: Vec<Target>,
    sinks: Vec<Arc<dyn Sink>>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    let (_keep, rx) = tokio::sync::watch::channel(targets);
    run_with_updates(cfg, rx, sinks, stop).await
}

/// As [`run_multi`], with a target list that may change between rounds (fleet
/// assignment: the collector rebalances as agents come and go).
pub async fn run_with_updates(
    cfg: AgentConfig,
    mut updates: tokio::sync::watch::Receiver<Vec<Target>>,
    sinks: Vec<Arc<dyn Sink>>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    let targets = updates.borrow_and_update().clone();
    let mut spools = Vec::new();
    for i in 0..sinks.len() {
        let spool = match &cfg.spool_dir {
            Some(dir) if i == 0 => Spool::open(dir, cfg.spool_max_bytes)?,
            Some(dir) => Spool::open(
                &dir.join(format!("collector-{}", i + 1)),
                cfg.spool_max_bytes,
            )?,
            None => Spool::in_memory(cfg.spool_max_bytes),
        };
        if spool.batches() > 0 {
            tracing::info!(
                collector = i + 1,
                batches = spool.batches(),
                observations = spool.observations(),
                "resuming upload of spooled observations"
            );
        }
        spools.push((Arc::new(Mutex::new(spool)), Arc::new(Notify::new())));
    }
    let settings = ProbeSettings {
        timeout: cfg.timeout,
        icmp_max_probes_per_block_hour: cfg.icmp_max_probes_per_block_hour,
        ..ProbeSettings::default()
    };
    let probes = Arc::new(ProbeSet::new(&settings).await?);
    let mut targets: Arc<Vec<Target>> = Arc::new(targets);
    tracing::info!(agent = %cfg.agent_id, targets = targets.len(), round_secs = cfg.round.as_secs(), "agent started");

    let flushed = CancellationToken::new();
    let uploaders: Vec<_> = spools
        .iter()
        .zip(sinks)
        .map(|((spool, more), sink)| {
            tokio::spawn(upload_loop(
                spool.clone(),
                sink,
                more.clone(),
                stop.clone(),
                flushed.clone(),
            ))
        })
        .collect();
    let (tx, rx) = mpsc::channel::<Observation>(65_536);
    let batcher = tokio::spawn(batcher(
        cfg.agent_id.clone(),
        rx,
        spools,
        cfg.batch_max,
        cfg.upload_interval,
    ));
    let slots = Arc::new(Semaphore::new(cfg.concurrency));
    let could_not_run: Arc<Mutex<HashSet<Signal>>> = Arc::default();
    let agent_id: Arc<str> = cfg.agent_id.as_str().into();

    let mut round = 0u64;
    'rounds: while !stop.is_cancelled() {
        if updates.has_changed().unwrap_or(false) {
            targets = Arc::new(updates.borrow_and_update().clone());
            tracing::info!(
                targets = targets.len(),
                "new target list from the collector"
            );
        }
        let t0 = Instant::now();
        let plan = schedule::plan(
            targets.len(),
            cfg.round,
            cfg.max_probes_per_sec,
            seed_of(&cfg.agent_id, round),
        );
        for (offset, idx) in plan {
            tokio::select! {
                _ = tokio::time::sleep_until(t0 + offset) => {}
                _ = stop.cancelled() => break 'rounds,
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = stop.cancelled() => break 'rounds,
            };
            let (targets, probes, tx, could_not_run, agent_id) = (
                targets.clone(),
                probes.clone(),
                tx.clone(),
                could_not_run.clone(),
                agent_id.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let t = &targets[idx];
                let started = chrono::Utc::now();
                match probes.probe(t).await {
                    Ok(outcome) => {
                        // An adaptive block probe can run for several timeouts. An "up" that
                        // rests on a late echo is stamped when it ended: otherwise a block that
                        // came back after a cut would count as up at the cut. Failures keep the
                        // start, when the silence began (vantage health relies on it).
                        let measured_at =
                            if outcome.ok && outcome.block.is_some_and(|b| b.probes > 1) {
                                chrono::Utc::now()
                            } else {
                                started
                            };
                        let _ = tx
                            .send(outcome.into_observation(&agent_id, t, measured_at))
                            .await;
                    }
                    Err(e) => {
                        // Once per kind: an operator needs to know, not 20,000 times.
                        if could_not_run.lock().expect("lock").insert(t.signal()) {
                            tracing::error!(signal = %t.signal(), error = %e, "probe could not run");
                        }
                    }
                }
            });
        }
        round += 1;
        let end = t0 + cfg.round;
        if Instant::now() > end {
            tracing::warn!(
                round,
                targets = targets.len(),
                "round took longer than round_secs (raise max_probes_per_sec or round_secs)"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep_until(end) => {}
            _ = stop.cancelled() => break 'rounds,
        }
    }
    // Let probes in flight finish so their observations reach the spool.
    let _ = tokio::time::timeout(
        cfg.timeout + Duration::from_secs(1),
        slots.acquire_many(cfg.concurrency as u32),
    )
    .await;
    drop(tx);
    let _ = batcher.await;
    flushed.cancel();
    for u in uploaders {
        let _ = u.await;
    }
    Ok(())
}
