//! A RIPE RIS Live client: the public websocket stream of the RIS route collectors,
//! the BGP feed of a deployment without routers of its own.
//!
//! Each (RIS collector, peer) is one [`PeerKey`] (source `ris_live`, collector `rrc00`).
//! RIS peer states map to `PeerUp` ("connected") and `PeerDown` (any other state); a peer
//! first heard on a connection gets a `PeerUp` at that message, since RIS Live says
//! nothing of sessions that were up before the subscription. A websocket that closes,
//! fails or stalls is a `PeerDown` for every peer heard through it (their routes are
//! unknown until re-learned), then the client reconnects after a bounded backoff.
//!
//! RIS Live sends updates only, never a table. A peer's table comes from an MRT RIB dump
//! of its collector (RIS writes `bview` files every 8 hours): for each configured
//! `(collector, file)`, the dump is read at start and again after a connection that was
//! lost (not after a failed attempt: nothing was dropped then), and yields
//! `PeerUp`, the peer's prefixes and `EndOfRib` under the same [`PeerKey`]s as the live
//! stream, which then keeps the table current. Changes between the dump's time and the
//! connection are missed until the prefixes change again. Without a dump a RIS peer
//! never reports `EndOfRib`: the table counts it only once it has announced
//! `full_table_min_prefixes` through the stream, which ordinary churn never reaches
//! (a session restart, when the peer re-sends its table, does).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bgpkit_parser::parser::rislive::messages::{RisLiveMessage, RisMessage, RisMessageEnum};
use bgpkit_parser::{RisLiveClientMessage, RisSubscribe, RisSubscribeType};
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::event::{PeerKey, RouteEvent, SourceKind};
use crate::mrt::{MrtOrigin, send_mrt_file};

/// The public stream; `client=` names us to RIS's operators, as their manual asks.
pub const DEFAULT_URL: &str = "wss://ris-live.ripe.net/v1/ws/?client=blackout";
/// First wait before reconnecting; doubled after each failed connection.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between reconnections.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(120);
/// A RIS `ping` this often keeps a quiet (filtered) subscription alive.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Nothing received for this long (not even a pong): the connection is dead.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(90);
/// A connection that lasted this long was healthy: the next backoff starts again at the
/// minimum.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// What the client subscribes to and how it reconnects.
#[derive(Debug, Clone, PartialEq)]
pub struct RisLiveSettings {
    /// `wss://` (TLS, the platform's roots) or `ws://` (tests, a local relay).
    pub url: String,
    /// RIS collectors to hear (`rrc00`, `rrc21`); empty: all of them.
    pub hosts: Vec<String>,
    /// Only updates for these prefixes and their more-specifics; empty: all.
    pub prefixes: Vec<IpNet>,
    /// Initial tables: a RIB dump per RIS collector, read before each connection.
    pub rib_dumps: Vec<(String, PathBuf)>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub ping_interval: Duration,
    pub stall_timeout: Duration,
}

impl Default for RisLiveSettings {
    fn default() -> Self {
        RisLiveSettings {
            url: DEFAULT_URL.into(),
            hosts: Vec::new(),
            prefixes: Vec::new(),
            rib_dumps: Vec::new(),
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            ping_interval: DEFAULT_PING_INTERVAL,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RisLiveError {
    #[error("ris_live url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("ris_live TLS setup: {0}")]
    Tls(String),
}

/// Why one connection ended (logged, and the reason of the `PeerDown`s that follow).
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("connect: {0}")]
    Connect(String),
    #[error("websocket: {0}")]
    Websocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("closed by the server")]
    Closed,
    #[error("nothing received for {0:?}")]
    Stalled(Duration),
    #[error("route event receiver gone")]
    ReceiverGone,
}

/// Starts the client on the current runtime; it runs until `tx`'s receiver is dropped.
pub fn spawn_ris_live(
    settings: RisLiveSettings,
    tx: mpsc::Sender<RouteEvent>,
) -> Result<JoinHandle<()>, RisLiveError> {
    let client = RisLiveClient::new(settings)?;
    Ok(tokio::spawn(client.run(tx)))
}

