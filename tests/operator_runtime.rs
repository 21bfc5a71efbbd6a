//! What an operator of the Prometheus ecosystem expects of a running collector, against
//! the real binaries: it stops on SIGTERM even when its log pipe is closed, says which
//! build it is, and answers `/-/healthy` during a long start while `/-/ready` waits for
//! the replay.

mod faults_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faults_support::*;
use serde_json::{Value, json};

fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `blackout collector 2>&1 | head -1`: once the reader is gone every log write fails
/// (EPIPE). A SIGTERM must still stop the collector (it used to panic in the signal
/// task's log line and serve on).
#[test]
fn sigterm_stops_the_collector_when_its_log_pipe_is_closed() {
    for args in [
        vec!["collector", "--listen"],
        vec![
            "standalone",
            "--catalog",
            "/nonexistent-so-it-fails",
            "--listen",
        ],
    ] {
        // The standalone case fails at start on the missing catalog: it must exit (with
        // an error), not hang, whatever happens to its log.
        let port = blackout_test_support::free_port();
        let mut child = Command::new(COLLECTOR)
            .args(&args)
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end at once: the first log line already meets a closed pipe.
        drop(child.stderr.take());
        if args[0] == "collector" {
            blackout_test_support::wait_until("collector listens", Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            // More log lines into the closed pipe, then the signal.
            for _ in 0..3 {
                let _ = blackout_test_support::http_get(&format!(
                    "http://127.0.0.1:{port}/api/v1/observations"
                ));
            }
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let st = wait_exit(&mut child, Duration::from_secs(10));
            if st.is_none() {
                let _ = child.kill();
            }
            assert!(
                st.is_some_and(|s| s.success()),
                "collector with a closed log pipe did not stop cleanly on SIGTERM: {st:?}"
            );
        } else {
            let st = wait_exit(&mut child, Duration::from_secs(20));
            if st.is_none() {
                let _ = child.kill();
            }
            assert!(
                st.is_some_and(|s| !s.success()),
                "standalone with a bad catalog and a closed log pipe: {st:?}"
            );
        }
    }
}

/// `--version` names the binary, the version, the git revision and the build date, and
/// `blackout_build_info` carries the same.
#[test]
fn version_and_build_info_name_the_build() {
    let mut revisions = Vec::new();
    for (bin, name) in [(COLLECTOR, "blackout"), (AGENT, "blackout-agent")] {
        let out = Command::new(bin).arg("--version").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let rest = text
            .trim()
            .strip_prefix(&format!("{name} {} (revision ", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|| panic!("{bin} --version: {text:?}"));
        let (rev, date) = rest.split_once(", built ").expect("revision and date");
        let date = date.strip_suffix(')').expect("closing parenthesis");
        assert!(
            rev == "unknown" || (rev.len() == 12 && rev.chars().all(|c| c.is_ascii_hexdigit())),
            "revision {rev:?}"
        );
        chrono::DateTime::parse_from_rfc3339(date).unwrap_or_else(|e| panic!("{date:?}: {e}"));
        revisions.push((rev.to_string(), date.to_string()));
    }
    assert_eq!(revisions[0], revisions[1], "both binaries are one build");

    let tmp = tempfile::tempdir().unwrap();
    let (catalog, _l) = tcp_catalog(0, 1);
    let c = CollectorSetup::new(tmp.path(), &catalog, &[], "");
    let _p = c.start();
    let m = scrape(&c.url());
    let line = m
        .lines()
        .find(|l| l.starts_with("blackout_build_info{"))
        .expect("blackout_build_info");
    let (rev, date) = &revisions[0];
    for want in [
        format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        format!("revision=\"{rev}\""),
        format!("build_date=\"{date}\""),
    ] {
        assert!(line.contains(&want), "{line} lacks {want}");
    }
    assert!(line.ends_with(" 1"), "{line}");
    // The process metrics every exporter has, read from /proc of the collector itself.
    let rss = metric_sum(&m, "process_resident_memory_bytes", &[]);
    assert!(rss > 1e6, "process_resident_memory_bytes {rss}");
    let start = metric_sum(&m, "process_start_time_seconds", &[]);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 600.0..=now).contains(&start),
        "process_start_time_seconds {start}, now {now}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_threads",
    ] {
        assert!(m.lines().any(|l| l.starts_with(name)), "{name} missing");
    }
}

fn obs(target: &str, at: &str) -> Value {
    json!({
        "agent": "a1", "target": target, "country": "KZ", "asn": 64500, "signal": "tcp",
        "measured_at": at, "ok": true, "rtt_ms": 0.4
    })
}

