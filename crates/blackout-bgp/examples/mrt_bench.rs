//! How fast MRT import and RIS Live decoding go (run by bench/bgp-feeds.sh):
//!
//! `mrt_bench PREFIXES PEERS RUNS DIR`: writes a TABLE_DUMP_V2 RIB dump of PREFIXES
//! IPv4 /24s carried by each of PEERS peers (plain and gzip) into DIR, reads each RUNS
//! times through `read_mrt_file` (events counted, not kept), and decodes RIS Live UPDATE
//! messages; prints the median of each and the process's peak RSS.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use blackout_bgp::mrt::{MrtOrigin, read_mrt_file};
use blackout_bgp::rislive::message_events;
use blackout_bgp::{RouteEvent, SourceKind};

fn record(out: &mut impl Write, ts: u32, subtype: u16, body: &[u8]) {
    out.write_all(&ts.to_be_bytes()).unwrap();
    out.write_all(&13u16.to_be_bytes()).unwrap();
    out.write_all(&subtype.to_be_bytes()).unwrap();
    out.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    out.write_all(body).unwrap();
}

/// A RIB dump as RIS writes them: a peer index table, then one RIB_IPV4_UNICAST record
/// per prefix with an entry per peer (ORIGIN, a 3-AS AS_PATH, NEXT_HOP).
fn write_rib(path: &Path, prefixes: u32, peers: u16) {
    let file = std::fs::File::create(path).unwrap();
    let mut out = std::io::BufWriter::new(file);
    let ts = 1_765_000_000;
    let mut pit = Vec::new();
    pit.extend([192, 0, 2, 1]);
    pit.extend(0u16.to_be_bytes());
    pit.extend(peers.to_be_bytes());
    for p in 0..peers {
        pit.push(0b10); // AS4, IPv4 peer
        pit.extend([10, 0, (p >> 8) as u8, p as u8]);
        pit.extend([10, 1, (p >> 8) as u8, p as u8]);
        pit.extend((64_500u32 + u32::from(p)).to_be_bytes());
    }
    record(&mut out, ts, 1, &pit);
    let mut body = Vec::new();
    for i in 0..prefixes {
        body.clear();
        body.extend(i.to_be_bytes());
        // 1.0.0.0/24 onwards: the i-th /24.
        let net = (1u32 << 24) + (i << 8);
        body.push(24);
        body.extend(&net.to_be_bytes()[..3]);
        body.extend(peers.to_be_bytes());
        for p in 0..peers {
            let mut attrs = Vec::new();
            attrs.extend([0x40, 1, 1, 0]); // ORIGIN IGP
            attrs.extend([0x40, 2, 14, 2, 3]); // AS_PATH: one sequence of 3 AS4
            for asn in [64_500 + u32::from(p), 64_496, 65_000 + i % 500] {
                attrs.extend(asn.to_be_bytes());
            }
            attrs.extend([0x40, 3, 4, 10, 0, (p >> 8) as u8, p as u8]); // NEXT_HOP
            body.extend(p.to_be_bytes());
            body.extend(ts.to_be_bytes());
            body.extend((attrs.len() as u16).to_be_bytes());
            body.extend(&attrs);
        }
        record(&mut out, ts, 2, &body);
    }
    out.flush().unwrap();
}

fn gzip(path: &Path) -> PathBuf {
    let out = path.with_extension("mrt.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&out).unwrap(),
        flate2::Compression::default(),
    );
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn read(path: &Path, runs: usize) -> (f64, u64) {
    let origin = MrtOrigin::new(SourceKind::Mrt, "bench");
    let mut secs = Vec::new();
    let mut routes = 0;
    for _ in 0..runs {
        routes = 0;
        let t = Instant::now();
        read_mrt_file(path, &origin, &mut |ev| {
            if let RouteEvent::Announce { prefixes, .. } = &ev {
                routes += prefixes.len() as u64;
            }
            true
        })
        .unwrap();
        secs.push(t.elapsed().as_secs_f64());
    }
    (median(secs), routes)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, prefixes, peers, runs, dir] = &args[..] else {
        eprintln!("usage: mrt_bench PREFIXES PEERS RUNS DIR");
        std::process::exit(2);
    };
    let (prefixes, peers, runs): (u32, u16, usize) = (
        prefixes.parse().unwrap(),
        peers.parse().unwrap(),
        runs.parse().unwrap(),
    );
    let plain = Path::new(dir).join("rib.mrt");
    write_rib(&plain, prefixes, peers);
    let gz = gzip(&plain);
    for (name, path) in [("plain", &plain), ("gzip", &gz)] {
        let size = std::fs::metadata(path).unwrap().len();
        let (secs, routes) = read(path, runs);
        assert_eq!(routes, u64::from(prefixes) * u64::from(peers));
        println!(
            "mrt {name}: {prefixes} prefixes x {peers} peers, {:.1} MB, median {secs:.3} s over {runs} runs, {:.2} M routes/s",
            size as f64 / 1e6,
            routes as f64 / secs / 1e6
        );
    }

    // RIS Live: UPDATE messages of 1 to 4 prefixes with a path, as the stream sends.
    let n = 200_000;
    let msgs: Vec<String> = (0..n)
        .map(|i| {
            let prefixes: Vec<String> = (0..1 + i % 4)
                .map(|k| format!("\"{}.{}.{}.0/24\"", 1 + i % 200, (i / 200) % 256, k))
                .collect();
            format!(
                r#"{{"type":"ris_message","data":{{"timestamp":1765100000.{:02},"peer":"192.0.2.{}","peer_asn":"{}","id":"x-{i}","host":"rrc00.ripe.net","type":"UPDATE","path":[{},3356,{}],"community":[[3356,2]],"origin":"IGP","announcements":[{{"next_hop":"192.0.2.{}","prefixes":[{}]}}],"withdrawals":[]}}}}"#,
                i % 100,
                i % 10,
                64_500 + i % 10,
                64_500 + i % 10,
                65_000 + i % 500,
                i % 10,
                prefixes.join(",")
            )
        })
        .collect();
    let mut secs = Vec::new();
    for _ in 0..runs {
        let mut heard = BTreeSet::new();
        let mut events = 0usize;
        let t = Instant::now();
        for m in &msgs {
            events += message_events(m, &mut heard).len();
        }
        secs.push(t.elapsed().as_secs_f64());
        assert!(events >= n);
    }
    let s = median(secs);
    println!(
        "ris live: {n} UPDATE messages, median {s:.3} s over {runs} runs, {:.0} messages/s",
        n as f64 / s
    );
    println!("peak RSS {} MiB", peak_rss_kib() / 1024);
}
