//! `blackout catalog discover`: a rate-limited ICMP sweep of a catalog's IPv4 blocks that
//! finds each block's responsive addresses (Trinocular's ever-active set E(b)) and their
//! availability A(b), and writes them back as single-block entries with `hosts`.
//!
//! The probe crate's echo engine (the one the agent uses) sends every probe; probes are
//! paced to `rate_pps` and interleaved across blocks (address offset outer, block inner),
//! so no single block sees a burst. Availability is answered / sent over `sweeps` full
//! sweeps of the kept hosts. Only echo replies count: the engine reports an ICMP error
//! quoting our request as `Unreachable`, not as an answer.
//!
//! A country takes hours to days at a polite rate, so a run shows its progress (a bar on
//! a terminal, a log line a minute otherwise) and can be resumed: every
//! `checkpoint_every` it lets the probes in flight finish and writes how many probes are
//! done and what answered to a checkpoint file; a new run with the same input and
//! settings starts where that one stopped. The order of the probes is fixed by the
//! input, so "the first N probes" names exactly what was done.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv4Subnets};
use tokio::sync::Semaphore;

use super::{BuildError, write};
use blackout_model::catalog::{IPV4_BLOCK_LEN, IcmpEntry};
use blackout_probe::DEFAULT_ICMP_RECV_BUFFER_BYTES;
use blackout_probe::echo::{EchoEngine, EchoResult, EngineConfig};

/// Default probes per second: polite for a sweep of a country from one machine.
pub const DEFAULT_RATE_PPS: u32 = 100;
/// Default hosts kept per block: enough for Trinocular's adaptive probes (it sends up
/// to ~15 extra per round) without bloating the catalog.
pub const DEFAULT_MAX_PER_BLOCK: usize = 16;
pub const DEFAULT_SWEEPS: u32 = 3;
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Default time between checkpoints: each costs one timeout of idle sending.
pub const DEFAULT_CHECKPOINT_SECS: u64 = 60;
/// Longest time between progress log lines when stderr is not a terminal (shorter when
/// checkpoints are more frequent).
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct DiscoverSettings {
    pub rate_pps: u32,
    pub max_per_block: usize,
    pub sweeps: u32,
    pub timeout: Duration,
    pub keep_silent: bool,
    /// Where the run keeps its progress (removed when it completes); `None`: not kept.
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_every: Duration,
    /// Ignore an existing checkpoint and start over.
    pub fresh: bool,
}

impl DiscoverSettings {
    /// The defaults of the command line, with no checkpoint.
    pub fn new() -> Self {
        DiscoverSettings {
            rate_pps: DEFAULT_RATE_PPS,
            max_per_block: DEFAULT_MAX_PER_BLOCK,
            sweeps: DEFAULT_SWEEPS,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            keep_silent: false,
            checkpoint: None,
            checkpoint_every: Duration::from_secs(DEFAULT_CHECKPOINT_SECS),
            fresh: false,
        }
    }
}

impl Default for DiscoverSettings {
    fn default() -> Self {
        Self::new()
    }
}

/// A run's progress on disk. Probes are numbered in sending order; the first `done` have
/// all been answered or timed out.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    /// What the numbering depends on: a checkpoint of another input or other sweeps is
    /// refused, not misapplied.
    input_sha256: String,
    sweeps: u32,
    blocks: usize,
    total: u64,
    done: u64,
    /// (IPv4 address, echo replies) of every address that answered so far.
    answers: Vec<(u32, u32)>,
}

