//! Shared by the faults_* and api_* tests: real `blackout` and `blackout-agent`
//! processes, their configs, and what they report.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const COLLECTOR: &str = env!("CARGO_BIN_EXE_blackout");
pub const AGENT: &str = env!("CARGO_BIN_EXE_blackout-agent");

pub fn sha256_hex(s: &str) -> String {
    blackout_test_support::token_hash(s)
}

// Not every test binary that includes this module uses all of them.
#[allow(unused_imports)]
pub use blackout_test_support::{free_port, is_root, wait_until};

/// TCP targets on loopback: the first `open` accept connections (a thread accepts and
/// closes), the others are refused. Returns the catalog text (country KZ, AS 64500).
pub fn tcp_catalog(open: usize, closed: usize) -> (String, Vec<TcpListener>) {
    let mut text = String::from(
        "country = \"KZ\"\nname = \"test\"\n\n[[network]]\nasn = 64500\nname = \"test net\"\n",
    );
    let mut keep = Vec::new();
    for _ in 0..open {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let l2 = l.try_clone().unwrap();
        std::thread::spawn(move || {
            for c in l2.incoming() {
                drop(c);
            }
        });
        keep.push(l);
        text += &format!("\n[[tcp]]\naddress = \"{addr}\"\nasn = 64500\n");
    }
    // A port just freed can be handed out again by the next call: each target's port
    // must be distinct, or the catalog holds one target twice and is refused.
    let mut ports = std::collections::HashSet::new();
    while ports.len() < closed {
        let port = free_port();
        if keep
            .iter()
            .any(|l| l.local_addr().is_ok_and(|a| a.port() == port))
            || !ports.insert(port)
        {
            continue;
        }
        text += &format!("\n[[tcp]]\naddress = \"127.0.0.1:{port}\"\nasn = 64500\n");
    }
    (text, keep)
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `within` for a clean exit.
    pub fn term(&mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The target ids (`tcp:IP:PORT`) of a catalog made by [`tcp_catalog`].
pub fn tcp_targets(catalog: &str) -> Vec<String> {
    catalog
        .lines()
        .filter_map(|l| l.strip_prefix("address = \""))
        .map(|a| format!("tcp:{}", a.trim_end_matches('"')))
        .collect()
}

/// Starts a command with stdout and stderr appended to `log`.
pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null());
    Proc {
        child: cmd.spawn().unwrap(),
        log: log.to_path_buf(),
    }
}

pub struct CollectorSetup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub scheme: &'static str,
}

impl CollectorSetup {
    /// Writes `collector.toml` in `dir` for agents `(id, token)`, the catalog `kz.toml`,
    /// state in `dir/state`; `extra` is appended to the config.
    pub fn new(dir: &Path, catalog: &str, agents: &[(&str, &str)], extra: &str) -> Self {
        Self::new_on(dir, catalog, agents, extra, "127.0.0.1")
    }

    /// As [`CollectorSetup::new`], listening on `ip` (which must be local).
    pub fn new_on(
        dir: &Path,
        catalog: &str,
        agents: &[(&str, &str)],
        extra: &str,
        ip: &str,
    ) -> Self {
        std::fs::create_dir_all(dir.join("catalog")).unwrap();
        std::fs::write(dir.join("catalog/kz.toml"), catalog).unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let mut text = format!(
            "listen = \"{addr}\"\nstate_dir = \"{}\"\ncatalog = [\"catalog\"]\n{extra}\n",
            dir.join("state").display()
        );
        for (id, tok) in agents {
            text += &format!(
                "\n[[agent]]\nid = \"{id}\"\ntoken_sha256 = \"{}\"\n",
                sha256_hex(tok)
            );
        }
        let config = dir.join("collector.toml");
        std::fs::write(&config, text).unwrap();
        let scheme = if extra.contains("tls_cert_file") {
            "https"
        } else {
            "http"
        };
        CollectorSetup {
            dir: dir.to_path_buf(),
            config,
            addr,
            scheme,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.addr)
    }

