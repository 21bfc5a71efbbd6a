//! The catalog's address space as routes see it: the catalog's blocks per country and
//! network, how many visible prefixes cover each, and per entity the count of covered
//! blocks and the evidence of withdrawals.
//!
//! A block counts as visible when **any** covering prefix is visible, not only its
//! longest match: traffic follows the longest match among the routes a router holds, so
//! when a more specific route is withdrawn and a covering one stays, the space is still
//! reachable through it. Longest match among *visible* prefixes gives the same answer;
//! longest match among *carried* prefixes would call a block dark because a /24 below
//! quorum hides its /16. Counting covers makes an announce or a withdrawal cost only the
//! blocks it spans (a range of the sorted block list), the hot path.
//!
//! Blocks are IPv4 /24s (as IODA counts) and IPv6 /48s (the catalog's IPv6 block);
//! a catalog block of another size is split into, or counted as, the blocks it spans.
//! Prefixes longer than a block cover none, nor do default routes and other prefixes
//! shorter than /8 (IPv4) or /12 (IPv6).

use std::collections::HashMap;

use blackout_model::bgp::{BgpVisibility, BgpWithdrawals};
use blackout_model::catalog::{CatalogFile, NO_COUNTRY, Target, TargetKind};
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use rustc_hash::FxHashSet;

use crate::prefix::{Pfx, v4_range, v6_range};

/// IPv4 block length counted.
pub const V4_BLOCK_LEN: u8 = 24;
/// IPv6 block length counted.
pub const V6_BLOCK_LEN: u8 = 48;
/// Shorter IPv4 prefixes cover no block: a default route (some peers send one) or a
/// /4 says nothing about any country, and would hide every withdrawal under it.
pub const V4_MIN_COVER_LEN: u8 = 8;
/// The same for IPv6 (the RIRs' allocations are /12 and longer; a peer's ::/0 or
/// 2000::/3 is not a route to anyone in particular).
pub const V6_MIN_COVER_LEN: u8 = 12;

#[derive(Debug, Clone, Copy)]
struct Block<A> {
    start: A,
    /// The (country, asn) entity; its country entity is that entity's parent.
    entity: u32,
    /// Visible prefixes covering the block.
    cover: u16,
}

/// One country (`asn: None`) or one of its networks.
#[derive(Debug)]
struct Entity {
    country: String,
    asn: Option<u32>,
    parent: Option<u32>,
    total: u32,
    visible: u32,
    dirty: bool,
    last_emit: Option<DateTime<Utc>>,
    /// Prefixes covering the entity's blocks that a withdrawal made invisible and that
    /// are not visible again.
    withdrawn: FxHashSet<Pfx>,
    peers: Vec<String>,
    first_withdrawal_at: Option<DateTime<Utc>>,
    /// Stamp of the last toggle that touched the entity (dedup within one toggle).
    seen: u64,
}

/// Why a prefix's visibility changed.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'a> {
    /// A peer withdrew it (the last of a quorum): evidence. `peers` are the healthy
    /// peers that no longer carry it.
    Withdrawal {
        at: DateTime<Utc>,
        peers: &'a [String],
    },
    /// Announcements, or peers' health changing (a session reset, a peer falling
    /// silent): never evidence of a withdrawal.
    Other,
}

/// The catalog's space and its per-entity visibility counts.
#[derive(Debug, Default)]
pub struct Space {
    v4: Vec<Block<u32>>,
    v6: Vec<Block<u128>>,
    entities: Vec<Entity>,
    stamp: u64,
}

impl Space {
    /// The watched blocks of the catalog's ICMP targets (control catalogs and `ZZ` are
    /// left out: they are no country's space).
    pub fn from_targets(targets: &[Target]) -> Space {
        let mut index: HashMap<(String, Option<u32>), u32> = HashMap::new();
        let mut entities: Vec<Entity> = Vec::new();
        let mut entity = |country: &str, asn: Option<u32>| -> u32 {
            let parent = asn.map(|_| {
                *index
                    .get(&(country.to_string(), None))
                    .expect("country first")
            });
            *index.entry((country.to_string(), asn)).or_insert_with(|| {
                entities.push(Entity::new(country, asn, parent));
                (entities.len() - 1) as u32
            })
        };
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for t in targets {
            let TargetKind::Icmp { block, .. } = &t.kind else {
                continue;
            };
            if t.control || t.country == NO_COUNTRY {
                continue;
            }
            entity(&t.country, None);
            let e = entity(&t.country, Some(t.asn));
            push_blocks(block, e, &mut v4, &mut v6);
        }
        Space::build(entities, v4, v6)
    }

