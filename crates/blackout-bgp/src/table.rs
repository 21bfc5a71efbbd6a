//! The RIB: for each IPv4 and IPv6 prefix, which peers carry it, as one bitmap over
//! interned peers (a full table from ten peers is ~1.2M entries of 16-32 bytes, not ten
//! sets); which peers are healthy; and the quorum that makes a prefix visible. Every
//! change of a prefix's visibility goes to the [`Space`], which keeps the per-country
//! and per-network counts.
//!
//! Peer health is judged like vantage health: a peer counts when its session is up, its
//! initial table is complete and it carries a full table. A session that goes down
//! forgets the peer's routes without counting them as withdrawn: a reset is not a
//! country withdrawing its routes. A source's word that the session is alive without a
//! route (a BMP Statistics Report) keeps a quiet peer from going silent.
//!
//! The table has [`MAX_PEERS`] slots. When all are held, a new peer takes the slot of
//! one known not to carry a full table, forgotten as in a session down (see
//! [`Table::evicted`]): a RIS collector's many customer-cone peers would otherwise fill
//! the slots before the full-table peers that alone count.

use blackout_model::bgp::BgpVisibility;
use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::event::{PeerKey, RouteEvent, SourceKind};
use crate::prefix::Pfx;
use crate::space::{Cause, Space};

/// Peers held at once (one bit each in a prefix's bitmap). A peer that went down keeps
/// its slot until another needs it; so does a peer known not to carry a full table (see
/// [`Table::refused`]): only full-table peers count, and a route collector's many
/// partial-table peers (customer cones) must not lock the full-table ones out.
pub const MAX_PEERS: usize = 64;
/// Peers remembered as evicted (so that they do not evict back); past this many the
/// memory is cleared, which at worst lets them rotate through the slots again.
const MAX_EVICTED_REMEMBERED: usize = 65_536;
/// A peer carries a full table from this many prefixes (IPv4 and IPv6 together): a
/// full table is ~1M IPv4 and ~200k IPv6 prefixes; a partial one (a customer cone) far
/// fewer.
pub const DEFAULT_FULL_TABLE_MIN_PREFIXES: u32 = 500_000;
/// A peer whose source sent nothing about it for this long stops counting.
pub const DEFAULT_PEER_SILENCE_SECS: u64 = 600;
/// A changed entity is reported at most this often.
pub const EMIT_MIN_INTERVAL_SECS: i64 = 1;
/// Every entity is reported this often by default, changed or not.
pub const EMIT_ALL_INTERVAL_SECS: u64 = 60;

/// How the table judges peers and visibility.
#[derive(Debug, Clone, PartialEq)]
pub struct TableConfig {
    /// Healthy peers that must carry a prefix for it to be visible; `None`: half of the
    /// healthy peers, rounded up (at least one).
    pub peer_quorum: Option<u16>,
    pub full_table_min_prefixes: u32,
    /// 0: a quiet peer never stops counting.
    pub peer_silence_secs: u64,
    /// Every entity is reported this often, changed or not (the collector sets it to
    /// its detector's bin, so that every bin has a reading).
    pub emit_all_interval_secs: u64,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            peer_quorum: None,
            full_table_min_prefixes: DEFAULT_FULL_TABLE_MIN_PREFIXES,
            peer_silence_secs: DEFAULT_PEER_SILENCE_SECS,
            emit_all_interval_secs: EMIT_ALL_INTERVAL_SECS,
        }
    }
}

/// Where a peer stands, for metrics and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerState {
    /// Up, initial table not complete yet.
    Loading,
    /// Up, table complete, full table: counts towards the quorum.
    Healthy,
    /// Up, table complete, fewer than `full_table_min_prefixes` prefixes.
    Partial,
    /// Up, but nothing heard for `peer_silence_secs`.
    Silent,
    Down,
}

impl PeerState {
    pub const ALL: [PeerState; 5] = [
        PeerState::Loading,
        PeerState::Healthy,
        PeerState::Partial,
        PeerState::Silent,
        PeerState::Down,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Loading => "loading",
            PeerState::Healthy => "healthy",
            PeerState::Partial => "partial",
            PeerState::Silent => "silent",
            PeerState::Down => "down",
        }
    }
}

