//! The upload wire (issue 17) with the real binaries: a new agent sends compact batches
//! under zstd and a new collector takes them; JSON (old agents, `curl`) is still taken,
//! also under gzip or zstd; an agent whose collector answers 415 (or, older than the
//! compact batch, 400) sends the same batch again as JSON and JSON from then on; a zstd
//! bomb is refused with 413 by its decoded size, without the collector's memory growing
//! with it.

mod faults_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faults_support::*;
use serde_json::{Value, json};

const AGENT_ID: &str = "wire-agent-1";
const TOKEN: &str = "tok-wire-1";
const COMPACT: &str = "application/vnd.blackout.batch.v2";

fn upload_bytes(base: &str, encoding: &str) -> f64 {
    metric_sum(
        &scrape(base),
        "blackout_upload_bytes_total",
        &[&format!("encoding=\"{encoding}\"")],
    )
}

/// Posts `body` with the given headers; (status, body).
fn post_raw(base: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    block_on(async {
        let mut req = client()
            .post(format!("{base}api/v1/observations"))
            .bearer_auth(TOKEN)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    })
}

fn json_batch(id: &str, targets: &[String]) -> Value {
    let o: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({
                "agent": AGENT_ID, "target": t, "country": "KZ", "asn": 64500, "signal": "tcp",
                "measured_at": chrono::Utc::now().to_rfc3339(), "ok": true, "rtt_ms": 0.4
            })
        })
        .collect();
    json!({"batch_id": id, "agent": AGENT_ID, "observations": o})
}

#[test]
fn a_new_agent_sends_compact_batches_and_the_collector_takes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, _open) = tcp_catalog(2, 1);
    let c = CollectorSetup::new(tmp.path(), &cat, &[(AGENT_ID, TOKEN)], "");
    let _collector = c.start();
    let cfg = agent_config(
        &tmp.path().join("agent"),
        tmp.path(),
        AGENT_ID,
        &c.url(),
        TOKEN,
        "",
    );
    let log = tmp.path().join("agent.log");
    let mut agent = start_agent(&cfg, &log, &[]);
    wait_until("9 observations", Duration::from_secs(30), || {
        ingested(&c.url(), AGENT_ID) >= 9
    });
    assert!(agent.term(Duration::from_secs(20)), "{}", agent.log_text());
    let base = c.url();
    let (compact, json) = (upload_bytes(&base, "compact"), upload_bytes(&base, "json"));
    assert!(compact > 0.0, "no compact upload: {}", scrape(&base));
    assert_eq!(json, 0.0, "a new agent sent JSON to a new collector");
    assert!(!agent.log_text().contains("sending JSON from now on"));
    // What the wire carried is what the agent spooled: nothing lost in the coding.
    let n = assert_log_exactly_once(&c);
    assert_eq!(n, ingested(&base, AGENT_ID));
}

#[test]
fn json_is_still_taken_plain_or_compressed_and_unknown_codings_are_415() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, _open) = tcp_catalog(0, 2);
    let targets = tcp_targets(&cat);
    let c = CollectorSetup::new(tmp.path(), &cat, &[(AGENT_ID, TOKEN)], "");
    let _collector = c.start();
    let base = c.url();
    let body = |id: &str| serde_json::to_vec(&json_batch(id, &targets)).unwrap();
    // An old agent, and `curl -d` (which says form-urlencoded).
    let (s, b) = post_raw(&base, &[("content-type", "application/json")], body("j1"));
    assert_eq!(s, 200, "{b}");
    let form = "application/x-www-form-urlencoded";
    let (s, b) = post_raw(&base, &[("content-type", form)], body("j2"));
    assert_eq!(s, 200, "{b}");
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(&body("j3")).unwrap();
    let gz = g.finish().unwrap();
    let (s, b) = post_raw(
        &base,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        gz,
    );
    assert_eq!(s, 200, "{b}");
    let z = zstd::encode_all(&body("j4")[..], 3).unwrap();
    let (s, b) = post_raw(&base, &[("content-encoding", "zstd")], z);
    assert_eq!(s, 200, "{b}");
    assert_eq!(ingested(&base, AGENT_ID), 8);
    assert!(upload_bytes(&base, "json") > 0.0);
    // A coding or a batch version the collector does not speak: 415, with what it takes.
    let r = block_on(async {
        client()
            .post(format!("{base}api/v1/observations"))
            .bearer_auth(TOKEN)
            .header("content-encoding", "br")
            .body(body("j5"))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(r.status().as_u16(), 415);
    assert_eq!(r.headers()["accept-encoding"], "zstd, gzip");
    let (s, b) = post_raw(
        &base,
        &[("content-type", "application/vnd.blackout.batch.v3")],
        body("j6"),
    );
    assert_eq!(s, 415, "{b}");
    assert_eq!(ingested(&base, AGENT_ID), 8);
}

/// Serialises zeros through zstd as they are produced: `bytes` of decoded body.
fn zstd_zeros(bytes: usize) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..bytes / chunk.len() {
        e.write_all(&chunk).unwrap();
    }
    e.finish().unwrap()
}

