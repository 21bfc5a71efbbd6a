//! What taking a share by the rule costs an agent: the table of one catalog prefix built
//! whole (the peer: what an agent without fleet assignment does) and built as one agent's
//! share among N agents with k per block, medians of five runs each, in the same process.
//!
//! `cargo run --release -p blackout-agent --example share_scan -- [BLOCKS_LOG2] [AGENTS] [K]`
//! (defaults 22, 20, 2: 4,194,304 blocks).

use std::time::Instant;

use blackout_agent::filter::TargetFilter;
use blackout_agent::table::TargetTable;
use blackout_model::catalog::{Assignment, CatalogFile};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let log2 = args.first().copied().unwrap_or(22);
    let agents = args.get(1).copied().unwrap_or(20) as usize;
    let k = args.get(2).copied().unwrap_or(2) as usize;
    let prefix = format!("0.0.0.0/{}", 24 - log2);
    let files: Vec<CatalogFile> = serde_json::from_str(&format!(
        r#"[{{"country":"XA","icmp":[{{"prefix":"{prefix}","asn":64512}}]}}]"#
    ))
    .unwrap();
    let everything = TargetFilter::new(true, Vec::new());
    let fleet: Vec<String> = (1..=agents).map(|i| format!("agent-{i}")).collect();
    let a = Assignment {
        agent: "agent-1".into(),
        k,
        fleet,
    };
    let max = 1u64 << log2;
    let (mut whole, mut share, mut kept) = (Vec::new(), Vec::new(), 0);
    for _ in 0..5 {
        let t0 = Instant::now();
        let (t, _) = TargetTable::from_catalog_within(&files, &everything, max).unwrap();
        whole.push(t0.elapsed().as_secs_f64());
        drop(t);
        let t0 = Instant::now();
        let (t, _) = TargetTable::from_catalog_share(&files, &everything, max, &a).unwrap();
        share.push(t0.elapsed().as_secs_f64());
        kept = t.len();
    }
    let (w, s) = (median(whole), median(share));
    println!(
        "{} blocks, {agents} agents, k = {k}: whole table {w:.3} s, one agent's share ({kept} blocks) {s:.3} s, ratio {:.2}",
        1u64 << log2,
        s / w
    );
}
