//! Offline tools on top of the data path: `replay` (the detector over recorded data),
//! `quality` (detection quality on labelled data sets and simulations), `probe-sim` (the
//! real adaptive prober against a simulated sparse Internet, feeding the detector), the catalog
//! builder and discovery, ad-hoc probes, and `wire-sizes` (bytes per observation of
//! each upload encoding over a collector's log).

pub mod adhoc;
pub mod catalog;
pub mod probe_sim;
pub mod quality;
pub mod replay;
pub mod replay_bgp;
pub mod wire;
