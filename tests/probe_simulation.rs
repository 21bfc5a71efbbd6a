//! The real adaptive ICMP prober against a small seeded sparse Internet (the full run is
//! `blackout probe-sim`, see docs/quality.md): the goals as a regression test.

use blackout_tools::probe_sim::{ProbeSimArgs, simulate};

/// Precision, recall and delay are asserted at their goals. Coverage (rounds with a
/// verdict) is below its goal of 0.96 since false `down`s became `uncertain`
/// (docs/quality.md): the test holds the share of rounds with a *right* verdict at or
/// above what the prober gave before that change on this world (0.872; 0.880 after), and
/// prints coverage against its goal; the full run (`blackout probe-sim`) exits non-zero
/// on every missed goal, coverage included. 4,000 blocks: on smaller worlds an ASN has
/// a handful of blocks and precision is noise (1,500 blocks, seed 7: 12/16).
#[test]
fn sparse_blocks_meet_the_precision_recall_and_delay_goals() {
    let report = simulate(&ProbeSimArgs {
        blocks: 4_000,
        days: 1.5,
        vantages: 3,
        seed: 7,
        warmup_hours: 6.0,
        events: false,
    });
    println!("{}", report.markdown());
    assert!(
        report.responsive_blocks > 3_000 && report.sparse_blocks > 1_000,
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
        .filter(|f| !f.starts_with("coverage"))
        .collect();
    assert_eq!(missed, Vec::<String>::new());
    assert!(
        report.all.right_coverage() >= 0.87,
        "rounds with a right verdict: {:.4}",
        report.all.right_coverage()
    );
    println!(
        "coverage (goal 0.96, not met): {:.4}; with a right verdict: {:.4}",
        report.coverage(),
        report.all.right_coverage()
    );
}
