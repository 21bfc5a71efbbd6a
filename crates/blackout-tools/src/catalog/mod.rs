//! `blackout catalog`: build target catalogs from the public registry data operators
//! download, and discover the responsive addresses of a catalog's blocks.
//!
//! `build` reads line formats (RIR delegated-extended statistics, ipverse per-country CIDR
//! lists, ip-location-db / CAIDA pfx2as IP-to-ASN tables, the IANA root zone, Citizen Lab
//! test-lists) with small hand-written parsers, resolves every IPv4 /24 of a country to its
//! origin AS (most specific range wins), and writes one deterministic `probes/<cc>.toml`
//! per country. `discover` sweeps a catalog's blocks with ICMP and writes the answering
//! addresses and their availability back into it (Trinocular's E(b) and A(b)).

mod discover;
mod ranges;
mod sources;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use blackout_model::catalog::{CatalogError, CatalogFile};

pub use discover::{DiscoverSettings, DiscoverStats, discover_catalog};
pub use ranges::AsnMap;
pub use sources::Inputs;

/// Subcommands of `blackout catalog`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CatalogCommand {
    /// Build `<out>/<cc>.toml` catalogs from registry data (see probes/README.md).
    Build(BuildArgs),
    /// Sweep a catalog's ICMP blocks and record their responsive addresses.
    Discover(DiscoverArgs),
}

/// Inputs and options of `blackout catalog build`. Every input is optional; at least one
/// must be given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BuildArgs {
    /// RIR delegated-extended statistics file (repeatable), e.g. delegated-ripencc-extended-latest.
    #[arg(long, value_name = "FILE")]
    pub delegated: Vec<PathBuf>,
    /// Per-country CIDR lists in the ipverse/rir-ip layout: DIR/country/<cc>/ipv4-aggregated.txt
    /// (DIR may also be the `country` directory itself). Repeatable.
    #[arg(long = "country-prefixes", value_name = "DIR")]
    pub country_prefixes: Vec<PathBuf>,
    /// IP range to origin ASN, ip-location-db CSV: range_start,range_end,asn,organization
    /// (IPv4 or IPv6 rows). Repeatable.
    #[arg(long = "asn-csv", value_name = "FILE")]
    pub asn_csv: Vec<PathBuf>,
    /// CAIDA RouteViews prefix-to-AS file (prefix TAB length TAB asn). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub pfx2as: Vec<PathBuf>,
    /// The IANA root zone: NS and glue of every ccTLD become DNS targets (SOA and NS).
    #[arg(long = "root-zone", value_name = "FILE")]
    pub root_zone: Option<PathBuf>,
    /// Citizen Lab test-lists directory (DIR/<cc>.csv) for HTTP targets. Mind its
    /// CC BY-NC-SA licence before shipping the result.
    #[arg(long, value_name = "DIR")]
    pub urls: Option<PathBuf>,
    /// A hand-written catalog merged into the generated one of its country (networks,
    /// sources, dns, http, tcp and icmp entries; its icmp blocks win). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub extra: Vec<PathBuf>,
    /// Country to build (ISO 3166 alpha-2, any case). Repeatable.
    #[arg(long, value_name = "CC")]
    pub country: Vec<String>,
    /// Build every country found in the inputs.
    #[arg(long)]
    pub all: bool,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Keep at most N /24 blocks per origin AS (a deterministic spread); the file states
    /// the coverage. Default: every /24.
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
}

/// Options of `blackout catalog discover`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoverArgs {
    /// The catalog file to sweep.
    #[arg(long, value_name = "FILE")]
    pub catalog: PathBuf,
    /// Where to write the catalog with discovered hosts.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Probes per second, all blocks together.
    #[arg(long, default_value_t = discover::DEFAULT_RATE_PPS)]
    pub rate: u32,
    /// Hosts kept per block (the most available first).
    #[arg(long = "max-per-block", default_value_t = discover::DEFAULT_MAX_PER_BLOCK)]
    pub max_per_block: usize,
    /// Sweeps over every address; availability is answered / sent over these sweeps.
    #[arg(long, default_value_t = discover::DEFAULT_SWEEPS)]
    pub sweeps: u32,
    /// Time to wait for each echo reply, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = discover::DEFAULT_TIMEOUT_MS)]
    pub timeout_ms: u64,
    /// Keep blocks where nothing answered (as prefixes without hosts); by default they are
    /// dropped, since a block that never answers cannot tell up from down.
    #[arg(long = "keep-silent")]
    pub keep_silent: bool,
    /// Where the run keeps its progress, to resume after an interruption [default: the
    /// --out file with `.partial` appended]; removed when the run completes.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Seconds between checkpoints.
    #[arg(long = "checkpoint-secs", default_value_t = discover::DEFAULT_CHECKPOINT_SECS)]
    pub checkpoint_secs: u64,
    /// Start over even when a checkpoint of an earlier run exists.
    #[arg(long)]
    pub fresh: bool,
}

