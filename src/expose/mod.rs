//! Exposition: Prometheus metrics (and the status page).

pub mod metrics;
pub mod names;
