//! TCP connect probes against real sockets on loopback.

use std::time::Duration;

use blackout_model::catalog::{Target, TargetKind};
use blackout_model::observation::{Failure, Phase};
use blackout_probe::{ProbeError, ProbeSet, ProbeSettings, Prober};

fn target(address: std::net::SocketAddr) -> Target {
    Target {
        id: format!("tcp:{address}"),
        country: "ZZ".into(),
        asn: 0,
        region: None,
        control: false,
        kind: TargetKind::Tcp { address },
    }
}

fn settings() -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_secs(2),
        ..ProbeSettings::default()
    }
}

#[tokio::test]
async fn open_port_is_ok_with_rtt() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let set = ProbeSet::new(&settings()).await.unwrap();
    let out = set.probe(&target(addr)).await.unwrap();
    assert!(out.ok, "{out:?}");
    assert!(out.rtt.unwrap() < Duration::from_secs(1));
    assert_eq!((out.phase, out.failure), (None, None));
}

#[tokio::test]
async fn closed_port_is_refused_in_connect() {
    // Bind, learn the port, close: nothing listens there any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let set = ProbeSet::new(&settings()).await.unwrap();
    let out = set.probe(&target(addr)).await.unwrap();
    assert!(!out.ok);
    assert_eq!(out.phase, Some(Phase::Connect));
    assert_eq!(out.failure, Some(Failure::Refused));
}

#[tokio::test]
async fn ipv6_loopback_works_too() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("SKIP: no IPv6 loopback here");
        return;
    };
    let set = ProbeSet::new(&settings()).await.unwrap();
    let out = set
        .probe(&target(listener.local_addr().unwrap()))
        .await
        .unwrap();
    assert!(out.ok, "{out:?}");
}

#[tokio::test]
async fn wrong_kind_is_an_error_not_a_failure() {
    let set = ProbeSet::new(&settings()).await.unwrap();
    let t = target("127.0.0.1:1".parse().unwrap());
    let err = Prober::probe(&set.dns, &t).await;
    assert!(matches!(err, Err(ProbeError::WrongKind { .. })), "{err:?}");
}
