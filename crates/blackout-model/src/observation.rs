//! The record that travels from agent to collector, and its closed vocabularies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of measurement produced an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Icmp,
    Dns,
    Http,
    Tcp,
    /// Visible share of the entity's address space in BGP, from the collector's route
    /// sources (BMP, RIS Live, MRT): never measured by an agent, so never in a batch.
    Bgp,
}

impl Signal {
    /// Every signal the detector knows.
    pub const ALL: [Signal; 5] = [
        Signal::Icmp,
        Signal::Dns,
        Signal::Http,
        Signal::Tcp,
        Signal::Bgp,
    ];

    /// The signals agents probe, in the order of their compact wire codes and of the
    /// agent's per-signal tables: append only, a new code would be an old agent's error.
    pub const PROBED: [Signal; 4] = [Signal::Icmp, Signal::Dns, Signal::Http, Signal::Tcp];

    /// Whether agents measure it (false: the collector derives it from its own sources).
    pub fn is_probed(self) -> bool {
        self != Signal::Bgp
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Icmp => "icmp",
            Signal::Dns => "dns",
            Signal::Http => "http",
            Signal::Tcp => "tcp",
            Signal::Bgp => "bgp",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "icmp" => Ok(Signal::Icmp),
            "dns" => Ok(Signal::Dns),
            "http" => Ok(Signal::Http),
            "tcp" => Ok(Signal::Tcp),
            "bgp" => Ok(Signal::Bgp),
            other => Err(format!(
                "unknown signal {other:?} (expected icmp, dns, http, tcp or bgp)"
            )),
        }
    }
}

/// The operation that failed, in OONI's spirit: a failure is only meaningful with the
/// step it happened in (a timeout while resolving is not a timeout while connecting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Resolve,
    Connect,
    TlsHandshake,
    HttpRoundTrip,
    DnsRoundTrip,
    IcmpEcho,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Resolve,
        Phase::Connect,
        Phase::TlsHandshake,
        Phase::HttpRoundTrip,
        Phase::DnsRoundTrip,
        Phase::IcmpEcho,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::TlsHandshake => "tls_handshake",
            Phase::HttpRoundTrip => "http_round_trip",
            Phase::DnsRoundTrip => "dns_round_trip",
            Phase::IcmpEcho => "icmp_echo",
        }
    }
}

/// Closed failure vocabulary shared by every probe. Anything that cannot be mapped is
/// `Unknown`; error text never leaves the agent (it may carry addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// No answer within the probe's deadline.
    Timeout,
    /// TCP RST in answer to SYN, or ICMP port unreachable.
    Refused,
    /// An established connection was reset.
    Reset,
    /// Host/network unreachable (ICMP error or local routing), including blackhole routes.
    Unreachable,
    /// The peer closed the connection before a complete answer.
    Eof,
    DnsNxdomain,
    DnsServfail,
    DnsRefused,
    /// NOERROR but no record of the asked type, or an answer that fails the check.
    DnsNoAnswer,
    /// Malformed or mismatched DNS response.
    DnsBadResponse,
    TlsError,
    /// An HTTP response whose status is not one of the expected ones.
    HttpStatus,
    HttpTooManyRedirects,
    HttpProtocolError,
    /// Refused by the agent, never contacted: the address is private, reserved or bogon
    /// space (a name or a redirect that leads there, e.g. an injected DNS answer).
    ReservedAddress,
    /// Refused by the agent, never contacted: the address is in the operator's opt-out.
    OptedOutAddress,
    Unknown,
}

impl Failure {
    pub const ALL: [Failure; 17] = [
        Failure::Timeout,
        Failure::Refused,
        Failure::Reset,
        Failure::Unreachable,
        Failure::Eof,
        Failure::DnsNxdomain,
        Failure::DnsServfail,
        Failure::DnsRefused,
        Failure::DnsNoAnswer,
        Failure::DnsBadResponse,
        Failure::TlsError,
        Failure::HttpStatus,
        Failure::HttpTooManyRedirects,
        Failure::HttpProtocolError,
        Failure::ReservedAddress,
        Failure::OptedOutAddress,
        Failure::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::Unreachable => "unreachable",
            Failure::Eof => "eof",
            Failure::DnsNxdomain => "dns_nxdomain",
            Failure::DnsServfail => "dns_servfail",
            Failure::DnsRefused => "dns_refused",
            Failure::DnsNoAnswer => "dns_no_answer",
            Failure::DnsBadResponse => "dns_bad_response",
            Failure::TlsError => "tls_error",
            Failure::HttpStatus => "http_status",
            Failure::HttpTooManyRedirects => "http_too_many_redirects",
            Failure::HttpProtocolError => "http_protocol_error",
            Failure::ReservedAddress => "reserved_address",
            Failure::OptedOutAddress => "opted_out_address",
            Failure::Unknown => "unknown",
        }
    }
}

