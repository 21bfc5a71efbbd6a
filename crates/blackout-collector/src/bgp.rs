//! The BGP signal in the collector: the route table built from the catalog's space, the
//! channel every BGP source sends its [`RouteEvent`]s into (the BMP listener here; RIS
//! Live and MRT plug into the same sender), and the loop that hands the table's readings
//! to the detector as soon as they are due.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use blackout_bgp::bmp::{BmpStats, IGNORED_PEER_TYPES};
use blackout_bgp::run::{EVENT_KINDS, SOURCES};
use blackout_bgp::table::PeerState;
use blackout_bgp::{Feed, RouteEvent, Space, Table};
use blackout_model::catalog::CatalogFile;
use tokio::sync::mpsc;

use crate::config::BgpConfig;
use crate::ingest::Collector;

/// Events queued between the sources and the table: a burst (a full table from a new
/// peer) waits here, and a source slows down when it is full.
pub const EVENT_QUEUE: usize = 65_536;

/// The collector's BGP side.
pub struct Bgp {
    pub config: BgpConfig,
    pub feed: Arc<Feed>,
    pub bmp: Arc<BmpStats>,
    events: mpsc::Sender<RouteEvent>,
    receiver: Mutex<Option<mpsc::Receiver<RouteEvent>>>,
}

/// What a scrape reads of the BGP side.
#[derive(Debug, Clone, Default)]
pub struct BgpFacts {
    /// (source, state, peers), every state of every source present.
    pub peers: Vec<(&'static str, &'static str, u64)>,
    /// (source, kind, events received).
    pub route_events: Vec<(&'static str, &'static str, u64)>,
    /// Distinct prefixes held: (IPv4, IPv6).
    pub prefixes: (usize, usize),
    pub bmp_sessions: u64,
    /// Peers evicted from their slot, and peers refused one (see [`Table::evicted`]).
    pub peers_evicted: u64,
    pub peers_refused: u64,
    /// (peer type, BMP messages dropped as not of the global instance).
    pub bmp_ignored: Vec<(&'static str, u64)>,
}

impl Bgp {
    pub fn new(config: BgpConfig, files: &[CatalogFile]) -> Bgp {
        let space = Space::from_files(files);
        tracing::info!(
            blocks = space.blocks(),
            entities = space.entities(),
            "BGP table over the catalog's space"
        );
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        Bgp {
            feed: Arc::new(Feed::new(Table::new(config.table.clone(), space))),
            config,
            bmp: Arc::new(BmpStats::default()),
            events,
            receiver: Mutex::new(Some(rx)),
        }
    }

    /// Where a source sends what it hears.
    pub fn sender(&self) -> mpsc::Sender<RouteEvent> {
        self.events.clone()
    }

    pub fn facts(&self) -> BgpFacts {
        let table = self.feed.table();
        let states = table.peer_states();
        let mut peers = Vec::new();
        let mut route_events = Vec::new();
        for s in SOURCES {
            for st in PeerState::ALL {
                peers.push((
                    s.as_str(),
                    st.as_str(),
                    states.get(&(s, st)).copied().unwrap_or(0),
                ));
            }
            for (k, kind) in EVENT_KINDS.iter().enumerate() {
                route_events.push((s.as_str(), *kind, self.feed.counters.get(s, k)));
            }
        }
        BgpFacts {
            peers,
            route_events,
            prefixes: table.prefixes(),
            bmp_sessions: self.bmp.sessions.load(Ordering::Relaxed),
            peers_evicted: table.evicted(),
            peers_refused: table.refused().0,
            bmp_ignored: IGNORED_PEER_TYPES
                .iter()
                .zip(&self.bmp.ignored)
                .map(|(t, n)| (*t, n.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// Starts the BGP side of `collector`, if it has one: binds the BMP listener (an error
/// if the address is taken) and spawns it, the RIS Live client and the table's loop.
pub async fn start(collector: &Arc<Collector>) -> std::io::Result<()> {
    let Some(bgp) = collector.bgp.as_ref() else {
        return Ok(());
    };
    let Some(rx) = bgp.receiver.lock().expect("bgp receiver").take() else {
        return Ok(());
    };
    if let Some(addr) = bgp.config.bmp_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("bgp.bmp_listen {addr}: {e}")))?;
        tracing::info!(%addr, "BMP listener up");
        tokio::spawn(blackout_bgp::bmp::serve(
            listener,
            bgp.sender(),
            bgp.bmp.clone(),
        ));
    }
    if let Some(settings) = &bgp.config.ris_live {
        blackout_bgp::spawn_ris_live(settings.clone(), bgp.sender())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tracing::info!(url = %settings.url, hosts = ?settings.hosts, "RIS Live client started");
    }
    let feed = bgp.feed.clone();
    let weak = Arc::downgrade(collector);
    tokio::spawn(async move {
        feed.run(rx, move |readings| {
            if let Some(c) = weak.upgrade() {
                c.ingest_bgp(&readings);
            }
        })
        .await;
    });
    Ok(())
}
