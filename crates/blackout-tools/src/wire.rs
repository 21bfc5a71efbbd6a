//! `blackout wire-sizes`: what an observation costs in each encoding an upload (or the
//! log) could use, measured over real batches: those a collector logged as its agents
//! sent them. The figures behind the choice of the compact batch under zstd
//! ([`blackout_model::compact`]); `bench/wire.sh` feeds it a real agent's batches.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use blackout_model::compact;
use blackout_model::observation::{Batch, BlockVerdict, Failure, Phase, Signal};
use serde::Serialize;

/// Arguments of `blackout wire-sizes`.
#[derive(Debug, Clone, clap::Args)]
pub struct WireSizesArgs {
    /// A collector's state directory (its `observations-*.jsonl` segments are read).
    #[arg(long, value_name = "DIR")]
    pub log: PathBuf,
    /// The goal, bytes per observation, printed beside each figure.
    #[arg(long, default_value_t = 32.0)]
    pub goal_bytes: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum WireSizesError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no batches found")]
    Empty { path: PathBuf },
}

/// One encoding: its name and how it turns a batch into bytes.
pub struct Scheme {
    pub name: &'static str,
    pub encode: fn(&Batch) -> Vec<u8>,
}

fn json(b: &Batch) -> Vec<u8> {
    serde_json::to_vec(b).expect("a batch always serialises")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(data).expect("writing into memory");
    g.finish().expect("writing into memory")
}

fn zstd_at(data: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(data, level).expect("zstd compresses into memory")
}

/// One observation as a row, for the row-wise alternative: every field in each record,
/// no dictionary (what postcard makes of a plain record type).
#[derive(Serialize)]
struct Row<'a> {
    target: &'a str,
    country: &'a str,
    asn: u32,
    region: Option<&'a str>,
    signal: u8,
    control: bool,
    measured_at_us: i64,
    ok: bool,
    phase: Option<u8>,
    failure: Option<u8>,
    rtt_10us: Option<u32>,
    block: Option<(u8, f32, u32, u32)>,
}

fn postcard_rows(b: &Batch) -> Vec<u8> {
    let pos = |x: usize| x as u8;
    let rows: Vec<Row> = b
        .observations
        .iter()
        .map(|o| Row {
            target: &o.target,
            country: &o.country,
            asn: o.asn,
            region: o.region.as_deref(),
            signal: pos(Signal::PROBED
                .iter()
                .position(|s| *s == o.signal)
                .unwrap_or(0)),
            control: o.control,
            measured_at_us: o.measured_at.timestamp_micros(),
            ok: o.ok,
            phase: o
                .phase
                .map(|p| pos(Phase::ALL.iter().position(|x| *x == p).unwrap_or(0))),
            failure: o
                .failure
                .map(|f| pos(Failure::ALL.iter().position(|x| *x == f).unwrap_or(0))),
            rtt_10us: o.rtt_ms.map(|r| (r * 100.0).round() as u32),
            block: o.block.map(|k| {
                let v = match k.verdict {
                    BlockVerdict::Up => 0,
                    BlockVerdict::Down => 1,
                    BlockVerdict::Uncertain => 2,
                };
                (v, k.belief as f32, k.probes, k.replies)
            }),
        })
        .collect();
    postcard::to_stdvec(&(&b.batch_id, &b.agent, rows)).expect("postcard into memory")
}

/// The encodings compared, in the order printed.
pub const SCHEMES: &[Scheme] = &[
    Scheme {
        name: "JSON (today)",
        encode: json,
    },
    Scheme {
        name: "JSON + gzip (level 6)",
        encode: |b| gzip(&json(b)),
    },
    Scheme {
        name: "JSON + zstd (level 3)",
        encode: |b| zstd_at(&json(b), 3),
    },
    Scheme {
        name: "postcard rows, no dictionary",
        encode: postcard_rows,
    },
    Scheme {
        name: "postcard rows + zstd (level 3)",
        encode: |b| zstd_at(&postcard_rows(b), 3),
    },
    Scheme {
        name: "compact columns",
        encode: compact::encode,
    },
    Scheme {
        name: "compact columns + gzip (level 6)",
        encode: |b| gzip(&compact::encode(b)),
    },
    Scheme {
        name: "compact columns + zstd (level 3)",
        encode: |b| zstd_at(&compact::encode(b), 3),
    },
    Scheme {
        name: "compact columns + zstd (level 19)",
        encode: |b| zstd_at(&compact::encode(b), 19),
    },
    Scheme {
        name: "log record (compact + zstd 3, base64, crc)",
        encode: blackout_collector::log::encode_record,
    },
    Scheme {
        name: "log record before (JSON, crc)",
        encode: blackout_collector::log::encode_json_record,
    },
];

/// Bytes of every batch in each of [`SCHEMES`], and the observations they hold.
pub fn measure(batches: &[Batch]) -> (Vec<u64>, u64) {
    let observations = batches.iter().map(|b| b.observations.len() as u64).sum();
    let sizes = SCHEMES
        .iter()
        .map(|s| batches.iter().map(|b| (s.encode)(b).len() as u64).sum())
        .collect();
    (sizes, observations)
}

/// The batches of a collector's log (good records only; the log's own reader sets the
/// others aside at the collector's start).
pub fn read_log(dir: &Path) -> Result<Vec<Batch>, WireSizesError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WireSizesError::Io { path, source }
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("observations-"))
        })
        .collect();
    names.sort();
    let mut batches = Vec::new();
    for path in names {
        let f = std::fs::File::open(&path).map_err(io(&path))?;
        for line in BufReader::new(f).split(b'\n') {
            let line = line.map_err(io(&path))?;
            if let Ok(b) = blackout_collector::log::decode_record(&line) {
                batches.push(b);
            }
        }
    }
    if batches.is_empty() {
        return Err(WireSizesError::Empty {
            path: dir.to_path_buf(),
        });
    }
    Ok(batches)
}

/// `blackout wire-sizes`: prints the table.
pub fn run(args: &WireSizesArgs) -> Result<(), WireSizesError> {
    let batches = read_log(&args.log)?;
    let (sizes, n) = measure(&batches);
    let goal = args.goal_bytes;
    println!(
        "{} batches, {n} observations ({:.0} per batch)",
        batches.len(),
        n as f64 / batches.len() as f64
    );
    println!("| encoding | bytes per observation | goal <= {goal:.0} |");
    println!("|---|---:|---|");
    for (s, bytes) in SCHEMES.iter().zip(&sizes) {
        let per = *bytes as f64 / n.max(1) as f64;
        let verdict = if per <= goal { "met" } else { "missed" };
        println!("| {} | {per:.1} | {verdict} |", s.name);
    }
    Ok(())
}
