//! The collector's state against a hostile agent and a damaged disk, with the real
//! `blackout` binary: an agent's `region` never becomes a label, a page string or long-lived
//! state (the catalog's does); a damaged record in the middle of the observation log is set
//! aside and counted, and the collector starts with the rest; a damaged snapshot is not
//! used; a second collector on the same `state_dir` refuses to start, naming the first's
//! pid; a batch the log holds twice is counted once after a restart.

mod faults_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faults_support::*;
use serde_json::{Value, json};

const AGENT_ID: &str = "kz-agent-1";
const TOKEN: &str = "tok-kz-1";
/// The catalog's region of every target.
const REGION: &str = "Almaty";

/// A catalog of `n` TCP targets on loopback (nothing probes them: the tests upload
/// observations themselves), each in [`REGION`]; returns its text and target ids.
fn catalog(n: usize) -> (String, Vec<String>) {
    let mut text = String::from(
        "country = \"KZ\"\nname = \"test\"\n\n[[network]]\nasn = 64500\nname = \"test net\"\n",
    );
    let mut ids = Vec::new();
    for _ in 0..n {
        let addr = format!("127.0.0.1:{}", 20_000 + ids.len());
        text += &format!("\n[[tcp]]\naddress = \"{addr}\"\nasn = 64500\nregion = \"{REGION}\"\n");
        ids.push(format!("tcp:{addr}"));
    }
    (text, ids)
}

fn obs(target: &str, region: Option<&str>) -> Value {
    let mut o = json!({
        "agent": AGENT_ID, "target": target, "country": "KZ", "asn": 64500, "signal": "tcp",
        "measured_at": chrono::Utc::now().to_rfc3339(), "ok": true, "rtt_ms": 0.4
    });
    if let Some(r) = region {
        o["region"] = json!(r);
    }
    o
}

/// Posts a batch; (status, body).
fn post(base: &str, batch: &Value) -> (u16, Value) {
    block_on(async {
        let r = client()
            .post(format!("{base}api/v1/observations"))
            .bearer_auth(TOKEN)
            .json(batch)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

/// A batch of one observation of each target, with the catalog's region.
fn batch(id: &str, targets: &[String]) -> Value {
    let o: Vec<Value> = targets.iter().map(|t| obs(t, Some(REGION))).collect();
    json!({"batch_id": id, "agent": AGENT_ID, "observations": o})
}

fn accept(base: &str, b: &Value) {
    let (status, body) = post(base, b);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], json!(false), "{body}");
}

fn setup(dir: &Path, catalog: &str, extra: &str) -> CollectorSetup {
    CollectorSetup::new(dir, catalog, &[(AGENT_ID, TOKEN)], extra)
}

fn restart(c: &CollectorSetup, p: &mut Proc) -> Proc {
    assert!(p.term(Duration::from_secs(20)), "{}", p.log_text());
    c.start()
}

fn the_segment(c: &CollectorSetup) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(c.dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}

/// The log's lines, each with its newline.
fn records(seg: &Path) -> Vec<Vec<u8>> {
    std::fs::read(seg)
        .unwrap()
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn damaged(base: &str) -> f64 {
    metric_sum(&scrape(base), "blackout_log_damaged_records_total", &[])
}

#[test]
fn an_agents_region_never_becomes_a_label_a_page_string_or_state() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, targets) = catalog(3);
    // Short bins: the detector's entities (regions among them) show within seconds.
    let c = setup(
        &tmp.path().join("c"),
        &cat,
        "[detect]\nbin_secs = 1\ngrace_secs = 0\n",
    );
    let _p = c.start();
    let base = c.url();
    // Target 0: a 1 MB region, new in each batch; target 1: a short unknown one;
    // target 2: absent (the catalog has one).
    let mut posted = 0u64;
    let mut n = 0;
    wait_until(
        "the catalog's region in the detector's view",
        Duration::from_secs(30),
        || {
            n += 1;
            let huge = format!("EVIL{n}-{}", "x".repeat(1 << 20));
            let b = json!({"batch_id": format!("b{n}"), "agent": AGENT_ID, "observations": [
                obs(&targets[0], Some(&huge)),
                obs(&targets[1], Some("Nowhere")),
                obs(&targets[2], None),
            ]});
            accept(&base, &b);
            posted += 2;
            let (_, status) = http_get_text(&format!("{base}api/v1/status"));
            status.contains(REGION)
        },
    );
    let m = scrape(&base);
    let (_, status) = http_get_text(&format!("{base}api/v1/status"));
    let (_, page) = http_get_text(&base);
    for (what, text) in [
        ("metrics", &m),
        ("status API", &status),
        ("status page", &page),
    ] {
        assert!(
            !text.contains("EVIL") && !text.contains("Nowhere"),
            "the agent's region reached the {what}"
        );
    }
    assert_eq!(
        metric_sum(
            &m,
            "blackout_observation_regions_replaced_total",
            &[&format!("agent=\"{AGENT_ID}\"")]
        ),
        posted as f64
    );
    // What is kept for good (the log) holds the catalog's region, not the agent's MBs.
    let logged: u64 = std::fs::read_dir(c.dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        logged < 64 * 1024,
        "{logged} bytes in the state directory after {n} batches"
    );
}