/// Verdict of adaptive block probing (Trinocular-style belief).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockVerdict {
    Up,
    Down,
    Uncertain,
}

/// What an ICMP block probe learned about its /24 (or IPv6 block) this round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockReport {
    /// Posterior belief that the block is up, in [0, 1].
    pub belief: f64,
    pub verdict: BlockVerdict,
    /// Echo requests sent to the block this round.
    pub probes: u32,
    /// Echo replies received this round.
    pub replies: u32,
}

/// How long each phase of an HTTP(S) probe took, in milliseconds: durations, not offsets
/// from the start, summed over redirect hops (a phase absent from every hop is absent here).
/// `resolve` is absent when the address was pinned or the URL names an IP, `tls` on plain
/// HTTP; `first_byte` runs from sending the request to receiving the response head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTimingsMs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<f64>,
}

impl HttpTimingsMs {
    /// The phase names, a closed set: labels of `blackout_http_phase_median_seconds`.
    pub const PHASES: [&'static str; 4] = ["resolve", "connect", "tls", "first_byte"];

    /// The values in the order of [`HttpTimingsMs::PHASES`].
    pub fn values(&self) -> [Option<f64>; 4] {
        [self.resolve, self.connect, self.tls, self.first_byte]
    }
}

/// One measurement of one target by one agent.
///
/// `ok == true` carries no `phase`/`failure`; `ok == false` carries both.
/// `measured_at` is when the probe ran (a multi-echo block probe that ends up: when it ended), not
/// when it was uploaded: late uploads land in their own time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    pub agent: String,
    pub target: String,
    pub country: String,
    pub asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub signal: Signal,
    /// Control targets lie outside the watched countries and tell whether the vantage
    /// point itself is connected.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control: bool,
    pub measured_at: DateTime<Utc>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockReport>,
    /// HTTP(S) only: the phases' durations. Absent in records of older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings_ms: Option<HttpTimingsMs>,
}

/// The unit of upload: one agent's observations, with an id so a re-sent batch is
/// recognised and counted once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub batch_id: String,
    pub agent: String,
    pub observations: Vec<Observation>,
    /// The sending agent's spool as the batch left it (absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolStatus>,
}

/// What an agent's spool held when it sent a batch. A backlog that grows is an agent
/// that cannot reach the collector; dropped observations are data lost to a full spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolStatus {
    /// Observations waiting to be uploaded to this collector, the sent batch included.
    pub observations: u64,
    /// Observations dropped because the spool was full, since the agent started.
    pub dropped_observations: u64,
    /// Catalogs from the collector the agent refused as over a limit (`max_catalog_bytes`,
    /// `max_targets`), since it started. Sent only when not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub catalog_refusals: u64,
    /// Block probes skipped because the block's politeness budget was spent (its
    /// adaptive follow-ups used it), since the agent started. Sent only when not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub politeness_skips: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a record is not a valid observation. Names the field, so that an operator can
/// find the bad record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObservationError {
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
}

/// Upper bound on a plausible round-trip time: anything larger is a broken clock or a
/// forged record, not a measurement.
pub const MAX_RTT_MS: f64 = 120_000.0;

