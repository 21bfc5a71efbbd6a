//! Walking skeleton, end to end: a real agent process probes real servers (ICMP on
//! 127.0.0.0/8, a knot DNS server, an nginx HTTP server, TCP ports), uploads to a real
//! collector process, and a real Prometheus scrapes the collector. PromQL must return the
//! reachable shares that the servers' set-up implies, and promtool must accept the
//! exposition.

use blackout_test_support as common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn start_knot(knotd: &Path, dir: &Path, port: u16) -> Proc {
    std::fs::create_dir_all(dir.join("db")).unwrap();
    write(
        &dir.join("xa.test.zone"),
        "$ORIGIN xa.test.\n$TTL 300\n@ IN SOA ns1.xa.test. hostmaster.xa.test. 1 3600 600 86400 300\n@ IN NS ns1.xa.test.\nns1 IN A 127.0.0.1\nwww IN A 127.0.0.1\n",
    );
    let d = dir.display();
    write(
        &dir.join("knot.conf"),
        &format!(
            "server:\n  rundir: \"{d}\"\n  pidfile: \"{d}/knot.pid\"\n  listen: 127.0.0.1@{port}\ndatabase:\n  storage: \"{d}/db\"\ntemplate:\n  - id: default\n    storage: \"{d}\"\nzone:\n  - domain: xa.test\n    file: \"xa.test.zone\"\nlog:\n  - target: stderr\n    any: info\n"
        ),
    );
    Proc::spawn(
        "knotd",
        Command::new(knotd).arg("-c").arg(dir.join("knot.conf")),
        &dir.join("knot.log"),
    )
}

