//! Alerts delivered end to end (issue 14): a real `blackout standalone` probes loopback
//! targets, a real Prometheus scrapes it with the shipped rules and sends to a real
//! Alertmanager running the shipped `dashboards/alertmanager.yml`, whose webhook points at
//! a small HTTP server in this test. A simulated national blackout (the country's TCP
//! targets close their ports, so connections are refused) must reach the webhook as a
//! `BlackoutNationalOutage` notification with the country, the kind and the link to the
//! country's page, and its resolved notification must follow the restore. The test prints
//! the time from the cut to each step (run with `--nocapture` to see it).
//!
//! What the test changes, and only in its own copies:
//! - the rules: every `for:` becomes [`TEST_FOR`] (the shipped 5 to 30 minutes would make
//!   the test last longer than the outage it simulates);
//! - `alertmanager.yml`: the receivers' base URL (to the test's webhook), the SMTP
//!   smarthost (to a closed local port) and every `group_wait` / `group_interval` /
//!   `repeat_interval` (to [`TEST_TIMERS`]).
//!
//! Needs `prometheus`, `promtool` and `prometheus-alertmanager` (or `alertmanager`); `amtool`
//! is used when present. Missing programs skip the test locally and fail it in CI
//! (`CI=true`), where .ci/run installs them. No root needed: the cut closes loopback ports.

use blackout_test_support as common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{Proc, free_port, http_get, promql, wait_for, which};

/// The `for:` of every rule in the test's copy of the rules.
const TEST_FOR: &str = "10s";
/// (setting, value) written over every occurrence in the test's copy of alertmanager.yml.
const TEST_TIMERS: &[(&str, &str)] = &[
    ("group_wait", "1s"),
    ("group_interval", "1s"),
    ("repeat_interval", "1m"),
];
/// The receivers' base URL in the shipped alertmanager.yml.
const SHIPPED_WEBHOOK_BASE: &str = "http://127.0.0.1:5001/";
const SHIPPED_SMARTHOST: &str = "smtp.example.org:587";
/// Generous bounds, not targets: the measured times are printed.
const FIRING_WITHIN: Duration = Duration::from_secs(75);
const RESOLVED_WITHIN: Duration = Duration::from_secs(60);

/// Detector settings for seconds-long tests, as in tests/dashboards.rs: 2 s bins, a bin is
/// closed 7 s after its end (the standalone agent uploads every 5 s), three bins of
/// warm-up. Thresholds and minimum durations are the defaults.
const COLLECTOR_TOML: &str = "[detect]\nbin_secs = 2\ngrace_secs = 7\nwarmup_secs = 6\nmin_warmup_bins = 3\nrecent_window_secs = 120\nbaseline_window_secs = 600\nlate_window_secs = 60\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------
// Test support, local to this file for now: candidates for the shared test-support crate.
// ---------------------------------------------------------------------------------------