/// With a long log to replay, the port opens at once: `/-/healthy` answers 200 (a
/// supervisor must not kill a collector for replaying), `/-/ready` and the API 503, and
/// both 200 once the replay is done, with every batch counted.
#[test]
fn healthy_during_replay_ready_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, _l) = tcp_catalog(0, 20);
    let targets: Vec<String> = tcp_targets(&catalog);
    let c = CollectorSetup::new(
        tmp.path(),
        &catalog,
        &[("a1", "tok-a1")],
        "max_body_bytes = 4000000\nsnapshot_interval_secs = 86400",
    );
    const BATCHES: usize = 120;
    const PER_BATCH: usize = 5_000;
    {
        let mut p = c.start();
        let at = chrono::Utc::now().to_rfc3339();
        block_on(async {
            let client = client();
            for b in 0..BATCHES {
                let o: Vec<Value> = (0..PER_BATCH)
                    .map(|i| obs(&targets[i % targets.len()], &at))
                    .collect();
                let body = json!({"batch_id": format!("b{b}"), "agent": "a1", "observations": o});
                let r = client
                    .post(format!("{}api/v1/observations", c.url()))
                    .bearer_auth("tok-a1")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
            }
        });
        // No snapshot: the restart must replay the whole log.
        p.kill9();
    }
    for e in std::fs::read_dir(tmp.path().join("state")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("snapshot")
        {
            std::fs::remove_file(p).unwrap();
        }
    }

    let t0 = Instant::now();
    let mut p = c.start_early();
    let get =
        |path: &str| blackout_test_support::http_get(&format!("{}{path}", c.url())).map(|(s, _)| s);
    let mut seen_starting = false;
    let ready_after = loop {
        assert!(p.alive(), "collector died: {}", p.log_text());
        assert!(t0.elapsed() < Duration::from_secs(120), "never ready");
        let healthy = get("-/healthy");
        // Asked before /-/ready: if that still says 503, this was during the replay too.
        let status = get("api/v1/status");
        let ready = get("-/ready");
        assert_eq!(healthy, Some(200), "/-/healthy while starting");
        match ready {
            Some(503) => {
                seen_starting = true;
                assert_eq!(status, Some(503), "API during the replay");
            }
            Some(200) => break t0.elapsed(),
            other => panic!("/-/ready answered {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        seen_starting,
        "the replay of {} observations was over before the first probe ({ready_after:?}): \
         the test cannot tell ready from started",
        BATCHES * PER_BATCH
    );
    assert_eq!(get("healthz"), Some(200));
    let n = ingested(&c.url(), "a1");
    assert_eq!(
        n,
        (BATCHES * PER_BATCH) as u64,
        "every replayed observation counted"
    );
}

/// After a clean stop (snapshot) and after a kill -9 (snapshot plus the log written since),
/// the counters go on from where they were: no family vanishes, accepted batches and
/// ingested observations are not reset to what the replay alone saw.
#[test]
fn counters_go_on_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, _l) = tcp_catalog(0, 4);
    let targets: Vec<String> = tcp_targets(&catalog);
    let c = CollectorSetup::new(
        tmp.path(),
        &catalog,
        &[("a1", "tok-a1")],
        "snapshot_interval_secs = 86400",
    );
    let post = |from: usize, n: usize| {
        let at = chrono::Utc::now().to_rfc3339();
        block_on(async {
            for b in from..from + n {
                let o: Vec<Value> = targets.iter().map(|t| obs(t, &at)).collect();
                let body = json!({"batch_id": format!("b{b}"), "agent": "a1", "observations": o});
                let r = client()
                    .post(format!("{}api/v1/observations", c.url()))
                    .bearer_auth("tok-a1")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
            }
            // One refused upload: not in the log, only in the counters.
            let r = client()
                .post(format!("{}api/v1/observations", c.url()))
                .bearer_auth("wrong")
                .json(&json!({"batch_id": "x", "agent": "a1", "observations": []}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_client_error());
        });
    };
    let accepted = |m: &str| metric_sum(m, "blackout_batches_total", &["result=\"accepted\""]);
    let unauthorized =
        |m: &str| metric_sum(m, "blackout_batches_total", &["result=\"unauthorized\""]);

    let mut p = c.start();
    post(0, 5);
    let before = scrape(&c.url());
    assert_eq!(accepted(&before), 5.0);
    assert_eq!(unauthorized(&before), 1.0);
    assert!(p.term(Duration::from_secs(20)), "clean stop");

    let mut p = c.start();
    let after_stop = scrape(&c.url());
    assert_eq!(accepted(&after_stop), 5.0, "accepted after a clean restart");
    assert_eq!(
        unauthorized(&after_stop),
        1.0,
        "refusals kept by the snapshot"
    );
    assert_eq!(ingested(&c.url(), "a1"), 20);
    post(5, 3);
    p.kill9();

    let _p = c.start();
    let after_kill = scrape(&c.url());
    // 5 from the snapshot, 3 replayed from the log written after it.
    assert_eq!(accepted(&after_kill), 8.0, "accepted after kill -9");
    assert_eq!(ingested(&c.url(), "a1"), 32);
    // The refusal after the snapshot is in no log: lost with the process, and said so.
    assert_eq!(unauthorized(&after_kill), 1.0);
}

