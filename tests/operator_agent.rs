//! What an operator of the Prometheus ecosystem expects of a running agent, against the
//! real binaries (a collector and an agent probing ICMP blocks on 127.0.0.0/8): its own
//! `/metrics` (probes, spool, uploads, catalog, rounds, process metrics, build info),
//! `/-/healthy` and `/-/ready`, and a reload on SIGHUP or `POST /-/reload` that applies
//! new targets and keeps the old configuration when the new one is bad.

mod faults_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faults_support::*;

/// A catalog of ICMP blocks on loopback (every address of 127/8 answers), one host each.
fn icmp_catalog(blocks: &[u8]) -> String {
    let mut text = String::from(
        "country = \"KZ\"\nname = \"test\"\n\n[[network]]\nasn = 64500\nname = \"n\"\n",
    );
    for b in blocks {
        text += &format!(
            "\n[[icmp]]\nprefix = \"127.0.{b}.0/24\"\nasn = 64500\nhosts = [\"127.0.{b}.1\"]\n"
        );
    }
    text
}

/// `agent.toml` in `dir` with its own catalog directory `dir/catalog` holding `blocks`;
/// rounds of 1 s, with a politeness budget that lets each block have its echo every
/// round (the default, 20 an hour, would skip the blocks after their burst).
fn write_agent(dir: &Path, url: &str, blocks: &[u8], extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("catalog")).unwrap();
    std::fs::write(dir.join("catalog/kz.toml"), icmp_catalog(blocks)).unwrap();
    let text = format!(
        "agent_id = \"a1\"\ncollector_url = \"{url}\"\ntoken = \"tok-a1\"\ncatalog = [\"catalog\"]\nspool_dir = \"spool\"\nround_secs = 1\ntimeout_ms = 300\nupload_interval_secs = 1\nallow_reserved = true\nicmp_max_probes_per_block_hour = 7200\n{extra}\n"
    );
    let p = dir.join("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run_agent(config: &Path, log: &Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new(AGENT);
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .args(args);
    spawn(cmd, log)
}

fn get(url: &str) -> Option<(u16, String)> {
    blackout_test_support::http_get(url)
}

