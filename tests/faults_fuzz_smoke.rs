//! The checks of the cargo-fuzz targets (fuzz/fuzz_targets), run on stable under
//! `cargo test`: over the checked-in corpus, and over inputs proptest generates (random
//! bytes, and valid inputs with bytes flipped, cut or spliced). Not coverage-guided: the
//! fuzz targets are for that; this keeps them honest in CI.

use std::path::Path;
use std::sync::OnceLock;

use blackout_collector::Uploader;
use blackout_collector::{Collector, CollectorConfig};
use blackout_model::observation::Batch;
use proptest::prelude::*;

fn collector() -> &'static Collector {
    static C: OnceLock<Collector> = OnceLock::new();
    C.get_or_init(|| {
        Collector::new(CollectorConfig::default(), blackout::embedded().unwrap()).unwrap()
    })
}

/// Same body as fuzz_targets/batch_decode.rs.
fn batch_decode(data: &[u8]) {
    let Ok(batch) = serde_json::from_slice::<Batch>(data) else {
        return;
    };
    for o in &batch.observations {
        let _ = o.validate();
    }
    let again: Batch = serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap();
    assert_eq!(again.batch_id, batch.batch_id);
    assert_eq!(again.observations.len(), batch.observations.len());
    let _ = collector().ingest(&Uploader::InProcess, batch, chrono::Utc::now());
}

/// Same body as fuzz_targets/compact_decode.rs.
fn compact_decode(data: &[u8]) {
    use blackout_collector::wire::{self, Coding, Encoding};
    use blackout_model::compact;
    const LIMIT: usize = 256 * 1024;
    for coding in [Coding::Identity, Coding::Zstd, Coding::Gzip] {
        let mut asked = 0usize;
        let decoded = wire::decompress(coding, data, LIMIT, &mut |n| {
            asked = asked.max(n);
            true
        });
        assert!(asked <= LIMIT, "asked for {asked} bytes");
        let Ok(decoded) = decoded else { continue };
        let body = decoded.as_deref().unwrap_or(data);
        assert!(body.len() <= LIMIT.max(data.len()));
        let Ok(batch) = wire::parse(Encoding::Compact, body, LIMIT) else {
            continue;
        };
        let json = batch
            .observations
            .len()
            .saturating_mul(compact::MIN_JSON_OBSERVATION_BYTES);
        assert!(json <= LIMIT, "{} observations", batch.observations.len());
        for o in &batch.observations {
            let _ = o.validate();
        }
        // Compared as bytes: a NaN (refused by validation, not by the decoder) is not
        // equal to itself.
        let bytes = compact::encode(&batch);
        let again = compact::decode(&bytes).expect("re-encoded batch decodes");
        assert_eq!(compact::encode(&again), bytes);
    }
}

/// Same body as fuzz_targets/config_parse.rs.
fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = blackout_collector::CollectorConfig::parse(text, Path::new("fuzz.toml")) {
        assert!(e.to_string().starts_with("fuzz.toml: "));
    }
    if let Err(e) = blackout_agent::AgentConfig::parse(text, Path::new("fuzz.toml")) {
        assert!(e.to_string().starts_with("fuzz.toml: "));
    }
    if let Ok(file) = blackout_model::catalog::parse(text, "fuzz.toml") {
        // expand() has no size limit: a /0 of /48 blocks would exhaust memory (a known
        // finding, reported), so only modest catalogs are expanded here.
        let blocks: f64 = file
            .icmp
            .iter()
            .map(|e| {
                let default = if e.prefix.addr().is_ipv4() { 24 } else { 48 };
                let bl = i32::from(e.block_len.unwrap_or(default));
                2f64.powi((bl - i32::from(e.prefix.prefix_len())).max(0))
            })
            .sum();
        if blocks <= 100_000.0 {
            let _ = blackout_model::catalog::expand(&[file]);
        }
    }
}

