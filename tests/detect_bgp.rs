//! The `bgp` signal in the engine: readings of the BGP sources (`BgpVisibility`) become a
//! series per country and ASN, with the withdrawals kept as evidence.

use blackout_detect::{
    ChangeKind, DetectConfig, Engine, EntityKey, Event, EventChange, EventKind, Mechanism,
};
use blackout_model::bgp::{BgpVisibility, BgpWithdrawals};
use blackout_model::observation::Signal;
use chrono::{DateTime, Duration, Utc};

mod detect_support;
use detect_support::*;

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

/// /24s of each network of KZ: AS100 holds 120, AS200 80.
const SPACE: [(u32, u32); 2] = [(100, 120), (200, 80)];

#[derive(Clone, Copy, Default)]
struct Cut {
    /// Networks whose probes fail.
    probes: &'static [u32],
    /// Networks whose routes are withdrawn.
    routes: &'static [u32],
    /// DNS fails while everything else reaches.
    dns: bool,
}

/// One bin of probes: 3 agents, 10 ICMP and 10 TCP targets per network, 3 DNS servers.
fn probes(eng: &mut Engine, bin: i64, cut: Cut) {
    for a in ["a", "b", "c"] {
        for (asn, _) in SPACE {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10 {
                    let ok = !cut.probes.contains(&asn);
                    eng.ingest(&obs(
                        a,
                        &format!("{signal}-{asn}-{k}"),
                        asn,
                        signal,
                        bin,
                        ok,
                    ));
                }
            }
        }
        for k in 0..3 {
            let ok = !cut.dns && cut.probes.len() < SPACE.len();
            eng.ingest(&obs(a, &format!("dns-{k}"), 0, Signal::Dns, bin, ok));
        }
    }
}

/// The readings a BGP source sends at `t`: the country and each network.
fn readings(eng: &mut Engine, t: DateTime<Utc>, withdrawn: &[u32]) {
    let mut visible_total = 0;
    let mut total = 0;
    for (asn, space) in SPACE {
        let visible = if withdrawn.contains(&asn) { 0 } else { space };
        visible_total += visible;
        total += space;
        let mut r = reading(0, Some(asn), visible, space, 3);
        r.at = t;
        if visible < space {
            r.withdrawals = Some(BgpWithdrawals {
                prefixes_withdrawn: 3,
                examples: vec![format!("10.{}.0.0/16", asn % 256)],
                peers: vec!["AS64500 192.0.2.1".into(), "AS64501 192.0.2.2".into()],
                first_withdrawal_at: t,
            });
        }
        eng.ingest_bgp(&r);
    }
    let mut r = reading(0, None, visible_total, total, 3);
    r.at = t;
    eng.ingest_bgp(&r);
}

/// One bin: its probes, BGP readings every 30 s (with `advance` after each, as the
/// collector's tick), then the close. `dip` replaces the readings of one instant (seconds
/// into the bin) with these withdrawn networks.
fn run_bin(
    eng: &mut Engine,
    bin: i64,
    cut: Cut,
    dip: Option<(i64, &[u32])>,
    changes: &mut Vec<(DateTime<Utc>, EventChange)>,
) {
    probes(eng, bin, cut);
    for k in 0..10 {
        let t = t0() + Duration::seconds(bin * BIN + 30 * k);
        let withdrawn = match dip {
            Some((secs, nets)) if secs == 30 * k => nets,
            _ => cut.routes,
        };
        readings(eng, t, withdrawn);
        changes.extend(
            eng.advance(t + Duration::seconds(5))
                .into_iter()
                .map(|c| (t, c)),
        );
    }
    let end = t0() + Duration::seconds((bin + 1) * BIN + 30);
    changes.extend(close(eng, bin).into_iter().map(|c| (end, c)));
}

fn world(cut_bins: std::ops::Range<i64>, cut: Cut) -> (Engine, Vec<(DateTime<Utc>, EventChange)>) {
    let mut eng = Engine::new(DetectConfig::default());
    let mut changes = Vec::new();
    for bin in 0..cut_bins.end + 4 {
        let c = if cut_bins.contains(&bin) {
            cut
        } else {
            Cut::default()
        };
        run_bin(&mut eng, bin, c, None, &mut changes);
    }
    (eng, changes)
}

