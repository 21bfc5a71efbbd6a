//! The real `blackout-agent` against a hostile collector and hostile targets (issue 12,
//! items 4-6): catalogs that expand into billions of targets, endless response bodies,
//! names and redirects that lead to addresses the agent must not contact, a spool disk
//! that fills up. Everything runs on loopback (or a tmpfs the test mounts); every attack
//! is bounded and stops by itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blackout_test_support as common;
use serde_json::Value;

/// What the fake collector answers.
enum Reply {
    Json(Vec<u8>),
    /// 200 with a body of `prefix` then `chunk` over and over, `total` bytes at most (a
    /// bound so that even the old agent, which read it all, ends the attack).
    Endless {
        prefix: Vec<u8>,
        chunk: Vec<u8>,
        total: usize,
    },
}

type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// A collector on loopback that hands out catalogs (`handler("catalog", n)` for the n-th
/// fetch) and keeps every uploaded batch (`handler("upload", n)` says what to answer).
struct FakeCollector {
    url: String,
    fetches: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<Value>>>,
}

fn read_request(s: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

/// An upload's batch as JSON: agents send the compact batch under zstd, `curl` JSON.
fn upload_body(body: &[u8]) -> Option<Value> {
    if let Ok(b) = serde_json::from_slice::<Value>(body) {
        return Some(b);
    }
    let raw = zstd::decode_all(body).ok()?;
    let batch = blackout_model::compact::decode(&raw).ok()?;
    serde_json::to_value(batch).ok()
}

fn answer(s: &mut TcpStream, reply: Reply) {
    let _ = match reply {
        Reply::Json(b) => s
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    b.len()
                )
                .as_bytes(),
            )
            .and_then(|_| s.write_all(&b)),
        Reply::Endless {
            prefix,
            chunk,
            total,
        } => (|| {
            s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
            )?;
            s.write_all(&prefix)?;
            let mut sent = prefix.len();
            while sent < total {
                s.write_all(&chunk)?;
                sent += chunk.len();
            }
            Ok::<_, std::io::Error>(())
        })(),
    };
}

impl FakeCollector {
    fn start(handler: Arc<Handler>) -> FakeCollector {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let uploads = Arc::new(AtomicUsize::new(0));
        {
            let (fetches, batches) = (fetches.clone(), batches.clone());
            std::thread::spawn(move || {
                for s in l.incoming() {
                    let Ok(mut s) = s else { continue };
                    let (handler, fetches, batches, uploads) = (
                        handler.clone(),
                        fetches.clone(),
                        batches.clone(),
                        uploads.clone(),
                    );
                    std::thread::spawn(move || {
                        let Some((method, path, body)) = read_request(&mut s) else {
                            return;
                        };
                        let reply = if method == "GET" && path.starts_with("/api/v1/catalog") {
                            handler("catalog", fetches.fetch_add(1, Ordering::SeqCst))
                        } else {
                            if let Some(b) = upload_body(&body) {
                                batches.lock().unwrap().push(b);
                            }
                            handler("upload", uploads.fetch_add(1, Ordering::SeqCst))
                        };
                        answer(&mut s, reply);
                    });
                }
            });
        }
        FakeCollector {
            url,
            fetches,
            batches,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Distinct batches received so far.
    fn batch_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .batches
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b["batch_id"].as_str().map(String::from))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The highest count of refused catalogs an upload reported.
    fn max_catalog_refusals(&self) -> u64 {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| b["spool"]["catalog_refusals"].as_u64())
            .max()
            .unwrap_or(0)
    }

