//! A simulated Internet on one machine, for end-to-end shutdown scenarios.
//!
//! Network namespaces joined by veth pairs to one transit router namespace:
//!
//! ```text
//!   xa1 xa2   xb1 xb2   xc1 xc2      three countries, two networks (ASNs) each: ICMP-responsive
//!     \  |     |  |     |  /         blocks (local routes), knot (authoritative DNS), nginx
//!      \ |     |  |     | /          (HTTP and HTTPS); the agent `in` runs inside xa1
//!        +---- router ----+          nftables forward chain and tc qdiscs: the cut tools
//!      / |        |       \
//!    v1  v2      ctl      col        vantage agents; control targets (country ZZ);
//!                                    the collector and a real Prometheus scraping it
//! ```
//!
//! Every name (namespaces, temp dir) starts with a prefix holding the test process id, so
//! parallel tests never collide and leftovers of a crashed run are found and removed the
//! next time (`clean_stale`). [`World`]'s `Drop` kills what it started, by pid, deletes its
//! namespaces and removes its files, also when a test fails.
//!
//! Shared by `scenarios` and `bgp_mechanism`, each of which uses a part of it.
#![allow(dead_code)]

pub mod observe;
pub mod services;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Every name this harness creates starts with this.
pub const NAME_PREFIX: &str = "bw6-";

/// External programs the world needs; a test is skipped, with a message, without them.
pub const REQUIRED_PROGRAMS: [&str; 9] = [
    "ip",
    "nft",
    "tc",
    "knotd",
    "nginx",
    "prometheus",
    "curl",
    "openssl",
    "sysctl",
];

/// Why the world cannot be built here, if it cannot.
pub fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string));
    if uid.as_deref() != Some("0") {
        return Some("not root: network namespaces need root".into());
    }
    let missing: Vec<&str> = REQUIRED_PROGRAMS
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing programs: {} (Debian: iproute2 nftables knot nginx prometheus curl openssl procps)",
            missing.join(", ")
        ));
    }
    None
}

pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Runs a command to completion; Err holds what it printed.
pub fn try_run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

