//! Address-range arithmetic: the IP-to-ASN map (most specific range wins), the owner of
//! each /24 of a country, sampling, and re-aggregation into CIDR prefixes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Subnets};
use rangemap::RangeInclusiveMap;

use blackout_model::catalog::IcmpEntry;

/// Collects IP ranges with their origin AS, from any number of sources.
#[derive(Debug, Default)]
pub struct AsnMapBuilder {
    v4: Vec<(u128, u128, u32)>,
    v6: Vec<(u128, u128, u32)>,
    orgs: HashMap<u32, String>,
}

impl AsnMapBuilder {
    pub fn add_v4(&mut self, start: u32, end: u32, asn: u32) {
        self.v4.push((u128::from(start), u128::from(end), asn));
    }
    pub fn add_v6(&mut self, start: u128, end: u128, asn: u32) {
        self.v6.push((start, end, asn));
    }
    /// The first organisation name seen for an AS is kept (inputs are read in a fixed
    /// order, so the choice is stable). A line break (possible inside a quoted CSV field)
    /// becomes a space: the name is written into a one-line catalog comment.
    pub fn org(&mut self, asn: u32, name: &[u8]) {
        self.orgs.entry(asn).or_insert_with(|| {
            let name = String::from_utf8_lossy(name);
            let name = name.trim();
            if name.contains(['\r', '\n']) {
                name.split(['\r', '\n'])
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                name.to_string()
            }
        });
    }
    pub fn build(self) -> AsnMap {
        let v4 = flatten(self.v4)
            .into_iter()
            .map(|(s, e, a)| (s as u32, e as u32, a))
            .collect();
        AsnMap {
            v4,
            v6: flatten(self.v6),
            orgs: self.orgs,
        }
    }
}

/// Disjoint, sorted ranges: for every address, the origin AS of the most specific
/// (smallest) input range that covers it.
#[derive(Debug, Default)]
pub struct AsnMap {
    v4: Vec<(u32, u32, u32)>,
    v6: Vec<(u128, u128, u32)>,
    orgs: HashMap<u32, String>,
}