fn events_of(eng: &Engine, entity: &EntityKey) -> Vec<Event> {
    eng.events()
        .filter(|e| &e.entity == entity)
        .cloned()
        .collect()
}

fn kz() -> EntityKey {
    EntityKey::Country("KZ".into())
}

#[test]
fn routes_withdrawn_with_reachability_is_known_within_a_minute() {
    let cut = Cut {
        probes: &[100, 200],
        routes: &[100, 200],
        dns: false,
    };
    let (eng, changes) = world(20..26, cut);
    let evs = events_of(&eng, &kz());
    assert_eq!(evs.len(), 1, "{evs:#?}");
    let ev = &evs[0];
    assert_eq!(ev.kind, EventKind::NationalBlackout);
    assert_eq!(ev.mechanism, Some(Mechanism::RoutesWithdrawn));
    assert!(!ev.is_open());
    // Opened by the readings, not by the bin's close: the confirmation (60 s) after the
    // withdrawal, plus the tick.
    let cut_at = t0() + Duration::seconds(20 * BIN);
    let (seen, opened) = changes
        .iter()
        .find(|(_, c)| c.change == ChangeKind::Opened && c.event.entity == kz())
        .unwrap();
    assert_eq!(opened.event.mechanism, Some(Mechanism::RoutesWithdrawn));
    let delay = (*seen - cut_at).num_seconds();
    assert!(
        (60..=90).contains(&delay),
        "opened {delay} s after the withdrawal"
    );
    let w = ev
        .evidence
        .bgp_withdrawals
        .as_ref()
        .expect("withdrawal evidence");
    assert_eq!(w.prefixes_withdrawn, 6, "both networks' prefixes: {w:?}");
    assert_eq!(w.peers.len(), 2);
    assert_eq!(ev.evidence.bgp_lowest_share, Some(0.0));
    assert!(ev.evidence.signals.contains(&Signal::Bgp));
    // The networks are the national event's, not events of their own.
    assert_eq!(eng.events().count(), 1);
}

#[test]
fn probes_failing_with_routes_kept_is_traffic_blocked() {
    let cut = Cut {
        probes: &[100, 200],
        routes: &[],
        dns: false,
    };
    let (eng, _) = world(20..26, cut);
    let evs = events_of(&eng, &kz());
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].kind, EventKind::NationalBlackout);
    assert_eq!(evs[0].mechanism, Some(Mechanism::TrafficBlocked));
    assert_eq!(evs[0].evidence.bgp_withdrawals, None);
    assert_eq!(evs[0].evidence.bgp_lowest_share, Some(1.0));
}

#[test]
fn one_network_withdrawing_is_a_partial_event_on_it() {
    let cut = Cut {
        probes: &[200],
        routes: &[200],
        dns: false,
    };
    let (eng, _) = world(20..26, cut);
    let net = EntityKey::Asn {
        country: "KZ".into(),
        asn: 200,
    };
    let evs = events_of(&eng, &net);
    assert_eq!(evs.len(), 1, "{:#?}", eng.events().collect::<Vec<_>>());
    assert_eq!(evs[0].kind, EventKind::Partial);
    assert_eq!(evs[0].mechanism, Some(Mechanism::RoutesWithdrawn));
    assert!(
        events_of(&eng, &kz())
            .iter()
            .all(|e| e.kind != EventKind::NationalBlackout)
    );
}

#[test]
fn dns_failing_alone_is_service_blocking() {
    let cut = Cut {
        dns: true,
        ..Cut::default()
    };
    let (eng, _) = world(20..26, cut);
    let evs = events_of(&eng, &kz());
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0].kind, EventKind::ServiceBlocking);
    assert_eq!(evs[0].mechanism, Some(Mechanism::ServiceBlocking));
}

