//! `blackout-agent probe`: probe targets from a file once each and print JSON lines.
//!
//! An operator's tool in the spirit of fping, and what the throughput benchmarks drive:
//! every target is probed once (ICMP: one plain echo per address, no adaptive block
//! walk, so that comparisons with fping are like for like), thousands in flight on one
//! shared socket, one JSON line per target on stdout, a summary on stderr.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use serde::Serialize;

use blackout_model::catalog::{Target, TargetKind, parse_dns_server};
use blackout_model::observation::{Failure, HttpTimingsMs, Phase, Signal};
use blackout_probe::{Outcome, ProbeError, ProbeSet, ProbeSettings};

/// A prefix in an ICMP target file expands into its addresses; more than this many in one
/// file is a typo, not a measurement.
const MAX_ADDRESSES: u64 = 1 << 24;

/// A signal an agent can probe: `bgp` comes from route sources, not from targets.
fn probed_signal(s: &str) -> Result<Signal, String> {
    let signal: Signal = s.parse()?;
    if !signal.is_probed() {
        return Err(format!(
            "{signal} is not probed (the collector reads it from route sources): expected icmp, dns, http or tcp"
        ));
    }
    Ok(signal)
}

/// Arguments of `blackout-agent probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Kind of probe: icmp, dns, http or tcp.
    #[arg(long, value_parser = probed_signal)]
    pub signal: Signal,
    /// File with one target a line (`-` for stdin). icmp: IP or prefix (every address of
    /// the prefix); dns: `SERVER QNAME [QTYPE]` (SERVER is IP, IP:PORT or `system`; QTYPE
    /// defaults to A); http: `URL [IP]` (IP pins the server's address); tcp: `IP:PORT`.
    /// Blank lines and lines starting with `#` are skipped.
    #[arg(long, value_name = "FILE", required_unless_present = "target")]
    pub targets: Option<String>,
    /// Targets on the command line, as fping takes them: each argument is one line of the
    /// target file's format (quote a DNS or HTTP line with its spaces). Probed after the
    /// file's, when both are given.
    #[arg(value_name = "TARGET")]
    pub target: Vec<String>,
    /// Probes in flight at once.
    #[arg(long, default_value_t = 4096)]
    pub concurrency: usize,
    /// Per-probe timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

/// One target of the file, ready to probe.
#[derive(Debug, Clone)]
enum Item {
    Echo(IpAddr),
    Other(Target),
}

/// One output line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    target: &'a str,
    signal: Signal,
    ok: bool,
    rtt_ms: Option<f64>,
    failure: Option<Failure>,
    phase: Option<Phase>,
    /// HTTP only: the phases' durations (see `HttpTimings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    timings_ms: Option<HttpTimingsMs>,
}

