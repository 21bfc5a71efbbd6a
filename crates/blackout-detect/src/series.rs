//! One time series per (entity, signal, metric): its inpainted history, its baseline and
//! the state machine with minimum duration and hysteresis.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// State of a series or an entity.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Normal,
    Warning,
    Outage,
}

impl State {
    /// Prometheus encoding: 0 normal, 1 warning, 2 outage.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A bin's slot in a [`Ring`]: a value, or the mark of a bin without one.
pub(crate) trait Slot: Copy {
    const EMPTY: Self;
    fn present(&self) -> bool;
}

impl Slot for f32 {
    const EMPTY: f32 = f32::NAN;
    fn present(&self) -> bool {
        self.is_finite()
    }
}

/// (value, baseline) of one bin, as a reader is shown them.
impl Slot for (f32, f32) {
    const EMPTY: (f32, f32) = (f32::NAN, f32::NAN);
    fn present(&self) -> bool {
        self.0.is_finite() || self.1.is_finite()
    }
}

/// Slots per bin index, oldest first, at most `cap` bins (the caller's bound).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ring<T> {
    first_bin: i64,
    values: VecDeque<T>,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring {
            first_bin: 0,
            values: VecDeque::new(),
        }
    }
}

/// A series' own history (inpainted: what its baseline is computed from); NaN marks a
/// bin without a value.
pub(crate) type History = Ring<f32>;

/// What a reader is shown of a series: per bin the measured value (not inpainted) and
/// the baseline it was judged against.
pub(crate) type Trail = Ring<(f32, f32)>;

impl<T: Slot> Ring<T> {
    fn slot(&self, bin: i64) -> Option<T> {
        let i = bin - self.first_bin;
        if i < 0 {
            return None;
        }
        self.values.get(i as usize).copied().filter(|v| v.present())
    }

    /// Stores `v` at `bin`, keeping at most `cap` bins.
    pub fn set(&mut self, bin: i64, v: T, cap: usize) {
        if self.values.is_empty() {
            self.first_bin = bin;
        }
        if bin < self.first_bin {
            let gap = (self.first_bin - bin) as usize;
            if self.values.len() + gap > cap {
                return;
            }
            for _ in 0..gap {
                self.values.push_front(T::EMPTY);
            }
            self.first_bin = bin;
        }
        let i = (bin - self.first_bin) as usize;
        if i >= self.values.len() {
            let gap = i + 1 - self.values.len();
            if gap > cap {
                // A gap longer than the window: nothing before it is worth keeping.
                self.values.clear();
                self.first_bin = bin;
                self.values.push_back(T::EMPTY);
            } else {
                self.values.extend(std::iter::repeat_n(T::EMPTY, gap));
            }
        }
        let i = (bin - self.first_bin) as usize;
        self.values[i] = v;
        while self.values.len() > cap {
            self.values.pop_front();
            self.first_bin += 1;
        }
    }

    /// (bin, slot) of the bins from `from` on that hold something, oldest first.
    pub fn since(&self, from: i64) -> impl Iterator<Item = (i64, T)> + '_ {
        let skip = (from - self.first_bin).max(0) as usize;
        self.values
            .iter()
            .enumerate()
            .skip(skip)
            .filter(|(_, v)| v.present())
            .map(|(i, v)| (self.first_bin + i as i64, *v))
    }
}

impl History {
    pub fn get(&self, bin: i64) -> Option<f64> {
        self.slot(bin).map(|v| v as f64)
    }

    pub fn len_finite_before(&self, bin: i64) -> usize {
        let end = (bin - self.first_bin).clamp(0, self.values.len() as i64) as usize;
        self.values.range(..end).filter(|v| v.is_finite()).count()
    }
}

pub(crate) fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// How the baseline looks back: bins per day (for the same time of day), days of the
/// trailing window, bins of the warm-up fallback, bins needed before a verdict.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BaselineShape {
    pub bins_per_day: i64,
    pub days: i64,
    pub recent_bins: i64,
    pub warmup_bins: usize,
}

/// Baseline for `bin` from history strictly before it: the median of the same time of
/// day (plus and minus one bin) over the trailing days when at least three such values
/// exist, otherwise the median of the recent window. None during warm-up.
pub(crate) fn baseline(h: &History, bin: i64, s: &BaselineShape) -> Option<f64> {
    if h.len_finite_before(bin) < s.warmup_bins {
        return None;
    }
    let mut buf: Vec<f64> = Vec::with_capacity(3 * s.days as usize);
    if s.bins_per_day > 1 {
        for k in 1..=s.days {
            let c = bin - k * s.bins_per_day;
            for d in -1..=1 {
                if c + d < bin
                    && let Some(v) = h.get(c + d)
                {
                    buf.push(v);
                }
            }
        }
    }
    if buf.len() >= 3 {
        return median(&mut buf);
    }
    buf.clear();
    for b in (bin - s.recent_bins)..bin {
        if let Some(v) = h.get(b) {
            buf.push(v);
        }
    }
    median(&mut buf)
}

/// Per-bin level with hysteresis and minimum durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rules {
    pub warning_min_bins: u32,
    pub outage_min_bins: u32,
    pub recovery_min_bins: u32,
}

/// State machine over per-bin raw levels. Raw levels already include hysteresis (the
/// caller classifies with the recovery threshold while the series is degraded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Tracker {
    pub state: Option<State>,
    /// First bin of the current run of degraded raw levels.
    pub bad_start: Option<i64>,
    pub bad_run: u32,
    pub out_run: u32,
    pub good_run: u32,
    pub good_start: Option<i64>,
    /// First bin of the current non-normal state (the start of the degradation run that
    /// led to it).
    pub since: Option<i64>,
}

