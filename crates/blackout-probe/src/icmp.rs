//! ICMP echo probes and Trinocular-style adaptive block probing.
//!
//! One [`EchoEngine`] (one socket and its receiver thread) per address family, opened on
//! first use: DGRAM ("unprivileged ping") first, RAW as fallback. Agents without ICMP
//! rights still probe DNS, HTTP and TCP; only an ICMP target gets
//! [`ProbeError::IcmpPermission`].
//!
//! A block target (a /24, or an IPv6 /48) is judged by a belief that it is up, updated by
//! Bayes' rule after every echo (Quan, Heidemann, Pradkin, SIGCOMM 2013):
//! P(reply | up) = A (the availability of the block's addresses), P(reply | down) =
//! [`P_REPLY_DOWN`]. Each call sends one echo; while the belief is uncertain, or the last
//! answer contradicts the current verdict (a lost reply from an "up" block), it sends more,
//! to other addresses of the block, at most [`ProbeSettings::icmp_max_extra_probes`] more.
//! A token bucket per block keeps every block under
//! [`ProbeSettings::icmp_max_probes_per_block_hour`] probes in any hour; follow-ups stop
//! while one token is left, so the next round's echo is never skipped.
//!
//! Without catalog hosts the prober learns the block's answering addresses by walking it,
//! and then probes those. Tuned on the probe-level simulation (`blackout probe-sim`,
//! docs/quality.md): a block never heard from is uncertain, not down; a round that found
//! the block up spends one more echo on an unseen address while fewer than 16 are known; a
//! learned address silent while its block is up is forgotten (renumbered, or mostly off);
//! a miss is evidence only from an address not yet missed since the block last answered
//! (echoes to one sleeping host are one piece of evidence, not many): a known address,
//! weighed by the learned availability, or a walked never-seen one, weighed by the walk's
//! hit rate learned from the discovery echoes of up rounds; so a sparse block known through
//! one sleeping host is uncertain, and a block whose addresses all answer goes down within
//! a round once its known addresses and a few walked ones are silent; once every known
//! address has missed, follow-ups walk the block and each round's first echo alternates
//! between the known addresses and the walk, to find moved hosts; the
//! learned availability comes from the first echo to a learned address of each up round
//! (replies/probes is biased: a round stops at the first answer).
//!
//! [`BlockRound`] is one round as a step machine with the time passed in: the prober
//! drives it with real echoes, the simulator with simulated ones.
//!
//! Outcome mapping: `ok` is `verdict == Up`. A `Down` or `Uncertain` block is a failure in
//! phase `icmp_echo` labelled with the failure of the last unanswered probe (`timeout` when
//! echoes simply went unanswered, `unreachable` when a router said so); the
//! [`BlockReport`] carries the verdict, so consumers can tell "down" from "not sure".

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ipnet::IpNet;
use tokio::sync::OnceCell;

use super::echo::{EchoEngine, EngineConfig};
use super::{Outcome, ProbeError, ProbeSettings, Prober};
use blackout_model::catalog::{Target, TargetKind};
use blackout_model::observation::{BlockReport, BlockVerdict, Failure, Phase, Signal};

/// P(reply | block down): a reply from a down block can only be a stray or spoofed
/// packet; Trinocular's value.
pub const P_REPLY_DOWN: f64 = 0.99 / 256.0;
/// Beliefs are clamped so that one surprising probe can always move them.
pub const BELIEF_MIN: f64 = 0.01;
pub const BELIEF_MAX: f64 = 0.99;
/// Above this the block is up, below [`DOWN_BELOW`] down, in between uncertain.
pub const UP_ABOVE: f64 = 0.9;
pub const DOWN_BELOW: f64 = 0.1;
/// A repeated miss (an address already silent since the block last answered) may make a
/// block uncertain, never lower its belief below this: it is not new evidence.
const REPEAT_FLOOR: f64 = 0.5;
/// Availability assumed for a block nothing is known about yet.
const PRIOR_AVAILABILITY: f32 = 0.5;
/// Availability is clamped so a miss is never proof of death nor meaningless.
const AVAILABILITY_MIN: f64 = 0.05;
const AVAILABILITY_MAX: f64 = 0.99;
/// Addresses of a block the walk and the learned set consider: the whole of a /24; the
/// first 256 addresses of a larger block (an IPv6 /48 cannot be walked anyway).
const BLOCK_SLOTS: u32 = 256;
/// An odd stride visits every slot of a power-of-two range once, spread over the block,
/// so consecutive probes do not hit neighbouring (often co-located) hosts.
const WALK_STRIDE: u32 = 167;
/// Below this many learned addresses, a round that found the block up spends one more echo
/// (when the budget allows) on an address not yet seen: tracking a block through one host
/// makes that host's sleep look like the block's death.
const DISCOVER_BELOW: u32 = 16;
/// What a never-seen address of a block is assumed to answer with before the block's walk
/// has been sampled (the value walked addresses had before it was learned), and how many
/// echoes that assumption weighs against the learned hit rate.
const WALK_PRIOR: f64 = 0.1;
const WALK_PRIOR_WEIGHT: f64 = 2.0;
/// Weight of one round in the learned availability.
const AVAILABILITY_GAIN: f32 = 0.1;
const SHARDS: usize = 64;

