//! `blackout catalog discover` against real ICMP: on 127.0.0.0/8, and in a network
//! namespace where only 10.77.1.16/28 of 10.77.1.0/24 answers. Needs root (raw ICMP
//! sockets, namespaces); skips with a message otherwise.

use blackout_test_support::is_root;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blackout_model::catalog::{self, CatalogFile};
use blackout_tools::catalog::{DiscoverSettings, discover_catalog};

fn settings(keep_silent: bool) -> DiscoverSettings {
    DiscoverSettings {
        rate_pps: 4000,
        max_per_block: 32,
        sweeps: 2,
        timeout: Duration::from_millis(500),
        keep_silent,
        ..DiscoverSettings::new()
    }
}

fn load(p: &Path) -> CatalogFile {
    catalog::load_path(p).unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_blocks_answer_everywhere() {
    if !is_root() {
        eprintln!("SKIP: discover needs root for raw ICMP sockets");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lo.toml");
    std::fs::write(
        &input,
        "# loopback\ncountry = \"XA\"\n[[icmp]]\nprefix = \"127.0.2.0/23\"\nasn = 64500\nid = \"lo\"\n",
    )
    .unwrap();
    let out = dir.path().join("out.toml");
    let mut s = settings(false);
    s.max_per_block = 8;
    let stats = discover_catalog(&input, &out, &s).await.unwrap();
    assert_eq!((stats.blocks, stats.probes_sent), (2, 2 * 256 * 2));
    assert_eq!((stats.responsive_blocks, stats.hosts), (2, 16));
    let f = load(&out);
    assert_eq!(f.icmp.len(), 2);
    for (e, block) in f.icmp.iter().zip(["127.0.2.0/24", "127.0.3.0/24"]) {
        assert_eq!(e.prefix.to_string(), block);
        // The id the block had inside the /23 is kept.
        assert_eq!(e.id.as_deref(), Some(format!("lo/{block}").as_str()));
        assert_eq!(e.hosts.len(), 8);
        assert!(e.hosts.iter().all(|h| e.prefix.contains(h)));
        assert_eq!(e.availability, Some(1.0));
    }
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("# loopback\n# Discovered by"), "{text}");
    // Expanded ids are what they were before discovery.
    let before: Vec<String> = catalog::expand(&[load(&input)])
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    let after: Vec<String> = catalog::expand(&[f])
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(before, after);
}

use blackout_test_support::Netns;

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?} failed");
}

#[test]
fn only_answering_addresses_are_found_in_a_namespace() {
    if !is_root() {
        eprintln!("SKIP: needs root for network namespaces and raw ICMP sockets");
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIP: iproute2 (ip) is not installed");
        return;
    }
    let ns = Netns(format!("bo-cat-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    // Only 16 addresses of 10.77.1.0/24 exist; the rest of 10.77.0.0/16 is routed nowhere
    // (probes to it are dropped without an answer).
    ip(&[
        "-n",
        &ns.0,
        "route",
        "add",
        "local",
        "10.77.1.16/28",
        "dev",
        "lo",
    ]);
    ip(&["-n", &ns.0, "route", "add", "blackhole", "10.77.0.0/16"]);

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("xa.toml");
    std::fs::write(
        &input,
        "country = \"XA\"\n\
         [[icmp]]\nprefix = \"10.77.1.0/24\"\nasn = 64500\n\
         [[icmp]]\nprefix = \"10.77.2.0/23\"\nasn = 64501\n\
         [[dns]]\nserver = \"192.0.2.53\"\nqname = \"xa.\"\nasn = 64500\n",
    )
    .unwrap();
    // The sweep runs inside the namespace: this test binary, re-run there on the helper
    // test below.
    let exe = std::env::current_exe().unwrap();
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&exe)
        .args([
            "--exact",
            "discover_inside_namespace",
            "--ignored",
            "--nocapture",
        ])
        .env("BLACKOUT_DISCOVER_DIR", dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "discovery inside the namespace failed");

    let f = load(&dir.path().join("dropped.toml"));
    assert_eq!(f.icmp.len(), 1, "silent blocks are dropped: {:?}", f.icmp);
    let e = &f.icmp[0];
    assert_eq!(e.prefix.to_string(), "10.77.1.0/24");
    let want: Vec<IpAddr> = (16..32)
        .map(|i| format!("10.77.1.{i}").parse().unwrap())
        .collect();
    assert_eq!(e.hosts, want);
    assert_eq!(e.availability, Some(1.0));
    assert_eq!(f.dns.len(), 1, "other sections are kept");

    let kept = load(&dir.path().join("kept.toml"));
    let prefixes: Vec<String> = kept.icmp.iter().map(|e| e.prefix.to_string()).collect();
    assert_eq!(prefixes, ["10.77.1.0/24", "10.77.2.0/23"]);
    assert!(kept.icmp[1].hosts.is_empty());
}

/// Helper of the test above, run by it inside the namespace; on its own it does nothing.
#[test]
#[ignore = "run inside a network namespace by only_answering_addresses_are_found_in_a_namespace"]
fn discover_inside_namespace() {
    let Some(dir) = std::env::var_os("BLACKOUT_DISCOVER_DIR") else {
        eprintln!("SKIP: only meaningful when started by the namespace test");
        return;
    };
    let dir = Path::new(&dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let input = dir.join("xa.toml");
        let stats = discover_catalog(&input, &dir.join("dropped.toml"), &settings(false))
            .await
            .unwrap();
        assert_eq!(
            (stats.blocks, stats.responsive_blocks, stats.hosts),
            (3, 1, 16)
        );
        discover_catalog(&input, &dir.join("kept.toml"), &settings(true))
            .await
            .unwrap();
    });
}

