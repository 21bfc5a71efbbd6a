//! The collector over HTTPS (rustls), certificates made with the openssl commands of
//! FAULTS.md: an agent that trusts the right CA delivers; one that trusts another CA
//! delivers nothing, keeps its batches spooled and retries, and delivers them once it
//! is given the right CA.

mod faults_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faults_support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate it signs for 127.0.0.1 (as in FAULTS.md).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
            "-days",
            "3650",
            "-subj",
            &format!("/CN=blackout {name} CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn make_server_cert(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "collector.key",
            "-out",
            "collector.csr",
            "-subj",
            "/CN=collector",
        ],
    );
    std::fs::write(
        dir.join("collector.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "collector.csr",
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-out",
            "collector.pem",
            "-days",
            "825",
            "-extfile",
            "collector.ext",
        ],
    );
}

#[test]
fn agent_verifies_the_collector_certificate() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIP: openssl not installed (apt-get install openssl)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_ca(&pki, "right");
    make_ca(&pki, "wrong");
    make_server_cert(&pki, "right");

    let (catalog, _l) = tcp_catalog(2, 2);
    let extra = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        pki.join("collector.pem").display(),
        pki.join("collector.key").display()
    );
    let c = CollectorSetup::new(
        &tmp.path().join("c"),
        &catalog,
        &[("good", "tok-g"), ("fooled", "tok-f")],
        &extra,
    );
    assert!(c.url().starts_with("https://"));
    let _collector = c.start();

    let good_cfg = agent_config(
        &tmp.path().join("good"),
        &c.dir,
        "good",
        &c.url(),
        "tok-g",
        &format!("ca_file = \"{}\"", pki.join("right-ca.pem").display()),
    );
    let fooled_dir = tmp.path().join("fooled");
    let fooled_cfg = agent_config(
        &fooled_dir,
        &c.dir,
        "fooled",
        &c.url(),
        "tok-f",
        &format!("ca_file = \"{}\"", pki.join("wrong-ca.pem").display()),
    );
    let mut good = start_agent(&good_cfg, &tmp.path().join("good.log"), &[]);
    let mut fooled = start_agent(&fooled_cfg, &fooled_dir.join("agent1.log"), &[]);

    // Scraping over TLS with the right CA also proves the server side.
    let pem = std::fs::read(pki.join("right-ca.pem")).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let count = |agent: &str| {
        block_on(async {
            let text = https
                .get(format!("{}metrics", c.url()))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            metric_sum(
                &text,
                "blackout_observations_ingested_total",
                &[&format!("agent=\"{agent}\"")],
            ) as u64
        })
    };
    wait_until("the good agent's data", Duration::from_secs(20), || {
        count("good") >= 8
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count("fooled"),
        0,
        "an agent that does not trust the certificate sent data"
    );
    let log = fooled.log_text();
    let failures = log.matches("upload failed").count();
    assert!(failures >= 2, "the fooled agent should retry: {log}");
    assert!(
        log.contains("certificate")
            || log.contains("UnknownIssuer")
            || log.contains("error sending request"),
        "{log}"
    );
    assert!(
        !spool_contents(&fooled_dir.join("spool")).is_empty(),
        "refused batches must stay spooled"
    );

    // Plain HTTP to the HTTPS port gets nothing.
    let plain = block_on(async {
        client()
            .get(format!("http://{}/healthz", c.addr))
            .send()
            .await
    });
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // Given the right CA, the same agent delivers what it kept, once.
    assert!(fooled.term(Duration::from_secs(15)));
    let fixed = std::fs::read_to_string(&fooled_cfg)
        .unwrap()
        .replace("wrong-ca.pem", "right-ca.pem");
    std::fs::write(&fooled_cfg, fixed).unwrap();
    let mut fooled = start_agent(&fooled_cfg, &fooled_dir.join("agent2.log"), &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(fooled.term(Duration::from_secs(15)));
    assert!(good.term(Duration::from_secs(15)));
    let spooled: u64 = spooled_batches(&[
        &fooled_dir.join("agent1.log"),
        &fooled_dir.join("agent2.log"),
    ])
    .values()
    .sum();
    assert!(spooled > 0);
    assert_eq!(
        count("fooled"),
        spooled,
        "everything the fooled agent spooled arrives once"
    );
    assert!(spool_contents(&fooled_dir.join("spool")).is_empty());
}