impl Checkpoint {
    fn load(path: &Path) -> Result<Option<Checkpoint>, BuildError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                BuildError::Usage(format!(
                    "{}: not a discover checkpoint ({e}); delete it or pass --fresh",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BuildError::io(path, e)),
        }
    }

    /// Atomically: a crash leaves the old checkpoint or the new one.
    fn store(&self, path: &Path) -> Result<(), BuildError> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| BuildError::Icmp(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(|e| BuildError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| BuildError::io(path, e))
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoverStats {
    pub blocks: usize,
    pub probes_sent: u64,
    pub responsive_blocks: usize,
    pub hosts: usize,
}

/// One block to sweep and the entry it came from.
struct Block {
    net: Ipv4Net,
    entry: usize,
}

/// Sweeps `input`'s IPv4 ICMP blocks and writes the catalog with their hosts to `output`.
/// IPv6 entries are copied unchanged (a /48 cannot be swept).
pub async fn discover_catalog(
    input: &Path,
    output: &Path,
    s: &DiscoverSettings,
) -> Result<DiscoverStats, BuildError> {
    if s.rate_pps == 0 || s.sweeps == 0 || s.max_per_block == 0 {
        return Err(BuildError::Usage(
            "--rate, --sweeps and --max-per-block must be at least 1".into(),
        ));
    }
    let mut files = blackout_model::catalog::load_path(input)?;
    if files.len() != 1 {
        return Err(BuildError::Usage(format!(
            "{}: discover works on one catalog file, found {}",
            input.display(),
            files.len()
        )));
    }
    let mut file = files.remove(0);
    let text = std::fs::read_to_string(input).map_err(|e| BuildError::io(input, e))?;

    let mut blocks = Vec::new();
    for (i, e) in file.icmp.iter().enumerate() {
        if let IpNet::V4(net) = e.prefix {
            let len = e.block_len.unwrap_or(IPV4_BLOCK_LEN);
            if let Ok(subnets) = net.subnets(len) {
                blocks.extend(subnets.map(|b| Block { net: b, entry: i }));
            }
        }
    }
    let total: u64 = blocks
        .iter()
        .map(|b| 1u64 << (32 - b.net.prefix_len()))
        .sum::<u64>()
        * u64::from(s.sweeps);
    let start = Checkpoint {
        input_sha256: {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        },
        sweeps: s.sweeps,
        blocks: blocks.len(),
        total,
        done: 0,
        answers: Vec::new(),
    };
    let start = match (&s.checkpoint, s.fresh) {
        (Some(path), false) => match Checkpoint::load(path)? {
            Some(c)
                if (&c.input_sha256, c.sweeps, c.blocks, c.total)
                    == (&start.input_sha256, start.sweeps, start.blocks, start.total) =>
            {
                tracing::info!(
                    checkpoint = %path.display(),
                    done = c.done,
                    total = c.total,
                    answered = c.answers.len(),
                    "resuming the discovery where the last run stopped"
                );
                c
            }
            Some(_) => {
                return Err(BuildError::Usage(format!(
                    "{}: checkpoint of another discovery (other input file or --sweeps); \
                     delete it or pass --fresh",
                    path.display()
                )));
            }
            None => start,
        },
        _ => start,
    };
    let answers = sweep(&blocks, s, start).await?;
    if let Some(path) = &s.checkpoint {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BuildError::io(path, e)),
        }
    }

    let mut stats = DiscoverStats {
        blocks: blocks.len(),
        probes_sent: blocks
            .iter()
            .map(|b| 1u64 << (32 - b.net.prefix_len()))
            .sum::<u64>()
            * u64::from(s.sweeps),
        ..Default::default()
    };
    let mut out: Vec<IcmpEntry> = file
        .icmp
        .iter()
        .filter(|e| !e.prefix.addr().is_ipv4())
        .cloned()
        .collect();
    let mut silent: Vec<(usize, Ipv4Net)> = Vec::new();
    for b in &blocks {
        let orig = &file.icmp[b.entry];
        let mut hosts: Vec<(u32, u32)> = (u32::from(b.net.network())
            ..=u32::from(b.net.broadcast()))
            .filter_map(|a| answers.get(&a).map(|n| (a, *n)))
            .collect();
        if hosts.is_empty() {
            silent.push((b.entry, b.net));
            continue;
        }
        hosts.sort_by_key(|&(a, n)| (std::cmp::Reverse(n), a));
        hosts.truncate(s.max_per_block);
        let answered: u32 = hosts.iter().map(|h| h.1).sum();
        let avail = f64::from(answered) / (f64::from(s.sweeps) * hosts.len() as f64);
        hosts.sort_unstable();
        stats.responsive_blocks += 1;
        stats.hosts += hosts.len();
        out.push(IcmpEntry {
            id: single_id(orig, b.net),
            prefix: IpNet::V4(b.net),
            asn: orig.asn,
            region: orig.region.clone(),
            hosts: hosts
                .iter()
                .map(|h| IpAddr::V4(Ipv4Addr::from(h.0)))
                .collect(),
            availability: Some((avail * 1000.0).round() / 1000.0),
            block_len: orig.block_len,
        });
    }
    if s.keep_silent {
        out.extend(regroup_silent(&file.icmp, &silent));
    }
    out.sort_by_key(|a| (a.asn, a.prefix));
    file.icmp = out;

    let mut header: Vec<String> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim_start().to_string())
        .collect();
    header.push(format!(
        "Discovered by `blackout catalog discover` ({} sweeps): {} of {} IPv4 blocks answered, {} hosts{}.",
        s.sweeps,
        stats.responsive_blocks,
        stats.blocks,
        stats.hosts,
        if s.keep_silent {
            ""
        } else {
            "; silent blocks dropped"
        }
    ));
    let rendered = write::render_catalog(&file, &header);
    blackout_model::catalog::parse(&rendered, &output.display().to_string()).map_err(|source| {
        BuildError::Generated {
            country: file.country.clone(),
            source,
        }
    })?;
    std::fs::write(output, rendered).map_err(|e| BuildError::io(output, e))?;
    Ok(stats)
}

