//! The agent's main loop: rounds of probes, observations into batches, batches into the
//! spool, the spool to the collector.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::catalog::{CatalogLimits, CatalogRefusal, Fetched, parse_catalog, read_capped};
use super::config::AgentConfig;
use super::filter::{Refusal, TargetFilter};
use super::network::Network;
use super::schedule;
use super::spool::{Spool, SpoolError};
use super::table::{BlockStates, Entry, TargetTable};
use super::upload::{Backoff, Sink, upload_loop};
use blackout_model::catalog::{CatalogError, CatalogFile, Target};
use blackout_model::observation::{Batch, Observation, Signal};
use blackout_probe::address::AddressPolicy;
use blackout_probe::{Outcome, ProbeError, ProbeSet, ProbeSettings};

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

/// What a reload may change in a running agent besides its targets; the rest of
/// [`AgentConfig`] is built into the spool, the uploads and the probers at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub round: Duration,
    pub concurrency: usize,
    pub max_probes_per_sec: u32,
}

impl Pacing {
    pub fn of(cfg: &AgentConfig) -> Pacing {
        Pacing {
            round: cfg.round,
            concurrency: cfg.concurrency.max(1),
            max_probes_per_sec: cfg.max_probes_per_sec,
        }
    }
}

/// Block probes skipped since the agent started because the block's politeness budget
/// was spent; sent to the collector with each upload's spool status.
pub static POLITENESS_SKIPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether catalogs are asked for with the rule of the share (until a collector refuses).
static SHARE_RULE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Fetches the catalog from the collector, retrying until it answers with a catalog
/// within `limits` or `stop` fires. A refused catalog is logged with the limit that
/// refused it and counted in [`crate::catalog::REFUSALS`] (which the collector shows);
/// the caller keeps the catalog it had meanwhile.
pub async fn fetch_catalog(
    client: &reqwest::Client,
    base: &reqwest::Url,
    agent_id: &str,
    token: Option<&str>,
    limits: &CatalogLimits,
    stop: &CancellationToken,
) -> Option<Fetched> {
    let mut plain = base.join("api/v1/catalog").ok()?;
    plain.query_pairs_mut().append_pair("agent", agent_id);
    // The catalog as written and the rule of this agent's share: kilobytes, where the
    // list of its blocks is ~80 bytes a block. A collector older than that refuses the
    // parameter (400): then the list, from that collector, until the agent restarts.
    let mut shared = plain.clone();
    shared.query_pairs_mut().append_pair("share", "rule");
    let mut rule = SHARE_RULE.load(Ordering::Relaxed);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let url = if rule { &shared } else { &plain };
        let mut req = client.get(url.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let got = match req.send().await {
            Ok(r) if r.status().is_success() => {
                match read_capped(r, limits.max_catalog_bytes).await {
                    Ok(Ok(body)) => parse_catalog(&body, limits),
                    Ok(Err(read)) => Err(CatalogRefusal::TooLarge {
                        limit: limits.max_catalog_bytes,
                        read,
                    }),
                    Err(e) => Err(CatalogRefusal::Unreachable(format!(
                        "reading the body: {e}"
                    ))),
                }
            }
            Ok(r) if rule && r.status() == reqwest::StatusCode::BAD_REQUEST => {
                tracing::info!(
                    "the collector does not hand out the rule of a share; asking for the list of targets"
                );
                rule = false;
                SHARE_RULE.store(false, Ordering::Relaxed);
                continue;
            }
            Ok(r) => Err(CatalogRefusal::Unreachable(format!(
                "collector answered {}",
                r.status()
            ))),
            Err(e) => Err(CatalogRefusal::Unreachable(format!(
                "collector unreachable: {e}"
            ))),
        };
        let err = match got {
            Ok(files) => return Some(files),
            Err(e) => e,
        };
        let d = backoff.next_delay();
        match err.limit() {
            Some((limit, value)) => {
                let n = crate::catalog::REFUSALS.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(limit, value, refusals = n, error = %err, retry_in_ms = d.as_millis() as u64, "catalog from the collector refused: over a limit; keeping the current one (if any) and fetching again");
            }
            None => {
                tracing::warn!(error = %err, retry_in_ms = d.as_millis() as u64, "cannot fetch the catalog")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// Keeps only what this agent may probe, logging what it refused.
pub fn select_targets(cfg: &AgentConfig, files: &[CatalogFile]) -> Result<Vec<Target>, AgentError> {
    crate::catalog::check_target_count(files, cfg.catalog_limits.max_targets).map_err(|e| {
        CatalogError::Invalid {
            origin: "catalog".into(),
            message: e.to_string(),
        }
    })?;
    let all = blackout_model::catalog::expand(files)?;
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

/// As [`select_targets`], into the compact table the agent runs on: the blocks of prefix
/// entries are never expanded into [`Target`]s (see [`super::table`]).
pub fn select_table(cfg: &AgentConfig, files: &[CatalogFile]) -> Result<TargetTable, AgentError> {
    select_fetched(
        cfg,
        &Fetched {
            files: files.to_vec(),
            assignment: None,
        },
    )
}

/// As [`select_table`], for a catalog from the collector: with the rule of the agent's
/// share (`?share=rule`), only the share is kept.
pub fn select_fetched(cfg: &AgentConfig, fetched: &Fetched) -> Result<TargetTable, AgentError> {
    let filter = TargetFilter::new(cfg.allow_reserved, cfg.opt_out.clone());
    let max = cfg.catalog_limits.max_targets;
    let (table, refused) = match &fetched.assignment {
        Some(a) => TargetTable::from_catalog_share(&fetched.files, &filter, max, a)?,
        None => TargetTable::from_catalog_within(&fetched.files, &filter, max)?,
    };
    if refused.total() > 0 {
        tracing::info!(
            reserved = refused.reserved,
            opted_out = refused.opted_out,
            "targets refused"
        );
    }
    if table.is_empty() {
        return Err(AgentError::NoTargets {
            refused: refused.total(),
        });
    }
    Ok(table)
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
    // The spool syncs every batch to disk: that waits on the disk, so it runs off the
    // runtime's thread (one thread also paces the probes).
    // An empty batch is the agent's report that it is alive: the collector calls an
    // agent silent after a few report intervals without one (`upload_interval_secs`,
    // declared with each upload), so an agent that measured nothing in an interval (a
    // small catalog probed at the start of a long round) still reports. Not while the
    // spool holds batches: those are the reports then.
    let spools_idle = |spools: &[(Arc<Mutex<Spool>>, Arc<Notify>)]| {
        spools
            .iter()
            .all(|(s, _)| s.lock().is_ok_and(|s| s.batches() == 0))
    };
    let mut flushed_since_tick = false;
    let flush = async |pending: &mut Vec<Observation>, seq: &mut u64, heartbeat: bool| {
        if pending.is_empty() && !heartbeat {
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
        let spools = spools.clone();
        let written = tokio::task::spawn_blocking(move || {
            let n = batch.observations.len();
            let last = spools.len().saturating_sub(1);
            let mut batch = Some(batch);
            // One spool per collector: each collector's copy is acknowledged on its own.
            for (i, (spool, more)) in spools.iter().enumerate() {
                let b = if i == last {
                    batch.take().expect("taken once, by the last spool")
                } else {
                    batch.clone().expect("kept until the last spool")
                };
                match spool.lock().expect("spool lock").push(b) {
                    Ok(()) => {
                        if i == 0 {
                            crate::metrics::STATS.spooled(n as u64);
                        }
                        more.notify_one()
                    }
                    Err(e) => {
                        tracing::error!(error = %e, observations = n, "cannot write to the spool; observations lost")
                    }
                }
            }
        })
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "spool writer failed; observations lost");
        }
    };
    loop {
        tokio::select! {
            o = rx.recv() => match o {
                Some(o) => {
                    pending.push(o);
                    if pending.len() >= batch_max {
                        flush(&mut pending, &mut seq, false).await;
                        flushed_since_tick = true;
                    }
                }
                None => {
                    flush(&mut pending, &mut seq, false).await;
                    return;
                }
            },
            _ = tick.tick() => {
                // The first tick is at once: the agent reports as it starts.
                let heartbeat = pending.is_empty() && !flushed_since_tick && spools_idle(&spools);
                flushed_since_tick = false;
                flush(&mut pending, &mut seq, heartbeat).await;
            }
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
    let table = Arc::new(TargetTable::from_targets(targets)?);
    let (_keep, rx) = tokio::sync::watch::channel(table);
    let (_keep_pacing, pacing) = tokio::sync::watch::channel(Pacing::of(&cfg));
    run_with_updates(cfg, rx, pacing, sinks, stop).await
}

/// Probes due within this much of each other are launched together.
const PACING_TICK: Duration = Duration::from_millis(5);

/// What one probe left: the target's index in its table, the outcome, when it started.
type Done = (
    usize,
    Result<Outcome, ProbeError>,
    chrono::DateTime<chrono::Utc>,
);

/// Probes target `i` of `table` once. A compact block's state is copied out of `states`
/// and written back when its round is over.
async fn probe_one<N: Network>(
    probes: Arc<N>,
    table: Arc<TargetTable>,
    states: Arc<BlockStates>,
    i: usize,
) -> Done {
    let started = chrono::Utc::now();
    let out = match table.entry(i) {
        Entry::Block {
            id,
            net,
            availability,
        } => {
            let mut st = states.get(i);
            let out = probes.probe_block(&mut st, &id, &net, availability).await;
            if out.is_ok() {
                states.set(i, st);
            }
            out
        }
        Entry::Other(t) => probes.probe(t).await,
    };
    (i, out, started)
}

/// As [`run_multi`], with a target table that may change between rounds (fleet
/// assignment: the collector rebalances as agents come and go; a reload of local
/// catalogs), and pacing that may change too (a reload). Blocks that stay keep their
/// state; both apply from the next round on.
///
/// One task paces the whole round: it launches the probes that are due, in batches, and
/// polls those in flight; no task or timer per probe (at 7,000 probes/s they were a third
/// of the agent's CPU).
pub async fn run_with_updates(
    cfg: AgentConfig,
    updates: tokio::sync::watch::Receiver<Arc<TargetTable>>,
    pacing: tokio::sync::watch::Receiver<Pacing>,
    sinks: Vec<Arc<dyn Sink>>,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    if let Some(note) =
        super::config::politeness_note(cfg.round, cfg.icmp_max_probes_per_block_hour)
    {
        tracing::warn!("{note}");
    }
    let settings = ProbeSettings {
        timeout: cfg.timeout,
        icmp_max_probes_per_block_hour: cfg.icmp_max_probes_per_block_hour,
        icmp_round: Some(cfg.round),
        // The catalog was filtered with this policy; the probes apply it again to every
        // address they resolve or are redirected to.
        address_policy: Arc::new(AddressPolicy::new(cfg.allow_reserved, cfg.opt_out.clone())),
        ..ProbeSettings::default()
    };
    let probes = Arc::new(ProbeSet::new(&settings).await?);
    run_on(cfg, updates, pacing, sinks, stop, probes).await
}

/// As [`run_with_updates`], on the network `probes` (the real [`ProbeSet`], or a fake in
/// tests).
pub async fn run_on<N: Network>(
    cfg: AgentConfig,
    mut updates: tokio::sync::watch::Receiver<Arc<TargetTable>>,
    mut pacing: tokio::sync::watch::Receiver<Pacing>,
    sinks: Vec<Arc<dyn Sink>>,
    stop: CancellationToken,
    probes: Arc<N>,
) -> Result<(), AgentError> {
    let stats = &crate::metrics::STATS;
    let mut table = updates.borrow_and_update().clone();
    let mut pace = *pacing.borrow_and_update();
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
    let registered: Vec<_> = spools.iter().map(|(s, _)| s.clone()).collect();
    for s in &registered {
        stats.add_spool(s.clone());
    }
    stats.set_targets(table.count_by_signal());
    stats.set_ready(true);
    let mut states = Arc::new(BlockStates::new(&table, None, probes.new_block_state()));
    tracing::info!(agent = %cfg.agent_id, targets = table.len(), round_secs = cfg.round.as_secs(), "agent started");

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
    let mut could_not_run: HashSet<Signal> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    // Observations are built where the probe ended, against the table it was launched
    // from; a new table only comes in once nothing is in flight.
    let done = |d: Done,
                table: &TargetTable,
                could_not_run: &mut HashSet<Signal>|
     -> Option<Observation> {
        let (i, out, started) = d;
        match out {
            Ok(outcome) => {
                // An adaptive block probe can run for several timeouts. An "up" that rests
                // on a late echo is stamped when it ended: otherwise a block that came back
                // after a cut would count as up at the cut. Failures keep the start, when
                // the silence began (vantage health relies on it).
                let measured_at = if outcome.ok && outcome.block.is_some_and(|b| b.probes > 1) {
                    chrono::Utc::now()
                } else {
                    started
                };
                let o = table.observation(i, &cfg.agent_id, outcome, measured_at);
                stats.probe(o.signal);
                Some(o)
            }
            Err(ProbeError::PolitenessBudget { id }) => {
                // Not a failure of the network and not "could not run": counted, reported
                // with the uploads, and logged only at DEBUG.
                let n = POLITENESS_SKIPS.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(block = %id, skips = n, "block skipped this round: politeness budget spent");
                None
            }
            Err(e) => {
                // Once per kind: an operator needs to know, not 20,000 times.
                let signal = table.signal(i);
                if could_not_run.insert(signal) {
                    tracing::error!(signal = %signal, error = %e, "probe could not run");
                }
                None
            }
        }
    };

    let mut round = 0u64;
    'rounds: while !stop.is_cancelled() {
        if updates.has_changed().unwrap_or(false) {
            // Finish the probes of the old table so that their state is carried over.
            while let Some(d) = in_flight.next().await {
                if let Some(o) = done(d, &table, &mut could_not_run) {
                    let _ = tx.send(o).await;
                }
            }
            let new = updates.borrow_and_update().clone();
            states = Arc::new(BlockStates::new(
                &new,
                Some((&table, &states)),
                probes.new_block_state(),
            ));
            table = new;
            stats.set_targets(table.count_by_signal());
            tracing::info!(targets = table.len(), "new target list in force");
        }
        if pacing.has_changed().unwrap_or(false) {
            pace = *pacing.borrow_and_update();
            tracing::info!(
                round_secs = pace.round.as_secs(),
                concurrency = pace.concurrency,
                max_probes_per_sec = pace.max_probes_per_sec,
                "new pacing in force"
            );
        }
        let concurrency = pace.concurrency.max(1);
        let t0 = Instant::now();
        let end = t0 + pace.round;
        let mut plan = schedule::Round::new(
            table.len(),
            pace.round,
            pace.max_probes_per_sec,
            seed_of(&cfg.agent_id, round),
        )
        .peekable();
        let wake = tokio::time::sleep_until(t0);
        tokio::pin!(wake);
        loop {
            let now = Instant::now();
            while in_flight.len() < concurrency {
                match plan.peek() {
                    Some((offset, i)) if t0 + *offset <= now => {
                        in_flight.push(probe_one(
                            probes.clone(),
                            table.clone(),
                            states.clone(),
                            *i,
                        ));
                        plan.next();
                    }
                    _ => break,
                }
            }
            // Behind schedule: a launch due in the past (held back by the concurrency
            // bound or a busy thread), or a round's end passed with probes in flight.
            let due = match plan.peek() {
                Some((offset, _)) => t0 + *offset,
                None => end,
            };
            stats.set_round_lag(now.saturating_duration_since(due));
            // The next launch, or the round's end once all are launched; when the
            // concurrency bound holds launches back, only a finished probe frees a slot.
            let next = match plan.peek() {
                Some(_) if in_flight.len() >= concurrency => None,
                Some((offset, _)) => Some(t0 + *offset),
                None if Instant::now() >= end => break,
                None => Some(end),
            };
            // Launches go in batches, a pacing tick apart: a wake-up per probe costs more
            // than the probe.
            let next = next.map(|at| at.max(now + PACING_TICK));
            if let Some(at) = next
                && wake.deadline() != at
            {
                wake.as_mut().reset(at);
            }
            tokio::select! {
                _ = &mut wake, if next.is_some() => {}
                Some(d) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(o) = done(d, &table, &mut could_not_run) {
                        let _ = tx.send(o).await;
                    }
                    // Take every other probe that has finished too, before pacing again.
                    while let Some(Some(d)) = in_flight.next().now_or_never() {
                        if let Some(o) = done(d, &table, &mut could_not_run) {
                            let _ = tx.send(o).await;
                        }
                    }
                }
                _ = stop.cancelled() => break 'rounds,
            }
            if plan.peek().is_none() && Instant::now() >= end {
                break;
            }
        }
        round += 1;
        stats.round_done(t0.elapsed());
        if Instant::now() > end + Duration::from_millis(500) {
            tracing::warn!(
                round,
                targets = table.len(),
                "round took longer than round_secs (raise max_probes_per_sec or round_secs)"
            );
        }
    }
    // Let probes in flight finish so their observations reach the spool.
    let _ = tokio::time::timeout(cfg.timeout + Duration::from_secs(1), async {
        while let Some(d) = in_flight.next().await {
            if let Some(o) = done(d, &table, &mut could_not_run) {
                let _ = tx.send(o).await;
            }
        }
    })
    .await;
    drop(tx);
    let _ = batcher.await;
    flushed.cancel();
    for u in uploaders {
        let _ = u.await;
    }
    stats.set_ready(false);
    for s in &registered {
        stats.remove_spool(s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::SendResult;
    use blackout_model::catalog::TargetKind;
    use futures::future::BoxFuture;

    /// Keeps every observation it is handed, with when it came.
    #[derive(Default)]
    struct Keep(Mutex<Vec<Observation>>);

    impl Sink for Keep {
        fn send<'a>(
            &'a self,
            batch: &'a crate::spool::Outgoing,
            _: blackout_model::observation::SpoolStatus,
        ) -> BoxFuture<'a, SendResult> {
            let b = batch.batch().expect("the spool holds batches");
            self.0.lock().unwrap().extend(b.observations);
            Box::pin(async { SendResult::Acked })
        }
    }

    fn target(id: String, kind: TargetKind) -> Target {
        Target {
            id,
            country: "KZ".into(),
            asn: 1,
            region: None,
            control: false,
            kind,
        }
    }

    /// The pacing loop on real probes: every target once a round, spread over the round,
    /// observations labelled as the catalog says.
    #[tokio::test(flavor = "current_thread")]
    async fn rounds_probe_every_target_once_spread_over_the_round() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = listener.accept().await {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    drop(s);
                }
            });
        }
        let icmp = IcmpProberCheck::allowed().await;
        let mut targets: Vec<Target> = (0..20)
            .map(|i| {
                target(
                    format!("tcp:{i}"),
                    TargetKind::Tcp {
                        address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    },
                )
            })
            .collect();
        if icmp {
            targets.extend((1..=10).map(|i| {
                target(
                    format!("icmp:127.0.{i}.0/24"),
                    TargetKind::Icmp {
                        block: format!("127.0.{i}.0/24").parse().unwrap(),
                        hosts: Vec::new(),
                        availability: None,
                    },
                )
            }));
        } else {
            eprintln!(
                "SKIP the ICMP half: no ICMP socket allowed here (needs root or ping_group_range)"
            );
        }
        let n = targets.len();
        let cfg = AgentConfig {
            round: Duration::from_millis(1500),
            concurrency: 2,
            max_probes_per_sec: 1000,
            timeout: Duration::from_secs(1),
            upload_interval: Duration::from_millis(100),
            allow_reserved: true,
            ..AgentConfig::standalone()
        };
        let keep = Arc::new(Keep::default());
        let stop = CancellationToken::new();
        let agent = tokio::spawn(run(cfg, targets.clone(), keep.clone(), stop.clone()));
        // One whole round and most of a second.
        tokio::time::sleep(Duration::from_millis(2700)).await;
        stop.cancel();
        agent.await.unwrap().unwrap();
        let mut obs = keep.0.lock().unwrap().clone();
        obs.sort_by_key(|o| o.measured_at);
        let first = &obs[..n.min(obs.len())];
        let ids: HashSet<&str> = first.iter().map(|o| o.target.as_str()).collect();
        assert_eq!(ids.len(), n, "every target once in the first round");
        // Spread over the round (1.5 s): not a burst at its start.
        let start = first[0].measured_at;
        let span = first[n - 1].measured_at - start;
        assert!(
            span > chrono::Duration::milliseconds(1000),
            "first round took {span}"
        );
        let early = first
            .iter()
            .filter(|o| o.measured_at < start + chrono::Duration::milliseconds(150))
            .count();
        assert!(early <= n / 3, "{early} of {n} in the first 150 ms");
        assert!(obs.len() > n, "a second round started");
        for o in &obs {
            assert!(o.ok, "{o:?}");
            let t = targets.iter().find(|t| t.id == o.target).unwrap();
            assert_eq!((o.country.as_str(), o.asn, o.signal), ("KZ", 1, t.signal()));
            if o.signal == Signal::Icmp {
                assert_eq!(
                    o.block.map(|b| b.verdict),
                    Some(blackout_model::observation::BlockVerdict::Up)
                );
            }
        }
        assert!(accepted.load(std::sync::atomic::Ordering::Relaxed) >= 20);
    }

    /// A network in memory: targets whose id ends in `-down` time out at connect; every
    /// probe is recorded with the (paused) tokio clock.
    #[derive(Default)]
    struct FakeNet {
        calls: Mutex<Vec<(String, Instant)>>,
    }

    impl Network for FakeNet {
        fn new_block_state(&self) -> blackout_probe::icmp::BlockState {
            blackout_probe::icmp::IcmpProber::new(&ProbeSettings::default()).new_block_state()
        }

        fn probe_block<'a>(
            &'a self,
            _: &'a mut blackout_probe::icmp::BlockState,
            id: &'a (dyn std::fmt::Display + Sync),
            _: &'a ipnet::IpNet,
            _: Option<f64>,
        ) -> BoxFuture<'a, Result<Outcome, ProbeError>> {
            let id = id.to_string();
            Box::pin(async move { self.answer(id).await })
        }

        fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>> {
            Box::pin(self.answer(target.id.clone()))
        }
    }

    impl FakeNet {
        async fn answer(&self, id: String) -> Result<Outcome, ProbeError> {
            self.calls
                .lock()
                .unwrap()
                .push((id.clone(), Instant::now()));
            if id.ends_with("-down") {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(Outcome::failed(
                    blackout_model::observation::Phase::Connect,
                    blackout_model::observation::Failure::Timeout,
                ))
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Outcome::ok(Duration::from_millis(20)))
            }
        }
    }

    /// The pacing loop without a network: every target once per round, spread over the
    /// round, failures become observations with their phase and label.
    #[tokio::test(start_paused = true)]
    async fn on_a_fake_network_rounds_probe_every_target_once_spread_over_the_round() {
        let targets: Vec<Target> = (0..30)
            .map(|i| {
                let down = if i % 3 == 0 { "-down" } else { "" };
                target(
                    format!("tcp:{i}{down}"),
                    TargetKind::Tcp {
                        address: std::net::SocketAddr::from(([192, 0, 2, 1], 443)),
                    },
                )
            })
            .collect();
        let n = targets.len();
        let round = Duration::from_secs(60);
        let cfg = AgentConfig {
            round,
            concurrency: 4,
            max_probes_per_sec: 1000,
            timeout: Duration::from_secs(2),
            upload_interval: Duration::from_millis(100),
            allow_reserved: true,
            ..AgentConfig::standalone()
        };
        let table = Arc::new(TargetTable::from_targets(targets.clone()).unwrap());
        let (_keep_tx, rx) = tokio::sync::watch::channel(table);
        let net = Arc::new(FakeNet::default());
        let keep = Arc::new(Keep::default());
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let (_keep_pacing, pacing) = tokio::sync::watch::channel(Pacing::of(&cfg));
        let agent = tokio::spawn(run_on(
            cfg,
            rx,
            pacing,
            vec![keep.clone() as Arc<dyn Sink>],
            stop.clone(),
            net.clone(),
        ));
        // Two whole rounds and half of a third.
        tokio::time::sleep(round * 5 / 2).await;
        stop.cancel();
        agent.await.unwrap().unwrap();

        let calls = net.calls.lock().unwrap().clone();
        for r in 0..2u32 {
            let (from, to) = (t0 + round * r, t0 + round * (r + 1));
            let in_round: Vec<&(String, Instant)> = calls
                .iter()
                .filter(|(_, at)| *at >= from && *at < to)
                .collect();
            let ids: HashSet<&str> = in_round.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(in_round.len(), n, "round {r}: {n} probes");
            assert_eq!(ids.len(), n, "round {r}: every target once");
            // Spread over the round, not a burst at its start.
            let first = in_round.iter().map(|(_, at)| *at).min().unwrap();
            let last = in_round.iter().map(|(_, at)| *at).max().unwrap();
            assert!(
                last - first > round / 2,
                "round {r} took {:?}",
                last - first
            );
            let early = in_round
                .iter()
                .filter(|(_, at)| *at < from + round / 10)
                .count();
            assert!(
                early <= n / 3,
                "round {r}: {early} of {n} in its first tenth"
            );
        }
        let obs = keep.0.lock().unwrap().clone();
        assert!(obs.len() >= 2 * n, "{} observations", obs.len());
        for o in &obs {
            let down = o.target.ends_with("-down");
            assert_eq!(o.ok, !down, "{o:?}");
            if down {
                assert_eq!(o.phase, Some(blackout_model::observation::Phase::Connect));
                assert_eq!(
                    o.failure,
                    Some(blackout_model::observation::Failure::Timeout)
                );
            }
            assert_eq!(
                (o.country.as_str(), o.asn, o.signal),
                ("KZ", 1, Signal::Tcp)
            );
        }
    }

    /// A reload's pacing reaches the running loop: a round of 60 s shortened to 10 s is in
    /// force from the next round, and the targets are still probed once a round.
    #[tokio::test(start_paused = true)]
    async fn new_pacing_applies_from_the_next_round() {
        let targets: Vec<Target> = (0..5)
            .map(|i| {
                target(
                    format!("tcp:{i}"),
                    TargetKind::Tcp {
                        address: std::net::SocketAddr::from(([192, 0, 2, 1], 443)),
                    },
                )
            })
            .collect();
        let cfg = AgentConfig {
            round: Duration::from_secs(60),
            concurrency: 4,
            max_probes_per_sec: 1000,
            upload_interval: Duration::from_millis(100),
            allow_reserved: true,
            ..AgentConfig::standalone()
        };
        let table = Arc::new(TargetTable::from_targets(targets).unwrap());
        let (_keep_tx, rx) = tokio::sync::watch::channel(table);
        let (pacing_tx, pacing) = tokio::sync::watch::channel(Pacing::of(&cfg));
        let net = Arc::new(FakeNet::default());
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let agent = tokio::spawn(run_on(
            cfg.clone(),
            rx,
            pacing,
            vec![Arc::new(Keep::default()) as Arc<dyn Sink>],
            stop.clone(),
            net.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(30)).await;
        pacing_tx.send_replace(Pacing {
            round: Duration::from_secs(10),
            ..Pacing::of(&cfg)
        });
        tokio::time::sleep(Duration::from_secs(70)).await;
        stop.cancel();
        agent.await.unwrap().unwrap();
        let calls = net.calls.lock().unwrap().clone();
        let within = |from: u64, to: u64| {
            calls
                .iter()
                .filter(|(_, at)| {
                    *at >= t0 + Duration::from_secs(from) && *at < t0 + Duration::from_secs(to)
                })
                .count()
        };
        assert_eq!(within(0, 60), 5, "the first round keeps its 60 s");
        // Rounds of 10 s from 60 s on: four whole rounds by 100 s.
        assert_eq!(within(60, 100), 20, "{calls:?}");
    }

    struct IcmpProberCheck;

    impl IcmpProberCheck {
        async fn allowed() -> bool {
            blackout_probe::icmp::IcmpProber::new(&ProbeSettings::default())
                .open(true)
                .await
                .is_ok()
        }
    }
}