fn start_nginx(nginx: &Path, dir: &Path, port: u16) -> Proc {
    let d = dir.display();
    write(
        &dir.join("nginx.conf"),
        &format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/cb;\n  proxy_temp_path {d}/px;\n  fastcgi_temp_path {d}/fc;\n  uwsgi_temp_path {d}/uw;\n  scgi_temp_path {d}/sc;\n  server {{\n    listen 127.0.0.1:{port};\n    location = /ok {{ return 200 \"ok\"; }}\n    location = /missing {{ return 404; }}\n  }}\n}}\n"
        ),
    );
    Proc::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir),
        &dir.join("nginx.log"),
    )
}

#[test]
fn agent_collector_prometheus_end_to_end() {
    let Some(bins) = require(
        "agent_collector_prometheus_end_to_end",
        &["prometheus", "promtool", "knotd", "nginx"],
    ) else {
        return;
    };
    let (prometheus, promtool, knotd, nginx) = (&bins[0], &bins[1], &bins[2], &bins[3]);
    if !is_root() {
        eprintln!("SKIPPED agent_collector_prometheus_end_to_end: needs root for ICMP sockets");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (dns_port, http_port, collector_port, closed_port) =
        (free_port(), free_port(), free_port(), free_port());

    let _knot = start_knot(knotd, &dir.join("knot"), dns_port);
    std::fs::create_dir_all(dir.join("nginx")).unwrap();
    let _nginx = start_nginx(nginx, &dir.join("nginx"), http_port);

    // Country XA: ICMP fully reachable, every other signal half reachable by construction.
    let probes = dir.join("probes");
    std::fs::create_dir_all(&probes).unwrap();
    write(
        &probes.join("xa.toml"),
        &format!(
            r#"country = "XA"
name = "Test country A"

[[network]]
asn = 64501
name = "Net one"

[[icmp]]
prefix = "127.1.0.0/24"
asn = 64501
hosts = ["127.1.0.1", "127.1.0.2"]

[[icmp]]
prefix = "127.2.0.0/24"
asn = 64502

[[dns]]
server = "127.0.0.1:{dns_port}"
qname = "xa.test."
qtype = "SOA"
asn = 64501

[[dns]]
server = "127.0.0.1:{dns_port}"
qname = "nosuch.xa.test."
qtype = "A"
asn = 64501

[[http]]
url = "http://127.0.0.1:{http_port}/ok"
asn = 64502

[[http]]
url = "http://127.0.0.1:{http_port}/missing"
asn = 64502

[[tcp]]
id = "xa-open"
address = "127.0.0.1:{collector_port}"
asn = 64502

[[tcp]]
id = "xa-closed"
address = "127.0.0.1:{closed_port}"
asn = 64502
"#
        ),
    );
    write(
        &probes.join("control.toml"),
        &format!(
            "country = \"ZZ\"\ncontrol = true\n[[tcp]]\nid = \"control-collector\"\naddress = \"127.0.0.1:{collector_port}\"\nasn = 64999\n"
        ),
    );
    let token = "e2e-secret-token";
    write(
        &dir.join("collector.toml"),
        &format!(
            "listen = \"127.0.0.1:{collector_port}\"\nstate_dir = \"state\"\ncatalog = [\"probes\"]\nfreshness_secs = 10\n\n[detect]\nbin_secs = 2\ngrace_secs = 2\n\n[[agent]]\nid = \"e2e-agent\"\ntoken_sha256 = \"{}\"\n",
            token_hash(token)
        ),
    );
    write(
        &dir.join("agent.toml"),
        &format!(
            "agent_id = \"e2e-agent\"\ncollector_url = \"http://127.0.0.1:{collector_port}\"\ntoken = \"{token}\"\ncatalog = [\"probes\"]\nspool_dir = \"spool\"\nround_secs = 1\ntimeout_ms = 1000\nupload_interval_secs = 1\nallow_reserved = true\nicmp_max_probes_per_block_hour = 100000\n"
        ),
    );

    let collector_log = dir.join("collector.log");
    let mut collector = Proc::spawn(
        "collector",
        Command::new(env!("CARGO_BIN_EXE_blackout"))
            .current_dir(dir)
            .args(["collector", "--config", "collector.toml"]),
        &collector_log,
    );
    let base = format!("http://127.0.0.1:{collector_port}");
    wait_for("collector /healthz", Duration::from_secs(10), || {
        http_get(&format!("{base}/healthz")).filter(|(s, _)| *s == 200)
    });
    let agent_log = dir.join("agent.log");
    let mut agent = Proc::spawn(
        "agent",
        Command::new(env!("CARGO_BIN_EXE_blackout-agent"))
            .current_dir(dir)
            .args(["run", "--config", "agent.toml"]),
        &agent_log,
    );
    let (_prom, prom_base) = start_prometheus(
        prometheus,
        &dir.join("prom"),
        &[format!("127.0.0.1:{collector_port}")],
    );

    let expect = [("icmp", 1.0), ("dns", 0.5), ("http", 0.5), ("tcp", 0.5)];
    for (signal, want) in expect {
        let q = format!("blackout_reachable_ratio{{country=\"XA\",signal=\"{signal}\"}}");
        let got = wait_for(
            &format!("PromQL {q} == {want}"),
            Duration::from_secs(45),
            || {
                agent.assert_running(&agent_log);
                collector.assert_running(&collector_log);
                promql(&prom_base, &q)
                    .and_then(|r| r.first().map(|x| x.1))
                    .filter(|v| (v - want).abs() < 1e-9)
            },
        );
        eprintln!("{q} = {got}");
    }
    let targets = promql(
        &prom_base,
        "blackout_targets{country=\"XA\",signal=\"icmp\"}",
    )
    .unwrap();
    assert_eq!(targets[0].1, 2.0, "two ICMP blocks");
    let asn = promql(
        &prom_base,
        "blackout_asn_reachable_ratio{country=\"XA\",asn=\"64502\",signal=\"http\"}",
    )
    .unwrap();
    assert_eq!(asn[0].1, 0.5);
    // Agent health is the detector's, of its last closed bin (2 s bins here): the
    // series exists once a bin with the agent's observations has closed.
    let healthy = wait_for(
        "blackout_agent_healthy of e2e-agent",
        Duration::from_secs(30),
        || {
            promql(&prom_base, "blackout_agent_healthy{agent=\"e2e-agent\"}")?
                .first()
                .map(|x| x.1)
        },
    );
    assert_eq!(
        healthy, 1.0,
        "control target answers, so the agent is healthy"
    );
    let ingested = promql(
        &prom_base,
        "sum(blackout_observations_ingested_total{agent=\"e2e-agent\"})",
    )
    .unwrap();
    assert!(
        ingested[0].1 >= 9.0,
        "at least one full round ingested: {ingested:?}"
    );
    let failures = promql(
        &prom_base,
        "blackout_observation_failures_total{signal=\"dns\",phase=\"dns_round_trip\",failure=\"dns_nxdomain\"}",
    )
    .unwrap();
    assert!(!failures.is_empty(), "NXDOMAIN is recorded with its phase");
    // HTTP phases of the successful probe (plain HTTP to an IP: no resolve, no TLS).
    let phases = promql(
        &prom_base,
        "blackout_http_phase_median_seconds{country=\"XA\"}",
    )
    .unwrap();
    let mut names: Vec<&str> = phases
        .iter()
        .map(|(l, v)| {
            assert!(*v > 0.0 && *v < 1.0, "{l} = {v}");
            l["phase"].as_str().unwrap()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["connect", "first_byte"], "{phases:?}");

    // The exposition passes promtool's checks.
    let (status, body) = http_get(&format!("{base}/metrics")).unwrap();
    assert_eq!(status, 200);
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