/// Same body as fuzz_targets/catalog.rs.
fn catalog(data: &[u8]) {
    use std::collections::BTreeSet;

    use blackout_agent::catalog::{CatalogLimits, count_targets, parse_catalog};
    use blackout_agent::filter::TargetFilter;
    use blackout_agent::table::{Entry, TargetTable};

    const MAX_TARGETS: u64 = 50_000;

    let limits = CatalogLimits {
        max_targets: MAX_TARGETS,
        ..CatalogLimits::default()
    };
    let Ok(fetched) = parse_catalog(data, &limits) else {
        return;
    };
    let files = fetched.files;
    let counted = count_targets(&files);
    if let Some(a) = &fetched.assignment {
        // A share's catalog is bounded as scanned; the share itself by max_targets.
        assert!(counted <= blackout_agent::catalog::share_scan_limit(MAX_TARGETS, a));
        let everything = TargetFilter::new(true, Vec::new());
        if let Ok((t, _)) = TargetTable::from_catalog_share(&files, &everything, MAX_TARGETS, a) {
            assert!(t.len() as u64 <= MAX_TARGETS.min(counted));
        }
        return;
    }
    assert!(counted <= MAX_TARGETS);
    let everything = TargetFilter::new(true, Vec::new());
    let table = TargetTable::from_catalog_within(&files, &everything, MAX_TARGETS);
    let plain = blackout_model::catalog::expand(&files);
    match (&table, &plain) {
        (Ok((t, refused)), Ok(targets)) => {
            assert_eq!(refused.total(), 0);
            assert_eq!(t.len() as u64, counted);
            assert_eq!(targets.len() as u64, counted);
            let ids: BTreeSet<String> = (0..t.len())
                .map(|i| match t.entry(i) {
                    Entry::Block { id, .. } => id.to_string(),
                    Entry::Other(target) => target.id.clone(),
                })
                .collect();
            let want: BTreeSet<String> = targets.iter().map(|t| t.id.clone()).collect();
            assert_eq!(ids, want);
        }
        (Err(a), Err(b)) => {
            assert!(a.to_string().contains("appears more than once"), "{a}");
            assert!(b.to_string().contains("appears more than once"), "{b}");
        }
        (a, b) => panic!(
            "the table and the expansion disagree: table {:?}, expansion {:?}",
            a.as_ref().map(|(t, _)| t.len()).map_err(|e| e.to_string()),
            b.as_ref().map(|t| t.len()).map_err(|e| e.to_string())
        ),
    }
    // The agent's own filter: what it refuses plus what it keeps is everything.
    let agent = TargetFilter::new(false, vec!["2.72.0.0/16".parse().unwrap()]);
    if let Ok((t, refused)) = TargetTable::from_catalog_within(&files, &agent, MAX_TARGETS) {
        assert_eq!((t.len() + refused.total()) as u64, counted);
    }
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!v.is_empty(), "empty corpus {}", dir.display());
    v.sort();
    v
}

#[test]
fn corpora_pass() {
    for c in corpus("batch_decode") {
        batch_decode(&c);
    }
    for c in corpus("config_parse") {
        config_parse(&c);
    }
    for c in corpus("catalog") {
        catalog(&c);
    }
    for c in corpus("compact_decode") {
        compact_decode(&c);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Splice(usize, Vec<u8>),
}

fn mutate(mut data: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if data.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, x) => {
                let i = i % data.len();
                data[i] ^= x;
            }
            Mutation::Cut(i) => data.truncate(i % data.len()),
            Mutation::Splice(i, b) => {
                let i = i % data.len();
                data.splice(i..i, b.iter().copied());
            }
        }
    }
    data
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Splice(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn batch_decoder_never_panics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        batch_decode(&data);
    }

    #[test]
    fn batch_decoder_never_panics_on_mutated_batches(
        pick in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..6),
    ) {
        let c = corpus("batch_decode");
        batch_decode(&mutate(c[pick % c.len()].clone(), &ms));
    }

    #[test]
    fn compact_decoder_never_panics_on_mutated_batches(
        pick in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..6),
    ) {
        let c = corpus("compact_decode");
        compact_decode(&mutate(c[pick % c.len()].clone(), &ms));
    }

    #[test]
    fn catalog_path_never_panics_on_mutated_catalogs(
        pick in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..6),
    ) {
        let c = corpus("catalog");
        catalog(&mutate(c[pick % c.len()].clone(), &ms));
    }

    #[test]
    fn config_parsers_never_panic_on_mutated_configs(
        pick in any::<usize>(),
        ms in proptest::collection::vec(mutation(), 1..6),
    ) {
        let c = corpus("config_parse");
        config_parse(&mutate(c[pick % c.len()].clone(), &ms));
    }
}
