//! The `bgp` signal in the engine: readings of the BGP sources (`BgpVisibility`) become a
//! series per country and ASN, with the withdrawals kept as evidence.

use blackout_detect::{DetectConfig, Engine, EntityKey};
use blackout_model::bgp::{BgpVisibility, BgpWithdrawals};
use blackout_model::observation::Signal;
use chrono::{DateTime, Duration, TimeZone, Utc};

const BIN: i64 = 300;

fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_100 - 1_700_000_100 % BIN, 0)
        .unwrap()
}

fn at(bin: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(bin * BIN + 10)
}

fn close(eng: &mut Engine, bin: i64) -> Vec<blackout_detect::EventChange> {
    eng.advance(t0() + Duration::seconds((bin + 1) * BIN + 30))
}

fn reading(bin: i64, asn: Option<u32>, visible: u32, total: u32, peers: u16) -> BgpVisibility {
    BgpVisibility {
        at: at(bin),
        country: "KZ".into(),
        asn,
        visible_slash24: visible,
        total_slash24: total,
        peers_healthy: peers,
        peers_quorum: 2,
        withdrawals: None,
    }
}

fn signal_value(eng: &Engine, entity: &EntityKey) -> Option<f64> {
    eng.snapshot()
        .entities
        .iter()
        .find(|e| &e.entity == entity)?
        .signals
        .iter()
        .find(|s| s.signal == Signal::Bgp)?
        .value
}

#[test]
fn a_reading_becomes_the_entitys_bgp_value_and_keeps_its_withdrawals() {
    let mut eng = Engine::new(DetectConfig::default());
    let kz = EntityKey::Country("KZ".into());
    let net = EntityKey::Asn {
        country: "KZ".into(),
        asn: 9198,
    };
    eng.ingest_bgp(&reading(0, None, 400, 400, 3));
    let mut r = reading(0, Some(9198), 30, 120, 3);
    r.withdrawals = Some(BgpWithdrawals {
        prefixes_withdrawn: 2,
        examples: vec!["192.0.2.0/24".into()],
        peers: vec!["AS64500 192.0.2.1".into()],
        first_withdrawal_at: at(0),
    });
    eng.ingest_bgp(&r);
    close(&mut eng, 0);
    assert_eq!(signal_value(&eng, &kz), Some(1.0));
    assert_eq!(signal_value(&eng, &net), Some(0.25));
    assert_eq!(
        eng.bgp_withdrawals(&net).map(|w| w.prefixes_withdrawn),
        Some(2)
    );
    assert!(eng.bgp_withdrawals(&kz).is_none());
    // Fully visible again: the evidence is gone.
    eng.ingest_bgp(&reading(1, Some(9198), 120, 120, 3));
    assert!(eng.bgp_withdrawals(&net).is_none());
}

#[test]
fn without_a_quorum_of_peers_bgp_knows_nothing() {
    let mut eng = Engine::new(DetectConfig::default());
    let kz = EntityKey::Country("KZ".into());
    // One healthy peer of a quorum of two: not "0 % visible", no value at all.
    eng.ingest_bgp(&reading(0, None, 0, 400, 1));
    eng.ingest_bgp(&reading(0, None, 0, 0, 3));
    close(&mut eng, 0);
    assert_eq!(signal_value(&eng, &kz), None);
}
