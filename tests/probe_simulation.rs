//! The real adaptive ICMP prober against a small seeded sparse Internet (the full run is
//! `blackout probe-sim`, see docs/quality.md): the goals as a regression test.

use blackout_tools::probe_sim::{ProbeSimArgs, simulate};

/// Precision is not yet at its goal on the sparse world (false block-downs of sparse and
/// diurnal blocks make false network events: docs/quality.md, probe-level simulation),
/// so this test holds the goals that are met (coverage, recall, delay) and prints the
/// precision it measured; the full run (`blackout probe-sim`) exits non-zero on every
/// missed goal, precision included.
#[test]
fn sparse_blocks_meet_the_coverage_recall_and_delay_goals() {
    let report = simulate(&ProbeSimArgs {
        blocks: 1_500,
        days: 1.5,
        vantages: 3,
        seed: 7,
        warmup_hours: 6.0,
        events: false,
    });
    println!("{}", report.markdown());
    assert!(
        report.responsive_blocks > 1_000 && report.sparse_blocks > 400,
        "a sparse world: {} responsive, {} below 0.3",
        report.responsive_blocks,
        report.sparse_blocks
    );
    assert!(
        report.country.disturbances >= 4 && report.asn.disturbances >= 4,
        "enough outages to judge: {} national, {} one-ASN",
        report.country.disturbances,
        report.asn.disturbances
    );
    let missed: Vec<String> = report
        .goal_failures()
        .into_iter()
        .filter(|f| !f.contains("precision"))
        .collect();
    assert_eq!(missed, Vec::<String>::new());
    println!(
        "precision (goal 0.99, not yet met): country {:.4}, ASN {:.4}",
        report.country_precision(),
        report.asn_precision()
    );
}
