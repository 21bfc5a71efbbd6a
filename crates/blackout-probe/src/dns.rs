//! DNS probes: a query we build and send ourselves (UDP, TCP when truncated) to a given
//! server, or a lookup through the agent's own resolver.
//!
//! Sending the query ourselves, rather than through a resolver, keeps the measurement
//! honest: no cache, no retries to other servers, one question to one server, and the
//! rcode as the server gave it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_resolver::TokioResolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::OnceCell;
use tokio::time::timeout_at;

use super::address::AddressPolicy;
use super::classify::{hickory_failure, io_failure, rcode_failure};
use super::{Outcome, ProbeError, Prober};
use blackout_model::catalog::{DnsServer, Target, TargetKind};
use blackout_model::observation::{Failure, Phase, Signal};

/// EDNS payload size we advertise: the DNS flag day 2020 value, small enough to avoid
/// fragmentation on any path.
const EDNS_PAYLOAD: u16 = 1232;

/// One question: name and type, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: RecordType,
}

impl Question {
    pub fn parse(qname: &str, qtype: &str) -> Result<Question, String> {
        let name = Name::from_ascii(qname).map_err(|e| format!("bad query name {qname:?}: {e}"))?;
        let qtype = RecordType::from_str(&qtype.to_ascii_uppercase())
            .map_err(|_| format!("bad query type {qtype:?}"))?;
        Ok(Question { name, qtype })
    }
}

/// Probes DNS servers.
pub struct DnsProber {
    timeout: Duration,
    policy: Arc<AddressPolicy>,
    system: OnceCell<Result<TokioResolver, String>>,
}

impl std::fmt::Debug for DnsProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsProber")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The result of one exchange before it is judged: the response, and how long it took.
enum Exchange {
    Answer(Message),
    Failed(Failure),
}

impl DnsProber {
    pub fn new(timeout: Duration) -> Self {
        DnsProber {
            timeout,
            policy: Arc::default(),
            system: OnceCell::new(),
        }
    }

    /// Asks only the servers `policy` allows. The agent's own resolver (`system`) is
    /// the operator's choice, not the catalog's, and is not checked.
    pub fn with_policy(self, policy: Arc<AddressPolicy>) -> Self {
        DnsProber { policy, ..self }
    }

    /// Asks `server` one question; UDP first, TCP when the answer is truncated.
    pub async fn query(&self, server: SocketAddr, q: &Question) -> Outcome {
        if let Err(r) = self.policy.check_ip(server.ip()) {
            return Outcome::failed(Phase::DnsRoundTrip, r.failure());
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut msg = Message::query();
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(q.name.clone(), q.qtype));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        msg.set_edns(edns);
        let Ok(wire) = msg.to_vec() else {
            return Outcome::failed(Phase::DnsRoundTrip, Failure::Unknown);
        };
        let start = Instant::now();
        let udp = match udp_exchange(server, &wire, &msg, deadline).await {
            Exchange::Failed(f) => return Outcome::failed(Phase::DnsRoundTrip, f),
            Exchange::Answer(m) => m,
        };
        let response = if udp.metadata.truncation {
            match tcp_exchange(server, &wire, &msg, deadline).await {
                Exchange::Failed(f) => return Outcome::failed(Phase::DnsRoundTrip, f),
                Exchange::Answer(m) => m,
            }
        } else {
            udp
        };
        judge(&response, q, start.elapsed())
    }

    /// Looks the question up through the system's resolver (`/etc/resolv.conf`).
    pub async fn lookup_system(&self, q: &Question) -> Result<Outcome, ProbeError> {
        let timeout = self.timeout;
        let resolver = self
            .system
            .get_or_init(|| async move { system_resolver(timeout) })
            .await;
        let resolver = match resolver {
            Ok(r) => r,
            Err(reason) => {
                return Err(ProbeError::Setup {
                    signal: Signal::Dns,
                    reason: format!("system resolver: {reason}"),
                });
            }
        };
        let start = Instant::now();
        let res =
            tokio::time::timeout(self.timeout, resolver.lookup(q.name.clone(), q.qtype)).await;
        Ok(match res {
            Err(_) => Outcome::failed(Phase::Resolve, Failure::Timeout),
            Ok(Ok(lookup)) if lookup.answers().is_empty() => {
                Outcome::failed(Phase::Resolve, Failure::DnsNoAnswer)
            }
            Ok(Ok(_)) => Outcome::ok(start.elapsed()),
            Ok(Err(e)) => Outcome::failed(Phase::Resolve, hickory_failure(&e)),
        })
    }
}

/// Judges a response that matched our query: rcode first, then the answer section.
fn judge(resp: &Message, q: &Question, rtt: Duration) -> Outcome {
    let rcode = resp.metadata.response_code;
    if rcode != ResponseCode::NoError {
        return Outcome::failed(Phase::DnsRoundTrip, rcode_failure(rcode));
    }
    let answered = resp
        .answers
        .iter()
        .any(|r| r.record_type() == q.qtype || r.record_type() == RecordType::CNAME);
    if answered {
        Outcome::ok(rtt)
    } else {
        Outcome::failed(Phase::DnsRoundTrip, Failure::DnsNoAnswer)
    }
}