fn read_input(path: &str) -> Result<String, ProbeError> {
    let res = if path == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    res.map_err(|e| ProbeError::Input {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// Parses a target file; errors name the file and line.
fn parse_targets(
    signal: Signal,
    text: &str,
    path: &str,
) -> Result<Vec<(String, Item)>, ProbeError> {
    let mut out = Vec::new();
    let mut addresses: u64 = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| ProbeError::Input {
            path: format!("{path}:{}", i + 1),
            reason,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let target = |kind: TargetKind| Target {
            id: line.to_string(),
            country: blackout_model::catalog::NO_COUNTRY.to_string(),
            asn: 0,
            region: None,
            control: false,
            kind,
        };
        match signal {
            Signal::Icmp => {
                if let Ok(ip) = line.parse::<IpAddr>() {
                    addresses += 1;
                    out.push((line.to_string(), Item::Echo(ip)));
                } else {
                    let net: IpNet = line
                        .parse()
                        .map_err(|_| bad(format!("{line:?} is not an IP address or prefix")))?;
                    let host_bits = (net.max_prefix_len() - net.prefix_len()) as u32;
                    if host_bits >= 63 || addresses + (1u64 << host_bits) > MAX_ADDRESSES {
                        return Err(bad(format!(
                            "{net} makes more than {MAX_ADDRESSES} addresses in all"
                        )));
                    }
                    addresses += 1u64 << host_bits;
                    // Every address, network and broadcast included: fping -g skips them,
                    // but a /24 block's .0 and .255 may well answer.
                    for i in 0..(1u64 << host_bits) {
                        let ip = match net.network() {
                            IpAddr::V4(a) => IpAddr::V4((u32::from(a) + i as u32).into()),
                            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + i as u128).into()),
                        };
                        out.push((ip.to_string(), Item::Echo(ip)));
                    }
                }
            }
            Signal::Dns => {
                if !(2..=3).contains(&fields.len()) {
                    return Err(bad("expected `SERVER QNAME [QTYPE]`".into()));
                }
                let server = parse_dns_server(fields[0]).map_err(bad)?;
                let qtype = fields.get(2).copied().unwrap_or("A").to_ascii_uppercase();
                blackout_probe::dns::Question::parse(fields[1], &qtype).map_err(bad)?;
                out.push((
                    line.to_string(),
                    Item::Other(target(TargetKind::Dns {
                        server,
                        qname: fields[1].to_string(),
                        qtype,
                    })),
                ));
            }
            Signal::Http => {
                if !(1..=2).contains(&fields.len()) {
                    return Err(bad("expected `URL [IP]`".into()));
                }
                let url = url::Url::parse(fields[0]).map_err(|e| bad(format!("bad URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(bad(format!("{} is not an http(s) URL", fields[0])));
                }
                let address = match fields.get(1) {
                    Some(a) => Some(
                        a.parse::<IpAddr>()
                            .map_err(|_| bad(format!("{a:?} is not an IP address")))?,
                    ),
                    None => None,
                };
                out.push((
                    fields[0].to_string(),
                    Item::Other(target(TargetKind::Http {
                        url: fields[0].to_string(),
                        address,
                        expect_status: Vec::new(),
                    })),
                ));
            }
            Signal::Tcp => {
                let address: SocketAddr = line
                    .parse()
                    .map_err(|_| bad(format!("{line:?} is not IP:PORT")))?;
                out.push((
                    line.to_string(),
                    Item::Other(target(TargetKind::Tcp { address })),
                ));
            }
            Signal::Bgp => return Err(bad(format!("{signal} has no targets to probe"))),
        }
    }
    Ok(out)
}

/// What a run of the ad-hoc probe command saw, for its exit status (as fping's: 0 when
/// every target answered, 1 when some did not, 2 when it could not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub sent: usize,
    pub ok: usize,
}

impl Summary {
    pub fn all_answered(&self) -> bool {
        self.ok == self.sent
    }
}

/// Runs the ad-hoc probe command.
pub async fn run(args: &ProbeArgs) -> Result<Summary, ProbeError> {
    let mut items = Vec::new();
    if let Some(path) = &args.targets {
        let text = read_input(path)?;
        items = parse_targets(args.signal, &text, path)?;
    }
    if !args.target.is_empty() {
        items.extend(parse_targets(
            args.signal,
            &args.target.join("\n"),
            "command line (target)",
        )?);
    }
    let settings = ProbeSettings {
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        ..ProbeSettings::default()
    };
    let set = ProbeSet::new(&settings).await?;
    if args.signal == Signal::Icmp {
        return run_icmp(args, items, &set).await;
    }
    let start = Instant::now();
    let total = items.len();
    let set = &set;
    let mut results = futures::stream::iter(items)
        .map(|(label, item)| async move {
            let out = match &item {
                Item::Echo(ip) => set.icmp.echo(*ip).await,
                Item::Other(t) => set.probe(t).await,
            };
            (label, out)
        })
        .buffer_unordered(args.concurrency.max(1));
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let (mut ok, mut errors) = (0usize, 0usize);
    let mut first_error = None;
    while let Some((label, out)) = results.next().await {
        let outcome = match out {
            Ok(o) => o,
            Err(e) => {
                errors += 1;
                tracing::warn!(target = %label, error = %e, "probe could not run");
                first_error.get_or_insert(e);
                continue;
            }
        };
        ok += outcome.ok as usize;
        write_line(&mut w, &label, args.signal, &outcome).map_err(ProbeError::Output)?;
    }
    w.flush().map_err(ProbeError::Output)?;
    let sent = total - errors;
    summary(args.signal, sent, ok, errors, start.elapsed());
    match first_error {
        Some(e) if sent == 0 => Err(e),
        // A target that could not be probed did not answer either.
        _ => Ok(Summary { sent: total, ok }),
    }
}

/// ICMP: the whole address list goes to the echo engine of each family, which sends in
/// batches and keeps `--concurrency` echoes in flight (see [`blackout_probe::echo`]); one future
/// per echo cost more than the kernel's own work.
async fn run_icmp(
    args: &ProbeArgs,
    items: Vec<(String, Item)>,
    set: &ProbeSet,
) -> Result<Summary, ProbeError> {
    let mut families: [(Vec<String>, Vec<IpAddr>); 2] = Default::default();
    for (label, item) in items {
        if let Item::Echo(ip) = item {
            let f = &mut families[ip.is_ipv6() as usize];
            f.0.push(label);
            f.1.push(ip);
        }
    }
    // Open the sockets before the clock starts, and fail before printing anything.
    let mut engines = Vec::new();
    for (v4, (labels, addrs)) in [true, false].into_iter().zip(families) {
        if !addrs.is_empty() {
            engines.push((set.icmp.engine(v4).await?, labels, addrs));
        }
    }
    let concurrency = args.concurrency;
    let start = Instant::now();
    let (sent, ok) = tokio::task::spawn_blocking(move || -> std::io::Result<(usize, usize)> {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        let (mut sent, mut ok) = (0usize, 0usize);
        let mut failed_write = None;
        for (engine, labels, addrs) in &engines {
            engine.burst(addrs, concurrency, |i, result| {
                let outcome = result.outcome();
                ok += outcome.ok as usize;
                if failed_write.is_none()
                    && let Err(e) = write_line(&mut w, &labels[i], Signal::Icmp, &outcome)
                {
                    failed_write = Some(e);
                }
            });
            sent += addrs.len();
        }
        if let Some(e) = failed_write {
            return Err(e);
        }
        w.flush()?;
        Ok((sent, ok))
    })
    .await
    .map_err(|e| ProbeError::Output(std::io::Error::other(e)))?
    .map_err(ProbeError::Output)?;
    summary(Signal::Icmp, sent, ok, 0, start.elapsed());
    Ok(Summary { sent, ok })
}

/// The summary line on stderr (a closed stderr loses it, and nothing else).
fn summary(signal: Signal, sent: usize, ok: usize, errors: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let _ = writeln!(
        std::io::stderr(),
        "signal={} sent={} ok={} failed={} rate={:.4} errors={} elapsed_s={:.3} probes_per_s={:.0}",
        signal,
        sent,
        ok,
        sent - ok,
        if sent > 0 {
            ok as f64 / sent as f64
        } else {
            0.0
        },
        errors,
        secs,
        if secs > 0.0 { sent as f64 / secs } else { 0.0 },
    );
}

fn write_line(w: &mut impl Write, label: &str, signal: Signal, o: &Outcome) -> std::io::Result<()> {
    // Microsecond precision is what the clocks give; more digits would be noise.
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let line = Line {
        target: label,
        signal,
        ok: o.ok,
        rtt_ms: o.rtt.map(ms),
        failure: o.failure,
        phase: o.phase,
        timings_ms: o.timings.map(|t| HttpTimingsMs {
            resolve: t.resolve.map(ms),
            connect: t.connect.map(ms),
            tls: t.tls.map(ms),
            first_byte: t.first_byte.map(ms),
        }),
    };
    serde_json::to_writer(&mut *w, &line)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_lines_and_prefixes() {
        let t = parse_targets(Signal::Icmp, "# c\n127.0.0.1\n\n10.0.0.0/30\n::1\n", "f").unwrap();
        let labels: Vec<_> = t.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "127.0.0.1",
                "10.0.0.0",
                "10.0.0.1",
                "10.0.0.2",
                "10.0.0.3",
                "::1"
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (Signal::Icmp, "127.0.0.1\nbogus\n", "f:2"),
            (Signal::Icmp, "0.0.0.0/0\n", "f:1"),
            (Signal::Dns, "127.0.0.1\n", "f:1"),
            (Signal::Dns, "127.0.0.1 kz. BOGUS\n", "f:1"),
            (Signal::Http, "ftp://x\n", "f:1"),
            (Signal::Tcp, "127.0.0.1\n", "f:1"),
        ];
        for (signal, text, want) in cases {
            let e = parse_targets(signal, text, "f").unwrap_err().to_string();
            assert!(e.starts_with(want), "{signal}: {e}");
        }
    }

    #[test]
    fn other_kinds_parse() {
        let d = parse_targets(
            Signal::Dns,
            "127.0.0.1:5353 kz. soa\nsystem example.org\n",
            "f",
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        let h = parse_targets(Signal::Http, "https://example.org/ 127.0.0.1\n", "f").unwrap();
        match &h[0].1 {
            Item::Other(t) => assert!(matches!(
                t.kind,
                TargetKind::Http {
                    address: Some(_),
                    ..
                }
            )),
            _ => panic!("not http"),
        }
        assert_eq!(
            parse_targets(Signal::Tcp, "[::1]:443\n", "f")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn json_line_has_the_fields() {
        let mut buf = Vec::new();
        write_line(
            &mut buf,
            "127.0.0.1",
            Signal::Icmp,
            &Outcome::ok(Duration::from_micros(1500)),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["target"], "127.0.0.1");
        assert_eq!(v["signal"], "icmp");
        assert_eq!(v["ok"], true);
        assert_eq!(v["rtt_ms"], 1.5);
        assert!(v["failure"].is_null() && v["phase"].is_null());
        buf.clear();
        write_line(
            &mut buf,
            "x",
            Signal::Tcp,
            &Outcome::failed(Phase::Connect, Failure::Refused),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            (v["failure"].as_str(), v["phase"].as_str()),
            (Some("refused"), Some("connect"))
        );
        assert!(v.get("timings_ms").is_none(), "{v}");
    }

    #[test]
    fn http_line_has_the_phases() {
        let mut o = Outcome::ok(Duration::from_micros(2500));
        o.timings = Some(blackout_probe::HttpTimings {
            resolve: None,
            connect: Some(Duration::from_micros(120)),
            tls: Some(Duration::from_nanos(1_234_567)),
            first_byte: Some(Duration::from_micros(900)),
        });
        let mut buf = Vec::new();
        write_line(&mut buf, "https://x/", Signal::Http, &o).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            v["timings_ms"],
            serde_json::json!({"connect": 0.12, "tls": 1.235, "first_byte": 0.9}),
            "{v}"
        );
    }
}
