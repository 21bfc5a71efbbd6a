//! Engine behaviour: vantage health, quorum, block verdicts, states and events, inpainting,
//! late data and persistence.

use blackout_detect::{ChangeKind, DetectConfig, Engine, EntityKey, EventKind, NoVerdict, State};
use blackout_model::observation::{BlockReport, BlockVerdict, Failure, Phase, Signal};
use chrono::{DateTime, Duration, Utc};

mod detect_support;
use detect_support::*;

/// One bin of a world with `targets` ICMP and TCP targets in two ASNs, seen by `agents`.
/// `down(asn, signal)` says which are unreachable; `agent_ok(agent)` whether the agent's
/// own uplink works.
fn feed_bin(
    eng: &mut Engine,
    bin: i64,
    agents: &[&str],
    down: impl Fn(u32, Signal) -> bool,
    agent_ok: impl Fn(&str) -> bool,
) {
    for a in agents {
        let up_link = agent_ok(a);
        eng.ingest(&control(a, bin, up_link));
        for asn in [100u32, 200] {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10 {
                    let ok = up_link && !down(asn, signal);
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
    }
}

fn warm(eng: &mut Engine, agents: &[&str], bins: i64) {
    for b in 0..bins {
        feed_bin(eng, b, agents, |_, _| false, |_| true);
        close(eng, b);
    }
}

fn country() -> EntityKey {
    EntityKey::Country("KZ".into())
}

fn asn(n: u32) -> EntityKey {
    EntityKey::Asn {
        country: "KZ".into(),
        asn: n,
    }
}

#[test]
fn an_agent_losing_its_uplink_makes_no_event() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    for b in 20..30 {
        // Two of three agents lose their own uplink: without vantage health the quorum
        // would call every target down.
        feed_bin(&mut eng, b, &agents, |_, _| false, |a| a == "a");
        close(&mut eng, b);
    }
    assert_eq!(
        eng.events().count(),
        0,
        "{:?}",
        eng.events().collect::<Vec<_>>()
    );
    let snap = eng.snapshot();
    let health: Vec<(String, bool)> = snap
        .agents
        .iter()
        .map(|a| (a.agent.clone(), a.healthy))
        .collect();
    assert_eq!(
        health,
        vec![("a".into(), true), ("b".into(), false), ("c".into(), false)]
    );
    let kz = snap
        .entities
        .iter()
        .find(|e| e.entity == country())
        .unwrap();
    assert_eq!(kz.state, State::Normal);
    assert!(kz.signals.iter().all(|s| s.value == Some(1.0)));
}

#[test]
fn a_silent_agent_is_unhealthy_and_its_stale_data_is_ignored() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    // Agent c sends target failures but no control probes in this bin: it probes
    // controls normally, so it has lost its way out.
    for a in ["a", "b"] {
        eng.ingest(&control(a, 20, true));
    }
    for asn in [100u32, 200] {
        for signal in [Signal::Icmp, Signal::Tcp] {
            for k in 0..10 {
                let id = format!("{signal}-{asn}-{k}");
                eng.ingest(&obs("a", &id, asn, signal, 20, k % 2 == 0));
                eng.ingest(&obs("b", &id, asn, signal, 20, true));
                eng.ingest(&obs("c", &id, asn, signal, 20, false));
            }
        }
    }
    close(&mut eng, 20);
    let snap = eng.snapshot();
    assert!(!snap.agents.iter().find(|a| a.agent == "c").unwrap().healthy);
    // a and b: half the targets split one to one, which is not a failing quorum.
    let kz = snap
        .entities
        .iter()
        .find(|e| e.entity == country())
        .unwrap();
    assert!(kz.signals.iter().all(|s| s.value == Some(1.0)), "{kz:?}");
}

#[test]
fn an_agent_without_controls_yet_is_no_healthy_vantage_in_its_first_bins() {
    let mut eng = Engine::new(DetectConfig::default());
    let healthy = |eng: &Engine, agent: &str| {
        eng.snapshot()
            .agents
            .iter()
            .find(|a| a.agent == agent)
            .map(|a| a.healthy)
    };
    // An agent that starts cut off: its targets fail, its controls are not probed yet.
    for bin in 0..2 {
        for k in 0..4 {
            eng.ingest(&obs("new", &format!("t{k}"), 100, Signal::Icmp, bin, false));
        }
        close(&mut eng, bin);
        assert_eq!(healthy(&eng, "new"), Some(false), "bin {bin}");
        assert!(
            eng.snapshot()
                .entities
                .iter()
                .all(|e| e.signals.iter().all(|s| s.value.is_none_or(|v| v > 0.0))),
            "bin {bin}: its failures are no reading of the country"
        );
    }
    // One whose operator turned controls off is trusted unchecked after that.
    for k in 0..4 {
        eng.ingest(&obs("new", &format!("t{k}"), 100, Signal::Icmp, 2, true));
    }
    close(&mut eng, 2);
    assert_eq!(healthy(&eng, "new"), Some(true));
}