/// The command line, through the `blackout` binary (whose main is async).
#[test]
fn discover_command_runs_from_the_binary() {
    if !is_root() {
        eprintln!("SKIP: discover needs root for raw ICMP sockets");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lo.toml");
    std::fs::write(
        &input,
        "country = \"XA\"\n[[icmp]]\nprefix = \"127.0.4.0/24\"\nasn = 64500\n",
    )
    .unwrap();
    let out = dir.path().join("out.toml");
    let st = Command::new(env!("CARGO_BIN_EXE_blackout"))
        .args(["catalog", "discover", "--catalog"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args([
            "--rate",
            "3000",
            "--max-per-block",
            "4",
            "--sweeps",
            "1",
            "--timeout-ms",
            "300",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let f = load(&out);
    assert_eq!(f.icmp[0].hosts.len(), 4);
    assert_eq!(f.icmp[0].availability, Some(1.0));
}

/// An interrupted discovery (kill -9) resumes from its checkpoint: the rerun says where
/// it starts, logs its progress, ends with the same catalog as an uninterrupted run and
/// removes the checkpoint; a checkpoint of another run is refused, not misapplied.
#[test]
fn an_interrupted_discovery_resumes_from_its_checkpoint() {
    if !is_root() {
        eprintln!("SKIP: discover needs root for raw ICMP sockets");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lo.toml");
    std::fs::write(
        &input,
        "country = \"XA\"\n[[icmp]]\nprefix = \"127.0.8.0/22\"\nasn = 64500\n",
    )
    .unwrap();
    let run_sweeps = |out: &Path, sweeps: &str, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_blackout"));
        c.args(["--log-format", "json", "catalog", "discover", "--catalog"])
            .arg(&input)
            .arg("--out")
            .arg(out)
            .args([
                "--rate",
                "300",
                "--max-per-block",
                "4",
                "--sweeps",
                sweeps,
                "--timeout-ms",
                "200",
                "--checkpoint-secs",
                "1",
            ])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let run = |out: &Path, extra: &[&str]| run_sweeps(out, "1", extra);
    let out = dir.path().join("out.toml");
    let partial = dir.path().join("out.toml.partial");
    // 1,024 probes at 300/s: about 3.4 s; killed once a checkpoint is on disk.
    let mut first = run(&out, &[]).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !partial.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no checkpoint written"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "finished before a checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(!out.exists());
    let cp: serde_json::Value = serde_json::from_slice(&std::fs::read(&partial).unwrap()).unwrap();
    let done = cp["done"].as_u64().unwrap();
    assert!(done > 0 && done < 1024, "checkpoint at {done}");

    // Another --sweeps: the numbering differs, so the checkpoint is refused.
    let other = run_sweeps(&out, "2", &[]).output().unwrap();
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("out.toml.partial") && err.contains("--fresh"),
        "{err}"
    );

    let resumed = run(&out, &[]).output().unwrap();
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{log}");
    let resume_line = log
        .lines()
        .find(|l| l.contains("resuming the discovery"))
        .unwrap_or_else(|| panic!("no resume line: {log}"));
    assert!(
        resume_line.contains(&format!("\"done\":{done}")),
        "{resume_line}"
    );
    assert!(
        log.contains("discovery progress"),
        "no progress lines: {log}"
    );
    assert!(!partial.exists(), "checkpoint left behind");

    let whole = dir.path().join("whole.toml");
    let fresh = run(&whole, &["--fresh"]).output().unwrap();
    assert!(fresh.status.success());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&whole).unwrap(),
        "resumed and uninterrupted runs found the same"
    );
    let f = load(&out);
    assert_eq!(f.icmp.len(), 4);
    assert!(f.icmp.iter().all(|e| e.hosts.len() == 4));
}