    /// As [`Space::from_targets`], from the catalog files as written (prefix entries are
    /// not expanded into targets first: the collector keeps no expanded catalog).
    pub fn from_files(files: &[CatalogFile]) -> Space {
        Space::from_blocks(
            files
                .iter()
                .filter(|f| !f.control && f.country != NO_COUNTRY)
                .flat_map(|f| {
                    f.icmp
                        .iter()
                        .map(move |e| (f.country.as_str(), e.asn, e.prefix))
                }),
        )
    }

    /// A space from (country, asn, prefix) triples: for benchmarks and tests that have no
    /// catalog files.
    pub fn from_blocks<'a>(blocks: impl IntoIterator<Item = (&'a str, u32, IpNet)>) -> Space {
        let mut index: HashMap<(String, Option<u32>), u32> = HashMap::new();
        let mut entities: Vec<Entity> = Vec::new();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (country, asn, net) in blocks {
            let mut get = |asn: Option<u32>, parent: Option<u32>| -> u32 {
                *index.entry((country.to_string(), asn)).or_insert_with(|| {
                    entities.push(Entity::new(country, asn, parent));
                    (entities.len() - 1) as u32
                })
            };
            let c = get(None, None);
            let e = get(Some(asn), Some(c));
            push_blocks(&net, e, &mut v4, &mut v6);
        }
        Space::build(entities, v4, v6)
    }

    fn build(
        mut entities: Vec<Entity>,
        mut v4: Vec<Block<u32>>,
        mut v6: Vec<Block<u128>>,
    ) -> Space {
        // Two catalog entries spanning the same block: the first claims it (stable sort).
        v4.sort_by_key(|b| b.start);
        v4.dedup_by_key(|b| b.start);
        v6.sort_by_key(|b| b.start);
        v6.dedup_by_key(|b| b.start);
        let mut count = |e: u32| {
            entities[e as usize].total += 1;
            if let Some(p) = entities[e as usize].parent {
                entities[p as usize].total += 1;
            }
        };
        v4.iter().for_each(|b| count(b.entity));
        v6.iter().for_each(|b| count(b.entity));
        Space {
            v4,
            v6,
            entities,
            stamp: 0,
        }
    }

    /// Blocks in the space.
    pub fn blocks(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Countries and networks counted.
    pub fn entities(&self) -> usize {
        self.entities.len()
    }

    /// Records that `p` became visible (`true`) or invisible, for every block it covers.
    pub fn toggle(&mut self, p: Pfx, visible: bool, cause: Cause<'_>) {
        self.stamp += 1;
        let stamp = self.stamp;
        let Space {
            v4, v6, entities, ..
        } = self;
        let mut touched: Vec<u32> = Vec::new();
        let mut on_block = |cover: &mut u16, e: u32| {
            let flipped = if visible {
                *cover += 1;
                *cover == 1
            } else {
                *cover = cover.saturating_sub(1);
                *cover == 0
            };
            let mut id = Some(e);
            while let Some(i) = id {
                let ent = &mut entities[i as usize];
                if flipped {
                    if visible {
                        ent.visible += 1;
                    } else {
                        ent.visible = ent.visible.saturating_sub(1);
                    }
                    ent.dirty = true;
                }
                if ent.seen != stamp {
                    ent.seen = stamp;
                    touched.push(i);
                }
                id = ent.parent;
            }
        };
        match p {
            Pfx::V4(a, l) if (V4_MIN_COVER_LEN..=V4_BLOCK_LEN).contains(&l) => {
                let (lo, hi) = v4_range(a, l);
                let from = v4.partition_point(|b| b.start < lo);
                for b in v4[from..].iter_mut().take_while(|b| b.start <= hi) {
                    on_block(&mut b.cover, b.entity);
                }
            }
            Pfx::V6(a, l) if (V6_MIN_COVER_LEN..=V6_BLOCK_LEN).contains(&l) => {
                let (lo, hi) = v6_range(a, l);
                let from = v6.partition_point(|b| b.start < lo);
                for b in v6[from..].iter_mut().take_while(|b| b.start <= hi) {
                    on_block(&mut b.cover, b.entity);
                }
            }
            _ => {}
        }
        for i in touched {
            let ent = &mut entities[i as usize];
            if visible {
                if ent.withdrawn.remove(&p) && ent.withdrawn.is_empty() {
                    ent.first_withdrawal_at = None;
                    ent.peers.clear();
                    ent.dirty = true;
                }
            } else if let Cause::Withdrawal { at, peers } = cause {
                ent.withdrawn.insert(p);
                ent.first_withdrawal_at.get_or_insert(at);
                for peer in peers {
                    if ent.peers.len() < BgpWithdrawals::MAX_LISTED && !ent.peers.contains(peer) {
                        ent.peers.push(peer.clone());
                    }
                }
                ent.dirty = true;
            }
        }
    }

    /// Marks every entity changed (the healthy peers or the quorum changed: each
    /// reading's context did).
    pub fn mark_all_dirty(&mut self) {
        self.entities.iter_mut().for_each(|e| e.dirty = true);
    }

    /// The readings due at `now`: each changed entity at most once per
    /// `min_interval_secs`, or every entity when `all`.
    pub fn readings(
        &mut self,
        now: DateTime<Utc>,
        all: bool,
        min_interval_secs: i64,
        peers_healthy: u16,
        peers_quorum: u16,
    ) -> Vec<BgpVisibility> {
        let mut out = Vec::new();
        for e in &mut self.entities {
            let due = all
                || (e.dirty
                    && e.last_emit
                        .is_none_or(|t| (now - t).num_seconds() >= min_interval_secs));
            if !due {
                continue;
            }
            e.dirty = false;
            e.last_emit = Some(now);
            out.push(e.reading(now, peers_healthy, peers_quorum));
        }
        out
    }

    /// Every entity's reading now, without counting it as reported.
    pub fn peek(
        &self,
        now: DateTime<Utc>,
        peers_healthy: u16,
        peers_quorum: u16,
    ) -> Vec<BgpVisibility> {
        self.entities
            .iter()
            .map(|e| e.reading(now, peers_healthy, peers_quorum))
            .collect()
    }
}