/// A validated RIS Live configuration with its TLS setup.
pub struct RisLiveClient {
    settings: RisLiveSettings,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
}

#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Socket = WebSocketStream<Pin<Box<dyn Io>>>;

impl RisLiveClient {
    pub fn new(settings: RisLiveSettings) -> Result<Self, RisLiveError> {
        let url_err = |reason: &str| RisLiveError::Url {
            url: settings.url.clone(),
            reason: reason.into(),
        };
        let url = url::Url::parse(&settings.url).map_err(|e| url_err(&e.to_string()))?;
        let tls = match url.scheme() {
            "wss" => true,
            "ws" => false,
            _ => return Err(url_err("the scheme must be wss or ws")),
        };
        let host = url.host_str().ok_or_else(|| url_err("no host"))?;
        let target = Target {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port: url
                .port_or_known_default()
                .unwrap_or(if tls { 443 } else { 80 }),
        };
        let tls = if tls { Some(tls_connector()?) } else { None };
        Ok(RisLiveClient {
            settings,
            target,
            tls,
        })
    }

    /// Connects, reads, and reconnects until the receiver of `tx` is gone.
    pub async fn run(self, tx: mpsc::Sender<RouteEvent>) {
        let mut backoff = self.settings.backoff_min;
        // Peers whose routes the table holds from us: from the dumps, then the stream.
        let mut heard = BTreeSet::new();
        let mut tables_loaded = false;
        loop {
            // Read once per connection that follows a lost one: the table dropped those
            // routes with the PeerDowns. A connection that never came up loses nothing
            // (the table stops counting peers that stay silent), so retries do not re-read.
            if !tables_loaded {
                if self.load_tables(&tx, &mut heard).await.is_err() {
                    return;
                }
                tables_loaded = true;
            }
            let started = tokio::time::Instant::now();
            let end = match self.connect().await {
                Ok(mut ws) => {
                    let end = self.session(&mut ws, &tx, &mut heard).await;
                    if matches!(end, ConnectionEnd::ReceiverGone) {
                        return;
                    }
                    let reason = format!("ris live connection lost: {end}");
                    tracing::warn!(url = %self.settings.url, peers = heard.len(), error = %end, "RIS Live connection ended");
                    let now = Utc::now();
                    for peer in std::mem::take(&mut heard) {
                        let ev = RouteEvent::PeerDown {
                            peer,
                            at: now,
                            reason: reason.clone(),
                        };
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    tables_loaded = false;
                    end
                }
                Err(end) => {
                    tracing::warn!(url = %self.settings.url, error = %end, "RIS Live connection failed");
                    end
                }
            };
            if started.elapsed() >= HEALTHY_AFTER {
                backoff = self.settings.backoff_min;
            }
            tracing::info!(wait_secs = backoff.as_secs_f64(), reason = %end, "RIS Live reconnecting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.settings.backoff_max);
        }
    }

    /// The initial tables: each configured RIB dump, its peers added to `heard`.
    /// Err: the receiver is gone.
    async fn load_tables(
        &self,
        tx: &mpsc::Sender<RouteEvent>,
        heard: &mut BTreeSet<PeerKey>,
    ) -> Result<(), ()> {
        for (collector, path) in &self.settings.rib_dumps {
            let origin = MrtOrigin::new(SourceKind::RisLive, collector.clone());
            let (dump_tx, mut dump_rx) = mpsc::channel(1024);
            let reading = tokio::spawn(send_mrt_file(path.clone(), origin, dump_tx));
            while let Some(ev) = dump_rx.recv().await {
                if let RouteEvent::PeerUp { peer, .. } = &ev {
                    heard.insert(peer.clone());
                }
                tx.send(ev).await.map_err(|_| ())?;
            }
            match reading.await {
                Ok(Ok(summary)) => tracing::info!(
                    collector = %collector, file = %path.display(), peers = summary.rib_peers,
                    prefixes = summary.announced, bad_records = summary.bad_records,
                    "RIS collector table read from its RIB dump"
                ),
                // A collector without a table still has its live updates.
                Ok(Err(e)) => {
                    tracing::error!(collector = %collector, error = %e, "RIB dump not read")
                }
                Err(e) => {
                    tracing::error!(collector = %collector, error = %e, "RIB dump reader failed")
                }
            }
        }
        Ok(())
    }

    /// One connection: subscribe, read until it ends.
    async fn session(
        &self,
        ws: &mut Socket,
        tx: &mpsc::Sender<RouteEvent>,
        heard: &mut BTreeSet<PeerKey>,
    ) -> ConnectionEnd {
        for msg in self.subscriptions() {
            if let Err(e) = ws.send(Message::text(msg)).await {
                return e.into();
            }
        }
        tracing::info!(url = %self.settings.url, "RIS Live subscribed");
        self.read(ws, tx, heard).await
    }

    async fn connect(&self) -> Result<Socket, ConnectionEnd> {
        let t = &self.target;
        let connect = async {
            let tcp = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|e| ConnectionEnd::Connect(format!("{}:{}: {e}", t.host, t.port)))?;
            let _ = tcp.set_nodelay(true);
            let io: Pin<Box<dyn Io>> = match &self.tls {
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                        .map_err(|e| ConnectionEnd::Connect(format!("{}: {e}", t.host)))?;
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .map_err(|e| ConnectionEnd::Connect(format!("TLS: {e}")))?;
                    Box::pin(stream)
                }
                None => Box::pin(tcp),
            };
            let (ws, _response) =
                tokio_tungstenite::client_async(self.settings.url.as_str(), io).await?;
            Ok(ws)
        };
        tokio::time::timeout(self.settings.stall_timeout, connect)
            .await
            .unwrap_or(Err(ConnectionEnd::Stalled(self.settings.stall_timeout)))
    }

