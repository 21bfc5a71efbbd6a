//! When an agent counts as silent: one rule, used by the page, the metrics and (through
//! `blackout_agent_silent`) the alert. An agent says how often it reports (the
//! [`UPLOAD_INTERVAL_HEADER`] of its uploads, or its configuration when it runs in the
//! collector's process); it reports at least that often, with an empty batch when it
//! measured nothing, so silence is the age of its last report against that interval.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub use blackout_model::observation::UPLOAD_INTERVAL_HEADER;

use crate::Collector;

/// Silence is never called before this: an upload that failed once is retried within
/// 15 s, and a report can wait behind a large batch being written.
pub const MIN_SILENT_AFTER_SECS: i64 = 60;
/// Reports missed in a row before an agent is silent.
pub const MISSED_REPORTS: i64 = 3;
/// Added to the missed reports: the agent's longest retry wait (15 s) and a write.
pub const SILENCE_SLACK_SECS: i64 = 30;
/// The largest interval an agent may declare (a day): beyond it the header is ignored.
pub const MAX_DECLARED_INTERVAL_SECS: u32 = 86_400;

/// Seconds without a report after which an agent is silent, given the interval it
/// declared (`None`: it declared none, as older agents, or not since the collector
/// started).
pub fn silent_after_secs(upload_interval_secs: Option<u32>) -> i64 {
    match upload_interval_secs {
        None => MIN_SILENT_AFTER_SECS,
        Some(i) => (MISSED_REPORTS * i64::from(i) + SILENCE_SLACK_SECS).max(MIN_SILENT_AFTER_SECS),
    }
}

/// Whether an agent last heard at `last_report` is silent at `now`.
pub fn is_silent(
    last_report: DateTime<Utc>,
    now: DateTime<Utc>,
    upload_interval_secs: Option<u32>,
) -> bool {
    now - last_report > chrono::Duration::seconds(silent_after_secs(upload_interval_secs))
}

/// The header's value as an interval, if it is one.
pub fn parse_interval(value: &str) -> Option<u32> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|i| (1..=MAX_DECLARED_INTERVAL_SECS).contains(i))
}

/// What each agent last declared. Not saved: after a restart an agent's next upload
/// declares it again, and until then [`MIN_SILENT_AFTER_SECS`] applies.
#[derive(Debug, Default)]
pub struct Cadence(Mutex<HashMap<String, u32>>);

impl Collector {
    /// Records the report interval an agent declared with an accepted batch.
    pub fn note_upload_interval(&self, agent: &str, secs: u32) {
        let mut m = self.cadence.0.lock().expect("cadence lock");
        if m.get(agent) != Some(&secs) {
            m.insert(agent.to_string(), secs);
        }
    }

    /// The report interval each agent declared.
    pub fn upload_intervals(&self) -> HashMap<String, u32> {
        self.cadence.0.lock().expect("cadence lock").clone()
    }

    /// Whether an agent whose last report is `age_secs` old is silent.
    pub fn is_silent(&self, agent: &str, age_secs: i64) -> bool {
        let declared = self
            .cadence
            .0
            .lock()
            .expect("cadence lock")
            .get(agent)
            .copied();
        age_secs > silent_after_secs(declared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_follows_the_declared_interval() {
        // The default agent (5 s) and an agent that declared nothing: one minute.
        assert_eq!(silent_after_secs(None), 60);
        assert_eq!(silent_after_secs(Some(5)), 60);
        // An agent that reports every 5 minutes is not silent after one.
        assert_eq!(silent_after_secs(Some(300)), 930);
        assert_eq!(silent_after_secs(Some(60)), 210);
    }

    #[test]
    fn only_sane_intervals_are_taken() {
        assert_eq!(parse_interval(" 5 "), Some(5));
        assert_eq!(parse_interval("0"), None);
        assert_eq!(parse_interval("-3"), None);
        assert_eq!(parse_interval("86401"), None);
        assert_eq!(parse_interval("5s"), None);
    }
}
