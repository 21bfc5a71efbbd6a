//! BGP and the probes together name how a country was cut (issue 16): the simulated
//! Internet of `tests/world` (real knot and nginx in every network, real agents, the real
//! collector) whose country XA is reached through real BGP routes.
//!
//! ```text
//!   xa1 (AS64511, 10.1.0.0/18)   xa2 (AS64512, 10.1.64.0/18)     FRR bgpd, stub networks
//!      |  \                        /  |
//!      |   '---- u2 (AS65002) ----'   |                          a second transit (multihop)
//!      |               |              |
//!   router namespace: u1 (AS65001) + zebra                       XA's routes in the kernel
//!                      |          \                              come from BGP only
//!                 rc (AS65000) --- u2                            a route collector: BMP of
//!                      |                                         its peers u1 and u2
//!                 collector [bgp] bmp_listen            <- agents v1, v2 probe ICMP, TCP,
//!                                                          DNS, HTTP targets in XA, XB, XC
//! ```
//!
//! u1 and u2 also originate the other countries' prefixes (the rest of a full table).
//! Scenarios, one after another with a restore between: XA withdraws its routes; XA drops
//! traffic at the border with its routes kept; one of XA's networks withdraws; one BGP
//! peer's session flaps. The test reads `/api/v1/events` (kind, mechanism, evidence) and
//! prints a table.
//!
//! Run: `cargo test --test bgp_mechanism -- --nocapture` (as root; skipped with a message
//! otherwise).

mod frr;
mod world;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use blackout_expose::names;
use chrono::{DateTime, Utc};
use world::observe::{Event, Metrics};
use world::{COLLECTOR_ADDR, Node, World};

const POLL: Duration = Duration::from_millis(250);
/// Where the collector listens for BMP, in its own namespace.
const BMP_PORT: u16 = 11019;
const U1_ASN: u32 = 65001;
const U2_ASN: u32 = 65002;
const RC_ASN: u32 = 65000;
/// Prefixes per full table here: XA's two plus the five the transits originate. A peer
/// counts as full from five (and keeps counting down to half of it): XA withdrawing
/// does not make the peers that saw it stop counting.
const FULL_TABLE_MIN_PREFIXES: u32 = 5;

/// The routers: their configurations and where their files are.
struct Routers {
    dir: PathBuf,
    xa: [(frr::Bgpd, String); 2],
    /// u1's address as the route collector sees it, and u2's.
    u1_peer: Ipv4Addr,
    u2_peer: Ipv4Addr,
    rc: frr::Bgpd,
}

impl Routers {
    fn dir_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// XA's network `i` (0 or 1) stops, or starts again, announcing its prefix.
    fn announce(&self, i: usize, on: bool) {
        let (r, prefix) = &self.xa[i];
        r.announce(&self.dir_of(&r.name), prefix, on);
    }
}