fn post(url: &str) -> (u16, String) {
    block_on(async {
        let r = client().post(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

fn wait_ready(base: &str, p: &mut Proc) {
    let t0 = Instant::now();
    while get(&format!("{base}-/ready")).is_none_or(|(s, _)| s != 200) {
        assert!(
            p.alive() && t0.elapsed() < Duration::from_secs(20),
            "agent not ready: {}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts an agent whose endpoint listens on a free port (`start(port)` writes its config
/// and spawns it) and returns it with the endpoint's base URL once `/-/healthy` answers.
/// A port free a moment ago may be taken by another test's connection before the agent
/// binds it: then the agent exits ("cannot listen") and another port is tried.
fn start_on_free_port(mut start: impl FnMut(u16) -> Proc) -> (Proc, String) {
    for _attempt in 0..5 {
        let port = free_port();
        let mut p = start(port);
        let base = format!("http://127.0.0.1:{port}/");
        let t0 = Instant::now();
        loop {
            let healthy = get(&format!("{base}-/healthy")).is_some_and(|(s, _)| s == 200);
            if !p.alive() {
                let text = p.log_text();
                assert!(text.contains("cannot listen"), "the agent exited: {text}");
                break;
            }
            if healthy {
                return (p, base);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "no /-/healthy: {}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("the agent could not listen on any of 5 free ports");
}

fn sighup(p: &Proc) {
    let st = Command::new("kill")
        .args(["-HUP", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Observations of block `127.0.b.0/24` in the collector's durable log.
fn logged_of_block(c: &CollectorSetup, b: u8) -> usize {
    let prefix = format!("127.0.{b}.");
    c.logged_batches()
        .iter()
        .flat_map(|batch| {
            batch["observations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|o| o["target"].as_str().is_some_and(|t| t.contains(&prefix)))
        .count()
}

fn skip_without_root() -> bool {
    if !blackout_test_support::is_root() {
        eprintln!("SKIP: needs root for ICMP sockets");
        return true;
    }
    false
}

/// `--metrics-listen` serves the agent's own metrics: probes sent growing, uploads
/// accepted, the catalog size, rounds, the spool, process metrics and the build; the
/// ecosystem's health endpoints answer.
#[test]
fn the_agent_serves_its_own_metrics_and_health() {
    if skip_without_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = CollectorSetup::new(
        tmp.path(),
        &icmp_catalog(&[50, 51]),
        &[("a1", "tok-a1")],
        "",
    );
    let _collector = c.start();
    let cfg = write_agent(&tmp.path().join("agent"), &c.url(), &[50, 51], "");
    let (mut agent, base) = start_on_free_port(|port| {
        run_agent(
            &cfg,
            &tmp.path().join("agent.log"),
            &["--metrics-listen", &format!("127.0.0.1:{port}")],
        )
    });
    wait_ready(&base, &mut agent);

    let probes = |text: &str| metric_sum(text, "blackout_agent_probes_total", &["signal=\"icmp\""]);
    let first = scrape(&base);
    wait_until("uploads accepted", Duration::from_secs(15), || {
        metric_sum(
            &scrape(&base),
            "blackout_agent_uploads_total",
            &["result=\"accepted\""],
        ) >= 1.0
    });
    std::thread::sleep(Duration::from_millis(1500));
    let text = scrape(&base);
    assert!(
        probes(&text) >= probes(&first) + 2.0,
        "probes sent grow: {} then {}",
        probes(&first),
        probes(&text)
    );
    assert_eq!(
        probes(&text),
        metric_sum(&text, "blackout_agent_probes_total", &[])
    );
    assert_eq!(
        metric_sum(
            &text,
            "blackout_agent_catalog_targets",
            &["signal=\"icmp\""]
        ),
        2.0
    );
    assert_eq!(
        metric_sum(&text, "blackout_agent_catalog_targets", &["signal=\"tcp\""]),
        0.0
    );
    assert!(metric_sum(&text, "blackout_agent_observations_spooled_total", &[]) >= 2.0);
    assert!(metric_sum(&text, "blackout_agent_rounds_total", &[]) >= 1.0);
    let took = metric_sum(&text, "blackout_agent_round_duration_seconds", &[]);
    assert!((0.9..3.0).contains(&took), "round of 1 s took {took}");
    let now = chrono::Utc::now().timestamp() as f64;
    let last = metric_sum(
        &text,
        "blackout_agent_last_upload_success_timestamp_seconds",
        &[],
    );
    assert!(now - last < 30.0, "last upload at {last}, now {now}");
    assert_eq!(
        metric_sum(&text, "blackout_agent_config_last_reload_successful", &[]),
        1.0
    );
    for name in [
        "blackout_agent_spool_observations ",
        "blackout_agent_spool_bytes ",
        "blackout_agent_round_lag_seconds ",
        "blackout_agent_politeness_skips_total ",
        "blackout_agent_catalog_refusals_total ",
        "blackout_agent_spool_dropped_observations_total ",
        "blackout_agent_uploads_total{result=\"failed\"} ",
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    match blackout_test_support::which("promtool") {
        Some(promtool) => {
            use std::io::Write;
            let mut child = Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => eprintln!("SKIP the promtool check: promtool not found"),
    }
    let info = text
        .lines()
        .find(|l| l.starts_with("blackout_build_info{"))
        .unwrap_or_else(|| panic!("build info in {text}"));
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && info.contains("revision=\"")
            && info.ends_with(" 1"),
        "{info}"
    );
    assert!(agent.term(Duration::from_secs(20)), "clean stop");
}

/// The endpoint is up while the agent waits for its catalog from a collector that does
/// not answer: alive, not ready.
#[test]
fn not_ready_until_the_catalog_is_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    let nobody = free_port();
    let (mut agent, base) = start_on_free_port(|port| {
        std::fs::write(
            dir.join("agent.toml"),
            format!(
                "agent_id = \"a1\"\ncollector_url = \"http://127.0.0.1:{nobody}/\"\ntoken = \"t\"\nmetrics_listen = \":{port}\"\n"
            ),
        )
        .unwrap();
        run_agent(&dir.join("agent.toml"), &tmp.path().join("agent.log"), &[])
    });
    let (status, body) = get(&format!("{base}-/ready")).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no catalog"), "{body}");
    assert!(agent.alive());
}

/// SIGHUP and `POST /-/reload` re-read agent.toml and its catalogs: an added block is
/// probed (and reaches the collector) without a restart; a bad catalog or a bad key
/// keeps the old configuration (500 naming the file, ERROR log, the gauge 0) and the
/// agent probes on; a setting only a restart applies is refused by name. The agent used
/// to die of a SIGHUP (its default action).
#[test]
fn sighup_and_post_reload_apply_new_targets_and_keep_the_old_config_on_error() {
    if skip_without_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = CollectorSetup::new(
        tmp.path(),
        &icmp_catalog(&[60, 61]),
        &[("a1", "tok-a1")],
        "",
    );
    let _collector = c.start();
    let dir = tmp.path().join("agent");
    let log = tmp.path().join("agent.log");
    let mut cfg = PathBuf::new();
    let (mut agent, base) = start_on_free_port(|port| {
        let listen = format!("metrics_listen = \"localhost:{port}\"");
        cfg = write_agent(&dir, &c.url(), &[60], &listen);
        run_agent(&cfg, &log, &[])
    });
    let good = std::fs::read_to_string(&cfg).unwrap();
    wait_ready(&base, &mut agent);
    let gauge = |name: &str, labels: &[&str]| metric_sum(&scrape(&base), name, labels);
    let icmp_targets = || gauge("blackout_agent_catalog_targets", &["signal=\"icmp\""]);
    assert_eq!(icmp_targets(), 1.0);
    wait_until("block 60 at the collector", Duration::from_secs(15), || {
        logged_of_block(&c, 60) > 0
    });
    assert_eq!(logged_of_block(&c, 61), 0);
    let loaded_at = gauge(
        "blackout_agent_config_last_reload_success_timestamp_seconds",
        &[],
    );

    // A block added: probed after SIGHUP, the agent alive.
    std::fs::write(dir.join("catalog/kz.toml"), icmp_catalog(&[60, 61])).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let hup = Instant::now();
    sighup(&agent);
    wait_until(
        "block 61 at the collector after SIGHUP",
        Duration::from_secs(15),
        || logged_of_block(&c, 61) > 0,
    );
    eprintln!(
        "SIGHUP to the added block's first observation at the collector: {:?}",
        hup.elapsed()
    );
    assert!(
        agent.alive(),
        "SIGHUP killed the agent: {}",
        agent.log_text()
    );
    assert_eq!(icmp_targets(), 2.0);
    assert_eq!(
        gauge("blackout_agent_config_last_reload_successful", &[]),
        1.0
    );
    assert!(
        gauge(
            "blackout_agent_config_last_reload_success_timestamp_seconds",
            &[]
        ) >= loaded_at
    );

    // A catalog that does not parse: 500 naming the file, the old targets stay.
    std::fs::write(dir.join("catalog/kz.toml"), "country = \"KZ\"\n[[icmp]\n").unwrap();
    let (status, body) = post(&format!("{base}-/reload"));
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("kz.toml"), "{body}");
    assert_eq!(
        gauge("blackout_agent_config_last_reload_successful", &[]),
        0.0
    );
    assert_eq!(icmp_targets(), 2.0);
    let probes = || gauge("blackout_agent_probes_total", &["signal=\"icmp\""]);
    let before = probes();
    std::thread::sleep(Duration::from_millis(2200));
    assert!(
        probes() >= before + 2.0,
        "the agent probes on with the old catalog"
    );

    // A bad key in agent.toml, by SIGHUP: the ERROR names the file and the key.
    std::fs::write(dir.join("catalog/kz.toml"), icmp_catalog(&[60, 61])).unwrap();
    std::fs::write(&cfg, good.replace("round_secs = 1", "round_secs = 0")).unwrap();
    sighup(&agent);
    wait_until("the reload error logged", Duration::from_secs(10), || {
        agent.log_text().lines().any(|l| {
            l.contains("\"level\":\"ERROR\"")
                && l.contains("configuration reload failed")
                && l.contains("agent.toml")
                && l.contains("key `round_secs`")
        })
    });
    assert!(agent.alive(), "a bad file killed the agent");
    assert_eq!(
        gauge("blackout_agent_config_last_reload_successful", &[]),
        0.0
    );

    // A setting only a restart applies: refused by name.
    std::fs::write(
        &cfg,
        good.replace("spool_dir = \"spool\"", "spool_dir = \"spool2\""),
    )
    .unwrap();
    let (status, body) = post(&format!("{base}-/reload"));
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("spool_dir changed: only a restart applies it"),
        "{body}"
    );

    // Good again, with one block less: in force, the gauge back to 1.
    std::fs::write(&cfg, &good).unwrap();
    std::fs::write(dir.join("catalog/kz.toml"), icmp_catalog(&[61])).unwrap();
    let (status, body) = post(&format!("{base}-/reload"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 targets"), "{body}");
    assert_eq!(
        gauge("blackout_agent_config_last_reload_successful", &[]),
        1.0
    );
    // In force from the next round.
    wait_until("one block after the reload", Duration::from_secs(5), || {
        icmp_targets() == 1.0
    });
    assert!(
        agent.term(Duration::from_secs(20)),
        "clean stop after reloads"
    );
}

/// Without `metrics_listen` too, SIGHUP reloads: the added block reaches the collector and
/// the agent lives (SIGHUP's default action used to end it, exit 129).
#[test]
fn sighup_reloads_an_agent_without_an_endpoint() {
    if skip_without_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = CollectorSetup::new(
        tmp.path(),
        &icmp_catalog(&[70, 71]),
        &[("a1", "tok-a1")],
        "",
    );
    let _collector = c.start();
    let dir = tmp.path().join("agent");
    let cfg = write_agent(&dir, &c.url(), &[70], "");
    let mut agent = run_agent(&cfg, &tmp.path().join("agent.log"), &[]);
    wait_until("block 70 at the collector", Duration::from_secs(15), || {
        logged_of_block(&c, 70) > 0
    });
    std::fs::write(dir.join("catalog/kz.toml"), icmp_catalog(&[70, 71])).unwrap();
    sighup(&agent);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        agent.alive(),
        "SIGHUP killed the agent: {}",
        agent.log_text()
    );
    wait_until(
        "block 71 at the collector after SIGHUP",
        Duration::from_secs(15),
        || logged_of_block(&c, 71) > 0,
    );
    assert!(agent.term(Duration::from_secs(20)), "clean stop");
}

/// An agent says how often it reports and reports that often, with empty batches when it
/// measured nothing (one block probed at the start of a 5-minute round): the collector
/// exports the interval, does not call it silent while it reports, and calls it silent
/// once it stops (here: SIGSTOP, as a hung or cut-off agent), by the one rule the page
/// and the alert share.
#[test]
fn silence_is_judged_against_the_interval_the_agent_declares() {
    if skip_without_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = CollectorSetup::new(tmp.path(), &icmp_catalog(&[80]), &[("a1", "tok-a1")], "");
    let _collector = c.start();
    let dir = tmp.path().join("agent");
    let cfg = write_agent(&dir, &c.url(), &[80], "");
    // 300-s rounds: the block is probed once in five minutes.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("round_secs = 1\n", "round_secs = 300\n");
    std::fs::write(&cfg, text).unwrap();
    let mut agent = run_agent(&cfg, &tmp.path().join("agent.log"), &[]);
    let base = c.url();
    let accepted =
        |text: &str| metric_sum(text, "blackout_batches_total", &["result=\"accepted\""]);
    wait_until("the agent's first report", Duration::from_secs(15), || {
        accepted(&scrape(&base)) >= 1.0
    });
    let first = accepted(&scrape(&base));
    std::thread::sleep(Duration::from_secs(4));
    let text = scrape(&base);
    let observations = metric_sum(&text, "blackout_observations_ingested_total", &[]);
    assert!(
        accepted(&text) >= first + 3.0 && observations <= 2.0,
        "with (almost) nothing measured, the agent still reports every second: {first} then {} accepted batches, {observations} observations",
        accepted(&text)
    );
    assert_eq!(
        metric_sum(
            &text,
            "blackout_agent_upload_interval_seconds",
            &["agent=\"a1\""]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(&text, "blackout_agent_silent", &["agent=\"a1\""]),
        0.0
    );
    // Reports carry no observation: nothing of them in the durable log.
    let logged = c.logged_batches();
    assert!(
        logged
            .iter()
            .all(|b| b["observations"].as_array().is_some_and(|o| !o.is_empty())),
        "an empty report was logged: {logged:?}"
    );

    let stop = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &agent.pid().to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    stop("-STOP");
    let stopped = Instant::now();
    wait_until(
        "the stopped agent called silent",
        Duration::from_secs(90),
        || metric_sum(&scrape(&base), "blackout_agent_silent", &["agent=\"a1\""]) == 1.0,
    );
    let took = stopped.elapsed();
    // 1-s reports: three missed plus 30 s is under the floor of 60 s.
    assert!(
        took >= Duration::from_secs(55),
        "silent after {took:?}, before the rule's 60 s"
    );
    let page = get(&base).expect("status page").1;
    assert!(page.contains("Silent agents"), "the page names it: {page}");
    stop("-CONT");
    wait_until("the agent reports again", Duration::from_secs(20), || {
        metric_sum(&scrape(&base), "blackout_agent_silent", &["agent=\"a1\""]) == 0.0
    });
    assert!(agent.term(Duration::from_secs(20)), "clean stop");
}
