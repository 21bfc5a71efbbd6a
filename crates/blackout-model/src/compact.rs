//! The compact batch: the binary form of a [`Batch`] that agents upload
//! (`Content-Type: application/vnd.blackout.batch.v2`, usually under
//! `Content-Encoding: zstd`) and the collector's log keeps.
//!
//! A batch is laid out by column, not by record, so that what repeats lines up for the
//! compressor and what is known once per batch is written once:
//!
//! - a table of groups, each `(country, asn, region, signal, control)` once;
//! - a table of targets, in order of first appearance, each with its group and its id
//!   front-coded against the previous id (`icmp:5.1.2.0/24` after `icmp:5.1.1.0/24`
//!   costs its last 8 bytes);
//! - one column per field: target (index delta), time (microsecond delta), result (ok,
//!   or phase and failure in one byte), rtt (10 us units), block report (verdict,
//!   echoes sent and answered, belief), HTTP phase timings (sparse).
//!
//! Every integer is a varint (postcard). What the JSON form carries that this one rounds:
//! `measured_at` to the microsecond, `rtt_ms` and the HTTP timings to 10 us, a block's
//! belief to `f32` (the agent keeps it as `f32` between rounds). Everything else comes
//! back exactly.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::observation::{
    Batch, BlockReport, BlockVerdict, Failure, HttpTimingsMs, Observation, Phase, Signal,
    SpoolStatus,
};

/// The media type of a compact batch.
pub const CONTENT_TYPE: &str = "application/vnd.blackout.batch.v2";

/// First bytes of every compact batch: tells it from JSON (which starts with `{` or
/// white space) and from a later version.
pub const MAGIC: [u8; 4] = *b"BOB\x02";

/// Why bytes are not a compact batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompactError {
    #[error("not a compact batch (no `BOB\\x02` magic)")]
    Magic,
    #[error("malformed compact batch: {0}")]
    Malformed(String),
    #[error("compact batch: {0}")]
    Inconsistent(String),
    /// Its observations as JSON would exceed the given size.
    #[error("compact batch holds more than {0} bytes of observations as JSON")]
    TooLarge(usize),
}

/// The least bytes one observation takes as JSON besides its strings: what
/// [`decode_at_most`] counts per observation.
pub const MIN_JSON_OBSERVATION_BYTES: usize = 96;