    fn observations(&self) -> Vec<Value> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["observations"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// A TCP listener that counts the connections it accepts (what a probe reached).
fn counting_listener(addr: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind(addr).unwrap();
    let a = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            if s.is_ok() {
                m.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (a, n)
}

/// A TCP target every round reaches, so that an agent that keeps probing is seen.
fn good_catalog(tcp: SocketAddr) -> Vec<u8> {
    format!(r#"[{{"country":"KZ","tcp":[{{"address":"{tcp}","asn":1}}]}}]"#).into_bytes()
}

/// 100 entries of 2^24 blocks each: 1.7 billion targets (the agent reserved 40 GB).
fn billions_catalog() -> Vec<u8> {
    let e = r#"{"prefix":"2a00::/16","asn":1,"block_len":40}"#;
    format!(
        r#"[{{"country":"KZ","icmp":[{}]}}]"#,
        vec![e; 100].join(",")
    )
    .into_bytes()
}

fn start_agent(dir: &Path, collector: &str, extra: &str) -> (common::Proc, PathBuf) {
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "agent_id = \"hostile\"\ncollector_url = \"{collector}\"\ntoken = \"t\"\nround_secs = 1\ntimeout_ms = 500\nupload_interval_secs = 1\ncatalog_refresh_secs = 1\n{extra}"
        ),
    )
    .unwrap();
    let log = dir.join("agent.log");
    let p = common::Proc::spawn(
        "blackout-agent",
        Command::new(env!("CARGO_BIN_EXE_blackout-agent"))
            .current_dir(dir)
            .args(["run", "--config", "agent.toml"]),
        &log,
    );
    (p, log)
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Batches keep arriving: the agent is alive and probing.
fn wait_for_more_batches(c: &FakeCollector, more: usize, agent: &mut common::Proc, log: &Path) {
    let before = c.batch_ids().len();
    common::wait_until(
        "the agent to keep uploading",
        Duration::from_secs(15),
        || {
            agent.assert_running(log);
            c.batch_ids().len() >= before + more
        },
    );
}

/// A catalog that expands into 1.7 billion targets, first at the start and then as a
/// refresh: refused before anything is allocated, the refusal logged with the limit, and
/// the agent keeps probing (first retrying, then with the catalog it had).
#[test]
fn a_catalog_of_billions_of_targets_is_refused_and_the_agent_keeps_probing() {
    let (target, reached) = counting_listener("127.0.0.1:0");
    let c = FakeCollector::start(Arc::new(move |what: &str, n: usize| match (what, n) {
        ("catalog", 1) => Reply::Json(good_catalog(target)),
        ("catalog", _) => Reply::Json(billions_catalog()),
        _ => Reply::Json(b"{}".to_vec()),
    }));
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, log) = start_agent(dir.path(), &c.url, "allow_reserved = true\n");
    common::wait_until(
        "two refused refreshes after the good catalog",
        Duration::from_secs(20),
        || {
            agent.assert_running(&log);
            c.fetches() >= 4
        },
    );
    wait_for_more_batches(&c, 2, &mut agent, &log);
    assert!(reached.load(Ordering::SeqCst) > 0);
    assert!(
        c.max_catalog_refusals() >= 2,
        "the refusals reach the collector"
    );
    let text = log_text(&log);
    assert!(
        text.contains("max_targets") && text.contains("1677721600 targets"),
        "the refusal names the limit and the count:\n{text}"
    );
    let peak = peak_rss_mib(agent.pid());
    eprintln!("agent peak RSS under the billions catalog: {peak:.1} MiB");
    assert!(peak < 150.0, "peak RSS {peak:.1} MiB");
}

/// An endless catalog body and endless upload response bodies (each bounded at 256 MiB
/// by the attacker here): the catalog is cut at `max_catalog_bytes`, an upload response
/// at a few KiB; memory stays small and uploads go on being acknowledged.
#[test]
fn endless_catalog_and_upload_response_bodies_are_cut_short() {
    let (target, _) = counting_listener("127.0.0.1:0");
    let endless = |prefix: &[u8], chunk: &[u8]| Reply::Endless {
        prefix: prefix.to_vec(),
        chunk: chunk.repeat(4096),
        total: 256 << 20,
    };
    let c = FakeCollector::start(Arc::new(move |what: &str, n: usize| match (what, n) {
        ("catalog", 0) => Reply::Json(good_catalog(target)),
        ("catalog", _) => endless(
            br#"[{"country":"KZ","tcp":["#,
            br#"{"address":"127.0.0.1:1","asn":1},"#,
        ),
        _ => endless(b"{\"ok\":\"", b"x"),
    }));
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, log) = start_agent(
        dir.path(),
        &c.url,
        "allow_reserved = true\nmax_catalog_bytes = 1048576\n",
    );
    common::wait_until("two endless catalogs", Duration::from_secs(20), || {
        agent.assert_running(&log);
        c.fetches() >= 3
    });
    // New batches, not the same one again: every upload was acknowledged.
    wait_for_more_batches(&c, 3, &mut agent, &log);
    assert!(
        c.max_catalog_refusals() >= 1,
        "the refusal reaches the collector"
    );
    let text = log_text(&log);
    assert!(
        text.contains("max_catalog_bytes") && text.contains("1048576"),
        "the refusal names the limit:\n{text}"
    );
    let peak = peak_rss_mib(agent.pid());
    eprintln!("agent peak RSS under endless bodies: {peak:.1} MiB");
    assert!(peak < 150.0, "peak RSS {peak:.1} MiB");
}

fn observations_of(c: &FakeCollector, target: &str) -> Vec<Value> {
    c.observations()
        .into_iter()
        .filter(|o| o["target"] == target)
        .collect()
}

/// A name that resolves to loopback (`localhost`, from /etc/hosts, as an injected DNS
/// answer would) with `allow_reserved = false`: refused as `reserved_address`, never
/// connected to.
#[test]
fn a_name_that_resolves_to_a_reserved_address_is_refused() {
    let (target, reached) = counting_listener("127.0.0.1:0");
    let c = FakeCollector::start(Arc::new(|_: &str, _: usize| Reply::Json(b"{}".to_vec())));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kz.toml"),
        format!(
            "country = \"KZ\"\n[[http]]\nid = \"by-name\"\nurl = \"http://localhost:{}/\"\nasn = 1\n",
            target.port()
        ),
    )
    .unwrap();
    let (mut agent, log) = start_agent(dir.path(), &c.url, "catalog = [\"kz.toml\"]\n");
    let obs = common::wait_for(
        "observations of the target",
        Duration::from_secs(15),
        || {
            agent.assert_running(&log);
            let o = observations_of(&c, "by-name");
            (o.len() >= 2).then_some(o)
        },
    );
    for o in &obs {
        assert_eq!(o["ok"], false, "{o}");
        assert_eq!(o["failure"], "reserved_address", "{o}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the agent connected");
}

/// A lab agent (`allow_reserved = true`) with an opted-out address: a redirect to it is
/// refused as `opted_out_address` at the hop, and the IPv4-mapped IPv6 form of it
/// (`[::ffff:127.0.0.2]`) is refused as the IPv4 address it reaches; neither is
/// connected to.
#[test]
fn redirects_and_ipv4_mapped_addresses_obey_the_opt_out() {
    let (forbidden, reached) = counting_listener("127.0.0.2:0");
    // The first hop: allowed, and it redirects to the opted-out address.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let first = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = read_request(&mut s);
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 302 Found\r\nlocation: http://{forbidden}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
        }
    });
    let c = FakeCollector::start(Arc::new(|_: &str, _: usize| Reply::Json(b"{}".to_vec())));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kz.toml"),
        format!(
            "country = \"KZ\"\n[[http]]\nid = \"redirected\"\nurl = \"http://{first}/\"\nasn = 1\n\n[[tcp]]\nid = \"mapped\"\naddress = \"[::ffff:127.0.0.2]:{}\"\nasn = 1\n",
            forbidden.port()
        ),
    )
    .unwrap();
    let (mut agent, log) = start_agent(
        dir.path(),
        &c.url,
        "catalog = [\"kz.toml\"]\nallow_reserved = true\nopt_out = [\"127.0.0.2/32\"]\n",
    );
    let obs = common::wait_for(
        "observations of the target",
        Duration::from_secs(15),
        || {
            agent.assert_running(&log);
            let o = observations_of(&c, "redirected");
            (o.len() >= 2).then_some(o)
        },
    );
    for o in &obs {
        assert_eq!(o["ok"], false, "{o}");
        assert_eq!(o["failure"], "opted_out_address", "{o}");
    }
    assert!(
        observations_of(&c, "mapped").is_empty(),
        "the mapped target was probed"
    );
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the agent connected");
}

