//! The ICMP echo engine: one socket per address family, a dedicated receiver thread, a
//! slab of pending echoes indexed by sequence number, timeouts swept in bulk, and a burst
//! path that hands whole batches of echoes to the kernel with `sendmmsg`.
//!
//! Why not surge-ping's send/receive path (measured, `bench/icmp-burst.sh`, 65,536
//! echoes on loopback, `strace -c -f` and `perf record -e cpu-clock -g`): every echo was
//! its own tokio future with its own timer, a waiter in a locked map, one `sendto`, and
//! surge-ping's reader task did `epoll_wait` + `recvfrom` + `getsockname` per reply, with a
//! futex wake-up for most of them: 64,631 `epoll_wait`, 44,248 `futex`, 65,536 each of
//! `sendto`, `recvfrom` and `getsockname`, and in user space `FuturesUnordered` polling
//! led the profile. Here a burst costs one `sendmmsg` per 64 echoes and one `recvmmsg`
//! per batch of replies; a single echo ([`EchoEngine::echo`]) costs one `sendto`, a slot
//! in the slab and a oneshot channel, and no timer of its own. surge-ping is not used at
//! all (`catalog discover` sweeps with this engine too): opening the socket (DGRAM first,
//! RAW fallback) is a few lines of socket2, and its packet types do not parse the quoted
//! request of an ICMP error, which we need to map errors to [`Failure::Unreachable`].
//!
//! Matching: an echo's sequence number is its slot; its payload carries a random token of
//! this engine and the slot's generation. A reply counts only when its sequence number
//! names a pending slot, its token is ours, its generation is the slot's (a late reply to
//! an earlier echo in the same slot is stale) and it comes from the address the echo went
//! to; on RAW sockets, which see every ICMP packet of the host, the identifier must be
//! ours as well. DGRAM ("unprivileged ping") sockets get only their own replies (the
//! kernel sets and demultiplexes the identifier); their ICMP errors arrive on the socket's
//! error queue (`IP_RECVERR`, `IPV6_RECVERR`), which the receiver drains when a receive
//! reports an error: the queued packet is our request, its address the destination.
//! Such an error is also reported once to the next send, whatever echo it carries: a DGRAM
//! send that fails is retried (up to [`SEND_RETRIES`] times: errors of other echoes may
//! keep arriving meanwhile), and the receiver is told to drain the queue.
//!
//! The receiver does not wake for every reply: after a batch smaller than [`RECV_BATCH`]
//! it sleeps [`COALESCE`], so that at a sustained rate (thousands of echoes per second, a
//! few in flight) replies are handled, and their tasks woken, a dozen at a time instead
//! of one context switch each. Round-trip times stay exact: each reply carries the
//! kernel's receive time (`SO_TIMESTAMPNS`), and the time it waited in the socket is
//! taken off.
//!
//! All echoes of an engine share one timeout, so deadlines come in the order echoes are
//! sent and a FIFO is a sorted deadline queue; the receiver sweeps its front after every
//! batch of replies, and at least every [`BUSY_TICK`] while echoes are pending.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, recvmsg, sendmmsg,
    setsockopt, sockopt as nix_sockopt,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::oneshot;

use super::Outcome;
use super::classify::{errno_failure, io_failure};
use blackout_model::observation::{Failure, Phase};

/// Pending echoes per engine: one slot per sequence number.
pub const SLOTS: usize = 1 << 16;
/// 56 bytes of payload: the size fping and ping send by default. It starts with the
/// engine's token (8 bytes) and the slot's generation (4 bytes).
const PAYLOAD_LEN: usize = 56;
const PACKET_LEN: usize = 8 + PAYLOAD_LEN;
/// Echoes per `sendmmsg` and replies per `recvmmsg`.
const SEND_BATCH: usize = 64;
const RECV_BATCH: usize = 64;
/// An ICMP error quotes our request (at most 20 + 64 bytes in v4, 40 + 64 in v6) behind
/// its own headers: 512 bytes hold any packet we care about.
const RECV_BUF: usize = 512;
/// How late a timeout may be reported while echoes are pending.
pub const BUSY_TICK: Duration = Duration::from_millis(5);
/// Sends of one echo on a DGRAM socket after a failure that may be another echo's queued
/// ICMP error (each failed send reports, and clears, one). With one retry, a burst to a
/// network that answers with errors could lose an echo to its neighbours' errors (seen in
/// CI: 1 of 20 echoes reported `SendFailed` instead of the router's unreachable).
const SEND_RETRIES: u32 = 8;
/// How long the receiver lets replies gather after a batch that was not full.
pub const COALESCE: Duration = Duration::from_millis(2);
/// How often an idle receiver wakes up (to notice that its engine was dropped).
const IDLE_TICK: Duration = Duration::from_millis(200);

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ICMPV6_UNREACHABLE: u8 = 1;
const ICMPV6_TIME_EXCEEDED: u8 = 3;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

/// The kind of socket an engine got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// Unprivileged ping socket (`net.ipv4.ping_group_range`).
    Dgram,
    /// Raw socket (CAP_NET_RAW).
    Raw,
}

impl SocketKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketKind::Dgram => "dgram",
            SocketKind::Raw => "raw",
        }
    }
}

/// What became of one echo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EchoResult {
    /// An echo reply, after this round-trip time.
    Reply(Duration),
    /// An ICMP error (destination unreachable, time exceeded) quoting our request.
    Unreachable,
    /// Nothing within the engine's timeout.
    Timeout,
    /// The kernel refused to send it (no route, a local firewall, ...).
    SendFailed(Failure),
}