impl AsnMap {
    pub fn lookup(&self, ip: IpAddr) -> Option<u32> {
        fn find<T: Ord + Copy>(segs: &[(T, T, u32)], x: T) -> Option<u32> {
            let i = segs.partition_point(|s| s.1 < x);
            segs.get(i).filter(|s| s.0 <= x).map(|s| s.2)
        }
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
    pub fn org(&self, asn: u32) -> Option<&str> {
        self.orgs
            .get(&asn)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    pub fn v4_segments(&self) -> &[(u32, u32, u32)] {
        &self.v4
    }
}

/// Resolves overlapping ranges: the smallest covering range wins (ties: lower AS).
/// Touching ranges of one AS are joined.
fn flatten(mut rs: Vec<(u128, u128, u32)>) -> Vec<(u128, u128, u32)> {
    rs.sort_unstable();
    let mut out: Vec<(u128, u128, u32)> = Vec::with_capacity(rs.len());
    let mut join = |(s, e, a): (u128, u128, u32)| match out.last_mut() {
        Some(last) if last.2 == a && last.1.checked_add(1) == Some(s) => last.1 = e,
        _ => out.push((s, e, a)),
    };
    // Only clusters of overlapping ranges go through the range map: one flattened
    // database (ip-location-db: 1 overlap in 411,961 IPv4 rows) is almost all single
    // ranges, and the map for all of them cost a tenth of the whole build.
    let mut i = 0;
    while i < rs.len() {
        let (mut j, mut end) = (i + 1, rs[i].1);
        while j < rs.len() && rs[j].0 <= end {
            end = end.max(rs[j].1);
            j += 1;
        }
        if j == i + 1 {
            join(rs[i]);
        } else {
            flatten_overlapping(rs[i..j].to_vec())
                .into_iter()
                .for_each(&mut join);
        }
        i = j;
    }
    out
}

/// Ranges go into the map widest first, and among equal widths higher AS first: each
/// insert overwrites what it covers, so what is left at an address is the narrowest
/// range over it. The map joins touching ranges of one AS.
fn flatten_overlapping(mut rs: Vec<(u128, u128, u32)>) -> Vec<(u128, u128, u32)> {
    rs.sort_unstable_by_key(|&(s, e, a)| (Reverse(e - s), Reverse(a), s));
    let mut m = RangeInclusiveMap::new();
    for (s, e, a) in rs {
        m.insert(s..=e, a);
    }
    m.iter().map(|(r, &a)| (*r.start(), *r.end(), a)).collect()
}

/// /24 blocks (as block numbers, address >> 8) of a country, each with its owner.
pub(crate) struct Owned {
    pub blocks: Vec<(u32, u32)>,
    /// Blocks no ASN range touches (left out: nothing announces them).
    pub unrouted: u64,
}

fn merge(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if u64::from(s) <= u64::from(last.1) + 1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The /24 blocks (block-number ranges) of a country's address ranges. A block the
/// country holds only part of is its block if it holds more than half of it, or exactly
/// half including the block's first address: a rule each country can apply alone that
/// never gives one /24 to two countries whose address ranges are disjoint.
fn country_blocks(space: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let addrs = merge(space.to_vec());
    let mut full = Vec::new();
    let mut partial: Vec<(u32, u32, bool)> = Vec::new();
    for (s, e) in addrs {
        let (bs, be) = (s >> 8, e >> 8);
        if bs == be && (s & 0xff != 0 || e & 0xff != 0xff) {
            partial.push((bs, e - s + 1, s & 0xff == 0));
            continue;
        }
        let mut first = bs;
        let mut last = be;
        if s & 0xff != 0 {
            partial.push((bs, 256 - (s & 0xff), false));
            first += 1;
        }
        if e & 0xff != 0xff {
            partial.push((be, (e & 0xff) + 1, true));
            last -= 1;
        }
        if first <= last {
            full.push((first, last));
        }
    }
    partial.sort_unstable();
    let mut i = 0;
    while i < partial.len() {
        let (b, mut count, mut first_addr) = partial[i];
        while i + 1 < partial.len() && partial[i + 1].0 == b {
            i += 1;
            count += partial[i].1;
            first_addr |= partial[i].2;
        }
        i += 1;
        if count > 128 || (count == 128 && first_addr) {
            full.push((b, b));
        }
    }
    merge(full)
}

/// Resolves each /24 of `space` (address ranges) to an origin AS: the AS whose ranges
/// cover most of the block. Blocks in `taken` (block-number ranges) are skipped.
/// Without an ASN map every block gets AS 0 (unknown).
pub(crate) fn assign_blocks(
    space: &[(u32, u32)],
    asn: Option<&AsnMap>,
    taken: &[(u32, u32)],
) -> Owned {
    let blocks = country_blocks(space);
    let taken = merge(taken.to_vec());
    let mut out = Vec::new();
    let mut unrouted = 0u64;
    let mut t = 0;
    for (bs, be) in blocks {
        let segs = asn.map(|m| m.v4_segments()).unwrap_or(&[]);
        let mut j = segs.partition_point(|s| s.1 < bs << 8);
        for b in bs..=be {
            while t < taken.len() && taken[t].1 < b {
                t += 1;
            }
            if t < taken.len() && taken[t].0 <= b {
                continue;
            }
            if asn.is_none() {
                out.push((b, 0));
                continue;
            }
            let lo = b << 8;
            let hi = lo | 0xff;
            while j < segs.len() && segs[j].1 < lo {
                j += 1;
            }
            let mut best: Option<(u32, u32)> = None;
            let mut k = j;
            while k < segs.len() && segs[k].0 <= hi {
                let (s, e, a) = segs[k];
                let cover = e.min(hi) - s.max(lo) + 1;
                if best.is_none_or(|(c, _)| cover > c) {
                    best = Some((cover, a));
                }
                k += 1;
            }
            match best {
                Some((_, a)) => out.push((b, a)),
                None => unrouted += 1,
            }
        }
    }
    Owned {
        blocks: out,
        unrouted,
    }
}

fn mix(x: u64) -> u64 {
    // splitmix64: a fixed, well-spread order, so samples are stable across runs.
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Keeps at most `n` blocks per AS, chosen by a fixed hash of the block number: spread
/// over the AS's space and identical on every run.
pub(crate) fn sample_per_asn(blocks: &[(u32, u32)], n: usize) -> Vec<(u32, u32)> {
    let mut by_asn: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &(b, a) in blocks {
        by_asn.entry(a).or_default().push(b);
    }
    let mut out = Vec::new();
    for (a, mut bs) in by_asn {
        if bs.len() > n {
            bs.sort_unstable_by_key(|&b| (mix(u64::from(b)), b));
            bs.truncate(n);
        }
        out.extend(bs.into_iter().map(|b| (b, a)));
    }
    out.sort_unstable();
    out
}

/// Re-aggregates blocks (sorted by block number) into the fewest CIDR prefixes that keep
/// one origin AS each.
pub(crate) fn aggregate(blocks: &[(u32, u32)]) -> Vec<IcmpEntry> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let (start, asn) = blocks[i];
        let mut end = start;
        while i + 1 < blocks.len() && blocks[i + 1].1 == asn && blocks[i + 1].0 == end + 1 {
            end += 1;
            i += 1;
        }
        i += 1;
        // The fewest aligned prefixes covering the run; block-aligned ends make each /24
        // or shorter.
        let first = Ipv4Addr::from(start << 8);
        let last = Ipv4Addr::from((end << 8) | 0xff);
        for net in Ipv4Subnets::new(first, last, 0) {
            out.push(IcmpEntry {
                id: None,
                prefix: IpNet::V4(net),
                asn,
                region: None,
                hosts: Vec::new(),
                availability: None,
                block_len: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn most_specific_range_wins() {
        let mut b = AsnMapBuilder::default();
        b.add_v4(ip("10.0.0.0"), ip("10.0.255.255"), 1);
        b.add_v4(ip("10.0.4.0"), ip("10.0.4.255"), 2);
        b.add_v4(ip("10.0.4.128"), ip("10.0.4.191"), 3);
        let m = b.build();
        let at = |s: &str| m.lookup(IpAddr::V4(s.parse().unwrap()));
        assert_eq!(at("10.0.3.255"), Some(1));
        assert_eq!(at("10.0.4.0"), Some(2));
        assert_eq!(at("10.0.4.130"), Some(3));
        assert_eq!(at("10.0.4.200"), Some(2));
        assert_eq!(at("10.0.5.0"), Some(1));
        assert_eq!(at("10.1.0.0"), None);
        // The /24 goes to the AS covering most of it (AS2: 192 of 256 addresses).
        let owned = assign_blocks(&[(ip("10.0.3.0"), ip("10.0.5.255"))], Some(&m), &[]);
        let got: Vec<u32> = owned.blocks.iter().map(|b| b.1).collect();
        assert_eq!(got, vec![1, 2, 1]);
    }

    #[test]
    fn partial_blocks_go_to_one_country() {
        // Two countries split 10.0.1.0/24 in halves; a third holds a /26 of 10.0.2.0/24.
        let a = country_blocks(&[(ip("10.0.0.0"), ip("10.0.1.127"))]);
        let b = country_blocks(&[
            (ip("10.0.1.128"), ip("10.0.1.255")),
            (ip("10.0.2.64"), ip("10.0.2.127")),
        ]);
        let blocks =
            |v: &[(u32, u32)]| -> Vec<u32> { v.iter().flat_map(|&(s, e)| s..=e).collect() };
        assert_eq!(blocks(&a), vec![ip("10.0.0.0") >> 8, ip("10.0.1.0") >> 8]);
        assert!(blocks(&b).is_empty());
        // Several small pieces of one block add up.
        let c = country_blocks(&[
            (ip("10.0.3.0"), ip("10.0.3.99")),
            (ip("10.0.3.150"), ip("10.0.3.255")),
        ]);
        assert_eq!(blocks(&c), vec![ip("10.0.3.0") >> 8]);
    }

    #[test]
    fn aggregation_splits_at_asn_changes_and_alignment() {
        let base = ip("10.0.0.0") >> 8;
        let blocks: Vec<(u32, u32)> = (0..6)
            .map(|i| (base + i, if i < 4 { 7 } else { 8 }))
            .collect();
        let e = aggregate(&blocks);
        let got: Vec<String> = e
            .iter()
            .map(|e| format!("{} {}", e.prefix, e.asn))
            .collect();
        assert_eq!(got, vec!["10.0.0.0/22 7", "10.0.4.0/23 8"]);
    }

    proptest! {
        #[test]
        fn aggregation_covers_the_blocks_exactly(
            start in 0u32..1 << 24, len in 1u32..5000, split in 0u32..5000
        ) {
            let end = (start + len - 1).min((1 << 24) - 1);
            let blocks: Vec<(u32, u32)> =
                (start..=end).map(|b| (b, u32::from(b >= start + split))).collect();
            let mut next = start;
            for e in aggregate(&blocks) {
                let IpNet::V4(net) = e.prefix else { panic!("{}", e.prefix) };
                prop_assert!(net.prefix_len() <= 24);
                prop_assert_eq!(u32::from(net.network()) >> 8, next);
                let last = u32::from(net.broadcast()) >> 8;
                prop_assert!((next..=last).all(|b| u32::from(b >= start + split) == e.asn));
                next = last + 1;
            }
            prop_assert_eq!(next, end + 1);
        }

        #[test]
        fn flatten_agrees_with_brute_force(
            rs in proptest::collection::vec((0u128..200, 0u128..60, 1u32..5), 1..12)
        ) {
            let rs: Vec<(u128, u128, u32)> = rs.into_iter().map(|(s, l, a)| (s, s + l, a)).collect();
            let flat = flatten(rs.clone());
            for x in 0u128..270 {
                let want = rs.iter().filter(|r| r.0 <= x && x <= r.1)
                    .min_by_key(|r| (r.1 - r.0, r.2)).map(|r| r.2);
                let i = flat.partition_point(|s| s.1 < x);
                let got = flat.get(i).filter(|s| s.0 <= x).map(|s| s.2);
                prop_assert_eq!(got, want, "at {}", x);
            }
        }

        #[test]
        fn clusters_resolve_like_the_whole_map(
            rs in proptest::collection::vec((0u128..4, 0u128..6, 1u32..3), 1..30)
        ) {
            // Starts 0..3 apart, lengths 1..6: runs of single ranges, touching ranges
            // and clusters of overlapping ones.
            let mut at = 0u128;
            let rs: Vec<(u128, u128, u32)> = rs.into_iter().map(|(step, len, a)| {
                at += step;
                (at, at + len, a)
            }).collect();
            prop_assert_eq!(flatten(rs.clone()), flatten_overlapping(rs));
        }

        #[test]
        fn samples_are_capped_and_stable(n in 1usize..20, count in 0u32..300) {
            let blocks: Vec<(u32, u32)> = (0..count).map(|b| (b, b % 3)).collect();
            let s = sample_per_asn(&blocks, n);
            prop_assert_eq!(&s, &sample_per_asn(&blocks, n));
            for a in 0..3 {
                let have = blocks.iter().filter(|b| b.1 == a).count();
                prop_assert_eq!(s.iter().filter(|b| b.1 == a).count(), have.min(n));
            }
        }
    }
}
