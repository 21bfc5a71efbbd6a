//! Load: ten times the nominal rate (FAULTS.md: nominal is 2,000 observations per second
//! for one collector, i.e. 20 agents each probing 30,000 targets on a 300 s round),
//! plus a flood of maximum-size batches from 64 connections that ignore Retry-After.
//! The collector's peak RSS (VmHWM) stays under RSS_BOUND_MIB, every observation it
//! acknowledged is counted exactly once, and what it could not take it refused with
//! 503 + Retry-After.

mod faults_support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faults_support::*;

const NOMINAL_OBS_PER_SEC: u64 = 2_000;
const AGENTS: u64 = 20;
const BATCH: usize = 500;
const PACED_SECS: u64 = 10;
const FLOOD_CONNECTIONS: usize = 64;
const FLOOD_BATCH: usize = 5_000;
const TARGETS: usize = 1_000;
/// Stated in FAULTS.md: the ingest path holds at most 64 MiB of request bodies and
/// their decoded batches; the rest is the process and its state.
const RSS_BOUND_MIB: u64 = 400;

fn body(agent: &str, id: &str, n: usize, at: &str) -> String {
    let mut s = format!("{{\"batch_id\":\"{id}\",\"agent\":\"{agent}\",\"observations\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let port = 10_000 + i % TARGETS;
        write!(
            s,
            "{{\"agent\":\"{agent}\",\"target\":\"tcp:127.0.0.1:{port}\",\"country\":\"KZ\",\"asn\":64500,\"signal\":\"tcp\",\"measured_at\":\"{at}\",\"ok\":{},\"rtt_ms\":0.3{}}}",
            i % 7 != 0,
            if i % 7 == 0 { ",\"phase\":\"connect\",\"failure\":\"refused\"" } else { "" }
        )
        .unwrap();
    }
    s += "]}";
    s
}

#[derive(Default)]
struct Tally {
    acked_obs: AtomicU64,
    accepted_batches: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
}

