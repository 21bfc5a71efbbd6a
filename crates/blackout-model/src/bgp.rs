//! BGP visibility as a route source reports it to the detector: the seam between the
//! BGP sources (BMP, RIS Live, MRT; crate blackout-bgp) and the detector, so that
//! neither depends on the other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How much of one entity's address space the route collectors' peers still see, at
/// one instant. Counted by /24 of the catalog's address space, as IODA counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpVisibility {
    pub at: DateTime<Utc>,
    /// ISO 3166-1 alpha-2 code of the country the address space belongs to.
    pub country: String,
    /// `None`: the whole country; `Some(asn)`: one of its networks.
    pub asn: Option<u32>,
    /// /24s of the entity's catalog space covered by a route that a quorum of healthy
    /// full-table peers carries.
    pub visible_slash24: u32,
    /// /24s of the entity's catalog space.
    pub total_slash24: u32,
    /// Healthy full-table peers heard when this was computed.
    pub peers_healthy: u16,
    /// Peers that must carry a route for its space to count as visible.
    pub peers_quorum: u16,
    /// The evidence of withdrawals in the entity's space since it was last fully visible.
    pub withdrawals: Option<BgpWithdrawals>,
}

impl BgpVisibility {
    /// Visible share of the entity's space in [0, 1]; `None` without space or without a
    /// quorum of healthy peers (then BGP knows nothing about it, which is not "dark").
    pub fn share(&self) -> Option<f64> {
        if self.total_slash24 == 0 || self.peers_healthy < self.peers_quorum.max(1) {
            return None;
        }
        Some(f64::from(self.visible_slash24) / f64::from(self.total_slash24))
    }
}

/// What the withdrawals were: for an event's evidence. Lists are bounded by the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgpWithdrawals {
    /// Prefixes of the entity no longer carried by a quorum.
    pub prefixes_withdrawn: u32,
    /// Up to [`BgpWithdrawals::MAX_LISTED`] of them, as text (`192.0.2.0/24`).
    pub examples: Vec<String>,
    /// Peers that sent a withdrawal (or lost the route), as `AS64500 192.0.2.1`, bounded.
    pub peers: Vec<String>,
    /// When the first of these withdrawals was heard.
    pub first_withdrawal_at: DateTime<Utc>,
}

impl BgpWithdrawals {
    pub const MAX_LISTED: usize = 8;
}