#[derive(Debug)]
struct Peer {
    key: PeerKey,
    /// `AS64500 192.0.2.1`, as evidence names it.
    label: String,
    up: bool,
    end_of_rib: bool,
    /// Latched when the table is complete with at least `full_table_min_prefixes`;
    /// dropped only below half of it, so that a country withdrawing its prefixes does
    /// not make the peers that saw it stop counting.
    full: bool,
    silent: bool,
    prefixes: u32,
    last_heard: DateTime<Utc>,
    /// When it took its slot or its session last came up: a RIS Live peer without a
    /// dump never reports End-of-RIB, so its time in the table stands for it.
    since: DateTime<Utc>,
}

impl Peer {
    fn state(&self) -> PeerState {
        match self {
            Peer { up: false, .. } => PeerState::Down,
            Peer { silent: true, .. } => PeerState::Silent,
            Peer { full: true, .. } => PeerState::Healthy,
            Peer {
                end_of_rib: true, ..
            } => PeerState::Partial,
            _ => PeerState::Loading,
        }
    }
}

/// The RIB and the visibility it gives the catalog's space.
#[derive(Debug)]
pub struct Table {
    config: TableConfig,
    peers: Vec<Peer>,
    index: FxHashMap<PeerKey, usize>,
    v4: FxHashMap<u64, u64>,
    v6: FxHashMap<u128, u64>,
    healthy: u64,
    quorum: u16,
    space: Space,
    last_all: Option<DateTime<Utc>>,
    refused_peers: u64,
    evicted_peers: u64,
    /// Peers evicted as not carrying a full table: they may take a free slot again,
    /// not evict another, until their session comes up anew (a new table may be full).
    evicted: FxHashSet<PeerKey>,
    ignored_prefixes: u64,
}

fn visible(bits: u64, healthy: u64, quorum: u16) -> bool {
    (bits & healthy).count_ones() >= u32::from(quorum.max(1))
}