/// GET, as text, whatever the status.
fn http_get_text(url: &str) -> (u16, String) {
    block_on(async {
        let r = client().get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn a_damaged_record_in_the_middle_of_the_log_is_set_aside_and_the_collector_starts() {
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage); 2] = [
        ("four bytes changed", |r| {
            let at = r.len() / 2;
            r[at..at + 4].copy_from_slice(b"!#!#");
        }),
        ("a byte that is not UTF-8", |r| {
            let at = r.len() / 2;
            r[at] = 0xff;
        }),
    ];
    let (cat, targets) = catalog(2);
    for (i, (what, damage)) in cases.into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let c = setup(
            &tmp.path().join(format!("c{i}")),
            &cat,
            "snapshot_interval_secs = 0\n",
        );
        let mut p = c.start();
        let base = c.url();
        for id in ["b1", "b2", "b3"] {
            accept(&base, &batch(id, &targets));
        }
        assert!(p.term(Duration::from_secs(20)), "{}", p.log_text());
        let seg = the_segment(&c);
        let mut lines = records(&seg);
        assert_eq!(lines.len(), 3);
        damage(&mut lines[1]);
        let middle_offset = lines[0].len();
        std::fs::write(&seg, lines.concat()).unwrap();

        let mut p = c.start();
        assert_eq!(damaged(&base), 1.0, "{what}");
        assert_eq!(ingested(&base, AGENT_ID), 4, "{what}: b1 and b3 replayed");
        let log = p.log_text();
        let warn = log
            .lines()
            .find(|l| l.contains("setting aside a damaged record"))
            .unwrap_or_else(|| panic!("{what}: no warning in {log}"));
        let v: Value = serde_json::from_str(warn).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["fields"]["offset"], json!(middle_offset), "{warn}");
        assert!(
            v["fields"]["path"].as_str().unwrap().ends_with(".jsonl"),
            "{warn}"
        );
        // Appends go on after the damage, and the next start reads them.
        accept(&base, &batch("b4", &targets));
        let _p = restart(&c, &mut p);
        assert_eq!(ingested(&base, AGENT_ID), 6, "{what}");
        assert_eq!(damaged(&base), 1.0, "{what}");
    }
}