/// Sends one batch. Refused with 503: counted as busy, not retried (this load ignores
/// Retry-After). Lost on the way (timeout): sent again, as an agent would, until the
/// collector says whether it has it, so that the tally of acknowledged observations is
/// exact.
async fn send(client: &reqwest::Client, url: &str, token: &str, body: String, n: usize, t: &Tally) {
    let mut lost_before = false;
    for _ in 0..20 {
        let r = client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status() == 200 => {
                let v: serde_json::Value = resp.json().await.unwrap();
                if v["duplicate"] == true {
                    assert!(lost_before, "duplicate of a batch never acknowledged");
                } else {
                    assert_eq!(v["accepted"].as_u64().unwrap(), n as u64);
                }
                t.acked_obs.fetch_add(n as u64, Ordering::Relaxed);
                t.accepted_batches.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(resp) if resp.status() == 503 => {
                assert!(resp.headers().get("retry-after").is_some());
                t.busy.fetch_add(1, Ordering::Relaxed);
                if !lost_before {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(resp) => panic!(
                "unexpected {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ),
            Err(e) => {
                if !lost_before {
                    eprintln!("lost on the way: {e}");
                }
                lost_before = true;
                t.other.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("a batch lost on the way never got an answer");
}

#[test]
fn ten_times_nominal_rate_in_bounded_memory_and_every_ack_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let mut catalog =
        String::from("country = \"KZ\"\n\n[[network]]\nasn = 64500\nname = \"load\"\n");
    for i in 0..TARGETS {
        catalog += &format!(
            "\n[[tcp]]\naddress = \"127.0.0.1:{}\"\nasn = 64500\n",
            10_000 + i
        );
    }
    let mut agents: Vec<(String, String)> = (0..AGENTS)
        .map(|i| (format!("L{i}"), format!("tok-L{i}")))
        .collect();
    agents.push(("flood".into(), "tok-flood".into()));
    let refs: Vec<(&str, &str)> = agents
        .iter()
        .map(|(a, t)| (a.as_str(), t.as_str()))
        .collect();
    let c = CollectorSetup::new(tmp.path(), &catalog, &refs, "");
    let collector = c.start();
    let url = format!("{}api/v1/observations", c.url());
    let tally = Arc::new(Tally::default());
    let flood_tally = Arc::new(Tally::default());
    let at = chrono::Utc::now().to_rfc3339();
    let per_agent_period =
        Duration::from_secs_f64(BATCH as f64 * AGENTS as f64 / (10 * NOMINAL_OBS_PER_SEC) as f64);
    let t0 = Instant::now();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..AGENTS {
            let (client, url, t, at) = (client.clone(), url.clone(), tally.clone(), at.clone());
            tasks.push(tokio::spawn(async move {
                let agent = format!("L{i}");
                let token = format!("tok-L{i}");
                let mut tick = tokio::time::interval(per_agent_period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let end = tokio::time::Instant::now() + Duration::from_secs(PACED_SECS);
                let mut seq = 0;
                let mut inflight = Vec::new();
                while tokio::time::Instant::now() < end {
                    tick.tick().await;
                    seq += 1;
                    let b = body(&agent, &format!("{agent}-{seq}"), BATCH, &at);
                    let (client, url, token, t) =
                        (client.clone(), url.clone(), token.clone(), t.clone());
                    // Offered at the paced rate whatever the answers take.
                    inflight.push(tokio::spawn(async move {
                        send(&client, &url, &token, b, BATCH, &t).await
                    }));
                }
                // Every answer is awaited: an ack the test did not see would look like
                // an observation counted without being acknowledged.
                for f in inflight {
                    f.await.unwrap();
                }
            }));
        }
        let flood_body = Arc::new(body("flood", "FLOODID", FLOOD_BATCH, &at));
        for k in 0..FLOOD_CONNECTIONS {
            let (client, url, t, fb) = (
                client.clone(),
                url.clone(),
                flood_tally.clone(),
                flood_body.clone(),
            );
            tasks.push(tokio::spawn(async move {
                // The second half of the paced load gets the flood on top.
                tokio::time::sleep(Duration::from_secs(PACED_SECS / 2)).await;
                let end = tokio::time::Instant::now() + Duration::from_secs(PACED_SECS / 2);
                let mut seq = 0;
                while tokio::time::Instant::now() < end {
                    seq += 1;
                    let b = fb.replace("FLOODID", &format!("flood-{k}-{seq}"));
                    send(&client, &url, "tok-flood", b, FLOOD_BATCH, &t).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = t0.elapsed();
    let hwm_mib = collector.vm_hwm_kib() / 1024;
    let counted: u64 = (0..AGENTS)
        .map(|i| format!("L{i}"))
        .chain(["flood".to_string()])
        .map(|a| ingested(&c.url(), &a))
        .sum();
    let paced = tally.acked_obs.load(Ordering::Relaxed);
    let flood = flood_tally.acked_obs.load(Ordering::Relaxed);
    let acked = paced + flood;
    let offered_paced = 10 * NOMINAL_OBS_PER_SEC * PACED_SECS;
    println!(
        "paced: offered {offered_paced} observations in {} s at 10x nominal, acked {paced} ({} batches), 503 {}, lost-and-resent {}",
        PACED_SECS,
        tally.accepted_batches.load(Ordering::Relaxed),
        tally.busy.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    println!(
        "flood ({FLOOD_CONNECTIONS} connections, {FLOOD_BATCH}-observation batches, second half): acked {flood} ({} batches), 503 {}, lost-and-resent {}",
        flood_tally.accepted_batches.load(Ordering::Relaxed),
        flood_tally.busy.load(Ordering::Relaxed),
        flood_tally.other.load(Ordering::Relaxed),
    );
    println!(
        "whole run {:.1} s, {:.0} acked observations/s; collector VmHWM {hwm_mib} MiB (bound {RSS_BOUND_MIB} MiB)",
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(counted, acked, "acknowledged and counted differ");
    assert!(
        hwm_mib < RSS_BOUND_MIB,
        "collector peak RSS {hwm_mib} MiB over the bound {RSS_BOUND_MIB} MiB"
    );
    assert!(acked > 0);
    assert!(elapsed < Duration::from_secs(30));
}