impl Entity {
    fn new(country: &str, asn: Option<u32>, parent: Option<u32>) -> Entity {
        Entity {
            country: country.to_string(),
            asn,
            parent,
            total: 0,
            visible: 0,
            dirty: true,
            last_emit: None,
            withdrawn: FxHashSet::default(),
            peers: Vec::new(),
            first_withdrawal_at: None,
            seen: 0,
        }
    }

    fn reading(&self, now: DateTime<Utc>, peers_healthy: u16, peers_quorum: u16) -> BgpVisibility {
        BgpVisibility {
            at: now,
            country: self.country.clone(),
            asn: self.asn,
            visible_slash24: self.visible,
            total_slash24: self.total,
            peers_healthy,
            peers_quorum,
            withdrawals: self.withdrawals(),
        }
    }

    fn withdrawals(&self) -> Option<BgpWithdrawals> {
        let first = self.first_withdrawal_at?;
        let mut examples: Vec<Pfx> = self.withdrawn.iter().copied().collect();
        examples.sort();
        Some(BgpWithdrawals {
            prefixes_withdrawn: self.withdrawn.len() as u32,
            examples: examples
                .iter()
                .take(BgpWithdrawals::MAX_LISTED)
                .map(Pfx::to_string)
                .collect(),
            peers: self.peers.clone(),
            first_withdrawal_at: first,
        })
    }
}