    /// The `ris_subscribe` messages: UPDATEs per host and prefix, peer states per host
    /// (a prefix filter would drop them: they carry no prefix).
    fn subscriptions(&self) -> Vec<String> {
        let hosts: Vec<Option<&str>> = if self.settings.hosts.is_empty() {
            vec![None]
        } else {
            self.settings
                .hosts
                .iter()
                .map(|h| Some(h.as_str()))
                .collect()
        };
        let prefixes: Vec<Option<IpNet>> = if self.settings.prefixes.is_empty() {
            vec![None]
        } else {
            self.settings.prefixes.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for host in &hosts {
            let base = || match host {
                Some(h) => RisSubscribe::new().host(h),
                None => RisSubscribe::new(),
            };
            for prefix in &prefixes {
                let mut sub = base().data_type(RisSubscribeType::UPDATE);
                if let Some(p) = prefix {
                    sub = sub.prefix(*p).more_specific(true);
                }
                out.push(sub.to_json_string());
            }
            out.push(
                base()
                    .data_type(RisSubscribeType::RIS_PEER_STATE)
                    .to_json_string(),
            );
        }
        out
    }

    async fn read(
        &self,
        ws: &mut Socket,
        tx: &mpsc::Sender<RouteEvent>,
        heard: &mut BTreeSet<PeerKey>,
    ) -> ConnectionEnd {
        let mut ping = tokio::time::interval(self.settings.ping_interval);
        ping.tick().await;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(self.settings.stall_timeout, ws.next()) => next,
                _ = ping.tick() => {
                    if let Err(e) = ws.send(Message::text(r#"{"type":"ping","data":null}"#)).await {
                        return e.into();
                    }
                    continue;
                }
            };
            let text = match next {
                Err(_) => return ConnectionEnd::Stalled(self.settings.stall_timeout),
                Ok(None) => return ConnectionEnd::Closed,
                Ok(Some(Err(e))) => return e.into(),
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(Message::Close(_)))) => return ConnectionEnd::Closed,
                // Pings are answered by tungstenite; binary frames are not RIS Live's.
                Ok(Some(Ok(_))) => continue,
            };
            for ev in message_events(text.as_str(), heard) {
                if tx.send(ev).await.is_err() {
                    return ConnectionEnd::ReceiverGone;
                }
            }
        }
    }
}

