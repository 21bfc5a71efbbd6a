//! How far the BGP table goes: ten synthetic full tables (1M IPv4 and 200k IPv6 prefixes
//! each, with the prefix-length spread of today's global table) loaded through the same
//! `Table::apply` the collector uses, over a catalog of 4M /24 blocks in 200 countries
//! and 60,000 networks; then update messages replayed against it.
//!
//! Prints the resident memory the table adds (VmRSS from /proc), the load time, and
//! update messages applied per CPU-second (this thread's CPU time from
//! /proc/thread-self/schedstat). Run: `bench/bgp-scale.sh` (or
//! `cargo bench -p blackout-bgp --bench table_scale`). BGP_SCALE_PEERS,
//! BGP_SCALE_V4, BGP_SCALE_V6, BGP_SCALE_BLOCKS scale it down.

use std::time::Instant;

use blackout_bgp::table::TableConfig;
use blackout_bgp::{PeerKey, RouteEvent, SourceKind, Space, Table};
use chrono::Utc;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Share (per mille) of IPv4 prefixes by length in the global table (RIPE RIS / CIDR
/// report shape, late 2020s): /24 about 60 %, /22 and /23 about 10 % each, ...
const V4_SPREAD: [(u8, u32); 12] = [
    (8, 1),
    (12, 4),
    (16, 15),
    (17, 5),
    (18, 10),
    (19, 25),
    (20, 45),
    (21, 50),
    (22, 110),
    (23, 105),
    (24, 620),
    (15, 10),
];
/// IPv6: /48 about half, /32 and /44 next.
const V6_SPREAD: [(u8, u32); 8] = [
    (29, 20),
    (32, 160),
    (36, 50),
    (40, 80),
    (44, 120),
    (46, 30),
    (47, 40),
    (48, 500),
];

fn pick(rng: &mut Rng, spread: &[(u8, u32)]) -> u8 {
    let total: u32 = spread.iter().map(|s| s.1).sum();
    let mut r = rng.below(u64::from(total)) as u32;
    for &(len, w) in spread {
        if r < w {
            return len;
        }
        r -= w;
    }
    spread[0].0
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// CPU time of this thread, in seconds.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    s.split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .map(|ns| ns as f64 / 1e9)
        .unwrap_or(0.0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let peers = env("BGP_SCALE_PEERS", 10);
    let n4 = env("BGP_SCALE_V4", 1_000_000);
    let n6 = env("BGP_SCALE_V6", 200_000);
    let n_blocks = env("BGP_SCALE_BLOCKS", 4_000_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // The global table: distinct prefixes, host bits cleared.
    let mut set4 = std::collections::HashSet::with_capacity(n4);
    while set4.len() < n4 {
        let len = pick(&mut rng, &V4_SPREAD);
        // 1.0.0.0 to 223.255.255.255, as unicast space is.
        let addr = (rng.below(222) as u32 + 1) << 24 | (rng.next() as u32 & 0x00ff_ffff);
        set4.insert(IpNet::V4(Ipv4Net::new(addr.into(), len).unwrap().trunc()));
    }
    let mut set6 = std::collections::HashSet::with_capacity(n6);
    while set6.len() < n6 {
        let len = pick(&mut rng, &V6_SPREAD);
        let addr = (0x2000u128 << 112) | (u128::from(rng.next()) << 64 >> 4);
        set6.insert(IpNet::V6(Ipv6Net::new(addr.into(), len).unwrap().trunc()));
    }
    let mut table4: Vec<IpNet> = set4.into_iter().collect();
    table4.sort();
    let mut table6: Vec<IpNet> = set6.into_iter().collect();
    table6.sort();

    // The catalog: the /24s of routed IPv4 prefixes, each prefix one network of one of
    // 200 countries, until 4M blocks.
    let countries: Vec<String> = (0..200u32)
        .map(|i| {
            let a = (b'A' + (i / 26) as u8) as char;
            let b = (b'A' + (i % 26) as u8) as char;
            format!("{a}{b}")
        })
        .collect();
    let mut blocks: Vec<(&str, u32, IpNet)> = Vec::with_capacity(n_blocks);
    let mut taken = std::collections::HashSet::with_capacity(n_blocks);
    'fill: for (i, p) in table4.iter().enumerate() {
        if p.prefix_len() > 24 || p.prefix_len() < 16 {
            continue;
        }
        let asn = 64_512 + (i as u32 % 60_000);
        let IpNet::V4(p4) = p else { continue };
        for b in p4.subnets(24).into_iter().flatten() {
            if blocks.len() >= n_blocks {
                break 'fill;
            }
            if taken.insert(u32::from(b.network())) {
                blocks.push((&countries[(asn % 200) as usize], asn, IpNet::V4(b)));
            }
        }
    }
    drop(taken);
    let rss0 = rss_bytes();
    let t = Instant::now();
    let space = Space::from_blocks(blocks.iter().copied());
    let space_secs = t.elapsed().as_secs_f64();
    let rss_space = rss_bytes();
    println!(
        "catalog: {} blocks in {} entities, built in {space_secs:.2} s, RSS +{:.0} MiB",
        space.blocks(),
        space.entities(),
        mib(rss_space.saturating_sub(rss0))
    );
    drop(blocks);

    let config = TableConfig {
        peer_quorum: None,
        full_table_min_prefixes: (n4 + n6) as u32 / 2,
        peer_silence_secs: 0,
        ..TableConfig::default()
    };
    let mut table = Table::new(config, space);
    let keys: Vec<PeerKey> = (0..peers)
        .map(|i| PeerKey {
            source: SourceKind::Bmp,
            collector: "192.0.2.254".into(),
            peer_ip: format!("192.0.2.{}", i + 1).parse().unwrap(),
            peer_asn: 65_000 + i as u32,
        })
        .collect();
    let at = Utc::now();
    // Each peer misses ~1 % of the table, as real peers differ.
    let rss1 = rss_bytes();
    let (c0, w0) = (cpu_secs(), Instant::now());
    let mut messages = 0u64;
    for (pi, k) in keys.iter().enumerate() {
        table.apply(&RouteEvent::PeerUp {
            peer: k.clone(),
            at,
        });
        for chunk in table4.chunks(4).chain(table6.chunks(4)) {
            let prefixes: Vec<IpNet> = chunk
                .iter()
                .enumerate()
                .filter(|(j, _)| (j + pi) % 100 != 0 || pi == 0)
                .map(|(_, p)| *p)
                .collect();
            table.apply(&RouteEvent::Announce {
                peer: k.clone(),
                prefixes,
                at,
            });
            messages += 1;
        }
        table.apply(&RouteEvent::EndOfRib {
            peer: k.clone(),
            at,
        });
    }
    let load_cpu = cpu_secs() - c0;
    let load_wall = w0.elapsed().as_secs_f64();
    let rss2 = rss_bytes();
    let (h4, h6) = table.prefixes();
    println!(
        "load: {peers} peers x ({n4} IPv4 + {n6} IPv6 prefixes), {messages} messages of up to 4 prefixes in {load_wall:.1} s wall, {load_cpu:.1} s CPU: {:.0} messages/CPU-s",
        messages as f64 / load_cpu
    );
    println!(
        "table: {h4} IPv4 + {h6} IPv6 distinct prefixes, {} healthy peers, quorum {}; RSS +{:.0} MiB for the table ({:.1} bytes per prefix), process RSS {:.0} MiB",
        table.peers_healthy(),
        table.quorum(),
        mib(rss2.saturating_sub(rss1)),
        rss2.saturating_sub(rss1) as f64 / (h4 + h6) as f64,
        mib(rss2)
    );
    let readings = table.poll(at).len();
    println!("readings after the load: {readings}");

    // Churn: update messages as a route collector relays them: one peer, 1-3
    // prefixes each, a withdrawal then its re-announcement.
    let n_updates = env("BGP_SCALE_UPDATES", 2_000_000);
    let (c0, w0) = (cpu_secs(), Instant::now());
    for u in 0..n_updates / 2 {
        let k = &keys[rng.below(peers as u64) as usize];
        let count = 1 + rng.below(3) as usize;
        let prefixes: Vec<IpNet> = (0..count)
            .map(|_| {
                if rng.below(6) == 0 {
                    table6[rng.below(table6.len() as u64) as usize]
                } else {
                    table4[rng.below(table4.len() as u64) as usize]
                }
            })
            .collect();
        table.apply(&RouteEvent::Withdraw {
            peer: k.clone(),
            prefixes: prefixes.clone(),
            at,
        });
        table.apply(&RouteEvent::Announce {
            peer: k.clone(),
            prefixes,
            at,
        });
        if u % 1000 == 0 {
            table.poll(at + chrono::Duration::milliseconds(u as i64));
        }
    }
    let churn_cpu = cpu_secs() - c0;
    println!(
        "churn: {n_updates} update messages (1-3 prefixes, one peer each) in {:.1} s wall, {churn_cpu:.1} s CPU: {:.0} updates/CPU-s",
        w0.elapsed().as_secs_f64(),
        n_updates as f64 / churn_cpu
    );

    // A national withdrawal: every peer withdraws 5,000 prefixes (the last ones
    // change visibility and touch their catalog blocks), then they come back.
    let victims: Vec<IpNet> = table4.iter().step_by(200).take(5000).copied().collect();
    let (c0, w0) = (cpu_secs(), Instant::now());
    let mut msgs = 0u64;
    for round in 0..4 {
        for k in &keys {
            for chunk in victims.chunks(2) {
                let ev = if round % 2 == 0 {
                    RouteEvent::Withdraw {
                        peer: k.clone(),
                        prefixes: chunk.to_vec(),
                        at,
                    }
                } else {
                    RouteEvent::Announce {
                        peer: k.clone(),
                        prefixes: chunk.to_vec(),
                        at,
                    }
                };
                table.apply(&ev);
                msgs += 1;
            }
        }
    }
    let cut_cpu = cpu_secs() - c0;
    println!(
        "national withdrawals: {msgs} messages (5,000 prefixes withdrawn and re-announced by every peer, twice) in {:.2} s wall, {cut_cpu:.2} s CPU: {:.0} messages/CPU-s",
        w0.elapsed().as_secs_f64(),
        msgs as f64 / cut_cpu
    );

    // A peer's session reset: its 1.2M routes forgotten, the quorum judged again.
    let (c0, w0) = (cpu_secs(), Instant::now());
    table.apply(&RouteEvent::PeerDown {
        peer: keys[0].clone(),
        at,
        reason: "bench".into(),
    });
    println!(
        "peer down (routes forgotten, visibility re-judged): {:.2} s wall, {:.2} s CPU",
        w0.elapsed().as_secs_f64(),
        cpu_secs() - c0
    );
}