#[test]
fn quorum_of_healthy_agents_decides_a_target() {
    // (failing agents out of three, expected share of targets up)
    for (failing, want) in [(0usize, 1.0), (1, 1.0), (2, 0.0), (3, 0.0)] {
        let mut eng = Engine::new(DetectConfig::default());
        let agents = ["a", "b", "c"];
        for (i, a) in agents.iter().enumerate() {
            eng.ingest(&control(a, 0, true));
            for k in 0..4 {
                eng.ingest(&obs(
                    a,
                    &format!("t{k}"),
                    100,
                    Signal::Icmp,
                    0,
                    i >= failing,
                ));
            }
        }
        close(&mut eng, 0);
        let snap = eng.snapshot();
        let v = snap
            .entities
            .iter()
            .find(|e| e.entity == asn(100))
            .unwrap()
            .signals[0]
            .value;
        assert_eq!(v, Some(want), "{failing} failing agents");
    }
}

#[test]
fn block_reports_use_their_verdict_and_uncertain_is_no_verdict() {
    let mut eng = Engine::new(DetectConfig::default());
    let verdicts = [
        BlockVerdict::Up,
        BlockVerdict::Down,
        BlockVerdict::Uncertain,
        BlockVerdict::Uncertain,
    ];
    eng.ingest(&control("a", 0, true));
    for (k, v) in verdicts.iter().enumerate() {
        let mut o = obs(
            "a",
            &format!("blk{k}"),
            100,
            Signal::Icmp,
            0,
            *v == BlockVerdict::Up,
        );
        // The echo itself may have failed while the block's belief says up, and the
        // other way round: the verdict decides.
        o.ok = *v != BlockVerdict::Up;
        o.phase = (!o.ok).then_some(Phase::IcmpEcho);
        o.failure = (!o.ok).then_some(Failure::Timeout);
        o.rtt_ms = None;
        o.block = Some(BlockReport {
            belief: 0.5,
            verdict: *v,
            probes: 3,
            replies: 1,
        });
        eng.ingest(&o);
    }
    close(&mut eng, 0);
    let snap = eng.snapshot();
    let s = &snap
        .entities
        .iter()
        .find(|e| e.entity == asn(100))
        .unwrap()
        .signals[0];
    assert_eq!((s.targets, s.targets_down), (2, 1));
    assert_eq!(s.value, Some(0.5));
}

#[test]
fn an_unsure_vantage_still_votes_on_a_block() {
    // Per block: the verdict of each of three vantages. One vantage that lost its path to
    // the network says down; the others measured the block and could not tell: no
    // majority says down, so the block has no verdict rather than being down.
    use BlockVerdict::{Down, Uncertain, Up};
    let blocks: [[BlockVerdict; 3]; 5] = [
        [Down, Uncertain, Uncertain], // no verdict (was down: one voice decided)
        [Down, Down, Uncertain],      // down
        [Up, Uncertain, Uncertain],   // no verdict
        [Up, Up, Uncertain],          // up
        [Up, Down, Uncertain],        // no verdict
    ];
    let mut eng = Engine::new(DetectConfig::default());
    for a in 0..3 {
        eng.ingest(&control(&format!("v{a}"), 0, true));
    }
    for (k, vs) in blocks.iter().enumerate() {
        for (a, v) in vs.iter().enumerate() {
            let mut o = obs(
                &format!("v{a}"),
                &format!("blk{k}"),
                100,
                Signal::Icmp,
                0,
                *v == Up,
            );
            o.phase = (!o.ok).then_some(Phase::IcmpEcho);
            o.rtt_ms = None;
            o.block = Some(BlockReport {
                belief: 0.5,
                verdict: *v,
                probes: 2,
                replies: u32::from(*v == Up),
            });
            eng.ingest(&o);
        }
    }
    close(&mut eng, 0);
    let snap = eng.snapshot();
    let s = &snap
        .entities
        .iter()
        .find(|e| e.entity == asn(100))
        .unwrap()
        .signals[0];
    assert_eq!((s.targets, s.targets_down), (2, 1));
}

#[test]
fn partial_outage_opens_and_closes_with_the_right_times() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 24);
    let mut opened_at = None;
    for b in 24..30 {
        feed_bin(&mut eng, b, &agents, |asn, _| asn == 100, |_| true);
        let ch = close(&mut eng, b);
        if ch.iter().any(|c| c.change == ChangeKind::Opened) && opened_at.is_none() {
            opened_at = Some(b);
        }
    }
    assert_eq!(
        opened_at,
        Some(24),
        "an outage-level drop is reported when its first bin closes"
    );
    for b in 30..34 {
        feed_bin(&mut eng, b, &agents, |_, _| false, |_| true);
        close(&mut eng, b);
    }
    let evs: Vec<_> = eng.events().collect();
    let on_asn = evs
        .iter()
        .find(|e| e.entity == asn(100))
        .expect("event on AS100");
    assert_eq!(on_asn.kind, EventKind::Partial);
    assert_eq!(on_asn.severity, State::Outage);
    assert_eq!(on_asn.start, t0() + Duration::seconds(24 * BIN));
    assert_eq!(on_asn.end, Some(t0() + Duration::seconds(30 * BIN)));
    assert!(on_asn.peak_drop > 0.99);
    assert_eq!(on_asn.evidence.share_of_targets, 1.0);
    assert!(evs.iter().all(|e| e.entity != asn(200)), "{evs:?}");
    assert!(
        evs.iter().all(|e| e.kind != EventKind::NationalBlackout),
        "{evs:?}"
    );
}