pub fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `args` inside namespace `ns`.
pub fn ns_run(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["netns", "exec", ns];
    a.extend_from_slice(args);
    run("ip", &a)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid of the test process that made `name`, for names made by this harness.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NAME_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn kill_pid(pid: u32) {
    let _ = try_run("kill", &["-KILL", &pid.to_string()]);
}

/// Kills every process still inside `ns` (by pid) and deletes the namespace.
fn remove_namespace(ns: &str) {
    for _ in 0..20 {
        let pids = try_run("ip", &["netns", "pids", ns]).unwrap_or_default();
        let pids: Vec<u32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for p in pids {
            kill_pid(p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = try_run("ip", &["netns", "del", ns]);
}

/// Removes namespaces and temp dirs left by test processes that no longer exist.
pub fn clean_stale() {
    let list = try_run("ip", &["netns", "list"]).unwrap_or_default();
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = owner_pid(name)
            && !pid_alive(pid)
        {
            eprintln!("world: removing stale namespace {name}");
            remove_namespace(name);
        }
    }
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_pid(&name)
                && !pid_alive(pid)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Timing of the world: rounds are shortened so that the suite runs in minutes.
#[derive(Debug, Clone)]
pub struct Timing {
    pub round_secs: u64,
    pub timeout_ms: u64,
    /// Readings older than this no longer count in the collector's latest view.
    pub freshness_secs: u64,
}

impl Timing {
    /// The detector's grace after a bin's end (`[detect] grace_secs`): a probe started
    /// at the end of a bin reports after its timeout and reaches the collector with the
    /// next upload. A shorter grace judges a bin on its successes (fast) without most of
    /// its failures (still in flight): a cut is seen a bin late and a service that
    /// recovers a little slower than the network looks blocked.
    pub fn grace_secs(&self) -> u64 {
        self.timeout_ms.div_ceil(1000) + UPLOAD_INTERVAL_SECS
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            round_secs: 3,
            timeout_ms: 2_000,
            freshness_secs: 9,
        }
    }
}

/// One network (origin AS) of a simulated country.
#[derive(Debug, Clone)]
pub struct Network {
    pub asn: u32,
    /// Namespace role, e.g. `xa1`.
    pub role: String,
    /// Everything the network originates (local routes in its namespace).
    pub prefix: String,
    /// Its own address, the source of what it sends.
    pub src: Ipv4Addr,
    pub dns: Ipv4Addr,
    /// Web servers (nginx, ports 80 and 443).
    pub web: Vec<Ipv4Addr>,
    /// ICMP /24 blocks with their known-responsive hosts.
    pub blocks: Vec<(String, Vec<Ipv4Addr>)>,
}

#[derive(Debug, Clone)]
pub struct Country {
    pub code: String,
    /// DNS zone served by its authoritative servers, e.g. `xa.test`.
    pub zone: String,
    /// All of the country's address space.
    pub prefix: String,
    pub networks: Vec<Network>,
}

/// The three simulated countries. The first network of each is the larger (more targets),
/// so that losing the second one is a partial outage by any threshold.
pub fn countries() -> Vec<Country> {
    ["XA", "XB", "XC"]
        .iter()
        .enumerate()
        .map(|(i, code)| {
            let c = (i + 1) as u8;
            let lower = code.to_ascii_lowercase();
            let big = Network {
                asn: 64500 + 10 * c as u32 + 1,
                role: format!("{lower}1"),
                prefix: format!("10.{c}.0.0/18"),
                src: Ipv4Addr::new(10, c, 0, 1),
                dns: Ipv4Addr::new(10, c, 0, 53),
                web: vec![Ipv4Addr::new(10, c, 0, 80), Ipv4Addr::new(10, c, 0, 81)],
                blocks: vec![
                    (
                        format!("10.{c}.0.0/24"),
                        vec![
                            Ipv4Addr::new(10, c, 0, 1),
                            Ipv4Addr::new(10, c, 0, 53),
                            Ipv4Addr::new(10, c, 0, 80),
                        ],
                    ),
                    (
                        format!("10.{c}.1.0/24"),
                        vec![Ipv4Addr::new(10, c, 1, 1), Ipv4Addr::new(10, c, 1, 2)],
                    ),
                    (
                        format!("10.{c}.2.0/24"),
                        vec![Ipv4Addr::new(10, c, 2, 1), Ipv4Addr::new(10, c, 2, 9)],
                    ),
                ],
            };
            let small = Network {
                asn: 64500 + 10 * c as u32 + 2,
                role: format!("{lower}2"),
                prefix: format!("10.{c}.64.0/18"),
                src: Ipv4Addr::new(10, c, 64, 1),
                dns: Ipv4Addr::new(10, c, 64, 53),
                web: vec![Ipv4Addr::new(10, c, 64, 80)],
                blocks: vec![(
                    format!("10.{c}.64.0/24"),
                    vec![Ipv4Addr::new(10, c, 64, 1), Ipv4Addr::new(10, c, 64, 80)],
                )],
            };
            Country {
                code: code.to_string(),
                zone: format!("{lower}.test"),
                prefix: format!("10.{c}.0.0/16"),
                networks: vec![big, small],
            }
        })
        .collect()
}

/// The control network (country ZZ): what vantage points check their own connectivity on.
pub fn control_network() -> Network {
    Network {
        asn: 64999,
        role: "ctl".into(),
        prefix: "10.9.0.0/24".into(),
        src: Ipv4Addr::new(10, 9, 0, 1),
        dns: Ipv4Addr::new(10, 9, 0, 53),
        web: vec![Ipv4Addr::new(10, 9, 0, 80)],
        blocks: vec![(
            "10.9.0.0/24".into(),
            vec![Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 80)],
        )],
    }
}

/// How often the world's agents upload (`upload_interval_secs`).
pub const UPLOAD_INTERVAL_SECS: u64 = 1;
/// RTTs here are tens of microseconds, and a busy 2-core machine triples them at random
/// (the default factor 3 opened throttling events on untouched countries' DNS); a tbf
/// queue raises them a thousandfold. Throttling means "far above normal": 20x.
pub const THROTTLE_RTT_FACTOR: f64 = 20.0;

/// Parallel downloads that keep a throttled network's tbf queue full.
pub const LOAD_FLOWS: usize = 4;

pub const COLLECTOR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
pub const COLLECTOR_PORT: u16 = 9797;
pub const PROMETHEUS_LISTEN: &str = "127.0.0.1:9090";

/// A namespace attached to the router.
#[derive(Debug, Clone)]
pub struct Node {
    pub ns: String,
    pub router_addr: Ipv4Addr,
    /// Its end of the link to the router.
    pub addr: Ipv4Addr,
    pub src: Ipv4Addr,
}

/// The node-side interface name in every node namespace.
pub const UPLINK_IF: &str = "up0";

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Where a process runs and what it is.
pub struct World {
    pub prefix: String,
    pub timing: Timing,
    pub router: String,
    pub nodes: BTreeMap<String, Node>,
    pub countries: Vec<Country>,
    pub control: Network,
    /// Agent id -> role of the namespace it runs in.
    pub agents: BTreeMap<String, String>,
    procs: Vec<Proc>,
    namespaces: Vec<String>,
    dir: Option<tempfile::TempDir>,
    nft_ready: bool,
    qdiscs: Vec<(String, String)>,
}

static WORLDS: AtomicU32 = AtomicU32::new(0);

impl World {
    /// Builds the namespaces, links and routes (no processes yet).
    pub fn new(timing: Timing) -> World {
        clean_stale();
        let prefix = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            WORLDS.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("temp dir");
        let started = Instant::now();
        let mut w = World {
            router: format!("{prefix}-r"),
            prefix,
            timing,
            nodes: BTreeMap::new(),
            countries: countries(),
            control: control_network(),
            agents: BTreeMap::new(),
            procs: Vec::new(),
            namespaces: Vec::new(),
            dir: Some(dir),
            nft_ready: false,
            qdiscs: Vec::new(),
        };
        let r = w.router.clone();
        w.add_namespace(&r);
        ns_run(&r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let mut specs: Vec<(String, Ipv4Addr, Vec<String>)> = Vec::new();
        for c in &w.countries {
            for n in &c.networks {
                specs.push((n.role.clone(), n.src, vec![n.prefix.clone()]));
            }
        }
        specs.push(("ctl".into(), w.control.src, vec![w.control.prefix.clone()]));
        specs.push(("col".into(), COLLECTOR_ADDR, vec!["10.7.0.0/24".into()]));
        specs.push((
            "v1".into(),
            Ipv4Addr::new(10, 8, 1, 1),
            vec!["10.8.1.0/24".into()],
        ));
        specs.push((
            "v2".into(),
            Ipv4Addr::new(10, 8, 2, 1),
            vec!["10.8.2.0/24".into()],
        ));
        for (i, (role, src, prefixes)) in specs.into_iter().enumerate() {
            w.attach(i as u8 + 1, &role, src, prefixes);
        }
        eprintln!(
            "world {}: {} namespaces up in {:?} (files in {})",
            w.prefix,
            w.namespaces.len(),
            started.elapsed(),
            w.dir().display()
        );
        w
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir lives until drop").path()
    }

    pub fn ns(&self, role: &str) -> String {
        self.nodes
            .get(role)
            .unwrap_or_else(|| panic!("no node {role}"))
            .ns
            .clone()
    }

    pub fn country(&self, code: &str) -> &Country {
        self.countries
            .iter()
            .find(|c| c.code == code)
            .unwrap_or_else(|| panic!("no country {code}"))
    }

    fn add_namespace(&mut self, ns: &str) {
        run("ip", &["netns", "add", ns]);
        self.namespaces.push(ns.to_string());
        run("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }

    fn attach(&mut self, index: u8, role: &str, src: Ipv4Addr, prefixes: Vec<String>) {
        let ns = format!("{}-{role}", self.prefix);
        self.add_namespace(&ns);
        let r = self.router.clone();
        let rif = format!("v{index}");
        let router_addr = Ipv4Addr::new(100, 64, index, 1);
        let addr = Ipv4Addr::new(100, 64, index, 2);
        run(
            "ip",
            &[
                "-n", &r, "link", "add", &rif, "type", "veth", "peer", "name", UPLINK_IF, "netns",
                &ns,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &r,
                "addr",
                "add",
                &format!("{router_addr}/24"),
                "dev",
                &rif,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                UPLINK_IF,
            ],
        );
        run("ip", &["-n", &r, "link", "set", &rif, "up"]);
        run("ip", &["-n", &ns, "link", "set", UPLINK_IF, "up"]);
        // The node's own address, so that what it sends carries its network's source.
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{src}/32"), "dev", "lo"],
        );
        for p in &prefixes {
            // Every address of the prefix answers ICMP and accepts binds.
            run("ip", &["-n", &ns, "route", "add", "local", p, "dev", "lo"]);
            run(
                "ip",
                &["-n", &r, "route", "add", p, "via", &addr.to_string()],
            );
        }
        let node = Node {
            ns,
            router_addr,
            addr,
            src,
        };
        self.set_default_route(&node);
        self.nodes.insert(role.to_string(), node);
    }

    /// Attaches one more namespace to the router (after the standard ones), e.g. for a
    /// test's own routers: `src` is its address, `prefixes` what the router sends it.
    pub fn add_node(&mut self, role: &str, src: Ipv4Addr, prefixes: Vec<String>) -> Node {
        let index = u8::try_from(self.nodes.len() + 1).expect("at most 255 nodes");
        self.attach(index, role, src, prefixes);
        self.nodes[role].clone()
    }

    fn set_default_route(&self, node: &Node) {
        run(
            "ip",
            &[
                "-n",
                &node.ns,
                "route",
                "replace",
                "default",
                "via",
                &node.router_addr.to_string(),
                "src",
                &node.src.to_string(),
            ],
        );
    }

    /// Starts `program` inside the namespace of `role`, output to a log file.
    pub fn spawn(&mut self, name: &str, role: &str, program: &Path, args: &[String]) -> u32 {
        self.spawn_env(name, role, program, args, &[])
    }

    pub fn spawn_env(
        &mut self,
        name: &str,
        role: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> u32 {
        let ns = self.ns(role);
        self.spawn_in(name, &ns, program, args, env)
    }

    /// Starts `program` inside namespace `ns` (a node's, or the router's).
    pub fn spawn_in(
        &mut self,
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> u32 {
        let log = self.dir().join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log fd"))
            .stderr(f);
        cmd.env("RUST_BACKTRACE", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // `ip netns exec` execs the program: the child's pid is the program's.
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pid = child.id();
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        pid
    }

    /// Fails loudly if a started process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let mut dead = Vec::new();
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                dead.push(format!(
                    "{} exited ({status}); log tail:\n{}",
                    p.name,
                    tail(&p.log, 15)
                ));
            }
        }
        if dead.is_empty() {
            Ok(())
        } else {
            Err(dead.join("\n"))
        }
    }

    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        tail(&self.dir().join(format!("{name}.log")), lines)
    }

    // ---- cut tools: all in the router, so the countries' own networks stay untouched ----

    fn nft(&mut self, script: &str) {
        if !self.nft_ready {
            self.nft_ready = true;
            self.nft(
                "table inet bw {\n chain cuts {\n  type filter hook forward priority 0; policy accept;\n }\n}\n",
            );
        }
        let path = self.dir().join("cut.nft");
        std::fs::write(&path, script).expect("nft script");
        let r = self.router.clone();
        ns_run(&r, &["nft", "-f", path.to_str().expect("utf-8 path")]);
    }

    fn rule(&mut self, rule: &str) {
        self.nft(&format!("add rule inet bw cuts {rule}\n"));
    }

    /// National blackout: the country's international links are cut (traffic dropped,
    /// silently, both ways); traffic between its own networks still flows.
    pub fn cut_country(&mut self, code: &str) {
        let p = self.country(code).prefix.clone();
        self.rule(&format!("ip saddr {p} ip daddr != {p} drop"));
        self.rule(&format!("ip daddr {p} ip saddr != {p} drop"));
    }

    /// One network down: everything to and from its prefix is dropped.
    pub fn cut_network(&mut self, asn: u32) {
        let p = self.network(asn).prefix.clone();
        self.rule(&format!("ip saddr {p} drop"));
        self.rule(&format!("ip daddr {p} drop"));
    }

    /// DNS-only blocking: queries to the country's name servers (udp/53) are dropped.
    pub fn block_dns(&mut self, code: &str) {
        let p = self.country(code).prefix.clone();
        self.rule(&format!("ip daddr {p} udp dport 53 drop"));
    }

    /// Throttling without netem (this kernel has none): a tbf bandwidth cap on every
    /// network of the country, kept full by `LOAD_FLOWS` long downloads from each (the load a
    /// throttled country carries anyway), so that every packet leaving the country waits
    /// in the queue, up to tbf's 400 ms latency bound; plus random loss of `loss_pct` % of
    /// packets each way (nftables numgen).
    pub fn throttle(&mut self, code: &str, loss_pct: u32, rate: &str) {
        let p = self.country(code).prefix.clone();
        if loss_pct > 0 {
            self.rule(&format!(
                "ip daddr {p} numgen random mod 100 < {loss_pct} drop"
            ));
            self.rule(&format!(
                "ip saddr {p} numgen random mod 100 < {loss_pct} drop"
            ));
        }
        let nets: Vec<(String, Ipv4Addr)> = self
            .country(code)
            .networks
            .iter()
            .map(|n| (n.role.clone(), n.web[0]))
            .collect();
        let curl = find_program("curl").expect("curl");
        for (role, web) in nets {
            let ns = self.ns(&role);
            run(
                "ip",
                &["-n", &ns, "link", "set", UPLINK_IF, "txqueuelen", "1000"],
            );
            ns_run(
                &ns,
                &[
                    "tc", "qdisc", "add", "dev", UPLINK_IF, "root", "tbf", "rate", rate, "burst",
                    "4kb", "latency", "400ms",
                ],
            );
            self.qdiscs.push((ns, UPLINK_IF.to_string()));
            // Several flows: one backs off after tail drops and lets the queue drain (the
            // RTT then falls to normal for a moment); together they keep it full.
            for i in 0..LOAD_FLOWS {
                self.spawn(
                    &format!("load-{role}-{i}"),
                    "ctl",
                    &curl,
                    &[
                        "-sS".into(),
                        "-o".into(),
                        "/dev/null".into(),
                        "-w".into(),
                        "%{http_code} %{size_download}\n".into(),
                        format!("http://{web}/big.bin"),
                    ],
                );
            }
        }
    }

    /// `tc -s qdisc` of the throttled links (what the queues did).
    pub fn qdisc_stats(&self) -> String {
        self.qdiscs
            .iter()
            .map(|(ns, dev)| {
                try_run(
                    "ip",
                    &["netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev],
                )
                .unwrap_or_else(|e| e)
                .replace('\n', " ")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A vantage point loses its own uplink: its link goes down.
    pub fn uplink_down(&mut self, role: &str) {
        let ns = self.ns(role);
        run("ip", &["-n", &ns, "link", "set", UPLINK_IF, "down"]);
    }

    pub fn uplink_up(&mut self, role: &str) {
        let ns = self.ns(role);
        run("ip", &["-n", &ns, "link", "set", UPLINK_IF, "up"]);
        // Routes through a link that went down are gone: put the default back.
        let node = self.nodes[role].clone();
        self.set_default_route(&node);
    }

    /// A vantage point's own connectivity fails, but its path to the collector still works
    /// (an agent with a separate management path): its failures reach the collector live.
    pub fn isolate_except_collector(&mut self, role: &str) {
        let src = self.nodes[role].src;
        self.rule(&format!("ip saddr {src} ip daddr != {COLLECTOR_ADDR} drop"));
        self.rule(&format!("ip daddr {src} ip saddr != {COLLECTOR_ADDR} drop"));
    }

    /// Undoes every nftables and tc cut.
    pub fn restore(&mut self) {
        // Load generators first: unthrottled, they would flood the links.
        let mut i = 0;
        while i < self.procs.len() {
            if self.procs[i].name.starts_with("load-") {
                let mut p = self.procs.remove(i);
                let _ = p.child.kill();
                let _ = p.child.wait();
            } else {
                i += 1;
            }
        }
        if self.nft_ready {
            self.nft("flush chain inet bw cuts\n");
        }
        for (ns, dev) in std::mem::take(&mut self.qdiscs) {
            let _ = try_run(
                "ip",
                &[
                    "netns", "exec", &ns, "tc", "qdisc", "del", "dev", &dev, "root",
                ],
            );
        }
    }

    pub fn network(&self, asn: u32) -> &Network {
        self.countries
            .iter()
            .flat_map(|c| c.networks.iter())
            .find(|n| n.asn == asn)
            .unwrap_or_else(|| panic!("no network AS{asn}"))
    }

    /// The country an ASN belongs to.
    pub fn country_of_asn(&self, asn: u32) -> Option<&str> {
        self.countries
            .iter()
            .find(|c| c.networks.iter().any(|n| n.asn == asn))
            .map(|c| c.code.as_str())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        // Children of what we started (nginx workers) are found through the namespaces.
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
        if std::env::var_os("BLACKOUT_WORLD_KEEP").is_some() {
            if let Some(d) = self.dir.take() {
                eprintln!("world: keeping {}", d.keep().display());
            }
        } else {
            self.dir.take();
        }
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
