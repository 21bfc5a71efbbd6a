//! MRT import (RFC 6396): RIB dumps (TABLE_DUMP_V2) and update files (BGP4MP), as
//! RouteViews and RIS archive them and as routers write them (`dump bgp` in FRR,
//! `mrt-dump` in GoBGP), turned into [`RouteEvent`]s for `replay`, backtests and the
//! initial table of RIS Live peers.
//!
//! A file is read record by record (never held whole); gzip and bzip2 files are
//! recognised by their first bytes and decompressed on the fly. A record whose body does
//! not parse is skipped and named by file and offset (in the decompressed stream); a
//! broken frame (a truncated file, a length past the limit) ends the file with an error
//! naming the offset, since no record boundary follows it.
//!
//! What each record becomes:
//! - a RIB dump: `PeerUp` for every peer of its peer index table, `Announce` of the
//!   prefixes each carries (in batches), and `EndOfRib` for every peer at the end of the
//!   dump, all at the dump's time;
//! - BGP4MP updates: `Announce`/`Withdraw` at their timestamps (unicast only), and an
//!   End-of-RIB marker (RFC 4724) as `EndOfRib`;
//! - BGP4MP state changes: entering Established is `PeerUp`, leaving it `PeerDown`.
//!
//! An update file alone does not say which sessions were up when it starts: the events
//! of its peers come without a `PeerUp` unless a RIB dump was read first or the file
//! holds their state changes.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use bgpkit_parser::models::{
    Afi, Bgp4MpEnum, BgpMessage, BgpState, BgpUpdateMessage, MrtMessage, NetworkPrefix, Safi,
    TableDumpV2Message, TableDumpV2Type,
};
use bgpkit_parser::{ParserError, chunk_mrt_record};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::event::{PeerKey, RouteEvent, SourceKind};

/// Prefixes per `Announce` event while reading a RIB dump: one event per (prefix, peer)
/// would be ~10M events for a full table from 10 peers; one per peer would hold the
/// whole table in memory.
pub const RIB_BATCH: usize = 4096;

/// Bad records listed by name in a summary (all are counted).
pub const MAX_BAD_LISTED: usize = 16;

/// Whom the peers of a file are reported as: the same peer heard in a RIB dump and in
/// the update files that follow it must have the same [`PeerKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MrtOrigin {
    pub source: SourceKind,
    /// The route collector that wrote the file (`rrc00`, `route-views2`, a router's name).
    pub collector: String,
}

impl MrtOrigin {
    pub fn new(source: SourceKind, collector: impl Into<String>) -> Self {
        MrtOrigin {
            source,
            collector: collector.into(),
        }
    }

    fn peer(&self, peer_ip: IpAddr, peer_asn: u32) -> PeerKey {
        PeerKey {
            source: self.source,
            collector: self.collector.clone(),
            peer_ip,
            peer_asn,
        }
    }
}

/// A record skipped because its body did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Byte offset of the record's header in the (decompressed) stream.
    pub offset: u64,
    pub reason: String,
}