/// One shutdown is one event: both networks of the country going dark together open one
/// `national_blackout` event on the country, naming both networks in its evidence, and
/// no event of either network. (It opened three, each called `national_blackout`.)
#[test]
fn a_national_blackout_is_one_event_with_its_networks_as_evidence() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 24);
    let mut opened = Vec::new();
    for b in 24..30 {
        feed_bin(&mut eng, b, &agents, |_, _| true, |_| true);
        opened.extend(
            close(&mut eng, b)
                .into_iter()
                .filter(|c| c.change == ChangeKind::Opened)
                .map(|c| (c.event.entity, c.event.kind)),
        );
    }
    assert_eq!(
        opened,
        vec![(country(), EventKind::NationalBlackout)],
        "one event opened"
    );
    assert_eq!(eng.open_events().count(), 1);
    let ev = eng.open_events().next().unwrap();
    for n in ["KZ/AS100", "KZ/AS200"] {
        assert!(
            ev.evidence.networks.iter().any(|x| x == n),
            "{n} in {:?}",
            ev.evidence.networks
        );
    }
    for b in 30..34 {
        feed_bin(&mut eng, b, &agents, |_, _| false, |_| true);
        close(&mut eng, b);
    }
    assert_eq!(
        eng.events().count(),
        1,
        "{:?}",
        eng.events().collect::<Vec<_>>()
    );
    assert!(eng.open_events().next().is_none());
}

/// Like `feed_bin`, but per target: `down(asn, k)` for the k-th target of each signal.
fn feed_bin_targets(eng: &mut Engine, bin: i64, agents: &[&str], down: impl Fn(u32, u32) -> bool) {
    for a in agents {
        eng.ingest(&control(a, bin, true));
        for asn in [100u32, 200] {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10 {
                    let target = format!("{signal}-{asn}-{k}");
                    eng.ingest(&obs(a, &target, asn, signal, bin, !down(asn, k)));
                }
            }
        }
    }
}

/// Links that come back in the middle of a bin bring the country back above its
/// threshold while one network, probed before the restore, still looks down for a bin:
/// that tail belongs to the national blackout, not to a partial outage of its own (the
/// namespace scenarios saw such a one-bin `partial` right after the national event). A
/// network still down well after the country recovered does get its own event.
#[test]
fn a_network_recovering_a_bin_after_its_country_is_the_blackouts_tail() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 24);
    for b in 24..30 {
        feed_bin_targets(&mut eng, b, &agents, |_, _| true);
        close(&mut eng, b);
    }
    // Restore mid-bin: all of AS100 back, AS200 still down at 7 of its 10 targets.
    feed_bin_targets(&mut eng, 30, &agents, |asn, k| asn == 200 && k < 7);
    close(&mut eng, 30);
    for b in 31..36 {
        feed_bin_targets(&mut eng, b, &agents, |_, _| false);
        close(&mut eng, b);
    }
    let evs: Vec<_> = eng.events().map(|e| (e.entity.clone(), e.kind)).collect();
    assert_eq!(
        evs,
        vec![(country(), EventKind::NationalBlackout)],
        "one event, no tail partial"
    );
    // AS200 alone down for a long time after the blackout: a partial outage of its own.
    for b in 36..46 {
        feed_bin_targets(&mut eng, b, &agents, |asn, _| asn == 200);
        close(&mut eng, b);
    }
    assert!(
        eng.events()
            .any(|e| e.entity == asn(200) && e.kind == EventKind::Partial),
        "{:?}",
        eng.events().collect::<Vec<_>>()
    );
}

/// One closed bin of the `feed_bin` world plus three DNS servers (in `dns_asn`).
fn dns_world_bin(
    eng: &mut Engine,
    b: i64,
    agents: &[&str],
    dns_asn: u32,
    net_down: bool,
    dns_ok: bool,
) {
    feed_bin(eng, b, agents, |_, _| net_down, |_| true);
    for a in agents {
        for k in 0..3 {
            eng.ingest(&obs(a, &format!("ns{k}"), dns_asn, Signal::Dns, b, dns_ok));
        }
    }
    close(eng, b);
}

#[test]
fn national_blackout_and_service_blocking_are_told_apart() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    let world = |eng: &mut Engine, b: i64, all_down: bool, dns_down: bool| {
        dns_world_bin(eng, b, &agents, 0, all_down, !(all_down || dns_down));
    };
    for b in 0..20 {
        world(&mut eng, b, false, false);
    }
    for b in 20..24 {
        world(&mut eng, b, false, true);
    }
    for b in 24..28 {
        world(&mut eng, b, false, false);
    }
    for b in 28..32 {
        world(&mut eng, b, true, false);
    }
    let evs: Vec<_> = eng.events().filter(|e| e.entity == country()).collect();
    let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![EventKind::ServiceBlocking, EventKind::NationalBlackout]
    );
    assert_eq!(evs[0].evidence.signals, vec![Signal::Dns]);
    assert_eq!(evs[0].end, Some(t0() + Duration::seconds(24 * BIN)));
    assert!(evs[1].end.is_none());
    assert_eq!(evs[1].evidence.networks.len(), 2);
}

