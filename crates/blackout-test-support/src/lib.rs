//! Helpers for integration tests that start real processes and servers: free ports,
//! privileges, waiting, HTTP, Prometheus, network namespaces. A dev-dependency only.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when the guard drops, even when a test fails.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.into(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{} exited with {status}:\n{text}", self.name);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of a program, if installed (also looks in /usr/sbin, which root's PATH may lack).
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// Returns the programs, or prints why the test is skipped and returns None.
pub fn require(test: &str, progs: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = Vec::new();
    for p in progs {
        match which(p) {
            Some(path) => found.push(path),
            None => {
                eprintln!("SKIPPED {test}: `{p}` is not installed (bash .ci/run installs it)");
                return None;
            }
        }
    }
    Some(found)
}

/// A network namespace of the test's own (the test runs `ip netns add` itself), removed
/// however the test ends: processes left inside are killed first (or the namespace
/// stays alive), then the namespace and its `/etc/netns` files go.
pub struct Netns(pub String);

impl Netns {
    /// A new namespace with nothing but loopback, up: an offline machine.
    pub fn loopback_only(name: &str) -> Netns {
        let ok = |args: &[&str]| Command::new("ip").args(args).status().unwrap().success();
        assert!(ok(&["netns", "add", name]), "ip netns add {name}");
        let ns = Netns(name.to_string());
        assert!(
            ok(&["-n", name, "link", "set", "lo", "up"]),
            "lo up in {name}"
        );
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.0));
    }
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A blocking HTTP GET on loopback; (status, body).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let s = r.status().as_u16();
        Some((s, r.text().await.ok()?))
    })
}

/// SHA-256 of a token, hex, as collector.toml wants it.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Starts a real Prometheus scraping `targets` every second; returns it and its base URL.
pub fn start_prometheus(prometheus: &Path, dir: &Path, targets: &[String]) -> (Proc, String) {
    let port = free_port();
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: blackout\n    static_configs:\n      - targets: [{list}]\n"
        ),
    )
    .unwrap();
    let p = Proc::spawn(
        "prometheus",
        Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        &dir.join("prometheus.log"),
    );
    (p, format!("http://127.0.0.1:{port}"))
}

/// Runs an instant PromQL query; the result vector as (labels, value).
pub fn promql(base: &str, query: &str) -> Option<Vec<(serde_json::Value, f64)>> {
    let mut url = reqwest::Url::parse(&format!("{base}/api/v1/query")).ok()?;
    url.query_pairs_mut().append_pair("query", query);
    let (status, body) = http_get(url.as_str())?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .filter_map(|r| {
                let val = r["value"][1].as_str()?.parse::<f64>().ok()?;
                Some((r["metric"].clone(), val))
            })
            .collect(),
    )
}

/// Reads an HTTP request or response head (up to the blank line); false when the peer
/// closed or failed first. For the tests' own small HTTP servers.
pub async fn read_http_head(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Runs `f` on a thread inside network namespace `ns`, with its own runtime, so that the
/// sockets it opens live there.
pub fn in_netns<F, Fut, T>(ns: &str, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .unwrap()
}

/// Polls `f` every 100 ms until it holds; fails the test after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