/// Why a catalog could not be built or discovered. Input errors name the file and line.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}:{line}: {message}")]
    Input {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("generated catalog for {country} is invalid (a builder bug): {source}")]
    Generated {
        country: String,
        #[source]
        source: CatalogError,
    },
    #[error("ICMP: {0}")]
    Icmp(String),
}

impl BuildError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        BuildError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs one `blackout catalog` subcommand.
pub fn run(cmd: &CatalogCommand) -> Result<(), BuildError> {
    match cmd {
        CatalogCommand::Build(args) => {
            let report = build(args)?;
            for c in &report.countries {
                tracing::info!(
                    country = %c.country,
                    path = %c.path.display(),
                    icmp_entries = c.icmp_entries,
                    blocks = c.blocks,
                    blocks_in_country = c.blocks_in_country,
                    dns = c.dns,
                    http = c.http,
                    bytes = c.bytes,
                    "catalog written"
                );
            }
            tracing::info!(
                countries = report.countries.len(),
                elapsed_ms = report.elapsed_ms,
                "catalog build done"
            );
            Ok(())
        }
        CatalogCommand::Discover(args) => {
            let settings = DiscoverSettings {
                rate_pps: args.rate,
                max_per_block: args.max_per_block,
                sweeps: args.sweeps,
                timeout: std::time::Duration::from_millis(args.timeout_ms),
                keep_silent: args.keep_silent,
                checkpoint: Some(args.checkpoint.clone().unwrap_or_else(|| {
                    let mut p = args.out.clone().into_os_string();
                    p.push(".partial");
                    p.into()
                })),
                checkpoint_every: std::time::Duration::from_secs(args.checkpoint_secs.max(1)),
                fresh: args.fresh,
            };
            // A runtime of its own on its own thread: `run` is called from synchronous
            // code and from inside the binary's async main alike.
            let stats = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(2)
                            .enable_all()
                            .build()
                            .map_err(|e| BuildError::Icmp(format!("tokio runtime: {e}")))?
                            .block_on(discover_catalog(&args.catalog, &args.out, &settings))
                    })
                    .join()
                    .unwrap_or_else(|_| Err(BuildError::Icmp("discovery thread panicked".into())))
            })?;
            tracing::info!(
                blocks = stats.blocks,
                probes_sent = stats.probes_sent,
                responsive_blocks = stats.responsive_blocks,
                hosts = stats.hosts,
                out = %args.out.display(),
                "discovery done"
            );
            Ok(())
        }
    }
}

/// What `build` wrote, per country.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub countries: Vec<CountryReport>,
    pub elapsed_ms: u128,
}

#[derive(Debug, Clone)]
pub struct CountryReport {
    pub country: String,
    pub path: PathBuf,
    pub icmp_entries: usize,
    /// /24 blocks after sampling.
    pub blocks: u64,
    /// /24 blocks of the country's space that have an origin AS.
    pub blocks_in_country: u64,
    pub dns: usize,
    pub http: usize,
    pub bytes: usize,
}

