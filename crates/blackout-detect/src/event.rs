//! Outage events: what the engine reports and keeps across restarts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::entity::EntityKey;
use super::series::State;
use blackout_model::bgp::BgpWithdrawals;
use blackout_model::observation::Signal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Most signals and most networks of a country are down.
    NationalBlackout,
    /// Some networks or regions of a country are down (or a country-level drop that is not
    /// national).
    Partial,
    /// Reachability kept, but RTT or loss far above the baseline.
    Throttling,
    /// DNS or HTTP fail while ICMP and TCP reachability are normal.
    ServiceBlocking,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NationalBlackout => "national_blackout",
            EventKind::Partial => "partial",
            EventKind::Throttling => "throttling",
            EventKind::ServiceBlocking => "service_blocking",
        }
    }

    /// Kinds of one family replace each other in an open event (partial becomes national);
    /// a change of family closes the event and opens another.
    pub(crate) fn family(self) -> u8 {
        match self {
            EventKind::NationalBlackout | EventKind::Partial => 0,
            EventKind::Throttling => 1,
            EventKind::ServiceBlocking => 2,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a country or network was cut: what BGP and the probes saw together. A closed
/// set: a label value of `blackout_events_open` (with `unknown` for None).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// The entity's visible share in BGP fell: its routes were withdrawn (with its
    /// reachability, or before the probes could tell).
    RoutesWithdrawn,
    /// Probes fail while BGP still carries the entity's routes: traffic dropped on the way.
    TrafficBlocked,
    /// DNS or HTTP fail while ICMP and TCP reach.
    ServiceBlocking,
    /// Reachable, but slower or lossier than its baseline.
    Throttling,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] = [
        Mechanism::RoutesWithdrawn,
        Mechanism::TrafficBlocked,
        Mechanism::ServiceBlocking,
        Mechanism::Throttling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::RoutesWithdrawn => "routes_withdrawn",
            Mechanism::TrafficBlocked => "traffic_blocked",
            Mechanism::ServiceBlocking => "service_blocking",
            Mechanism::Throttling => "throttling",
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the engine believes what it says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Signals of the entity that were degraded during the event.
    pub signals: Vec<Signal>,
    /// Networks and regions (entity text form) that were degraded during the event.
    pub networks: Vec<String>,
    /// Healthy agents whose observations fed the event's bins.
    pub agents: Vec<String>,
    /// Agents excluded as unhealthy (own outage) in the event's bins.
    pub unhealthy_agents: Vec<String>,
    /// Targets down / targets with a verdict in the event's worst bin (all signals).
    pub targets_down: u32,
    pub targets_total: u32,
    /// `targets_down / targets_total`.
    pub share_of_targets: f64,
    /// Observations that arrived after their bin was closed and were placed in it.
    pub late_observations: u64,
    /// Bins evaluated while the event was open.
    pub bins: u32,
    /// Lowest visible share of the entity's space in BGP while the event was open (None
    /// without BGP data).
    #[serde(default)]
    pub bgp_lowest_share: Option<f64>,
    /// What the BGP sources reported withdrawn (prefixes, peers that saw it, the first
    /// withdrawal's time); for a country's event, its own or its networks'.
    #[serde(default)]
    pub bgp_withdrawals: Option<BgpWithdrawals>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub entity: EntityKey,
    pub kind: EventKind,
    /// Worst state reached.
    pub severity: State,
    /// Start of the first degraded bin.
    pub start: DateTime<Utc>,
    /// Start of the first recovered bin; None while open.
    pub end: Option<DateTime<Utc>>,
    /// When the engine first reported it (the `now` of that `advance`).
    pub detected_at: DateTime<Utc>,
    /// Largest drop below the baseline, `1 - value/baseline`, over the event's signals.
    pub peak_drop: f64,
    /// Largest RTT ratio to its baseline (throttling evidence), 1 when not measured.
    pub peak_rtt_ratio: f64,
    /// How the entity was cut. Reachability events: `routes_withdrawn` once BGP saw the
    /// entity's space fall, `traffic_blocked` while BGP carried its routes through the
    /// drop, None without BGP data for the entity (no source, no quorum of peers).
    #[serde(default)]
    pub mechanism: Option<Mechanism>,
    pub evidence: Evidence,
}

impl Event {
    pub fn is_open(&self) -> bool {
        self.end.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Opened,
    Updated,
    Closed,
}

/// What `advance` changed: the event as it is after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventChange {
    pub change: ChangeKind,
    pub event: Event,
}
