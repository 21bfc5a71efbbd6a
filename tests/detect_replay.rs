//! `blackout replay` inputs: signals CSV, IODA JSON, observation JSON Lines.

use blackout_detect::{DetectConfig, EntityKey, EventKind};
use blackout_tools::replay::{
    infer_bin_secs, read_ioda, read_observations, read_signals_csv, replay_series,
};
use std::io::Write;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn signals_csv_replay_finds_a_regional_blackout() {
    let mut csv = String::from("timestamp,entity,signal,value\n");
    let t0 = 1_563_580_800i64;
    for h in 0..48 {
        let drop = (30..36).contains(&h);
        for (region, v) in [("Zulia", if drop { 10 } else { 100 }), ("Lara", 100)] {
            csv += &format!("{},VE/{region},icmp,{v}\n", t0 + h * 3600);
        }
        // RFC 3339 timestamps are accepted too.
        let ts = chrono::DateTime::from_timestamp(t0 + h * 3600, 0)
            .unwrap()
            .to_rfc3339();
        csv += &format!("{ts},AS8048,bgp,{}\n", if drop { 50 } else { 400 });
    }
    let f = file(&csv);
    let mut points = read_signals_csv(f.path()).unwrap();
    assert_eq!(infer_bin_secs(&points), Some(3600));
    let cfg = DetectConfig {
        bin_secs: 3600,
        grace_secs: 0,
        ..DetectConfig::default()
    };
    let eng = replay_series(cfg, &mut points, |_| {});
    let evs: Vec<_> = eng.events().collect();
    let zulia = evs
        .iter()
        .find(|e| e.entity.to_string() == "VE/Zulia")
        .expect("Zulia event");
    assert_eq!(zulia.start.timestamp(), t0 + 30 * 3600);
    assert_eq!(zulia.end.map(|t| t.timestamp()), Some(t0 + 36 * 3600));
    // BGP alone: the network's routes went, and its event says so.
    let as8048 = evs
        .iter()
        .find(|e| e.entity.to_string() == "AS8048")
        .expect("AS8048 event");
    assert_eq!(
        as8048.mechanism,
        Some(blackout_detect::Mechanism::RoutesWithdrawn)
    );
    assert!(evs.iter().all(|e| e.entity.to_string() != "VE/Lara"));
    // Half of two regions is not "most": no national event.
    assert!(evs.iter().all(|e| e.kind != EventKind::NationalBlackout));
}

#[test]
fn csv_errors_name_the_line() {
    let cases = [
        ("time,entity,signal,value\n", ":1:", "header"),
        (
            "timestamp,entity,signal,value\n0,KZ,icmp,1\nx,KZ,icmp,1\n",
            ":3:",
            "timestamp",
        ),
        (
            "timestamp,entity,signal,value\n0,kz,icmp,1\n",
            ":2:",
            "entity",
        ),
        (
            "timestamp,entity,signal,value\n0,KZ,smoke,1\n",
            ":2:",
            "signal",
        ),
        (
            "timestamp,entity,signal,value\n0,KZ,icmp,lots\n",
            ":2:",
            "value",
        ),
    ];
    for (text, line, what) in cases {
        let f = file(text);
        let e = read_signals_csv(f.path()).unwrap_err().to_string();
        assert!(
            e.contains(line) && e.contains(what),
            "{e} should name {line} and {what}"
        );
    }
}

#[test]
fn ioda_signals_raw_is_read() {
    let mut values: Vec<String> = (0..60)
        .map(|i| {
            if (40..46).contains(&i) {
                "12".into()
            } else {
                "200".into()
            }
        })
        .collect();
    values[3] = "null".into();
    let json = format!(
        r#"{{"type":"signals","metadata":{{}},"requestParameters":{{}},"error":null,"perf":null,
        "data":[[{{"entityType":"country","entityCode":"IR","entityName":"Iran","datasource":"ping-slash24","subtype":"","from":1573430400,"until":1573646400,"step":600,"nativeStep":600,"values":[{}]}},
                 {{"entityType":"country","entityCode":"IR","entityName":"Iran","datasource":"merit-nt","from":1573430400,"until":1573646400,"step":600,"nativeStep":600,"values":[1,2,3]}}]]}}"#,
        values.join(",")
    );
    let f = file(&json);
    let (mut points, step, skipped) = read_ioda(f.path()).unwrap();
    assert_eq!(step, Some(600));
    assert_eq!(skipped, vec!["merit-nt".to_string()]);
    assert_eq!(points.len(), 59, "null values are gaps");
    let cfg = DetectConfig {
        bin_secs: 600,
        grace_secs: 0,
        ..DetectConfig::default()
    };
    let eng = replay_series(cfg, &mut points, |_| {});
    let ev = eng.events().next().expect("an event");
    assert_eq!(ev.entity, EntityKey::Country("IR".into()));
    assert_eq!(ev.start.timestamp(), 1_573_430_400 + 40 * 600);
    // Serialized as the replay prints it: RFC 3339 UTC, end null while open.
    let line = serde_json::to_value(ev).unwrap();
    assert_eq!(line["start"], "2019-11-11T06:40:00Z");
    assert!(line["end"].is_string());
}

#[test]
fn observation_lines_errors_name_the_line() {
    let good = r#"{"agent":"a","target":"t","country":"KZ","asn":1,"signal":"icmp","measured_at":"2022-01-05T10:00:00Z","ok":true}"#;
    let f = file(&format!("{good}\n\n{good}\n{{\"agent\":1}}\n"));
    let e = read_observations(f.path()).unwrap_err().to_string();
    assert!(e.contains(":4:"), "{e}");
    let bad_country = good.replace("\"KZ\"", "\"kz\"");
    let f = file(&format!("{bad_country}\n"));
    let e = read_observations(f.path()).unwrap_err().to_string();
    assert!(e.contains(":1:") && e.contains("country"), "{e}");
    let f = file(&format!("{good}\n{good}\n"));
    assert_eq!(read_observations(f.path()).unwrap().len(), 2);
}