/// Longest target id (as [`Observation::validate`] allows).
const MAX_TARGET_BYTES: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Group {
    country: String,
    asn: u32,
    region: Option<String>,
    signal: u8,
    control: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Columns {
    batch_id: String,
    agent: String,
    /// observations, dropped, catalog refusals, politeness skips.
    spool: Option<(u64, u64, u64, u64)>,
    groups: Vec<Group>,
    /// Per target: its group.
    target_group: Vec<u32>,
    /// Per target: bytes shared with the previous target's id, and the rest.
    target_shared: Vec<u32>,
    target_suffix: Vec<String>,
    /// Per observation: its target's index minus (the previous observation's + 1).
    target_delta: Vec<i64>,
    /// Per observation: microseconds since the previous one (the first: since 1970).
    time_delta_us: Vec<i64>,
    /// Per observation: 0 ok, else 1 + phase * 17 + failure (indices of `ALL`).
    result: Vec<u8>,
    /// Per observation: 0 none, else 1 + rtt in 10 us units.
    rtt: Vec<u32>,
    /// Per observation: 0 no block report, else 1 + verdict (up, down, uncertain).
    block: Vec<u8>,
    /// Per block report, in order.
    block_probes: Vec<u32>,
    block_replies: Vec<u32>,
    block_belief: Vec<f32>,
    /// Observations with HTTP timings: index, then each phase as 0 none, else 1 + 10 us.
    timings: Vec<(u32, [u32; 4])>,
}

const FAILURES: u8 = Failure::ALL.len() as u8;

fn signal_code(s: Signal) -> u8 {
    Signal::PROBED.iter().position(|x| *x == s).unwrap_or(0) as u8
}

fn result_code(o: &Observation) -> u8 {
    match (o.phase, o.failure) {
        (Some(p), Some(f)) => {
            let p = Phase::ALL.iter().position(|x| *x == p).unwrap_or(0) as u8;
            let f = Failure::ALL.iter().position(|x| *x == f).unwrap_or(0) as u8;
            1 + p * FAILURES + f
        }
        // `ok` with a phase or a failure alone is invalid anyway; the code keeps `ok`.
        _ => 0,
    }
}

fn ten_us(ms: f64) -> u32 {
    1 + (ms * 100.0).round().clamp(0.0, f64::from(u32::MAX - 1)) as u32
}

fn from_ten_us(v: u32) -> Option<f64> {
    (v > 0).then(|| f64::from(v - 1) / 100.0)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn shared_prefix(a: &str, b: &str) -> usize {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    // Whole characters only, so that the suffix is a string.
    (0..=n).rev().find(|&i| b.is_char_boundary(i)).unwrap_or(0)
}

/// The compact bytes of `batch` (magic included, uncompressed).
pub fn encode(batch: &Batch) -> Vec<u8> {
    let mut c = Columns {
        batch_id: batch.batch_id.clone(),
        agent: batch.agent.clone(),
        spool: batch.spool.map(|s| {
            (
                s.observations,
                s.dropped_observations,
                s.catalog_refusals,
                s.politeness_skips,
            )
        }),
        ..Columns::default()
    };
    let mut groups = std::collections::HashMap::new();
    let mut targets: std::collections::HashMap<(&str, u32), u32> = std::collections::HashMap::new();
    let mut last_target = String::new();
    let mut prev_index: i64 = -1;
    let mut prev_time: i64 = 0;
    for (i, o) in batch.observations.iter().enumerate() {
        let g = Group {
            country: o.country.clone(),
            asn: o.asn,
            region: o.region.clone(),
            signal: signal_code(o.signal),
            control: o.control,
        };
        let next = groups.len() as u32;
        let gi = *groups.entry(g.clone()).or_insert_with(|| {
            c.groups.push(g);
            next
        });
        let next = targets.len() as u32;
        let ti = *targets.entry((o.target.as_str(), gi)).or_insert_with(|| {
            let shared = shared_prefix(&last_target, &o.target);
            c.target_group.push(gi);
            c.target_shared.push(shared as u32);
            c.target_suffix.push(o.target[shared..].to_string());
            last_target.clone_from(&o.target);
            next
        });
        c.target_delta.push(i64::from(ti) - prev_index - 1);
        prev_index = i64::from(ti);
        let t = micros(o.measured_at);
        c.time_delta_us.push(t.wrapping_sub(prev_time));
        prev_time = t;
        c.result.push(if o.ok { 0 } else { result_code(o).max(1) });
        c.rtt.push(o.rtt_ms.map_or(0, ten_us));
        match &o.block {
            None => c.block.push(0),
            Some(b) => {
                c.block.push(match b.verdict {
                    BlockVerdict::Up => 1,
                    BlockVerdict::Down => 2,
                    BlockVerdict::Uncertain => 3,
                });
                c.block_probes.push(b.probes);
                c.block_replies.push(b.replies);
                c.block_belief.push(b.belief as f32);
            }
        }
        if let Some(t) = &o.timings_ms {
            let v = t.values().map(|v| v.map_or(0, ten_us));
            c.timings.push((i as u32, v));
        }
    }
    let mut out = MAGIC.to_vec();
    postcard::to_io(&c, &mut out).expect("writing into a Vec cannot fail");
    out
}

/// Whether `bytes` start like a compact batch.
pub fn is_compact(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC)
}

fn bad(msg: impl Into<String>) -> CompactError {
    CompactError::Inconsistent(msg.into())
}

/// The batch in compact `bytes` (magic included, uncompressed). Structure only: the
/// observations are then validated as JSON ones are.
pub fn decode(bytes: &[u8]) -> Result<Batch, CompactError> {
    decode_at_most(bytes, usize::MAX)
}

/// As [`decode`], refusing a batch whose observations would take more than `json_bytes`
/// as JSON (counted as [`MIN_JSON_OBSERVATION_BYTES`] plus the strings of each): a small
/// compact body (a target id is written once, its observations refer to it) must not
/// become a batch larger in memory than the JSON body a collector would accept.
pub fn decode_at_most(bytes: &[u8], json_bytes: usize) -> Result<Batch, CompactError> {
    let body = bytes.strip_prefix(&MAGIC).ok_or(CompactError::Magic)?;
    let (c, rest): (Columns, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| CompactError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CompactError::Malformed(format!(
            "{} bytes after the batch",
            rest.len()
        )));
    }
    let n = c.target_delta.len();
    if n.saturating_mul(MIN_JSON_OBSERVATION_BYTES) > json_bytes {
        return Err(CompactError::TooLarge(json_bytes));
    }
    for (name, len) in [
        ("time", c.time_delta_us.len()),
        ("result", c.result.len()),
        ("rtt", c.rtt.len()),
        ("block", c.block.len()),
    ] {
        if len != n {
            return Err(bad(format!(
                "column `{name}` has {len} rows, not {n} (observations)"
            )));
        }
    }
    let t = c.target_group.len();
    if c.target_shared.len() != t || c.target_suffix.len() != t {
        return Err(bad("target columns of different lengths"));
    }
    if t > n {
        return Err(bad(format!("{t} targets for {n} observations")));
    }
    let blocks = c.block.iter().filter(|b| **b != 0).count();
    if c.block_probes.len() != blocks
        || c.block_replies.len() != blocks
        || c.block_belief.len() != blocks
    {
        return Err(bad("block columns disagree with the block flags"));
    }
    let mut ids: Vec<String> = Vec::with_capacity(t);
    for (i, (shared, suffix)) in c.target_shared.iter().zip(&c.target_suffix).enumerate() {
        let prev = if i == 0 { "" } else { ids[i - 1].as_str() };
        let shared = *shared as usize;
        let head = prev
            .get(..shared)
            .ok_or_else(|| bad(format!("target {i} shares {shared} bytes of a shorter id")))?;
        if shared + suffix.len() > MAX_TARGET_BYTES {
            return Err(bad(format!(
                "target {i} is longer than {MAX_TARGET_BYTES} bytes"
            )));
        }
        ids.push(format!("{head}{suffix}"));
    }
    let groups = c
        .target_group
        .iter()
        .map(|g| {
            c.groups
                .get(*g as usize)
                .ok_or_else(|| bad(format!("target group {g} out of range")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut timings = c.timings.iter().peekable();
    let mut blocks = 0usize;
    let mut index: i64 = -1;
    let mut time: i64 = 0;
    let mut observations = Vec::with_capacity(n);
    let mut as_json = 0usize;
    for i in 0..n {
        index = index
            .checked_add(1)
            .and_then(|x| x.checked_add(c.target_delta[i]))
            .ok_or_else(|| bad("target index overflows"))?;
        let ti = usize::try_from(index)
            .ok()
            .filter(|x| *x < t)
            .ok_or_else(|| bad(format!("observation {i}: target {index} out of range")))?;
        let g = groups[ti];
        as_json = as_json.saturating_add(
            MIN_JSON_OBSERVATION_BYTES
                + ids[ti].len()
                + c.agent.len()
                + g.region.as_ref().map_or(0, String::len),
        );
        if as_json > json_bytes {
            return Err(CompactError::TooLarge(json_bytes));
        }
        let signal = *Signal::PROBED
            .get(usize::from(g.signal))
            .ok_or_else(|| bad(format!("signal {} unknown", g.signal)))?;
        time = time.wrapping_add(c.time_delta_us[i]);
        let measured_at = DateTime::<Utc>::from_timestamp_micros(time)
            .ok_or_else(|| bad(format!("observation {i}: time out of range")))?;
        let code = c.result[i];
        let (ok, phase, failure) = if code == 0 {
            (true, None, None)
        } else {
            let k = usize::from(code - 1);
            let p = Phase::ALL.get(k / usize::from(FAILURES));
            let f = Failure::ALL[k % usize::from(FAILURES)];
            let p = p.ok_or_else(|| bad(format!("observation {i}: result {code} unknown")))?;
            (false, Some(*p), Some(f))
        };
        let block = match c.block[i] {
            0 => None,
            v => {
                let verdict = match v {
                    1 => BlockVerdict::Up,
                    2 => BlockVerdict::Down,
                    3 => BlockVerdict::Uncertain,
                    _ => return Err(bad(format!("observation {i}: block verdict {v} unknown"))),
                };
                let r = BlockReport {
                    belief: f64::from(c.block_belief[blocks]),
                    verdict,
                    probes: c.block_probes[blocks],
                    replies: c.block_replies[blocks],
                };
                blocks += 1;
                Some(r)
            }
        };
        let timings_ms = match timings.peek() {
            Some((at, v)) if *at as usize == i => {
                timings.next();
                let [resolve, connect, tls, first_byte] = v.map(from_ten_us);
                Some(HttpTimingsMs {
                    resolve,
                    connect,
                    tls,
                    first_byte,
                })
            }
            _ => None,
        };
        observations.push(Observation {
            agent: c.agent.clone(),
            target: ids[ti].clone(),
            country: g.country.clone(),
            asn: g.asn,
            region: g.region.clone(),
            signal,
            control: g.control,
            measured_at,
            ok,
            phase,
            failure,
            rtt_ms: from_ten_us(c.rtt[i]),
            block,
            timings_ms,
        });
    }
    if timings.next().is_some() {
        return Err(bad("timings out of order or beyond the observations"));
    }
    Ok(Batch {
        batch_id: c.batch_id,
        agent: c.agent,
        observations,
        spool: c.spool.map(|(a, b, c, d)| SpoolStatus {
            observations: a,
            dropped_observations: b,
            catalog_refusals: c,
            politeness_skips: d,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(i: u32) -> Observation {
        Observation {
            agent: "a1".into(),
            target: format!("icmp:5.{}.{}.0/24", i / 256, i % 256),
            country: "KZ".into(),
            asn: 9198,
            region: None,
            signal: Signal::Icmp,
            control: false,
            measured_at: DateTime::<Utc>::from_timestamp_micros(
                1_700_000_000_000_000 + i64::from(i) * 1_234,
            )
            .unwrap(),
            ok: true,
            phase: None,
            failure: None,
            rtt_ms: Some(f64::from(i % 7 * 5 + 1) / 100.0),
            block: Some(BlockReport {
                belief: 0.990_000_009_536_743_2,
                verdict: BlockVerdict::Up,
                probes: 1,
                replies: 1,
            }),
            timings_ms: None,
        }
    }

    fn batch(observations: Vec<Observation>) -> Batch {
        Batch {
            batch_id: "a1-7".into(),
            agent: "a1".into(),
            observations,
            spool: Some(SpoolStatus {
                observations: 10,
                dropped_observations: 2,
                catalog_refusals: 0,
                politeness_skips: 5,
            }),
        }
    }

    #[test]
    fn every_field_round_trips() {
        let mut v: Vec<Observation> = (0..300).map(obs).collect();
        v[3].ok = false;
        v[3].rtt_ms = None;
        v[3].phase = Some(Phase::IcmpEcho);
        v[3].failure = Some(Failure::Timeout);
        v[3].block = Some(BlockReport {
            belief: 0.25,
            verdict: BlockVerdict::Down,
            probes: 4,
            replies: 0,
        });
        v[4].region = Some("Almaty".into());
        v[5].signal = Signal::Http;
        v[5].target = "http:https://ex.kz/é".into();
        v[5].block = None;
        v[5].timings_ms = Some(HttpTimingsMs {
            connect: Some(1.25),
            first_byte: Some(30.5),
            ..HttpTimingsMs::default()
        });
        v[6].control = true;
        v[6].country = "NL".into();
        v[7] = v[2].clone();
        v[8].ok = false;
        v[8].phase = Some(Phase::Resolve);
        v[8].failure = Some(Failure::Unknown);
        let b = batch(v);
        let back = decode(&encode(&b)).unwrap();
        assert_eq!(back, b);
        let bytes = encode(&b);
        let json = serde_json::to_vec(&b).unwrap().len();
        assert!(decode_at_most(&bytes, json).is_ok());
        // The count is a lower bound of the JSON (these records take ~230 bytes).
        assert_eq!(
            decode_at_most(&bytes, json / 4),
            Err(CompactError::TooLarge(json / 4))
        );
        let mut none = batch(vec![]);
        none.spool = None;
        assert_eq!(decode(&encode(&none)).unwrap(), none);
    }

    #[test]
    fn rounding_is_to_the_documented_units() {
        let mut o = obs(1);
        o.measured_at = "2026-12-07T10:00:00.123456789Z".parse().unwrap();
        o.rtt_ms = Some(0.123_456);
        let back = decode(&encode(&batch(vec![o]))).unwrap();
        let o = &back.observations[0];
        assert_eq!(
            o.measured_at.to_rfc3339(),
            "2026-12-07T10:00:00.123456+00:00"
        );
        assert_eq!(o.rtt_ms, Some(0.12));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode(&batch((0..20).map(obs).collect()));
        assert_eq!(decode(b"{\"batch_id\":1}"), Err(CompactError::Magic));
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        for i in MAGIC.len()..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x5a;
            let _ = decode(&b);
        }
    }
}