impl EchoResult {
    pub fn outcome(self) -> Outcome {
        match self {
            EchoResult::Reply(rtt) => Outcome::ok(rtt),
            EchoResult::Unreachable => Outcome::failed(Phase::IcmpEcho, Failure::Unreachable),
            EchoResult::Timeout => Outcome::failed(Phase::IcmpEcho, Failure::Timeout),
            EchoResult::SendFailed(f) => Outcome::failed(Phase::IcmpEcho, f),
        }
    }
}

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Timeout of every echo.
    pub timeout: Duration,
    /// Receive buffer: replies of thousands of echoes in flight arrive in bursts.
    pub recv_buffer: usize,
}

/// Completions of one burst, filled by the receiver, drained by the burst's thread.
#[derive(Default)]
struct Sink {
    done: Mutex<Vec<(u32, EchoResult)>>,
    ready: Condvar,
}

enum Waiter {
    Task(oneshot::Sender<EchoResult>),
    Burst { sink: Arc<Sink>, index: u32 },
}

struct Slot {
    generation: u32,
    addr: IpAddr,
    sent: Instant,
    /// `Some` while the echo is pending.
    waiter: Option<Waiter>,
}

/// Pending echoes. One lock, taken once per batch by the burst sender and the receiver,
/// and once per echo by [`EchoEngine::echo`].
struct Table {
    slots: Vec<Slot>,
    cursor: u16,
    next_generation: u32,
    in_flight: usize,
    /// (deadline, sequence, generation), in deadline order.
    deadlines: VecDeque<(Instant, u16, u32)>,
}

impl Table {
    fn new(now: Instant) -> Table {
        Table {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    generation: 0,
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    sent: now,
                    waiter: None,
                })
                .collect(),
            cursor: rand::random(),
            next_generation: rand::random(),
            in_flight: 0,
            deadlines: VecDeque::new(),
        }
    }

    /// Takes a free slot for an echo to `addr`; gives the waiter back when all are taken.
    fn register(
        &mut self,
        addr: IpAddr,
        waiter: Waiter,
        now: Instant,
        timeout: Duration,
    ) -> Result<(u16, u32), Waiter> {
        if self.in_flight >= SLOTS {
            return Err(waiter);
        }
        let seq = loop {
            let s = self.cursor;
            self.cursor = self.cursor.wrapping_add(1);
            if self.slots[s as usize].waiter.is_none() {
                break s;
            }
        };
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        self.slots[seq as usize] = Slot {
            generation,
            addr,
            sent: now,
            waiter: Some(waiter),
        };
        self.in_flight += 1;
        self.deadlines.push_back((now + timeout, seq, generation));
        Ok((seq, generation))
    }

    /// Frees a slot whose echo could not be sent.
    fn cancel(&mut self, seq: u16, generation: u32) -> Option<Waiter> {
        let slot = &mut self.slots[seq as usize];
        if slot.generation != generation {
            return None;
        }
        let w = slot.waiter.take();
        self.in_flight -= w.is_some() as usize;
        w
    }

    /// The pending echo a received packet answers, if it answers one of ours.
    fn complete(&mut self, hit: &Hit, me: &Identity, now: Instant) -> Option<(Waiter, EchoResult)> {
        let slot = &mut self.slots[hit.seq as usize];
        slot.waiter.as_ref()?;
        if !me.accepts(hit)
            || hit.generation.is_some_and(|g| g != slot.generation)
            || hit.addr != slot.addr
        {
            return None;
        }
        let result = if hit.error {
            EchoResult::Unreachable
        } else {
            EchoResult::Reply(
                now.saturating_duration_since(slot.sent)
                    .saturating_sub(hit.queued),
            )
        };
        let w = slot.waiter.take()?;
        self.in_flight -= 1;
        Some((w, result))
    }

    /// Times out every echo whose deadline has passed.
    fn sweep(&mut self, now: Instant, out: &mut Vec<(Waiter, EchoResult)>) {
        while let Some(&(deadline, seq, generation)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let slot = &mut self.slots[seq as usize];
            if slot.generation == generation
                && let Some(w) = slot.waiter.take()
            {
                self.in_flight -= 1;
                out.push((w, EchoResult::Timeout));
            }
        }
    }
}

/// What tells our packets from everyone else's.
#[derive(Debug, Clone, Copy)]
struct Identity {
    /// RAW sockets see every pinger's replies: the identifier must be ours. DGRAM sockets
    /// see only their own, and the kernel chooses the identifier.
    check_ident: bool,
    ident: u16,
    token: u64,
}

impl Identity {
    fn accepts(&self, hit: &Hit) -> bool {
        if self.check_ident && hit.ident != self.ident {
            return false;
        }
        match hit.token {
            Some(t) => t == self.token,
            // An error may quote only the first 8 bytes of our request (RFC 792); Linux
            // quotes it all, other routers may not.
            None => hit.error,
        }
    }
}

/// A received ICMP packet that may answer one of our echoes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Hit {
    /// An ICMP error quoting an echo request, rather than an echo reply.
    error: bool,
    ident: u16,
    seq: u16,
    /// Replies: the sender. Errors: the destination of the quoted request.
    addr: IpAddr,
    token: Option<u64>,
    generation: Option<u32>,
    /// How long the packet waited in the socket before the receiver read it.
    queued: Duration,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Identifier, sequence, token and generation of an echo header and what follows it.
