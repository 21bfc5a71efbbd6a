//! Offline tools on top of the data path: `replay` (the detector over recorded data),
//! `quality` (detection quality on labelled data sets and simulations), the catalog
//! builder and discovery, and ad-hoc probes.

pub mod adhoc;
pub mod catalog;
pub mod quality;
pub mod replay;
