//! The BMP listener (RFC 7854): routers and route collectors connect to the collector
//! and stream their peers' Adj-RIB-In. Each message is framed by its common header's
//! length (bounded), parsed by bgpkit-parser, and mapped to [`RouteEvent`]s. A closed
//! session is a Peer Down for every peer it reported; a malformed message closes that
//! session only. A Statistics Report is a [`RouteEvent::PeerAlive`]: a quiet peer whose
//! router reports on it is not silent.
//!
//! Only the global instance counts: messages whose per-peer header is of an RD instance
//! peer (a VRF), a local instance peer, or a Loc-RIB of a non-global instance (RFC 9069,
//! non-zero distinguisher) are dropped and counted in [`BmpStats::ignored`]. A VRF's
//! routes are a customer's or a service's table, not what the Internet sees: counted,
//! they would show a country's prefixes as visible when the world no longer carries
//! them; and their peer, keyed by address and ASN only, would merge with a global peer
//! of the same address.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bgpkit_parser::models::{Afi, BgpMessage, BgpUpdateMessage, NetworkPrefix};
use bgpkit_parser::parser::bmp::messages::{
    BmpMessageBody, BmpPeerType, BmpPerPeerHeader, InitiationTlvType,
};
use bytes::{BufMut, Bytes, BytesMut};
use chrono::Utc;
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::event::{PeerKey, RouteEvent, SourceKind};

/// BMP version this listener speaks (RFC 7854).
pub const BMP_VERSION: u8 = 3;
/// Largest BMP message accepted: a BGP message is at most 65,535 bytes (RFC 8654) plus
/// the per-peer header; anything larger is a framing error.
pub const MAX_MESSAGE_BYTES: usize = 1 << 17;
const COMMON_HEADER_BYTES: usize = 6;
/// Per-peer header types whose messages are dropped, as metrics label them (the order
/// of [`BmpStats::ignored`]).
pub const IGNORED_PEER_TYPES: [&str; 3] = ["rd_instance", "local_instance", "loc_rib_instance"];

/// The index in [`IGNORED_PEER_TYPES`] of a header that is not of the global instance.
fn ignored_peer_type(h: &BmpPerPeerHeader) -> Option<usize> {
    match h.peer_type {
        BmpPeerType::Global => None,
        BmpPeerType::RD => Some(0),
        BmpPeerType::Local => Some(1),
        BmpPeerType::LocalRib if h.peer_distinguisher == 0 => None,
        BmpPeerType::LocalRib => Some(2),
    }
}

/// Counters the listener keeps, for metrics.
#[derive(Debug, Default)]
pub struct BmpStats {
    /// Sessions open now.
    pub sessions: AtomicU64,
    /// Sessions accepted since start.
    pub sessions_accepted: AtomicU64,
    /// Sessions closed because of a malformed message.
    pub sessions_malformed: AtomicU64,
    /// Messages dropped as not of the global instance, by [`IGNORED_PEER_TYPES`].
    pub ignored: [AtomicU64; 3],
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    #[error("BMP version {0}, expected 3")]
    Version(u8),
    #[error("message length {0} out of bounds (6..={MAX_MESSAGE_BYTES})")]
    Length(usize),
    #[error("malformed message: {0}")]
    Parse(String),
    #[error("the table's event queue is closed")]
    Closed,
}

