//! The status page at `/`, served by the real collector binary over loopback TCP targets
//! that go dark during the test, then rendered by headless Chromium.
//!
//! `BLACKOUT_UPDATE_SCREENSHOT=1 cargo test --test status_page` rewrites the screenshots in
//! dashboards/screenshots/.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blackout::expose::status_page::{
    self, CountryStatus, EventView, Evidence, SignalSeries, Status, StatusView,
};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET; returns (status, head, body). The page is small and sent in one piece.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_ascii_lowercase(), body.to_string()))
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The block of HTML of one country's tile.
fn tile<'a>(html: &'a str, code: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"country-{code}\""))
        .unwrap_or_else(|| panic!("no tile for {code}"));
    let start = html[..start].rfind("<article").unwrap();
    let end = start + html[start..].find("</article>").unwrap();
    &html[start..end]
}

/// Width and height from a PNG's IHDR, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "not a PNG: {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

/// Screenshot of `url` by headless Chromium, or None (with a message) without Chromium.
fn screenshot(url: &str, out: &Path) -> Option<Vec<u8>> {
    if !have("chromium") {
        eprintln!("SKIP: chromium not found (Debian package chromium); no screenshot");
        return None;
    }
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).ok();
    assert!(status.success(), "chromium failed: {err}");
    Some(std::fs::read(out).unwrap_or_else(|e| panic!("{}: {e}; chromium: {err}", out.display())))
}

/// A blank page of the same size: what a screenshot with nothing drawn compresses to.
fn blank_png_len(dir: &Path) -> usize {
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!doctype html><html><body></body></html>").unwrap();
    let bytes = screenshot(
        &format!("file://{}", blank.display()),
        &dir.join("blank.png"),
    )
    .expect("chromium present");
    bytes.len()
}

