//! The real servers of the world: knot (authoritative DNS), nginx (HTTP and HTTPS), the
//! blackout collector, a Prometheus scraping it, and the agents.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{COLLECTOR_ADDR, COLLECTOR_PORT, Country, Network, PROMETHEUS_LISTEN, World, run};

/// Extra collector.toml lines (e.g. detector settings), from the environment, so that a
/// build whose collector knows more keys can be driven without editing the harness.
pub const EXTRA_COLLECTOR_TOML_ENV: &str = "BLACKOUT_WORLD_COLLECTOR_TOML";

fn zone_text(zone: &str, ns: &[Ipv4Addr], www: Ipv4Addr) -> String {
    let mut z = format!("$ORIGIN {zone}.\n$TTL 60\n@ SOA ns1 hostmaster 1 3600 600 86400 60\n");
    for (i, a) in ns.iter().enumerate() {
        let _ = writeln!(z, "@ NS ns{}\nns{} A {a}", i + 1, i + 1);
    }
    let _ = writeln!(z, "www A {www}");
    z
}

fn catalog_text(code: &str, name: &str, control: bool, zone: &str, nets: &[&Network]) -> String {
    let mut t = format!("country = \"{code}\"\nname = \"{name}\"\n");
    if control {
        t.push_str("control = true\n");
    }
    for n in nets {
        let _ = writeln!(
            t,
            "\n[[network]]\nasn = {}\nname = \"{code} AS{}\"",
            n.asn, n.asn
        );
    }
    for (ni, n) in nets.iter().enumerate() {
        for (block, hosts) in &n.blocks {
            let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
            let _ = writeln!(
                t,
                "\n[[icmp]]\nprefix = \"{block}\"\nasn = {}\nhosts = [{}]",
                n.asn,
                hosts.join(", ")
            );
        }
        for (qname, qtype) in [(format!("{zone}."), "SOA"), (format!("www.{zone}."), "A")] {
            let _ = writeln!(
                t,
                "\n[[dns]]\nserver = \"{}\"\nqname = \"{qname}\"\nqtype = \"{qtype}\"\nasn = {}",
                n.dns, n.asn
            );
        }
        for (i, w) in n.web.iter().enumerate() {
            // HTTPS is served too, but only its TCP port is a target: the agent verifies
            // certificates and these are self-signed (every probe would be a tls_error).
            let url = if i == 0 && ni == 0 {
                format!("http://www.{zone}/")
            } else {
                format!("http://{w}/")
            };
            let _ = writeln!(
                t,
                "\n[[http]]\nurl = \"{url}\"\naddress = \"{w}\"\nasn = {}",
                n.asn
            );
            for port in [80, 443] {
                let _ = writeln!(t, "\n[[tcp]]\naddress = \"{w}:{port}\"\nasn = {}", n.asn);
            }
        }
    }
    t
}

fn knot_conf(dir: &Path, listen: Ipv4Addr, zone: &str) -> String {
    let d = dir.display();
    format!(
        "server:\n    rundir: \"{d}\"\n    listen: [ {listen}@53 ]\n\
         log:\n  - target: stderr\n    any: warning\n\
         database:\n    storage: \"{d}/db\"\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    journal-content: none\n\
         zone:\n  - domain: {zone}\n"
    )
}

