//! The loop that feeds the table: events from every source through one channel, and
//! the readings due, handed to the caller (the collector gives them to the detector)
//! at each tick, so that a withdrawal is reported within a tick and the coalescing
//! interval, not at the next probing round.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use blackout_model::bgp::BgpVisibility;
use chrono::Utc;
use tokio::sync::mpsc;

use crate::event::{RouteEvent, SourceKind};
use crate::table::Table;

/// How often due readings are collected.
pub const TICK: Duration = Duration::from_millis(250);
/// Events applied under one lock of the table before readings are looked at again.
const BATCH: usize = 4096;

/// Kinds of route events, as metrics label them.
pub const EVENT_KINDS: [&str; 6] = [
    "peer_up",
    "peer_down",
    "announce",
    "withdraw",
    "end_of_rib",
    "peer_alive",
];
/// Sources, as metrics label them.
pub const SOURCES: [SourceKind; 3] = [SourceKind::Bmp, SourceKind::RisLive, SourceKind::Mrt];

/// Route events received, by source and kind.
#[derive(Debug, Default)]
pub struct RouteCounters {
    counts: [[AtomicU64; EVENT_KINDS.len()]; 3],
}

impl RouteCounters {
    pub fn record(&self, ev: &RouteEvent) {
        let kind = match ev {
            RouteEvent::PeerUp { .. } => 0,
            RouteEvent::PeerDown { .. } => 1,
            RouteEvent::Announce { .. } => 2,
            RouteEvent::Withdraw { .. } => 3,
            RouteEvent::EndOfRib { .. } => 4,
            RouteEvent::PeerAlive { .. } => 5,
        };
        self.counts[source_index(ev.peer().source)][kind].fetch_add(1, Ordering::Relaxed);
    }

    /// Count for (source, kind) where kind is an index into [`EVENT_KINDS`].
    pub fn get(&self, source: SourceKind, kind: usize) -> u64 {
        self.counts[source_index(source)][kind].load(Ordering::Relaxed)
    }
}

fn source_index(s: SourceKind) -> usize {
    match s {
        SourceKind::Bmp => 0,
        SourceKind::RisLive => 1,
        SourceKind::Mrt => 2,
    }
}

/// The table and what is counted about its input, shared with the readers (metrics).
#[derive(Debug)]
pub struct Feed {
    pub table: Mutex<Table>,
    pub counters: RouteCounters,
}

impl Feed {
    pub fn new(table: Table) -> Feed {
        Feed {
            table: Mutex::new(table),
            counters: RouteCounters::default(),
        }
    }

    pub fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("BGP table lock")
    }

    /// Applies events until every sender is gone; hands the due readings to `emit`
    /// every [`TICK`].
    pub async fn run(
        &self,
        mut events: mpsc::Receiver<RouteEvent>,
        mut emit: impl FnMut(Vec<BgpVisibility>) + Send,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    let mut table = self.table();
                    self.counters.record(&ev);
                    table.apply(&ev);
                    for _ in 0..BATCH {
                        match events.try_recv() {
                            Ok(ev) => {
                                self.counters.record(&ev);
                                table.apply(&ev);
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    let readings = self.table().poll(Utc::now());
                    if !readings.is_empty() {
                        emit(readings);
                    }
                }
            }
        }
    }
}