/// Unmounts the test's tmpfs however the test ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with one file until it is full.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    p
}

/// A spool on a full disk (a small tmpfs, filled): every failed write is counted in
/// `dropped_observations`, leaves no `.tmp` behind, the agent keeps running, and once
/// space returns it spools and uploads again, reporting the loss to the collector.
#[test]
fn a_full_spool_disk_counts_the_loss_cleans_up_and_resumes() {
    if !common::is_root() {
        eprintln!("SKIP: mounting a tmpfs needs root");
        return;
    }
    let (target, _) = counting_listener("127.0.0.1:0");
    let c = FakeCollector::start(Arc::new(|_: &str, _: usize| Reply::Json(b"{}".to_vec())));
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&spool)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _mount = Mount(spool.clone());
    let filler = fill(&spool);
    let catalog: String = (0..20)
        .map(|i| format!("[[tcp]]\nid = \"t{i}\"\naddress = \"{target}\"\nasn = 1\n\n"))
        .collect();
    std::fs::write(
        dir.path().join("kz.toml"),
        format!("country = \"KZ\"\n{catalog}"),
    )
    .unwrap();
    let (mut agent, log) = start_agent(
        dir.path(),
        &c.url,
        "catalog = [\"kz.toml\"]\nallow_reserved = true\nspool_dir = \"spool\"\n",
    );
    common::wait_until("three failed spool writes", Duration::from_secs(20), || {
        agent.assert_running(&log);
        log_text(&log).matches("cannot write to the spool").count() >= 3
    });
    agent.assert_running(&log);
    let leftovers: Vec<String> = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    assert!(
        c.batch_ids().is_empty(),
        "nothing was spooled, nothing sent"
    );
    // Space returns.
    std::fs::remove_file(&filler).unwrap();
    let dropped = common::wait_for(
        "an upload that reports the loss",
        Duration::from_secs(15),
        || {
            agent.assert_running(&log);
            c.batches
                .lock()
                .unwrap()
                .iter()
                .filter_map(|b| b["spool"]["dropped_observations"].as_u64())
                .max()
                .filter(|d| *d > 0)
        },
    );
    // Every batch the agent could not spool had observations: at least one each.
    assert!(dropped >= 3, "dropped_observations = {dropped}");
    wait_for_more_batches(&c, 2, &mut agent, &log);
}