impl Tracker {
    pub fn state(&self) -> State {
        self.state.unwrap_or(State::Normal)
    }

    /// Feeds the raw level of `bin`; returns the state after it.
    pub fn step(&mut self, bin: i64, raw: State, r: &Rules) -> State {
        let cur = self.state();
        match raw {
            State::Normal => {
                if self.good_run == 0 {
                    self.good_start = Some(bin);
                }
                self.good_run += 1;
                self.bad_run = 0;
                self.out_run = 0;
                self.bad_start = None;
            }
            State::Warning | State::Outage => {
                if self.bad_run == 0 {
                    self.bad_start = Some(bin);
                }
                self.bad_run += 1;
                if raw == State::Outage {
                    self.out_run += 1;
                } else {
                    self.out_run = 0;
                }
                self.good_run = 0;
                self.good_start = None;
            }
        }
        let next = match cur {
            State::Normal => {
                if self.out_run >= r.outage_min_bins {
                    State::Outage
                } else if self.bad_run >= r.warning_min_bins {
                    State::Warning
                } else {
                    State::Normal
                }
            }
            State::Warning => {
                if self.out_run >= r.outage_min_bins {
                    State::Outage
                } else if self.good_run >= r.recovery_min_bins {
                    State::Normal
                } else {
                    State::Warning
                }
            }
            State::Outage => {
                if self.good_run >= r.recovery_min_bins {
                    State::Normal
                } else if raw == State::Warning && self.bad_run >= 1 && self.out_run == 0 {
                    State::Warning
                } else {
                    State::Outage
                }
            }
        };
        if cur == State::Normal && next != State::Normal {
            self.since = self.bad_start;
        }
        if next == State::Normal {
            self.since = None;
        }
        self.state = Some(next);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    const RULES: Rules = Rules {
        warning_min_bins: 2,
        outage_min_bins: 1,
        recovery_min_bins: 1,
    };

    #[test]
    fn state_transitions_table() {
        // (raw levels, expected states after each)
        let cases: Vec<(Vec<State>, Vec<State>)> = vec![
            (vec![Normal, Warning, Normal], vec![Normal, Normal, Normal]),
            (
                vec![Warning, Warning, Normal],
                vec![Normal, Warning, Normal],
            ),
            (vec![Outage, Outage, Normal], vec![Outage, Outage, Normal]),
            (
                vec![Warning, Outage, Warning],
                vec![Normal, Outage, Warning],
            ),
            (vec![Outage, Warning, Outage], vec![Outage, Warning, Outage]),
        ];
        for (raw, want) in cases {
            let mut t = Tracker::default();
            let got: Vec<State> = raw
                .iter()
                .enumerate()
                .map(|(i, s)| t.step(i as i64, *s, &RULES))
                .collect();
            assert_eq!(got, want, "raw {raw:?}");
        }
    }

    #[test]
    fn since_is_the_start_of_the_degradation() {
        let mut t = Tracker::default();
        t.step(10, Warning, &RULES);
        t.step(11, Warning, &RULES);
        assert_eq!(t.since, Some(10));
        t.step(12, Outage, &RULES);
        assert_eq!(t.since, Some(10));
        t.step(13, Normal, &RULES);
        assert_eq!(t.since, None);
        assert_eq!(t.good_start, Some(13));
    }

    #[test]
    fn seasonal_baseline_follows_time_of_day_and_falls_back_in_warm_up() {
        let shape = BaselineShape {
            bins_per_day: 24,
            days: 7,
            recent_bins: 3,
            warmup_bins: 4,
        };
        let mut h = History::default();
        for b in 0..3 {
            h.set(b, 100.0f32, 1000);
        }
        assert_eq!(baseline(&h, 3, &shape), None, "warm-up");
        h.set(3, 100.0f32, 1000);
        assert_eq!(baseline(&h, 4, &shape), Some(100.0));
        // Two days of a rhythm: 50 at hour 0..6, 100 otherwise.
        let mut h = History::default();
        for b in 0..48 {
            h.set(b, if b % 24 < 6 { 50.0 } else { 100.0 }, 1000);
        }
        assert_eq!(baseline(&h, 48 + 3, &shape), Some(50.0));
        assert_eq!(baseline(&h, 48 + 12, &shape), Some(100.0));
    }

    #[test]
    fn history_caps_and_gaps() {
        let mut h = History::default();
        h.set(5, 1.0f32, 4);
        h.set(7, 2.0f32, 4);
        assert_eq!(h.get(6), None);
        assert_eq!(h.get(7), Some(2.0));
        h.set(10, 3.0f32, 4);
        assert_eq!(h.get(5), None, "trimmed to 4 bins");
        assert_eq!(h.get(7), Some(2.0));
        h.set(100, 4.0f32, 4);
        assert_eq!(h.len_finite_before(i64::MAX), 1);
    }

    #[test]
    fn trail_keeps_value_and_baseline_per_bin() {
        let mut t = Trail::default();
        t.set(10, (0.9, f32::NAN), 3);
        t.set(12, (0.1, 0.9), 3);
        // A late value of a closed bin inside the window lands in place.
        t.set(11, (0.5, 0.9), 3);
        let got: Vec<_> = t.since(0).map(|(b, (v, _))| (b, v)).collect();
        assert_eq!(got, vec![(10, 0.9), (11, 0.5), (12, 0.1)]);
        t.set(13, (0.2, 0.9), 3);
        assert_eq!(
            t.since(0).next().map(|(b, _)| b),
            Some(11),
            "capped at 3 bins"
        );
        assert_eq!(t.since(13).count(), 1);
        assert!(t.since(0).all(|(_, (_, b))| b == 0.9));
    }
}
