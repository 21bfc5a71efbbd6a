//! No verdict is not "normal": the real `blackout standalone` binary, offline in a network
//! namespace with only loopback, and in a loopback lab whose control targets are cut.
//! Without a verdict there is no `blackout_country_status` series; the verdict gauges,
//! the page and `/api/v1/status` say why, and the loss of every healthy vantage point is
//! logged once when it starts and once when it ends.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blackout_test_support::{self as common, Proc};

/// Detector settings for a test that lasts seconds (as in tests/status_page.rs): 2 s bins,
/// three bins of warm-up; the standalone agent uploads every 5 s, so a bin closes 7 s
/// after its end.
const COLLECTOR_TOML: &str = "[detect]\nbin_secs = 2\ngrace_secs = 7\nwarmup_secs = 6\nmin_warmup_bins = 3\nrecent_window_secs = 120\nbaseline_window_secs = 600\nlate_window_secs = 60\n";

const LOST: &str = "no healthy vantage point";
const BACK: &str = "healthy vantage point again";

/// A TCP port that accepts (and drops) connections until cut; it can open again on the
/// same address.
struct Target {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Target {
    fn open_at(addr: SocketAddr) -> Target {
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Target {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn open() -> Target {
        Target::open_at("127.0.0.1:0".parse().unwrap())
    }

    /// Closes the port: connections are refused from now on.
    fn cut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn reopen(&mut self) {
        *self = Target::open_at(self.addr);
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.cut();
    }
}

fn tcp_entries(targets: &[Target], asn: u32) -> String {
    targets
        .iter()
        .map(|t| format!("[[tcp]]\naddress = \"{}\"\nasn = {asn}\n", t.addr))
        .collect()
}

/// Value of one series of an exposition (`name{labels}` exactly), if present.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn status_series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("blackout_country_status{"))
        .collect()
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// A GET from inside the namespace, where the offline collector listens.
fn get_in(ns: &str, url: String) -> Option<(u16, String)> {
    common::in_netns(ns, move || async move {
        let r = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let s = r.status().as_u16();
        Some((s, r.text().await.ok()?))
    })
}

use blackout_test_support::Netns;

#[test]
fn offline_standalone_exports_no_status_and_says_why() {
    if !common::is_root() || common::require("offline standalone", &["ip"]).is_none() {
        eprintln!("SKIPPED offline_standalone_exports_no_status_and_says_why: needs root and ip");
        return;
    }
    let ns = format!("bo-off-{}", std::process::id());
    let _ns = Netns::loopback_only(&ns);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, COLLECTOR_TOML).unwrap();
    let log = dir.path().join("standalone.log");
    // The shipped catalogs, as a new user runs it; nothing beyond loopback is reachable.
    let mut proc = Proc::spawn(
        "blackout standalone (offline)",
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(env!("CARGO_BIN_EXE_blackout"))
            .args([
                "standalone",
                "--round-secs",
                "2",
                "--listen",
                "127.0.0.1:9797",
            ])
            .arg("--config")
            .arg(&config),
        &log,
    );
    let url = |path: &str| format!("http://127.0.0.1:9797{path}");
    let metrics = common::wait_for(
        "the offline verdict gauges",
        Duration::from_secs(90),
        || {
            proc.assert_running(&log);
            let (_, m) = get_in(&ns, url("/metrics"))?;
            (series(&m, "blackout_vantage_healthy") == Some(0.0)).then_some(m)
        },
    );
    assert_eq!(
        status_series(&metrics),
        Vec::<&str>::new(),
        "no verdict, no status"
    );
    for cc in ["KZ", "DE", "US"] {
        let l = |reason: &str| {
            format!("blackout_country_no_verdict{{country=\"{cc}\",reason=\"{reason}\"}}")
        };
        assert_eq!(
            series(
                &metrics,
                &format!("blackout_country_verdict{{country=\"{cc}\"}}")
            ),
            Some(0.0),
            "{cc}"
        );
        assert_eq!(
            series(&metrics, &l("no_healthy_vantage")),
            Some(1.0),
            "{cc}"
        );
        assert_eq!(series(&metrics, &l("warm_up")), Some(0.0), "{cc}");
        assert_eq!(series(&metrics, &l("no_data")), Some(0.0), "{cc}");
    }
    assert_eq!(
        series(&metrics, "blackout_agent_healthy{agent=\"standalone\"}"),
        Some(0.0)
    );
    assert_eq!(
        series(&metrics, "blackout_vantage_healthy_agents"),
        Some(0.0)
    );
    let (_, page) = get_in(&ns, url("/")).unwrap();
    assert!(
        page.contains("No healthy vantage point"),
        "the page says why"
    );
    assert!(!page.contains("tile normal"), "no country shown as normal");
    let (_, api) = get_in(&ns, url("/api/v1/status")).unwrap();
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["vantage"]["healthy"], false, "{}", api["vantage"]);
    assert_eq!(api["vantage"]["healthy_agents"], 0);
    // Later bins change nothing and log nothing more.
    std::thread::sleep(Duration::from_secs(6));
    let (_, again) = get_in(&ns, url("/metrics")).unwrap();
    assert!(status_series(&again).is_empty());
    assert_eq!(count(&log, LOST), 1, "one WARN for the loss");
    assert_eq!(count(&log, BACK), 0);
}

#[test]
fn cut_controls_make_verdicts_unknown_until_they_answer_again() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    std::fs::create_dir(&cat).unwrap();
    let mut xb: Vec<Target> = (0..4).map(|_| Target::open()).collect();
    let mut control = Target::open();
    std::fs::write(
        cat.join("xb.toml"),
        format!(
            "country = \"XB\"\nname = \"Borduria\"\n{}",
            tcp_entries(&xb, 64510)
        ),
    )
    .unwrap();
    std::fs::write(
        cat.join("control.toml"),
        format!(
            "country = \"ZZ\"\ncontrol = true\n{}",
            tcp_entries(std::slice::from_ref(&control), 64999)
        ),
    )
    .unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, COLLECTOR_TOML).unwrap();
    let log = dir.path().join("standalone.log");
    let port = common::free_port();
    let mut proc = Proc::spawn(
        "blackout standalone (lab)",
        Command::new(env!("CARGO_BIN_EXE_blackout"))
            .arg("standalone")
            .arg("--config")
            .arg(&config)
            .arg("--catalog")
            .arg(&cat)
            .args(["--allow-reserved", "--round-secs", "1", "--listen"])
            .arg(format!("127.0.0.1:{port}")),
        &log,
    );
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str| common::http_get(&format!("{base}{path}")).map(|(_, b)| b);
    common::wait_for("a verdict for XB", Duration::from_secs(90), || {
        proc.assert_running(&log);
        let m = get("/metrics")?;
        (series(&m, "blackout_country_status{country=\"XB\"}") == Some(0.0)).then_some(())
    });
    let m = get("/metrics").unwrap();
    assert_eq!(
        series(&m, "blackout_country_verdict{country=\"XB\"}"),
        Some(1.0)
    );
    assert_eq!(series(&m, "blackout_vantage_healthy"), Some(1.0));
    // The age of the agent's last report, in the metrics and on the page (the standalone
    // agent uploads every 5 s).
    let age = series(
        &m,
        "blackout_agent_last_report_age_seconds{agent=\"standalone\"}",
    )
    .expect("the agent's report age");
    assert!((0.0..30.0).contains(&age), "{age}");
    let page = get("/").unwrap();
    let agents = &page[page.find("<h2>Agents</h2>").expect("an agents section")..];
    assert!(
        agents.contains("<td><strong>standalone</strong></td>"),
        "{agents}"
    );
    assert!(
        agents.contains("healthy</span>") && agents.contains("s ago</td>"),
        "{agents}"
    );
    assert_eq!(
        count(&log, LOST),
        0,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // Everything the agent probes, its controls included, goes dark: the agent's own way
    // out is gone, so nothing is known about XB.
    control.cut();
    for t in xb.iter_mut() {
        t.cut();
    }
    let metrics = common::wait_for("no verdict for XB", Duration::from_secs(60), || {
        proc.assert_running(&log);
        let m = get("/metrics")?;
        (series(&m, "blackout_country_verdict{country=\"XB\"}") == Some(0.0)).then_some(m)
    });
    assert!(
        status_series(&metrics).is_empty(),
        "{:?}",
        status_series(&metrics)
    );
    assert_eq!(
        series(
            &metrics,
            "blackout_country_no_verdict{country=\"XB\",reason=\"no_healthy_vantage\"}"
        ),
        Some(1.0)
    );
    assert_eq!(series(&metrics, "blackout_vantage_healthy"), Some(0.0));
    assert_eq!(
        series(&metrics, "blackout_agent_healthy{agent=\"standalone\"}"),
        Some(0.0)
    );
    let page = get("/").unwrap();
    assert!(
        page.contains("No healthy vantage point"),
        "the page says so"
    );
    assert!(page.contains("(reason: no_healthy_vantage)"));
    assert!(
        page.contains("Controls answering: 0 of "),
        "figures on the page"
    );
    assert!(page.contains("agents healthy: 0 of 1"));
    assert!(!page.contains("tile normal"), "XB is not shown as normal");
    let api: serde_json::Value = serde_json::from_str(&get("/api/v1/status").unwrap()).unwrap();
    assert_eq!(api["vantage"]["healthy"], false, "{}", api["vantage"]);
    let xb_entity = api["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == serde_json::json!({"country": "XB"}) || e["entity"] == "XB")
        .cloned();
    if let Some(e) = xb_entity {
        assert_eq!(e["no_verdict"], "no_healthy_vantage", "{e}");
    }
    // Several more bins: one WARN, not one per bin.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(count(&log, LOST), 1, "one WARN when the loss starts");
    assert_eq!(count(&log, BACK), 0);

    // The controls and targets answer again: verdicts resume, and the end is logged once.
    control.reopen();
    for t in xb.iter_mut() {
        t.reopen();
    }
    common::wait_for("XB's verdict back", Duration::from_secs(60), || {
        proc.assert_running(&log);
        let m = get("/metrics")?;
        series(&m, "blackout_country_status{country=\"XB\"}").map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(&log, BACK), 1, "one line when it ends");
    assert_eq!(count(&log, LOST), 1);
    assert!(!get("/").unwrap().contains("No healthy vantage point"));
}

/// Countries and control files `blackout standalone ARGS` serves at `/api/v1/catalog`,
/// and its log. Run offline in a namespace with only loopback: the shipped catalogs are
/// real addresses, which a test must not probe.
fn standalone_catalog(ns: &str, args: &[&str]) -> (Vec<String>, usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("standalone.log");
    let mut proc = Proc::spawn(
        "blackout standalone",
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_blackout"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["standalone", "--listen", "127.0.0.1:9798"])
            .args(args),
        &log,
    );
    let files = common::wait_for("the catalog", Duration::from_secs(60), || {
        proc.assert_running(&log);
        let (s, body) = get_in(ns, "http://127.0.0.1:9798/api/v1/catalog".into())?;
        (s == 200).then_some(body)
    });
    let files: Vec<serde_json::Value> = serde_json::from_str(&files).unwrap();
    let countries = files
        .iter()
        .filter(|f| f["control"] != true)
        .map(|f| f["country"].as_str().unwrap().to_string())
        .collect();
    let controls = files.iter().filter(|f| f["control"] == true).count();
    drop(proc);
    (countries, controls, std::fs::read_to_string(&log).unwrap())
}

#[test]
fn standalone_always_loads_the_controls_and_watches_one_country() {
    if !common::is_root() || common::require("standalone catalogs", &["ip"]).is_none() {
        eprintln!("SKIPPED standalone_always_loads_the_controls_and_watches_one_country");
        return;
    }
    let ns = format!("bo-cat-{}", std::process::id());
    let _ns = Netns::loopback_only(&ns);
    // The natural way to watch one country: its catalog alone. The controls come too.
    let (countries, controls, _) = standalone_catalog(&ns, &["--catalog", "probes/kz.toml"]);
    assert_eq!(countries, vec!["KZ".to_string()]);
    assert!(controls >= 1, "control targets loaded");
    let (countries, controls, _) = standalone_catalog(&ns, &["--country", "KZ"]);
    assert_eq!(countries, vec!["KZ".to_string()]);
    assert!(controls >= 1);
    // Turned off only when asked, and never silently.
    let (countries, controls, log) =
        standalone_catalog(&ns, &["--catalog", "probes/kz.toml", "--no-controls"]);
    assert_eq!(countries, vec!["KZ".to_string()]);
    assert_eq!(controls, 0);
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("--no-controls")),
        "{log}"
    );
}