/// SIGHUP and `POST /-/reload` re-read the configuration and the catalogs: a new agent
/// can upload without a restart, a bad file keeps the old configuration in force (500,
/// the reason, `blackout_config_last_reload_successful` 0), a setting only a restart can
/// change is refused by name, and the collector never dies of a SIGHUP (it used to: exit
/// 129, no snapshot).
#[test]
fn sighup_and_post_reload_apply_a_new_agent_and_keep_the_old_config_on_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, _l) = tcp_catalog(0, 2);
    let target = catalog
        .lines()
        .find_map(|l| l.strip_prefix("address = \""))
        .map(|a| format!("tcp:{}", a.trim_end_matches('"')))
        .unwrap();
    let c = CollectorSetup::new(tmp.path(), &catalog, &[("a1", "tok-a1")], "");
    let mut p = c.start();
    let upload = |agent: &str, token: &str, id: &str| -> u16 {
        let at = chrono::Utc::now().to_rfc3339();
        block_on(async {
            client()
                .post(format!("{}api/v1/observations", c.url()))
                .bearer_auth(token)
                .json(&json!({"batch_id": id, "agent": agent, "observations": [
                    {"agent": agent, "target": target, "country": "KZ", "asn": 64500,
                     "signal": "tcp", "measured_at": at, "ok": true, "rtt_ms": 0.4}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let reload = || -> (u16, String) {
        block_on(async {
            let r = client()
                .post(format!("{}-/reload", c.url()))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let gauge = |name: &str| metric_sum(&scrape(&c.url()), name, &[]);
    assert_eq!(upload("a2", "tok-a2", "x1"), 401);
    assert_eq!(gauge("blackout_config_last_reload_successful"), 1.0);
    let loaded_at = gauge("blackout_config_last_reload_success_timestamp_seconds");

    let good = std::fs::read_to_string(&c.config).unwrap()
        + &format!(
            "\n[[agent]]\nid = \"a2\"\ntoken_sha256 = \"{}\"\n",
            sha256_hex("tok-a2")
        );
    std::fs::write(&c.config, &good).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let _ = Command::new("kill")
        .args(["-HUP", &p.pid().to_string()])
        .status();
    blackout_test_support::wait_until("a2 accepted after SIGHUP", Duration::from_secs(10), || {
        upload("a2", "tok-a2", "x2") == 200
    });
    assert!(p.alive(), "SIGHUP killed the collector");
    assert_eq!(upload("a1", "tok-a1", "x3"), 200);
    assert_eq!(gauge("blackout_config_last_reload_successful"), 1.0);
    assert!(gauge("blackout_config_last_reload_success_timestamp_seconds") > loaded_at);

    // A bad file: the old configuration (with a2) stays.
    std::fs::write(&c.config, format!("{good}\nmax_age_secs = 0\n")).unwrap();
    let (status, body) = reload();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("max_age_secs"), "{body}");
    assert_eq!(gauge("blackout_config_last_reload_successful"), 0.0);
    assert_eq!(upload("a2", "tok-a2", "x4"), 200);

    // A setting only a restart applies is refused by name.
    let other_port = blackout_test_support::free_port();
    std::fs::write(
        &c.config,
        good.replace(&c.addr.to_string(), &format!("127.0.0.1:{other_port}")),
    )
    .unwrap();
    let (status, body) = reload();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("listen changed"), "{body}");

    // Back to a good file: in force again, and a1 removed is refused.
    std::fs::write(
        &c.config,
        good.replace(
            &format!(
                "\n[[agent]]\nid = \"a1\"\ntoken_sha256 = \"{}\"\n",
                sha256_hex("tok-a1")
            ),
            "\n",
        ),
    )
    .unwrap();
    let (status, body) = reload();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 agents"), "{body}");
    assert_eq!(gauge("blackout_config_last_reload_successful"), 1.0);
    assert_eq!(upload("a1", "tok-a1", "x5"), 401);
    assert_eq!(upload("a2", "tok-a2", "x6"), 200);
    assert!(p.term(Duration::from_secs(20)), "clean stop after reloads");
}
