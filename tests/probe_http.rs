//! HTTP(S) probes against real servers on loopback that answer, fail, hang, reset and
//! loop; HTTPS with a self-signed certificate.

use blackout_test_support as common;

use common::read_http_head;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blackout_model::catalog::{Target, TargetKind};
use blackout_model::observation::{Failure, Phase};
use blackout_probe::http::HttpProber;
use blackout_probe::{Outcome, ProbeSet, ProbeSettings, Prober};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Copy)]
enum Behaviour {
    Status(u16),
    Hang,
    Reset,
    CloseEarly,
    RedirectLoop,
}

async fn serve(b: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if !read_http_head(&mut s).await {
                    return;
                }
                match b {
                    Behaviour::Status(code) => {
                        let resp = format!(
                            "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                    }
                    Behaviour::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
                    Behaviour::Reset => {
                        // Linger 0: close() sends RST instead of FIN.
                        let _ = s.set_zero_linger();
                        drop(s);
                    }
                    Behaviour::CloseEarly => drop(s),
                    Behaviour::RedirectLoop => {
                        let resp =
                            "HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n";
                        let _ = s.write_all(resp.as_bytes()).await;
                    }
                }
            });
        }
    });
    addr
}

fn target(url: String, address: Option<std::net::IpAddr>, expect_status: Vec<u16>) -> Target {
    Target {
        id: format!("http:{url}"),
        country: "ZZ".into(),
        asn: 0,
        region: None,
        control: false,
        kind: TargetKind::Http {
            url,
            address,
            expect_status,
        },
    }
}

fn settings() -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_millis(700),
        http_max_redirects: 3,
        ..ProbeSettings::default()
    }
}

async fn probe(url: String, expect: Vec<u16>) -> Outcome {
    let set = ProbeSet::new(&settings()).await.unwrap();
    set.probe(&target(url, None, expect)).await.unwrap()
}

fn failed(o: &Outcome) -> (Option<Phase>, Option<Failure>) {
    assert!(!o.ok, "{o:?}");
    (o.phase, o.failure)
}

#[tokio::test]
async fn ok_and_status_checks() {
    let a = serve(Behaviour::Status(204)).await;
    let o = probe(format!("http://{a}/"), vec![]).await;
    assert!(o.ok && o.rtt.is_some(), "{o:?}");

    let a = serve(Behaviour::Status(500)).await;
    let o = probe(format!("http://{a}/"), vec![]).await;
    assert_eq!(
        failed(&o),
        (Some(Phase::HttpRoundTrip), Some(Failure::HttpStatus))
    );
    // A 500 that the catalog expects is fine.
    let o = probe(format!("http://{a}/"), vec![500]).await;
    assert!(o.ok, "{o:?}");
    // And a 204 that it does not expect is not.
    let a = serve(Behaviour::Status(204)).await;
    let o = probe(format!("http://{a}/"), vec![200]).await;
    assert_eq!(failed(&o).1, Some(Failure::HttpStatus));
}

#[tokio::test]
async fn hang_is_a_round_trip_timeout() {
    let a = serve(Behaviour::Hang).await;
    let start = std::time::Instant::now();
    let o = probe(format!("http://{a}/"), vec![]).await;
    assert_eq!(
        failed(&o),
        (Some(Phase::HttpRoundTrip), Some(Failure::Timeout))
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn reset_and_early_close() {
    let a = serve(Behaviour::Reset).await;
    let o = probe(format!("http://{a}/"), vec![]).await;
    assert_eq!(
        failed(&o),
        (Some(Phase::HttpRoundTrip), Some(Failure::Reset))
    );
    let a = serve(Behaviour::CloseEarly).await;
    let o = probe(format!("http://{a}/"), vec![]).await;
    assert_eq!(failed(&o), (Some(Phase::HttpRoundTrip), Some(Failure::Eof)));
}

#[tokio::test]
async fn redirect_loop_is_bounded() {
    let a = serve(Behaviour::RedirectLoop).await;
    let o = probe(format!("http://{a}/"), vec![]).await;
    assert_eq!(
        failed(&o),
        (
            Some(Phase::HttpRoundTrip),
            Some(Failure::HttpTooManyRedirects)
        )
    );
}

#[tokio::test]
async fn refused_is_a_connect_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = probe(format!("http://127.0.0.1:{port}/"), vec![]).await;
    assert_eq!(failed(&o), (Some(Phase::Connect), Some(Failure::Refused)));
}

#[tokio::test]
async fn address_pins_the_server() {
    // The name does not exist anywhere: only the pinned address can make this work.
    let a = serve(Behaviour::Status(200)).await;
    let set = ProbeSet::new(&settings()).await.unwrap();
    let url = format!("http://pinned.blackout.invalid:{}/", a.port());
    let t = target(url, Some(a.ip()), vec![]);
    let o = set.probe(&t).await.unwrap();
    assert!(o.ok, "{o:?}");
    // Cached client, second probe still works.
    assert!(set.probe(&t).await.unwrap().ok);
}

/// An HTTPS server with a fresh self-signed certificate for `localhost`.
async fn serve_tls() -> (SocketAddr, rustls::pki_types::CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, cert_der)
}

#[tokio::test]
async fn self_signed_certificate_is_a_tls_error() {
    let (a, cert) = serve_tls().await;
    let url = format!("https://localhost:{}/", a.port());
    let o = probe(url.clone(), vec![]).await;
    assert_eq!(
        failed(&o),
        (Some(Phase::TlsHandshake), Some(Failure::TlsError))
    );

    // The same server is fine once its certificate is trusted: the failure above is the
    // certificate, not the server.
    let prober = HttpProber::with_roots(&settings(), vec![cert]).unwrap();
    let o = prober
        .probe(&target(url, Some(a.ip()), vec![]))
        .await
        .unwrap();
    assert!(o.ok, "{o:?}");
}

#[tokio::test]
async fn plain_http_to_a_tls_port_is_not_ok() {
    let (a, _) = serve_tls().await;
    let o = probe(format!("http://{a}/"), vec![]).await;
    assert!(!o.ok);
    assert_eq!(o.phase, Some(Phase::HttpRoundTrip), "{o:?}");
}