/// Services often fail a bin before the network at a blackout's start and come back a
/// bin after it: neither edge is a service blocking. Services still failing two bins
/// after the network came back are one, from the network's return on.
#[test]
fn a_blackouts_ragged_edges_are_not_service_blocking_but_blocking_after_it_is() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    let world = |eng: &mut Engine, b: i64, net_down: bool, dns_down: bool| {
        dns_world_bin(eng, b, &agents, 100, net_down, !dns_down);
    };
    for b in 0..20 {
        world(&mut eng, b, false, false);
    }
    world(&mut eng, 20, false, true);
    for b in 21..25 {
        world(&mut eng, b, true, true);
    }
    world(&mut eng, 25, false, true);
    for b in 26..30 {
        world(&mut eng, b, false, false);
    }
    let kinds = |eng: &Engine, e: EntityKey| -> Vec<EventKind> {
        eng.events()
            .filter(|ev| ev.entity == e)
            .map(|ev| ev.kind)
            .collect()
    };
    assert_eq!(kinds(&eng, country()), vec![EventKind::NationalBlackout]);
    // The network is part of the national event, not an event of its own.
    assert_eq!(kinds(&eng, asn(100)), vec![]);
    let ev = eng.events().find(|e| e.entity == country()).unwrap();
    assert_eq!(ev.end, Some(t0() + Duration::seconds(25 * BIN)));

    // The network returns, DNS stays blocked.
    for b in 30..34 {
        world(&mut eng, b, true, true);
    }
    for b in 34..38 {
        world(&mut eng, b, false, true);
    }
    assert_eq!(
        kinds(&eng, country()),
        vec![
            EventKind::NationalBlackout,
            EventKind::NationalBlackout,
            EventKind::ServiceBlocking
        ]
    );
    let blocking = eng.events().last().unwrap();
    assert_eq!(blocking.kind, EventKind::ServiceBlocking);
    assert_eq!(blocking.start, t0() + Duration::seconds(34 * BIN));
    assert_eq!(blocking.evidence.signals, vec![Signal::Dns]);
    assert!(blocking.is_open());
}

/// Network signals that were not measured in a bin cannot vouch that the network is up:
/// services failing then are not a service blocking (a thin network's few targets are
/// often not all probed within one bin).
#[test]
fn services_failing_while_the_network_is_unmeasured_are_not_service_blocking() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    let dns = |eng: &mut Engine, b: i64, ok: bool| {
        for a in agents {
            eng.ingest(&control(a, b, true));
            for k in 0..3 {
                eng.ingest(&obs(a, &format!("ns{k}"), 100, Signal::Dns, b, ok));
            }
        }
    };
    for b in 0..20 {
        feed_bin(&mut eng, b, &agents, |_, _| false, |_| true);
        dns(&mut eng, b, true);
        close(&mut eng, b);
    }
    for b in 20..24 {
        dns(&mut eng, b, false);
        close(&mut eng, b);
    }
    assert_eq!(
        eng.events().count(),
        0,
        "{:?}",
        eng.events().collect::<Vec<_>>()
    );
}

#[test]
fn inpainting_keeps_the_baseline_through_a_long_outage() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    // Four hours down: longer than the warm-up fallback window of three hours.
    for b in 20..68 {
        feed_bin(&mut eng, b, &agents, |asn, _| asn == 100, |_| true);
        close(&mut eng, b);
    }
    let snap = eng.snapshot();
    let s = &snap
        .entities
        .iter()
        .find(|e| e.entity == asn(100))
        .unwrap()
        .signals[0];
    assert_eq!(
        s.baseline,
        Some(1.0),
        "the outage must not drag the baseline down"
    );
    assert_eq!(s.state, Some(State::Outage));
    assert_eq!(eng.open_events().count(), 2, "AS100 and the country");
}

/// The pages draw each series as measured against its baseline: the trail keeps the
/// outage's values (the history the baseline learns from keeps the baseline instead),
/// per bin, for the country, its networks and only from `since` on.
#[test]
fn trails_keep_the_measured_drop_and_its_baseline() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    for b in 20..24 {
        feed_bin(&mut eng, b, &agents, |asn, _| asn == 100, |_| true);
        close(&mut eng, b);
    }
    let all = eng.trails(|e| e.country() == "KZ", t0());
    let keys: Vec<(String, Signal)> = all
        .iter()
        .map(|t| (t.entity.to_string(), t.signal))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("KZ".into(), Signal::Icmp),
            ("KZ".into(), Signal::Tcp),
            ("KZ/AS100".into(), Signal::Icmp),
            ("KZ/AS100".into(), Signal::Tcp),
            ("KZ/AS200".into(), Signal::Icmp),
            ("KZ/AS200".into(), Signal::Tcp),
        ]
    );
    let as100 = &all[2].points;
    assert_eq!(as100.len(), 24, "one point per closed bin");
    assert_eq!(as100[0].start, t0());
    assert_eq!(as100[0].baseline, None, "warm-up: no baseline yet");
    let last = as100[23];
    assert_eq!(last.start, t0() + Duration::seconds(23 * BIN));
    assert_eq!(last.value, Some(0.0), "the drop as measured, not inpainted");
    assert_eq!(last.baseline, Some(1.0));
    assert_eq!(
        all[0].points[23].value,
        Some(0.5),
        "half the country's targets"
    );
    let recent = eng.trails(|e| *e == asn(100), t0() + Duration::seconds(22 * BIN));
    assert_eq!(recent.len(), 2, "icmp and tcp");
    assert!(recent.iter().all(|t| t.points.len() == 2));
    // Restored from a snapshot, the trail is the same.
    let back = postcard::from_bytes::<Engine>(&postcard::to_stdvec(&eng).unwrap())
        .unwrap()
        .with_config(DetectConfig::default());
    assert_eq!(back.trails(|e| e.country() == "KZ", t0()), all);
}

