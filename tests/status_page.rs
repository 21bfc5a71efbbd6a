//! The status page at `/`, served by the real collector binary over loopback TCP targets:
//! the detector learns their baselines, then some go dark and the page shows the verdicts,
//! sparklines against the baselines and the open events; headless Chromium renders it.
//!
//! The page of a country (`/country/CC`, `/api/v1/country/CC`) during a blackout, the
//! overview's order and filter, and the offline overview are tested the same way.
//!
//! `BLACKOUT_UPDATE_SCREENSHOT=1 cargo test --test status_page` rewrites the screenshots in
//! dashboards/screenshots/ and docs/img/.

use blackout_test_support::free_port;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blackout_expose::status_page::{
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
    screenshot_in(None, url, out)
}

/// Headless Chromium, inside network namespace `netns` when given (to reach a collector
/// that listens there).
fn chromium(netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "chromium"]);
            c
        }
        None => Command::new("chromium"),
    }
}

/// The DOM of `url` after Chromium loaded and laid it out, or None without Chromium.
fn dump_dom(netns: Option<&str>, url: &str) -> Option<String> {
    if !have("chromium") {
        eprintln!("SKIP: chromium not found (Debian package chromium)");
        return None;
    }
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(netns)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium --dump-dom {url} failed");
    Some(String::from_utf8_lossy(&out.stdout).to_string())
}

fn screenshot_in(netns: Option<&str>, url: &str, out: &Path) -> Option<Vec<u8>> {
    if !have("chromium") {
        eprintln!("SKIP: chromium not found (Debian package chromium); no screenshot");
        return None;
    }
    let profile = tempfile::tempdir().unwrap();
    let mut child = chromium(netns)
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
    check_and_keep_in(bytes, blank_len, "dashboards/screenshots", name)
}

/// As [`check_and_keep`], into `dir` of the repository.
fn check_and_keep_in(bytes: &[u8], blank_len: usize, dir: &str, name: &str) {
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
        let path = repo().join(dir);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(name), bytes).unwrap();
        eprintln!("wrote {dir}/{name}");
    }
}

