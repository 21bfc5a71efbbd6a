//! What the test sees of the world: the collector's /metrics and API, Prometheus through
//! PromQL, and the collector's durable observation log.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{PROMETHEUS_LISTEN, World};

/// One sample of a text exposition or of a PromQL vector.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// A parsed /metrics scrape.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub Vec<Sample>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let value: f64 = match value.parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            out.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Metrics(out)
    }

    /// The value of the one series `name` with all of `labels` (None: absent).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
            .map(|s| s.value)
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    // Values written by the prometheus crate: `k="v",k2="v2"`; ours hold no quotes.
    s.split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
        })
        .collect()
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl World {
    /// GET `url` from inside namespace `role` (the test process itself is in no namespace
    /// of the world). Returns (status, body); status 0 when nothing answered.
    pub fn http_get(&self, role: &str, url: &str) -> (u16, String) {
        self.http_get_within(role, url, 5)
    }

    pub fn http_get_within(&self, role: &str, url: &str, timeout_secs: u32) -> (u16, String) {
        let ns = self.ns(role);
        let t = timeout_secs.to_string();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "curl",
                "-sS",
                "-m",
                &t,
                "-w",
                "\n%{http_code}",
                url,
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.rsplit_once('\n') {
            Some((body, code)) => (code.trim().parse().unwrap_or(0), body.to_string()),
            None => (0, text),
        }
    }

    pub fn metrics(&self) -> Metrics {
        let (code, body) = self.http_get("col", &format!("{}/metrics", self.collector_url()));
        assert_eq!(code, 200, "GET /metrics: {body}");
        Metrics::parse(&body)
    }

    /// Instant PromQL query against the world's Prometheus (at `at`, or now).
    pub fn promql(&self, query: &str, at: Option<SystemTime>) -> Vec<Sample> {
        let ns = self.ns("col");
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            ns,
            "curl".into(),
            "-sS".into(),
            "-m".into(),
            "5".into(),
            "-G".into(),
            format!("http://{PROMETHEUS_LISTEN}/api/v1/query"),
            "--data-urlencode".into(),
            format!("query={query}"),
        ];
        if let Some(t) = at {
            args.push("--data-urlencode".into());
            args.push(format!("time={:.3}", unix(t)));
        }
        let out = Command::new("ip").args(&args).output().expect("curl");
        let v: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => return Vec::new(),
        };
        let mut samples = Vec::new();
        if let Some(result) = v["data"]["result"].as_array() {
            for r in result {
                let labels: BTreeMap<String, String> = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                samples.push(Sample {
                    name: labels.get("__name__").cloned().unwrap_or_default(),
                    labels,
                    value,
                });
            }
        }
        samples
    }

    /// Largest value PromQL sees for `selector` over `[from, to]` (None: no series).
    pub fn prom_max_over(&self, selector: &str, from: SystemTime, to: SystemTime) -> Option<f64> {
        let secs = to
            .duration_since(from)
            .unwrap_or(Duration::from_secs(1))
            .as_secs()
            .max(1);
        self.promql(
            &format!("max(max_over_time({selector}[{secs}s]))"),
            Some(to),
        )
        .first()
        .map(|s| s.value)
    }

    /// `GET /api/v1/events` as JSON, or None when the collector does not serve it (yet).
    pub fn events(&self) -> Option<Vec<Event>> {
        let (code, body) = self.http_get("col", &format!("{}/api/v1/events", self.collector_url()));
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let list = match &v {
            Value::Array(a) => a.clone(),
            Value::Object(o) => o.get("events")?.as_array()?.clone(),
            _ => return None,
        };
        Some(list.iter().map(|e| Event::from_json(e, self)).collect())
    }

    /// `GET /api/v1/status` as JSON, or None when not served (yet).
    pub fn status_api(&self) -> Option<Value> {
        let (code, body) = self.http_get("col", &format!("{}/api/v1/status", self.collector_url()));
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// Every observation the collector has durably accepted (its observation log).
    pub fn accepted_observations(&self) -> Vec<blackout_model::observation::Observation> {
        // One file per UTC day (`observations-YYYY-MM-DD.jsonl`, with retention), or the
        // single `observations.jsonl` of older builds: read them all, oldest first.
        let mut files: Vec<_> = std::fs::read_dir(self.path("collector-state"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            n.starts_with("observations") && n.ends_with(".jsonl")
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .flat_map(|p| {
                std::fs::read(p)
                    .unwrap_or_default()
                    .split(|b| *b == b'\n')
                    .filter_map(|l| blackout_collector::log::decode_record(l).ok())
                    .flat_map(|b| b.observations)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// An event as served by the collector, read leniently: the harness asserts on kind,
/// country and times, whatever else the record carries.
#[derive(Debug, Clone)]
pub struct Event {
    pub country: Option<String>,
    pub asn: Option<u32>,
    pub kind: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub raw: Value,
}

fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => DateTime::from_timestamp(n.as_f64()? as i64, 0),
        _ => None,
    }
}

impl Event {
    fn from_json(e: &Value, w: &World) -> Event {
        let entity = &e["entity"];
        let mut country = e["country"].as_str().map(str::to_string);
        let mut asn = e["asn"].as_u64().map(|a| a as u32);
        match entity {
            Value::String(s) => {
                // `XA`, `XA/<region>`, `AS64512` or `XA/AS64512`.
                for part in s.split('/') {
                    if let Some(n) = part.strip_prefix("AS").and_then(|n| n.parse().ok()) {
                        asn = asn.or(Some(n));
                    } else if country.is_none() && part.len() == 2 {
                        country = Some(part.to_string());
                    }
                }
            }
            Value::Object(o) => {
                country = country.or(o.get("country").and_then(Value::as_str).map(str::to_string));
                asn = asn.or(o.get("asn").and_then(Value::as_u64).map(|a| a as u32));
            }
            _ => {}
        }
        if country.is_none() {
            country = asn.and_then(|a| w.country_of_asn(a)).map(str::to_string);
        }
        Event {
            country,
            asn,
            kind: e["kind"].as_str().unwrap_or("").to_string(),
            start: time_of(&e["start"]),
            end: time_of(&e["end"]),
            raw: e.clone(),
        }
    }
}