impl Observation {
    /// Checks the invariants serde cannot express.
    pub fn validate(&self) -> Result<(), ObservationError> {
        let field = |field: &'static str, reason: String| ObservationError::Field { field, reason };
        if self.agent.is_empty() || self.agent.len() > 128 {
            return Err(field("agent", "must be 1 to 128 characters".into()));
        }
        if self.target.is_empty() || self.target.len() > 512 {
            return Err(field("target", "must be 1 to 512 characters".into()));
        }
        if !is_country_code(&self.country) {
            return Err(field(
                "country",
                format!(
                    "{:?} is not an ISO 3166 alpha-2 code in upper case",
                    self.country
                ),
            ));
        }
        if !self.signal.is_probed() {
            return Err(field(
                "signal",
                format!(
                    "{} is derived by the collector from its route sources, never sent by an agent",
                    self.signal
                ),
            ));
        }
        if self.ok && (self.phase.is_some() || self.failure.is_some()) {
            return Err(field("failure", "must be absent when ok is true".into()));
        }
        if !self.ok && (self.phase.is_none() || self.failure.is_none()) {
            return Err(field(
                "failure",
                "phase and failure are required when ok is false".into(),
            ));
        }
        if let Some(rtt) = self.rtt_ms
            && (!rtt.is_finite() || !(0.0..=MAX_RTT_MS).contains(&rtt))
        {
            return Err(field(
                "rtt_ms",
                format!("{rtt} is outside 0..={MAX_RTT_MS}"),
            ));
        }
        if let Some(t) = &self.timings_ms
            && t.values()
                .iter()
                .flatten()
                .any(|v| !v.is_finite() || !(0.0..=MAX_RTT_MS).contains(v))
        {
            return Err(field(
                "timings_ms",
                format!("every phase must be in 0..={MAX_RTT_MS}"),
            ));
        }
        if let Some(b) = &self.block
            && (!b.belief.is_finite() || !(0.0..=1.0).contains(&b.belief) || b.replies > b.probes)
        {
            return Err(field(
                "block",
                "belief must be in [0, 1] and replies <= probes".into(),
            ));
        }
        Ok(())
    }

    /// The packets this observation sent that could be answered, and how many were:
    /// `(sent, answered)`, the sample of packet loss. None when it says nothing about loss.
    ///
    /// - An ICMP block report: its echoes and replies (the adaptive follow-ups of a lost
    ///   echo are the sample; a block answering its first echo is one of one).
    /// - Anything else: its first exchange (echo, TCP connect, DNS query). Answered when it
    ///   succeeded or failed after that exchange (a refused connect, a TLS or HTTP error,
    ///   an NXDOMAIN all got an answer); lost when it timed out there. An unreachable
    ///   network, a failed resolution or a probe the agent refused to send is not loss.
    pub fn loss_sample(&self) -> Option<(u32, u32)> {
        if let Some(b) = &self.block {
            return Some((b.probes, b.replies.min(b.probes)));
        }
        if self.ok {
            return Some((1, 1));
        }
        let first_exchange = matches!(
            self.phase,
            Some(Phase::IcmpEcho | Phase::Connect | Phase::DnsRoundTrip)
        );
        match (self.phase, self.failure) {
            (Some(_), Some(Failure::Timeout)) if first_exchange => Some((1, 0)),
            (Some(Phase::TlsHandshake | Phase::HttpRoundTrip), Some(_)) => Some((1, 1)),
            (
                Some(Phase::Connect | Phase::DnsRoundTrip),
                Some(
                    Failure::Refused
                    | Failure::Reset
                    | Failure::Eof
                    | Failure::DnsNxdomain
                    | Failure::DnsServfail
                    | Failure::DnsRefused
                    | Failure::DnsNoAnswer
                    | Failure::DnsBadResponse,
                ),
            ) => Some((1, 1)),
            _ => None,
        }
    }
}