/// The state kept per block between rounds. Compact on purpose: the sustained target is
/// the whole IPv4 /24 space (4.2M blocks) in well under 256 bytes each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockState {
    /// Belief that the block is up, carried from round to round.
    pub belief: f32,
    /// Learned availability of the probed addresses (from rounds that ended up).
    pub availability: f32,
    /// Politeness token bucket: probes this block may still receive.
    pub tokens: f32,
    /// When `tokens` was last refilled, seconds since the prober started.
    pub refilled_at_secs: u32,
    /// Position in the list of hosts, or in the walk, for the next probe.
    pub cursor: u16,
    /// Echoes to known addresses (catalog hosts or learned ones) unanswered since the
    /// block last answered. Known addresses are visited in turn, so while this is below
    /// their number each miss came from an address not yet missed: independent evidence.
    pub misses: u16,
    /// Position in the walk over the block (its own, so that a round's walked echoes go
    /// to distinct addresses).
    pub walk: u8,
    /// Discovery echoes to never-seen addresses of the block while it was up, and how many
    /// answered (both halved when `walk_tries` is full): the walk's hit rate, see
    /// [`BlockState::walk_density`].
    pub walk_tries: u8,
    pub walk_hits: u8,
    /// Slots (offsets 0..256 in the block) that have answered: the ever-active set learned
    /// when the catalog gives no hosts.
    pub seen: [u64; 4],
}

impl BlockState {
    fn new(capacity: f32) -> Self {
        BlockState {
            belief: 0.5,
            availability: PRIOR_AVAILABILITY,
            tokens: capacity,
            refilled_at_secs: 0,
            cursor: 0,
            misses: 0,
            walk: 0,
            walk_tries: 0,
            walk_hits: 0,
            seen: [0; 4],
        }
    }

    fn mark_seen(&mut self, slot: u32) {
        if slot < BLOCK_SLOTS {
            self.seen[(slot / 64) as usize] |= 1 << (slot % 64);
        }
    }