fn echo_fields(icmp: &[u8]) -> Option<(u16, u16, Option<u64>, Option<u32>)> {
    if icmp.len() < 8 {
        return None;
    }
    let (token, generation) = if icmp.len() >= 20 {
        (
            Some(u64::from_be_bytes(icmp[8..16].try_into().ok()?)),
            Some(u32::from_be_bytes(icmp[16..20].try_into().ok()?)),
        )
    } else {
        (None, None)
    };
    Some((be16(&icmp[4..6]), be16(&icmp[6..8]), token, generation))
}

/// Parses a received packet. `ip_header`: the packet starts with an IPv4 header (RAW
/// IPv4 sockets). `from`: the sender's address.
fn parse(data: &[u8], v4: bool, ip_header: bool, from: Option<IpAddr>) -> Option<Hit> {
    let icmp = if ip_header {
        let ihl = ((*data.first()? & 0x0f) as usize) * 4;
        if data[0] >> 4 != 4 || ihl < 20 || data.len() < ihl + 8 {
            return None;
        }
        &data[ihl..]
    } else {
        data
    };
    if icmp.len() < 8 {
        return None;
    }
    let (reply, errors) = if v4 {
        (ICMP_ECHO_REPLY, [ICMP_UNREACHABLE, ICMP_TIME_EXCEEDED])
    } else {
        (
            ICMPV6_ECHO_REPLY,
            [ICMPV6_UNREACHABLE, ICMPV6_TIME_EXCEEDED],
        )
    };
    if icmp[0] == reply && icmp[1] == 0 {
        let (ident, seq, token, generation) = echo_fields(icmp)?;
        // A reply must carry our payload: no token, not ours.
        token?;
        return Some(Hit {
            error: false,
            ident,
            seq,
            addr: from?,
            token,
            generation,
            queued: Duration::ZERO,
        });
    }
    if !errors.contains(&icmp[0]) {
        return None;
    }
    // The error quotes the IP header of our request and at least 8 bytes after it.
    let inner = &icmp[8..];
    let (dst, quoted) = if v4 {
        let ihl = ((*inner.first()? & 0x0f) as usize) * 4;
        if inner[0] >> 4 != 4 || ihl < 20 || inner.len() < ihl + 8 || inner[9] != IPPROTO_ICMP {
            return None;
        }
        let dst: [u8; 4] = inner[16..20].try_into().ok()?;
        (IpAddr::V4(Ipv4Addr::from(dst)), &inner[ihl..])
    } else {
        if inner.len() < 48 || inner[0] >> 4 != 6 || inner[6] != IPPROTO_ICMPV6 {
            return None;
        }
        let dst: [u8; 16] = inner[24..40].try_into().ok()?;
        (IpAddr::V6(Ipv6Addr::from(dst)), &inner[40..])
    };
    let request = if v4 {
        ICMP_ECHO_REQUEST
    } else {
        ICMPV6_ECHO_REQUEST
    };
    if quoted[0] != request {
        return None;
    }
    let (ident, seq, token, generation) = echo_fields(quoted)?;
    Some(Hit {
        error: true,
        ident,
        seq,
        addr: dst,
        token,
        generation,
        queued: Duration::ZERO,
    })
}

/// Parses a packet from a DGRAM socket's error queue: the request an ICMP error quoted,
/// sent to `to`. `icmp_error`: the queue entry came from an ICMP error (not a local one).
fn parse_queued_error(data: &[u8], v4: bool, icmp_error: bool, to: Option<IpAddr>) -> Option<Hit> {
    let request = if v4 {
        ICMP_ECHO_REQUEST
    } else {
        ICMPV6_ECHO_REQUEST
    };
    if !icmp_error || *data.first()? != request {
        return None;
    }
    let (ident, seq, token, generation) = echo_fields(data)?;
    Some(Hit {
        error: true,
        ident,
        seq,
        addr: to?,
        token,
        generation,
        queued: Duration::ZERO,
    })
}

/// Drains a DGRAM socket's error queue into `hits`.
fn drain_error_queue(sh: &Shared, hits: &mut Vec<Hit>) {
    let fd = sh.socket.as_raw_fd();
    loop {
        let mut buf = [0u8; RECV_BUF];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsgs = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
        let flags = MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT;
        let Ok(m) = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsgs), flags) else {
            return;
        };
        let icmp_error = m.cmsgs().is_ok_and(|mut it| {
            it.any(|c| match c {
                ControlMessageOwned::Ipv4RecvErr(e, _) => {
                    e.ee_origin == libc::SO_EE_ORIGIN_ICMP
                        && [ICMP_UNREACHABLE, ICMP_TIME_EXCEEDED].contains(&e.ee_type)
                }
                ControlMessageOwned::Ipv6RecvErr(e, _) => {
                    e.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                        && [ICMPV6_UNREACHABLE, ICMPV6_TIME_EXCEEDED].contains(&e.ee_type)
                }
                _ => false,
            })
        });
        let to = m.address.as_ref().and_then(sockaddr_ip);
        if let Some(data) = m.iovs().next()
            && let Some(hit) = parse_queued_error(data, sh.v4, icmp_error, to)
        {
            hits.push(hit);
        }
    }
}

/// The Internet checksum (RFC 1071). IPv4 only: the kernel computes ICMPv6 checksums,
/// and ping sockets recompute IPv4 ones.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sockaddr_ip(s: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(IpAddr::V4(a.ip()));
    }
    s.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip()))
}

struct Shared {
    socket: Socket,
    v4: bool,
    kind: SocketKind,
    me: Identity,
    timeout: Duration,
    table: Mutex<Table>,
    closed: AtomicBool,
    /// A send consumed the report of a queued ICMP error (DGRAM): drain the queue.
    errors_queued: AtomicBool,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a failed send should be tried again: on a DGRAM socket the error may be
    /// the report of an earlier echo's ICMP error rather than this echo's own failure.
    fn retry_send(&self) -> bool {
        if self.kind != SocketKind::Dgram {
            return false;
        }
        self.errors_queued.store(true, Ordering::Release);
        true
    }

