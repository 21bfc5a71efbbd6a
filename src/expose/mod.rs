//! Exposition: Prometheus metrics (and the status page).

pub mod metrics;
pub mod names;
pub mod status_page;
