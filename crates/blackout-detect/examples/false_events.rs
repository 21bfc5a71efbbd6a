use blackout_detect::DetectConfig;
use blackout_detect::sim::Scenario;
fn main() {
    let cfg = DetectConfig::default();
    let from: u64 = std::env::args().nth(1).map_or(1, |s| s.parse().unwrap());
    let to: u64 = std::env::args().nth(2).map_or(300, |s| s.parse().unwrap());
    for seed in from..=to {
        let sc = Scenario::generate(seed, 288, cfg.bin_secs);
        let run = sc.run(&cfg);
        let score = sc.score(&run);
        if score.agent_failure_events > 0 {
            println!("seed {seed}: {} false, {} agent-failure", score.false_events, score.agent_failure_events);
            for d in &sc.disturbances {
                println!("  dist {:?}", d);
            }
            for e in &run.events {
                println!("  event {:?} {:?} {} .. {:?} signals {:?} mech {:?}", e.entity, e.kind, e.start, e.end, e.evidence.signals, e.mechanism);
            }
        }
    }
}