/// Starts zebra and u1 in the world's router namespace and the other routers in
/// theirs; XA's static routes in the router are removed first, so that traffic to XA
/// follows what BGP says.
fn start_routers(w: &mut World) -> Routers {
    // zebra runs as the `frr` user: it must be able to reach its directory.
    std::fs::set_permissions(w.dir(), std::fs::Permissions::from_mode(0o711))
        .expect("world dir mode");
    let dir = w.path("frr");
    std::fs::create_dir_all(&dir).expect("frr dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("frr dir");
    let xa = w.country("XA").clone();
    let others: Vec<String> = w
        .countries
        .iter()
        .filter(|c| c.code != "XA")
        .flat_map(|c| c.networks.iter().map(|n| n.prefix.clone()))
        .chain([w.control.prefix.clone()])
        .collect();
    let nets: Vec<(world::Network, Node)> = xa
        .networks
        .iter()
        .map(|n| (n.clone(), w.nodes[&n.role].clone()))
        .collect();
    let u2 = w.add_node("u2", Ipv4Addr::new(10, 6, 2, 1), vec!["10.6.2.0/24".into()]);
    let rc = w.add_node("rc", Ipv4Addr::new(10, 6, 1, 1), vec!["10.6.1.0/24".into()]);
    let router = w.router.clone();
    for (n, _) in &nets {
        world::ns_run(&router, &["ip", "route", "del", &n.prefix]);
    }

    let mut u1 = frr::Bgpd::new("u1", U1_ASN, "10.6.0.1");
    let mut u2r = frr::Bgpd::new("u2", U2_ASN, u2.src);
    for (n, node) in &nets {
        u1.neighbors.push(frr::Neighbor::direct(node.addr, n.asn));
        u2r.neighbors
            .push(frr::Neighbor::multihop(node.addr, n.asn, u2.addr));
    }
    u1.neighbors.push(frr::Neighbor::direct(rc.addr, RC_ASN));
    u2r.neighbors
        .push(frr::Neighbor::multihop(rc.addr, RC_ASN, u2.addr));
    u1.networks = others.clone();
    u2r.networks = others;

    let mut rcr = frr::Bgpd::new("rc", RC_ASN, rc.src);
    rcr.neighbors
        .push(frr::Neighbor::direct(rc.router_addr, U1_ASN));
    rcr.neighbors
        .push(frr::Neighbor::multihop(u2.addr, U2_ASN, rc.addr));
    rcr.bmp_to = Some((COLLECTOR_ADDR.to_string(), BMP_PORT));

    let xa_routers: Vec<(frr::Bgpd, String, String)> = nets
        .iter()
        .map(|(n, node)| {
            let mut r = frr::Bgpd::new(&n.role, n.asn, n.src);
            r.neighbors
                .push(frr::Neighbor::direct(node.router_addr, U1_ASN));
            r.neighbors
                .push(frr::Neighbor::multihop(u2.addr, U2_ASN, node.addr));
            r.networks = vec![n.prefix.clone()];
            r.stub = true;
            (r, n.prefix.clone(), n.role.clone())
        })
        .collect();

    let (zargs, zserv) = frr::prepare_zebra(&dir.join("zebra"));
    w.spawn_in("zebra", &router, Path::new(frr::ZEBRA), &zargs, &[]);
    // bgpd gives up on zebra's socket if it is not there yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !zserv.exists() {
        w.check_alive().expect("zebra");
        assert!(Instant::now() < deadline, "zebra's socket never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    let bgpd = Path::new(frr::BGPD);
    let args = u1.prepare(&dir.join("u1"), Some(&zserv));
    w.spawn_in("bgpd-u1", &router, bgpd, &args, &[]);
    let args = u2r.prepare(&dir.join("u2"), None);
    w.spawn("bgpd-u2", "u2", bgpd, &args);
    let args = rcr.prepare(&dir.join("rc"), None);
    w.spawn("bgpd-rc", "rc", bgpd, &args);
    for (r, _, role) in &xa_routers {
        let args = r.prepare(&dir.join(&r.name), None);
        w.spawn(&format!("bgpd-{role}"), role, bgpd, &args);
    }
    let mut it = xa_routers.into_iter().map(|(r, p, _)| (r, p));
    let xa = [it.next().expect("xa1"), it.next().expect("xa2")];
    Routers {
        dir,
        xa,
        u1_peer: rc.router_addr,
        u2_peer: u2.addr,
        rc: rcr,
    }
}

/// The prefixes the router namespace's kernel has from BGP.
fn kernel_bgp_routes(w: &World) -> BTreeSet<String> {
    world::try_run("ip", &["-n", &w.router, "route", "show", "proto", "bgp"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn wait_kernel_routes(w: &mut World, want: &[&str], present: bool, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let have = kernel_bgp_routes(w);
        if want.iter().all(|p| have.contains(*p) == present) {
            return;
        }
        if let Err(e) = w.check_alive() {
            panic!("{e}");
        }
        assert!(
            Instant::now() < deadline,
            "router's BGP routes {have:?}, wanted {want:?} present={present}; u1 log:\n{}",
            w.log_tail("bgpd-u1", 20)
        );
        std::thread::sleep(POLL);
    }
}

/// What one scenario measured, for the table.
#[derive(Debug, Default)]
struct Row {
    n: u32,
    name: &'static str,
    truth: &'static str,
    expected: &'static str,
    kind: Option<String>,
    mechanism: Option<String>,
    detect: Option<Duration>,
    notes: Vec<String>,
    errors: Vec<String>,
}

impl Row {
    fn new(n: u32, name: &'static str, truth: &'static str, expected: &'static str) -> Row {
        Row {
            n,
            name,
            truth,
            expected,
            ..Row::default()
        }
    }
    fn fail(&mut self, msg: impl Into<String>) {
        let m = msg.into();
        eprintln!("  FAIL [{}]: {m}", self.name);
        self.errors.push(m);
    }
    fn note(&mut self, msg: impl Into<String>) {
        let m = msg.into();
        eprintln!("  [{}] {m}", self.name);
        self.notes.push(m);
    }
}

fn mechanism(e: &Event) -> Option<String> {
    e.raw["mechanism"].as_str().map(str::to_string)
}

fn id(e: &Event) -> u64 {
    e.raw["id"].as_u64().unwrap_or(u64::MAX)
}

fn withdrawals(e: &Event) -> &serde_json::Value {
    &e.raw["evidence"]["bgp_withdrawals"]
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

struct Suite {
    w: World,
    routers: Routers,
    round: Duration,
    rows: Vec<Row>,
}

impl Suite {
    fn metrics(&self) -> Metrics {
        self.w.metrics()
    }

    fn event_ids(&self) -> BTreeSet<u64> {
        self.w.events().unwrap_or_default().iter().map(id).collect()
    }

    /// Events opened since `before` was taken.
    fn new_events(&self, before: &BTreeSet<u64>) -> Vec<Event> {
        self.w
            .events()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !before.contains(&id(e)))
            .collect()
    }

    /// Polls until a new event satisfies `want`: (time since `t0`, the event).
    fn wait_event(
        &self,
        before: &BTreeSet<u64>,
        t0: Instant,
        limit: Duration,
        want: impl Fn(&Event) -> bool,
    ) -> Option<(Duration, Event)> {
        loop {
            if let Some(e) = self.new_events(before).into_iter().find(|e| want(e)) {
                return Some((t0.elapsed(), e));
            }
            if t0.elapsed() > limit {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// The same event read again.
    fn reread(&self, e: &Event) -> Option<Event> {
        self.w
            .events()
            .unwrap_or_default()
            .into_iter()
            .find(|x| id(x) == id(e))
    }

    fn bgp_value(m: &Metrics, country: &str) -> Option<f64> {
        m.get(
            names::COUNTRY_SIGNAL_VALUE,
            &[("country", country), ("signal", "bgp")],
        )
    }

    /// Waits until XA is back: all of its space visible in BGP from both peers, every
    /// event closed, every country's status normal. Returns how long it took.
    fn settle(&mut self, row: &mut Row) {
        let t0 = Instant::now();
        let limit = self.round * 30;
        loop {
            let m = self.metrics();
            let open: Vec<Event> = self
                .w
                .events()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.end.is_none())
                .collect();
            let healthy = m.get(names::BGP_PEERS, &[("source", "bmp"), ("state", "healthy")]);
            let normal = ["XA", "XB", "XC"]
                .iter()
                .all(|c| m.get(names::COUNTRY_STATUS, &[("country", c)]) == Some(0.0));
            if open.is_empty()
                && normal
                && healthy == Some(2.0)
                && Self::bgp_value(&m, "XA") == Some(1.0)
            {
                row.note(format!(
                    "back to normal {:.1} s after the restore",
                    t0.elapsed().as_secs_f64()
                ));
                return;
            }
            if t0.elapsed() > limit {
                row.fail(format!(
                    "not back to normal {:.0} s after the restore: open events {:?}, healthy peers {healthy:?}, XA bgp {:?}",
                    limit.as_secs_f64(),
                    open.iter()
                        .map(|e| (e.raw["entity"].to_string(), e.kind.clone()))
                        .collect::<Vec<_>>(),
                    Self::bgp_value(&m, "XA")
                ));
                return;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Events in countries other than XA: none may open in any scenario.
    fn check_untouched(&self, row: &mut Row, before: &BTreeSet<u64>) {
        for e in self.new_events(before) {
            if e.country.as_deref() != Some("XA") {
                row.fail(format!(
                    "event in an untouched country: {} {} {:?}",
                    e.raw["entity"], e.kind, e.start
                ));
            }
        }
    }

    /// Waits for XA's new event of `kind` on the country (`asn` None) or one network,
    /// records it in `row` and returns it as it reads a bin and a grace later (the
    /// mechanism may be refined once the bin closes).
    fn detect(
        &self,
        row: &mut Row,
        before: &BTreeSet<u64>,
        t_cut: Instant,
        wall_cut: SystemTime,
        kind: &str,
        asn: Option<u32>,
    ) -> Option<Event> {
        let limit = self.round * 12;
        let found = self.wait_event(before, t_cut, limit, |e| {
            e.country.as_deref() == Some("XA") && e.asn == asn && e.kind == kind
        });
        let Some((d, first)) = found else {
            row.fail(format!(
                "no {kind} event for XA{} within {:.0} s; new events: {:?}",
                asn.map(|a| format!("/AS{a}")).unwrap_or_default(),
                limit.as_secs_f64(),
                self.new_events(before)
                    .iter()
                    .map(|e| (e.raw["entity"].to_string(), e.kind.clone(), mechanism(e)))
                    .collect::<Vec<_>>()
            ));
            return None;
        };
        row.detect = Some(d);
        row.kind = Some(first.kind.clone());
        if let Some(at) = first.raw["detected_at"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        {
            let lag = (at.with_timezone(&Utc) - DateTime::<Utc>::from(wall_cut)).num_milliseconds()
                as f64
                / 1000.0;
            row.note(format!(
                "event {} detected_at - cut = {lag:.1} s; seen by the API poll {:.1} s after the cut; mechanism at first sight {:?}",
                first.raw["id"],
                d.as_secs_f64(),
                mechanism(&first)
            ));
        }
        std::thread::sleep(self.round + Duration::from_secs(self.w.timing.grace_secs()));
        let later = self.reread(&first).unwrap_or(first);
        row.mechanism = mechanism(&later);
        Some(later)
    }
}

fn expect_mechanism(row: &mut Row, e: &Event, want: &str) {
    if mechanism(e).as_deref() != Some(want) {
        row.fail(format!(
            "event {} on {} names mechanism {:?}, not {want}; evidence {}",
            e.kind,
            e.raw["entity"],
            mechanism(e),
            e.raw["evidence"]
        ));
    }
}

/// Scenario 1: XA's two networks stop announcing their prefixes.
fn country_withdraws(s: &mut Suite) -> Row {
    let mut row = Row::new(
        1,
        "XA withdraws its routes",
        "xa1 and xa2 stop announcing (no network); the router's kernel loses the routes",
        "national_blackout, routes_withdrawn, evidence: both prefixes, both peers",
    );
    let before = s.event_ids();
    let wall_cut = SystemTime::now();
    let t_cut = Instant::now();
    s.routers.announce(0, false);
    s.routers.announce(1, false);
    if let Some(e) = s.detect(
        &mut row,
        &before,
        t_cut,
        wall_cut,
        "national_blackout",
        None,
    ) {
        expect_mechanism(&mut row, &e, "routes_withdrawn");
        let w = withdrawals(&e);
        let mut examples = strings(&w["examples"]);
        examples.sort();
        let xa = s.w.country("XA").clone();
        let mut want: Vec<String> = xa.networks.iter().map(|n| n.prefix.clone()).collect();
        want.sort();
        if examples != want || w["prefixes_withdrawn"].as_u64() != Some(2) {
            row.fail(format!("withdrawn prefixes in the evidence: {w}"));
        }
        let mut peers = strings(&w["peers"]);
        peers.sort();
        let want_peers = vec![
            format!("AS{U1_ASN} {}", s.routers.u1_peer),
            format!("AS{U2_ASN} {}", s.routers.u2_peer),
        ];
        if peers != want_peers {
            row.fail(format!(
                "peers in the evidence {peers:?}, not {want_peers:?}"
            ));
        }
        match w["first_withdrawal_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            Some(t) => {
                let after = (t.with_timezone(&Utc) - DateTime::<Utc>::from(wall_cut))
                    .num_milliseconds() as f64
                    / 1000.0;
                row.note(format!(
                    "evidence: {} prefixes {examples:?}, peers {peers:?}, first withdrawal {after:.2} s after the command",
                    w["prefixes_withdrawn"]
                ));
                // The routers' and the collector's clocks are this machine's: the
                // first withdrawal cannot precede the command (1 s for the BMP header's
                // rounding).
                if after < -1.0 {
                    row.fail(format!("first withdrawal {after:.2} s before the command"));
                }
            }
            None => row.fail(format!("no first withdrawal time in the evidence: {w}")),
        }
    }
    s.check_untouched(&mut row, &before);
    s.routers.announce(0, true);
    s.routers.announce(1, true);
    s.settle(&mut row);
    row
}

/// Scenario 2: XA's border drops traffic; BGP sessions and announcements untouched.
fn traffic_dropped(s: &mut Suite) -> Row {
    let mut row = Row::new(
        2,
        "XA drops traffic, routes kept",
        "nftables drop of XA's traffic at the border; BGP sessions (link addresses) untouched",
        "national_blackout, traffic_blocked, no withdrawal evidence",
    );
    let before = s.event_ids();
    let wall_cut = SystemTime::now();
    let t_cut = Instant::now();
    s.w.cut_country("XA");
    if let Some(e) = s.detect(
        &mut row,
        &before,
        t_cut,
        wall_cut,
        "national_blackout",
        None,
    ) {
        expect_mechanism(&mut row, &e, "traffic_blocked");
        if !withdrawals(&e).is_null() {
            row.fail(format!(
                "withdrawal evidence while the routes stayed: {}",
                withdrawals(&e)
            ));
        }
        let m = s.metrics();
        if Suite::bgp_value(&m, "XA") != Some(1.0) {
            row.fail(format!(
                "XA's BGP value {:?} while its routes stayed",
                Suite::bgp_value(&m, "XA")
            ));
        }
    }
    s.check_untouched(&mut row, &before);
    s.w.restore();
    s.settle(&mut row);
    row
}

/// Scenario 3: XA's smaller network (AS64512) withdraws; the larger one stays.
fn one_network_withdraws(s: &mut Suite) -> Row {
    let mut row = Row::new(
        3,
        "one of XA's networks withdraws",
        "xa2 (AS64512) stops announcing; xa1 (AS64511) untouched",
        "partial on AS64512, routes_withdrawn; nothing on AS64511; no national event",
    );
    let xa = s.w.country("XA").clone();
    let (big, small) = (xa.networks[0].clone(), xa.networks[1].clone());
    let before = s.event_ids();
    let wall_cut = SystemTime::now();
    let t_cut = Instant::now();
    s.routers.announce(1, false);
    if let Some(e) = s.detect(
        &mut row,
        &before,
        t_cut,
        wall_cut,
        "partial",
        Some(small.asn),
    ) {
        expect_mechanism(&mut row, &e, "routes_withdrawn");
        let w = withdrawals(&e);
        if strings(&w["examples"]) != vec![small.prefix.clone()] {
            row.fail(format!("withdrawn prefixes in the evidence: {w}"));
        } else {
            row.note(format!(
                "evidence: {:?} withdrawn, peers {:?}",
                strings(&w["examples"]),
                strings(&w["peers"])
            ));
        }
    }
    for e in s.new_events(&before) {
        if e.asn == Some(big.asn) || e.kind == "national_blackout" {
            row.fail(format!(
                "event {} on {} (mechanism {:?}): only AS{} withdrew",
                e.kind,
                e.raw["entity"],
                mechanism(&e),
                small.asn
            ));
        } else if e.asn.is_none() && e.country.as_deref() == Some("XA") {
            row.note(format!(
                "XA's own event: {} {:?} (a quarter of its space withdrawn)",
                e.kind,
                mechanism(&e)
            ));
        }
    }
    s.check_untouched(&mut row, &before);
    s.routers.announce(1, true);
    s.settle(&mut row);
    row
}

/// Scenario 4: the route collector resets its session with u1 (a peer flaps).
fn peer_flaps(s: &mut Suite) -> Row {
    let mut row = Row::new(
        4,
        "one BGP peer's session flaps",
        "rc resets its session with u1 (clear bgp); u2 keeps every route",
        "no event",
    );
    // The scenario before ends when its events close, a bin after its restore; the
    // restored network's connects started meanwhile can still complete late (SYNs
    // retransmitted as its routes come back) and read as latency in the next bins (seen
    // once in CI: a one-bin throttling event on AS64512 beside the flap). The flap is
    // measured alone: three quiet rounds first.
    std::thread::sleep(s.round * 3 + Duration::from_secs(s.w.timing.grace_secs()));
    let before = s.event_ids();
    let downs = |m: &Metrics| {
        m.get(
            names::BGP_ROUTE_EVENTS_TOTAL,
            &[("source", "bmp"), ("kind", "peer_down")],
        )
        .unwrap_or(0.0)
    };
    let downs0 = downs(&s.metrics());
    let t0 = Instant::now();
    let rc_dir = s.routers.dir_of(&s.routers.rc.name);
    frr::vtysh(&rc_dir, &[&format!("clear bgp {}", s.routers.u1_peer)]);
    // The flap as the collector saw it: a BMP Peer Down, then both peers healthy again.
    let mut seen_down = None;
    let mut back = None;
    while t0.elapsed() < s.round * 20 {
        let m = s.metrics();
        if seen_down.is_none() && downs(&m) > downs0 {
            seen_down = Some(t0.elapsed());
        }
        let healthy = m.get(names::BGP_PEERS, &[("source", "bmp"), ("state", "healthy")]);
        if seen_down.is_some() && healthy == Some(2.0) {
            back = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(POLL);
    }
    match (seen_down, back) {
        (Some(d), Some(b)) => row.note(format!(
            "BMP Peer Down seen {:.1} s after the reset, both peers healthy again after {:.1} s",
            d.as_secs_f64(),
            b.as_secs_f64()
        )),
        _ => row.fail(format!(
            "the flap was not seen as it should: peer down at {seen_down:?}, both healthy at {back:?}"
        )),
    }
    // Long enough for a bin holding the flap to close and a BGP drop to be confirmed.
    std::thread::sleep(s.round * 3 + Duration::from_secs(s.w.timing.grace_secs()));
    let new = s.new_events(&before);
    if new.is_empty() {
        row.kind = Some("none".into());
    } else {
        row.kind = Some(new[0].kind.clone());
        row.mechanism = mechanism(&new[0]);
        row.fail(format!(
            "a flap opened events: {:?}",
            new.iter()
                .map(|e| (e.raw["entity"].to_string(), e.kind.clone(), mechanism(e)))
                .collect::<Vec<_>>()
        ));
    }
    row
}

#[test]
fn bgp_and_probes_name_the_mechanism() {
    if let Some(reason) = world::skip_reason() {
        eprintln!("SKIPPED bgp_and_probes_name_the_mechanism (simulated Internet): {reason}");
        return;
    }
    if !frr::available("bgp_and_probes_name_the_mechanism", true) {
        return;
    }
    let t_suite = Instant::now();
    let timing = world::Timing::default();
    let round = Duration::from_secs(timing.round_secs);
    let mut w = World::new(timing);
    let routers = start_routers(&mut w);
    let xa_prefixes: Vec<String> = w
        .country("XA")
        .networks
        .iter()
        .map(|n| n.prefix.clone())
        .collect();
    let xa_refs: Vec<&str> = xa_prefixes.iter().map(String::as_str).collect();
    wait_kernel_routes(&mut w, &xa_refs, true, Duration::from_secs(60));
    let t_routes = t_suite.elapsed();
    w.start_servers();
    w.wait_servers(Duration::from_secs(30));
    let agents = w.agents_at(&["v1", "v2"]);
    // The detector confirms a BGP drop after a bin (not the default minute).
    let bgp = format!(
        "bgp_confirm_secs = {}\n\n[bgp]\nbmp_listen = \"{COLLECTOR_ADDR}:{BMP_PORT}\"\n\
         full_table_min_prefixes = {FULL_TABLE_MIN_PREFIXES}\npeer_silence_secs = 0\n",
        round.as_secs()
    );
    w.start_collector_with(&agents, &bgp);
    w.start_agents(&agents);

    // Warm-up: both BMP peers healthy, XA fully visible, a verdict on every signal of
    // every country, both agents healthy.
    let t0 = Instant::now();
    let warm = loop {
        let m = w.metrics();
        let ok = m.get(names::BGP_PEERS, &[("source", "bmp"), ("state", "healthy")]) == Some(2.0)
            && ["XA", "XB", "XC"].iter().all(|c| {
                m.get(names::COUNTRY_STATUS, &[("country", c)]) == Some(0.0)
                    && ["icmp", "tcp", "dns", "http", "bgp"].iter().all(|sig| {
                        m.get(
                            names::COUNTRY_SIGNAL_STATUS,
                            &[("country", c), ("signal", sig)],
                        ) == Some(0.0)
                    })
            })
            && Suite::bgp_value(&m, "XA") == Some(1.0)
            && ["v1", "v2"]
                .iter()
                .all(|a| m.get(names::AGENT_HEALTHY, &[("agent", a)]) == Some(1.0));
        if ok {
            break t0.elapsed();
        }
        if let Err(e) = w.check_alive() {
            panic!("{e}");
        }
        if t0.elapsed() > round * 30 {
            panic!(
                "never warmed up: {:?}\ncollector log:\n{}\nrc log:\n{}",
                m.0.iter()
                    .filter(|s| s.name.starts_with("blackout_bgp")
                        || s.name == names::COUNTRY_SIGNAL_STATUS
                        || s.name == names::AGENT_HEALTHY)
                    .map(|s| format!("{}{:?}={}", s.name, s.labels, s.value))
                    .collect::<Vec<_>>(),
                w.log_tail("collector", 20),
                w.log_tail("bgpd-rc", 20)
            );
        }
        std::thread::sleep(POLL);
    };
    assert!(
        w.events().is_some_and(|e| e.is_empty()),
        "no event before the scenarios"
    );
    eprintln!(
        "XA's routes in the router's kernel {:.1} s after start; world warm {:.1} s later",
        t_routes.as_secs_f64(),
        warm.as_secs_f64()
    );

    let mut s = Suite {
        w,
        routers,
        round,
        rows: Vec::new(),
    };
    for scenario in [
        country_withdraws as fn(&mut Suite) -> Row,
        traffic_dropped,
        one_network_withdraws,
        peer_flaps,
    ] {
        let mut r = scenario(&mut s);
        if let Err(e) = s.w.check_alive() {
            r.fail(format!("a process died: {e}"));
        }
        s.rows.push(r);
    }

    println!(
        "\nBGP mechanism scenarios (bins and rounds {} s, probe timeout {} ms, BGP confirm {} s), suite {:.0} s",
        round.as_secs(),
        s.w.timing.timeout_ms,
        round.as_secs(),
        t_suite.elapsed().as_secs_f64()
    );
    println!(
        "| # | scenario | ground truth | expected | event kind | mechanism found | detection delay | result |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &s.rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.name,
            r.truth,
            r.expected,
            r.kind.as_deref().unwrap_or("-"),
            r.mechanism.as_deref().unwrap_or("-"),
            r.detect
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            if r.errors.is_empty() { "ok" } else { "FAILED" }
        );
    }
    for r in &s.rows {
        for n in &r.notes {
            println!("  {}: {n}", r.n);
        }
    }
    let failures: Vec<String> = s
        .rows
        .iter()
        .flat_map(|r| {
            r.errors
                .iter()
                .map(move |e| format!("{} {}: {e}", r.n, r.name))
        })
        .collect();
    if !failures.is_empty() {
        for name in ["collector", "bgpd-rc", "bgpd-u1", "agent-v1"] {
            eprintln!("--- {name} log tail:\n{}", s.w.log_tail(name, 15));
        }
        panic!("wrong verdicts:\n{}", failures.join("\n"));
    }
}
