//! `blackout catalog build` on small fixtures in every input format, and on the real
//! registry data in ../shared/data when it is there.

use std::path::{Path, PathBuf};

use blackout_model::catalog::{self, TargetKind};
use blackout_tools::catalog::{BuildArgs, BuildError, build};

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// A small world: XA holds 10.1.0.0/22 (RIR file) and 10.2.0.0/23 + half of 10.3.0.0/24
/// (ipverse); XB holds the other half of 10.3.0.0/24.
fn fixtures(dir: &Path) -> BuildArgs {
    let delegated = write(
        dir,
        "rir/delegated-testnic-extended-latest",
        "2|testnic|1700000000|4|19830705|20240131|+0000\n\
         testnic|*|ipv4|*|3|summary\n\
         testnic|XA|ipv4|10.1.0.0|1024|20100101|allocated|abc\n\
         testnic|XB|ipv4|10.9.0.0|256|20100101|assigned|def\n\
         testnic|ZZ|ipv4|10.8.0.0|256||available|\n\
         testnic|XA|asn|64500|1|20100101|allocated|abc\n",
    );
    write(
        dir,
        "ipverse-rir-ip_20240201/country/xa/ipv4-aggregated.txt",
        "# Country: Example Land (XA)\n# Address family: IPv4\n10.2.0.0/23\n10.3.0.0/25\n",
    );
    write(
        dir,
        "ipverse-rir-ip_20240201/country/xb/ipv4-aggregated.txt",
        "# Country: Bexample (XB)\n10.3.0.128/25\n",
    );
    // AS64500 announces 10.1.0.0/22 but AS64501 a more specific /24 inside it; 10.2.1.0/24
    // is in no table (unrouted).
    let asn = write(
        dir,
        "asn_2.3.2024020100/asn-ipv4.csv",
        "10.1.0.0,10.1.3.255,64500,\"Example Telecom, JSC\"\n\
         10.1.2.0,10.1.2.255,64501,Mobile \"X\"\n\
         10.2.0.0,10.2.0.255,64500,Example Telecom\n\
         10.3.0.0,10.3.0.255,64502,Shared Hosting\n\
         192.0.2.0,192.0.2.255,64510,TLD Anycast\n",
    );
    let zone = write(
        dir,
        "root.zone",
        ".\t86400\tIN\tSOA\ta.root-servers.net. nstld.verisign-grs.com. 2024020101 1800 900 604800 86400\n\
         xa.\t172800\tIN\tNS\tns1.nic.xa.\n\
         xa.\t172800\tIN\tNS\tns2.nic.xa.\n\
         xa.\t86400\tIN\tDS\t1 13 2 ABCD\n\
         ns1.nic.xa.\t172800\tIN\tA\t192.0.2.53\n\
         ns1.nic.xa.\t172800\tIN\tAAAA\t2001:db8::53\n\
         ns2.nic.xa.\t172800\tIN\tA\t192.0.2.53\n\
         xb.\t172800\tIN\tNS\tns.xb.example.\n\
         com.\t172800\tIN\tNS\ta.gtld-servers.net.\n",
    );
    let extra = write(
        dir,
        "extra/xa.toml",
        "country = \"XA\"\nname = \"Example Land\"\n\
         [[network]]\nasn = 64501\nname = \"X Mobile\"\n\
         [[icmp]]\nprefix = \"10.2.0.0/24\"\nasn = 64500\nhosts = [\"10.2.0.1\"]\navailability = 0.9\n\
         [[http]]\nurl = \"https://example.xa/\"\nasn = 64500\n",
    );
    BuildArgs {
        delegated: vec![delegated],
        country_prefixes: vec![dir.join("ipverse-rir-ip_20240201")],
        asn_csv: vec![asn],
        root_zone: Some(zone),
        extra: vec![extra],
        all: true,
        out: dir.join("out"),
        ..Default::default()
    }
}

