//! The crate graph is the data path, and the compiler is to keep it so: this test fails
//! when a crate depends on one later on the path, or when the detector (pure) or the
//! model reach an I/O stack.
//!
//! ```text
//! model <- probe <- agent
//! model <- detect <- collector <- expose
//! model <- bgp <- collector
//! tools and the binaries (this package) on top
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each internal crate and the internal crates it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("blackout-model", &[]),
    ("blackout-detect", &["blackout-model"]),
    ("blackout-probe", &["blackout-model"]),
    ("blackout-agent", &["blackout-model", "blackout-probe"]),
    ("blackout-bgp", &["blackout-model"]),
    (
        "blackout-collector",
        &["blackout-model", "blackout-detect", "blackout-bgp"],
    ),
    (
        "blackout-expose",
        &[
            "blackout-model",
            "blackout-detect",
            "blackout-bgp",
            "blackout-collector",
        ],
    ),
    (
        "blackout-tools",
        &[
            "blackout-model",
            "blackout-detect",
            "blackout-probe",
            "blackout-agent",
            "blackout-bgp",
            "blackout-collector",
            "blackout-expose",
        ],
    ),
    ("blackout-test-support", &[]),
    (
        "blackout",
        &[
            "blackout-model",
            "blackout-detect",
            "blackout-probe",
            "blackout-agent",
            "blackout-bgp",
            "blackout-collector",
            "blackout-expose",
            "blackout-tools",
        ],
    ),
];

/// What the detector may not reach, even transitively: an async runtime, HTTP, DNS.
const IO_STACKS: &[&str] = &["tokio", "hyper", "axum", "reqwest", "hickory-"];
/// What the model may not reach: it is shared by both ends, with no runtime or HTTP stack
/// (the catalog format parses DNS record type names with `hickory-proto`, no I/O).
const MODEL_FORBIDS: &[&str] = &["tokio", "hyper", "axum", "reqwest"];

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(c: &mut Command) -> String {
    let out = c.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Normal (not dev, not build) dependencies of each workspace member on other members.
fn internal_edges() -> BTreeMap<String, BTreeSet<String>> {
    let text = run(cargo().args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]));
    let meta: serde_json::Value = serde_json::from_str(&text).expect("cargo metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|n| members.contains(n))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

/// Every package `krate` builds with, as `cargo build -p krate` resolves its features.
fn closure(krate: &str) -> BTreeSet<String> {
    let text = run(cargo().args([
        "tree",
        "-p",
        krate,
        "-e",
        "normal",
        "--prefix",
        "none",
        "-f",
        "{p}",
        "--offline",
    ]));
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn no_crate_depends_on_one_later_on_the_data_path() {
    let edges = internal_edges();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (krate, deps) in &edges {
        let Some(ok) = allowed.get(krate.as_str()) else {
            wrong.push(format!(
                "{krate}: a new crate; place it on the data path in ALLOWED"
            ));
            continue;
        };
        for d in deps {
            if !ok.contains(&d.as_str()) {
                wrong.push(format!("{krate} -> {d}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the data path: {wrong:#?}"
    );
}

#[test]
fn the_detector_and_the_model_reach_no_io_stack() {
    for (krate, forbidden) in [
        ("blackout-detect", IO_STACKS),
        ("blackout-model", MODEL_FORBIDS),
    ] {
        let reached: Vec<String> = closure(krate)
            .into_iter()
            .filter(|p| {
                forbidden
                    .iter()
                    .any(|s| p == s || (s.ends_with('-') && p.starts_with(s)))
            })
            .collect();
        assert!(reached.is_empty(), "{krate} depends on {reached:?}");
    }
}