    /// Starts the collector (log appended to `dir/collector.log`) and waits until it is
    /// ready (`/-/ready`: the port opens before the log replay, ready after it; over TLS,
    /// until it listens).
    pub fn start(&self) -> Proc {
        let mut p = self.start_early();
        let t0 = Instant::now();
        while self.scheme == "http"
            && blackout_test_support::http_get(&format!("{}-/ready", self.url()))
                .is_none_or(|(s, _)| s != 200)
        {
            assert!(
                p.alive() && t0.elapsed() < Duration::from_secs(60),
                "collector did not become ready: {}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        p
    }

    /// Starts the collector and returns as soon as it listens (possibly still replaying).
    pub fn start_early(&self) -> Proc {
        let mut cmd = Command::new(COLLECTOR);
        cmd.args(["--log-format", "json", "collector", "--config"])
            .arg(&self.config);
        let p = spawn(cmd, &self.dir.join("collector.log"));
        let t0 = Instant::now();
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "collector did not start: {}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        p
    }

    /// Every batch in the collector's durable log.
    pub fn logged_batches(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("state"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        for f in files {
            for line in BufReader::new(std::fs::File::open(f).unwrap()).lines() {
                let batch = blackout_collector::log::decode_record(line.unwrap().as_bytes())
                    .expect("a good record");
                out.push(serde_json::to_value(batch).unwrap());
            }
        }
        out
    }
}

/// Writes `agent.toml` in `dir` (spool in `dir/spool`, catalog from the collector's
/// directory) and returns its path.
pub fn agent_config(
    dir: &Path,
    collector_dir: &Path,
    id: &str,
    url: &str,
    token: &str,
    extra: &str,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let text = format!(
        "agent_id = \"{id}\"\ncollector_url = \"{url}\"\ntoken = \"{token}\"\ncatalog = [\"{}\"]\nspool_dir = \"{}\"\nround_secs = 1\ntimeout_ms = 300\nupload_interval_secs = 1\nallow_reserved = true\n{extra}\n",
        collector_dir.join("catalog").display(),
        dir.join("spool").display()
    );
    let p = dir.join("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts an agent whose spool writes are logged (JSON lines), optionally through a
/// wrapper (e.g. `ip netns exec NS`).
pub fn start_agent(config: &Path, log: &Path, wrapper: &[&str]) -> Proc {
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(AGENT);
            c
        }
        None => Command::new(AGENT),
    };
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,blackout_agent::spool=debug");
    spawn(cmd, log)
}

/// `batch id -> observations` of every "batch spooled" line in agent logs.
pub fn spooled_batches(logs: &[&Path]) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for l in logs {
        let text = std::fs::read_to_string(l).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            // Copies for further collectors (`spool_dir/collector-N`) are not new
            // observations.
            let extra_copy = v["fields"]["spool"]
                .as_str()
                .is_some_and(|s| s.contains("/collector-"));
            if v["fields"]["message"] == "batch spooled" && !extra_copy {
                let id = v["fields"]["batch"].as_str().unwrap().to_string();
                let n = v["fields"]["observations"].as_u64().unwrap();
                assert!(out.insert(id, n).is_none(), "a batch id spooled twice");
            }
        }
    }
    out
}

/// `batch id -> observations` of the batches in a spool directory.
pub fn spool_contents(spool: &Path) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir(spool) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "bcz" || x == "json") {
            let b = blackout_agent::spool::read_file(&p).unwrap();
            out.insert(b.batch_id, b.observations.len() as u64);
        }
    }
    out
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Sum of a metric's samples whose labels contain all of `labels` (e.g. `agent="a1"`).
pub fn metric_sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs a future to completion on a private runtime (the tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn scrape(base: &str) -> String {
    block_on(async {
        client()
            .get(format!("{base}metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
}

pub fn ingested(base: &str, agent: &str) -> u64 {
    metric_sum(
        &scrape(base),
        "blackout_observations_ingested_total",
        &[&format!("agent=\"{agent}\"")],
    ) as u64
}

/// The collector's log holds no batch twice and no observation twice (an observation
/// is one probe: agent, target and time). Returns the number of observations.
pub fn assert_log_exactly_once(c: &CollectorSetup) -> u64 {
    let mut ids = HashSet::new();
    let mut obs = HashSet::new();
    let mut n = 0u64;
    for b in c.logged_batches() {
        let key = format!("{}/{}", b["agent"], b["batch_id"]);
        assert!(ids.insert(key.clone()), "batch {key} logged twice");
        for o in b["observations"].as_array().unwrap() {
            n += 1;
            let k = format!("{}|{}|{}", o["agent"], o["target"], o["measured_at"]);
            assert!(obs.insert(k.clone()), "observation {k} logged twice");
        }
    }
    n
}