/// What one file held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MrtSummary {
    pub records: u64,
    /// Peers listed by the RIB dumps' peer index tables.
    pub rib_peers: usize,
    /// Prefixes announced (RIB entries and update NLRI), per peer.
    pub announced: u64,
    pub withdrawn: u64,
    pub state_changes: u64,
    /// Records of a type or family that carries no unicast routes (OSPF, multicast, ...).
    pub ignored: u64,
    pub bad_records: u64,
    /// The first [`MAX_BAD_LISTED`] bad records.
    pub bad_listed: Vec<BadRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum MrtError {
    #[error("{file}: cannot read: {source}")]
    Open {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: broken MRT record at offset {offset}: {reason}")]
    Framing {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{file}: the receiver of route events is gone")]
    Closed { file: PathBuf },
}

/// Reads one MRT file (plain, gzip or bzip2), calling `emit` for each event in file
/// order; `emit` returns false to stop (the receiver is gone).
pub fn read_mrt_file(
    path: &Path,
    origin: &MrtOrigin,
    emit: &mut dyn FnMut(RouteEvent) -> bool,
) -> Result<MrtSummary, MrtError> {
    let open_err = |source| MrtError::Open {
        file: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let mut buffered = BufReader::with_capacity(1 << 16, file);
    let head = buffered.fill_buf().map_err(open_err)?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else if head.starts_with(b"BZh") {
        Box::new(BufReader::new(bzip2::read::MultiBzDecoder::new(buffered)))
    } else {
        Box::new(buffered)
    };
    read_mrt(reader, path, origin, emit)
}

/// Reads MRT records from `reader` (already decompressed); `file` names it in errors.
pub fn read_mrt(
    reader: impl Read,
    file: &Path,
    origin: &MrtOrigin,
    emit: &mut dyn FnMut(RouteEvent) -> bool,
) -> Result<MrtSummary, MrtError> {
    let mut input = Counting {
        inner: reader,
        read: 0,
    };
    let mut state = Reader {
        origin,
        emit,
        summary: MrtSummary::default(),
        rib: None,
    };
    let closed = || MrtError::Closed {
        file: file.to_path_buf(),
    };
    loop {
        let offset = input.read;
        let raw = match chunk_mrt_record(&mut input) {
            Ok(raw) => raw,
            Err(e) if matches!(e.error, ParserError::EofExpected) => break,
            Err(e) => {
                return Err(MrtError::Framing {
                    file: file.to_path_buf(),
                    offset,
                    reason: e.error.to_string(),
                });
            }
        };
        state.summary.records += 1;
        let header = raw.common_header;
        let at = timestamp(header.timestamp, header.microsecond_timestamp);
        let record = match raw.parse() {
            Ok(record) => record,
            Err(e) => {
                state.bad(file, offset, e.to_string());
                continue;
            }
        };
        if !state.record(record.message, at) {
            return Err(closed());
        }
    }
    if !state.finish_rib() {
        return Err(closed());
    }
    Ok(state.summary)
}

/// Reads one file on a blocking thread, sending its events to `tx`: the form sources
/// use (RIS Live's initial tables, a collector told to import a dump).
pub async fn send_mrt_file(
    path: PathBuf,
    origin: MrtOrigin,
    tx: mpsc::Sender<RouteEvent>,
) -> Result<MrtSummary, MrtError> {
    let file = path.clone();
    tokio::task::spawn_blocking(move || {
        read_mrt_file(&path, &origin, &mut |ev| tx.blocking_send(ev).is_ok())
    })
    .await
    .unwrap_or(Err(MrtError::Closed { file }))
}

/// The RIB dump being read: its peers by index, and each peer's prefixes not sent yet.
struct Rib {
    at: DateTime<Utc>,
    peers: HashMap<u16, PeerKey>,
    pending: HashMap<u16, Vec<IpNet>>,
}

struct Reader<'a> {
    origin: &'a MrtOrigin,
    emit: &'a mut dyn FnMut(RouteEvent) -> bool,
    summary: MrtSummary,
    rib: Option<Rib>,
}

impl Reader<'_> {
    fn bad(&mut self, file: &Path, offset: u64, reason: String) {
        self.summary.bad_records += 1;
        if self.summary.bad_listed.len() < MAX_BAD_LISTED {
            tracing::warn!(file = %file.display(), offset, %reason, "MRT record skipped");
            self.summary.bad_listed.push(BadRecord { offset, reason });
        }
    }

    /// Handles one record; false when the receiver is gone.
    fn record(&mut self, message: MrtMessage, at: DateTime<Utc>) -> bool {
        match message {
            MrtMessage::TableDumpV2Message(TableDumpV2Message::PeerIndexTable(table)) => {
                // A second dump in the same stream: the first one ends here.
                if !self.finish_rib() {
                    return false;
                }
                let mut peers = HashMap::new();
                for (index, peer) in table.id_peer_map {
                    // GoBGP lists 0.0.0.0 as the "peer" of locally originated routes:
                    // not a BGP session.
                    if peer.peer_ip.is_unspecified() {
                        continue;
                    }
                    peers.insert(index, self.origin.peer(peer.peer_ip, peer.peer_asn.into()));
                }
                self.summary.rib_peers += peers.len();
                let mut ordered: Vec<&PeerKey> = peers.values().collect();
                ordered.sort();
                for peer in ordered {
                    let peer = peer.clone();
                    if !(self.emit)(RouteEvent::PeerUp { peer, at }) {
                        return false;
                    }
                }
                self.rib = Some(Rib {
                    at,
                    peers,
                    pending: HashMap::new(),
                });
                true
            }
            MrtMessage::TableDumpV2Message(TableDumpV2Message::RibAfi(rib)) => {
                let unicast = matches!(
                    rib.rib_type,
                    TableDumpV2Type::RibIpv4Unicast
                        | TableDumpV2Type::RibIpv6Unicast
                        | TableDumpV2Type::RibIpv4UnicastAddPath
                        | TableDumpV2Type::RibIpv6UnicastAddPath
                );
                if !unicast {
                    self.summary.ignored += 1;
                    return true;
                }
                let indexes: Vec<u16> = rib.rib_entries.iter().map(|e| e.peer_index).collect();
                self.rib_entries(rib.prefix.prefix, &indexes)
            }
            MrtMessage::TableDumpV2Message(TableDumpV2Message::RibGeneric(rib)) => {
                if rib.safi != Safi::Unicast || !matches!(rib.afi, Afi::Ipv4 | Afi::Ipv6) {
                    self.summary.ignored += 1;
                    return true;
                }
                let indexes: Vec<u16> = rib.rib_entries.iter().map(|e| e.peer_index).collect();
                self.rib_entries(rib.nlri.prefix, &indexes)
            }
            MrtMessage::Bgp4Mp(Bgp4MpEnum::Message(msg)) => match msg.bgp_message {
                BgpMessage::Update(update) => {
                    let peer = self.origin.peer(msg.peer_ip, msg.peer_asn.into());
                    self.update(peer, update, at)
                }
                // OPEN, KEEPALIVE, NOTIFICATION (`dump bgp all`): the state changes
                // around them say what they did to the session.
                _ => true,
            },
            MrtMessage::Bgp4Mp(Bgp4MpEnum::StateChange(change)) => {
                self.summary.state_changes += 1;
                let peer = self.origin.peer(change.peer_ip, change.peer_asn.into());
                let up = BgpState::Established;
                if change.new_state == up && change.old_state != up {
                    (self.emit)(RouteEvent::PeerUp { peer, at })
                } else if change.old_state == up && change.new_state != up {
                    let reason =
                        format!("BGP state {:?} -> {:?}", change.old_state, change.new_state);
                    (self.emit)(RouteEvent::PeerDown { peer, at, reason })
                } else {
                    true
                }
            }
            _ => {
                self.summary.ignored += 1;
                true
            }
        }
    }

    fn rib_entries(&mut self, prefix: IpNet, indexes: &[u16]) -> bool {
        let Some(rib) = self.rib.as_mut() else {
            // RIB entries without a peer index table cannot name their peers.
            self.summary.ignored += 1;
            return true;
        };
        let mut full = Vec::new();
        for &index in indexes {
            if !rib.peers.contains_key(&index) {
                continue;
            }
            let pending = rib.pending.entry(index).or_default();
            // Add-path entries repeat a prefix for one peer.
            if pending.last() == Some(&prefix) {
                continue;
            }
            pending.push(prefix);
            self.summary.announced += 1;
            if pending.len() >= RIB_BATCH {
                full.push(index);
            }
        }
        full.into_iter().all(|index| self.flush_peer(index))
    }

    fn flush_peer(&mut self, index: u16) -> bool {
        let Some(rib) = self.rib.as_mut() else {
            return true;
        };
        let Some(prefixes) = rib.pending.remove(&index).filter(|p| !p.is_empty()) else {
            return true;
        };
        let ev = RouteEvent::Announce {
            peer: rib.peers[&index].clone(),
            prefixes,
            at: rib.at,
        };
        (self.emit)(ev)
    }

    /// Ends the RIB dump being read: what is pending, then `EndOfRib` for every peer.
    fn finish_rib(&mut self) -> bool {
        let Some(rib) = self.rib.as_ref() else {
            return true;
        };
        let mut indexes: Vec<u16> = rib.peers.keys().copied().collect();
        indexes.sort_unstable();
        for &index in &indexes {
            if !self.flush_peer(index) {
                return false;
            }
        }
        let Some(rib) = self.rib.take() else {
            return true;
        };
        let mut peers: Vec<PeerKey> = rib.peers.into_values().collect();
        peers.sort();
        peers
            .into_iter()
            .all(|peer| (self.emit)(RouteEvent::EndOfRib { peer, at: rib.at }))
    }

    fn update(&mut self, peer: PeerKey, update: BgpUpdateMessage, at: DateTime<Utc>) -> bool {
        if update.is_end_of_rib() {
            return (self.emit)(RouteEvent::EndOfRib { peer, at });
        }
        let unicast = |n: &&bgpkit_parser::models::Nlri| n.safi == Safi::Unicast;
        let announced: Vec<IpNet> = update
            .announced_prefixes
            .iter()
            .chain(
                update
                    .attributes
                    .get_reachable_nlri()
                    .filter(unicast)
                    .into_iter()
                    .flat_map(|n| n.prefixes.iter()),
            )
            .map(|p: &NetworkPrefix| p.prefix)
            .collect();
        let withdrawn: Vec<IpNet> = update
            .withdrawn_prefixes
            .iter()
            .chain(
                update
                    .attributes
                    .get_unreachable_nlri()
                    .filter(unicast)
                    .into_iter()
                    .flat_map(|n| n.prefixes.iter()),
            )
            .map(|p: &NetworkPrefix| p.prefix)
            .collect();
        self.summary.announced += announced.len() as u64;
        self.summary.withdrawn += withdrawn.len() as u64;
        if !withdrawn.is_empty() {
            let ev = RouteEvent::Withdraw {
                peer: peer.clone(),
                prefixes: withdrawn,
                at,
            };
            if !(self.emit)(ev) {
                return false;
            }
        }
        if announced.is_empty() {
            return true;
        }
        (self.emit)(RouteEvent::Announce {
            peer,
            prefixes: announced,
            at,
        })
    }
}

fn timestamp(secs: u32, micros: Option<u32>) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(secs), micros.unwrap_or(0).min(999_999) * 1000)
        .unwrap_or_default()
}

/// Counts the bytes read, so that a bad record can be named by its offset.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}