/// The events of one RIS Live message; peers first heard (not in `heard`) get a
/// `PeerUp` before them. Malformed messages are logged and yield nothing.
pub fn message_events(text: &str, heard: &mut BTreeSet<PeerKey>) -> Vec<RouteEvent> {
    let msg = match decode(text) {
        Ok(Some(msg)) => msg,
        Ok(None) => return Vec::new(),
        Err(reason) => {
            // The message text may be large and is the server's, not ours: bounded.
            let head: String = text.chars().take(200).collect();
            tracing::warn!(%reason, message = %head, "RIS Live message skipped");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    match msg {
        Decoded::PeerState { peer, at, state } => {
            if state == "connected" {
                heard.insert(peer.clone());
                out.push(RouteEvent::PeerUp { peer, at });
            } else {
                heard.remove(&peer);
                let reason = format!("RIS peer state {state}");
                out.push(RouteEvent::PeerDown { peer, at, reason });
            }
        }
        Decoded::Update {
            peer,
            at,
            announced,
            withdrawn,
            end_of_rib,
        } => {
            if heard.insert(peer.clone()) {
                out.push(RouteEvent::PeerUp {
                    peer: peer.clone(),
                    at,
                });
            }
            RouteEvent::push_update(&mut out, &peer, withdrawn, announced, at);
            if end_of_rib {
                out.push(RouteEvent::EndOfRib { peer, at });
            }
        }
    }
    out
}

enum Decoded {
    PeerState {
        peer: PeerKey,
        at: DateTime<Utc>,
        state: String,
    },
    Update {
        peer: PeerKey,
        at: DateTime<Utc>,
        announced: Vec<IpNet>,
        withdrawn: Vec<IpNet>,
        end_of_rib: bool,
    },
}

/// Ok(None): a message that says nothing of routes (pong, subscribe ok, keepalive...).
fn decode(text: &str) -> Result<Option<Decoded>, String> {
    let msg: RisLiveMessage =
        serde_json::from_str(text).map_err(|e| format!("not RIS Live JSON: {e}"))?;
    let msg: RisMessage = match msg {
        RisLiveMessage::RisMessage(m) => m,
        RisLiveMessage::RisError(e) => {
            tracing::warn!(message = %e.message, "RIS Live error");
            return Ok(None);
        }
        _ => return Ok(None),
    };
    let peer = PeerKey {
        source: SourceKind::RisLive,
        collector: collector_name(&msg.host),
        peer_ip: msg.peer,
        peer_asn: msg.peer_asn.into(),
    };
    let at = ris_time(msg.timestamp).ok_or_else(|| format!("timestamp {}", msg.timestamp))?;
    match msg.msg {
        Some(RisMessageEnum::RIS_PEER_STATE { state }) => {
            Ok(Some(Decoded::PeerState { peer, at, state }))
        }
        Some(RisMessageEnum::UPDATE {
            announcements,
            withdrawals,
            ..
        }) => {
            let mut end_of_rib = false;
            let mut parse = |p: &str| -> Result<Option<IpNet>, String> {
                if p == "eor" {
                    end_of_rib = true;
                    return Ok(None);
                }
                p.parse().map(Some).map_err(|_| format!("prefix {p:?}"))
            };
            let mut announced = Vec::new();
            for a in announcements.unwrap_or_default() {
                for p in &a.prefixes {
                    announced.extend(parse(p)?);
                }
            }
            let mut withdrawn = Vec::new();
            for p in withdrawals.unwrap_or_default() {
                withdrawn.extend(parse(&p)?);
            }
            Ok(Some(Decoded::Update {
                peer,
                at,
                announced,
                withdrawn,
                end_of_rib,
            }))
        }
        Some(_) => Ok(None),
        // bgpkit flattens the body: one that fails to decode arrives as no body at all.
        None => Err("ris_message body does not decode".into()),
    }
}

/// `rrc03.ripe.net` and `rrc03` are the same collector (the stream has sent both forms).
fn collector_name(host: &str) -> String {
    host.strip_suffix(".ripe.net").unwrap_or(host).to_string()
}

fn ris_time(secs: f64) -> Option<DateTime<Utc>> {
    if !secs.is_finite() {
        return None;
    }
    DateTime::from_timestamp_micros((secs * 1e6).round() as i64)
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, RisLiveError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| RisLiveError::Tls(format!("certificate verifier: {e}")))?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RisLiveError::Tls(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// The peer a RIS message names, for tests and for callers that filter.
pub fn ris_peer(collector: &str, peer_ip: IpAddr, peer_asn: u32) -> PeerKey {
    PeerKey {
        source: SourceKind::RisLive,
        collector: collector_name(collector),
        peer_ip,
        peer_asn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(text: &str, heard: &mut BTreeSet<PeerKey>) -> Vec<RouteEvent> {
        message_events(text, heard)
    }

    #[test]
    fn update_announce_and_withdraw_and_first_heard_peer() {
        let mut heard = BTreeSet::new();
        let msg = r#"{"type":"ris_message","data":{"timestamp":1700000000.25,"peer":"192.0.2.1","peer_asn":"64500","id":"x","host":"rrc21.ripe.net","type":"UPDATE","path":[64500,64501],"origin":"IGP","announcements":[{"next_hop":"192.0.2.1","prefixes":["198.51.100.0/24"]}],"withdrawals":["203.0.113.0/24"]}}"#;
        let out = ev(msg, &mut heard);
        let peer = ris_peer("rrc21", "192.0.2.1".parse().unwrap(), 64500);
        let at = DateTime::from_timestamp_micros(1_700_000_000_250_000).unwrap();
        assert_eq!(
            out,
            vec![
                RouteEvent::PeerUp {
                    peer: peer.clone(),
                    at
                },
                RouteEvent::Withdraw {
                    peer: peer.clone(),
                    prefixes: vec!["203.0.113.0/24".parse().unwrap()],
                    at
                },
                RouteEvent::Announce {
                    peer,
                    prefixes: vec!["198.51.100.0/24".parse().unwrap()],
                    at
                },
            ]
        );
        // Heard once: no second PeerUp.
        assert_eq!(ev(msg, &mut heard).len(), 2);
    }

    #[test]
    fn peer_states_and_junk() {
        let mut heard = BTreeSet::new();
        let down = r#"{"type":"ris_message","data":{"timestamp":1700000001.0,"peer":"2001:db8::1","peer_asn":"64510","id":"y","host":"rrc00","type":"RIS_PEER_STATE","state":"down"}}"#;
        let out = ev(down, &mut heard);
        assert!(
            matches!(&out[..], [RouteEvent::PeerDown { reason, .. }] if reason == "RIS peer state down")
        );
        let up = down
            .replace("\"down\"", "\"connected\"")
            .replace("RIS_PEER_STATE", "STATE");
        assert!(matches!(
            &ev(&up, &mut heard)[..],
            [RouteEvent::PeerUp { .. }]
        ));
        for junk in [
            "not json",
            r#"{"type":"ris_message","data":{"timestamp":1.0,"peer":"192.0.2.1","peer_asn":"1","id":"z","host":"rrc00","type":"UPDATE","announcements":[{"next_hop":"192.0.2.1","prefixes":["300.0.0.0/8"]}]}}"#,
            r#"{"type":"ris_message","data":{"timestamp":1.0,"peer":"192.0.2.1","peer_asn":"1","id":"z","host":"rrc00","type":"UPDATE","announcements":"oops"}}"#,
            r#"{"type":"ris_error","data":{"message":"Unknown host"}}"#,
            r#"{"type":"pong","data":null}"#,
        ] {
            assert_eq!(ev(junk, &mut heard), vec![], "{junk}");
        }
    }
}