/// The first of `names` that is installed. Missing: None locally (the caller skips), a
/// failure in CI (`CI=true`), where .ci/run installs every program.
fn require_any(test: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = names.iter().find_map(|n| which(n)) {
        return Some(p);
    }
    let msg = format!(
        "{test}: none of {names:?} is installed (Debian packages prometheus, prometheus-alertmanager; bash .ci/run installs them)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
    None
}

/// A TCP target on its own loopback address that accepts until [`FlakyTarget::cut`] and
/// again after [`FlakyTarget::restore`]. Cut, its port is closed: connections are refused,
/// as behind a shutdown that rejects. The address is not 127.0.0.1, whose ports other
/// sockets take as their ephemeral source port, so that the restore can bind it again.
struct FlakyTarget {
    addr: SocketAddr,
    listener: Arc<Mutex<Option<TcpListener>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlakyTarget {
    fn new(ip: &str) -> FlakyTarget {
        let l = Self::bind(&format!("{ip}:0"));
        let addr = l.local_addr().unwrap();
        let listener = Arc::new(Mutex::new(Some(l)));
        let stop = Arc::new(AtomicBool::new(false));
        let (lst, st) = (listener.clone(), stop.clone());
        // Drain the accept queue so that a full backlog never looks like an outage.
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let accepted = lst.lock().unwrap().as_ref().map(|l| l.accept());
                match accepted {
                    Some(Ok((c, _))) => drop(c),
                    _ => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FlakyTarget {
            addr,
            listener,
            stop,
            thread: Some(thread),
        }
    }

    fn bind(addr: &str) -> TcpListener {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        l
    }

    /// Closes the port; returns once it is closed.
    fn cut(&self) {
        *self.listener.lock().unwrap() = None;
    }

    /// Listens on the same address again (std sets SO_REUSEADDR: the closed connections'
    /// TIME_WAIT does not block it).
    fn restore(&self) {
        let addr = self.addr.to_string();
        *self.listener.lock().unwrap() = Some(wait_for(
            &format!("bind {addr} again"),
            Duration::from_secs(10),
            || {
                TcpListener::bind(&addr).ok().inspect(|l| {
                    l.set_nonblocking(true).unwrap();
                })
            },
        ));
    }
}

impl Drop for FlakyTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One webhook notification: when it arrived, the path it was posted to, its JSON.
struct Notification {
    at: Instant,
    path: String,
    body: serde_json::Value,
}

/// Alertmanager's webhook receiver: an axum server on its own runtime and thread, that
/// answers every POST with 200 and hands the body over. Stops when dropped.
struct Webhook {
    addr: SocketAddr,
    rx: mpsc::Receiver<Notification>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Webhook {
    fn start() -> Webhook {
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel::<Notification>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tx = Arc::new(Mutex::new(tx));
                let app = axum::Router::new().fallback(
                    move |uri: axum::http::Uri, body: axum::body::Bytes| {
                        let tx = tx.clone();
                        async move {
                            let at = Instant::now();
                            let body = serde_json::from_slice(&body).unwrap_or_else(|e| {
                                serde_json::Value::String(format!(
                                    "not JSON ({e}): {}",
                                    String::from_utf8_lossy(&body)
                                ))
                            });
                            let n = Notification {
                                at,
                                path: uri.path().to_string(),
                                body,
                            };
                            let _ = tx.lock().unwrap().send(n);
                            "ok"
                        }
                    },
                );
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Webhook {
            addr,
            rx,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a program to its end: (success, stdout + stderr).
fn run(prog: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", prog.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of one series in an exposition, written as `name{labels}` in the exposition's
/// label order.
fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------------------
// The files under test, with the test's overrides.
// ---------------------------------------------------------------------------------------

/// The shipped rules with every `for:` set to [`TEST_FOR`].
fn rules_for_test() -> String {
    let text = std::fs::read_to_string(repo().join("dashboards/rules/blackout.rules.yml")).unwrap();
    let mut n = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => {
                n += 1;
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}for: {TEST_FOR}")
            }
            None => l.to_string(),
        })
        .collect();
    assert!(n >= 5, "only {n} `for:` lines in the rules");
    out.join("\n") + "\n"
}

/// The shipped alertmanager.yml with the receivers at `webhook`, SMTP at a closed port and
/// [`TEST_TIMERS`].
fn alertmanager_for_test(webhook: SocketAddr, closed_smtp: SocketAddr) -> String {
    let text = std::fs::read_to_string(repo().join("dashboards/alertmanager.yml")).unwrap();
    for s in [SHIPPED_WEBHOOK_BASE, SHIPPED_SMARTHOST] {
        assert!(text.contains(s), "dashboards/alertmanager.yml: no {s}");
    }
    let text = text
        .replace(SHIPPED_WEBHOOK_BASE, &format!("http://{webhook}/"))
        .replace(SHIPPED_SMARTHOST, &closed_smtp.to_string());
    let mut seen = vec![0; TEST_TIMERS.len()];
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            for (i, (key, value)) in TEST_TIMERS.iter().enumerate() {
                if t.starts_with(&format!("{key}:")) {
                    seen[i] += 1;
                    return format!("{}{key}: {value}", &l[..l.len() - t.len()]);
                }
            }
            l.to_string()
        })
        .collect();
    for (i, (key, _)) in TEST_TIMERS.iter().enumerate() {
        assert!(seen[i] > 0, "dashboards/alertmanager.yml: no {key}");
    }
    out.join("\n") + "\n"
}

/// The alert of `name` for `country` in a notification, if there.
fn alert<'a>(n: &'a Notification, name: &str, country: &str) -> Option<&'a serde_json::Value> {
    n.body["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == name && a["labels"]["country"] == country)
}

fn describe(n: &Notification) -> String {
    let alerts: Vec<String> = n.body["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    format!(
                        "{} {} {}",
                        a["labels"]["alertname"].as_str().unwrap_or("?"),
                        a["labels"]["country"].as_str().unwrap_or("-"),
                        a["status"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} receiver={} {:?}",
        n.path,
        n.body["receiver"].as_str().unwrap_or("?"),
        alerts
    )
}

#[test]
fn national_outage_is_delivered_and_resolved_through_alertmanager() {
    const TEST: &str = "national_outage_is_delivered_and_resolved_through_alertmanager";
    let Some(prometheus) = require_any(TEST, &["prometheus"]) else {
        return;
    };
    let Some(promtool) = require_any(TEST, &["promtool"]) else {
        return;
    };
    let Some(alertmanager) = require_any(TEST, &["prometheus-alertmanager", "alertmanager"]) else {
        return;
    };
    let amtool = which("amtool");
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // The shipped example config passes amtool, and routes as documented.
    if let Some(amtool) = &amtool {
        let shipped = repo().join("dashboards/alertmanager.yml");
        let shipped = shipped.to_str().unwrap();
        let (ok, out) = run(amtool, &["check-config", shipped]);
        assert!(ok, "amtool check-config {shipped}: {out}");
        let config_flag = format!("--config.file={shipped}");
        for (labels, receiver) in [
            (
                &[
                    "alertname=BlackoutNationalOutage",
                    "kind=national_blackout",
                    "severity=critical",
                    "country=XA",
                ][..],
                "shutdown-critical",
            ),
            (
                &[
                    "alertname=BlackoutServiceBlocking",
                    "kind=service_blocking",
                    "severity=warning",
                    "country=XA",
                ][..],
                "shutdown-watch",
            ),
            (
                &[
                    "alertname=BlackoutAgentDown",
                    "severity=warning",
                    "agent=a1",
                ][..],
                "ops-email",
            ),
        ] {
            let mut args = vec!["config", "routes", "test", &config_flag];
            args.extend(labels);
            let (ok, out) = run(amtool, &args);
            assert!(
                ok && out.lines().any(|l| l.trim() == receiver),
                "{labels:?}: {out}"
            );
        }
    } else {
        eprintln!("amtool not installed: alertmanager.yml not checked with it");
    }

    // Country XA: three networks of two TCP targets; all of them go dark. XC stays up. The
    // control target keeps the built-in agent healthy.
    let xa: Vec<FlakyTarget> = (0..6)
        .map(|i| FlakyTarget::new(&format!("127.77.{}.{}", 1 + i / 2, 1 + i % 2)))
        .collect();
    let up: Vec<FlakyTarget> = (0..3)
        .map(|i| FlakyTarget::new(&format!("127.78.0.{}", 1 + i)))
        .collect();
    let cat = dir.join("catalog");
    std::fs::create_dir(&cat).unwrap();
    let mut xa_toml = String::from("country = \"XA\"\nname = \"Testland A\"\n");
    for (i, t) in xa.iter().enumerate() {
        xa_toml += &format!(
            "[[tcp]]\naddress = \"{}\"\nasn = {}\n",
            t.addr,
            64500 + i / 2
        );
    }
    let xc_toml = format!(
        "country = \"XC\"\nname = \"Testland C\"\n[[tcp]]\naddress = \"{}\"\nasn = 64520\n[[tcp]]\naddress = \"{}\"\nasn = 64520\n",
        up[0].addr, up[1].addr
    );
    let control_toml = format!(
        "country = \"ZZ\"\nname = \"control\"\ncontrol = true\n[[tcp]]\naddress = \"{}\"\nasn = 64999\n",
        up[2].addr
    );
    for (f, text) in [
        ("xa.toml", xa_toml),
        ("xc.toml", xc_toml),
        ("control.toml", control_toml),
    ] {
        std::fs::write(cat.join(f), text).unwrap();
    }
    std::fs::write(dir.join("collector.toml"), COLLECTOR_TOML).unwrap();

    // The collector with its built-in agent.
    let collector_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let collector_log = dir.join("collector.log");
    let mut collector = Proc::spawn(
        "blackout standalone",
        Command::new(env!("CARGO_BIN_EXE_blackout"))
            .arg("standalone")
            .arg("--config")
            .arg(dir.join("collector.toml"))
            .arg("--catalog")
            .arg(&cat)
            .args(["--allow-reserved", "--round-secs", "1", "--listen"])
            .arg(collector_addr.to_string()),
        &collector_log,
    );
    let collector_url = format!("http://{collector_addr}");

    // Alertmanager with the shipped config, its receivers pointed at the webhook.
    let webhook = Webhook::start();
    let closed_smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let am_config = dir.join("alertmanager.yml");
    std::fs::write(&am_config, alertmanager_for_test(webhook.addr, closed_smtp)).unwrap();
    if let Some(amtool) = &amtool {
        let (ok, out) = run(amtool, &["check-config", am_config.to_str().unwrap()]);
        assert!(ok, "amtool check-config (test copy): {out}");
    }
    let am_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let am_log = dir.join("alertmanager.log");
    let mut am = Proc::spawn(
        "alertmanager",
        Command::new(&alertmanager)
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address={am_addr}"))
            // No cluster: no gossip port, no waiting for peers.
            .arg("--cluster.listen-address="),
        &am_log,
    );

    // Prometheus with the shipped rules (test `for:`), sending to that Alertmanager.
    let rules = dir.join("blackout.rules.yml");
    std::fs::write(&rules, rules_for_test()).unwrap();
    let prom_config = dir.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{am_addr}\"]\nscrape_configs:\n  - job_name: blackout\n    static_configs:\n      - targets: [\"{collector_addr}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let (ok, out) = run(
        &promtool,
        &["check", "config", prom_config.to_str().unwrap()],
    );
    assert!(ok, "promtool check config: {out}");
    let prom_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prom_url = format!("http://{prom_addr}");
    let prom_log = dir.join("prometheus.log");
    let mut prom = Proc::spawn(
        "prometheus",
        Command::new(&prometheus)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}")),
        &prom_log,
    );

    let mut check_running = || {
        collector.assert_running(&collector_log);
        am.assert_running(&am_log);
        prom.assert_running(&prom_log);
    };
    wait_for("Alertmanager ready", Duration::from_secs(30), || {
        check_running();
        http_get(&format!("http://{am_addr}/-/ready")).filter(|(s, _)| *s == 200)
    });
    wait_for(
        "Prometheus ready, with the Alertmanager",
        Duration::from_secs(30),
        || {
            check_running();
            let (s, body) = http_get(&format!("{prom_url}/api/v1/alertmanagers"))?;
            (s == 200 && body.contains(&am_addr.to_string())).then_some(())
        },
    );

    // Warm-up: normal verdicts from learned baselines.
    wait_for(
        "normal verdicts after the warm-up",
        Duration::from_secs(60),
        || {
            check_running();
            let (_, body) = http_get(&format!("{collector_url}/metrics"))?;
            ["XA", "XC"]
                .iter()
                .all(|c| {
                    metric(
                        &body,
                        &format!("blackout_country_status{{country=\"{c}\"}}"),
                    ) == Some(0.0)
                        && metric(
                            &body,
                            &format!(
                                "blackout_country_signal_baseline{{country=\"{c}\",signal=\"tcp\"}}"
                            ),
                        ) == Some(1.0)
                })
                .then_some(())
        },
    );
    eprintln!("normal verdicts after {:?}", t0.elapsed());
    // Prometheus has scraped them too: the rules are evaluated on a normal country.
    wait_for("Prometheus scrapes XA", Duration::from_secs(20), || {
        promql(&prom_url, "blackout_country_status{country=\"XA\"} == 0").filter(|r| !r.is_empty())
    });
    let mut others = Vec::new();
    while let Ok(n) = webhook.rx.try_recv() {
        assert!(
            alert(&n, "BlackoutNationalOutage", "XA").is_none(),
            "before the cut: {}",
            describe(&n)
        );
        others.push(describe(&n));
    }

    // The cut.
    for t in &xa {
        t.cut();
    }
    let cut_at = Instant::now();
    let mut verdict_after = None;
    let mut firing_after = None;
    let firing = loop {
        check_running();
        let waited = cut_at.elapsed();
        assert!(
            waited < FIRING_WITHIN,
            "no BlackoutNationalOutage notification {waited:?} after the cut (detector verdict after {verdict_after:?}, Prometheus firing after {firing_after:?}); other notifications: {others:#?}\nalertmanager log:\n{}",
            std::fs::read_to_string(&am_log).unwrap_or_default()
        );
        if verdict_after.is_none() {
            let outage = http_get(&format!("{collector_url}/metrics")).is_some_and(|(_, b)| {
                metric(&b, "blackout_country_status{country=\"XA\"}") == Some(2.0)
            });
            if outage {
                verdict_after = Some(cut_at.elapsed());
            }
        }
        if firing_after.is_none()
            && promql(
                &prom_url,
                "ALERTS{alertname=\"BlackoutNationalOutage\",alertstate=\"firing\",country=\"XA\"}",
            )
            .is_some_and(|r| !r.is_empty())
        {
            firing_after = Some(cut_at.elapsed());
        }
        match webhook.rx.recv_timeout(Duration::from_millis(200)) {
            Ok(n) => match alert(&n, "BlackoutNationalOutage", "XA") {
                Some(a) if a["status"] == "firing" => {
                    break (n.at - cut_at, n.path.clone(), n.body.clone());
                }
                _ => others.push(describe(&n)),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("webhook: {e}"),
        }
    };
    let (firing_notified_after, firing_path, body) = firing;
    eprintln!(
        "MEASURED cut -> firing notification: {:.1} s (detector verdict {:.1} s, Prometheus firing {:.1} s, with `for: {TEST_FOR}` and group_wait 1s)",
        firing_notified_after.as_secs_f64(),
        verdict_after.map_or(f64::NAN, |d| d.as_secs_f64()),
        firing_after.map_or(f64::NAN, |d| d.as_secs_f64()),
    );
    let a = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "BlackoutNationalOutage")
        .unwrap()
        .clone();
    eprintln!("firing notification: {body:#}");
    // Routed by kind and severity to the paging receiver, grouped by country.
    assert_eq!(body["receiver"], "shutdown-critical", "{body:#}");
    assert_eq!(firing_path, "/blackout/critical");
    assert_eq!(body["groupLabels"], serde_json::json!({"country": "XA"}));
    assert_eq!(a["labels"]["country"], "XA");
    assert_eq!(a["labels"]["kind"], "national_blackout");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["instance"], collector_addr.to_string());
    assert_eq!(a["annotations"]["summary"], "XA: national Internet outage");
    assert_eq!(
        a["annotations"]["page"],
        format!("http://{collector_addr}/country/XA"),
        "the link to the country's page on the collector"
    );
    // The link leads to that page, which shows the outage.
    let (status, page) = http_get(a["annotations"]["page"].as_str().unwrap()).unwrap();
    assert_eq!(status, 200, "the alert's link is a page: {page}");
    assert!(page.contains("id=\"verdict\">outage<"), "{page}");
    assert!(
        page.contains("<td><strong>XA</strong></td><td>national blackout</td>"),
        "{page}"
    );
    assert!(
        a["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("XA")),
        "{a:#}"
    );

    // The restore.
    for t in &xa {
        t.restore();
    }
    let restore_at = Instant::now();
    let resolved_after = loop {
        check_running();
        let waited = restore_at.elapsed();
        assert!(
            waited < RESOLVED_WITHIN,
            "no resolved BlackoutNationalOutage notification {waited:?} after the restore; other notifications: {others:#?}"
        );
        match webhook.rx.recv_timeout(Duration::from_millis(200)) {
            Ok(n) => match alert(&n, "BlackoutNationalOutage", "XA") {
                Some(a) if a["status"] == "resolved" => {
                    assert_eq!(n.body["receiver"], "shutdown-critical");
                    assert_eq!(
                        a["annotations"]["page"],
                        format!("http://{collector_addr}/country/XA")
                    );
                    eprintln!("resolved notification: {:#}", n.body);
                    break n.at - restore_at;
                }
                _ => others.push(describe(&n)),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("webhook: {e}"),
        }
    };
    eprintln!(
        "MEASURED restore -> resolved notification: {:.1} s",
        resolved_after.as_secs_f64()
    );
    // XC stayed up: nothing about it was ever sent.
    assert!(!others.iter().any(|o| o.contains(" XC ")), "{others:#?}");
    eprintln!(
        "other notifications (not asserted): {others:#?}\ntest took {:?}",
        t0.elapsed()
    );
}