    fn packet(&self, seq: u16, generation: u32) -> [u8; PACKET_LEN] {
        let mut p = [0u8; PACKET_LEN];
        p[0] = if self.v4 {
            ICMP_ECHO_REQUEST
        } else {
            ICMPV6_ECHO_REQUEST
        };
        p[4..6].copy_from_slice(&self.me.ident.to_be_bytes());
        p[6..8].copy_from_slice(&seq.to_be_bytes());
        p[8..16].copy_from_slice(&self.me.token.to_be_bytes());
        p[16..20].copy_from_slice(&generation.to_be_bytes());
        if self.v4 {
            let c = checksum(&p);
            p[2..4].copy_from_slice(&c.to_be_bytes());
        }
        p
    }
}

/// Hands completed echoes to their waiters, outside the table's lock.
fn deliver(done: &mut Vec<(Waiter, EchoResult)>) {
    let mut last: Option<Arc<Sink>> = None;
    for (w, r) in done.drain(..) {
        match w {
            // The echo's future may have been dropped: nobody to tell.
            Waiter::Task(tx) => drop(tx.send(r)),
            Waiter::Burst { sink, index } => {
                sink.done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((index, r));
                if last.as_ref().is_some_and(|l| !Arc::ptr_eq(l, &sink))
                    && let Some(l) = last.take()
                {
                    l.ready.notify_one();
                }
                last = Some(sink);
            }
        }
    }
    if let Some(l) = last {
        l.ready.notify_one();
    }
}

/// How long a received packet waited in the socket: `wall` (read just after the receive)
/// minus the kernel's receive time. Both are wall-clock times taken microseconds apart,
/// so a clock step does not distort it the way it would an RTT.
fn queued_for<S>(m: &nix::sys::socket::RecvMsg<'_, '_, S>, wall: SystemTime) -> Duration {
    let Ok(mut cmsgs) = m.cmsgs() else {
        return Duration::ZERO;
    };
    cmsgs
        .find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => {
                let at = SystemTime::UNIX_EPOCH
                    + Duration::new(ts.tv_sec().max(0) as u64, ts.tv_nsec().max(0) as u32);
                Some(wall.duration_since(at).unwrap_or_default())
            }
            _ => None,
        })
        .unwrap_or_default()
}

fn receive_loop(sh: Arc<Shared>) {
    let fd = sh.socket.as_raw_fd();
    let cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, Some(cmsg));
    let mut bufs = [[0u8; RECV_BUF]; RECV_BATCH];
    let idle = IDLE_TICK.min(sh.timeout / 2).max(BUSY_TICK);
    let mut tick = idle;
    if let Err(e) = sh.socket.set_read_timeout(Some(tick)) {
        tracing::error!(error = %e, "icmp receiver: cannot set the receive timeout");
    }
    let mut hits: Vec<Hit> = Vec::with_capacity(RECV_BATCH);
    let mut done: Vec<(Waiter, EchoResult)> = Vec::with_capacity(RECV_BATCH);
    let ip_header = sh.v4 && sh.kind == SocketKind::Raw;
    while !sh.closed.load(Ordering::Acquire) {
        hits.clear();
        let mut quiet = false;
        let mut received = 0usize;
        {
            let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
            match recvmmsg(
                fd,
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(msgs) => {
                    let wall = SystemTime::now();
                    for m in msgs {
                        received += 1;
                        let from = m.address.as_ref().and_then(sockaddr_ip);
                        let Some(data) = m.iovs().next() else {
                            continue;
                        };
                        if let Some(mut hit) = parse(data, sh.v4, ip_header, from) {
                            hit.queued = queued_for(&m, wall);
                            hits.push(hit);
                        }
                    }
                }
                Err(Errno::EAGAIN) => quiet = true,
                Err(Errno::EINTR) => {}
                // A DGRAM socket reports a queued ICMP error this way.
                Err(e) if sh.kind == SocketKind::Dgram => {
                    tracing::trace!(error = %e, "icmp error queued");
                    drain_error_queue(&sh, &mut hits);
                }
                Err(e) => tracing::debug!(error = %e, "icmp receive error"),
            }
        }
        if sh.errors_queued.swap(false, Ordering::AcqRel) {
            drain_error_queue(&sh, &mut hits);
        }
        let now = Instant::now();
        let want = {
            let mut t = sh.table();
            for hit in &hits {
                if let Some(d) = t.complete(hit, &sh.me, now) {
                    done.push(d);
                }
            }
            t.sweep(now, &mut done);
            // Back to the idle tick only after a quiet tick: a burst that empties the
            // table between two batches would otherwise cost two setsockopt per batch.
            if t.in_flight > 0 {
                BUSY_TICK
            } else if quiet {
                idle
            } else {
                tick
            }
        };
        deliver(&mut done);
        if received > 0 && received < RECV_BATCH {
            std::thread::sleep(COALESCE);
        }
        if want != tick {
            tick = want;
            if let Err(e) = sh.socket.set_read_timeout(Some(tick)) {
                tracing::warn!(error = %e, "icmp receiver: cannot set the receive timeout");
            }
        }
    }
}

/// One address family's ICMP socket and its receiver. Dropping the engine stops the
/// receiver within [`IDLE_TICK`] and closes the socket.
pub struct EchoEngine {
    sh: Arc<Shared>,
}