/// A loopback TCP target that accepts until [`Target::cut`]: then the port is closed and
/// connections are refused, as behind a shutdown that rejects rather than drops.
struct Target {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Target {
    fn open() -> Target {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // Drain the accept queue so that a full backlog never looks like an outage.
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Target {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the port; returns once it refuses connections.
    fn cut(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn toml(&self, asn: u32, region: Option<&str>) -> String {
        let region = region
            .map(|r| format!("region = \"{r}\"\n"))
            .unwrap_or_default();
        format!(
            "[[tcp]]\naddress = \"{}\"\nasn = {asn}\n{region}",
            self.addr
        )
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.cut();
    }
}

/// `blackout standalone` on a free loopback port, once it answers `/healthz`. A port free
/// a moment ago may be taken by another test's target or connection before the collector
/// binds it: then the collector exits, and another port is tried.
fn start_standalone(config: &Path, catalog: &Path) -> (Guard, SocketAddr) {
    for _attempt in 0..5 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_blackout"))
            .arg("standalone")
            .arg("--config")
            .arg(config)
            .arg("--catalog")
            .arg(catalog)
            .args(["--allow-reserved", "--round-secs", "1", "--listen"])
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start blackout standalone");
        let mut guard = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_get(addr, "/healthz").is_ok_and(|(s, _, _)| s == 200) {
                return (guard, addr);
            }
            if let Ok(Some(_)) = guard.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("blackout standalone never answered /healthz on a free port");
}

/// Detector settings for a test that lasts seconds: 2 s bins, three bins of warm-up. The
/// standalone agent uploads every 5 s, so a bin is closed 7 s after its end to hold all of
/// its observations. Thresholds and minimum durations are the defaults.
const COLLECTOR_TOML: &str = "[detect]\nbin_secs = 2\ngrace_secs = 7\nwarmup_secs = 6\nmin_warmup_bins = 3\nrecent_window_secs = 120\nbaseline_window_secs = 600\nlate_window_secs = 60\n";

/// The open events table's row for one entity.
fn event_row<'a>(html: &'a str, entity: &str) -> &'a str {
    let open = html.find("<h2>Open events</h2>").unwrap();
    let recent = html.find("<h2>Recent events</h2>").unwrap();
    let section = &html[open..recent];
    let at = section
        .find(&format!("<td><strong>{entity}</strong></td>"))
        .unwrap_or_else(|| panic!("no open event for {entity}"));
    let start = section[..at].rfind("<tr").unwrap();
    let end = at + section[at..].find("</tr>").unwrap();
    &section[start..end]
}

/// y coordinates of a polyline of class `class` in an SVG fragment.
fn ys(fragment: &str, class: &str) -> Vec<f64> {
    let points = fragment
        .split(&format!("class=\"{class}\" points=\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no {class} line in {fragment}"))
        .split('"')
        .next()
        .unwrap();
    points
        .split(' ')
        .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn collector_serves_the_status_page_and_chromium_renders_it() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    std::fs::create_dir(&cat).unwrap();
    // XA: three networks of two targets; two networks (all of region North) go dark, so
    // four of six targets: national blackout. XB: a network of four targets and one of two;
    // the small one goes dark: 4/6 of the baseline is a warning, the network an outage, a
    // partial outage. XC: stays up. The name of XA needs escaping.
    let mut xa: Vec<Target> = (0..6).map(|_| Target::open()).collect();
    let mut xb: Vec<Target> = (0..6).map(|_| Target::open()).collect();
    let xc: Vec<Target> = (0..2).map(|_| Target::open()).collect();
    let control = Target::open();
    let xa_toml: String = xa
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let asn = 64500 + i as u32 / 2;
            t.toml(asn, Some(if asn == 64502 { "South" } else { "North" }))
        })
        .collect();
    std::fs::write(
        cat.join("xa.toml"),
        format!("country = \"XA\"\nname = \"Atlantis & <Lemuria>\"\n{xa_toml}"),
    )
    .unwrap();
    let xb_toml: String = xb
        .iter()
        .enumerate()
        .map(|(i, t)| t.toml(if i < 4 { 64510 } else { 64511 }, None))
        .collect();
    std::fs::write(
        cat.join("xb.toml"),
        format!("country = \"XB\"\nname = \"Borduria\"\n{xb_toml}"),
    )
    .unwrap();
    let xc_toml: String = xc.iter().map(|t| t.toml(64520, None)).collect();
    std::fs::write(
        cat.join("xc.toml"),
        format!("country = \"XC\"\nname = \"Syldavia\"\n{xc_toml}"),
    )
    .unwrap();
    std::fs::write(
        cat.join("control.toml"),
        format!(
            "country = \"ZZ\"\nname = \"control\"\ncontrol = true\n{}",
            control.toml(64999, None)
        ),
    )
    .unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, COLLECTOR_TOML).unwrap();

    let (_collector, addr) = start_standalone(&config, &cat);
    let (_, _, first) = http_get(addr, "/").unwrap();
    assert!(first.contains("No verdict yet"), "warm-up is said");

    // Warm-up: every country gets a verdict once its baseline is learned.
    wait_for("a verdict for every country", 90, || {
        let (_, _, body) = http_get(addr, "/").ok()?;
        ["XA", "XB", "XC"]
            .iter()
            .all(|c| tile(&body, c).contains("tile normal"))
            .then_some(())
    });
    eprintln!("verdicts after {:?}", t0.elapsed());
    // Two more bins of normal history so the sparkline shows the level before the drop.
    std::thread::sleep(Duration::from_secs(4));
    for t in xa.iter_mut().take(4) {
        t.cut();
    }
    for t in xb.iter_mut().skip(4) {
        t.cut();
    }
    let cut_at = Instant::now();
    let (head, html) = wait_for("XA in outage with an event, XB in warning", 90, || {
        let (_, head, body) = http_get(addr, "/").ok()?;
        // Exact shares: the latest bin holds a reading of every target.
        (tile(&body, "XA").contains("tile outage")
            && tile(&body, "XA").contains("<strong>33%</strong>")
            && tile(&body, "XB").contains("tile warning")
            && tile(&body, "XB").contains("<strong>67%</strong>")
            && body.contains("<td><strong>XA</strong></td><td>national blackout</td>")
            && body.contains("<td><strong>XB</strong></td><td>partial</td>"))
        .then_some((head, body))
    });
    eprintln!("outage and warning {:?} after the cut", cut_at.elapsed());

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
    assert!(html.contains("<strong>1</strong> outage"));
    assert!(html.contains("<strong>1</strong> warning"));
    assert!(html.contains("<strong>1</strong> normal"));
    assert!(!html.contains("No verdict yet"));
    // Worst first: XA (outage), XB (warning), XC (normal).
    let pos = |c: &str| html.find(&format!("id=\"country-{c}\"")).unwrap();
    assert!(pos("XA") < pos("XB") && pos("XB") < pos("XC"));
    assert!(tile(&html, "XC").contains("tile normal"));
    // The latest bin against a baseline of every target up.
    let xa_tile = tile(&html, "XA");
    assert!(xa_tile.contains("<strong>33%</strong>"), "{xa_tile}");
    assert!(xa_tile.contains("baseline 100%"), "{xa_tile}");
    assert!(tile(&html, "XB").contains("<strong>67%</strong>"));
    assert!(tile(&html, "XC").contains("<strong>100%</strong>"));
    // XA's sparkline: the baseline drawn flat at the top, the value dropping from it.
    let base = ys(xa_tile, "spark-baseline");
    let value = ys(xa_tile, "spark-value");
    assert!(value.len() >= 5, "{value:?}");
    let top = value.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        base.iter().all(|y| (y - top).abs() < 0.05),
        "{base:?} {value:?}"
    );
    assert!(
        value.last().unwrap() - top > 25.0,
        "the drop is visible: {value:?}"
    );
    // The open events, with their kind and evidence.
    let xa_event = event_row(&html, "XA");
    assert!(xa_event.contains("class=\"outage\""), "{xa_event}");
    for needle in [
        "<td>national blackout</td>",
        "XA/AS64500",
        "XA/AS64501",
        "XA/North",
        "standalone",
    ] {
        assert!(xa_event.contains(needle), "{needle} in {xa_event}");
    }
    // Peak drop and share of targets down: four of six targets (more in a bin where an
    // up target had no reading).
    let shares: Vec<u32> = xa_event
        .split("<td>")
        .filter_map(|c| c.split_once("%</td>"))
        .filter_map(|(v, _)| v.parse().ok())
        .collect();
    assert_eq!(shares.len(), 2, "{xa_event}");
    assert!(shares.iter().all(|s| (67..=100).contains(s)), "{xa_event}");
    assert!(!xa_event.contains("AS64502"), "{xa_event}");
    // One shutdown, one event: the dark networks and region of XA are in the national
    // blackout's evidence, not events of their own.
    for part in ["XA/AS64500", "XA/AS64501", "XA/North"] {
        assert!(
            !html.contains(&format!("<td><strong>{part}</strong></td>")),
            "no event of its own for {part}"
        );
    }
    let xb_event = event_row(&html, "XB");
    assert!(xb_event.contains("class=\"warning\""), "{xb_event}");
    assert!(xb_event.contains("XB/AS64511") && !xb_event.contains("XB/AS64510"));
    let xb_net = event_row(&html, "XB/AS64511");
    assert!(xb_net.contains("<td>partial</td>") && xb_net.contains("class=\"outage\""));
    assert!(!html.contains("<td><strong>XC"), "no event for XC");
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
    eprintln!("test took {:?}", t0.elapsed());
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
        reason: None,
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
                mechanism: Some("routes_withdrawn".into()),
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
                    ..Evidence::default()
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
                mechanism: Some("traffic_blocked".into()),
                evidence: Evidence {
                    signals: vec!["icmp".into()],
                    networks: vec!["AS8193".into()],
                    agents: vec!["fra-1".into(), "waw-1".into()],
                    share_of_targets: Some(0.3),
                    ..Evidence::default()
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
                mechanism: Some("throttling".into()),
                evidence: Evidence {
                    signals: vec!["icmp".into(), "tcp".into()],
                    networks: vec!["AS43197".into()],
                    agents: vec!["ams-2".into()],
                    share_of_targets: None,
                    ..Evidence::default()
                },
            },
        ],
        notes: vec![],
        vantage: None,
        agents: vec![],
        filter: String::new(),
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