fn nginx_conf(dir: &Path, web: &[Ipv4Addr], cert: &Path, key: &Path, body: &str) -> String {
    let d = dir.display();
    let mut listen = String::new();
    for a in web {
        let _ = writeln!(listen, "    listen {a}:80;\n    listen {a}:443 ssl;");
    }
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n{listen}    server_name _;\n\
             ssl_certificate {};\n    ssl_certificate_key {};\n\
             location / {{ default_type text/plain; return 200 \"{body}\\n\"; }}\n             location = /big.bin {{ root {d}; }}\n  }}\n}}\n",
        cert.display(),
        key.display()
    )
}

pub struct AgentSpec {
    pub id: String,
    pub role: String,
    pub token: String,
}

impl World {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    /// Writes the catalogs the collector serves (one per country, plus the control one).
    pub fn write_catalogs(&self) -> PathBuf {
        let dir = self.path("catalog");
        std::fs::create_dir_all(&dir).expect("catalog dir");
        for c in &self.countries {
            let nets: Vec<&Network> = c.networks.iter().collect();
            let text = catalog_text(
                &c.code,
                &format!("Simulated country {}", c.code),
                false,
                &c.zone,
                &nets,
            );
            std::fs::write(dir.join(format!("{}.toml", c.code.to_lowercase())), text)
                .expect("catalog");
        }
        let ctl = self.control.clone();
        let text = catalog_text("ZZ", "control (simulated)", true, "ctl.test", &[&ctl]);
        std::fs::write(dir.join("control.toml"), text).expect("catalog");
        dir
    }

    /// knot and nginx in every network of every country and in the control network.
    pub fn start_servers(&mut self) {
        let cert = self.path("tls/cert.pem");
        let key = self.path("tls/key.pem");
        std::fs::create_dir_all(self.path("tls")).expect("tls dir");
        // A self-signed certificate for every simulated web server (HTTPS is real).
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=*.test",
                "-keyout",
                key.to_str().expect("utf-8"),
                "-out",
                cert.to_str().expect("utf-8"),
            ],
        );
        let mut sites: Vec<(Network, String)> = Vec::new();
        for c in &self.countries {
            for n in &c.networks {
                sites.push((n.clone(), c.zone.clone()));
            }
        }
        sites.push((self.control.clone(), "ctl.test".into()));
        let zones: Vec<Country> = self.countries.clone();
        for (n, zone) in sites {
            let kdir = self.path(&format!("knot-{}", n.role));
            std::fs::create_dir_all(&kdir).expect("knot dir");
            let servers: Vec<Ipv4Addr> = zones
                .iter()
                .find(|c| c.zone == zone)
                .map(|c| c.networks.iter().map(|n| n.dns).collect())
                .unwrap_or_else(|| vec![n.dns]);
            std::fs::write(
                kdir.join(format!("{zone}.zone")),
                zone_text(&zone, &servers, n.web[0]),
            )
            .expect("zone");
            std::fs::write(kdir.join("knot.conf"), knot_conf(&kdir, n.dns, &zone))
                .expect("knot.conf");
            let conf = kdir.join("knot.conf").display().to_string();
            let knotd = super::find_program("knotd").expect("knotd");
            self.spawn(
                &format!("knot-{}", n.role),
                &n.role,
                &knotd,
                &["-c".into(), conf],
            );

            let ndir = self.path(&format!("nginx-{}", n.role));
            std::fs::create_dir_all(&ndir).expect("nginx dir");
            std::fs::write(
                ndir.join("nginx.conf"),
                nginx_conf(&ndir, &n.web, &cert, &key, &format!("AS{}", n.asn)),
            )
            .expect("nginx.conf");
            // A large sparse file: what throttling scenarios download to fill the queues.
            std::fs::File::create(ndir.join("big.bin"))
                .and_then(|f| f.set_len(1 << 30))
                .expect("big.bin");
            let nginx = super::find_program("nginx").expect("nginx");
            let args = vec![
                "-c".to_string(),
                ndir.join("nginx.conf").display().to_string(),
                "-p".into(),
                ndir.display().to_string(),
                "-e".into(),
                ndir.join("error.log").display().to_string(),
            ];
            self.spawn(&format!("nginx-{}", n.role), &n.role, &nginx, &args);
        }
    }

    /// Waits until every DNS and web server answers from vantage point v1.
    pub fn wait_servers(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut checks: Vec<Vec<String>> = Vec::new();
        let mut nets: Vec<(Network, String)> = Vec::new();
        for c in &self.countries {
            for n in &c.networks {
                nets.push((n.clone(), c.zone.clone()));
            }
        }
        nets.push((self.control.clone(), "ctl.test".into()));
        for (n, _zone) in &nets {
            for w in &n.web {
                checks.push(vec![
                    "curl".into(),
                    "-sS".into(),
                    "-m".into(),
                    "1".into(),
                    "-o".into(),
                    "/dev/null".into(),
                    format!("http://{w}/"),
                ]);
            }
            // A TCP connect to the DNS port: knot listens on TCP 53 as well as UDP.
            checks.push(vec![
                "curl".into(),
                "-sS".into(),
                "-m".into(),
                "1".into(),
                "-o".into(),
                "/dev/null".into(),
                format!("telnet://{}:53", n.dns),
            ]);
        }
        let v1 = self.ns("v1");
        for check in checks {
            loop {
                let mut a = vec!["netns", "exec", v1.as_str()];
                a.extend(check.iter().map(String::as_str));
                // curl's telnet:// returns after its timeout when connected: accept exit 28.
                let out = std::process::Command::new("ip")
                    .args(&a)
                    .output()
                    .expect("ip");
                let code = out.status.code().unwrap_or(-1);
                if code == 0
                    || (code == 28 && check.last().is_some_and(|u| u.starts_with("telnet")))
                {
                    break;
                }
                if Instant::now() > deadline {
                    let alive = self.check_alive();
                    panic!(
                        "server not answering: {check:?}: {}; {alive:?}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn collector_url(&self) -> String {
        format!("http://{COLLECTOR_ADDR}:{COLLECTOR_PORT}")
    }

    /// The collector in namespace `col`, with one token per agent (stored hashed).
    pub fn start_collector(&mut self, agents: &[AgentSpec]) {
        self.start_collector_with(agents, "");
    }

    /// The collector with `extra` lines of collector.toml, placed at the end of its
    /// `[detect]` table (more detector keys, then tables of their own such as `[bgp]`).
    pub fn start_collector_with(&mut self, agents: &[AgentSpec], extra: &str) {
        let catalog = self.write_catalogs();
        let mut t = format!(
            "listen = \"{COLLECTOR_ADDR}:{COLLECTOR_PORT}\"\nstate_dir = \"{}\"\ncatalog = [\"{}\"]\nfreshness_secs = {}\n",
            self.path("collector-state").display(),
            catalog.display(),
            self.timing.freshness_secs
        );
        // The detector on the world's time scale: one bin per agent round, verdicts after
        // four bins of normal history, bins closed when their last probes have reported,
        // late data kept for the whole suite.
        let _ = writeln!(
            t,
            "\n[detect]\nbin_secs = {r}\ngrace_secs = {g}\nwarmup_secs = {w}\nmin_warmup_bins = 4\n\
             late_window_secs = 900\nrecent_window_secs = 900\nbaseline_window_secs = 3600\n\
             throttle_rtt_factor = {f}",
            r = self.timing.round_secs,
            g = self.timing.grace_secs(),
            w = self.timing.round_secs * 4,
            f = super::THROTTLE_RTT_FACTOR,
        );
        if let Ok(extra) = std::env::var(EXTRA_COLLECTOR_TOML_ENV) {
            t.push_str(&extra);
            t.push('\n');
        }
        t.push_str(extra);
        t.push('\n');
        for a in agents {
            let hash = hex::encode(Sha256::digest(a.token.as_bytes()));
            let _ = writeln!(
                t,
                "\n[[agent]]\nid = \"{}\"\ntoken_sha256 = \"{hash}\"",
                a.id
            );
        }
        let conf = self.path("collector.toml");
        std::fs::write(&conf, t).expect("collector.toml");
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_blackout"));
        self.spawn(
            "collector",
            "col",
            &bin,
            &[
                "collector".into(),
                "--config".into(),
                conf.display().to_string(),
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .http_get("col", &format!("{}/healthz", self.collector_url()))
            .0
            != 200
        {
            if let Err(e) = self.check_alive() {
                panic!("{e}");
            }
            assert!(
                Instant::now() < deadline,
                "collector not up: {}",
                self.log_tail("collector", 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A real Prometheus in namespace `col`, scraping the collector every second.
    pub fn start_prometheus(&mut self) {
        let dir = self.path("prometheus");
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: blackout\n    static_configs:\n      - targets: ['{COLLECTOR_ADDR}:{COLLECTOR_PORT}']\n"
            ),
        )
        .expect("prometheus.yml");
        let bin = super::find_program("prometheus").expect("prometheus");
        self.spawn(
            "prometheus",
            "col",
            &bin,
            &[
                format!("--config.file={}", conf.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={PROMETHEUS_LISTEN}"),
                "--log.level=warn".into(),
            ],
        );
    }

    /// Waits for Prometheus's first successful scrape of the collector.
    pub fn wait_prometheus(&mut self, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let up = self.promql("up{job=\"blackout\"}", None);
            if up.iter().any(|s| s.value == 1.0) {
                return t0.elapsed();
            }
            if let Err(e) = self.check_alive() {
                panic!("{e}");
            }
            assert!(
                t0.elapsed() < within,
                "prometheus never scraped the collector: {}",
                self.log_tail("prometheus", 20)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts one agent per spec in its namespace; each fetches the catalog from the
    /// collector and has its own spool directory.
    pub fn start_agents(&mut self, agents: &[AgentSpec]) {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_blackout-agent"));
        for a in agents {
            let conf = self.path(&format!("agent-{}.toml", a.id));
            let text = format!(
                "agent_id = \"{}\"\ncollector_url = \"{}/\"\ntoken = \"{}\"\nspool_dir = \"{}\"\n\
                 round_secs = {}\ntimeout_ms = {}\nupload_interval_secs = {}\nconcurrency = 64\n\
                 allow_reserved = true\n\
                 # Rounds of seconds, not minutes: the per-block politeness cap must allow them.\n\
                 icmp_max_probes_per_block_hour = 100000\n",
                a.id,
                self.collector_url(),
                a.token,
                self.path(&format!("spool-{}", a.id)).display(),
                self.timing.round_secs,
                self.timing.timeout_ms,
                super::UPLOAD_INTERVAL_SECS
            );
            std::fs::write(&conf, text).expect("agent.toml");
            self.agents.insert(a.id.clone(), a.role.clone());
            let role = a.role.clone();
            self.spawn_env(
                &format!("agent-{}", a.id),
                &role,
                &bin,
                &["run".into(), "--config".into(), conf.display().to_string()],
                &[("RUST_LOG", "info,blackout_agent=debug")],
            );
        }
    }

    /// The agents of the standard world: two vantage points outside the countries and
    /// one inside XA (in its larger network).
    pub fn standard_agents(&self) -> Vec<AgentSpec> {
        let inside = self.country("XA").networks[0].role.clone();
        let mut agents = self.agents_at(&["v1", "v2"]);
        agents.push(self.agent_spec("in", &inside));
        agents
    }

    /// One agent in each of these namespaces, named after it.
    pub fn agents_at(&self, roles: &[&str]) -> Vec<AgentSpec> {
        roles.iter().map(|r| self.agent_spec(r, r)).collect()
    }

    fn agent_spec(&self, id: &str, role: &str) -> AgentSpec {
        AgentSpec {
            id: id.to_string(),
            role: role.to_string(),
            token: format!("token-{id}-{}", self.prefix),
        }
    }
}