#[test]
fn late_observations_complete_history_and_evidence() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    for b in 20..24 {
        feed_bin(&mut eng, b, &agents, |asn, _| asn == 100, |_| true);
        close(&mut eng, b);
    }
    let before = eng.events().find(|e| e.entity == asn(100)).unwrap().clone();
    assert_eq!(before.evidence.late_observations, 0);
    // An agent inside the network uploads what it measured during the cut, afterwards.
    for b in 21..23 {
        eng.ingest(&control("inside", b, false));
        for k in 0..10 {
            eng.ingest(&obs(
                "inside",
                &format!("icmp-100-{k}"),
                100,
                Signal::Icmp,
                b,
                true,
            ));
        }
    }
    let ch = close(&mut eng, 24);
    assert!(
        ch.iter()
            .any(|c| c.change == ChangeKind::Updated && c.event.entity == asn(100))
    );
    let after = eng.events().find(|e| e.entity == asn(100)).unwrap();
    assert_eq!(
        after.evidence.late_observations, 20,
        "target observations of AS100"
    );
    assert_eq!(
        after.start, before.start,
        "reported boundaries are not rewritten"
    );
    // Its controls failed (it was cut off too): it is named among the unhealthy agents.
    assert!(
        !before
            .evidence
            .unhealthy_agents
            .contains(&"inside".to_string())
    );
    assert!(
        after
            .evidence
            .unhealthy_agents
            .contains(&"inside".to_string()),
        "{:?}",
        after.evidence
    );
    assert_eq!(eng.stats().late_observations, 22);
    // Data older than the baseline window is dropped and counted.
    eng.ingest(&obs("a", "icmp-100-0", 100, Signal::Icmp, -3000, true));
    assert_eq!(eng.stats().too_late_observations, 1);
}

#[test]
fn late_data_beyond_the_raw_window_still_reaches_the_evidence() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    // A cut of three hours: longer than the one-hour raw window.
    for b in 20..56 {
        feed_bin(&mut eng, b, &agents, |asn, _| asn == 100, |_| true);
        close(&mut eng, b);
    }
    for b in 56..60 {
        feed_bin(&mut eng, b, &agents, |_, _| false, |_| true);
        close(&mut eng, b);
    }
    for b in 20..56 {
        eng.ingest(&control("inside", b, false));
        eng.ingest(&obs("inside", "icmp-100-0", 100, Signal::Icmp, b, true));
    }
    close(&mut eng, 60);
    let ev = eng.events().find(|e| e.entity == asn(100)).unwrap();
    assert_eq!(ev.end, Some(t0() + Duration::seconds(56 * BIN)));
    assert_eq!(ev.evidence.late_observations, 36);
    assert!(eng.stats().late_evidence_only > 0);
    // Control probes that old cannot change a closed verdict: they are dropped.
    assert!(eng.stats().too_late_observations <= 36);
}

#[test]
fn state_survives_a_restart() {
    let agents = ["a", "b", "c"];
    let cfg = DetectConfig::default();
    let mut eng = Engine::new(cfg.clone());
    warm(&mut eng, &agents, 20);
    for b in 20..22 {
        feed_bin(&mut eng, b, &agents, |asn, _| asn == 100, |_| true);
        close(&mut eng, b);
    }
    // As the collector's snapshot does: the whole engine, in postcard, settings put back.
    let saved = postcard::to_stdvec(&eng).unwrap();
    let mut back = postcard::from_bytes::<Engine>(&saved)
        .unwrap()
        .with_config(cfg);
    assert_eq!(
        back.events().cloned().collect::<Vec<_>>(),
        eng.events().cloned().collect::<Vec<_>>()
    );
    assert_eq!(back.resume_from(), Some(t0() + Duration::seconds(22 * BIN)));
    // Baselines came back: recovery closes the open events without a new warm-up, and a
    // new outage is seen at once.
    for b in 22..24 {
        feed_bin(&mut back, b, &agents, |_, _| false, |_| true);
        close(&mut back, b);
    }
    assert_eq!(back.open_events().count(), 0);
    feed_bin(&mut back, 24, &agents, |asn, _| asn == 200, |_| true);
    let ch = close(&mut back, 24);
    assert!(
        ch.iter()
            .any(|c| c.change == ChangeKind::Opened && c.event.entity == asn(200)),
        "{ch:?}"
    );
    let ids: Vec<u64> = back.events().map(|e| e.id).collect();
    let mut dedup = ids.clone();
    dedup.dedup();
    assert_eq!(ids, dedup, "event ids stay unique after a restore");
}

#[test]
fn throttling_is_not_a_blackout() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    for b in 20..26 {
        feed_rtt(&mut eng, b, &agents, 400.0);
    }
    let evs: Vec<_> = eng.events().filter(|e| e.entity == country()).collect();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].kind, EventKind::Throttling);
    assert!(evs[0].peak_rtt_ratio >= 9.0);
    assert_eq!(evs[0].start, t0() + Duration::seconds(20 * BIN));
}

/// One bin of the `feed_bin` world, every target answering in `rtt_ms`.
fn feed_rtt(eng: &mut Engine, bin: i64, agents: &[&str], rtt_ms: f64) {
    for a in agents {
        eng.ingest(&control(a, bin, true));
        for asn in [100u32, 200] {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10 {
                    let mut o = obs(a, &format!("{signal}-{asn}-{k}"), asn, signal, bin, true);
                    o.rtt_ms = Some(rtt_ms);
                    eng.ingest(&o);
                }
            }
        }
    }
    close(eng, bin);
}