/// The block of a country page between `id="ID"` and the end of its section.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = start + html[start..].find("</section>").unwrap();
    &html[start..end]
}

/// The country page of the real collector during a national blackout of XA (two of its
/// three networks, all of region North, go dark): its verdict and why, its signal charted
/// against its baseline over 24 hours and 7 days, its networks and regions worst first,
/// its event with evidence; the JSON of the same; 404 for a code no catalog watches; the
/// overview with the troubled country first, each tile linked, and the `?q=` filter as
/// Chromium renders it.
#[test]
fn country_page_during_a_blackout_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("catalog");
    std::fs::create_dir(&cat).unwrap();
    let mut xa: Vec<Target> = (0..6).map(|_| Target::open()).collect();
    let xb: Vec<Target> = (0..2).map(|_| Target::open()).collect();
    let control = Target::open();
    let xa_toml: String = xa
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let asn = 64500 + i as u32 / 2;
            t.toml(asn, Some(if asn == 64502 { "South" } else { "North" }))
        })
        .collect();
    std::fs::write(
        cat.join("xa.toml"),
        format!("country = \"XA\"\nname = \"Atlantis\"\n{xa_toml}"),
    )
    .unwrap();
    // XB is listed first alphabetically by name ("Borduria" < ...): order is by state.
    let xb_toml: String = xb.iter().map(|t| t.toml(64510, None)).collect();
    std::fs::write(
        cat.join("xb.toml"),
        format!("country = \"XB\"\nname = \"Borduria\"\n{xb_toml}"),
    )
    .unwrap();
    std::fs::write(
        cat.join("control.toml"),
        format!(
            "country = \"ZZ\"\nname = \"control\"\ncontrol = true\n{}",
            control.toml(64999, None)
        ),
    )
    .unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, COLLECTOR_TOML).unwrap();
    let (_collector, addr) = start_standalone(&config, &cat);
    // Before any verdict, the page says why there is none.
    let (status, _, early) = http_get(addr, "/country/XA").unwrap();
    assert_eq!(status, 200);
    assert!(early.contains("id=\"verdict\">no data<"), "{early}");
    assert!(early.contains("No verdict"), "{early}");
    wait_for("XA normal", 90, || {
        let (_, _, body) = http_get(addr, "/country/XA").ok()?;
        body.contains("id=\"verdict\">normal<").then_some(())
    });
    // More normal bins, so the chart shows the level before the drop.
    std::thread::sleep(Duration::from_secs(4));
    for t in xa.iter_mut().take(4) {
        t.cut();
    }
    let (head, html) = wait_for("XA's page in outage with its event", 90, || {
        let (_, head, body) = http_get(addr, "/country/XA").ok()?;
        (body.contains("id=\"verdict\">outage<")
            && body.contains("<td><strong>XA</strong></td><td>national blackout</td>")
            && body.contains("<strong>33%</strong>"))
        .then_some((head, body))
    });
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    for needle in ["http://", "https://", "<script", "<link", "src=\""] {
        assert!(!html.contains(needle), "{needle} in the page");
    }
    assert!(html.contains("href=\"/\""), "a link back to the overview");
    // The verdict and why.
    let why = section(&html, "why");
    assert!(why.contains("national blackout"), "{why}");
    assert!(
        why.contains("tcp: 33% of targets up against a baseline of 100%"),
        "{why}"
    );
    // The signal against its baseline, over 24 hours and over 7 days.
    let sig = section(&html, "signals");
    for span in ["86400", "604800"] {
        let at = sig
            .find(&format!("data-window=\"{span}\""))
            .unwrap_or_else(|| panic!("no {span} s chart in {sig}"));
        let svg = &sig[at..at + sig[at..].find("</svg>").unwrap()];
        let value = ys(svg, "chart-value");
        let base = ys(svg, "chart-baseline");
        assert!(value.len() >= 5, "{span}: {value:?}");
        let top = value.iter().cloned().fold(f64::MAX, f64::min);
        assert!(
            base.iter().all(|y| (y - top).abs() < 0.05),
            "{span}: {base:?} {value:?}"
        );
        assert!(
            value.last().unwrap() - top > 50.0,
            "{span}: the drop is drawn: {value:?}"
        );
        assert!(
            svg.contains("chart-event outage"),
            "{span}: the event is shaded"
        );
    }
    // Networks and regions, worst first: the dark ones (0 %) before the lit one.
    let parts = section(&html, "parts");
    let pos = |e: &str| {
        parts
            .find(&format!("id=\"part-{e}\""))
            .unwrap_or_else(|| panic!("no row for {e} in {parts}"))
    };
    for dark in ["XA/AS64500", "XA/AS64501", "XA/North"] {
        for lit in ["XA/AS64502", "XA/South"] {
            assert!(pos(dark) < pos(lit), "{dark} before {lit}");
        }
    }
    let row = &parts[pos("XA/AS64500")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("badge outage") && row.contains("0%"), "{row}");
    // The event and its evidence.
    let events = section(&html, "events");
    for needle in ["XA/AS64500", "XA/AS64501", "XA/North", "standalone"] {
        assert!(events.contains(needle), "{needle} in {events}");
    }
    // The same as JSON.
    let (status, head, body) = http_get(addr, "/api/v1/country/XA").unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["code"], "XA");
    assert_eq!(j["status"], "outage");
    assert_eq!(j["kind"], "national_blackout");
    let points = j["signals"][0]["points"].as_array().unwrap();
    assert!(points.len() >= 5, "{points:?}");
    assert!(points.iter().any(|p| p["baseline"] == 1.0));
    assert_eq!(j["parts"][0]["status"], "outage");
    assert_eq!(j["events"][0]["kind"], "national_blackout");
    assert!(j["events"][0]["end"].is_null());
    // Codes no catalog watches: 404, for the page and the JSON. Lower case is the same.
    let (status, _, body) = http_get(addr, "/country/QQ").unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("Not watched: QQ"), "{body}");
    assert_eq!(http_get(addr, "/api/v1/country/QQ").unwrap().0, 404);
    assert_eq!(
        http_get(addr, "/country/ZZ").unwrap().0,
        404,
        "controls are no country"
    );
    assert!(
        http_get(addr, "/country/xa")
            .unwrap()
            .2
            .contains("id=\"verdict\">outage<")
    );
    // The overview: the troubled country first, tiles linked to their page.
    let (_, _, overview) = http_get(addr, "/").unwrap();
    let at = |c: &str| overview.find(&format!("id=\"country-{c}\"")).unwrap();
    assert!(at("XA") < at("XB"), "outage before normal");
    assert!(tile(&overview, "XA").contains("href=\"/country/XA\""));

    let shots = tempfile::tempdir().unwrap();
    let Some(png) = screenshot(
        &format!("http://{addr}/country/XA"),
        &shots.path().join("country.png"),
    ) else {
        return;
    };
    let blank = blank_png_len(shots.path());
    check_and_keep_in(&png, blank, "docs/img", "country-page-blackout.png");
    // The filter as Chromium renders the page of the GET form's URL.
    let dom = dump_dom(None, &format!("http://{addr}/?q=bord")).unwrap();
    assert!(dom.contains("id=\"country-XB\""), "{dom}");
    assert!(!dom.contains("id=\"country-XA\""));
    assert!(
        dom.contains("value=\"bord\""),
        "the filter is kept in the form"
    );
    let dom = dump_dom(None, &format!("http://{addr}/?q=xa")).unwrap();
    assert!(dom.contains("id=\"country-XA\"") && !dom.contains("id=\"country-XB\""));
}

