//! HTTP(S) phases, timed and classified one by one, against real servers on loopback:
//! nginx (HTTP, HTTPS with a certificate from a test CA, HTTP/2 by ALPN, redirects, 5xx)
//! and small servers of our own that delay a phase by a known amount, hang in one, or let
//! no connection in.

use blackout_test_support as common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use blackout_model::catalog::{Target, TargetKind};
use blackout_model::observation::{Failure, Phase};
use blackout_probe::http::HttpProber;
use blackout_probe::{HttpTimings, Outcome, ProbeSettings, Prober};
use common::{Proc, free_port, read_http_head, require, wait_for};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    ca: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "blackout test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress(LOCALHOST));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca: ca.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

fn settings(timeout_ms: u64, max_redirects: usize) -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_millis(timeout_ms),
        http_max_redirects: max_redirects,
        ..ProbeSettings::default()
    }
}

fn target(url: &str, address: Option<IpAddr>, expect_status: Vec<u16>) -> Target {
    Target {
        id: format!("http:{url}"),
        country: "ZZ".into(),
        asn: 0,
        region: None,
        control: false,
        kind: TargetKind::Http {
            url: url.to_string(),
            address,
            expect_status,
        },
    }
}

async fn probe(p: &HttpProber, url: &str, address: Option<IpAddr>) -> Outcome {
    p.probe(&target(url, address, vec![])).await.unwrap()
}

fn timings(o: &Outcome) -> HttpTimings {
    o.timings.unwrap_or_else(|| panic!("no timings: {o:?}"))
}

/// Every phase that is there lies in (0, rtt], and together they fit in the rtt.
fn assert_plausible(o: &Outcome) {
    assert!(o.ok, "{o:?}");
    let t = timings(o);
    let rtt = o.rtt.unwrap();
    let phases = [t.resolve, t.connect, t.tls, t.first_byte];
    for d in phases.iter().flatten() {
        assert!(*d > Duration::ZERO && *d <= rtt, "{o:?}");
    }
    let sum: Duration = phases.iter().flatten().sum();
    assert!(sum <= rtt, "phases {sum:?} > rtt {rtt:?}: {o:?}");
    assert!(t.connect.is_some() && t.first_byte.is_some(), "{o:?}");
}

fn failed(o: &Outcome) -> (Phase, Failure) {
    assert!(!o.ok, "{o:?}");
    (o.phase.unwrap(), o.failure.unwrap())
}

// ---------------------------------------------------------------------------------------
// nginx

struct Nginx {
    _proc: Proc,
    dir: tempfile::TempDir,
    http: u16,
    h2: u16,
    h1: u16,
}

impl Nginx {
    /// The access log once `done` holds: nginx logs a request when it is finished, which
    /// can be after the probe dropped the connection.
    async fn access_log(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let path = self.dir.path().join("access.log");
        for _ in 0..100 {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if done(&log) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        panic!("access log never showed {what}:\n{log}");
    }
}

fn start_nginx(nginx: &Path, pki: &Pki) -> Nginx {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("cert.pem"), &pki.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &pki.key_pem).unwrap();
    let (http, h2, h1) = (free_port(), free_port(), free_port());
    let locations = format!(
        "location = /ok {{ return 200 \"ok\\n\"; }}\n\
         location = /500 {{ return 500; }}\n\
         location = /r3 {{ return 302 /r2; }}\n\
         location = /r2 {{ return 302 /r1; }}\n\
         location = /r1 {{ return 302 /ok; }}\n\
         location = /loop {{ return 302 /loop; }}\n\
         location = /to-tls {{ return 301 https://localhost:{h2}/ok; }}\n"
    );
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{}}\nhttp {{\n\
           log_format p '$server_port $server_protocol $request_uri $status';\n\
           access_log {d}/access.log p;\n\
           client_body_temp_path {d}/cb; proxy_temp_path {d}/px; fastcgi_temp_path {d}/fc;\n\
           uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc;\n\
           ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n\
           server {{ listen 127.0.0.1:{http}; {locations} }}\n\
           server {{ listen 127.0.0.1:{h2} ssl http2; {locations} }}\n\
           server {{ listen 127.0.0.1:{h1} ssl; {locations} }}\n\
         }}\n"
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = dir.path().join("nginx.out");
    let proc = Proc::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path),
        &log,
    );
    for port in [http, h2, h1] {
        wait_for("nginx", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }
    Nginx {
        _proc: proc,
        dir,
        http,
        h2,
        h1,
    }
}

fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    require(test, &["nginx"]).map(|mut v| v.remove(0))
}

#[tokio::test]
async fn nginx_phases_redirects_h2_and_failures() {
    let Some(nginx) = nginx_or_skip("nginx_phases_redirects_h2_and_failures") else {
        return;
    };
    let pki = pki();
    let n = start_nginx(&nginx, &pki);
    let p = HttpProber::with_roots(&settings(2000, 5), vec![pki.ca.clone()]).unwrap();

    // HTTPS pinned: connect, TLS and first byte, no resolve.
    let url = format!("https://localhost:{}/ok?pinned", n.h2);
    let o = probe(&p, &url, Some(LOCALHOST)).await;
    assert_plausible(&o);
    let t = timings(&o);
    assert!(t.tls.is_some() && t.resolve.is_none(), "{o:?}");

    // The same name unpinned is resolved (localhost: answered by the resolver itself).
    let o = probe(&p, &format!("https://localhost:{}/ok?resolved", n.h2), None).await;
    assert_plausible(&o);
    assert!(timings(&o).resolve.is_some(), "{o:?}");

    // A URL naming an IP: no resolve; its certificate names 127.0.0.1 too.
    let o = probe(&p, &format!("https://127.0.0.1:{}/ok?ip", n.h2), None).await;
    assert_plausible(&o);
    assert!(timings(&o).resolve.is_none(), "{o:?}");

    // Plain HTTP: no TLS.
    let o = probe(&p, &format!("http://127.0.0.1:{}/ok", n.http), None).await;
    assert_plausible(&o);
    let t = timings(&o);
    assert!(t.tls.is_none() && t.resolve.is_none(), "{o:?}");

    // ALPN: h2 where nginx offers it, HTTP/1.1 where it does not.
    assert!(
        probe(&p, &format!("https://localhost:{}/ok?alpn", n.h2), None)
            .await
            .ok
    );
    assert!(
        probe(&p, &format!("https://localhost:{}/ok?alpn", n.h1), None)
            .await
            .ok
    );
    let h2 = format!("{} HTTP/2.0 /ok?alpn 200", n.h2);
    let h1 = format!("{} HTTP/1.1 /ok?alpn 200", n.h1);
    n.access_log("h2 and http/1.1", |l| l.contains(&h2) && l.contains(&h1))
        .await;
    // Three redirects, each hop a request; over HTTP/2 too.
    for (port, proto) in [(n.http, "http"), (n.h2, "https")] {
        let o = probe(&p, &format!("{proto}://localhost:{port}/r3"), None).await;
        assert_plausible(&o);
        let hops = [("/r3", 302), ("/r2", 302), ("/r1", 302), ("/ok", 200)];
        let hit = |l: &str, path: &str, status: u16| {
            l.starts_with(&format!("{port} ")) && l.ends_with(&format!(" {path} {status}"))
        };
        n.access_log("every hop", |log| {
            hops.iter()
                .all(|(path, status)| log.lines().any(|l| hit(l, path, *status)))
        })
        .await;
    }
    // A redirect from an IP to another host over TLS: that hop resolves and shakes hands.
    let o = probe(&p, &format!("http://127.0.0.1:{}/to-tls", n.http), None).await;
    assert_plausible(&o);
    let t = timings(&o);
    assert!(t.resolve.is_some() && t.tls.is_some(), "{o:?}");

    // Bounded: three redirects do not fit in two; a loop never ends on its own.
    let p2 = HttpProber::with_roots(&settings(2000, 2), vec![pki.ca.clone()]).unwrap();
    let o = probe(&p2, &format!("http://127.0.0.1:{}/r3", n.http), None).await;
    assert_eq!(
        failed(&o),
        (Phase::HttpRoundTrip, Failure::HttpTooManyRedirects)
    );
    let o = probe(&p, &format!("https://localhost:{}/loop", n.h2), None).await;
    assert_eq!(
        failed(&o),
        (Phase::HttpRoundTrip, Failure::HttpTooManyRedirects)
    );
    let loops = |log: &str| log.lines().filter(|l| l.contains("/loop")).count();
    n.access_log("the loop", |log| loops(log) >= 6).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = n.access_log("the loop", |_| true).await;
    assert_eq!(loops(&log), 6, "one request and 5 redirects: {log}");

    // 500: the round trip is measured, the status fails the probe.
    let o = probe(&p, &format!("https://localhost:{}/500", n.h2), None).await;
    assert_eq!(failed(&o), (Phase::HttpRoundTrip, Failure::HttpStatus));
    assert!(o.rtt.is_some() && timings(&o).first_byte.is_some(), "{o:?}");
    let o = p
        .probe(&target(
            &format!("https://localhost:{}/500", n.h2),
            None,
            vec![500],
        ))
        .await
        .unwrap();
    assert!(o.ok, "{o:?}");

    // Certificates: unknown CA, and a name the certificate does not cover.
    let untrusting = HttpProber::new(&settings(2000, 5)).unwrap();
    let o = probe(&untrusting, &format!("https://localhost:{}/ok", n.h2), None).await;
    assert_eq!(failed(&o), (Phase::TlsHandshake, Failure::TlsError));
    let t = timings(&o);
    assert!(
        t.connect.is_some() && t.tls.is_none() && t.first_byte.is_none(),
        "{o:?}"
    );
    let url = format!("https://other.blackout.invalid:{}/ok", n.h2);
    let o = probe(&p, &url, Some(LOCALHOST)).await;
    assert_eq!(failed(&o), (Phase::TlsHandshake, Failure::TlsError));
}