/// Checks that `resp` answers `query`: same id, a response, the same question.
/// `None` means "not ours" (keep waiting on UDP); `Some(false)` means ours but malformed.
fn matches(resp: &Message, query: &Message) -> Option<bool> {
    if resp.metadata.id != query.metadata.id || resp.metadata.message_type != MessageType::Response
    {
        return None;
    }
    let same_question = resp.queries.len() == 1
        && resp.queries[0].name() == query.queries[0].name()
        && resp.queries[0].query_type() == query.queries[0].query_type()
        && resp.queries[0].query_class() == query.queries[0].query_class();
    // Servers may omit the question in some error answers (e.g. FORMERR, REFUSED).
    Some(
        same_question
            || (resp.queries.is_empty() && resp.metadata.response_code != ResponseCode::NoError),
    )
}

async fn udp_exchange(
    server: SocketAddr,
    wire: &[u8],
    query: &Message,
    deadline: tokio::time::Instant,
) -> Exchange {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => return Exchange::Failed(io_failure(&e)),
    };
    // A connected socket sees ICMP port unreachable as ECONNREFUSED, and drops datagrams
    // from anyone but the server.
    if let Err(e) = sock.connect(server).await {
        return Exchange::Failed(io_failure(&e));
    }
    if let Err(e) = sock.send(wire).await {
        return Exchange::Failed(io_failure(&e));
    }
    let mut buf = vec![0u8; 65535];
    loop {
        let n = match timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Exchange::Failed(Failure::Timeout),
            Ok(Err(e)) => return Exchange::Failed(io_failure(&e)),
            Ok(Ok(n)) => n,
        };
        let Ok(resp) = Message::from_vec(&buf[..n]) else {
            return Exchange::Failed(Failure::DnsBadResponse);
        };
        match matches(&resp, query) {
            // A stray or spoofed datagram with another id: keep waiting for ours.
            None => continue,
            Some(false) => return Exchange::Failed(Failure::DnsBadResponse),
            Some(true) => return Exchange::Answer(resp),
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    wire: &[u8],
    query: &Message,
    deadline: tokio::time::Instant,
) -> Exchange {
    let mut stream = match timeout_at(deadline, TcpStream::connect(server)).await {
        Err(_) => return Exchange::Failed(Failure::Timeout),
        Ok(Err(e)) => return Exchange::Failed(io_failure(&e)),
        Ok(Ok(s)) => s,
    };
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&(wire.len() as u16).to_be_bytes());
    framed.extend_from_slice(wire);
    let io = async {
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match timeout_at(deadline, io).await {
        Err(_) => return Exchange::Failed(Failure::Timeout),
        Ok(Err(e)) => return Exchange::Failed(io_failure(&e)),
        Ok(Ok(b)) => b,
    };
    let Ok(resp) = Message::from_vec(&buf) else {
        return Exchange::Failed(Failure::DnsBadResponse);
    };
    match matches(&resp, query) {
        Some(true) => Exchange::Answer(resp),
        // On TCP the stream is ours alone: anything else is a broken server.
        _ => Exchange::Failed(Failure::DnsBadResponse),
    }
}

impl Prober for DnsProber {
    fn signal(&self) -> Signal {
        Signal::Dns
    }

    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>> {
        Box::pin(async move {
            let TargetKind::Dns {
                server,
                qname,
                qtype,
            } = &target.kind
            else {
                return Err(ProbeError::WrongKind {
                    id: target.id.clone(),
                    expected: Signal::Dns,
                });
            };
            let q = Question::parse(qname, qtype).map_err(|reason| ProbeError::BadTarget {
                id: target.id.clone(),
                reason,
            })?;
            match server {
                DnsServer::Addr(addr) => Ok(self.query(*addr, &q).await),
                DnsServer::System => self.lookup_system(&q).await,
            }
        })
    }
}

/// The system's resolver (`/etc/resolv.conf`) as a probe needs it: no cache (a cached
/// answer says nothing about whether resolution works now, nor how long it takes), one
/// attempt within the probe's timeout.
pub(super) fn system_resolver(timeout: std::time::Duration) -> Result<TokioResolver, String> {
    let mut b = TokioResolver::builder_tokio().map_err(|e| e.to_string())?;
    let o = b.options_mut();
    o.cache_size = 0;
    o.timeout = timeout;
    o.attempts = 1;
    b.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Message {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("kz.").unwrap(),
            RecordType::SOA,
        ));
        m
    }

    #[test]
    fn response_matching() {
        let q = query();
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.add_query(Query::query(
            Name::from_ascii("KZ.").unwrap(),
            RecordType::SOA,
        ));
        assert_eq!(
            matches(&r, &q),
            Some(true),
            "0x20 case differences are fine"
        );
        let mut other_id = r.clone();
        other_id.metadata.id = q.metadata.id.wrapping_add(1);
        assert_eq!(matches(&other_id, &q), None);
        let mut other_q = Message::response(q.metadata.id, q.metadata.op_code);
        other_q.add_query(Query::query(
            Name::from_ascii("ru.").unwrap(),
            RecordType::SOA,
        ));
        assert_eq!(matches(&other_q, &q), Some(false));
        let mut not_response = r.clone();
        not_response.metadata.message_type = MessageType::Query;
        assert_eq!(matches(&not_response, &q), None);
    }

    #[test]
    fn judge_table() {
        let q = Question::parse("kz.", "soa").unwrap();
        let cases = [
            (ResponseCode::NXDomain, Some(Failure::DnsNxdomain)),
            (ResponseCode::ServFail, Some(Failure::DnsServfail)),
            (ResponseCode::Refused, Some(Failure::DnsRefused)),
            (ResponseCode::NoError, Some(Failure::DnsNoAnswer)),
        ];
        for (rcode, want) in cases {
            let r = Message::error_msg(1, hickory_proto::op::OpCode::Query, rcode);
            assert_eq!(judge(&r, &q, Duration::ZERO).failure, want, "{rcode:?}");
        }
    }
}