    fn seen_slots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..BLOCK_SLOTS).filter(|s| self.seen[(s / 64) as usize] & (1 << (s % 64)) != 0)
    }

    fn is_seen(&self, slot: u32) -> bool {
        slot < BLOCK_SLOTS && self.seen[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn seen_count(&self) -> u32 {
        self.seen.iter().map(|w| w.count_ones()).sum()
    }

    /// P(a never-seen address of the block answers | the block is up), learned from the
    /// discovery echoes of up rounds, with a prior of [`WALK_PRIOR`] worth
    /// [`WALK_PRIOR_WEIGHT`] echoes: near 0 for a sparse block (its walked misses say
    /// almost nothing), near its availability for a block whose every address answers.
    pub fn walk_density(&self) -> f64 {
        (self.walk_hits as f64 + WALK_PRIOR * WALK_PRIOR_WEIGHT)
            / (self.walk_tries as f64 + WALK_PRIOR_WEIGHT)
    }

    fn learn_walk(&mut self, answered: bool) {
        if self.walk_tries == u8::MAX {
            self.walk_tries /= 2;
            self.walk_hits /= 2;
        }
        self.walk_tries += 1;
        self.walk_hits += answered as u8;
    }
}

/// Bytes of memory one tracked block costs in the prober's map (key + state), without the
/// hash table's own overhead (about one control byte per slot and the load factor).
pub const BLOCK_ENTRY_BYTES: usize = std::mem::size_of::<(IpNet, BlockState)>();

// The budget is 256 bytes per block in all; keep the entry well inside it (checked at
// compile time: 80 bytes on x86_64).
const _: () = assert!(BLOCK_ENTRY_BYTES <= 96);

/// Bayes' rule for one probe.
pub fn update_belief(belief: f64, availability: f64, replied: bool) -> f64 {
    let a = availability.clamp(AVAILABILITY_MIN, AVAILABILITY_MAX);
    let (p_up, p_down) = if replied {
        (a, P_REPLY_DOWN)
    } else {
        (1.0 - a, 1.0 - P_REPLY_DOWN)
    };
    let num = p_up * belief;
    (num / (num + p_down * (1.0 - belief))).clamp(BELIEF_MIN, BELIEF_MAX)
}

pub fn verdict(belief: f64) -> BlockVerdict {
    if belief > UP_ABOVE {
        BlockVerdict::Up
    } else if belief < DOWN_BELOW {
        BlockVerdict::Down
    } else {
        BlockVerdict::Uncertain
    }
}

/// Probes ICMP targets: plain echoes, and adaptive block rounds.
pub struct IcmpProber {
    timeout: Duration,
    policy: RoundPolicy,
    recv_buffer: usize,
    v4: OnceCell<Result<Arc<EchoEngine>, String>>,
    v6: OnceCell<Result<Arc<EchoEngine>, String>>,
    blocks: Vec<Mutex<HashMap<IpNet, BlockState>>>,
    epoch: Instant,
}

impl std::fmt::Debug for IcmpProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpProber")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl IcmpProber {
    /// Opens nothing yet: sockets are opened on the first probe of each family.
    pub fn new(settings: &ProbeSettings) -> Self {
        IcmpProber {
            timeout: settings.timeout,
            policy: RoundPolicy::new(settings),
            recv_buffer: settings.icmp_recv_buffer_bytes,
            v4: OnceCell::new(),
            v6: OnceCell::new(),
            blocks: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            epoch: Instant::now(),
        }
    }

    async fn family(&self, v4: bool) -> Result<&Arc<EchoEngine>, ProbeError> {
        let cell = if v4 { &self.v4 } else { &self.v6 };
        let config = EngineConfig {
            timeout: self.timeout,
            recv_buffer: self.recv_buffer,
        };
        let fam = cell
            .get_or_init(|| async move { EchoEngine::open(v4, &config).map(Arc::new) })
            .await;
        fam.as_ref()
            .map_err(|reason| ProbeError::IcmpPermission(reason.clone()))
    }

    /// Opens the socket of a family now, to fail early (e.g. at agent start) rather than
    /// on the first probe. Returns "dgram" or "raw".
    pub async fn open(&self, v4: bool) -> Result<&'static str, ProbeError> {
        Ok(self.family(v4).await?.kind().as_str())
    }

    /// The echo engine of a family (opened if need be), for callers that send many echoes
    /// at once ([`EchoEngine::burst`]).
    pub async fn engine(&self, v4: bool) -> Result<Arc<EchoEngine>, ProbeError> {
        Ok(self.family(v4).await?.clone())
    }

    /// One echo request to `addr`; ok only for an echo reply. `Err` only when no ICMP
    /// socket can be opened.
    pub async fn echo(&self, addr: IpAddr) -> Result<Outcome, ProbeError> {
        let engine = self.family(addr.is_ipv4()).await?;
        Ok(engine.echo(addr).await.outcome())
    }

    fn shard(&self, block: &IpNet) -> &Mutex<HashMap<IpNet, BlockState>> {
        let bits: u64 = match block.addr() {
            IpAddr::V4(a) => u32::from(a) as u64,
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v >> 64) as u64 ^ v as u64
            }
        };
        // Fibonacci hashing: neighbouring blocks land in different shards.
        let x = (bits ^ block.prefix_len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.blocks[(x >> 58) as usize % SHARDS]
    }

    /// Number of blocks with state.
    pub fn tracked_blocks(&self) -> usize {
        self.blocks
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// The state of a block, if it has been probed.
    pub fn block_state(&self, block: &IpNet) -> Option<BlockState> {
        let shard = self.shard(block).lock().unwrap_or_else(|p| p.into_inner());
        shard.get(block).copied()
    }

    /// The state of a block nothing is known about yet.
    pub fn new_block_state(&self) -> BlockState {
        self.policy
            .new_block_state(self.epoch.elapsed().as_secs() as u32)
    }

    /// One adaptive round for a block: see the module docs. The block's state is kept in
    /// the prober.
    pub async fn probe_block(
        &self,
        id: &str,
        block: &IpNet,
        hosts: &[IpAddr],
        availability: Option<f64>,
    ) -> Result<Outcome, ProbeError> {
        let mut st = {
            let mut shard = self.shard(block).lock().unwrap_or_else(|p| p.into_inner());
            *shard
                .entry(*block)
                .or_insert_with(|| self.new_block_state())
        };
        let out = self
            .probe_block_with(&mut st, &id, block, hosts, availability)
            .await;
        if out.is_ok() {
            let mut shard = self.shard(block).lock().unwrap_or_else(|p| p.into_inner());
            shard.insert(*block, st);
        }
        out
    }

    /// One adaptive round for a block whose state the caller keeps (the agent keeps the
    /// state of millions of blocks in a `Vec`, cheaper than the prober's map). `id` is
    /// written only into a politeness error.
    pub async fn probe_block_with(
        &self,
        st: &mut BlockState,
        id: &(dyn std::fmt::Display + Sync),
        block: &IpNet,
        hosts: &[IpAddr],
        availability: Option<f64>,
    ) -> Result<Outcome, ProbeError> {
        let now_secs = self.epoch.elapsed().as_secs() as u32;
        let Some(mut round) =
            BlockRound::start(st, block, hosts, availability, now_secs, &self.policy)
        else {
            return Err(ProbeError::PolitenessBudget { id: id.to_string() });
        };
        while let Some(addr) = round.next_address() {
            let out = self.echo(addr).await?;
            round.record(&out);
        }
        Ok(round.finish())
    }
}

/// The limits of one adaptive block round: the politeness bucket and the extra probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundPolicy {
    /// Politeness bucket: burst capacity and refill per hour (see
    /// [`crate::politeness_bucket`]).
    pub capacity: f32,
    pub refill_per_hour: f32,
    /// Adaptive echoes one round may add to its first one.
    pub max_extra: u32,
}

