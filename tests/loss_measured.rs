//! Packet loss is measured and shown (issue 13: "loss is always null"): the real
//! `blackout standalone` binary probes a small loopback lab (ICMP blocks on 127.0.0.0/8,
//! TCP ports of this process) and exports the loss of each signal in `/metrics`
//! (`blackout_loss_ratio`, `blackout_asn_loss_ratio`) and `/api/v1/status` (`loss` with its
//! sample `loss_probes`), from the first bins on. The detector used to need 30 probes per
//! entity and bin before it said anything about loss, which a lab (or a small catalog at
//! 300 s rounds) never reaches: loss stayed null for good.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use blackout_test_support::{self as common, Proc};

/// 2 s bins and three bins of warm-up, as in tests/honest_verdicts.rs.
const COLLECTOR_TOML: &str = "[detect]\nbin_secs = 2\ngrace_secs = 7\nwarmup_secs = 6\nmin_warmup_bins = 3\nrecent_window_secs = 120\nbaseline_window_secs = 600\nlate_window_secs = 60\n";

/// A TCP port of this process that accepts every connection, until the test ends.
fn open_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    port
}

fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn loss_is_exported_per_signal_and_network_from_a_small_lab() {
    if !common::is_root() {
        eprintln!(
            "SKIPPED loss_is_exported_per_signal_and_network_from_a_small_lab: needs root (ICMP)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    std::fs::create_dir(&cat).unwrap();
    let mut xb = String::from("country = \"XB\"\nname = \"Borduria\"\n");
    for k in 0..3 {
        xb += &format!(
            "[[icmp]]\nprefix = \"127.0.{n}.0/24\"\nasn = 64510\nhosts = [\"127.0.{n}.1\", \"127.0.{n}.2\"]\n",
            n = 60 + k
        );
    }
    for _ in 0..4 {
        xb += &format!(
            "[[tcp]]\naddress = \"127.0.0.1:{}\"\nasn = 64510\n",
            open_port()
        );
    }
    std::fs::write(cat.join("xb.toml"), xb).unwrap();
    std::fs::write(
        cat.join("control.toml"),
        format!(
            "country = \"ZZ\"\ncontrol = true\n[[tcp]]\naddress = \"127.0.0.1:{}\"\nasn = 64999\n",
            open_port()
        ),
    )
    .unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, COLLECTOR_TOML).unwrap();
    let log = dir.path().join("standalone.log");
    let port = common::free_port();
    let mut proc = Proc::spawn(
        "blackout standalone (loss lab)",
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
    let metrics = common::wait_for("loss of XB's signals", Duration::from_secs(90), || {
        proc.assert_running(&log);
        let m = get("/metrics")?;
        let icmp = series(&m, "blackout_loss_ratio{country=\"XB\",signal=\"icmp\"}")?;
        let tcp = series(&m, "blackout_loss_ratio{country=\"XB\",signal=\"tcp\"}")?;
        Some((m, icmp, tcp))
    });
    let (m, icmp, tcp) = metrics;
    // Everything answers on loopback.
    assert_eq!(icmp, 0.0, "icmp loss");
    assert_eq!(tcp, 0.0, "tcp loss");
    assert_eq!(
        series(
            &m,
            "blackout_asn_loss_ratio{asn=\"64510\",country=\"XB\",signal=\"tcp\"}"
        ),
        Some(0.0),
        "per network too"
    );
    let api: serde_json::Value = serde_json::from_str(&get("/api/v1/status").unwrap()).unwrap();
    let xb = api["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == "XB")
        .unwrap_or_else(|| panic!("XB in {api}"))
        .clone();
    for signal in ["icmp", "tcp"] {
        let s = xb["signals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["signal"] == signal)
            .unwrap_or_else(|| panic!("{signal} in {xb}"));
        assert_eq!(s["loss"], 0.0, "{signal}: {s}");
        let probes = s["loss_probes"].as_u64().unwrap_or(0);
        assert!(probes >= 1, "{signal}: the sample is given: {s}");
    }
}
