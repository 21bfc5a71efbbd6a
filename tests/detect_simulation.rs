//! A seeded simulation against ground truth: the quality goals as a regression
//! test (the full run is `blackout quality`, see QUALITY.md).

use blackout_detect::DetectConfig;
use blackout_tools::quality::simulate;

#[test]
fn simulated_scenarios_meet_the_quality_goals() {
    let report = simulate(1000, 8, 150, &DetectConfig::default());
    println!("{}", report.markdown());
    assert!(report.observations > 100_000, "the simulation ran");
    assert!(
        report.kinds.values().map(|k| k.disturbances).sum::<usize>() >= 10,
        "enough disturbances to judge"
    );
    assert_eq!(report.goal_failures(), Vec::<String>::new());
}
