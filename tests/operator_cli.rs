//! The command line as scripts use it, against the real binaries: `blackout-agent probe`
//! exits as fping does and takes targets as arguments, `--listen` takes the ecosystem's
//! forms.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

const COLLECTOR: &str = env!("CARGO_BIN_EXE_blackout");
const AGENT: &str = env!("CARGO_BIN_EXE_blackout-agent");

fn probe(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(AGENT)
        .arg("probe")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

/// 0 when every target answered, 1 when some did not, 2 when the probe could not run
/// (bad target, bad flags); targets as positional arguments, one JSON line each.
#[test]
fn probe_exits_as_fping_does() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = open.local_addr().unwrap().to_string();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (code, out) = probe(&["--signal", "tcp", &open]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("\"ok\":true"), "{out}");

    let (code, out) = probe(&["--signal", "tcp", &open, &closed]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.lines().count(), 2);

    let (code, _) = probe(&["--signal", "tcp", "not-an-address"]);
    assert_eq!(code, Some(2));
    let (code, _) = probe(&["--signal", "tcp"]);
    assert_eq!(code, Some(2), "no target at all is a usage error");

    // A file and arguments together: both probed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets");
    std::fs::write(&file, format!("# one\n{open}\n")).unwrap();
    let (code, out) = probe(&[
        "--signal",
        "tcp",
        "--targets",
        file.to_str().unwrap(),
        &closed,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.lines().count(), 2);
}

/// `--listen :PORT` and `--listen localhost:PORT` bind as exporters' flags do.
#[test]
fn listen_takes_port_only_and_host_names() {
    for form in [":{port}", "localhost:{port}"] {
        // A port free a moment ago may be taken by another test's connection before the
        // collector binds it: then the collector exits ("cannot listen"), and the test
        // tries another port rather than waiting for nothing.
        let mut answered = false;
        for _attempt in 0..5 {
            let port = blackout_test_support::free_port();
            let listen = form.replace("{port}", &port.to_string());
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("collector.log");
            let mut collector = blackout_test_support::Proc::spawn(
                "collector",
                Command::new(COLLECTOR).args(["collector", "--listen", &listen]),
                &log,
            );
            let t0 = std::time::Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if blackout_test_support::http_get(&format!("http://127.0.0.1:{port}/-/healthy"))
                    .is_some_and(|(s, _)| s == 200)
                {
                    answered = true;
                    break;
                }
                if let Ok(Some(_)) = collector.child.try_wait() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    assert!(
                        text.contains("cannot listen"),
                        "--listen {listen}: the collector exited: {text}"
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if answered {
                break;
            }
        }
        assert!(answered, "--listen {form}: never answered on 127.0.0.1");
    }
    let out = Command::new(COLLECTOR)
        .args(["collector", "--listen", "9797"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen") && err.contains(":PORT"), "{err}");
}

/// `check-config` reports every invalid value of a file (one line each, naming the key),
/// refuses a catalog path that does not exist, and checks a systemd unit's agent config
/// as far as it can outside the unit, saying what it did not check.
#[test]
fn check_config_reports_every_error_and_what_it_did_not_check() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("collector.toml");
    std::fs::write(
        &bad,
        "listen = \"nope\"\nmax_age_secs = 0\nassign_k = 0\n\n[[agent]]\nid = \"a\"\ntoken_sha256 = \"xyz\"\n",
    )
    .unwrap();
    let out = Command::new(COLLECTOR)
        .args(["check-config", "--collector"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    for key in ["`listen`", "`max_age_secs`", "`assign_k`", "`token_sha256`"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(bad.to_str().unwrap()) && l.contains(key)),
            "{key} not reported: {text}"
        );
    }

    let missing = dir.path().join("missing-catalog.toml");
    std::fs::write(&missing, "catalog = [\"no-such-dir\"]\n").unwrap();
    let out = Command::new(COLLECTOR)
        .args(["check-config", "--collector"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("key `catalog`") && text.contains("no-such-dir"),
        "{text}"
    );

    // The shipped unit's agent config: its token is a systemd credential.
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/agent.toml");
    let out = Command::new(COLLECTOR)
        .args(["check-config", "--agent", unit])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("note: key `token_file`") && text.contains("not checked"),
        "{text}"
    );
}