/// A block cut out of an entry keeps the id it had when the entry expanded.
fn single_id(orig: &IcmpEntry, block: Ipv4Net) -> Option<String> {
    let whole = orig.prefix == IpNet::V4(block);
    orig.id.as_ref().map(|base| {
        if whole {
            base.clone()
        } else {
            format!("{base}/{block}")
        }
    })
}

/// Silent blocks back into the fewest prefixes per original entry.
fn regroup_silent(entries: &[IcmpEntry], silent: &[(usize, Ipv4Net)]) -> Vec<IcmpEntry> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < silent.len() {
        let (entry, first) = silent[i];
        let orig = &entries[entry];
        let mut last = first;
        while i + 1 < silent.len()
            && silent[i + 1].0 == entry
            && u64::from(u32::from(silent[i + 1].1.network()))
                == u64::from(u32::from(last.broadcast())) + 1
        {
            last = silent[i + 1].1;
            i += 1;
        }
        i += 1;
        // The fewest aligned prefixes covering the run of silent blocks.
        for net in Ipv4Subnets::new(first.network(), last.broadcast(), 0) {
            let id = if net.prefix_len() == first.prefix_len() {
                single_id(orig, net)
            } else {
                orig.id.clone()
            };
            out.push(IcmpEntry {
                id,
                prefix: IpNet::V4(net),
                hosts: Vec::new(),
                availability: None,
                ..orig.clone()
            });
        }
    }
    out
}

/// How far a sweep is, on a terminal as a bar, otherwise as a log line a minute.
struct Progress {
    bar: indicatif::ProgressBar,
    log: bool,
    log_every: Duration,
    last_log: Instant,
    started: Instant,
    done_at_start: u64,
}

impl Progress {
    fn new(total: u64, done: u64, log_every: Duration) -> Self {
        let log = !std::io::stderr().is_terminal();
        let bar = if log {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{wide_bar} {pos}/{len} probes  {per_sec}  ETA {eta}  {msg}",
            ) {
                b.set_style(style);
            }
            b
        };
        bar.set_position(done);
        bar.reset_eta();
        Progress {
            bar,
            log,
            log_every,
            last_log: Instant::now(),
            started: Instant::now(),
            done_at_start: done,
        }
    }

    fn update(&mut self, sent: u64, total: u64, answered: usize) {
        self.bar.set_position(sent);
        if !self.log {
            self.bar
                .set_message(format!("{answered} addresses answered"));
            return;
        }
        if self.last_log.elapsed() < self.log_every {
            return;
        }
        self.last_log = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = (sent - self.done_at_start) as f64 / secs.max(1e-3);
        tracing::info!(
            sent,
            total,
            percent = (sent as f64 * 1000.0 / total.max(1) as f64).round() / 10.0,
            probes_per_s = rate.round(),
            eta_secs = if rate > 0.0 {
                ((total - sent) as f64 / rate).round()
            } else {
                f64::NAN
            },
            answered,
            "discovery progress"
        );
    }
}

