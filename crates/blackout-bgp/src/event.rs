//! What every route source emits: the seam between sources and the table.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

/// Which kind of source heard a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// A router or route collector streaming BMP (RFC 7854) to the collector.
    Bmp,
    /// RIPE RIS Live (websocket).
    RisLive,
    /// An MRT file (RIB dump or updates), for replay and backtests.
    Mrt,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Bmp => "bmp",
            SourceKind::RisLive => "ris_live",
            SourceKind::Mrt => "mrt",
        }
    }
}

/// One BGP peer as heard through one source: the same peer heard through two route
/// collectors is two peers (their views can differ).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub source: SourceKind,
    /// The router or route collector that reported the peer: the BMP speaker's address
    /// or sysName, the RIS collector (`rrc00`), the MRT file's collector.
    pub collector: String,
    pub peer_ip: IpAddr,
    pub peer_asn: u32,
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AS{} {} via {} {}",
            self.peer_asn,
            self.peer_ip,
            self.source.as_str(),
            self.collector
        )
    }
}

/// What a source heard, in the order it heard it.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteEvent {
    /// A session came up (BMP Peer Up, RIS peer state "connected", the first record of a
    /// peer in an MRT RIB dump): its table follows.
    PeerUp { peer: PeerKey, at: DateTime<Utc> },
    /// A session went down or the source lost the peer (BMP Peer Down or Termination,
    /// the BMP TCP session closed, RIS peer state "down", the websocket closed). Its routes
    /// are forgotten without counting as withdrawals.
    PeerDown {
        peer: PeerKey,
        at: DateTime<Utc>,
        reason: String,
    },
    /// The peer carries these prefixes (announced or re-announced; the path is not kept).
    Announce {
        peer: PeerKey,
        prefixes: Vec<IpNet>,
        at: DateTime<Utc>,
    },
    /// The peer withdrew these prefixes.
    Withdraw {
        peer: PeerKey,
        prefixes: Vec<IpNet>,
        at: DateTime<Utc>,
    },
    /// The peer's initial table is complete (End-of-RIB marker, or the end of an MRT RIB
    /// dump): from here on its prefix count says whether it is a full-table peer.
    EndOfRib { peer: PeerKey, at: DateTime<Utc> },
    /// The source says the peer's session is alive without any route change (a BMP
    /// Statistics Report): a quiet full-table peer is heard, not silent. Never brings
    /// a peer up or takes a slot in the table.
    PeerAlive { peer: PeerKey, at: DateTime<Utc> },
}

impl RouteEvent {
    /// Appends what one UPDATE said: its withdrawals, then its announcements (each only
    /// if there is one), in the order a table must apply them.
    pub fn push_update(
        out: &mut Vec<RouteEvent>,
        peer: &PeerKey,
        withdrawn: Vec<IpNet>,
        announced: Vec<IpNet>,
        at: DateTime<Utc>,
    ) {
        if !withdrawn.is_empty() {
            out.push(RouteEvent::Withdraw {
                peer: peer.clone(),
                prefixes: withdrawn,
                at,
            });
        }
        if !announced.is_empty() {
            out.push(RouteEvent::Announce {
                peer: peer.clone(),
                prefixes: announced,
                at,
            });
        }
    }

    pub fn peer(&self) -> &PeerKey {
        match self {
            RouteEvent::PeerUp { peer, .. }
            | RouteEvent::PeerDown { peer, .. }
            | RouteEvent::Announce { peer, .. }
            | RouteEvent::Withdraw { peer, .. }
            | RouteEvent::EndOfRib { peer, .. }
            | RouteEvent::PeerAlive { peer, .. } => peer,
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        match self {
            RouteEvent::PeerUp { at, .. }
            | RouteEvent::PeerDown { at, .. }
            | RouteEvent::Announce { at, .. }
            | RouteEvent::Withdraw { at, .. }
            | RouteEvent::EndOfRib { at, .. }
            | RouteEvent::PeerAlive { at, .. } => *at,
        }
    }
}
