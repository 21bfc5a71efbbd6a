//! Detection: vantage health, aggregation, baselines, states and events. Pure: no I/O, no
//! clock; time is passed in.

pub mod quality;