#[test]
fn a_zstd_bomb_is_refused_with_413_by_its_decoded_size() {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, _open) = tcp_catalog(0, 2);
    let targets = tcp_targets(&cat);
    let c = CollectorSetup::new(
        tmp.path(),
        &cat,
        &[(AGENT_ID, TOKEN)],
        "max_body_bytes = 1048576",
    );
    let collector = c.start();
    let base = c.url();
    let before_kib = collector.vm_hwm_kib();
    // 512 MiB of zeros in about 16 KiB on the wire, as compact and as JSON.
    let bomb = zstd_zeros(512 << 20);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    for ct in [COMPACT, "application/json"] {
        let (s, b) = post_raw(
            &base,
            &[("content-type", ct), ("content-encoding", "zstd")],
            bomb.clone(),
        );
        assert_eq!(s, 413, "{ct}: {b}");
        assert!(
            b.contains("decoded body exceeds the limit of 1048576 bytes"),
            "{b}"
        );
    }
    let grown_kib = collector.vm_hwm_kib().saturating_sub(before_kib);
    assert!(
        grown_kib < 64 * 1024,
        "the collector's peak memory grew by {grown_kib} KiB"
    );
    // A compact batch whose few bytes would be more observations than a JSON body within
    // the limit could hold: refused by what it decodes to, as 413.
    let mut many = json_batch("many", &targets);
    let one = many["observations"][0].clone();
    many["observations"] = Value::Array(vec![one; 20_000]);
    let batch: blackout_model::observation::Batch = serde_json::from_value(many).unwrap();
    let compact = blackout_model::compact::encode(&batch);
    assert!(compact.len() < 1 << 20, "{}", compact.len());
    let (s, b) = post_raw(&base, &[("content-type", COMPACT)], compact);
    assert_eq!(s, 413, "{b}");
    // The collector still takes a good batch.
    let ok = blackout_model::compact::encode(
        &serde_json::from_value(json_batch("ok", &targets)).unwrap(),
    );
    let (s, b) = post_raw(
        &base,
        &[("content-type", COMPACT), ("content-encoding", "zstd")],
        zstd::encode_all(&ok[..], 3).unwrap(),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(ingested(&base, AGENT_ID), 2);
}

/// What a fake collector saw of one upload.
#[derive(Debug, Clone)]
struct Seen {
    content_type: String,
    batch_id: Option<String>,
    status: u16,
}

/// A collector on loopback that answers compact uploads with `compact_status` (415: one
/// that refuses the type; 400: one older than the compact batch, which reads every body
/// as JSON) and takes JSON ones.
fn fake_collector(compact_status: u16) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let seen = s2.clone();
            std::thread::spawn(move || serve_one(s, compact_status, &seen));
        }
    });
    (url, seen)
}

fn serve_one(mut s: TcpStream, compact_status: u16, seen: &Mutex<Vec<Seen>>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let (mut len, mut ct) = (0usize, String::new());
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
            if k.eq_ignore_ascii_case("content-type") {
                ct = v.trim().to_string();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let batch = serde_json::from_slice::<Value>(&body).ok();
    let status = match &batch {
        Some(_) => 200,
        None => compact_status,
    };
    seen.lock().unwrap().push(Seen {
        content_type: ct,
        batch_id: batch.and_then(|b| b["batch_id"].as_str().map(String::from)),
        status,
    });
    let answer = if status == 200 {
        r#"{"duplicate":false}"#
    } else {
        r#"{"error":"no"}"#
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn falls_back_to_json(compact_status: u16) {
    let tmp = tempfile::tempdir().unwrap();
    let (cat, _open) = tcp_catalog(1, 0);
    std::fs::create_dir_all(tmp.path().join("catalog")).unwrap();
    std::fs::write(tmp.path().join("catalog/kz.toml"), &cat).unwrap();
    let (url, seen) = fake_collector(compact_status);
    let cfg = agent_config(
        &tmp.path().join("agent"),
        tmp.path(),
        AGENT_ID,
        &url,
        TOKEN,
        "",
    );
    let log = tmp.path().join("agent.log");
    let mut agent = start_agent(&cfg, &log, &[]);
    wait_until("3 JSON batches", Duration::from_secs(30), || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == 200)
            .count()
            >= 3
    });
    assert!(agent.term(Duration::from_secs(20)), "{}", agent.log_text());
    let seen = seen.lock().unwrap().clone();
    // One compact attempt, refused; then the same batch as JSON, and JSON only.
    assert_eq!(seen[0].content_type, COMPACT, "{seen:?}");
    assert_eq!(seen[0].status, compact_status, "{seen:?}");
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.content_type == "application/json" && s.status == 200),
        "{seen:?}"
    );
    let spooled = spooled_batches(&[&log]);
    let first = seen[1].batch_id.clone().unwrap();
    assert!(spooled.contains_key(&first), "{first} {spooled:?}");
    let text = agent.log_text();
    assert!(text.contains("sending JSON from now on"), "{text}");
    assert!(!text.contains("rejected a batch"), "{text}");
}