#[test]
fn jitter_on_a_fast_path_is_not_throttling_but_real_delay_is() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    for b in 0..20 {
        feed_rtt(&mut eng, b, &agents, 0.2);
    }
    // 4.5x the baseline, but under a millisecond added: a busy machine, not a censor.
    for b in 20..26 {
        feed_rtt(&mut eng, b, &agents, 0.9);
    }
    let throttled = |eng: &Engine| {
        eng.events()
            .filter(|e| e.kind == EventKind::Throttling)
            .count()
    };
    assert_eq!(throttled(&eng), 0);
    // The same path now 60 ms slower: throttling.
    for b in 26..32 {
        feed_rtt(&mut eng, b, &agents, 60.0);
    }
    assert!(
        throttled(&eng) >= 1,
        "{:?}",
        eng.events().collect::<Vec<_>>()
    );
    let ev = eng
        .events()
        .find(|e| e.kind == EventKind::Throttling && e.entity == country())
        .expect("country throttling event");
    assert_eq!(ev.start, t0() + Duration::seconds(26 * BIN));
}

/// One bin of the `feed_bin` world, every target answering in `rtt_ms`, `lost_tenths` of
/// ten probes of each agent lost (spread so that no target loses more than one agent of
/// three: every target stays up, and the loss is loss, not an outage).
fn feed_lossy(eng: &mut Engine, bin: i64, rtt_ms: f64, lost_tenths: i64) {
    for (i, a) in ["a", "b", "c"].iter().enumerate() {
        eng.ingest(&control(a, bin, true));
        for asn in [100u32, 200] {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10i64 {
                    let lost = (k + 3 * i as i64) % 10 < lost_tenths;
                    let mut o = obs(a, &format!("{signal}-{asn}-{k}"), asn, signal, bin, !lost);
                    if !lost {
                        o.rtt_ms = Some(rtt_ms);
                    }
                    eng.ingest(&o);
                }
            }
        }
    }
    close(eng, bin);
}

fn throttling_detected_at(eng: &Engine) -> Option<DateTime<Utc>> {
    eng.events()
        .find(|e| e.kind == EventKind::Throttling && e.entity == country())
        .map(|e| e.detected_at)
}

/// The close of `bin` (its end plus the default 30 s grace).
fn closed(bin: i64) -> DateTime<Utc> {
    t0() + Duration::seconds((bin + 1) * BIN + 30)
}

#[test]
fn three_hundred_ms_added_to_a_slow_path_is_throttling_from_the_first_bin() {
    // A 200 ms path + 300 ms: 2.5 times its RTT, under the factor of 3 that alone used to
    // decide (never detected), and far in milliseconds.
    let mut eng = Engine::new(DetectConfig::default());
    for b in 0..20 {
        feed_lossy(&mut eng, b, 200.0, 0);
    }
    for b in 20..24 {
        feed_lossy(&mut eng, b, 500.0, 0);
    }
    assert_eq!(throttling_detected_at(&eng), Some(closed(20)));
}

#[test]
fn one_hundred_fifty_ms_needs_two_bins_alone_and_one_with_thirty_percent_loss() {
    // 150 ms added to a 200 ms path: moderate latency evidence, two bins in a row.
    let mut eng = Engine::new(DetectConfig::default());
    for b in 0..20 {
        feed_lossy(&mut eng, b, 200.0, 0);
    }
    for b in 20..24 {
        feed_lossy(&mut eng, b, 350.0, 0);
    }
    assert_eq!(throttling_detected_at(&eng), Some(closed(21)));

    // The same delay with 30 % of the probes lost: loss and latency agree, one bin.
    let mut eng = Engine::new(DetectConfig::default());
    for b in 0..20 {
        feed_lossy(&mut eng, b, 200.0, 0);
    }
    feed_lossy(&mut eng, 20, 350.0, 3);
    assert_eq!(throttling_detected_at(&eng), Some(closed(20)));
    let snap = eng.snapshot();
    let kz = snap
        .entities
        .iter()
        .find(|e| e.entity == country())
        .unwrap();
    let tcp = kz.signals.iter().find(|s| s.signal == Signal::Tcp).unwrap();
    assert!((tcp.loss.unwrap() - 0.3).abs() < 1e-9, "{tcp:?}");
    assert_eq!(tcp.loss_probes, 60);
    assert_eq!(tcp.loss_baseline, Some(0.0));
    assert!(tcp.throttled);
    // Every target stayed up: a throttle, not an outage.
    assert!(eng.events().all(|e| e.kind == EventKind::Throttling));
}

#[test]
fn loss_alone_without_delay_is_not_throttling_in_one_bin() {
    let mut eng = Engine::new(DetectConfig::default());
    for b in 0..20 {
        feed_lossy(&mut eng, b, 200.0, 0);
    }
    feed_lossy(&mut eng, 20, 200.0, 3);
    assert_eq!(throttling_detected_at(&eng), None);
}