use blackout_test_support::Netns;

/// What a censor's resolver answers for every name: a CNAME chain
/// (`NAME -> cdn.blocked.test.`) that ends in `A 127.0.0.1`.
fn injected_answer(query: &[u8]) -> Option<Vec<u8>> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::rdata::{A, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_available = true;
    r.add_queries(q.queries.clone());
    let cdn = Name::from_ascii("cdn.blocked.test.").ok()?;
    r.add_answer(Record::from_rdata(
        question.name().clone(),
        60,
        RData::CNAME(CNAME(cdn.clone())),
    ));
    if question.query_type() == RecordType::A {
        r.add_answer(Record::from_rdata(
            cdn,
            60,
            RData::A(A(std::net::Ipv4Addr::LOCALHOST)),
        ));
    }
    r.to_vec().ok()
}

/// An injected DNS answer that leads, through a CNAME chain, to a private address: the
/// agent runs in a namespace whose resolver (`/etc/netns/NS/resolv.conf`, as `ip netns
/// exec` sets it up) is a server of the test's. Refused as `reserved_address`, never
/// connected to.
#[test]
fn an_injected_dns_answer_through_a_cname_chain_is_refused() {
    if !common::is_root() || common::which("ip").is_none() {
        eprintln!("SKIP: needs root and iproute2 for a network namespace");
        return;
    }
    let ns = Netns(format!("bo-h2-dns-{}", std::process::id()));
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success()
        && Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success();
    assert!(ok, "cannot create the namespace");
    std::fs::create_dir_all(format!("/etc/netns/{}", ns.0)).unwrap();
    std::fs::write(
        format!("/etc/netns/{}/resolv.conf", ns.0),
        "nameserver 127.0.0.1\n",
    )
    .unwrap();
    // Everything the agent talks to lives in the namespace: threads started from a
    // thread inside it stay inside it.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = format!("/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let dns = std::net::UdpSocket::bind("127.0.0.1:53").unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = dns.recv_from(&mut buf) {
                if let Some(r) = injected_answer(&buf[..n]) {
                    let _ = dns.send_to(&r, from);
                }
            }
        });
        let (target, reached) = counting_listener("127.0.0.1:0");
        let c = FakeCollector::start(Arc::new(|_: &str, _: usize| Reply::Json(b"{}".to_vec())));
        tx.send((target, reached, c)).unwrap();
    });
    let (target, reached, c) = rx.recv().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kz.toml"),
        format!(
            "country = \"KZ\"\n[[http]]\nid = \"injected\"\nurl = \"http://www.blocked.test:{}/\"\nasn = 1\n",
            target.port()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "agent_id = \"hostile\"\ncollector_url = \"{}\"\ntoken = \"t\"\nround_secs = 1\ntimeout_ms = 1000\nupload_interval_secs = 1\ncatalog = [\"kz.toml\"]\n",
            c.url
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut agent = common::Proc::spawn(
        "blackout-agent",
        Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(env!("CARGO_BIN_EXE_blackout-agent"))
            .current_dir(dir.path())
            .args(["run", "--config", "agent.toml"]),
        &log,
    );
    let obs = common::wait_for(
        "observations of the target",
        Duration::from_secs(15),
        || {
            agent.assert_running(&log);
            let o = observations_of(&c, "injected");
            (o.len() >= 2).then_some(o)
        },
    );
    for o in &obs {
        assert_eq!(o["ok"], false, "{o}");
        assert_eq!(o["failure"], "reserved_address", "{o}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the agent connected");
    drop(agent);
}