#[test]
fn an_agent_falls_back_to_json_when_the_collector_answers_415() {
    falls_back_to_json(415);
}

/// A collector older than the compact batch reads it as JSON and answers 400: the agent
/// must not drop the batch as invalid.
#[test]
fn an_agent_falls_back_to_json_when_an_older_collector_answers_400() {
    falls_back_to_json(400);
}

/// A state directory written by an older collector (a bare JSON line of the first
/// versions, a checksummed JSON record) gets compact records appended, and a restart
/// replays all of them; the compact records are a fraction of the JSON ones.
#[test]
fn a_log_of_json_and_compact_records_replays_whole() {
    use blackout_collector::log::encode_json_record;
    use blackout_model::observation::Batch;
    let tmp = tempfile::tempdir().unwrap();
    let (cat, _open) = tcp_catalog(0, 3);
    let targets = tcp_targets(&cat);
    let c = CollectorSetup::new(tmp.path(), &cat, &[(AGENT_ID, TOKEN)], "");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let seg = state.join(format!(
        "observations-{}.jsonl",
        chrono::Utc::now().format("%Y-%m-%d")
    ));
    let old = |id: &str| -> Batch { serde_json::from_value(json_batch(id, &targets)).unwrap() };
    let mut text = serde_json::to_vec(&old("old-bare")).unwrap();
    text.push(b'\n');
    text.extend(encode_json_record(&old("old-record")));
    std::fs::write(&seg, &text).unwrap();
    let mut collector = c.start();
    let base = c.url();
    assert_eq!(ingested(&base, AGENT_ID), 6, "{}", collector.log_text());
    let new = blackout_model::compact::encode(&old("new"));
    let (s, b) = post_raw(
        &base,
        &[("content-type", COMPACT), ("content-encoding", "zstd")],
        zstd::encode_all(&new[..], 3).unwrap(),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = post_raw(
        &base,
        &[("content-type", "application/json")],
        serde_json::to_vec(&json_batch("new-json", &targets)).unwrap(),
    );
    assert_eq!(s, 200, "{b}");
    let bytes = std::fs::read(&seg).unwrap();
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 4);
    // Both new batches are logged compact, whatever their upload encoding.
    for l in &lines[2..] {
        assert_eq!(l[9], b'z', "{}", String::from_utf8_lossy(l));
        assert!(l.len() * 2 < encode_json_record(&old("new")).len());
    }
    // A crash: no snapshot, the whole log is replayed.
    collector.kill9();
    let _collector = c.start();
    assert_eq!(ingested(&base, AGENT_ID), 12);
    let (s, b) = post_raw(
        &base,
        &[("content-type", "application/json")],
        serde_json::to_vec(&json_batch("old-record", &targets)).unwrap(),
    );
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("\"duplicate\":true"), "{b}");
    assert_eq!(c.logged_batches().len(), 4);
}

/// A log segment older than `retention_days` is summed up per bin, country and signal
/// before it is deleted at start; the sums are the series `blackout replay --signals`
/// reads.
#[test]
fn an_expired_segment_leaves_its_per_bin_sums_for_replay() {
    use blackout_collector::log::encode_record;
    use blackout_model::observation::Batch;
    let tmp = tempfile::tempdir().unwrap();
    let (cat, _open) = tcp_catalog(0, 3);
    let targets = tcp_targets(&cat);
    let c = CollectorSetup::new(tmp.path(), &cat, &[(AGENT_ID, TOKEN)], "");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let day = chrono::Utc::now().date_naive() - chrono::Days::new(40);
    let at = day.and_hms_opt(10, 0, 0).unwrap().and_utc();
    let mut b: Batch = serde_json::from_value(json_batch("old", &targets)).unwrap();
    for (i, o) in b.observations.iter_mut().enumerate() {
        o.measured_at = at + chrono::Duration::seconds(i as i64);
    }
    b.observations[2].ok = false;
    b.observations[2].rtt_ms = None;
    b.observations[2].phase = Some(blackout_model::Phase::Connect);
    b.observations[2].failure = Some(blackout_model::Failure::Refused);
    let seg = state.join(format!("observations-{}.jsonl", day.format("%Y-%m-%d")));
    std::fs::write(&seg, encode_record(&b)).unwrap();
    let _collector = c.start();
    assert!(!seg.exists(), "the expired segment is deleted");
    let sums = state.join(format!("aggregates-{}.csv.zst", day.format("%Y-%m-%d")));
    let csv = zstd::decode_all(&std::fs::read(&sums).unwrap()[..]).unwrap();
    let text = String::from_utf8(csv).unwrap();
    let bin = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        text,
        format!(
            "timestamp,entity,signal,value\n{bin},KZ,tcp,0.6667\n{bin},KZ,tcp_rtt,0.400\n\
             {bin},KZ/AS64500,tcp,0.6667\n{bin},KZ/AS64500,tcp_rtt,0.400\n"
        )
    );
    let file = tmp.path().join("series.csv");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(COLLECTOR)
        .args(["replay", "--signals"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