/// Sends `sweeps` echo requests to every address of every block, from probe
/// `from.done` on (the ones before are in `from.answers`); returns, per address that
/// answered at least once, how many echo replies it sent.
async fn sweep(
    blocks: &[Block],
    s: &DiscoverSettings,
    from: Checkpoint,
) -> Result<HashMap<u32, u32>, BuildError> {
    let config = EngineConfig {
        timeout: s.timeout,
        recv_buffer: DEFAULT_ICMP_RECV_BUFFER_BYTES,
    };
    let engine = Arc::new(EchoEngine::open(true, &config).map_err(|e| {
        BuildError::Icmp(format!(
            "cannot open an ICMP socket ({e}): needs CAP_NET_RAW or net.ipv4.ping_group_range covering this group"
        ))
    })?);
    let answers: Arc<Mutex<HashMap<u32, u32>>> =
        Arc::new(Mutex::new(from.answers.iter().copied().collect()));
    // Probes in flight are bounded by what the rate can produce within one timeout.
    let in_flight = ((f64::from(s.rate_pps) * s.timeout.as_secs_f64()).ceil() as usize + 16)
        .min(Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(in_flight));
    let period = Duration::from_secs_f64(1.0 / f64::from(s.rate_pps));
    let widest = blocks
        .iter()
        .map(|b| 1u64 << (32 - b.net.prefix_len()))
        .max()
        .unwrap_or(0);
    let mut progress = Progress::new(from.total, from.done, s.checkpoint_every.min(LOG_EVERY));
    let mut start = tokio::time::Instant::now();
    let mut paced: u64 = 0;
    let mut last_checkpoint = Instant::now();
    // Probe number in the fixed order; the first `from.done` were sent by an earlier run.
    let mut index: u64 = 0;
    for _ in 0..s.sweeps {
        for offset in 0..widest {
            for b in blocks {
                let size = 1u64 << (32 - b.net.prefix_len());
                if offset >= size {
                    continue;
                }
                index += 1;
                if index <= from.done {
                    continue;
                }
                if let Some(path) = &s.checkpoint
                    && last_checkpoint.elapsed() >= s.checkpoint_every
                {
                    // Let every probe sent so far finish, so "the first index - 1 are
                    // done" is true, then restart the pacing clock.
                    let all = permits
                        .acquire_many(in_flight as u32)
                        .await
                        .map_err(|e| BuildError::Icmp(e.to_string()))?;
                    let mut answered: Vec<(u32, u32)> = answers
                        .lock()
                        .map(|m| m.iter().map(|(a, n)| (*a, *n)).collect())
                        .unwrap_or_default();
                    answered.sort_unstable();
                    Checkpoint {
                        done: index - 1,
                        answers: answered,
                        ..from.clone()
                    }
                    .store(path)?;
                    drop(all);
                    last_checkpoint = Instant::now();
                    start = tokio::time::Instant::now();
                    paced = 0;
                }
                let addr = u32::from(b.net.network()) + offset as u32;
                let due = start + period.mul_f64(paced as f64);
                paced += 1;
                tokio::time::sleep_until(due).await;
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| BuildError::Icmp(e.to_string()))?;
                let engine = engine.clone();
                let found = answers.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let ip = IpAddr::V4(Ipv4Addr::from(addr));
                    match engine.echo(ip).await {
                        EchoResult::Reply(_) => {
                            if let Ok(mut m) = found.lock() {
                                *m.entry(addr).or_default() += 1;
                            }
                        }
                        other => tracing::trace!(%ip, result = ?other, "no echo reply"),
                    }
                });
                let answered = answers.lock().map(|m| m.len()).unwrap_or(0);
                progress.update(index, from.total, answered);
            }
        }
    }
    // Wait for the last probes to answer or time out.
    let _all = permits
        .acquire_many(in_flight as u32)
        .await
        .map_err(|e| BuildError::Icmp(e.to_string()))?;
    progress.bar.finish_and_clear();
    let m = answers.lock().map(|m| m.clone()).unwrap_or_default();
    Ok(m)
}
