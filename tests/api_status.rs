//! Every refusal of the upload API, against the real collector process: the status,
//! the reason (naming the record and field), and that nothing of a refused batch is
//! counted or logged.

mod faults_support;

use std::io::{Read, Write};
use std::time::Duration;

use faults_support::*;
use serde_json::{Value, json};

const MAX_BODY: usize = 65_536;

fn obs(agent: &str, target: &str) -> Value {
    json!({
        "agent": agent, "target": target, "country": "KZ", "asn": 64500, "signal": "tcp",
        "measured_at": chrono::Utc::now().to_rfc3339(), "ok": true, "rtt_ms": 0.4
    })
}

struct Api {
    base: String,
    targets: Vec<String>,
}

impl Api {
    fn post(&self, token: Option<&str>, body: Vec<u8>) -> (u16, Option<String>, String) {
        block_on(async {
            let mut r = client()
                .post(format!("{}api/v1/observations", self.base))
                .header("content-type", "application/json")
                .body(body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let ra = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (status, ra, resp.text().await.unwrap())
        })
    }

    fn batch(&self, id: &str, agent: &str, n: usize) -> Value {
        let o: Vec<Value> = (0..n)
            .map(|i| obs(agent, &self.targets[i % self.targets.len()]))
            .collect();
        json!({"batch_id": id, "agent": agent, "observations": o})
    }
}

#[test]
fn refusals_name_record_and_field_and_count_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, _l) = tcp_catalog(0, 5);
    let targets: Vec<String> = tcp_targets(&catalog);
    let c = CollectorSetup::new(
        tmp.path(),
        &catalog,
        &[("a1", "tok-a1"), ("a2", "tok-a2")],
        &format!(
            "max_body_bytes = {MAX_BODY}\nagent_body_budget_bytes = {}",
            2 * MAX_BODY
        ),
    );
    let _collector = c.start();
    let api = Api {
        base: c.url(),
        targets,
    };
    let good = api.batch("g1", "a1", 3);

    let bytes = |v: &Value| serde_json::to_vec(v).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = api.batch("bad", "a1", 3);
        f(&mut b);
        bytes(&b)
    };

    // (token, body, status, words the reason must contain)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        ("no token", None, bytes(&good), 401, vec!["token"]),
        (
            "wrong token",
            Some("nope"),
            bytes(&good),
            401,
            vec!["token"],
        ),
        (
            "wrong token, junk body",
            Some("nope"),
            b"{".to_vec(),
            401,
            vec!["token"],
        ),
        (
            "another agent's token",
            Some("tok-a2"),
            bytes(&good),
            403,
            vec!["\\\"a2\\\"", "\\\"a1\\\""],
        ),
        (
            "too large",
            Some("tok-a1"),
            bytes(&api.batch("big", "a1", 600)),
            413,
            vec!["limit"],
        ),
        (
            "malformed JSON",
            Some("tok-a1"),
            b"{\"batch_id\": ".to_vec(),
            400,
            vec!["malformed"],
        ),
        (
            "unknown field",
            Some("tok-a1"),
            with(&|b| b["observations"][1]["colour"] = json!("red")),
            400,
            vec!["colour"],
        ),
        (
            "future timestamp",
            Some("tok-a1"),
            with(&|b| {
                b["observations"][2]["measured_at"] =
                    json!((chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339())
            }),
            400,
            vec!["observations[2]", "`measured_at`"],
        ),
        (
            "ancient timestamp",
            Some("tok-a1"),
            with(&|b| b["observations"][0]["measured_at"] = json!("2001-01-01T00:00:00Z")),
            400,
            vec!["observations[0]", "`measured_at`"],
        ),
        (
            "absurd rtt",
            Some("tok-a1"),
            with(&|b| b["observations"][1]["rtt_ms"] = json!(9.0e9)),
            400,
            vec!["observations[1]", "`rtt_ms`"],
        ),
        (
            "unknown target",
            Some("tok-a1"),
            with(&|b| b["observations"][2]["target"] = json!("tcp:192.0.2.1:443")),
            400,
            vec!["observations[2]", "`target`", "192.0.2.1"],
        ),
        (
            "wrong country for a known target",
            Some("tok-a1"),
            with(&|b| b["observations"][1]["country"] = json!("UZ")),
            400,
            vec!["observations[1]", "`country`"],
        ),
        (
            "record of another agent inside the batch",
            Some("tok-a1"),
            with(&|b| b["observations"][1]["agent"] = json!("a2")),
            400,
            vec!["observations[1]", "`agent`"],
        ),
    ];
    for (what, token, body, want, words) in cases {
        let (status, _, reason) = api.post(token, body);
        println!("{what}: {status} {reason}");
        assert_eq!(status, want, "{what}: {reason}");
        for w in words {
            assert!(reason.contains(w), "{what}: reason {reason:?} lacks {w:?}");
        }
        assert_eq!(ingested(&c.url(), "a1"), 0, "{what}: something was counted");
        assert_eq!(
            assert_log_exactly_once(&c),
            0,
            "{what}: something was logged"
        );
    }

    // A good batch is taken once; its re-send is acknowledged and not counted again.
    let (s, _, r) = api.post(Some("tok-a1"), bytes(&good));
    assert_eq!(s, 200, "{r}");
    assert!(r.contains("\"duplicate\":false"), "{r}");
    let (s, _, r) = api.post(Some("tok-a1"), bytes(&good));
    assert_eq!(s, 200, "{r}");
    assert!(r.contains("\"duplicate\":true"), "{r}");
    assert_eq!(ingested(&c.url(), "a1"), 3);
    // Batch ids are per agent: a2 using a1's id neither suppresses nor is suppressed.
    let (s, _, r) = api.post(Some("tok-a2"), bytes(&api.batch("g1", "a2", 2)));
    assert_eq!(s, 200, "{r}");
    assert!(r.contains("\"duplicate\":false"), "{r}");
    assert_eq!(ingested(&c.url(), "a2"), 2);

    // Overload: a1's share of the body memory is two bodies of the largest size; hold it
    // with requests whose bodies never come. a1's next upload is refused at once with
    // 503 and Retry-After and counts nothing; a2, with its own share, is not touched.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(c.addr).unwrap();
        write!(
            s,
            "POST /api/v1/observations HTTP/1.1\r\nhost: x\r\nauthorization: Bearer tok-a1\r\ncontent-type: application/json\r\ncontent-length: {MAX_BODY}\r\n\r\n{{"
        )
        .unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, retry_after, reason) = api.post(Some("tok-a1"), bytes(&api.batch("g2", "a1", 3)));
    assert_eq!(status, 503, "{reason}");
    assert!(reason.contains("busy (memory budget)"), "{reason}");
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(ingested(&c.url(), "a1"), 3);
    let overloaded = metric_sum(
        &scrape(&c.url()),
        "blackout_batches_total",
        &["result=\"overloaded\""],
    );
    assert!(overloaded >= 1.0);
    let (s, _, r) = api.post(Some("tok-a2"), bytes(&api.batch("g2", "a2", 1)));
    assert_eq!(s, 200, "{r}");
    // Released slots serve again.
    for mut s in held {
        s.write_all(b"}").unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let (s, _, r) = api.post(Some("tok-a1"), bytes(&api.batch("g2", "a1", 3)));
    assert_eq!(s, 200, "{r}");
    assert_eq!(ingested(&c.url(), "a1"), 6);
    assert_eq!(assert_log_exactly_once(&c), 3 + 2 + 1 + 3);
}