#[test]
fn loss_from_a_small_sample_is_shown_with_its_size() {
    // Two targets seen by two agents, one probe each per bin: 4 probes. Loss used to need
    // 30 probes per entity and bin and stayed null in such a lab.
    let mut eng = Engine::new(DetectConfig::default());
    for b in 0..3 {
        for a in ["a", "b"] {
            eng.ingest(&control(a, b, true));
            for k in 0..2 {
                eng.ingest(&obs(a, &format!("tcp-{k}"), 100, Signal::Tcp, b, true));
            }
        }
        close(&mut eng, b);
    }
    let snap = eng.snapshot();
    let kz = snap
        .entities
        .iter()
        .find(|e| e.entity == country())
        .unwrap();
    let tcp = kz.signals.iter().find(|s| s.signal == Signal::Tcp).unwrap();
    assert_eq!(tcp.loss, Some(0.0), "{tcp:?}");
    assert_eq!(tcp.loss_probes, 4);
}

#[test]
fn block_rounds_give_the_icmp_loss_sample() {
    // Each agent's round on each block: 3 echoes, 2 answered (a lost echo and its
    // follow-ups), the block up.
    let mut eng = Engine::new(DetectConfig::default());
    for a in ["a", "b", "c"] {
        eng.ingest(&control(a, 0, true));
        for k in 0..4 {
            let mut o = obs(a, &format!("icmp-{k}"), 100, Signal::Icmp, 0, true);
            o.block = Some(BlockReport {
                belief: 0.95,
                verdict: BlockVerdict::Up,
                probes: 3,
                replies: 2,
            });
            eng.ingest(&o);
        }
    }
    close(&mut eng, 0);
    let snap = eng.snapshot();
    let kz = snap
        .entities
        .iter()
        .find(|e| e.entity == country())
        .unwrap();
    let icmp = kz
        .signals
        .iter()
        .find(|s| s.signal == Signal::Icmp)
        .unwrap();
    assert_eq!(icmp.loss_probes, 36);
    assert!((icmp.loss.unwrap() - 1.0 / 3.0).abs() < 1e-9, "{icmp:?}");
}

#[test]
fn loss_at_the_edge_of_an_outage_is_not_throttling() {
    // The bin a cut lands in: half the targets already down, the rest losing probes of
    // the agents that reached them after the cut, and slow answers from a busy vantage
    // point. Loss on the targets still up is the outage's edge; the event is an outage.
    let mut eng = Engine::new(DetectConfig::default());
    for b in 0..20 {
        feed_lossy(&mut eng, b, 200.0, 0);
    }
    for (i, a) in ["a", "b", "c"].iter().enumerate() {
        eng.ingest(&control(a, 20, true));
        for asn in [100u32, 200] {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10i64 {
                    let ok = k >= 5 && (k + 3 * i as i64) % 10 >= 3;
                    let mut o = obs(a, &format!("{signal}-{asn}-{k}"), asn, signal, 20, ok);
                    if ok {
                        o.rtt_ms = Some(350.0);
                    }
                    eng.ingest(&o);
                }
            }
        }
    }
    close(&mut eng, 20);
    feed_bin(&mut eng, 21, &["a", "b", "c"], |_, _| true, |_| true);
    close(&mut eng, 21);
    assert_eq!(throttling_detected_at(&eng), None);
    assert!(
        eng.events()
            .any(|e| e.entity == country() && e.kind == EventKind::NationalBlackout),
        "{:?}",
        eng.events().collect::<Vec<_>>()
    );
}

/// The bin in which links come back: connects started during the cut complete through
/// retransmitted SYNs, a second or more late. That latency is the outage's end, not a
/// throttle (the namespace scenarios saw a one-bin throttling event on one network at the
/// end of its country's national blackout).
#[test]
fn retransmitted_connects_at_the_restore_are_not_throttling() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 24);
    for b in 24..28 {
        feed_bin(&mut eng, b, &agents, |_, _| true, |_| true);
        close(&mut eng, b);
    }
    for a in agents {
        eng.ingest(&control(a, 28, true));
        for asn in [100u32, 200] {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10 {
                    let mut o = obs(a, &format!("{signal}-{asn}-{k}"), asn, signal, 28, true);
                    if asn == 200 && signal == Signal::Tcp {
                        o.rtt_ms = Some(1_500.0);
                    }
                    eng.ingest(&o);
                }
            }
        }
    }
    close(&mut eng, 28);
    assert_no_throttling_after(&mut eng, &agents, 29..34);
}

/// Feeds normal bins `bins` (closing each), then asserts that no throttling event was
/// ever opened.
fn assert_no_throttling_after(eng: &mut Engine, agents: &[&str], bins: std::ops::Range<i64>) {
    for b in bins {
        feed_bin(eng, b, agents, |_, _| false, |_| true);
        close(eng, b);
    }
    let throttles: Vec<_> = eng
        .events()
        .filter(|e| e.kind == EventKind::Throttling)
        .collect();
    assert!(throttles.is_empty(), "{throttles:?}");
}