#[test]
fn a_torn_tail_of_any_bytes_is_cut_and_appends_and_snapshots_go_on_from_there() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, targets) = catalog(2);
    let c = setup(&tmp.path().join("c"), &cat, "");
    let mut p = c.start();
    let base = c.url();
    accept(&base, &batch("b1", &targets));
    p.kill9();
    // A crash in the middle of a write: a record without its newline, not UTF-8.
    let seg = the_segment(&c);
    let mut bytes = std::fs::read(&seg).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(b"1234abcd {\"batch_id\":\"b\xff\xfe");
    std::fs::write(&seg, &bytes).unwrap();
    let mut p = c.start();
    assert_eq!(ingested(&base, AGENT_ID), 2);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good as u64);
    // The clean stop's snapshot records where b2 ends; b3 comes after it, and a start
    // from that snapshot replays b3 and nothing else.
    accept(&base, &batch("b2", &targets));
    let mut p = restart(&c, &mut p);
    accept(&base, &batch("b3", &targets));
    p.kill9();
    let _p = c.start();
    assert_eq!(damaged(&base), 0.0);
    let log = std::fs::read_to_string(c.dir.join("collector.log")).unwrap();
    let last_restore = log
        .lines()
        .rfind(|l| l.contains("restored accepted batches"))
        .unwrap_or_else(|| panic!("{log}"));
    let v: Value = serde_json::from_str(last_restore).unwrap();
    assert_eq!(v["fields"]["batches"], json!(1), "{last_restore}");
    for id in ["b1", "b2", "b3"] {
        let (status, body) = post(&base, &batch(id, &targets));
        assert_eq!(
            (status, &body["duplicate"]),
            (200, &json!(true)),
            "{id}: {body}"
        );
    }
}

#[test]
fn a_damaged_snapshot_is_not_used_and_the_whole_log_is_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, targets) = catalog(2);
    // The default interval: the clean stop writes a snapshot.
    let c = setup(&tmp.path().join("c"), &cat, "");
    let mut p = c.start();
    let base = c.url();
    for id in ["b1", "b2", "b3"] {
        accept(&base, &batch(id, &targets));
    }
    assert!(p.term(Duration::from_secs(20)), "{}", p.log_text());
    // Damage that the snapshot's own format cannot see: a string changed in place,
    // same length, still valid.
    let snap = c.dir.join("state/snapshot.bin");
    let bytes = std::fs::read(&snap).unwrap();
    let (from, to) = (AGENT_ID.as_bytes(), b"kz-agent-9");
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut changed = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            changed += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    assert!(changed > 0, "the snapshot names the agent");
    std::fs::write(&snap, out).unwrap();

    let _p = c.start();
    let m = scrape(&base);
    assert!(
        !m.contains("kz-agent-9"),
        "the damaged snapshot was used:\n{m}"
    );
    assert_eq!(
        ingested(&base, AGENT_ID),
        6,
        "the whole log is replayed instead"
    );
    let log = std::fs::read_to_string(c.dir.join("collector.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("not using the collector snapshot") && l.contains("checksum")),
        "{log}"
    );
}

#[test]
fn a_second_collector_on_the_same_state_dir_refuses_to_start_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, _) = catalog(1);
    let c = setup(&tmp.path().join("c"), &cat, "");
    let mut first = c.start();
    // The same configuration on another port: only the state directory is shared.
    let port = free_port();
    let text = std::fs::read_to_string(&c.config)
        .unwrap()
        .replace(&c.addr.to_string(), &format!("127.0.0.1:{port}"));
    let second_config = c.dir.join("second.toml");
    std::fs::write(&second_config, text).unwrap();
    let start_second = || {
        let mut cmd = Command::new(COLLECTOR);
        cmd.args(["collector", "--config"]).arg(&second_config);
        spawn(cmd, &c.dir.join("second.log"))
    };
    let mut second = start_second();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = second.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the second collector is still running on a shared state_dir: {}",
            second.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let said = second.log_text();
    assert!(
        said.contains(&format!("pid {}", first.pid())) && said.contains("in use by another"),
        "{said}"
    );
    assert!(first.alive());
    // A holder killed with -9 leaves its lock file behind, but not its lock.
    first.kill9();
    let second = start_second();
    wait_until(
        "the second collector listens",
        Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let lock = std::fs::read_to_string(c.dir.join("state/lock")).unwrap();
    assert_eq!(lock.trim(), second.pid().to_string());
}

