//! `docs/metrics.md` lists exactly the metrics the code declares: every name in the first
//! column of its tables is in `blackout_expose::metrics::METRICS` (the collector's) or
//! `blackout_agent::metrics::METRICS` (the agent's own endpoint), and every declared
//! metric is in the documentation; its "Agent metrics" section lists exactly the agent's.

use std::collections::BTreeSet;

use blackout_agent::metrics::{Kind as AgentKind, METRICS as AGENT_METRICS};
use blackout_expose::metrics::METRICS;

/// `blackout_*` names in the first column of the markdown table rows of `text`.
fn documented(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = row.split('|').next().unwrap_or("");
        let mut rest = first;
        while let Some(i) = rest.find("blackout_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            out.insert(name);
        }
    }
    out
}

fn docs() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text of the section headed `heading`, up to the next section.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no {heading:?} in docs/metrics.md"));
    let rest = &text[start + heading.len() + 2..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn the_agent_metrics_section_lists_exactly_the_agents_metrics() {
    let docs = documented(section(&docs(), "## Agent metrics"));
    let code: BTreeSet<String> = AGENT_METRICS.iter().map(|d| d.name.to_string()).collect();
    assert_eq!(docs, code);
}

/// A name the collector relays for each agent and the agent exports itself is one
/// metric: the same type on both.
#[test]
fn names_on_both_ends_have_one_type() {
    for a in AGENT_METRICS {
        if let Some(c) = METRICS.iter().find(|c| c.name == a.name) {
            let agent_type = match a.kind {
                AgentKind::Counter => "counter",
                AgentKind::Gauge => "gauge",
            };
            assert_eq!(c.kind.as_str(), agent_type, "{}", a.name);
        }
    }
}

#[test]
fn the_metrics_documentation_lists_exactly_the_declared_metrics() {
    let docs = documented(&docs());
    let code: BTreeSet<String> = METRICS
        .iter()
        .map(|d| d.name)
        .chain(AGENT_METRICS.iter().map(|d| d.name))
        .map(str::to_string)
        .collect();
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let unknown: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "declared but not in docs/metrics.md: {undocumented:?}\nin docs/metrics.md but not declared: {unknown:?}"
    );
}

#[test]
fn first_column_names_only() {
    let t = "| `blackout_a_total` | counter | agent | uses `blackout_b` |\n|---|---|\ntext blackout_c\n";
    assert_eq!(
        documented(t),
        BTreeSet::from(["blackout_a_total".to_string()])
    );
}