/// Accepts BMP sessions for ever, one task each.
pub async fn serve(listener: TcpListener, events: mpsc::Sender<RouteEvent>, stats: Arc<BmpStats>) {
    loop {
        match listener.accept().await {
            Ok((stream, router)) => {
                let events = events.clone();
                let stats = stats.clone();
                tokio::spawn(async move { session(stream, router, events, stats).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "BMP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One router's session: its messages until it closes, then Peer Down for its peers.
pub async fn session(
    mut stream: TcpStream,
    router: SocketAddr,
    events: mpsc::Sender<RouteEvent>,
    stats: Arc<BmpStats>,
) {
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    stats.sessions_accepted.fetch_add(1, Ordering::Relaxed);
    tracing::info!(router = %router, "BMP session opened");
    let mut s = Session {
        collector: router.ip().to_string(),
        peers: BTreeSet::new(),
        events,
        stats: stats.clone(),
        logged_ignored: false,
    };
    let why = match s.run(&mut stream).await {
        Ok(()) => "session closed".to_string(),
        Err(e @ (SessionError::Version(_) | SessionError::Length(_) | SessionError::Parse(_))) => {
            stats.sessions_malformed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(router = %router, error = %e, "BMP session closed: malformed message");
            e.to_string()
        }
        Err(e) => {
            tracing::info!(router = %router, error = %e, "BMP session ended");
            e.to_string()
        }
    };
    for peer in std::mem::take(&mut s.peers) {
        let ev = RouteEvent::PeerDown {
            peer,
            at: Utc::now(),
            reason: format!("BMP session: {why}"),
        };
        if s.events.send(ev).await.is_err() {
            break;
        }
    }
    stats.sessions.fetch_sub(1, Ordering::Relaxed);
}

struct Session {
    collector: String,
    peers: BTreeSet<PeerKey>,
    events: mpsc::Sender<RouteEvent>,
    stats: Arc<BmpStats>,
    /// Whether this session's first non-global message was logged (the rest are only
    /// counted).
    logged_ignored: bool,
}

impl Session {
    async fn run(&mut self, stream: &mut TcpStream) -> Result<(), SessionError> {
        loop {
            let Some(msg) = read_message(stream).await? else {
                return Ok(());
            };
            if !self.handle(msg).await? {
                return Ok(());
            }
        }
    }

    /// `false` when the router terminated the session.
    async fn handle(&mut self, mut raw: Bytes) -> Result<bool, SessionError> {
        let msg = bgpkit_parser::parser::bmp::parse_bmp_msg(&mut raw)
            .map_err(|e| SessionError::Parse(e.to_string()))?;
        let at = Utc::now();
        let key = |h: &BmpPerPeerHeader| PeerKey {
            source: SourceKind::Bmp,
            collector: self.collector.clone(),
            peer_ip: h.peer_ip,
            peer_asn: u32::from(h.peer_asn),
        };
        if let Some(t) = msg.per_peer_header.as_ref().and_then(ignored_peer_type) {
            self.stats.ignored[t].fetch_add(1, Ordering::Relaxed);
            if !self.logged_ignored {
                self.logged_ignored = true;
                tracing::info!(router = %self.collector, peer_type = IGNORED_PEER_TYPES[t], "BMP messages of a non-global instance (VRF) ignored: they are not the Internet's table");
            }
            return Ok(true);
        }
        let mut out = Vec::new();
        match (msg.message_body, msg.per_peer_header) {
            (BmpMessageBody::InitiationMessage(m), _) => {
                let name = m
                    .tlvs
                    .iter()
                    .find(|t| t.info_type == InitiationTlvType::SysName)
                    .map(|t| t.info.as_str())
                    .unwrap_or("");
                tracing::info!(router = %self.collector, sys_name = name, "BMP initiation");
            }
            (BmpMessageBody::TerminationMessage(_), _) => return Ok(false),
            (BmpMessageBody::PeerUpNotification(_), Some(h)) => {
                let peer = key(&h);
                self.peers.insert(peer.clone());
                out.push(RouteEvent::PeerUp { peer, at });
            }
            (BmpMessageBody::PeerDownNotification(d), Some(h)) => {
                let peer = key(&h);
                self.peers.remove(&peer);
                out.push(RouteEvent::PeerDown {
                    peer,
                    at,
                    reason: format!("BMP Peer Down: {:?}", d.reason),
                });
            }
            (BmpMessageBody::RouteMonitoring(m), Some(h)) => {
                let peer = key(&h);
                if !self.peers.contains(&peer) {
                    self.peers.insert(peer.clone());
                }
                if let BgpMessage::Update(u) = &m.bgp_message {
                    update_events(u, peer, at, &mut out);
                }
            }
            (BmpMessageBody::StatsReport(_), Some(h)) => {
                out.push(RouteEvent::PeerAlive { peer: key(&h), at });
            }
            _ => {}
        }
        for ev in out {
            self.events
                .send(ev)
                .await
                .map_err(|_| SessionError::Closed)?;
        }
        Ok(true)
    }
}

/// The events one UPDATE carries: withdrawals, then announcements (IPv4 in the body,
/// any family in MP_REACH/MP_UNREACH), or End-of-RIB.
pub fn update_events(
    u: &BgpUpdateMessage,
    peer: PeerKey,
    at: chrono::DateTime<Utc>,
    out: &mut Vec<RouteEvent>,
) {
    if u.is_end_of_rib() {
        out.push(RouteEvent::EndOfRib { peer, at });
        return;
    }
    let unicast = |n: &&bgpkit_parser::models::Nlri| {
        matches!(n.afi, Afi::Ipv4 | Afi::Ipv6) && n.safi == bgpkit_parser::models::Safi::Unicast
    };
    let nets = |v: &[NetworkPrefix]| v.iter().map(|p| p.prefix).collect::<Vec<IpNet>>();
    let mut withdrawn = nets(&u.withdrawn_prefixes);
    if let Some(n) = u.attributes.get_unreachable_nlri().filter(unicast) {
        withdrawn.extend(nets(&n.prefixes));
    }
    let mut announced = nets(&u.announced_prefixes);
    if let Some(n) = u.attributes.get_reachable_nlri().filter(unicast) {
        announced.extend(nets(&n.prefixes));
    }
    RouteEvent::push_update(out, &peer, withdrawn, announced, at);
}

/// One whole message (common header included), or `None` at a clean end of stream.
async fn read_message(stream: &mut TcpStream) -> Result<Option<Bytes>, SessionError> {
    let mut head = [0u8; COMMON_HEADER_BYTES];
    match stream.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    if head[0] != BMP_VERSION {
        return Err(SessionError::Version(head[0]));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if !(COMMON_HEADER_BYTES..=MAX_MESSAGE_BYTES).contains(&len) {
        return Err(SessionError::Length(len));
    }
    let mut buf = BytesMut::with_capacity(len);
    buf.put_slice(&head);
    buf.resize(len, 0);
    stream.read_exact(&mut buf[COMMON_HEADER_BYTES..]).await?;
    Ok(Some(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A session FRR 8.4.4's bgpd sent (Initiation, Peer Up, the peer's route, End-of-RIB),
    /// captured from a monitor router like the one of tests/bgp_bmp.rs.
    const FRR_SESSION: &[u8] = include_bytes!("../testdata/frr-8.4.4-bmp-session.bin");

    async fn feed(bytes: Vec<u8>) -> (Vec<RouteEvent>, Arc<BmpStats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let stats = Arc::new(BmpStats::default());
        tokio::spawn(serve(listener, tx, stats.clone()));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&bytes).await.unwrap();
        c.shutdown().await.unwrap();
        let mut out = Vec::new();
        while let Ok(Some(ev)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv()).await
        {
            let down = matches!(ev, RouteEvent::PeerDown { .. });
            out.push(ev);
            if down {
                break;
            }
        }
        (out, stats)
    }

    #[tokio::test]
    async fn an_frr_session_maps_to_peer_up_routes_end_of_rib_and_down_at_close() {
        let (evs, stats) = feed(FRR_SESSION.to_vec()).await;
        let kinds: Vec<&str> = evs
            .iter()
            .map(|e| match e {
                RouteEvent::PeerUp { .. } => "up",
                RouteEvent::Announce { .. } => "announce",
                RouteEvent::Withdraw { .. } => "withdraw",
                RouteEvent::EndOfRib { .. } => "eor",
                RouteEvent::PeerDown { .. } => "down",
                RouteEvent::PeerAlive { .. } => "alive",
            })
            .collect();
        // FRR sends End-of-RIB twice for the pre-policy table (one per sync phase).
        assert_eq!(kinds, ["up", "announce", "eor", "eor", "down"], "{evs:?}");
        let peer = evs[0].peer();
        assert_eq!(peer.peer_asn, 65001);
        assert_eq!(peer.peer_ip.to_string(), "10.99.0.21");
        assert_eq!(peer.collector, "127.0.0.1");
        let RouteEvent::Announce { prefixes, .. } = &evs[1] else {
            unreachable!()
        };
        assert_eq!(prefixes, &vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(stats.sessions_malformed.load(Ordering::Relaxed), 0);
    }

    /// `FRR_SESSION` cut into its messages (common header included).
    fn frr_messages() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = FRR_SESSION;
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            out.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        out
    }

    /// Message type 1 with `per_peer` (42 bytes): one gauge, routes in the Adj-RIB-In.
    fn stats_report(per_peer: &[u8]) -> Vec<u8> {
        let mut body = per_peer.to_vec();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&7u16.to_be_bytes());
        body.extend_from_slice(&8u16.to_be_bytes());
        body.extend_from_slice(&1u64.to_be_bytes());
        let mut m = vec![3];
        m.extend_from_slice(&((COMMON_HEADER_BYTES + body.len()) as u32).to_be_bytes());
        m.push(1);
        m.extend_from_slice(&body);
        m
    }

    #[tokio::test]
    async fn a_statistics_report_is_the_peer_heard() {
        let msgs = frr_messages();
        // Initiation, Peer Up, then a report on the same peer.
        assert_eq!((msgs[0][5], msgs[1][5]), (4, 3));
        let mut bytes = [msgs[0].clone(), msgs[1].clone()].concat();
        bytes.extend(stats_report(&msgs[1][6..48]));
        let (evs, _) = feed(bytes).await;
        assert!(
            matches!(evs.as_slice(), [RouteEvent::PeerUp { peer: a, .. }, RouteEvent::PeerAlive { peer: b, .. }, RouteEvent::PeerDown { .. }] if a == b && a.peer_asn == 65001),
            "{evs:?}"
        );
    }

    #[tokio::test]
    async fn messages_of_a_vrf_or_local_instance_are_dropped_and_counted() {
        for (peer_type, counter) in [(1u8, 0usize), (2, 1)] {
            let mut msgs = frr_messages();
            let stats = stats_report(&msgs[1][6..48]);
            msgs.push(stats);
            let mut with_header = 0;
            for m in &mut msgs {
                // Every message but Initiation and Termination has a per-peer header.
                if m[5] <= 3 {
                    m[6] = peer_type;
                    with_header += 1;
                }
            }
            assert_eq!(with_header, msgs.len() - 1);
            let (evs, stats) = feed(msgs.concat()).await;
            // No Peer Up, no routes: nor a Peer Down at the close.
            assert!(evs.is_empty(), "{evs:?}");
            let ignored: Vec<u64> = stats
                .ignored
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let mut want = vec![0; IGNORED_PEER_TYPES.len()];
            want[counter] = with_header as u64;
            assert_eq!(ignored, want);
            assert_eq!(stats.sessions_malformed.load(Ordering::Relaxed), 0);
        }
    }

    #[tokio::test]
    async fn a_malformed_message_closes_the_session_with_peer_down() {
        // The Initiation and Peer Up, then a message whose length exceeds the bound.
        let mut bytes = FRR_SESSION[..0x1e].to_vec();
        let up_len = u32::from_be_bytes(FRR_SESSION[0x1f..0x23].try_into().unwrap()) as usize;
        bytes.extend_from_slice(&FRR_SESSION[0x1e..0x1e + up_len]);
        bytes.extend_from_slice(&[3, 0xff, 0xff, 0xff, 0xff, 0]);
        let (evs, stats) = feed(bytes).await;
        assert!(
            matches!(evs.first(), Some(RouteEvent::PeerUp { .. })),
            "{evs:?}"
        );
        let Some(RouteEvent::PeerDown { reason, .. }) = evs.last() else {
            panic!("{evs:?}")
        };
        assert!(reason.contains("out of bounds"), "{reason}");
        assert_eq!(stats.sessions_malformed.load(Ordering::Relaxed), 1);
        // Garbage inside a well-framed message: a parse error, same outcome.
        let mut bytes = FRR_SESSION[..0x1e].to_vec();
        bytes.extend_from_slice(&[3, 0, 0, 0, 10, 0, 0xde, 0xad, 0xbe, 0xef]);
        let (_, stats) = feed(bytes).await;
        assert_eq!(stats.sessions_malformed.load(Ordering::Relaxed), 1);
    }
}