impl Table {
    pub fn new(config: TableConfig, space: Space) -> Table {
        Table {
            config,
            peers: Vec::new(),
            index: FxHashMap::default(),
            v4: FxHashMap::default(),
            v6: FxHashMap::default(),
            healthy: 0,
            quorum: 1,
            space,
            last_all: None,
            refused_peers: 0,
            evicted_peers: 0,
            evicted: FxHashSet::default(),
            ignored_prefixes: 0,
        }
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Applies one event from a source.
    pub fn apply(&mut self, ev: &RouteEvent) {
        let at = ev.at();
        match ev {
            RouteEvent::PeerUp { peer, .. } => {
                self.evicted.remove(peer);
                let Some(i) = self.slot(peer, at) else { return };
                // A Peer Up for a peer already up: its session was reset and a new
                // table follows.
                self.forget(i);
                let p = &mut self.peers[i];
                p.up = true;
                p.end_of_rib = false;
                p.full = false;
                p.since = at;
                self.update_health();
            }
            RouteEvent::PeerDown { peer, .. } => {
                if let Some(&i) = self.index.get(peer) {
                    self.peers[i].up = false;
                    self.forget(i);
                    self.peers[i].last_heard = at;
                    self.update_health();
                }
            }
            RouteEvent::Announce { peer, prefixes, .. } => {
                let Some(i) = self.slot(peer, at) else { return };
                for net in prefixes {
                    match Pfx::from_net(net) {
                        Some(p) => self.set(i, p, true, at),
                        None => self.ignored_prefixes += 1,
                    }
                }
                let p = &mut self.peers[i];
                if !p.full && p.prefixes >= self.config.full_table_min_prefixes {
                    p.full = true;
                    self.update_health();
                }
            }
            RouteEvent::Withdraw { peer, prefixes, .. } => {
                let Some(i) = self.slot(peer, at) else { return };
                for net in prefixes {
                    if let Some(p) = Pfx::from_net(net) {
                        self.set(i, p, false, at);
                    }
                }
                let p = &mut self.peers[i];
                if p.full && p.prefixes < self.config.full_table_min_prefixes / 2 {
                    p.full = false;
                    self.update_health();
                }
            }
            RouteEvent::EndOfRib { peer, .. } => {
                let Some(i) = self.slot(peer, at) else { return };
                let p = &mut self.peers[i];
                p.end_of_rib = true;
                p.full = p.prefixes >= self.config.full_table_min_prefixes;
                self.update_health();
            }
            RouteEvent::PeerAlive { peer, .. } => {
                // Only a peer held and up: a statistics report names no routes, so
                // it neither takes a slot nor revives a peer reported down.
                let Some(&i) = self.index.get(peer) else {
                    return;
                };
                let p = &mut self.peers[i];
                if !p.up {
                    return;
                }
                p.last_heard = at;
                if p.silent {
                    p.silent = false;
                    self.update_health();
                }
            }
        }
    }

    /// Readings due at `now` (changed entities, coalesced; all of them every
    /// `emit_all_interval_secs`); also marks peers silent past `peer_silence_secs`.
    pub fn poll(&mut self, now: DateTime<Utc>) -> Vec<BgpVisibility> {
        if self.config.peer_silence_secs > 0 {
            let limit = self.config.peer_silence_secs as i64;
            let mut changed = false;
            for p in &mut self.peers {
                if p.up && !p.silent && (now - p.last_heard).num_seconds() >= limit {
                    p.silent = true;
                    changed = true;
                    tracing::warn!(peer = %p.key, silent_secs = limit, "BGP peer silent: it no longer counts towards the quorum");
                }
            }
            if changed {
                self.update_health();
            }
        }
        let all = self
            .last_all
            .is_none_or(|t| (now - t).num_seconds() >= self.config.emit_all_interval_secs as i64);
        if all {
            self.last_all = Some(now);
        }
        let healthy = self.healthy.count_ones() as u16;
        self.space
            .readings(now, all, EMIT_MIN_INTERVAL_SECS, healthy, self.quorum)
    }

    /// Every entity's reading now, whatever changed.
    pub fn readings_all(&mut self, now: DateTime<Utc>) -> Vec<BgpVisibility> {
        let healthy = self.healthy.count_ones() as u16;
        self.space.readings(now, true, 0, healthy, self.quorum)
    }

    /// Counts a new catalog's space (a catalog reload) from the routes held now; the
    /// old space's withdrawal evidence goes with it.
    pub fn replace_space(&mut self, space: Space) {
        self.space = space;
        let (h, q) = (self.healthy, self.quorum);
        let Table { v4, v6, space, .. } = self;
        for (&k, &bits) in v4.iter() {
            if visible(bits, h, q) {
                space.toggle(Pfx::from_v4_key(k), true, Cause::Other);
            }
        }
        for (&k, &bits) in v6.iter() {
            if visible(bits, h, q) {
                space.toggle(Pfx::from_v6_key(k), true, Cause::Other);
            }
        }
    }

    /// Every entity's reading now, leaving what is due to [`Table::poll`] unchanged.
    pub fn current(&self, now: DateTime<Utc>) -> Vec<BgpVisibility> {
        self.space.peek(now, self.peers_healthy(), self.quorum)
    }

    /// Peers per (source, state).
    pub fn peer_states(&self) -> FxHashMap<(SourceKind, PeerState), u64> {
        let mut out = FxHashMap::default();
        for p in &self.peers {
            *out.entry((p.key.source, p.state())).or_default() += 1;
        }
        out
    }

    pub fn peer_state(&self, key: &PeerKey) -> Option<PeerState> {
        self.index.get(key).map(|&i| self.peers[i].state())
    }

    /// Distinct IPv4 and IPv6 prefixes held (carried by at least one peer).
    pub fn prefixes(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    pub fn peers_healthy(&self) -> u16 {
        self.healthy.count_ones() as u16
    }

    pub fn quorum(&self) -> u16 {
        self.quorum
    }

    /// Events of new peers refused because [`MAX_PEERS`] were held and none could be
    /// evicted, and prefixes ignored (IPv6 longer than /120).
    pub fn refused(&self) -> (u64, u64) {
        (self.refused_peers, self.ignored_prefixes)
    }

    /// Peers evicted from their slot for a new peer, being known not to carry a full
    /// table: up with their initial table complete (End-of-RIB, or the end of a RIB
    /// dump) and below `full_table_min_prefixes`, or, for RIS Live without a dump
    /// (never an End-of-RIB), held longer than `peer_silence_secs` without reaching
    /// it. Their routes were forgotten as for a session down, not counted as withdrawn.
    pub fn evicted(&self) -> u64 {
        self.evicted_peers
    }

    /// Whether `p` is known not to carry a full table at `now` (see [`Table::evicted`]).
    fn evictable(&self, p: &Peer, now: DateTime<Utc>) -> bool {
        if !p.up || p.full {
            return false;
        }
        if p.end_of_rib {
            return true;
        }
        // A BMP peer still loading may be a full table arriving slowly: only RIS Live,
        // which never says a table is complete, is judged by time.
        let limit = self.config.peer_silence_secs as i64;
        p.key.source == SourceKind::RisLive && limit > 0 && (now - p.since).num_seconds() >= limit
    }

    /// A slot for a new peer when all are held: a down peer's (it holds no routes), else
    /// that of the peer known not to carry a full table with the fewest prefixes (the
    /// least lost; a RIS Live full table still being learnt from the stream has more).
    fn free_slot(&mut self, key: &PeerKey, at: DateTime<Utc>) -> Option<usize> {
        if let Some(i) = self.peers.iter().position(|p| !p.up) {
            return Some(i);
        }
        if self.evicted.contains(key) {
            return None;
        }
        let i = (0..self.peers.len())
            .filter(|&i| self.evictable(&self.peers[i], at))
            .min_by_key(|&i| self.peers[i].prefixes)?;
        let (old, held) = (self.peers[i].key.clone(), self.peers[i].prefixes);
        self.forget(i);
        self.peers[i].up = false;
        self.update_health();
        self.evicted_peers += 1;
        if self.evicted.len() >= MAX_EVICTED_REMEMBERED {
            self.evicted.clear();
        }
        tracing::info!(peer = %old, prefixes_held = held, new_peer = %key, evicted = self.evicted_peers, "BGP table full of peers; evicting one without a full table");
        self.evicted.insert(old);
        Some(i)
    }

    /// The slot of `key`, interning it (implicitly up: RIS Live and MRT name peers
    /// only in their routes).
    fn slot(&mut self, key: &PeerKey, at: DateTime<Utc>) -> Option<usize> {
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => {
                let i = if self.peers.len() < MAX_PEERS {
                    self.peers.push(Peer {
                        key: key.clone(),
                        label: format!("AS{} {}", key.peer_asn, key.peer_ip),
                        up: true,
                        end_of_rib: false,
                        full: false,
                        silent: false,
                        prefixes: 0,
                        last_heard: at,
                        since: at,
                    });
                    self.peers.len() - 1
                } else if let Some(i) = self.free_slot(key, at) {
                    self.index.remove(&self.peers[i].key);
                    let p = &mut self.peers[i];
                    p.key = key.clone();
                    p.label = format!("AS{} {}", key.peer_asn, key.peer_ip);
                    p.prefixes = 0;
                    i
                } else {
                    self.refused_peers += 1;
                    if self.refused_peers == 1 || self.refused_peers.is_power_of_two() {
                        tracing::warn!(peer = %key, max_peers = MAX_PEERS, refused = self.refused_peers, "BGP table full of peers; ignoring this one");
                    }
                    return None;
                };
                self.index.insert(key.clone(), i);
                i
            }
        };
        let p = &mut self.peers[i];
        p.last_heard = at;
        let mut changed = false;
        if !p.up {
            p.up = true;
            p.end_of_rib = false;
            p.full = false;
            p.since = at;
            changed = true;
        }
        if p.silent {
            p.silent = false;
            changed = true;
        }
        if changed {
            self.update_health();
        }
        Some(i)
    }

    /// Peer `i` carries `p` (or no longer does).
    fn set(&mut self, i: usize, p: Pfx, carry: bool, at: DateTime<Utc>) {
        let bit = 1u64 << i;
        let (old, new) = match p {
            Pfx::V4(a, l) => flip(self.v4.entry(Pfx::v4_key(a, l)), bit, carry),
            Pfx::V6(a, l) => flip(self.v6.entry(Pfx::v6_key(a, l)), bit, carry),
        };
        if old == new {
            return;
        }
        let peer = &mut self.peers[i];
        if carry {
            peer.prefixes += 1;
        } else {
            peer.prefixes = peer.prefixes.saturating_sub(1);
        }
        if self.healthy & bit == 0 {
            return;
        }
        let (was, is) = (
            visible(old, self.healthy, self.quorum),
            visible(new, self.healthy, self.quorum),
        );
        if was == is {
            return;
        }
        if is {
            self.space.toggle(p, true, Cause::Other);
        } else {
            let lost = self.healthy & !new;
            let peers: Vec<String> = self
                .peers
                .iter()
                .enumerate()
                .filter(|(j, _)| lost & (1u64 << j) != 0)
                .map(|(_, q)| q.label.clone())
                .collect();
            self.space
                .toggle(p, false, Cause::Withdrawal { at, peers: &peers });
        }
    }

    /// Drops every route of peer `i`, as no withdrawal.
    fn forget(&mut self, i: usize) {
        let bit = 1u64 << i;
        let (healthy, quorum) = (self.healthy, self.quorum);
        let Table { v4, v6, space, .. } = self;
        v4.retain(|&k, bits| {
            if *bits & bit != 0 {
                let was = visible(*bits, healthy, quorum);
                *bits &= !bit;
                if was && !visible(*bits, healthy, quorum) {
                    space.toggle(Pfx::from_v4_key(k), false, Cause::Other);
                }
            }
            *bits != 0
        });
        v6.retain(|&k, bits| {
            if *bits & bit != 0 {
                let was = visible(*bits, healthy, quorum);
                *bits &= !bit;
                if was && !visible(*bits, healthy, quorum) {
                    space.toggle(Pfx::from_v6_key(k), false, Cause::Other);
                }
            }
            *bits != 0
        });
        self.peers[i].prefixes = 0;
    }

    /// Recomputes the healthy peers and the quorum; when they changed, every prefix's
    /// visibility is judged again (as no withdrawal: peers changed, not routes).
    fn update_health(&mut self) {
        let mut healthy = 0u64;
        for (i, p) in self.peers.iter().enumerate() {
            if p.state() == PeerState::Healthy {
                healthy |= 1 << i;
            }
        }
        let n = healthy.count_ones() as u16;
        let quorum = self.config.peer_quorum.unwrap_or(n.div_ceil(2)).max(1);
        if healthy == self.healthy && quorum == self.quorum {
            return;
        }
        let (h0, q0) = (self.healthy, self.quorum);
        let Table { v4, v6, space, .. } = self;
        for (&k, &bits) in v4.iter() {
            let (was, is) = (visible(bits, h0, q0), visible(bits, healthy, quorum));
            if was != is {
                space.toggle(Pfx::from_v4_key(k), is, Cause::Other);
            }
        }
        for (&k, &bits) in v6.iter() {
            let (was, is) = (visible(bits, h0, q0), visible(bits, healthy, quorum));
            if was != is {
                space.toggle(Pfx::from_v6_key(k), is, Cause::Other);
            }
        }
        space.mark_all_dirty();
        self.healthy = healthy;
        self.quorum = quorum;
        tracing::info!(peers_healthy = n, quorum, "BGP healthy peers changed");
    }
}

/// Sets or clears `bit` in a map entry; an entry left without bits is removed.
fn flip<K: std::hash::Hash + Eq>(
    e: std::collections::hash_map::Entry<'_, K, u64>,
    bit: u64,
    carry: bool,
) -> (u64, u64) {
    use std::collections::hash_map::Entry;
    match (e, carry) {
        (Entry::Occupied(mut o), true) => {
            let old = *o.get();
            *o.get_mut() |= bit;
            (old, old | bit)
        }
        (Entry::Vacant(v), true) => {
            v.insert(bit);
            (0, bit)
        }
        (Entry::Occupied(mut o), false) => {
            let old = *o.get();
            let new = old & !bit;
            if new == 0 {
                o.remove();
            } else {
                *o.get_mut() = new;
            }
            (old, new)
        }
        (Entry::Vacant(_), false) => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    fn peer(n: u8) -> PeerKey {
        PeerKey {
            source: SourceKind::Bmp,
            collector: "192.0.2.254".into(),
            peer_ip: format!("192.0.2.{n}").parse().unwrap(),
            peer_asn: 64600 + u32::from(n),
        }
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    const ALL: [&str; 3] = ["10.0.0.0/16", "10.1.0.0/24", "10.2.0.0/24"];

    /// Three full-table peers (min 3 prefixes) carrying the catalog's space.
    fn loaded(quorum: Option<u16>) -> Table {
        let space = Space::from_blocks([
            ("AA", 64500, "10.0.0.0/22".parse().unwrap()),
            ("AA", 64501, "10.1.0.0/24".parse().unwrap()),
            ("BB", 64502, "10.2.0.0/24".parse().unwrap()),
        ]);
        let config = TableConfig {
            peer_quorum: quorum,
            full_table_min_prefixes: 3,
            peer_silence_secs: 0,
            ..TableConfig::default()
        };
        let mut t = Table::new(config, space);
        let at = Utc::now();
        for n in 1..=3 {
            t.apply(&RouteEvent::PeerUp { peer: peer(n), at });
            t.apply(&RouteEvent::Announce {
                peer: peer(n),
                prefixes: nets(&ALL),
                at,
            });
            t.apply(&RouteEvent::EndOfRib { peer: peer(n), at });
        }
        t
    }

    fn get(t: &mut Table, c: &str, asn: Option<u32>) -> BgpVisibility {
        t.readings_all(Utc::now())
            .into_iter()
            .find(|r| r.country == c && r.asn == asn)
            .unwrap()
    }

    #[test]
    fn full_table_peers_become_healthy_and_the_quorum_is_half_of_them() {
        let t = loaded(None);
        assert_eq!(t.peers_healthy(), 3);
        assert_eq!(t.quorum(), 2);
        assert_eq!(t.prefixes(), (3, 0));
        let mut t = t;
        let aa = get(&mut t, "AA", None);
        assert_eq!((aa.visible_slash24, aa.total_slash24), (5, 5));
        assert_eq!(aa.share(), Some(1.0));
    }

    #[test]
    fn a_withdrawal_by_a_quorum_hides_the_space_and_names_prefixes_and_peers() {
        let mut t = loaded(None);
        let at = Utc::now();
        t.apply(&RouteEvent::Withdraw {
            peer: peer(1),
            prefixes: nets(&["10.0.0.0/16"]),
            at,
        });
        // One peer of three: the quorum of two still carries it.
        assert_eq!(get(&mut t, "AA", None).visible_slash24, 5);
        let at2 = at + chrono::Duration::seconds(1);
        t.apply(&RouteEvent::Withdraw {
            peer: peer(2),
            prefixes: nets(&["10.0.0.0/16"]),
            at: at2,
        });
        let aa = get(&mut t, "AA", Some(64500));
        assert_eq!(aa.visible_slash24, 0);
        let w = aa.withdrawals.expect("evidence");
        assert_eq!(w.prefixes_withdrawn, 1);
        assert_eq!(w.examples, vec!["10.0.0.0/16"]);
        assert_eq!(w.peers, vec!["AS64601 192.0.2.1", "AS64602 192.0.2.2"]);
        assert_eq!(w.first_withdrawal_at, at2);
        assert_eq!(get(&mut t, "AA", Some(64501)).visible_slash24, 1);
        assert_eq!(get(&mut t, "BB", None).visible_slash24, 1);
        // Still three healthy peers: a full table is not lost with one country.
        assert_eq!(t.peers_healthy(), 3);
    }

    #[test]
    fn a_peer_going_down_forgets_its_routes_without_a_withdrawal() {
        let mut t = loaded(None);
        let at = Utc::now();
        t.apply(&RouteEvent::PeerDown {
            peer: peer(1),
            at,
            reason: "test".into(),
        });
        assert_eq!(t.peer_state(&peer(1)), Some(PeerState::Down));
        assert_eq!((t.peers_healthy(), t.quorum()), (2, 1));
        let aa = get(&mut t, "AA", None);
        assert_eq!(aa.visible_slash24, 5);
        assert!(aa.withdrawals.is_none());
        // All down: nothing visible, no evidence, and the share is unknown, not zero.
        for n in 2..=3 {
            t.apply(&RouteEvent::PeerDown {
                peer: peer(n),
                at,
                reason: "test".into(),
            });
        }
        assert_eq!(t.prefixes(), (0, 0));
        let aa = get(&mut t, "AA", None);
        assert_eq!(aa.visible_slash24, 0);
        assert!(aa.withdrawals.is_none());
        assert_eq!(aa.share(), None);
        // Back up with its table: visible again.
        t.apply(&RouteEvent::PeerUp { peer: peer(1), at });
        assert_eq!(t.peer_state(&peer(1)), Some(PeerState::Loading));
        t.apply(&RouteEvent::Announce {
            peer: peer(1),
            prefixes: nets(&ALL),
            at,
        });
        assert_eq!(t.peer_state(&peer(1)), Some(PeerState::Healthy));
        assert_eq!(get(&mut t, "AA", None).visible_slash24, 5);
    }

    #[test]
    fn a_partial_peer_does_not_count_and_a_configured_quorum_is_kept() {
        let mut t = loaded(Some(3));
        let at = Utc::now();
        t.apply(&RouteEvent::PeerUp { peer: peer(4), at });
        t.apply(&RouteEvent::Announce {
            peer: peer(4),
            prefixes: nets(&["10.2.0.0/24"]),
            at,
        });
        t.apply(&RouteEvent::EndOfRib { peer: peer(4), at });
        assert_eq!(t.peer_state(&peer(4)), Some(PeerState::Partial));
        assert_eq!((t.peers_healthy(), t.quorum()), (3, 3));
        t.apply(&RouteEvent::Withdraw {
            peer: peer(3),
            prefixes: nets(&["10.2.0.0/24"]),
            at,
        });
        assert_eq!(get(&mut t, "BB", None).visible_slash24, 0);
    }

    #[test]
    fn a_new_space_is_counted_from_the_routes_held() {
        let mut t = loaded(None);
        t.replace_space(Space::from_blocks([
            ("BB", 64502, "10.2.0.0/24".parse().unwrap()),
            ("CC", 64509, "10.9.0.0/24".parse().unwrap()),
        ]));
        assert_eq!(get(&mut t, "BB", None).visible_slash24, 1);
        assert_eq!(get(&mut t, "CC", None).visible_slash24, 0);
        assert_eq!(get(&mut t, "CC", None).total_slash24, 1);
    }

    fn ris(n: u8) -> PeerKey {
        PeerKey {
            source: SourceKind::RisLive,
            collector: "rrc00".into(),
            ..peer(n)
        }
    }

    /// `loaded` then partial BMP peers 4..=63 (table complete, 10.2.0.0/24 and one
    /// prefix of their own; peer 4 without its own) and peer 64 still loading.
    fn full_of_peers() -> Table {
        let mut t = loaded(None);
        let at = Utc::now();
        for n in 4..=64u8 {
            t.apply(&RouteEvent::PeerUp { peer: peer(n), at });
            let mut v = vec!["10.2.0.0/24".to_string()];
            if n > 4 {
                v.push(format!("10.9.{n}.0/24"));
            }
            t.apply(&RouteEvent::Announce {
                peer: peer(n),
                prefixes: v.iter().map(|s| s.parse().unwrap()).collect(),
                at,
            });
            if n < 64 {
                t.apply(&RouteEvent::EndOfRib { peer: peer(n), at });
            }
        }
        assert_eq!(t.peers.len(), MAX_PEERS);
        t
    }

    #[test]
    fn a_new_peer_takes_the_slot_of_a_partial_one_when_all_are_held() {
        let mut t = full_of_peers();
        let at = Utc::now();
        let held = t.prefixes().0;
        t.apply(&RouteEvent::PeerUp { peer: peer(65), at });
        // Peer 4, partial with the fewest prefixes, gave its slot; its route is gone
        // as in a session down, not withdrawn.
        assert_eq!((t.evicted(), t.refused().0), (1, 0));
        assert_eq!(t.peer_state(&peer(65)), Some(PeerState::Loading));
        assert_eq!(t.peer_state(&peer(4)), None);
        assert_eq!(t.prefixes().0, held);
        assert_eq!((t.peers_healthy(), t.quorum()), (3, 2));
        let bb = get(&mut t, "BB", None);
        assert_eq!(bb.visible_slash24, 1);
        assert!(bb.withdrawals.is_none());
        // A partial peer's own prefix goes with it.
        t.apply(&RouteEvent::Announce {
            peer: peer(66),
            prefixes: nets(&["10.2.0.0/24"]),
            at,
        });
        assert_eq!(t.evicted(), 2);
        assert_eq!(t.peer_state(&peer(5)), None);
        assert_eq!(t.prefixes().0, held - 1);
        // The evicted peer does not evict back (they would rotate for ever)...
        t.apply(&RouteEvent::Announce {
            peer: peer(4),
            prefixes: nets(&["10.2.0.0/24"]),
            at,
        });
        assert_eq!((t.evicted(), t.refused().0), (2, 1));
        assert_eq!(t.peer_state(&peer(4)), None);
        // ...until its session comes up again, with a table that may be full.
        t.apply(&RouteEvent::PeerUp { peer: peer(4), at });
        assert_eq!((t.evicted(), t.refused().0), (3, 1));
        assert_eq!(t.peer_state(&peer(4)), Some(PeerState::Loading));
        // Full-table and loading peers are never evicted.
        for n in 6..=63u8 {
            t.apply(&RouteEvent::PeerDown {
                peer: peer(n),
                at,
                reason: "test".into(),
            });
        }
        for n in 70..=126u8 {
            t.apply(&RouteEvent::PeerUp { peer: peer(n), at });
        }
        assert_eq!(t.refused().0, 1);
        t.apply(&RouteEvent::PeerUp {
            peer: peer(128),
            at,
        });
        assert_eq!((t.evicted(), t.refused().0), (3, 2));
        for n in [1, 2, 3] {
            assert_eq!(t.peer_state(&peer(n)), Some(PeerState::Healthy));
        }
        assert_eq!(t.peer_state(&peer(64)), Some(PeerState::Loading));
    }

    #[test]
    fn a_ris_live_peer_without_a_dump_is_partial_once_held_past_the_silence_limit() {
        let mut t = loaded(None);
        t.config.peer_silence_secs = 600;
        let at = Utc::now();
        // Never an End-of-RIB: the RIS peers only announce; a BMP peer still loading.
        for n in 4..=63u8 {
            t.apply(&RouteEvent::Announce {
                peer: ris(n),
                prefixes: nets(&["10.2.0.0/24"]),
                at,
            });
        }
        t.apply(&RouteEvent::PeerUp { peer: peer(64), at });
        let new = |n| RouteEvent::Announce {
            peer: ris(n),
            prefixes: nets(&["10.1.0.0/24"]),
            at: at + chrono::Duration::seconds(599),
        };
        t.apply(&new(65));
        assert_eq!((t.evicted(), t.refused().0), (0, 1));
        let later = at + chrono::Duration::seconds(600);
        t.apply(&RouteEvent::Announce {
            peer: ris(66),
            prefixes: nets(&["10.1.0.0/24"]),
            at: later,
        });
        assert_eq!((t.evicted(), t.refused().0), (1, 1));
        assert_eq!(t.peer_state(&ris(66)), Some(PeerState::Loading));
        assert_eq!(t.peer_state(&peer(64)), Some(PeerState::Loading));
        // A dump read makes a RIS peer's table complete: then it is judged at once.
        t.apply(&RouteEvent::PeerUp {
            peer: ris(66),
            at: later,
        });
        t.apply(&RouteEvent::EndOfRib {
            peer: ris(66),
            at: later,
        });
        assert_eq!(t.peer_state(&ris(66)), Some(PeerState::Partial));
    }

    #[test]
    fn a_statistics_report_keeps_a_quiet_peer_from_going_silent() {
        let mut t = loaded(None);
        t.config.peer_silence_secs = 60;
        let at = Utc::now();
        t.apply(&RouteEvent::PeerAlive {
            peer: peer(1),
            at: at + chrono::Duration::seconds(50),
        });
        // Nor does a report take a slot or revive a peer.
        t.apply(&RouteEvent::PeerAlive {
            peer: peer(9),
            at: at + chrono::Duration::seconds(50),
        });
        assert_eq!(t.peer_state(&peer(9)), None);
        t.poll(at + chrono::Duration::seconds(61));
        assert_eq!(t.peer_state(&peer(1)), Some(PeerState::Healthy));
        assert_eq!(t.peer_state(&peer(2)), Some(PeerState::Silent));
        assert_eq!(t.peers_healthy(), 1);
        // A silent peer reported on again counts again.
        t.apply(&RouteEvent::PeerAlive {
            peer: peer(2),
            at: at + chrono::Duration::seconds(62),
        });
        assert_eq!(t.peers_healthy(), 2);
        t.apply(&RouteEvent::PeerDown {
            peer: peer(3),
            at,
            reason: "test".into(),
        });
        t.apply(&RouteEvent::PeerAlive {
            peer: peer(3),
            at: at + chrono::Duration::seconds(62),
        });
        assert_eq!(t.peer_state(&peer(3)), Some(PeerState::Down));
    }

    #[test]
    fn a_silent_peer_stops_counting_until_it_speaks() {
        let mut t = loaded(None);
        t.config.peer_silence_secs = 60;
        let later = Utc::now() + chrono::Duration::seconds(61);
        t.poll(later);
        assert_eq!(t.peers_healthy(), 0);
        t.apply(&RouteEvent::Announce {
            peer: peer(2),
            prefixes: nets(&["10.9.0.0/24"]),
            at: later,
        });
        assert_eq!(t.peer_state(&peer(2)), Some(PeerState::Healthy));
        assert_eq!(t.peers_healthy(), 1);
    }
}