#[test]
fn builds_blocks_by_origin_as_with_dns_and_extras() {
    let dir = tempfile::tempdir().unwrap();
    let args = fixtures(dir.path());
    let report = build(&args).unwrap();
    let names: Vec<&str> = report
        .countries
        .iter()
        .map(|c| c.country.as_str())
        .collect();
    assert_eq!(names, ["XA", "XB"]);

    let text = std::fs::read_to_string(dir.path().join("out/xa.toml")).unwrap();
    let file = catalog::parse(&text, "xa.toml").unwrap();
    assert_eq!(file.name.as_deref(), Some("Example Land"));
    let targets = catalog::expand(std::slice::from_ref(&file)).unwrap();
    let mut blocks: Vec<(String, u32)> = targets
        .iter()
        .filter_map(|t| match &t.kind {
            TargetKind::Icmp { block, .. } => Some((block.to_string(), t.asn)),
            _ => None,
        })
        .collect();
    blocks.sort();
    assert_eq!(
        blocks,
        [
            ("10.1.0.0/24".to_string(), 64500),
            ("10.1.1.0/24".into(), 64500),
            ("10.1.2.0/24".into(), 64501), // the more specific range wins
            ("10.1.3.0/24".into(), 64500),
            ("10.2.0.0/24".into(), 64500), // from --extra, with its hosts
            ("10.3.0.0/24".into(), 64502), // half of it, including .0
        ]
    );
    let extra_block = targets.iter().find(|t| t.id == "icmp:10.2.0.0/24").unwrap();
    assert!(matches!(&extra_block.kind, TargetKind::Icmp { hosts, .. } if hosts.len() == 1));
    assert!(
        text.contains("1 blocks that no ASN source maps are left out"),
        "{text}"
    );

    // DNS: SOA and NS at each distinct address (ns2 shares ns1's IPv4 address).
    let dns: Vec<String> = targets
        .iter()
        .filter(|t| matches!(t.kind, TargetKind::Dns { .. }))
        .map(|t| format!("{} AS{}", t.id, t.asn))
        .collect();
    assert_eq!(
        dns,
        [
            "dns:192.0.2.53/xa./SOA AS64510",
            "dns:192.0.2.53/xa./NS AS64510",
            "dns:2001:db8::53/xa./SOA AS0",
            "dns:2001:db8::53/xa./NS AS0",
        ]
    );
    assert_eq!(file.http.len(), 1);
    let net = |asn: u32| {
        file.network
            .iter()
            .find(|n| n.asn == asn)
            .map(|n| n.name.as_str())
    };
    assert_eq!(net(64501), Some("X Mobile")); // hand-written name wins
    assert_eq!(net(64500), Some("Example Telecom, JSC"));
    let sources: Vec<(&str, Option<&str>)> = file
        .source
        .iter()
        .map(|s| (s.name.as_str(), s.date.as_deref()))
        .collect();
    assert!(sources.contains(&(
        "RIR delegated-extended statistics (delegated-testnic-extended-latest)",
        Some("2024-01-31")
    )));
    assert!(sources.contains(&("IANA root zone, serial 2024020101", Some("2024-02-01"))));

    // XB: its half of 10.3.0.0/24 lacks .0, and 10.9.0.0/24 has no origin AS.
    let xb = catalog::load_path(&dir.path().join("out/xb.toml")).unwrap();
    assert!(xb[0].icmp.is_empty());
    assert!(xb[0].dns.is_empty(), "ns.xb.example has no glue");
}

#[test]
fn output_is_byte_identical_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = fixtures(dir.path());
    build(&args).unwrap();
    let first = std::fs::read(dir.path().join("out/xa.toml")).unwrap();
    args.out = dir.path().join("again");
    build(&args).unwrap();
    assert_eq!(
        first,
        std::fs::read(dir.path().join("again/xa.toml")).unwrap()
    );
}

#[test]
fn sampling_caps_blocks_per_as_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = fixtures(dir.path());
    args.sample = Some(2);
    args.extra.clear();
    build(&args).unwrap();
    let text = std::fs::read_to_string(dir.path().join("out/xa.toml")).unwrap();
    let targets = catalog::expand(&[catalog::parse(&text, "xa").unwrap()]).unwrap();
    let of = |asn| {
        targets
            .iter()
            .filter(|t| t.asn == asn && t.signal() == blackout_model::Signal::Icmp)
            .count()
    };
    assert_eq!((of(64500), of(64501), of(64502)), (2, 1, 1));
    assert!(
        text.contains("ICMP coverage: 4 of the country's 6 IPv4 /24 blocks"),
        "{text}"
    );
    assert!(text.contains("at most 2 per origin AS"));
}

