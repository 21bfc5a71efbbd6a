//! Offline tools on top of the data path: `replay` (the detector over recorded data),
//! `quality` (detection quality on labelled data sets and simulations), the catalog
//! builder and discovery, ad-hoc probes, and `wire-sizes` (bytes per observation of
//! each upload encoding over a collector's log).

pub mod adhoc;
pub mod catalog;
pub mod quality;
pub mod replay;
pub mod wire;