/// ccTLDs whose label is not the country's ISO code.
fn cctld_for(country: &str) -> String {
    match country {
        "GB" => "uk".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

fn country_for_cctld(tld: &str) -> Option<String> {
    let cc = match tld {
        "uk" => "GB".to_string(),
        // Not countries (the EU, the Soviet Union, Ascension's legacy code).
        "eu" | "su" | "ac" => return None,
        other => other.to_ascii_uppercase(),
    };
    blackout_model::observation::is_country_code(&cc).then_some(cc)
}

/// Builds the catalogs `args` asks for and writes them to `args.out`.
pub fn build(args: &BuildArgs) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    if args.delegated.is_empty()
        && args.country_prefixes.is_empty()
        && args.root_zone.is_none()
        && args.urls.is_none()
        && args.extra.is_empty()
    {
        return Err(BuildError::Usage(
            "no input: give --delegated, --country-prefixes, --root-zone, --urls or --extra".into(),
        ));
    }
    if args.all != args.country.is_empty() {
        return Err(BuildError::Usage(
            "give either --all or one or more --country CC".into(),
        ));
    }
    if args.sample == Some(0) {
        return Err(BuildError::Usage("--sample must be at least 1".into()));
    }
    let mut wanted = BTreeSet::new();
    for c in &args.country {
        let cc = c.to_ascii_uppercase();
        if !blackout_model::observation::is_country_code(&cc) {
            return Err(BuildError::Usage(format!(
                "--country {c:?} is not an ISO 3166 alpha-2 code"
            )));
        }
        wanted.insert(cc);
    }
    let filter = (!args.all).then_some(&wanted);

    let inputs = sources::load(args, filter)?;
    let countries: BTreeSet<String> = match filter {
        Some(w) => w.clone(),
        None => {
            let mut all: BTreeSet<String> = inputs.prefixes.keys().cloned().collect();
            all.extend(
                inputs
                    .zone
                    .cctld_servers
                    .keys()
                    .filter_map(|t| country_for_cctld(t)),
            );
            all.extend(inputs.urls.keys().cloned());
            all.extend(inputs.extras.keys().cloned());
            all
        }
    };
    let files: Vec<(&String, Generated)> = countries
        .iter()
        .map(|cc| (cc, assemble(cc, &inputs, args.sample)))
        .collect();
    // A country asked for by name with no target in any input is a mistake (a typo'd
    // code, the wrong input files), not an empty catalog to write: refuse before writing
    // anything, and name the inputs that had nothing.
    let empty: Vec<&str> = files
        .iter()
        .filter(|(_, f)| {
            let c = &f.catalog;
            filter.is_some()
                && c.icmp.is_empty()
                && c.dns.is_empty()
                && c.http.is_empty()
                && c.tcp.is_empty()
        })
        .map(|(cc, _)| cc.as_str())
        .collect();
    if !empty.is_empty() {
        return Err(BuildError::Usage(format!(
            "no targets for {}: nothing for {} in {}",
            empty.join(", "),
            if empty.len() == 1 { "it" } else { "them" },
            inputs_named(args)
        )));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| BuildError::io(&args.out, e))?;

    let mut report = Vec::with_capacity(countries.len());
    for (cc, file) in files {
        let text = write::render(&file);
        blackout_model::catalog::parse(&text, &format!("generated:{cc}")).map_err(|source| {
            BuildError::Generated {
                country: cc.clone(),
                source,
            }
        })?;
        let path = args.out.join(format!("{}.toml", cc.to_ascii_lowercase()));
        std::fs::write(&path, text.as_bytes()).map_err(|e| BuildError::io(&path, e))?;
        report.push(CountryReport {
            country: cc.clone(),
            path,
            icmp_entries: file.catalog.icmp.len(),
            blocks: file.blocks_kept,
            blocks_in_country: file.blocks_total,
            dns: file.catalog.dns.len(),
            http: file.catalog.http.len(),
            bytes: text.len(),
        });
    }
    Ok(BuildReport {
        countries: report,
        elapsed_ms: started.elapsed().as_millis(),
    })
}

/// The inputs of a build, as the flags named them, for messages.
fn inputs_named(args: &BuildArgs) -> String {
    let mut out = Vec::new();
    let mut add = |flag: &str, paths: &[PathBuf]| {
        for p in paths {
            out.push(format!("--{flag} {}", p.display()));
        }
    };
    add("delegated", &args.delegated);
    add("country-prefixes", &args.country_prefixes);
    add("root-zone", args.root_zone.as_slice());
    add("urls", args.urls.as_slice());
    add("extra", &args.extra);
    out.join(", ")
}

/// A generated catalog with the numbers its header states.
pub(crate) struct Generated {
    pub catalog: CatalogFile,
    /// /24 blocks of the country's space with an origin AS.
    pub blocks_total: u64,
    /// Of those, blocks in the catalog (after sampling).
    pub blocks_kept: u64,
    /// Blocks of the country's space that no ASN source maps (left out).
    pub blocks_unrouted: u64,
    pub sample: Option<usize>,
    pub http_from_urls: bool,
}

fn assemble(cc: &str, inputs: &Inputs, sample: Option<usize>) -> Generated {
    let extra = inputs.extras.get(cc);
    let mut catalog = CatalogFile {
        country: cc.to_string(),
        name: extra
            .and_then(|e| e.name.clone())
            .or_else(|| inputs.country_names.get(cc).cloned())
            // DNS-only catalogs have no prefix source to name the country: ISO 3166's
            // English name, so no page shows a bare code twice.
            .or_else(|| {
                isocountry::CountryCode::for_alpha2(cc)
                    .ok()
                    .map(|c| c.name().to_string())
            }),
        control: false,
        source: Vec::new(),
        network: Vec::new(),
        icmp: Vec::new(),
        dns: Vec::new(),
        http: Vec::new(),
        tcp: Vec::new(),
    };

    // ICMP: the country's /24s, each owned by one origin AS.
    let mut blocks_total = 0;
    let mut blocks_kept = 0;
    let mut blocks_unrouted = 0;
    if let Some(space) = inputs.prefixes.get(cc) {
        let mut taken: Vec<(u32, u32)> = Vec::new();
        if let Some(e) = extra {
            for i in &e.icmp {
                if let ipnet::IpNet::V4(n) = i.prefix {
                    let s = u32::from(n.network()) >> 8;
                    let end = u32::from(n.broadcast()) >> 8;
                    taken.push((s, end));
                }
            }
        }
        let owned = ranges::assign_blocks(space, inputs.asn.as_ref(), &taken);
        blocks_unrouted = owned.unrouted;
        blocks_total = owned.blocks.len() as u64;
        let kept = match sample {
            Some(n) => ranges::sample_per_asn(&owned.blocks, n),
            None => owned.blocks,
        };
        blocks_kept = kept.len() as u64;
        catalog.icmp = ranges::aggregate(&kept);
    }
    if let Some(e) = extra {
        catalog.icmp.extend(e.icmp.iter().cloned());
    }
    catalog.icmp.sort_by_key(|a| (a.asn, a.prefix));

    // DNS: SOA and NS of the ccTLD at every address of every server.
    let tld = cctld_for(cc);
    if let Some(servers) = inputs.zone.cctld_servers.get(&tld) {
        // Two server names may share an address: one target per address (the first name).
        let mut seen = BTreeSet::new();
        for (name, addrs) in servers {
            for ip in addrs {
                if !seen.insert(*ip) {
                    continue;
                }
                for qtype in ["SOA", "NS"] {
                    catalog.dns.push(blackout_model::catalog::DnsEntry {
                        id: None,
                        server: ip.to_string(),
                        qname: format!("{tld}."),
                        qtype: qtype.into(),
                        asn: inputs.asn.as_ref().and_then(|m| m.lookup(*ip)).unwrap_or(0),
                        region: None,
                        server_name: Some(name.trim_end_matches('.').to_string()),
                    });
                }
            }
        }
    }
    if let Some(e) = extra {
        for d in &e.dns {
            if !catalog
                .dns
                .iter()
                .any(|x| x.server == d.server && x.qname == d.qname && x.qtype == d.qtype)
            {
                catalog.dns.push(d.clone());
            }
        }
    }

    // HTTP: hand-picked entries first, then any URL list.
    if let Some(e) = extra {
        catalog.http.extend(e.http.iter().cloned());
        catalog.tcp.extend(e.tcp.iter().cloned());
    }
    let mut http_from_urls = false;
    if let Some(urls) = inputs.urls.get(cc) {
        for u in urls {
            if !catalog.http.iter().any(|h| &h.url == u) {
                http_from_urls = true;
                catalog.http.push(blackout_model::catalog::HttpEntry {
                    id: None,
                    url: u.clone(),
                    asn: 0,
                    region: None,
                    address: None,
                    expect_status: Vec::new(),
                });
            }
        }
    }

    // Networks: every AS a target names, hand-written names first.
    let mut asns: BTreeSet<u32> = BTreeSet::new();
    asns.extend(catalog.icmp.iter().map(|e| e.asn));
    asns.extend(catalog.dns.iter().map(|e| e.asn));
    asns.extend(catalog.http.iter().map(|e| e.asn));
    asns.extend(catalog.tcp.iter().map(|e| e.asn));
    asns.remove(&0);
    let hand: BTreeMap<u32, &str> = extra
        .map(|e| e.network.iter().map(|n| (n.asn, n.name.as_str())).collect())
        .unwrap_or_default();
    for asn in asns {
        let name = hand
            .get(&asn)
            .map(|s| s.to_string())
            .or_else(|| {
                inputs
                    .asn
                    .as_ref()
                    .and_then(|m| m.org(asn))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("AS{asn}"));
        catalog
            .network
            .push(blackout_model::catalog::NetworkEntry { asn, name });
    }

    // Provenance: only the inputs that contributed to this file.
    let contributed_icmp = !catalog.icmp.is_empty();
    for s in &inputs.sources {
        let used = match s.kind {
            sources::SourceKind::Prefixes => inputs.prefixes.contains_key(cc) && contributed_icmp,
            sources::SourceKind::Asn => contributed_icmp || !catalog.dns.is_empty(),
            sources::SourceKind::RootZone => !catalog.dns.is_empty(),
            sources::SourceKind::Urls => http_from_urls,
        };
        if used && !catalog.source.contains(&s.entry) {
            catalog.source.push(s.entry.clone());
        }
    }
    if let Some(e) = extra {
        for s in &e.source {
            if !catalog.source.contains(s) {
                catalog.source.push(s.clone());
            }
        }
    }

    Generated {
        catalog,
        blocks_total,
        blocks_kept,
        blocks_unrouted,
        sample,
        http_from_urls,
    }
}