impl RoundPolicy {
    pub fn new(settings: &ProbeSettings) -> Self {
        let (capacity, refill_per_hour) =
            crate::politeness_bucket(settings.icmp_max_probes_per_block_hour, settings.icmp_round);
        RoundPolicy {
            capacity,
            refill_per_hour,
            max_extra: settings.icmp_max_extra_probes,
        }
    }

    /// The state of a block nothing is known about yet, first seen at `now_secs`.
    pub fn new_block_state(&self, now_secs: u32) -> BlockState {
        BlockState {
            refilled_at_secs: now_secs,
            ..BlockState::new(self.capacity)
        }
    }
}

/// One adaptive round on a block as a step machine, free of sockets and clocks: the caller
/// asks for the next address, sends the echo its own way and records the outcome, until
/// there is no next address; then [`BlockRound::finish`] gives the outcome. The prober
/// drives it with real echoes and real time, the probe-level simulator with simulated ones:
/// one code path for both.
#[derive(Debug)]
pub struct BlockRound<'a> {
    st: &'a mut BlockState,
    block: &'a IpNet,
    hosts: &'a [IpAddr],
    max_extra: u32,
    /// Availability the belief is updated with this round.
    a: f64,
    belief: f64,
    probes: u32,
    replies: u32,
    first_rtt: Option<Duration>,
    last_failure: Failure,
    /// The address (and its slot) handed out and not yet recorded.
    pending: Option<(IpAddr, u32)>,
    done: bool,
    /// The next probe looks for a new address; its miss says nothing of the block.
    discover: bool,
    discovered: bool,
    /// Whether the first echo to a learned address (or a catalog host) was answered: the
    /// one sample of availability the stopping rule does not bias (a round stops at the
    /// first answer, so replies/probes over a round overstates it).
    first_known: Option<bool>,
    /// The last learned address that did not answer this round.
    missed: Option<u32>,
}

impl<'a> BlockRound<'a> {
    /// Refills the block's politeness bucket at `now_secs` (seconds on the caller's clock,
    /// the one `refilled_at_secs` counts in) and starts a round; `None` when the budget is
    /// spent and the block is skipped this round.
    pub fn start(
        st: &'a mut BlockState,
        block: &'a IpNet,
        hosts: &'a [IpAddr],
        availability: Option<f64>,
        now_secs: u32,
        policy: &RoundPolicy,
    ) -> Option<Self> {
        // Burst plus refill is the hourly limit: no sliding hour can see more.
        let rate_per_sec = policy.refill_per_hour / 3600.0;
        let elapsed = now_secs.saturating_sub(st.refilled_at_secs) as f32;
        st.tokens = (st.tokens + elapsed * rate_per_sec).min(policy.capacity);
        st.refilled_at_secs = now_secs;
        if st.tokens < 1.0 {
            return None;
        }
        let learned = st.seen_count() > 0;
        let a = availability.unwrap_or(if hosts.is_empty() && !learned {
            // Walking unknown addresses: a random address of a live block rarely answers.
            (st.availability as f64).min(0.1)
        } else {
            st.availability as f64
        });
        let belief = st.belief as f64;
        Some(BlockRound {
            st,
            block,
            hosts,
            max_extra: policy.max_extra,
            a,
            belief,
            probes: 0,
            replies: 0,
            first_rtt: None,
            last_failure: Failure::Timeout,
            pending: None,
            done: false,
            discover: false,
            discovered: false,
            first_known: None,
            missed: None,
        })
    }

    /// The address to send the next echo to, or `None` when the round is over. Spends one
    /// token of the block's budget; the echo's outcome must be recorded before asking again.
    pub fn next_address(&mut self) -> Option<IpAddr> {
        if self.done {
            return None;
        }
        // Known addresses first: they are the likeliest to answer. Once every one has
        // missed since the block last answered, another echo to one of them says little
        // (the same host asleep, or renumbered away): the round's follow-ups walk the
        // block for other addresses, and its first echo alternates across rounds between
        // the known addresses and the walk, to find moved hosts.
        let exhausted = self.hosts.is_empty() && self.known_missed();
        let walk = self.discover || (exhausted && (self.probes > 0 || self.st.cursor % 2 == 1));
        let (addr, slot) = if walk {
            walk_address(self.block, self.st)
        } else {
            next_address(self.block, self.hosts, self.st)
        };
        self.st.tokens -= 1.0;
        self.probes += 1;
        self.pending = Some((addr, slot));
        Some(addr)
    }