#[test]
fn one_noisy_reading_opens_no_event() {
    let mut eng = Engine::new(DetectConfig::default());
    let mut changes = Vec::new();
    for bin in 0..30 {
        // In bin 20 one reading says both networks are gone; the next one, 30 s later,
        // that they are back.
        let dip = (bin == 20).then_some((120, &[100u32, 200][..]));
        run_bin(&mut eng, bin, Cut::default(), dip, &mut changes);
    }
    assert_eq!(
        eng.events().count(),
        0,
        "{:#?}",
        eng.events().collect::<Vec<_>>()
    );
}

#[test]
fn bgp_state_survives_a_snapshot() {
    let cut = Cut {
        probes: &[100, 200],
        routes: &[100, 200],
        dns: false,
    };
    let cfg = DetectConfig::default();
    let mut eng = Engine::new(cfg.clone());
    let mut changes = Vec::new();
    for bin in 0..22 {
        let c = if bin >= 20 { cut } else { Cut::default() };
        run_bin(&mut eng, bin, c, None, &mut changes);
    }
    assert_eq!(eng.open_events().count(), 1);
    // As the collector's snapshot does: the whole engine in postcard, settings put back.
    let saved = postcard::to_stdvec(&eng).unwrap();
    let mut back = postcard::from_bytes::<Engine>(&saved)
        .unwrap()
        .with_config(cfg);
    let open: Vec<Event> = back.open_events().cloned().collect();
    assert_eq!(open[0].mechanism, Some(Mechanism::RoutesWithdrawn));
    assert!(back.bgp_withdrawals(&kz()).is_none());
    assert_eq!(
        back.bgp_withdrawals(&EntityKey::Asn {
            country: "KZ".into(),
            asn: 100
        })
        .map(|w| w.prefixes_withdrawn),
        Some(3)
    );
    // The restored engine goes on: the withdrawal stays one event (no second opening
    // from the restored readings), which closes once routes and probes are back.
    let mut after = Vec::new();
    run_bin(&mut back, 22, cut, None, &mut after);
    assert!(
        after.iter().all(|(_, c)| c.change != ChangeKind::Opened),
        "{after:#?}"
    );
    for bin in 23..26 {
        run_bin(&mut back, bin, Cut::default(), None, &mut after);
    }
    assert_eq!(back.open_events().count(), 0);
    assert_eq!(back.events().count(), 1);
}

/// A network that withdraws its routes soon after its country's national blackout ended
/// fails alone: a partial event of its own, `routes_withdrawn`, not a "national blackout"
/// of one network taken for the blackout's tail (seen in tests/bgp_mechanism.rs: the
/// BGP-opened partial event of AS64512, a few bins after XA's border drop was lifted,
/// was relabelled national when its bin closed).
#[test]
fn a_network_withdrawing_after_a_national_blackout_is_its_own_partial_event() {
    let national = Cut {
        probes: &[100, 200],
        routes: &[],
        dns: false,
    };
    let one = Cut {
        probes: &[200],
        routes: &[200],
        dns: false,
    };
    let mut eng = Engine::new(DetectConfig::default());
    let mut changes = Vec::new();
    for bin in 0..34 {
        let c = match bin {
            20..23 => national,
            25..30 => one,
            _ => Cut::default(),
        };
        run_bin(&mut eng, bin, c, None, &mut changes);
    }
    let kz_events = events_of(&eng, &kz());
    assert_eq!(kz_events[0].kind, EventKind::NationalBlackout);
    assert_eq!(kz_events[0].mechanism, Some(Mechanism::TrafficBlocked));
    let end = kz_events[0].end.expect("the blackout ended");
    let net = EntityKey::Asn {
        country: "KZ".into(),
        asn: 200,
    };
    let evs = events_of(&eng, &net);
    assert_eq!(evs.len(), 1, "{:#?}", eng.events().collect::<Vec<_>>());
    assert!(evs[0].start >= end, "{:#?} after {end}", evs[0]);
    assert_eq!(evs[0].kind, EventKind::Partial, "{:#?}", evs[0]);
    assert_eq!(evs[0].mechanism, Some(Mechanism::RoutesWithdrawn));
    assert!(
        kz_events[1..]
            .iter()
            .all(|e| e.kind != EventKind::NationalBlackout),
        "{kz_events:#?}"
    );
}