fn push_blocks(net: &IpNet, entity: u32, v4: &mut Vec<Block<u32>>, v6: &mut Vec<Block<u128>>) {
    match net.trunc() {
        IpNet::V4(n) => {
            let len = n.prefix_len();
            let start = u32::from(n.network());
            if len >= V4_BLOCK_LEN {
                let (s, _) = v4_range(start & !0xff, V4_BLOCK_LEN);
                v4.push(Block {
                    start: s,
                    entity,
                    cover: 0,
                });
            } else {
                let (lo, hi) = v4_range(start, len);
                let mut s = lo;
                loop {
                    v4.push(Block {
                        start: s,
                        entity,
                        cover: 0,
                    });
                    match s.checked_add(256) {
                        Some(n) if n <= hi => s = n,
                        _ => break,
                    }
                }
            }
        }
        IpNet::V6(n) => {
            let len = n.prefix_len();
            let start = u128::from(n.network());
            let step = 1u128 << (128 - u32::from(V6_BLOCK_LEN));
            if len >= V6_BLOCK_LEN {
                v6.push(Block {
                    start: start & !(step - 1),
                    entity,
                    cover: 0,
                });
            } else {
                let (lo, hi) = v6_range(start, len);
                let mut s = lo;
                loop {
                    v6.push(Block {
                        start: s,
                        entity,
                        cover: 0,
                    });
                    match s.checked_add(step) {
                        Some(n) if n <= hi => s = n,
                        _ => break,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pfx(s: &str) -> Pfx {
        Pfx::from_net(&s.parse().unwrap()).unwrap()
    }

    fn space() -> Space {
        Space::from_blocks([
            ("AA", 64500, "10.0.0.0/23".parse().unwrap()),
            ("AA", 64501, "10.0.2.0/24".parse().unwrap()),
            ("BB", 64502, "10.1.0.0/24".parse().unwrap()),
            ("AA", 64500, "2001:db8::/47".parse().unwrap()),
        ])
    }

    fn reading(s: &mut Space, country: &str, asn: Option<u32>) -> BgpVisibility {
        s.readings(Utc::now(), true, 0, 1, 1)
            .into_iter()
            .find(|r| r.country == country && r.asn == asn)
            .unwrap()
    }

    #[test]
    fn covers_count_once_per_block_and_roll_up_to_the_country() {
        let mut s = space();
        assert_eq!(s.blocks(), 6);
        let aa = reading(&mut s, "AA", None);
        assert_eq!((aa.visible_slash24, aa.total_slash24), (0, 5));
        s.toggle(pfx("10.0.0.0/16"), true, Cause::Other);
        s.toggle(pfx("10.0.0.0/24"), true, Cause::Other);
        assert_eq!(reading(&mut s, "AA", None).visible_slash24, 3);
        assert_eq!(reading(&mut s, "AA", Some(64501)).visible_slash24, 1);
        assert_eq!(reading(&mut s, "BB", None).visible_slash24, 0);
        // The /16 goes: only the block with its own /24 stays.
        let at = Utc::now();
        let peers = vec!["AS1 192.0.2.1".to_string()];
        s.toggle(
            pfx("10.0.0.0/16"),
            false,
            Cause::Withdrawal { at, peers: &peers },
        );
        let aa = reading(&mut s, "AA", None);
        assert_eq!(aa.visible_slash24, 1);
        let w = aa.withdrawals.unwrap();
        assert_eq!(w.examples, vec!["10.0.0.0/16"]);
        assert_eq!(w.peers, peers);
        assert_eq!(w.first_withdrawal_at, at);
        assert!(reading(&mut s, "BB", None).withdrawals.is_none());
        // Back: the evidence closes.
        s.toggle(pfx("10.0.0.0/16"), true, Cause::Other);
        assert!(reading(&mut s, "AA", Some(64501)).withdrawals.is_none());
        s.toggle(pfx("2001:db8::/32"), true, Cause::Other);
        assert_eq!(reading(&mut s, "AA", Some(64500)).visible_slash24, 4);
        // Longer than a block, or a default route: covers nothing.
        s.toggle(pfx("10.1.0.0/25"), true, Cause::Other);
        s.toggle(pfx("0.0.0.0/0"), true, Cause::Other);
        s.toggle(pfx("8.0.0.0/7"), true, Cause::Other);
        assert_eq!(reading(&mut s, "BB", None).visible_slash24, 0);
    }

    #[test]
    fn readings_are_coalesced_per_entity() {
        let mut s = space();
        let t0 = Utc::now();
        assert_eq!(s.readings(t0, false, 1, 1, 1).len(), 5);
        assert!(s.readings(t0, false, 1, 1, 1).is_empty());
        s.toggle(pfx("10.1.0.0/24"), true, Cause::Other);
        assert!(s.readings(t0, false, 1, 1, 1).is_empty());
        let t1 = t0 + chrono::Duration::seconds(1);
        let r = s.readings(t1, false, 1, 1, 1);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(
            r.iter()
                .all(|r| r.country == "BB" && r.visible_slash24 == 1)
        );
    }
}