    /// The outcome of the echo to the address last handed out.
    pub fn record(&mut self, out: &Outcome) {
        let (addr, slot) = self
            .pending
            .take()
            .unwrap_or((self.block.network(), u32::MAX));
        let known = !self.hosts.is_empty() || self.st.is_seen(slot);
        if known && self.first_known.is_none() {
            self.first_known = Some(out.ok);
        }
        let discovery = std::mem::take(&mut self.discover);
        // Bayes' rule assumes independent echoes; echoes to one host are not (a host off
        // for an hour misses every echo of that hour). In a block whose addresses were
        // learned, a miss is evidence only from an address not yet missed since the block
        // last answered: a known address missed for the first time, with P(reply | up) =
        // A, or a walked never-seen address (the walk never repeats one), with P(reply |
        // up) = the walk's learned hit rate. A repeated miss lowers the belief to
        // [`REPEAT_FLOOR`] at most (unsure, and as far from down as from up: at the down
        // threshold, any later walked miss however weak would tip it over). So a block is down only when the probability that an up
        // block gives all its independent misses is small against the prior (Trinocular's
        // bound, with its independence made true): a sparse block known through one
        // sleeping host stays uncertain (its walked misses weigh almost nothing), a block
        // whose every address answers goes down within the round once its known
        // addresses and a few walked ones are silent. A catalog's hosts are taken as given
        // (the block is not walked): every miss counts, as Trinocular's census addresses.
        let independent = !self.hosts.is_empty() || !known || !self.known_missed();
        if !discovery {
            let a = if known {
                self.a
            } else {
                self.st.walk_density()
            };
            let b = update_belief(self.belief, a, out.ok);
            self.belief = if out.ok || independent {
                b
            } else {
                b.max(self.belief.min(REPEAT_FLOOR))
            };
        } else if !known {
            // The block is up: whether a never-seen address answers is the walk's hit rate.
            self.st.learn_walk(out.ok);
        }
        if out.ok {
            self.st.misses = 0;
        } else if known {
            self.st.misses = self.st.misses.saturating_add(1);
        }
        let contradicted = match verdict(self.belief) {
            BlockVerdict::Up => !out.ok,
            BlockVerdict::Down => out.ok,
            BlockVerdict::Uncertain => true,
        };
        if out.ok {
            self.replies += 1;
            self.first_rtt = self.first_rtt.or(out.rtt);
            if self.hosts.is_empty() {
                self.st.mark_seen(slot);
            }
        } else {
            if let Some(f) = out.failure {
                self.last_failure = f;
            }
            if known && self.hosts.is_empty() {
                self.missed = Some(slot);
            }
        }
        tracing::trace!(block = %self.block, %addr, ok = out.ok, belief = self.belief, "icmp block probe");
        // Follow-ups stop while a token is left, so that the next round's one echo is
        // never skipped (an uncertain block used to spend its whole bucket and lose the
        // next round's verdict: 3 % of rounds in the probe-level simulation).
        if !contradicted || self.probes > self.max_extra || self.st.tokens < 2.0 {
            self.done = true;
        }

        // A round that found the block up may look for one more address, while a token
        // stays for the next round.
        if self.done
            && !discovery
            && !self.discovered
            && self.hosts.is_empty()
            && verdict(self.belief) == BlockVerdict::Up
            && self.st.seen_count() < DISCOVER_BELOW
            && self.st.tokens >= 2.0
        {
            self.done = false;
            self.discover = true;
            self.discovered = true;
        }
    }

    /// Addresses known to answer: the catalog's hosts, else the learned ones.
    fn known_count(&self) -> u32 {
        if self.hosts.is_empty() {
            self.st.seen_count()
        } else {
            self.hosts.len() as u32
        }
    }

    /// Whether every known address has missed since the block last answered.
    fn known_missed(&self) -> bool {
        self.known_count() > 0 && self.st.misses as u32 >= self.known_count()
    }

    /// Ends the round: learns the availability (from rounds that ended up), stores the
    /// belief, and gives the round's outcome with its [`BlockReport`].
    pub fn finish(self) -> Outcome {
        let belief = self.belief;
        let mut v = verdict(belief);
        if v == BlockVerdict::Down && self.hosts.is_empty() && self.st.seen_count() == 0 {
            // No address of the block has ever answered: it is not known to be up, so its
            // silence says nothing (a sparse block takes many rounds of walking to find).
            v = BlockVerdict::Uncertain;
        }
        // Learn availability only from rounds that ended up: an outage must not teach the
        // block that its hosts are unreliable.
        if v == BlockVerdict::Up
            && let Some(answered) = self.first_known
        {
            let observed = if answered { 1.0 } else { 0.0 };
            self.st.availability =
                (1.0 - AVAILABILITY_GAIN) * self.st.availability + AVAILABILITY_GAIN * observed;
        }
        // A learned address that is silent while its block is up is forgotten (renumbered,
        // or a host that is mostly off): tracking it would make its silence the block's.
        // The last one is kept; discovery learns new ones.
        if v == BlockVerdict::Up
            && let Some(slot) = self.missed
            && self.st.seen_count() > 1
        {
            self.st.seen[(slot / 64) as usize] &= !(1 << (slot % 64));
        }
        self.st.belief = belief as f32;
        let report = BlockReport {
            belief,
            verdict: v,
            probes: self.probes,
            replies: self.replies,
        };
        let mut out = if v == BlockVerdict::Up {
            Outcome::ok(self.first_rtt.unwrap_or_default())
        } else {
            Outcome::failed(Phase::IcmpEcho, self.last_failure)
        };
        if v != BlockVerdict::Up {
            out.rtt = self.first_rtt;
        }
        out.block = Some(report);
        out
    }
}

