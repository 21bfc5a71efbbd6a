//! `docs/metrics.md` lists exactly the metrics the code declares: every name in the first
//! column of its tables is in `blackout_expose::metrics::METRICS`, and every declared
//! metric is in the documentation.

use std::collections::BTreeSet;

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

#[test]
fn the_metrics_documentation_lists_exactly_the_declared_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs = documented(&text);
    let code: BTreeSet<String> = METRICS.iter().map(|d| d.name.to_string()).collect();
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