fn check_and_keep(bytes: &[u8], blank_len: usize, name: &str) {
    assert_eq!(png_size(bytes), (WIDTH, HEIGHT));
    // A page with tiles, text and sparklines compresses far worse than an empty one.
    assert!(
        bytes.len() > 5 * blank_len,
        "{name}: {} bytes, a blank page is {blank_len}",
        bytes.len()
    );
    eprintln!(
        "{name}: {} bytes ({}x the blank page)",
        bytes.len(),
        bytes.len() / blank_len.max(1)
    );
    if std::env::var("BLACKOUT_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let dir = repo().join("dashboards/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
        eprintln!("wrote dashboards/screenshots/{name}");
    }
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn collector_serves_the_status_page_and_chromium_renders_it() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    std::fs::create_dir(&cat).unwrap();
    // XA: four targets up, three of them go dark halfway. XB: dark from the start.
    // XC: up. Names come from config: one of them needs escaping.
    let mut xa_open: Vec<TcpListener> = (0..4).map(|_| listener()).collect();
    let xc_open: Vec<TcpListener> = (0..2).map(|_| listener()).collect();
    let control = listener();
    let tcp = |l: &TcpListener, asn: u32| {
        format!(
            "[[tcp]]\naddress = \"{}\"\nasn = {asn}\n",
            l.local_addr().unwrap()
        )
    };
    let closed = |asn: u32| {
        format!(
            "[[tcp]]\naddress = \"127.0.0.1:{}\"\nasn = {asn}\n",
            free_port()
        )
    };
    let xa: String = xa_open
        .iter()
        .enumerate()
        .map(|(i, l)| tcp(l, 64500 + (i as u32 % 2)))
        .collect();
    std::fs::write(
        cat.join("xa.toml"),
        format!("country = \"XA\"\nname = \"Atlantis & <Lemuria>\"\n{xa}"),
    )
    .unwrap();
    std::fs::write(
        cat.join("xb.toml"),
        format!(
            "country = \"XB\"\nname = \"Borduria\"\n{}{}",
            closed(64510),
            closed(64511)
        ),
    )
    .unwrap();
    let xc: String = xc_open.iter().map(|l| tcp(l, 64520)).collect();
    std::fs::write(
        cat.join("xc.toml"),
        format!("country = \"XC\"\nname = \"Syldavia\"\n{xc}"),
    )
    .unwrap();
    std::fs::write(
        cat.join("control.toml"),
        format!(
            "country = \"ZZ\"\nname = \"control\"\ncontrol = true\n{}",
            tcp(&control, 64999)
        ),
    )
    .unwrap();

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_blackout"))
        .args(["standalone", "--catalog"])
        .arg(&cat)
        .args(["--allow-reserved", "--round-secs", "1", "--listen"])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start blackout standalone");
    let _collector = Guard(child);
    wait_for("collector /healthz", 20, || {
        http_get(addr, "/healthz")
            .ok()
            .filter(|(s, _, _)| *s == 200)
    });

    // Each request samples the reachable share (at most once a second): build a history.
    let poll = |secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let (s, _, _) = http_get(addr, "/").unwrap();
            assert_eq!(s, 200);
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_for("a verdict for XB", 20, || {
        let (_, _, body) = http_get(addr, "/").ok()?;
        tile(&body, "XB").contains("tile outage").then_some(())
    });
    poll(6);
    xa_open.truncate(1);
    // Refused connections are measured within a round; the freshest reading wins.
    let (head, html) = wait_for("XA in warning after three targets went dark", 20, || {
        let (_, head, body) = http_get(addr, "/").ok()?;
        tile(&body, "XA")
            .contains("tile warning")
            .then_some((head, body))
    });
    poll(4);
    let (_, _, html_final) = http_get(addr, "/").unwrap();
    let html = if html_final.contains("tile warning") {
        html_final
    } else {
        html
    };

    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(html.starts_with("<!doctype html>"));
    // Escaped, never raw.
    assert!(html.contains("Atlantis &amp; &lt;Lemuria&gt;"));
    assert!(!html.contains("<Lemuria>"));
    // Worst first: XB (outage), XA (warning), XC (normal).
    let pos = |c: &str| html.find(&format!("id=\"country-{c}\"")).unwrap();
    assert!(pos("XB") < pos("XA") && pos("XA") < pos("XC"));
    assert!(tile(&html, "XC").contains("tile normal"));
    assert!(tile(&html, "XB").contains("<strong>0%</strong>"));
    assert!(tile(&html, "XA").contains("<strong>25%</strong>"));
    // XA's sparkline has a history: the drop from 100 % to 25 % is drawn as a line.
    let xa_tile = tile(&html, "XA");
    let points = xa_tile
        .split("class=\"spark-value\" points=\"")
        .nth(1)
        .expect("XA has a sparkline line")
        .split('"')
        .next()
        .unwrap();
    let ys: Vec<f64> = points
        .split(' ')
        .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(ys.len() >= 5, "{points}");
    let (top, bottom) = (
        ys.iter().cloned().fold(f64::MAX, f64::min),
        ys.iter().cloned().fold(f64::MIN, f64::max),
    );
    assert!(bottom - top > 30.0, "the drop is visible: {points}");
    // The control catalog is not a country.
    assert!(!html.contains("id=\"country-ZZ\""));
    // Works offline: nothing to fetch.
    for needle in ["http://", "https://", "<script", "<link", "src=\""] {
        assert!(!html.contains(needle), "{needle} in the page");
    }

    let shots = tempfile::tempdir().unwrap();
    let Some(png) = screenshot(&format!("http://{addr}/"), &shots.path().join("status.png")) else {
        return;
    };
    let blank = blank_png_len(shots.path());
    check_and_keep(&png, blank, "status-page.png");
}

/// (values, baseline) of one signal.
type Pair = (Vec<(i64, f64)>, Vec<(i64, f64)>);