/// Two upper-case ASCII letters.
pub fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs() -> Observation {
        Observation {
            agent: "a1".into(),
            target: "icmp:192.0.2.0/24".into(),
            country: "KZ".into(),
            asn: 9198,
            region: None,
            signal: Signal::Icmp,
            control: false,
            measured_at: "2022-01-05T10:30:00Z".parse().unwrap(),
            ok: true,
            phase: None,
            failure: None,
            rtt_ms: Some(12.5),
            block: None,
            timings_ms: None,
        }
    }

    #[test]
    fn loss_samples_count_what_could_be_answered() {
        let fail = |phase, failure| Observation {
            ok: false,
            rtt_ms: None,
            phase: Some(phase),
            failure: Some(failure),
            ..obs()
        };
        assert_eq!(obs().loss_sample(), Some((1, 1)));
        assert_eq!(
            fail(Phase::Connect, Failure::Timeout).loss_sample(),
            Some((1, 0))
        );
        assert_eq!(
            fail(Phase::IcmpEcho, Failure::Timeout).loss_sample(),
            Some((1, 0))
        );
        assert_eq!(
            fail(Phase::DnsRoundTrip, Failure::Timeout).loss_sample(),
            Some((1, 0))
        );
        // The SYN was answered (RST), the connect was (TLS failed), the query was.
        assert_eq!(
            fail(Phase::Connect, Failure::Refused).loss_sample(),
            Some((1, 1))
        );
        assert_eq!(
            fail(Phase::TlsHandshake, Failure::Timeout).loss_sample(),
            Some((1, 1))
        );
        assert_eq!(
            fail(Phase::DnsRoundTrip, Failure::DnsNxdomain).loss_sample(),
            Some((1, 1))
        );
        // No packet went, or a router answered for the network: not loss.
        assert_eq!(fail(Phase::Resolve, Failure::Timeout).loss_sample(), None);
        assert_eq!(
            fail(Phase::Connect, Failure::Unreachable).loss_sample(),
            None
        );
        assert_eq!(
            fail(Phase::Connect, Failure::ReservedAddress).loss_sample(),
            None
        );
        // A block round: three echoes, one reply (two lost before the verdict settled).
        let mut b = fail(Phase::IcmpEcho, Failure::Timeout);
        b.block = Some(BlockReport {
            belief: 0.95,
            verdict: BlockVerdict::Up,
            probes: 3,
            replies: 1,
        });
        assert_eq!(b.loss_sample(), Some((3, 1)));
    }

    #[test]
    fn json_round_trip_uses_closed_names() {
        let mut o = obs();
        o.ok = false;
        o.rtt_ms = None;
        o.phase = Some(Phase::TlsHandshake);
        o.failure = Some(Failure::DnsNxdomain);
        let s = serde_json::to_string(&o).unwrap();
        assert!(s.contains(r#""phase":"tls_handshake""#), "{s}");
        assert!(s.contains(r#""failure":"dns_nxdomain""#), "{s}");
        assert_eq!(serde_json::from_str::<Observation>(&s).unwrap(), o);
    }

    #[test]
    fn vocabulary_names_match_serde() {
        for f in Failure::ALL {
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.as_str())
            );
        }
        for p in Phase::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        for s in Signal::ALL {
            assert_eq!(s.as_str().parse::<Signal>().unwrap(), s);
        }
    }

    #[test]
    fn timings_are_optional_and_only_present_phases_travel() {
        // A record of an agent that predates timings is still valid.
        let old = serde_json::to_string(&obs()).unwrap();
        assert!(!old.contains("timings_ms"), "{old}");
        let mut o = obs();
        o.signal = Signal::Http;
        o.timings_ms = Some(HttpTimingsMs {
            connect: Some(0.25),
            first_byte: Some(3.5),
            ..HttpTimingsMs::default()
        });
        let s = serde_json::to_string(&o).unwrap();
        assert!(
            s.contains(r#""timings_ms":{"connect":0.25,"first_byte":3.5}"#),
            "{s}"
        );
        assert_eq!(serde_json::from_str::<Observation>(&s).unwrap(), o);
        assert!(o.validate().is_ok());
        let mut v = serde_json::to_value(&o).unwrap();
        v["timings_ms"]["dns"] = 1.0.into();
        assert!(serde_json::from_value::<Observation>(v).is_err());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let mut v = serde_json::to_value(obs()).unwrap();
        v["colour"] = "red".into();
        let e = serde_json::from_value::<Observation>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn validate_names_the_field() {
        type Mutation = fn(&mut Observation);
        let cases: Vec<(Mutation, &str)> = vec![
            (|o| o.country = "kz".into(), "country"),
            (|o| o.rtt_ms = Some(-1.0), "rtt_ms"),
            (|o| o.rtt_ms = Some(1e9), "rtt_ms"),
            (|o| o.failure = Some(Failure::Timeout), "failure"),
            (|o| o.ok = false, "failure"),
            (|o| o.agent = String::new(), "agent"),
            (|o| o.signal = Signal::Bgp, "signal"),
            (
                |o| {
                    o.timings_ms = Some(HttpTimingsMs {
                        tls: Some(-0.5),
                        ..HttpTimingsMs::default()
                    })
                },
                "timings_ms",
            ),
            (
                |o| {
                    o.timings_ms = Some(HttpTimingsMs {
                        first_byte: Some(f64::NAN),
                        ..HttpTimingsMs::default()
                    })
                },
                "timings_ms",
            ),
        ];
        for (mutate, name) in cases {
            let mut o = obs();
            mutate(&mut o);
            let e = o.validate().unwrap_err().to_string();
            assert!(e.starts_with(&format!("field `{name}`")), "{e}");
        }
        assert!(obs().validate().is_ok());
    }
}