#[test]
fn input_errors_name_file_and_line() {
    let cases = [
        (
            "asn.csv",
            "10.0.0.0,10.0.0.255,1,a\n10.0.1.0,10.0.1.x,2,b\n",
            ":2: ",
        ),
        ("asn.csv", "10.0.0.0,10.0.0.255,AS1,a\n", ":1: asn \"AS1\""),
        (
            "delegated",
            "2|t|1|1|1|20240101|+0\nt|XA|ipv4|10.0.0|256|2010|allocated\n",
            ":2: start",
        ),
        ("zone", "xa. 172800 IN NS\n", ":1: NS record needs"),
        ("pfx2as", "10.0.0.0\t24\t1\n10.0.1.1\t24\t2\n", ":2: "),
        (
            "xa/ipv4-aggregated.txt",
            "# c\n10.0.0.0/24\n10.0.0.1/24\n",
            ":3: ",
        ),
    ];
    for (name, text, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), name, text);
        let mut args = BuildArgs {
            country: vec!["XA".into()],
            out: dir.path().join("out"),
            ..Default::default()
        };
        match name {
            "asn.csv" => {
                args.asn_csv.push(p.clone());
                args.root_zone = Some(write(dir.path(), "empty.zone", ""));
            }
            "delegated" => args.delegated.push(p.clone()),
            "zone" => args.root_zone = Some(p.clone()),
            "pfx2as" => {
                args.pfx2as.push(p.clone());
                args.root_zone = Some(write(dir.path(), "empty.zone", ""));
            }
            _ => args.country_prefixes.push(dir.path().to_path_buf()),
        }
        let err = build(&args).unwrap_err();
        assert!(matches!(err, BuildError::Input { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(msg.starts_with(&p.display().to_string()), "{msg}");
        assert!(msg.contains(want), "want {want:?} in {msg}");
    }
}

#[test]
fn refuses_to_run_without_inputs_or_countries() {
    let dir = tempfile::tempdir().unwrap();
    let none = BuildArgs {
        all: true,
        out: dir.path().into(),
        ..Default::default()
    };
    assert!(build(&none).unwrap_err().to_string().contains("no input"));
    let mut no_country = fixtures(dir.path());
    no_country.all = false;
    assert!(
        build(&no_country)
            .unwrap_err()
            .to_string()
            .contains("--all")
    );
}

/// `--country` with no target in any input is refused, naming the country and the
/// inputs, and nothing is written (it used to write an empty catalog and exit 0).
#[test]
fn a_country_without_data_is_an_error_not_an_empty_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = fixtures(dir.path());
    args.all = false;
    args.country = vec!["XA".into(), "KZ".into()];
    args.out = dir.path().join("out");
    let e = build(&args).unwrap_err().to_string();
    assert!(e.contains("no targets for KZ"), "{e}");
    assert!(!e.contains("XA"), "XA has data: {e}");
    assert!(e.contains("--delegated"), "names the inputs: {e}");
    assert!(!args.out.exists(), "nothing written");
    args.country = vec!["XA".into()];
    assert_eq!(build(&args).unwrap().countries.len(), 1);
}

fn shared_data() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let p = if p.is_dir() {
        p
    } else {
        PathBuf::from("/work/shared/data")
    };
    p.join("country-prefixes/ipverse-rir-ip_latest-20260201")
        .is_dir()
        .then_some(p)
}

/// The shipped KZ catalog is what the builder makes from the real data (so probes/ is
/// reproducible), and it covers the networks of the January 2022 shutdown.
#[test]
fn shipped_kz_catalog_is_reproducible_from_shared_data() {
    let Some(d) = shared_data() else {
        eprintln!("SKIP: ../shared/data (registry data) is not present");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let asn = d.join("asn/ip-location-db_asn_2.3.2026061719");
    let args = BuildArgs {
        country_prefixes: vec![d.join("country-prefixes/ipverse-rir-ip_latest-20260201")],
        asn_csv: vec![asn.join("asn-ipv4.csv"), asn.join("asn-ipv6.csv")],
        root_zone: Some(d.join("dns/root.zone_2026082201_kidmin-rza_RRSIG-stripped")),
        extra: vec![root.join("probes/extra/kz.toml")],
        country: vec!["kz".into()],
        out: dir.path().into(),
        ..Default::default()
    };
    let report = build(&args).unwrap();
    let built = std::fs::read_to_string(dir.path().join("kz.toml")).unwrap();
    let shipped = std::fs::read_to_string(root.join("probes/kz.toml")).unwrap();
    assert!(
        built == shipped,
        "probes/kz.toml differs from a fresh build: regenerate it"
    );
    let kz = &report.countries[0];
    assert!(kz.blocks > 10_000, "{kz:?}");
    let file = catalog::parse(&built, "kz").unwrap();
    for asn in [9198, 21299, 29355, 48503, 41798] {
        assert!(
            file.icmp.iter().any(|e| e.asn == asn),
            "no blocks of AS{asn}"
        );
    }
    assert!(
        file.dns
            .iter()
            .any(|e| e.server_name.as_deref() == Some("ns.nic.kz"))
    );
    assert_eq!(file.http.len(), 10);
}

/// The example in the format reference is a valid catalog, and the reference names
/// every key the format has.
#[test]
fn readme_example_parses_and_reference_covers_every_key() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/README.md"))
            .unwrap();
    let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
    let len = readme[start..].find("```").unwrap();
    let file = catalog::parse(&readme[start..start + len], "probes/README.md").unwrap();
    let targets = catalog::expand(&[file]).unwrap();
    assert_eq!(targets.len(), 6);
    for key in [
        "country",
        "name",
        "control",
        "source",
        "url",
        "date",
        "licence",
        "network",
        "asn",
        "icmp",
        "prefix",
        "block_len",
        "hosts",
        "availability",
        "dns",
        "server",
        "server_name",
        "qname",
        "qtype",
        "http",
        "address",
        "expect_status",
        "tcp",
        "id",
        "region",
    ] {
        assert!(
            readme.contains(&format!("`{key}`")) || readme.contains(&format!("[[{key}]]")),
            "{key}"
        );
    }
}