#[test]
fn a_batch_the_log_holds_twice_is_counted_once_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, targets) = catalog(2);
    let c = setup(&tmp.path().join("c"), &cat, "snapshot_interval_secs = 0\n");
    let mut p = c.start();
    let base = c.url();
    let b1 = batch("b1", &targets);
    accept(&base, &b1);
    accept(&base, &batch("b2", &targets));
    let (status, body) = post(&base, &b1);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    assert!(p.term(Duration::from_secs(20)), "{}", p.log_text());
    // What a second collector sharing the directory wrote before there was a lock: its
    // own acknowledgement of the re-sent b1.
    let seg = the_segment(&c);
    let mut lines = records(&seg);
    assert_eq!(lines.len(), 2, "live ingest logged b1 once");
    let copy = lines[0].clone();
    lines.push(copy);
    std::fs::write(&seg, lines.concat()).unwrap();

    let _p = c.start();
    assert_eq!(ingested(&base, AGENT_ID), 4, "b1 counted once, b2 once");
    let (status, body) = post(&base, &b1);
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)), "{body}");
    assert_eq!(ingested(&base, AGENT_ID), 4);
    let log = std::fs::read_to_string(c.dir.join("collector.log")).unwrap();
    assert!(log.contains("holds batches twice"), "{log}");
}

/// Peak RSS of a collector under the region attack of issue 12 (60 observations, each
/// of its own target with its own 7 MB region), and after one scrape. A measurement,
/// not a check: `cargo test --release --test faults_state -- --ignored --nocapture`;
/// `BLACKOUT_BIN=path` measures another build of `blackout`.
#[test]
#[ignore]
fn region_attack_peak_rss() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, targets) = catalog(60);
    // Short bins, so that the regions are the detector's entities (and labels) by the
    // scrape.
    let c = setup(
        &tmp.path().join("c"),
        &cat,
        "snapshot_interval_secs = 0\n[detect]\nbin_secs = 1\ngrace_secs = 0\n",
    );
    let bin = std::env::var("BLACKOUT_BIN").unwrap_or_else(|_| COLLECTOR.to_string());
    let mut cmd = Command::new(&bin);
    cmd.args(["--log-format", "json", "collector", "--config"])
        .arg(&c.config);
    let mut p = spawn(cmd, &c.dir.join("collector.log"));
    wait_until("the collector listens", Duration::from_secs(20), || {
        assert!(p.alive(), "{}", p.log_text());
        std::net::TcpStream::connect(c.addr).is_ok()
    });
    let base = c.url();
    let idle = p.vm_hwm_kib();
    for (i, t) in targets.iter().enumerate() {
        let region = format!("{i:02}{}", "x".repeat(7 << 20));
        let b = json!({"batch_id": format!("r{i}"), "agent": AGENT_ID,
            "observations": [obs(t, Some(&region))]});
        let (status, body) = post(&base, &b);
        assert_eq!(status, 200, "{body}");
    }
    let uploads = p.vm_hwm_kib();
    // Bins of 1 s, no grace: the detector closes the attack's bin within this (a
    // measurement, not a check; the status API would itself cost memory to ask).
    std::thread::sleep(Duration::from_secs(4));
    let closed = p.vm_hwm_kib();
    let t0 = Instant::now();
    let m = scrape(&base);
    let scrape_ms = t0.elapsed().as_millis();
    let scraped = p.vm_hwm_kib();
    eprintln!(
        "{bin}: VmHWM idle {} MiB, after 60 uploads {} MiB, after a bin closed {} MiB, after one scrape {} MiB ({} bytes of metrics in {scrape_ms} ms)",
        idle / 1024,
        uploads / 1024,
        closed / 1024,
        scraped / 1024,
        m.len()
    );
}