impl std::fmt::Debug for EchoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoEngine")
            .field("v4", &self.sh.v4)
            .field("kind", &self.sh.kind)
            .field("timeout", &self.sh.timeout)
            .finish()
    }
}

impl Drop for EchoEngine {
    fn drop(&mut self) {
        self.sh.closed.store(true, Ordering::Release);
    }
}

/// Opens an ICMP socket: DGRAM ("unprivileged ping") first, RAW as fallback. The error
/// names both refusals.
fn open_socket(v4: bool) -> Result<(Socket, SocketKind), String> {
    let (domain, proto, family) = if v4 {
        (Domain::IPV4, Protocol::ICMPV4, "ipv4")
    } else {
        (Domain::IPV6, Protocol::ICMPV6, "ipv6")
    };
    match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => Ok((s, SocketKind::Dgram)),
        Err(dgram) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => Ok((s, SocketKind::Raw)),
            Err(raw) => Err(format!(
                "{family}: unprivileged ping socket refused ({dgram}), raw socket refused ({raw})"
            )),
        },
    }
}

impl EchoEngine {
    /// Opens the socket of a family and starts its receiver thread.
    pub fn open(v4: bool, config: &EngineConfig) -> Result<EchoEngine, String> {
        let (socket, kind) = open_socket(v4)?;
        if let Err(e) = setsockopt(&socket, nix_sockopt::ReceiveTimestampns, &true) {
            // Round-trip times then include the time replies wait for the receiver.
            tracing::warn!(error = %e, "icmp: no kernel receive timestamps");
        }
        if kind == SocketKind::Dgram {
            // Without it, a ping socket drops the ICMP errors its echoes cause.
            let r = if v4 {
                setsockopt(&socket, nix_sockopt::Ipv4RecvErr, &true)
            } else {
                setsockopt(&socket, nix_sockopt::Ipv6RecvErr, &true)
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "icmp: no error queue; unreachable echoes will time out");
            }
        }
        sockopt::tune(
            socket.as_raw_fd(),
            config.recv_buffer,
            kind == SocketKind::Raw,
            v4,
        );
        let sh = Arc::new(Shared {
            socket,
            v4,
            kind,
            me: Identity {
                check_ident: kind == SocketKind::Raw,
                ident: rand::random(),
                token: rand::random(),
            },
            timeout: config.timeout,
            table: Mutex::new(Table::new(Instant::now())),
            closed: AtomicBool::new(false),
            errors_queued: AtomicBool::new(false),
        });
        let rx = sh.clone();
        std::thread::Builder::new()
            .name(format!("icmp-rx-{}", if v4 { "v4" } else { "v6" }))
            .spawn(move || receive_loop(rx))
            .map_err(|e| format!("cannot start the ICMP receiver thread: {e}"))?;
        tracing::info!(
            family = if v4 { "ipv4" } else { "ipv6" },
            socket = kind.as_str(),
            recv_buffer = config.recv_buffer,
            "icmp socket open"
        );
        Ok(EchoEngine { sh })
    }

    pub fn kind(&self) -> SocketKind {
        self.sh.kind
    }

    pub fn timeout(&self) -> Duration {
        self.sh.timeout
    }

    /// Echoes now pending.
    pub fn in_flight(&self) -> usize {
        self.sh.table().in_flight
    }

    /// One echo request to `addr` (of this engine's family).
    pub async fn echo(&self, addr: IpAddr) -> EchoResult {
        let (tx, rx) = oneshot::channel();
        let mut waiter = Waiter::Task(tx);
        let start = Instant::now();
        let (seq, generation) = loop {
            let r = self
                .sh
                .table()
                .register(addr, waiter, Instant::now(), self.sh.timeout);
            match r {
                Ok(x) => break x,
                // All 65,536 sequence numbers pending: wait for some to finish.
                Err(w) => {
                    if start.elapsed() >= self.sh.timeout {
                        return EchoResult::Timeout;
                    }
                    waiter = w;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let packet = self.sh.packet(seq, generation);
        let to = SockAddr::from(SocketAddr::new(addr, 0));
        let mut retries = 0;
        loop {
            match self
                .sh
                .socket
                .send_to_with_flags(&packet, &to, libc::MSG_DONTWAIT)
            {
                Ok(_) => break,
                // A full send buffer or device queue: never block a runtime thread.
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS)
                        || e.kind() == std::io::ErrorKind::Interrupted =>
                {
                    if start.elapsed() >= self.sh.timeout {
                        self.sh.table().cancel(seq, generation);
                        return EchoResult::Timeout;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) if retries < SEND_RETRIES && self.sh.retry_send() => retries += 1,
                Err(e) => {
                    self.sh.table().cancel(seq, generation);
                    return EchoResult::SendFailed(io_failure(&e));
                }
            }
        }
        // The receiver always completes the slot (reply, error or timeout); the sender is
        // dropped unanswered only if the engine stopped.
        rx.await.unwrap_or(EchoResult::Timeout)
    }

    /// Sends one echo to every address (all of this engine's family), at most
    /// `max_in_flight` pending at once, and calls `each(index, result)` as results come,
    /// in completion order. Blocks the calling thread: run it on a thread of its own
    /// (e.g. `spawn_blocking`), not on a runtime worker.
    pub fn burst(
        &self,
        addrs: &[IpAddr],
        max_in_flight: usize,
        mut each: impl FnMut(usize, EchoResult),
    ) {
        let max = max_in_flight.clamp(1, SLOTS);
        let sink = Arc::new(Sink::default());
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(SEND_BATCH, None);
        let (mut next, mut in_flight, mut finished) = (0usize, 0usize, 0usize);
        let mut got = Vec::new();
        while finished < addrs.len() {
            while next < addrs.len() && in_flight < max {
                let k = (addrs.len() - next).min(max - in_flight).min(SEND_BATCH);
                let (registered, failed) =
                    self.send_batch(&addrs[next..next + k], next, &sink, &mut headers, &mut each);
                if registered == 0 {
                    // The table is full (other echoes of this engine): wait for results.
                    break;
                }
                next += registered;
                in_flight += registered - failed;
                finished += failed;
            }
            if finished == addrs.len() {
                break;
            }
            {
                let mut done = sink.done.lock().unwrap_or_else(|p| p.into_inner());
                if done.is_empty() {
                    done = sink
                        .ready
                        .wait_timeout(done, IDLE_TICK)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                std::mem::swap(&mut *done, &mut got);
            }
            for (i, r) in got.drain(..) {
                each(i as usize, r);
                in_flight -= 1;
                finished += 1;
            }
        }
    }

    /// Registers and sends up to [`SEND_BATCH`] echoes. Returns how many were registered
    /// and how many of those failed to send (already reported to `each`).
    fn send_batch(
        &self,
        addrs: &[IpAddr],
        base: usize,
        sink: &Arc<Sink>,
        headers: &mut MultiHeaders<SockaddrStorage>,
        each: &mut impl FnMut(usize, EchoResult),
    ) -> (usize, usize) {
        let mut regs: Vec<(u16, u32)> = Vec::with_capacity(addrs.len());
        {
            let now = Instant::now();
            let mut t = self.sh.table();
            for (j, &addr) in addrs.iter().enumerate() {
                let w = Waiter::Burst {
                    sink: sink.clone(),
                    index: (base + j) as u32,
                };
                match t.register(addr, w, now, self.sh.timeout) {
                    Ok(r) => regs.push(r),
                    Err(_) => break,
                }
            }
        }
        let packets: Vec<[u8; PACKET_LEN]> = regs
            .iter()
            .map(|&(seq, generation)| self.sh.packet(seq, generation))
            .collect();
        let dests: Vec<Option<SockaddrStorage>> = addrs[..regs.len()]
            .iter()
            .map(|&a| Some(SockaddrStorage::from(SocketAddr::new(a, 0))))
            .collect();
        let fd = self.sh.socket.as_raw_fd();
        let (mut pos, mut failed) = (0usize, 0usize);
        let (mut retried_at, mut retries) = (usize::MAX, 0);
        while pos < regs.len() {
            let slices: Vec<[IoSlice<'_>; 1]> =
                packets[pos..].iter().map(|p| [IoSlice::new(p)]).collect();
            let no_cmsgs: [nix::sys::socket::ControlMessage<'_>; 0] = [];
            match sendmmsg(
                fd,
                headers,
                &slices,
                &dests[pos..],
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(sent) => {
                    let n = sent.count();
                    if n > 0 {
                        pos += n;
                        continue;
                    }
                    self.fail(regs[pos], base + pos, Failure::Unknown, each);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS | Errno::EAGAIN) => {
                    // The device queue is full: let it drain.
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(_) if (retried_at != pos || retries < SEND_RETRIES) && self.sh.retry_send() => {
                    if retried_at != pos {
                        (retried_at, retries) = (pos, 0);
                    }
                    retries += 1;
                    continue;
                }
                Err(e) => {
                    let f = errno_failure(e as i32).unwrap_or(Failure::Unknown);
                    self.fail(regs[pos], base + pos, f, each);
                }
            }
            pos += 1;
            failed += 1;
        }
        (regs.len(), failed)
    }

    fn fail(
        &self,
        (seq, generation): (u16, u32),
        index: usize,
        f: Failure,
        each: &mut impl FnMut(usize, EchoResult),
    ) {
        // The receiver may not have completed it: nothing was sent.
        self.sh.table().cancel(seq, generation);
        each(index, EchoResult::SendFailed(f));
    }
}

#[allow(unsafe_code)]
mod sockopt {
    //! setsockopt calls socket2 and nix do not offer (ICMP filters) or that must not fail
    //! silently (a forced receive buffer). The only other unsafe code in blackout is one
    //! `madvise` in `agent::table`.
    use std::os::fd::RawFd;

    const SOL_RAW: libc::c_int = 255;
    const ICMP_FILTER: libc::c_int = 1;
    const ICMPV6_FILTER: libc::c_int = 1;

    fn set<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> bool {
        // SAFETY: `fd` is the open socket of a live engine, which outlives this call;
        // `value` points to a live, initialised `T` whose size we pass.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                value as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            ) == 0
        }
    }

    /// Enlarges the receive buffer (replies of thousands of echoes in flight arrive in
    /// bursts) and, on RAW sockets, filters out ICMP types we never wait for (our own
    /// echo requests looped back, above all), which halves the receiver's work on
    /// loopback.
    pub fn tune(fd: RawFd, recv_buffer: usize, raw: bool, v4: bool) {
        let bytes = recv_buffer.min(i32::MAX as usize) as libc::c_int;
        // FORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; plain SO_RCVBUF is
        // capped by rmem_max.
        if !set(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)
            && !set(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes)
        {
            tracing::warn!(recv_buffer, "could not enlarge the ICMP receive buffer");
        }
        if !raw {
            return;
        }
        if v4 {
            // A set bit drops that type; keep echo reply (0), unreachable (3), time
            // exceeded (11).
            let keep: u32 = (1 << 0) | (1 << 3) | (1 << 11);
            if !set(fd, SOL_RAW, ICMP_FILTER, &!keep) {
                tracing::debug!("ICMP_FILTER not available on this socket");
            }
        } else {
            // struct icmp6_filter: 256 bits, a set bit blocks that type; pass unreachable
            // (1), time exceeded (3) and echo reply (129).
            let mut blocked = [u32::MAX; 8];
            for t in [1u32, 3, 129] {
                blocked[(t >> 5) as usize] &= !(1 << (t & 31));
            }
            if !set(fd, libc::IPPROTO_ICMPV6, ICMPV6_FILTER, &blocked) {
                tracing::debug!("ICMP6_FILTER not available on this socket");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Identity = Identity {
        check_ident: true,
        ident: 0x1234,
        token: 0xdead_beef_0bad_f00d,
    };

    fn reply_v4(ident: u16, seq: u16, token: u64, generation: u32, ip_header: bool) -> Vec<u8> {
        let mut icmp = vec![0u8; PACKET_LEN];
        icmp[0] = ICMP_ECHO_REPLY;
        icmp[4..6].copy_from_slice(&ident.to_be_bytes());
        icmp[6..8].copy_from_slice(&seq.to_be_bytes());
        icmp[8..16].copy_from_slice(&token.to_be_bytes());
        icmp[16..20].copy_from_slice(&generation.to_be_bytes());
        if !ip_header {
            return icmp;
        }
        let mut ip = vec![
            0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 9, 127, 0, 0, 1,
        ];
        ip.extend(icmp);
        ip
    }

    /// An ICMP error from a router quoting our request to `dst` (IPv4), with `quote`
    /// bytes of the request's ICMP part.
    fn error_v4(ty: u8, dst: [u8; 4], request: &[u8], quote: usize) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend([ty, 1, 0, 0, 0, 0, 0, 0]);
        p.extend([0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2]);
        p.extend(dst);
        p.extend(&request[..quote]);
        p
    }

    fn table_with(addr: IpAddr) -> (Table, u16, u32, oneshot::Receiver<EchoResult>) {
        let now = Instant::now();
        let mut t = Table::new(now);
        let (tx, rx) = oneshot::channel();
        let (seq, generation) = t
            .register(addr, Waiter::Task(tx), now, Duration::from_secs(1))
            .ok()
            .unwrap();
        (t, seq, generation, rx)
    }

    #[test]
    fn checksum_of_an_echo_request_verifies() {
        let sh_packet = {
            let mut p = [0u8; PACKET_LEN];
            p[0] = ICMP_ECHO_REQUEST;
            p[6] = 7;
            p[8] = 0xab;
            let c = checksum(&p);
            p[2..4].copy_from_slice(&c.to_be_bytes());
            p
        };
        assert_eq!(checksum(&sh_packet), 0);
        // RFC 1071's example words: 0001 f203 f4f5 f6f7 sum to ddf2, complement 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn a_reply_matches_only_its_pending_echo() {
        let from: IpAddr = "127.0.0.9".parse().unwrap();
        let (mut t, seq, generation, mut rx) = table_with(from);
        let now = Instant::now();
        let parse_raw = |p: &[u8], src: &str| parse(p, true, true, Some(src.parse().unwrap()));
        // Another pinger's identifier, a foreign token, a stale generation, the wrong
        // sender, a sequence number nobody waits for: all ignored.
        let cases = [
            (
                reply_v4(0x9999, seq, ME.token, generation, true),
                "127.0.0.9",
            ),
            (reply_v4(ME.ident, seq, 42, generation, true), "127.0.0.9"),
            (
                reply_v4(ME.ident, seq, ME.token, generation.wrapping_sub(1), true),
                "127.0.0.9",
            ),
            (
                reply_v4(ME.ident, seq, ME.token, generation, true),
                "127.0.0.10",
            ),
            (
                reply_v4(ME.ident, seq.wrapping_add(1), ME.token, generation, true),
                "127.0.0.9",
            ),
        ];
        for (p, src) in &cases {
            let hit = parse_raw(p, src).unwrap();
            assert!(t.complete(&hit, &ME, now).is_none(), "{hit:?}");
        }
        assert_eq!(t.in_flight, 1);
        let hit = parse_raw(
            &reply_v4(ME.ident, seq, ME.token, generation, true),
            "127.0.0.9",
        )
        .unwrap();
        let (w, r) = t.complete(&hit, &ME, now).unwrap();
        assert!(matches!(r, EchoResult::Reply(_)));
        deliver(&mut vec![(w, r)]);
        assert!(matches!(rx.try_recv(), Ok(EchoResult::Reply(_))));
        // Answered once: a duplicate reply finds the slot free.
        assert!(t.complete(&hit, &ME, now).is_none());
        assert_eq!(t.in_flight, 0);
    }

    #[test]
    fn dgram_replies_have_no_ip_header_and_any_identifier() {
        let me = Identity {
            check_ident: false,
            ..ME
        };
        let from: IpAddr = "127.0.0.9".parse().unwrap();
        let (mut t, seq, generation, _rx) = table_with(from);
        let hit = parse(
            &reply_v4(7, seq, ME.token, generation, false),
            true,
            false,
            Some(from),
        )
        .unwrap();
        assert!(t.complete(&hit, &me, Instant::now()).is_some());
    }

    #[test]
    fn errors_quoting_our_request_are_unreachable() {
        let dst: IpAddr = "10.9.8.7".parse().unwrap();
        let (mut t, seq, generation, _rx) = table_with(dst);
        let mut req = reply_v4(ME.ident, seq, ME.token, generation, false);
        req[0] = ICMP_ECHO_REQUEST;
        let router = Some("10.0.0.1".parse().unwrap());
        // Quoting only 8 bytes (RFC 792's minimum) is enough; a quote for another
        // destination or of a request that is not an echo is not ours.
        let other = error_v4(ICMP_UNREACHABLE, [10, 9, 8, 6], &req, 8);
        let hit = parse(&other, true, true, router).unwrap();
        assert!(t.complete(&hit, &ME, Instant::now()).is_none());
        let mut not_echo = req.clone();
        not_echo[0] = 13;
        assert!(
            parse(
                &error_v4(ICMP_UNREACHABLE, [10, 9, 8, 7], &not_echo, 8),
                true,
                true,
                router
            )
            .is_none()
        );
        for (ty, quote) in [(ICMP_UNREACHABLE, 8), (ICMP_TIME_EXCEEDED, PACKET_LEN)] {
            let (mut t, seq2, generation2, _rx) = table_with(dst);
            let mut req = reply_v4(ME.ident, seq2, ME.token, generation2, false);
            req[0] = ICMP_ECHO_REQUEST;
            let hit = parse(
                &error_v4(ty, [10, 9, 8, 7], &req, quote),
                true,
                true,
                router,
            )
            .unwrap();
            let (_, r) = t.complete(&hit, &ME, Instant::now()).unwrap();
            assert_eq!(r, EchoResult::Unreachable);
        }
        let _ = (seq, generation);
    }

    #[test]
    fn queued_errors_of_dgram_sockets_name_the_request() {
        let mut req = reply_v4(7, 9, ME.token, 3, false);
        req[0] = ICMP_ECHO_REQUEST;
        let to: IpAddr = "10.78.0.5".parse().unwrap();
        let hit = parse_queued_error(&req, true, true, Some(to)).unwrap();
        assert_eq!(
            (hit.error, hit.seq, hit.generation, hit.addr),
            (true, 9, Some(3), to)
        );
        // A local error (not from ICMP), or a packet that is not our request: nothing.
        assert!(parse_queued_error(&req, true, false, Some(to)).is_none());
        assert!(parse_queued_error(&req, false, true, Some(to)).is_none());
    }

    #[test]
    fn ipv6_replies_and_errors_parse() {
        let mut reply = reply_v4(ME.ident, 5, ME.token, 6, false);
        reply[0] = ICMPV6_ECHO_REPLY;
        let from: IpAddr = "::1".parse().unwrap();
        let hit = parse(&reply, false, false, Some(from)).unwrap();
        assert_eq!(
            (hit.error, hit.seq, hit.generation, hit.addr),
            (false, 5, Some(6), from)
        );
        let mut req = reply.clone();
        req[0] = ICMPV6_ECHO_REQUEST;
        let dst: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let mut err = vec![ICMPV6_UNREACHABLE, 0, 0, 0, 0, 0, 0, 0];
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 64, IPPROTO_ICMPV6, 64];
        ip6.extend([0u8; 16]);
        ip6.extend(dst.octets());
        err.extend(ip6);
        err.extend(&req);
        let hit = parse(&err, false, false, Some("2001:db8::1".parse().unwrap())).unwrap();
        assert_eq!((hit.error, hit.seq, hit.addr), (true, 5, IpAddr::V6(dst)));
    }

    #[test]
    fn deadlines_time_out_in_bulk_and_skip_answered_slots() {
        let now = Instant::now();
        let mut t = Table::new(now);
        let timeout = Duration::from_secs(1);
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let mut rxs = Vec::new();
        let mut regs = Vec::new();
        for i in 0..10u64 {
            let (tx, rx) = oneshot::channel();
            let at = now + Duration::from_millis(i);
            regs.push(
                t.register(addr, Waiter::Task(tx), at, timeout)
                    .ok()
                    .unwrap(),
            );
            rxs.push(rx);
        }
        // Echo 0 is answered; the sweep half-way through times out 1..=4 only.
        let (seq, generation) = regs[0];
        let hit = Hit {
            error: false,
            ident: ME.ident,
            seq,
            addr,
            token: Some(ME.token),
            generation: Some(generation),
            queued: Duration::ZERO,
        };
        assert!(t.complete(&hit, &ME, now).is_some());
        let mut out = Vec::new();
        t.sweep(now + timeout + Duration::from_millis(4), &mut out);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|(_, r)| *r == EchoResult::Timeout));
        assert_eq!(t.in_flight, 5);
        t.sweep(now + timeout * 2, &mut out);
        assert_eq!((out.len(), t.in_flight, t.deadlines.len()), (9, 0, 0));
    }

    #[test]
    fn a_full_table_refuses_and_frees_on_cancel() {
        let now = Instant::now();
        let mut t = Table::new(now);
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let sink = Arc::new(Sink::default());
        let mut last = None;
        for i in 0..SLOTS as u32 {
            let w = Waiter::Burst {
                sink: sink.clone(),
                index: i,
            };
            last = Some(
                t.register(addr, w, now, Duration::from_secs(1))
                    .ok()
                    .unwrap(),
            );
        }
        let w = Waiter::Burst { sink, index: 0 };
        let w = t
            .register(addr, w, now, Duration::from_secs(1))
            .err()
            .unwrap();
        let (seq, generation) = last.unwrap();
        assert!(t.cancel(seq, generation).is_some());
        assert_eq!(
            t.register(addr, w, now, Duration::from_secs(1)).ok(),
            Some((seq, generation.wrapping_add(1)))
        );
    }
}