use blackout_test_support::Netns;

/// The shipped catalogs in a network namespace with only loopback, as a new user's
/// offline machine: the overview says there is no healthy vantage point, and so does a
/// country's page. Chromium runs in the namespace to take the screenshot.
#[test]
fn offline_overview_and_country_page_in_chromium() {
    use blackout_test_support as common;
    if !common::is_root() || common::require("offline overview", &["ip", "chromium"]).is_none() {
        eprintln!(
            "SKIPPED offline_overview_and_country_page_in_chromium: needs root, ip, chromium"
        );
        return;
    }
    let ns = format!("bo-offpage-{}", std::process::id());
    let _ns = Netns::loopback_only(&ns);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, COLLECTOR_TOML).unwrap();
    let log = dir.path().join("standalone.log");
    let mut proc = common::Proc::spawn(
        "blackout standalone (offline)",
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(env!("CARGO_BIN_EXE_blackout"))
            .args([
                "standalone",
                "--round-secs",
                "2",
                "--listen",
                "127.0.0.1:9797",
            ])
            .arg("--config")
            .arg(&config),
        &log,
    );
    let get = |path: &str| -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:9797{path}");
        common::in_netns(&ns, move || async move {
            let r = reqwest::Client::new()
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            let s = r.status().as_u16();
            Some((s, r.text().await.ok()?))
        })
    };
    let page = wait_for("the offline overview says why", 90, || {
        proc.assert_running(&log);
        let (_, p) = get("/")?;
        p.contains("No healthy vantage point").then_some(p)
    });
    assert!(!page.contains("tile normal"));
    assert!(page.contains("href=\"/country/KZ\""));
    let (status, kz) = get("/country/KZ").unwrap();
    assert_eq!(status, 200);
    assert!(kz.contains("id=\"verdict\">no data<"), "{kz}");
    assert!(kz.contains("No verdict: no healthy vantage point"), "{kz}");
    let shots = tempfile::tempdir().unwrap();
    let png = screenshot_in(
        Some(&ns),
        "http://127.0.0.1:9797/",
        &shots.path().join("offline.png"),
    )
    .expect("chromium present");
    let blank = blank_png_len(shots.path());
    check_and_keep_in(&png, blank, "docs/img", "overview-offline.png");
}