#[test]
fn pfx2as_overlaps_resolve_to_the_most_specific_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pfx = write(
        d,
        "routeviews-rv2-20240201-1200.pfx2as",
        "10.1.0.0\t22\t64500\n10.1.2.0\t24\t64501_64502\n10.1.3.0\t24\t64503,64504\n",
    );
    write(d, "p/country/xa/ipv4-aggregated.txt", "10.1.0.0/22\n");
    let args = BuildArgs {
        country_prefixes: vec![d.join("p")],
        pfx2as: vec![pfx],
        country: vec!["XA".into()],
        out: d.join("out"),
        ..Default::default()
    };
    build(&args).unwrap();
    let f = catalog::load_path(&d.join("out/xa.toml")).unwrap();
    let got: Vec<String> = f[0]
        .icmp
        .iter()
        .map(|e| format!("{} {}", e.prefix, e.asn))
        .collect();
    assert_eq!(
        got,
        [
            "10.1.0.0/23 64500",
            "10.1.2.0/24 64501",
            "10.1.3.0/24 64503"
        ]
    );
    let src = f[0]
        .source
        .iter()
        .find(|s| s.name.contains("prefix-to-AS"))
        .unwrap();
    assert_eq!(src.date.as_deref(), Some("2024-02-01"));
}

#[test]
fn url_lists_become_http_targets_and_the_header_warns_of_their_licence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "lists/xa.csv",
        "url,category_code,category_description,date_added,source,notes\n\
         https://news.example.xa/,NEWS,News Media,2020-01-01,,\n\
         \"http://a.example.xa/q?x=1,2\",POLR,Political,2020-01-01,,\n",
    );
    let bad = write(d, "bad/xa.csv", "url,category_code\nftp://x/,NEWS\n");
    let mut args = BuildArgs {
        urls: Some(d.join("lists")),
        country: vec!["XA".into()],
        out: d.join("out"),
        ..Default::default()
    };
    build(&args).unwrap();
    let text = std::fs::read_to_string(d.join("out/xa.toml")).unwrap();
    let f = catalog::parse(&text, "xa").unwrap();
    let urls: Vec<&str> = f.http.iter().map(|h| h.url.as_str()).collect();
    assert_eq!(
        urls,
        ["http://a.example.xa/q?x=1,2", "https://news.example.xa/"]
    );
    assert!(text.contains("CC BY-NC-SA 4.0): do not ship"));
    args.urls = Some(d.join("bad"));
    let e = build(&args).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2: ", bad.display())), "{e}");
}

/// Every shipped catalog names its country (DNS-only catalogs too: the status page
/// showed 239 of 245 countries as their bare code twice).
#[test]
fn every_shipped_catalog_names_its_country() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/probes");
    let files = blackout_model::catalog::load_path(std::path::Path::new(dir)).unwrap();
    assert!(files.len() > 200);
    let unnamed: Vec<&str> = files
        .iter()
        .filter(|f| !f.control && f.name.as_deref().is_none_or(|n| n.trim().is_empty()))
        .map(|f| f.country.as_str())
        .collect();
    assert!(unnamed.is_empty(), "catalogs without a name: {unnamed:?}");
}