/// A new install says something within minutes: with the default settings (300 s bins),
/// reachability has a verdict when the second bin closes, latency only after the full
/// warm-up; and a network that goes dark in the third bin opens its event then.
#[test]
fn the_first_verdict_comes_when_the_second_bin_closes() {
    let agents = ["a", "b", "c"];
    let mut eng = Engine::new(DetectConfig::default());
    let kz = |eng: &Engine| {
        eng.snapshot()
            .entities
            .into_iter()
            .find(|e| e.entity == country())
            .unwrap()
    };
    feed_bin(&mut eng, 0, &agents, |_, _| false, |_| true);
    close(&mut eng, 0);
    assert_eq!(kz(&eng).no_verdict, Some(NoVerdict::WarmUp));
    feed_bin(&mut eng, 1, &agents, |_, _| false, |_| true);
    close(&mut eng, 1);
    let snap = kz(&eng);
    assert_eq!(snap.no_verdict, None, "{snap:?}");
    assert_eq!(snap.state, State::Normal);
    assert!(
        snap.signals
            .iter()
            .all(|s| s.state.is_some() && s.rtt_baseline_ms.is_none()),
        "{:?}",
        snap.signals
    );
    feed_bin(&mut eng, 2, &agents, |asn, _| asn == 100, |_| true);
    let opened: Vec<_> = close(&mut eng, 2)
        .into_iter()
        .filter(|c| c.change == ChangeKind::Opened)
        .map(|c| (c.event.entity, c.event.kind))
        .collect();
    assert_eq!(opened, vec![(asn(100), EventKind::Partial)]);
}

/// A vantage inside a country that was cut off: in the bin its link comes back it is a
/// healthy vantage again (most of its controls answer), and the connects it started just
/// before complete through retransmitted SYNs, 1.5 s late. Where it alone measured some
/// targets of a network in that bin, those delays are its link's, not the network's: no
/// throttling (the namespace scenarios once opened one so, on a country next door).
#[test]
fn a_vantage_coming_back_from_its_own_cut_reports_no_throttling() {
    let agents = ["a", "b", "c", "in"];
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    for b in 20..23 {
        feed_bin(&mut eng, b, &agents, |_, _| false, |a| a != "in");
        close(&mut eng, b);
    }
    // The restore, early in bin 23: one control of four failed before it.
    for a in &agents {
        eng.ingest(&control(a, 23, true));
        if *a == "in" {
            eng.ingest(&control(a, 23, false));
            eng.ingest(&control(a, 23, true));
            eng.ingest(&control(a, 23, true));
        }
        for asn in [100u32, 200] {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10 {
                    // The outside agents happen to probe AS200's TCP targets in the next
                    // bin: the inside one is alone on them in this one.
                    let alone = asn == 200 && signal == Signal::Tcp;
                    if alone != (*a == "in") {
                        continue;
                    }
                    let mut o = obs(a, &format!("{signal}-{asn}-{k}"), asn, signal, 23, true);
                    if *a == "in" {
                        o.rtt_ms = Some(1_500.0);
                    }
                    eng.ingest(&o);
                }
            }
        }
    }
    close(&mut eng, 23);
    assert_no_throttling_after(&mut eng, &agents, 24..30);
    // The same delays from a vantage whose path stayed clean are the network's.
    let mut eng = Engine::new(DetectConfig::default());
    warm(&mut eng, &agents, 20);
    for b in 20..23 {
        for a in agents {
            eng.ingest(&control(a, b, true));
            for k in 0..10 {
                let mut o = obs(a, &format!("tcp-200-{k}"), 200, Signal::Tcp, b, true);
                o.rtt_ms = Some(1_500.0);
                eng.ingest(&o);
            }
        }
        close(&mut eng, b);
    }
    assert!(
        eng.events()
            .any(|e| e.kind == EventKind::Throttling && e.entity == asn(200)),
        "{:?}",
        eng.events().collect::<Vec<_>>()
    );
}

/// One bin: every agent probes ten ICMP and ten TCP targets of each ASN, `lost_tenths` of
/// them lost (never the same target for two agents: loss, not targets down), and three
/// HTTP targets per ASN, failing when `http_down`; no latency change.
fn feed_http_under_loss(eng: &mut Engine, bin: i64, lost_tenths: i64, http_down: bool) {
    for (i, a) in ["a", "b", "c"].iter().enumerate() {
        eng.ingest(&control(a, bin, true));
        for asn in [100u32, 200] {
            for signal in [Signal::Icmp, Signal::Tcp] {
                for k in 0..10i64 {
                    let lost = (k + 3 * i as i64) % 10 < lost_tenths;
                    eng.ingest(&obs(
                        a,
                        &format!("{signal}-{asn}-{k}"),
                        asn,
                        signal,
                        bin,
                        !lost,
                    ));
                }
            }
            for k in 0..3 {
                let t = format!("http-{asn}-{k}");
                eng.ingest(&obs(a, &t, asn, Signal::Http, bin, !http_down));
            }
        }
    }
    close(eng, bin);
}

/// HTTP fetches take several round trips: under a throttle's loss they fail long before
/// pings do. Web sites failing while the network loses 30 % of its packets are the loss,
/// not a blocked service; the same sites failing on a network that carries its packets
/// as usual are one (seen in the simulator: `service_blocking` on HTTP alone during a
/// +150 ms, +30 % loss throttle).
#[test]
fn services_failing_under_the_networks_loss_are_not_service_blocking() {
    let blocking = |lost_tenths: i64| {
        let mut eng = Engine::new(DetectConfig::default());
        for b in 0..20 {
            feed_http_under_loss(&mut eng, b, 0, false);
        }
        for b in 20..26 {
            feed_http_under_loss(&mut eng, b, lost_tenths, true);
        }
        eng.events()
            .filter(|e| e.kind == EventKind::ServiceBlocking)
            .map(|e| e.entity.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(blocking(3), Vec::<EntityKey>::new());
    assert!(blocking(0).contains(&country()), "{:?}", blocking(0));
}