/// What the page looks like with the detector's data: baselines, open and closed events.
fn example_view() -> StatusView {
    let t0 = 1_764_400_000i64;
    let series = |f: &dyn Fn(i64) -> f64, base: &dyn Fn(i64) -> f64| {
        let pts = |g: &dyn Fn(i64) -> f64| (0..72).map(|i| (t0 + i * 300, g(i))).collect();
        (pts(f), pts(base))
    };
    let daily = |level: f64, i: i64| {
        level * (1.0 + 0.06 * ((i as f64) / 72.0 * std::f64::consts::TAU).sin())
    };
    let country = |code: &str, name: &str, status, sigs: Vec<(&str, Pair)>| CountryStatus {
        code: code.into(),
        name: name.into(),
        status,
        signals: sigs
            .into_iter()
            .map(|(s, (values, baseline))| SignalSeries {
                signal: s.into(),
                values,
                baseline,
            })
            .collect(),
    };
    let at = |i: i64| chrono::DateTime::from_timestamp(t0 + i * 300, 0).unwrap();
    StatusView {
        generated_at: at(71),
        countries: vec![
            country(
                "KZ",
                "Kazakhstan",
                Status::Outage,
                vec![
                    (
                        "icmp",
                        series(
                            &|i| {
                                if i >= 58 {
                                    38.0 + (i % 3) as f64
                                } else {
                                    daily(812.0, i)
                                }
                            },
                            &|i| daily(812.0, i),
                        ),
                    ),
                    (
                        "dns",
                        series(&|i| if i >= 58 { 0.0 } else { 1.0 }, &|_| 1.0),
                    ),
                ],
            ),
            country(
                "UZ",
                "Uzbekistan",
                Status::Warning,
                vec![(
                    "icmp",
                    series(
                        &|i| {
                            if (50..66).contains(&i) {
                                daily(300.0, i) * 0.7
                            } else {
                                daily(300.0, i)
                            }
                        },
                        &|i| daily(300.0, i),
                    ),
                )],
            ),
            country(
                "KG",
                "Kyrgyzstan",
                Status::Normal,
                vec![("icmp", series(&|i| daily(140.0, i), &|i| daily(140.0, i)))],
            ),
            country(
                "TJ",
                "Tajikistan",
                Status::Normal,
                vec![("icmp", series(&|i| daily(95.0, i), &|i| daily(95.0, i)))],
            ),
            country(
                "TM",
                "Turkmenistan",
                Status::Normal,
                vec![("tcp", series(&|i| 0.8 + 0.02 * ((i % 5) as f64), &|_| 0.85))],
            ),
            country(
                "RU",
                "Russia",
                Status::Normal,
                vec![("icmp", series(&|i| daily(9100.0, i), &|i| daily(9100.0, i)))],
            ),
            country("AF", "Afghanistan", Status::Unknown, vec![]),
        ],
        events: vec![
            EventView {
                entity: "KZ".into(),
                country: "KZ".into(),
                kind: "national_blackout".into(),
                severity: Status::Outage,
                start: at(58),
                end: None,
                peak_drop: Some(0.95),
                evidence: Evidence {
                    signals: vec!["icmp".into(), "dns".into(), "tcp".into()],
                    networks: vec![
                        "AS9198".into(),
                        "AS21299".into(),
                        "AS29355".into(),
                        "AS48503".into(),
                    ],
                    agents: vec!["fra-1".into(), "ams-2".into(), "waw-1".into()],
                    share_of_targets: Some(0.94),
                },
            },
            EventView {
                entity: "UZ/AS8193".into(),
                country: "UZ".into(),
                kind: "partial".into(),
                severity: Status::Warning,
                start: at(50),
                end: None,
                peak_drop: Some(0.31),
                evidence: Evidence {
                    signals: vec!["icmp".into()],
                    networks: vec!["AS8193".into()],
                    agents: vec!["fra-1".into(), "waw-1".into()],
                    share_of_targets: Some(0.3),
                },
            },
            EventView {
                entity: "TJ".into(),
                country: "TJ".into(),
                kind: "throttling".into(),
                severity: Status::Warning,
                start: at(10),
                end: Some(at(22)),
                peak_drop: None,
                evidence: Evidence {
                    signals: vec!["icmp".into(), "tcp".into()],
                    networks: vec!["AS43197".into()],
                    agents: vec!["ams-2".into()],
                    share_of_targets: None,
                },
            },
        ],
        notes: vec![],
    }
}

#[test]
fn example_with_events_and_baselines_renders_in_chromium() {
    let html = status_page::render(&example_view());
    assert!(html.contains("national blackout"));
    assert!(html.contains("AS9198, AS21299, AS29355, AS48503"));
    assert!(html.contains("spark-baseline"));
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("example.html");
    std::fs::write(&page, &html).unwrap();
    let Some(png) = screenshot(
        &format!("file://{}", page.display()),
        &dir.path().join("example.png"),
    ) else {
        return;
    };
    let blank = blank_png_len(dir.path());
    check_and_keep(&png, blank, "status-page-example.png");
}
