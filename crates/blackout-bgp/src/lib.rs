//! BGP as a signal: route sources (a BMP listener, a RIS Live client, MRT import) turn
//! what they hear into [`RouteEvent`]s; the table keeps which peers carry which prefix
//! and turns it into [`blackout_model::bgp::BgpVisibility`] per country and network.
//!
//! Sources never judge: a peer whose session drops is a [`RouteEvent::PeerDown`], not a
//! withdrawal of everything it carried, so that the table can tell a country withdrawing
//! its routes from a route collector losing a peer.

pub mod bmp;
pub mod event;
pub mod mrt;
pub mod prefix;
pub mod rislive;
pub mod run;
pub mod space;
pub mod table;

pub use event::{PeerKey, RouteEvent, SourceKind};
pub use mrt::{MrtError, MrtOrigin, MrtSummary, read_mrt_file, send_mrt_file};
pub use rislive::{RisLiveClient, RisLiveError, RisLiveSettings, spawn_ris_live};
pub use run::Feed;
pub use space::Space;
pub use table::{PeerState, Table, TableConfig};