// ---------------------------------------------------------------------------------------
// Servers of our own: one phase made slow by a known amount, or stuck.

/// Plain HTTP: waits `delay` after each request, then redirects `/hops/N` to `/hops/N-1`
/// and answers `/hops/0` with 200.
async fn serve_slow(delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(m) => n += m,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                tokio::time::sleep(delay).await;
                let hops: u32 = path
                    .strip_prefix("/hops/")
                    .and_then(|h| h.parse().ok())
                    .unwrap_or(0);
                let resp = if hops > 0 {
                    format!(
                        "HTTP/1.1 302 Found\r\nLocation: /hops/{}\r\nContent-Length: 0\r\n\r\n",
                        hops - 1
                    )
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string()
                };
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn first_byte_is_the_server_wait_and_hops_add_up() {
    let delay = Duration::from_millis(60);
    let a = serve_slow(delay).await;
    let p = HttpProber::new(&settings(3000, 5)).unwrap();
    let o = probe(&p, &format!("http://{a}/hops/0"), None).await;
    assert_plausible(&o);
    let t = timings(&o);
    let fb = t.first_byte.unwrap();
    assert!(fb >= delay, "{o:?}");
    assert!(t.connect.unwrap() < delay, "{o:?}");
    // Three redirects: four requests, four waits, counted in first byte and the rtt.
    let o = probe(&p, &format!("http://{a}/hops/3"), None).await;
    assert_plausible(&o);
    let t = timings(&o);
    assert!(t.first_byte.unwrap() >= delay * 4, "{o:?}");
    assert!(o.rtt.unwrap() >= delay * 4, "{o:?}");
    // The deadline bounds the whole probe, not each hop: 4 x 60 ms do not fit in 200 ms.
    let short = HttpProber::new(&settings(200, 5)).unwrap();
    let start = std::time::Instant::now();
    let o = probe(&short, &format!("http://{a}/hops/3"), None).await;
    assert_eq!(failed(&o), (Phase::HttpRoundTrip, Failure::Timeout));
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    // The hops that completed before the deadline are in the timings.
    assert!(timings(&o).first_byte.unwrap() >= delay * 2, "{o:?}");
}

/// TLS with the test CA; the handshake starts `handshake_delay` after accept, or never.
async fn serve_tls(pki: &Pki, handshake_delay: Option<Duration>) -> SocketAddr {
    let key = PrivateKeyDer::try_from(pki.key_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match handshake_delay {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                }
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                if read_http_head(&mut tls).await {
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_is_the_handshake_and_a_stuck_one_times_out_in_tls() {
    let pki = pki();
    let delay = Duration::from_millis(80);
    let a = serve_tls(&pki, Some(delay)).await;
    let p = HttpProber::with_roots(&settings(2000, 0), vec![pki.ca.clone()]).unwrap();
    let o = probe(
        &p,
        &format!("https://localhost:{}/", a.port()),
        Some(a.ip()),
    )
    .await;
    assert_plausible(&o);
    let t = timings(&o);
    assert!(t.tls.unwrap() >= delay, "{o:?}");
    assert!(
        t.connect.unwrap() < delay && t.first_byte.unwrap() < delay,
        "{o:?}"
    );

    // Accepted, but the handshake never comes: a timeout in tls_handshake.
    let a = serve_tls(&pki, None).await;
    let p = HttpProber::with_roots(&settings(300, 0), vec![pki.ca.clone()]).unwrap();
    let o = probe(
        &p,
        &format!("https://localhost:{}/", a.port()),
        Some(a.ip()),
    )
    .await;
    assert_eq!(failed(&o), (Phase::TlsHandshake, Failure::Timeout));
    assert!(timings(&o).connect.is_some(), "{o:?}");
}

#[tokio::test]
async fn reset_during_the_handshake_is_a_tls_reset() {
    // What SNI filtering looks like: the TCP connection is up, the ClientHello gets a RST.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.set_zero_linger();
            drop(s);
        }
    });
    let p = HttpProber::new(&settings(1000, 0)).unwrap();
    let o = probe(
        &p,
        &format!("https://localhost:{}/", a.port()),
        Some(a.ip()),
    )
    .await;
    assert_eq!(failed(&o), (Phase::TlsHandshake, Failure::Reset));
}

#[tokio::test]
async fn a_full_accept_queue_is_a_connect_timeout() {
    // Backlog 0 holds one connection; while it waits unaccepted, the kernel drops further
    // SYNs: the connect itself gets no answer, as behind a firewall that drops.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let a = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(a)).await
        {
            fillers.push(s);
        }
    }
    let p = HttpProber::new(&settings(300, 0)).unwrap();
    let start = std::time::Instant::now();
    let o = probe(&p, &format!("http://{a}/"), None).await;
    assert_eq!(failed(&o), (Phase::Connect, Failure::Timeout));
    assert!(o.timings.is_none(), "{o:?}");
    assert!(start.elapsed() < Duration::from_millis(800));
    drop(sock);
}

#[tokio::test]
async fn names_that_do_not_exist_fail_in_resolve() {
    // `.invalid` never exists (RFC 6761): the resolver answers NXDOMAIN without asking.
    let p = HttpProber::new(&settings(1000, 0)).unwrap();
    let o = probe(&p, "http://nothing-here.invalid/", None).await;
    assert_eq!(failed(&o), (Phase::Resolve, Failure::DnsNxdomain));
    assert!(o.timings.is_none(), "{o:?}");
}