/// The next address to probe: the catalog's hosts round-robin; else the learned
/// responsive slots; else a walk over the block. Returns the address and its slot.
fn next_address(block: &IpNet, hosts: &[IpAddr], st: &mut BlockState) -> (IpAddr, u32) {
    let i = st.cursor as u32;
    st.cursor = st.cursor.wrapping_add(1);
    if !hosts.is_empty() {
        let addr = hosts[i as usize % hosts.len()];
        return (addr, u32::MAX);
    }
    let size = block_slots(block);
    let seen = st.seen_count();
    let slot = if seen > 0 {
        let k = i % seen;
        st.seen_slots().nth(k as usize).unwrap_or(0)
    } else {
        (i.wrapping_mul(WALK_STRIDE).wrapping_add(1)) % size
    };
    (slot_addr(block, slot), slot)
}

/// The next never-seen address of the walk over the block (the walk goes round all
/// slots before it repeats one, so a round's walked misses are distinct addresses).
fn walk_address(block: &IpNet, st: &mut BlockState) -> (IpAddr, u32) {
    // The cursor moves too: a round's first echo alternates between the known addresses
    // and the walk on its parity.
    st.cursor = st.cursor.wrapping_add(1);
    let size = block_slots(block);
    let mut slot = 0;
    for _ in 0..size {
        slot = (st.walk as u32 * WALK_STRIDE + 1) % size;
        st.walk = st.walk.wrapping_add(1);
        if !st.is_seen(slot) {
            break;
        }
    }
    (slot_addr(block, slot), slot)
}

fn block_slots(block: &IpNet) -> u32 {
    let host_bits = (block.max_prefix_len() - block.prefix_len()) as u32;
    if host_bits >= 8 {
        BLOCK_SLOTS
    } else {
        1 << host_bits
    }
}

fn slot_addr(block: &IpNet, slot: u32) -> IpAddr {
    match block.network() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(slot))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(slot as u128))),
    }
}

impl Prober for IcmpProber {
    fn signal(&self) -> Signal {
        Signal::Icmp
    }

    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>> {
        Box::pin(async move {
            match &target.kind {
                TargetKind::Icmp {
                    block,
                    hosts,
                    availability,
                } => {
                    self.probe_block(&target.id, block, hosts, *availability)
                        .await
                }
                _ => Err(ProbeError::WrongKind {
                    id: target.id.clone(),
                    expected: Signal::Icmp,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn belief_moves_as_trinocular_says() {
        // A reply from a block believed down makes it uncertain, a second one up.
        let b1 = update_belief(BELIEF_MIN, 0.9, true);
        assert_eq!(verdict(b1), BlockVerdict::Uncertain, "{b1}");
        let b2 = update_belief(b1, 0.9, true);
        assert_eq!(verdict(b2), BlockVerdict::Up, "{b2}");
        // From certainly up, a well-answering block needs three misses to be down.
        let mut b = BELIEF_MAX;
        let mut misses = 0;
        while verdict(b) != BlockVerdict::Down {
            b = update_belief(b, 0.9, false);
            misses += 1;
        }
        assert_eq!(misses, 3);
        // A sparse block (A = 0.2) needs many more.
        let mut b = BELIEF_MAX;
        let mut misses = 0;
        while verdict(b) != BlockVerdict::Down {
            b = update_belief(b, 0.2, false);
            misses += 1;
        }
        assert!(misses > 10, "{misses}");
        // Clamped.
        assert_eq!(update_belief(BELIEF_MAX, 0.99, true), BELIEF_MAX);
        assert_eq!(update_belief(BELIEF_MIN, 0.99, false), BELIEF_MIN);
    }

    #[test]
    fn walk_visits_every_slot_once() {
        let block: IpNet = "192.0.2.0/24".parse().unwrap();
        let mut st = BlockState::new(10.0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..256 {
            seen.insert(next_address(&block, &[], &mut st).0);
        }
        assert_eq!(seen.len(), 256);
        let small: IpNet = "192.0.2.0/30".parse().unwrap();
        let mut st = BlockState::new(10.0);
        let four: std::collections::HashSet<_> = (0..4)
            .map(|_| next_address(&small, &[], &mut st).0)
            .collect();
        assert_eq!(four.len(), 4);
    }

    #[test]
    fn learned_slots_are_probed_first() {
        let block: IpNet = "192.0.2.0/24".parse().unwrap();
        let mut st = BlockState::new(10.0);
        st.mark_seen(7);
        st.mark_seen(200);
        let addrs: Vec<_> = (0..4)
            .map(|_| next_address(&block, &[], &mut st).0)
            .collect();
        let want: Vec<IpAddr> = ["192.0.2.7", "192.0.2.200", "192.0.2.7", "192.0.2.200"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(addrs, want);
    }

    /// Runs rounds of a block whose answering slots are `live` (every echo to a live slot
    /// answered unless `miss(step)` says so), `secs` apart; returns the verdicts.
    fn rounds(
        st: &mut BlockState,
        policy: &RoundPolicy,
        live: &[u32],
        n: u32,
        from: u32,
        miss: &dyn Fn(u32) -> bool,
    ) -> Vec<BlockVerdict> {
        let block: IpNet = "192.0.2.0/24".parse().unwrap();
        let mut echoes = 0;
        (from..from + n)
            .filter_map(|k| {
                let mut round = BlockRound::start(st, &block, &[], None, k * 300, policy)?;
                while let Some(addr) = round.next_address() {
                    let slot = match addr {
                        IpAddr::V4(a) => u32::from(a) & 0xff,
                        IpAddr::V6(_) => 0,
                    };
                    echoes += 1;
                    round.record(&if live.contains(&slot) && !miss(echoes) {
                        Outcome::ok(Duration::from_millis(20))
                    } else {
                        Outcome::failed(Phase::IcmpEcho, Failure::Timeout)
                    });
                }
                round.finish().block.map(|b| b.verdict)
            })
            .collect()
    }

    fn policy_300s() -> RoundPolicy {
        RoundPolicy::new(&ProbeSettings {
            icmp_round: Some(Duration::from_secs(300)),
            ..ProbeSettings::default()
        })
    }

    #[test]
    fn a_renumbered_block_is_found_again() {
        // Learned at slot 7; the hosts moved to slot 100. The block goes down through its
        // old address, then the walk finds the new one and it is up again.
        let policy = policy_300s();
        let mut st = policy.new_block_state(0);
        st.mark_seen(7);
        st.belief = BELIEF_MIN as f32;
        let v = rounds(&mut st, &policy, &[100], 600, 0, &|_| false);
        let last = v.last().copied();
        assert_eq!(last, Some(BlockVerdict::Up), "{v:?}");
        assert!(st.is_seen(100));
    }

    #[test]
    fn availability_is_learned_without_the_stopping_rule_bias() {
        // Known hosts answer half the echoes (a fixed pseudo-random half): a round stops at
        // the first answer, so replies/probes over a round overstates the availability.
        let policy = policy_300s();
        let mut st = policy.new_block_state(0);
        for s in [
            3, 9, 30, 31, 60, 90, 120, 150, 200, 250, 251, 252, 253, 254, 255, 0,
        ] {
            st.mark_seen(s);
        }
        st.belief = BELIEF_MAX as f32;
        let v = rounds(
            &mut st,
            &policy,
            &[
                3, 9, 30, 31, 60, 90, 120, 150, 200, 250, 251, 252, 253, 254, 255, 0,
            ],
            400,
            0,
            &|e| (e.wrapping_mul(0x9E37_79B9) >> 7) % 2 == 0,
        );
        assert!(
            (0.4..0.6).contains(&st.availability),
            "learned {}",
            st.availability
        );
        assert!(
            v.iter().all(|&x| x != BlockVerdict::Down),
            "a half-answering live block is never down"
        );
    }

    #[test]
    fn a_block_up_through_one_host_learns_more() {
        let policy = policy_300s();
        let mut st = policy.new_block_state(0);
        let live: Vec<u32> = (0..256).filter(|s| s % 5 == 0).collect();
        st.mark_seen(0);
        st.belief = BELIEF_MAX as f32;
        rounds(&mut st, &policy, &live, 200, 0, &|_| false);
        assert!(st.seen_count() >= 4, "learned {}", st.seen_count());
    }

    /// Runs one round at `at_secs` against a block whose answering slots are `live`;
    /// returns the verdict and the slots probed.
    fn one_round(
        st: &mut BlockState,
        policy: &RoundPolicy,
        live: &[u32],
        at_secs: u32,
    ) -> (BlockVerdict, Vec<u32>) {
        let block: IpNet = "192.0.2.0/24".parse().unwrap();
        let mut round = BlockRound::start(st, &block, &[], None, at_secs, policy).unwrap();
        let mut probed = Vec::new();
        while let Some(addr) = round.next_address() {
            let slot = match addr {
                IpAddr::V4(a) => u32::from(a) & 0xff,
                IpAddr::V6(_) => 0,
            };
            probed.push(slot);
            round.record(&if live.contains(&slot) {
                Outcome::ok(Duration::from_millis(20))
            } else {
                Outcome::failed(Phase::IcmpEcho, Failure::Timeout)
            });
        }
        (round.finish().block.unwrap().verdict, probed)
    }

    #[test]
    fn a_block_known_through_one_sleeping_host_is_uncertain_not_down() {
        // A sparse block: one host answers. Two hours up teach the prober that its walked
        // addresses almost never answer.
        let policy = policy_300s();
        let mut st = policy.new_block_state(0);
        st.mark_seen(7);
        st.belief = BELIEF_MAX as f32;
        st.availability = 0.97;
        let up: Vec<_> = (0..24)
            .map(|k| one_round(&mut st, &policy, &[7], k * 300).0)
            .collect();
        assert!(up.iter().all(|&v| v == BlockVerdict::Up), "{up:?}");
        assert!(st.walk_density() < 0.05, "{}", st.walk_density());
        // The host is off for an hour: its silence is one piece of evidence, however many
        // echoes it gets, and the walked misses weigh almost nothing; not a dead block.
        let verdicts: Vec<_> = (24..36)
            .map(|k| one_round(&mut st, &policy, &[], k * 300).0)
            .collect();
        assert!(
            verdicts.iter().all(|&v| v != BlockVerdict::Down),
            "{verdicts:?}"
        );
        // It wakes up: up again within three rounds (a round's one echo may walk).
        let v: Vec<_> = (36..39)
            .map(|k| one_round(&mut st, &policy, &[7], k * 300).0)
            .collect();
        assert!(v.contains(&BlockVerdict::Up), "{v:?}");
    }

    #[test]
    fn a_block_whose_known_hosts_all_go_silent_is_down_in_one_round() {
        let policy = policy_300s();
        let mut st = policy.new_block_state(0);
        for s in [7, 100, 200] {
            st.mark_seen(s);
        }
        st.belief = BELIEF_MAX as f32;
        st.availability = 0.95;
        let (v, probed) = one_round(&mut st, &policy, &[], 0);
        assert_eq!(v, BlockVerdict::Down, "probed {probed:?}");
        // Each known host once before the verdict: distinct evidence.
        let mut known: Vec<_> = probed.iter().filter(|s| st.is_seen(**s)).collect();
        known.sort();
        known.dedup();
        assert_eq!(known.len(), 3, "probed {probed:?}");
        // Still down in the next rounds of the outage, up when it ends.
        assert_eq!(one_round(&mut st, &policy, &[], 300).0, BlockVerdict::Down);
        assert_eq!(one_round(&mut st, &policy, &[], 600).0, BlockVerdict::Down);
        // Up again within two rounds of the restore (a round's one echo may walk).
        let v: Vec<_> = (3..5)
            .map(|k| one_round(&mut st, &policy, &[7, 100, 200], k * 300).0)
            .collect();
        assert!(v.contains(&BlockVerdict::Up), "{v:?}");
    }

    #[test]
    fn a_dense_block_learned_in_three_rounds_goes_down_within_the_round() {
        // tests/probe_icmp.rs's dark block without the namespace: every address answers,
        // the prober learns a few in three up rounds (and that walked addresses answer
        // too), then the whole /24 goes dark. Its known addresses and a few walked ones,
        // each missed once, are enough independent evidence for one round.
        let policy = RoundPolicy::new(&ProbeSettings {
            icmp_max_probes_per_block_hour: 10_000,
            ..ProbeSettings::default()
        });
        let mut st = policy.new_block_state(0);
        let all: Vec<u32> = (0..256).collect();
        let up: Vec<_> = (0..3)
            .map(|k| one_round(&mut st, &policy, &all, k).0)
            .collect();
        assert_eq!(up[1..], [BlockVerdict::Up, BlockVerdict::Up], "{up:?}");
        let (v, probed) = one_round(&mut st, &policy, &[], 3);
        assert_eq!(v, BlockVerdict::Down, "probed {probed:?}, {st:?}");
        assert!(probed.len() <= 16, "{probed:?}");
        let mut distinct = probed.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            probed.len(),
            "each address once: {probed:?}"
        );
        // Back up as soon as it answers again.
        let back: Vec<_> = (4..6)
            .map(|k| one_round(&mut st, &policy, &all, k).0)
            .collect();
        assert!(back.contains(&BlockVerdict::Up), "{back:?}");
    }

    #[test]
    fn the_walk_learns_its_hit_rate_and_never_repeats_within_a_lap() {
        let block: IpNet = "192.0.2.0/24".parse().unwrap();
        let mut st = BlockState::new(10.0);
        assert!((st.walk_density() - WALK_PRIOR).abs() < 1e-9);
        st.mark_seen(1);
        let slots: Vec<u32> = (0..255).map(|_| walk_address(&block, &mut st).1).collect();
        let mut d = slots.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 255, "every unseen slot once");
        assert!(!slots.contains(&1), "a seen slot is not walked");
        for k in 0..1000 {
            st.learn_walk(k % 4 == 0);
        }
        assert!(
            (st.walk_density() - 0.25).abs() < 0.03,
            "{}",
            st.walk_density()
        );
    }

    fn rss_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// The sustained target: state for every /24 of IPv4 within 256 bytes per block.
    #[test]
    #[ignore = "measurement (~1 GiB of churn, seconds): cargo test --lib -- --ignored --nocapture memory"]
    fn memory_for_the_whole_ipv4_space() {
        const BLOCKS: u32 = 1 << 22; // 4,194,304 blocks: the whole IPv4 /24 space is 2^24, IODA probes 4.2M.
        let p = IcmpProber::new(&ProbeSettings::default());
        let before = rss_bytes();
        for i in 0..BLOCKS {
            let block = IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(i << 8), 24).unwrap());
            p.shard(&block)
                .lock()
                .unwrap()
                .insert(block, BlockState::new(10.0));
        }
        let per_block = (rss_bytes() - before) as f64 / BLOCKS as f64;
        eprintln!(
            "{} blocks: {per_block:.0} bytes of RSS per block (entry {BLOCK_ENTRY_BYTES} bytes)",
            p.tracked_blocks()
        );
        assert_eq!(p.tracked_blocks(), BLOCKS as usize);
        assert!(per_block <= 256.0, "{per_block}");
    }
}
