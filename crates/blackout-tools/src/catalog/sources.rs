//! Parsers for the public input formats. Each is a simple line format, read whole and
//! split by hand: the builder reads every country of the world in well under a second.
//! Every error names the file and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::ranges::{AsnMap, AsnMapBuilder};
use super::{BuildArgs, BuildError};
use blackout_model::catalog::{CatalogFile, SourceEntry};

/// What kind of input a `[[source]]` came from, so a catalog lists only what fed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SourceKind {
    Prefixes,
    Asn,
    RootZone,
    Urls,
}

#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub kind: SourceKind,
    pub entry: SourceEntry,
}

/// The ccTLD delegations of the root zone.
#[derive(Debug, Clone, Default)]
pub struct RootZone {
    /// ccTLD label (`kz`) -> name server (`ns.nic.kz.`) -> addresses (sorted, IPv4 first).
    pub cctld_servers: BTreeMap<String, BTreeMap<String, Vec<IpAddr>>>,
}

/// Everything the inputs say, indexed for assembling catalogs.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Country -> IPv4 address ranges (inclusive), from all prefix sources, unmerged.
    pub prefixes: BTreeMap<String, Vec<(u32, u32)>>,
    pub country_names: BTreeMap<String, String>,
    pub asn: Option<AsnMap>,
    pub zone: RootZone,
    pub urls: BTreeMap<String, Vec<String>>,
    pub extras: BTreeMap<String, CatalogFile>,
    pub(crate) sources: Vec<Source>,
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|e| BuildError::io(path, e))
}

fn bad(path: &Path, line: usize, message: impl Into<String>) -> BuildError {
    BuildError::Input {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Lines with their 1-based numbers, `\r` stripped.
fn lines(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    data.split(|&b| b == b'\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        (i + 1, l)
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Dotted-quad IPv4 without allocation; `None` unless exactly four decimal octets.
pub fn parse_ipv4(s: &[u8]) -> Option<u32> {
    let mut out: u32 = 0;
    let mut octet: u32 = 0;
    let mut digits = 0;
    let mut dots = 0;
    for &b in s {
        match b {
            b'0'..=b'9' => {
                octet = octet * 10 + u32::from(b - b'0');
                digits += 1;
                if digits > 3 || octet > 255 {
                    return None;
                }
            }
            b'.' => {
                if digits == 0 || dots == 3 {
                    return None;
                }
                out = (out << 8) | octet;
                octet = 0;
                digits = 0;
                dots += 1;
            }
            _ => return None,
        }
    }
    if dots != 3 || digits == 0 {
        return None;
    }
    Some((out << 8) | octet)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v)
}

/// `a.b.c.d/len` -> inclusive range.
fn parse_cidr4(s: &[u8]) -> Option<(u32, u32)> {
    let slash = s.iter().position(|&b| b == b'/')?;
    let addr = parse_ipv4(&s[..slash])?;
    let len = parse_u64(&s[slash + 1..])?;
    if len > 32 {
        return None;
    }
    let host = if len == 0 {
        u32::MAX
    } else {
        (1u32 << (32 - len)).wrapping_sub(1)
    };
    if addr & host != 0 {
        return None;
    }
    Some((addr, addr | host))
}

/// The first plausible calendar date (YYYYMMDD, 1990-2099) in a name, as `YYYY-MM-DD`.
pub(crate) fn date_in(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut i = 0;
    while i + 8 <= b.len() {
        let w = &b[i..i + 8];
        if w.iter().all(u8::is_ascii_digit) && (i == 0 || !b[i - 1].is_ascii_digit()) {
            let n = |r: std::ops::Range<usize>| -> u32 {
                w[r].iter().fold(0, |a, &d| a * 10 + u32::from(d - b'0'))
            };
            let (y, m, d) = (n(0..4), n(4..6), n(6..8));
            if (1990..2100).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d) {
                return Some(format!("{y:04}-{m:02}-{d:02}"));
            }
        }
        i += 1;
    }
    None
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn parent_name(p: &Path) -> String {
    p.parent()
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads every input `args` names; `filter` limits per-country data to those countries.
pub(crate) fn load(
    args: &BuildArgs,
    filter: Option<&BTreeSet<String>>,
) -> Result<Inputs, BuildError> {
    let mut inputs = Inputs::default();
    let want = |cc: &str| filter.is_none_or(|f| f.contains(cc));
    for p in &args.delegated {
        let src = delegated(p, &mut inputs.prefixes, &want)?;
        inputs.sources.push(src);
    }
    for d in &args.country_prefixes {
        let src = ipverse(d, &mut inputs, &want)?;
        inputs.sources.push(src);
    }
    if !args.asn_csv.is_empty() || !args.pfx2as.is_empty() {
        let mut b = AsnMapBuilder::default();
        for p in &args.asn_csv {
            inputs.sources.push(asn_csv(p, &mut b)?);
        }
        for p in &args.pfx2as {
            inputs.sources.push(pfx2as(p, &mut b)?);
        }
        inputs.asn = Some(b.build());
    }
    if let Some(p) = &args.root_zone {
        let (zone, src) = root_zone(p)?;
        inputs.zone = zone;
        inputs.sources.push(src);
    }
    if let Some(d) = &args.urls {
        let src = citizenlab(d, &mut inputs.urls, &want)?;
        inputs.sources.push(src);
    }
    for p in &args.extra {
        for f in blackout_model::catalog::load_path(p)? {
            if !want(&f.country) {
                continue;
            }
            if inputs.extras.contains_key(&f.country) {
                return Err(BuildError::Usage(format!(
                    "{}: a second --extra catalog for {}",
                    p.display(),
                    f.country
                )));
            }
            inputs.extras.insert(f.country.clone(), f);
        }
    }
    Ok(inputs)
}

fn registry_url(registry: &str) -> Option<String> {
    let u = match registry {
        "ripencc" => "https://ftp.ripe.net/pub/stats/ripencc/",
        "afrinic" => "https://ftp.afrinic.net/pub/stats/afrinic/",
        "apnic" => "https://ftp.apnic.net/stats/apnic/",
        "arin" => "https://ftp.arin.net/pub/stats/arin/",
        "lacnic" => "https://ftp.lacnic.net/pub/stats/lacnic/",
        _ => return None,
    };
    Some(u.to_string())
}

/// NRO delegated-extended: `registry|cc|type|start|value|date|status[|opaque-id[|ext]]`
/// after a version line `version|registry|serial|records|startdate|enddate|UTCoffset`
/// and summary lines `registry|*|type|*|count|summary`.
fn delegated(
    path: &Path,
    out: &mut BTreeMap<String, Vec<(u32, u32)>>,
    want: &dyn Fn(&str) -> bool,
) -> Result<Source, BuildError> {
    let data = read(path)?;
    let mut registry = String::new();
    let mut date = None;
    let mut seen_version = false;
    for (n, line) in lines(&data) {
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let f: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
        if !seen_version {
            seen_version = true;
            if f.len() >= 6 && line[0].is_ascii_digit() {
                registry = text(f[1]);
                date = date_in(&text(f[5]));
                continue;
            }
        }
        if f.len() >= 6 && f[5] == b"summary" {
            continue;
        }
        if f.len() < 7 {
            return Err(bad(
                path,
                n,
                format!(
                    "expected registry|cc|type|start|value|date|status, got {} fields",
                    f.len()
                ),
            ));
        }
        if f[2] != b"ipv4" || !(f[6] == b"allocated" || f[6] == b"assigned") {
            continue;
        }
        let cc = text(f[1]).to_ascii_uppercase();
        if !blackout_model::observation::is_country_code(&cc)
            || cc == "ZZ"
            || cc == "EU"
            || cc == "AP"
        {
            continue;
        }
        let start = parse_ipv4(f[3]).ok_or_else(|| {
            bad(
                path,
                n,
                format!("start {:?} is not an IPv4 address", text(f[3])),
            )
        })?;
        let count = parse_u64(f[4])
            .filter(|c| *c > 0 && u64::from(start) + c <= 1 << 32)
            .ok_or_else(|| {
                bad(
                    path,
                    n,
                    format!("value {:?} is not an address count", text(f[4])),
                )
            })?;
        if want(&cc) {
            let end = (u64::from(start) + count - 1) as u32;
            out.entry(cc).or_default().push((start, end));
        }
    }
    let name = file_name(path);
    Ok(Source {
        kind: SourceKind::Prefixes,
        entry: SourceEntry {
            name: format!("RIR delegated-extended statistics ({name})"),
            url: registry_url(&registry),
            date,
            licence: Some("RIR/NRO statistics, free to use with attribution".into()),
        },
    })
}

/// ipverse/rir-ip: `DIR/country/<cc>/ipv4-aggregated.txt`, one CIDR a line, `#` comments;
/// the header names the country (`# Country: Kazakhstan (KZ)`).
fn ipverse(
    dir: &Path,
    inputs: &mut Inputs,
    want: &dyn Fn(&str) -> bool,
) -> Result<Source, BuildError> {
    let root = if dir.join("country").is_dir() {
        dir.join("country")
    } else {
        dir.to_path_buf()
    };
    let mut subdirs: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .map_err(|e| BuildError::io(&root, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_ascii_uppercase();
            blackout_model::observation::is_country_code(&name).then(|| (name, e.path()))
        })
        .collect();
    subdirs.sort();
    for (cc, sub) in subdirs {
        if !want(&cc) {
            continue;
        }
        let path = sub.join("ipv4-aggregated.txt");
        if !path.exists() {
            continue;
        }
        let data = read(&path)?;
        let ranges = inputs.prefixes.entry(cc.clone()).or_default();
        for (n, line) in lines(&data) {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            if line[0] == b'#' {
                let t = text(line);
                if let Some(rest) = t.strip_prefix("# Country: ") {
                    let name = rest
                        .rsplit_once(" (")
                        .map(|(n, _)| n)
                        .unwrap_or(rest)
                        .trim()
                        .to_string();
                    inputs.country_names.entry(cc.clone()).or_insert(name);
                }
                continue;
            }
            let r = parse_cidr4(line).ok_or_else(|| {
                bad(
                    &path,
                    n,
                    format!("{:?} is not an IPv4 CIDR prefix", text(line)),
                )
            })?;
            ranges.push(r);
        }
    }
    let base = if dir.file_name().is_some_and(|n| n == "country") {
        parent_name(dir)
    } else {
        file_name(dir)
    };
    let licence_file = root.parent().map(|p| p.join("LICENSE"));
    let licence = licence_file
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            if t.contains("CC0 1.0") {
                "CC0-1.0".to_string()
            } else {
                "see LICENSE of the source".to_string()
            }
        });
    Ok(Source {
        kind: SourceKind::Prefixes,
        entry: SourceEntry {
            name: format!("ipverse/rir-ip per-country prefixes ({base})"),
            url: Some("https://github.com/ipverse/rir-ip".into()),
            date: date_in(&base),
            licence,
        },
    })
}

/// The records of a CSV file (RFC 4180: quoted fields may hold commas, doubled quotes
/// and line breaks) with the 1-based line each starts on; rows may have any number of
/// fields, a missing one reads as empty. One record buffer is reused for every row.
struct CsvRows<'a> {
    path: &'a Path,
    data: &'a [u8],
    reader: csv::Reader<&'a [u8]>,
    record: csv::ByteRecord,
    /// Bytes of `data` whose line breaks are counted in `line`.
    seen: usize,
    line: usize,
}

impl<'a> CsvRows<'a> {
    fn new(path: &'a Path, data: &'a [u8]) -> Self {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(data);
        CsvRows {
            path,
            data,
            reader,
            record: csv::ByteRecord::new(),
            seen: 0,
            line: 1,
        }
    }

    /// Lines are counted here: the reader's own count leaves out the blank lines it skips,
    /// and its byte offset of a record is where the previous one ended, before them.
    fn line_at(&mut self, byte: u64) -> usize {
        let mut byte = (byte as usize).min(self.data.len());
        while matches!(self.data.get(byte), Some(b'\r' | b'\n')) {
            byte += 1;
        }
        if byte > self.seen {
            let breaks = self.data[self.seen..byte].iter().filter(|&&b| b == b'\n');
            self.line += breaks.count();
            self.seen = byte;
        }
        self.line
    }

    fn next_row(&mut self) -> Option<Result<(usize, &csv::ByteRecord), BuildError>> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let byte = self.record.position().map_or(0, |p| p.byte());
                let n = self.line_at(byte);
                Some(Ok((n, &self.record)))
            }
            Err(e) => {
                let n = e.position().map_or(0, |p| self.line_at(p.byte()));
                Some(Err(bad(self.path, n, e.to_string())))
            }
        }
    }
}

/// ip-location-db: `range_start,range_end,asn,organization` (IPv4 or IPv6 rows).
fn asn_csv(path: &Path, b: &mut AsnMapBuilder) -> Result<Source, BuildError> {
    let data = read(path)?;
    let mut rows = CsvRows::new(path, &data);
    while let Some(row) = rows.next_row() {
        let (n, row) = row?;
        let field = |i: usize| row.get(i).unwrap_or_default();
        let (start, end, asn, org) = (field(0), field(1), field(2), field(3));
        if n == 1 && parse_u64(asn).is_none() && start.starts_with(b"range") {
            continue; // a header row
        }
        let asn = parse_u64(asn)
            .filter(|a| *a <= u64::from(u32::MAX))
            .ok_or_else(|| bad(path, n, format!("asn {:?} is not an AS number", text(asn))))?
            as u32;
        if let (Some(s), Some(e)) = (parse_ipv4(start), parse_ipv4(end)) {
            if e < s {
                return Err(bad(path, n, "range_end is before range_start"));
            }
            b.add_v4(s, e, asn);
        } else {
            let p6 = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<Ipv6Addr>().ok();
            match (p6(start), p6(end)) {
                (Some(s), Some(e)) if u128::from(e) >= u128::from(s) => {
                    b.add_v6(u128::from(s), u128::from(e), asn)
                }
                _ => {
                    return Err(bad(
                        path,
                        n,
                        format!(
                            "{:?},{:?} is not an IP address range",
                            text(start),
                            text(end)
                        ),
                    ));
                }
            }
        }
        if asn != 0 && !org.is_empty() {
            b.org(asn, org);
        }
    }
    let dir = parent_name(path);
    Ok(Source {
        kind: SourceKind::Asn,
        entry: SourceEntry {
            name: format!("ip-location-db asn ({}, {dir})", file_name(path)),
            url: Some("https://github.com/sapics/ip-location-db".into()),
            date: date_in(&dir).or_else(|| date_in(&file_name(path))),
            licence: Some("CC-BY-4.0 (RouteViews, DB-IP, NRO)".into()),
        },
    })
}

/// CAIDA RouteViews pfx2as: `prefix<TAB>length<TAB>asn`, where asn may be a multi-origin
/// `a_b` or an AS set `a,b` (the first is taken).
fn pfx2as(path: &Path, b: &mut AsnMapBuilder) -> Result<Source, BuildError> {
    let data = read(path)?;
    for (n, line) in lines(&data) {
        let mut f = line
            .split(|c| *c == b'\t' || *c == b' ')
            .filter(|x| !x.is_empty());
        let (Some(pfx), Some(len), Some(asn)) = (f.next(), f.next(), f.next()) else {
            if line.trim_ascii().is_empty() || line[0] == b'#' {
                continue;
            }
            return Err(bad(path, n, "expected prefix, length and asn"));
        };
        let first = asn
            .split(|c| *c == b'_' || *c == b',')
            .next()
            .unwrap_or(asn);
        let asn = parse_u64(first)
            .filter(|a| *a <= u64::from(u32::MAX))
            .ok_or_else(|| bad(path, n, format!("asn {:?} is not an AS number", text(asn))))?
            as u32;
        let len = parse_u64(len).ok_or_else(|| bad(path, n, "length is not a number"))?;
        if let Some(a) = parse_ipv4(pfx) {
            let mut cidr = pfx.to_vec();
            cidr.extend_from_slice(format!("/{len}").as_bytes());
            let (s, e) = parse_cidr4(&cidr).ok_or_else(|| {
                bad(
                    path,
                    n,
                    format!("{}/{len} is not a CIDR prefix", std::net::Ipv4Addr::from(a)),
                )
            })?;
            b.add_v4(s, e, asn);
        } else {
            let a: Ipv6Addr = std::str::from_utf8(pfx)
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|_| len <= 128)
                .ok_or_else(|| bad(path, n, format!("{:?} is not an IP prefix", text(pfx))))?;
            let host = if len == 0 {
                u128::MAX
            } else {
                (1u128 << (128 - len)).wrapping_sub(1)
            };
            let s = u128::from(a) & !host;
            b.add_v6(s, s | host, asn);
        }
    }
    Ok(Source {
        kind: SourceKind::Asn,
        entry: SourceEntry {
            name: format!("CAIDA RouteViews prefix-to-AS ({})", file_name(path)),
            url: Some("https://www.caida.org/catalog/datasets/routeviews-prefix2as/".into()),
            date: date_in(&file_name(path)),
            licence: None,
        },
    })
}

/// The root zone in master-file form, one record a line: `owner [ttl] [class] type rdata`.
/// Keeps the NS of every two-letter TLD and the A/AAAA glue of their servers.
fn root_zone(path: &Path) -> Result<(RootZone, Source), BuildError> {
    let data = read(path)?;
    let mut ns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut glue: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut serial = None;
    let mut owner = String::new();
    for (n, line) in lines(&data) {
        let body = match line.iter().position(|&b| b == b';') {
            Some(p) => &line[..p],
            None => line,
        };
        if body.trim_ascii().is_empty() || body[0] == b'$' {
            continue;
        }
        let inherits = body[0] == b' ' || body[0] == b'\t';
        let mut f = body
            .split(|c| *c == b' ' || *c == b'\t')
            .filter(|x| !x.is_empty())
            .peekable();
        if !inherits {
            owner = text(f.next().unwrap_or_default()).to_ascii_lowercase();
        }
        // Optional TTL and class, in either order.
        let mut rtype = None;
        for tok in f.by_ref() {
            if tok.iter().all(u8::is_ascii_digit) || tok.eq_ignore_ascii_case(b"IN") {
                continue;
            }
            rtype = Some(tok);
            break;
        }
        let Some(rtype) = rtype else {
            return Err(bad(path, n, "record without a type"));
        };
        let rdata: Vec<&[u8]> = f.collect();
        let need = |k: usize| -> Result<(), BuildError> {
            if rdata.len() < k {
                Err(bad(
                    path,
                    n,
                    format!("{} record needs {k} rdata fields", text(rtype)),
                ))
            } else {
                Ok(())
            }
        };
        match rtype {
            b"NS" => {
                need(1)?;
                let label = owner.trim_end_matches('.');
                if label.len() == 2 && label.bytes().all(|b| b.is_ascii_lowercase()) {
                    ns.entry(label.to_string())
                        .or_default()
                        .insert(text(rdata[0]).to_ascii_lowercase());
                }
            }
            b"A" | b"AAAA" => {
                need(1)?;
                let ip: IpAddr = std::str::from_utf8(rdata[0])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .filter(|ip: &IpAddr| ip.is_ipv4() == (rtype == b"A"))
                    .ok_or_else(|| {
                        bad(
                            path,
                            n,
                            format!("{:?} is not an {} address", text(rdata[0]), text(rtype)),
                        )
                    })?;
                glue.entry(owner.clone()).or_default().insert(ip);
            }
            b"SOA" if owner == "." => {
                need(3)?;
                serial = Some(text(rdata[2]));
            }
            _ => {}
        }
    }
    let mut zone = RootZone::default();
    for (tld, servers) in ns {
        let m = zone.cctld_servers.entry(tld).or_default();
        for s in servers {
            let mut addrs: Vec<IpAddr> = glue.get(&s).into_iter().flatten().copied().collect();
            addrs.sort_by_key(|a| (a.is_ipv6(), *a));
            if !addrs.is_empty() {
                m.insert(s, addrs);
            }
        }
    }
    let name = match &serial {
        Some(s) => format!("IANA root zone, serial {s}"),
        None => format!("IANA root zone ({})", file_name(path)),
    };
    Ok((
        zone,
        Source {
            kind: SourceKind::RootZone,
            entry: SourceEntry {
                name,
                url: Some("https://www.internic.net/domain/root.zone".into()),
                date: serial.as_deref().and_then(date_in),
                licence: None,
            },
        },
    ))
}

/// Citizen Lab test-lists: `DIR/<cc>.csv` with header `url,category_code,...`.
fn citizenlab(
    dir: &Path,
    out: &mut BTreeMap<String, Vec<String>>,
    want: &dyn Fn(&str) -> bool,
) -> Result<Source, BuildError> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| BuildError::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            let stem = p.file_stem()?.to_string_lossy().to_ascii_uppercase();
            (p.extension().is_some_and(|x| x == "csv")
                && blackout_model::observation::is_country_code(&stem))
            .then_some((stem, p))
        })
        .collect();
    files.sort();
    for (cc, path) in files {
        if !want(&cc) {
            continue;
        }
        let data = read(&path)?;
        let mut urls = BTreeSet::new();
        let mut rows = CsvRows::new(&path, &data);
        while let Some(row) = rows.next_row() {
            let (n, row) = row?;
            let url = text(row.get(0).unwrap_or_default());
            if n == 1 && url == "url" {
                continue; // the header row
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(&path, n, format!("{url:?} is not an http(s) URL")));
            }
            urls.insert(url);
        }
        out.insert(cc, urls.into_iter().collect());
    }
    Ok(Source {
        kind: SourceKind::Urls,
        entry: SourceEntry {
            name: "Citizen Lab test-lists".into(),
            url: Some("https://github.com/citizenlab/test-lists".into()),
            date: None,
            licence: Some("CC-BY-NC-SA-4.0".into()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_parser_matches_std() {
        for s in ["0.0.0.0", "1.2.3.4", "255.255.255.255", "10.0.0.1"] {
            let want = u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
            assert_eq!(parse_ipv4(s.as_bytes()), Some(want), "{s}");
        }
        for s in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "1..2.3",
            "1.2.3.4 ",
            "1.2.3.0004",
        ] {
            assert_eq!(parse_ipv4(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn dates_are_found_in_names() {
        assert_eq!(
            date_in("ipverse-rir-ip_latest-20260201").as_deref(),
            Some("2026-02-01")
        );
        assert_eq!(date_in("2.3.2026061719").as_deref(), Some("2026-06-17"));
        assert_eq!(date_in("2026082201").as_deref(), Some("2026-08-22"));
        assert_eq!(date_in("delegated-ripencc-extended-latest"), None);
    }

    #[test]
    fn csv_rows_unquote_and_keep_their_lines() {
        let data = b"\"Cloudflare, Inc.\",x\n\n\"say \"\"hi\"\"\"\r\n";
        let mut csv = CsvRows::new(Path::new("t.csv"), data);
        let mut rows: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
        while let Some(r) = csv.next_row() {
            let (n, rec) = r.unwrap();
            rows.push((n, rec.iter().map(<[u8]>::to_vec).collect()));
        }
        assert_eq!(
            rows,
            vec![
                (1, vec![b"Cloudflare, Inc.".to_vec(), b"x".to_vec()]),
                (3, vec![b"say \"hi\"".to_vec()]),
            ]
        );
    }

    /// RFC 4180 lets a quoted field hold a line break. The hand-written splitter read
    /// such a row as two lines and failed on the second ("Inc.\"" is no range); a row
    /// after it must still be reported on its own line, and the name stays on one line
    /// (it is written into a catalog comment).
    #[test]
    fn asn_csv_takes_a_line_break_inside_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("asn.csv");
        std::fs::write(
            &p,
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare,\nInc.\"\n1.0.1.0,1.0.1.255,AS2,x\n",
        )
        .unwrap();
        let mut b = AsnMapBuilder::default();
        let err = asn_csv(&p, &mut b).unwrap_err().to_string();
        assert!(err.contains(":3: asn \"AS2\""), "{err}");
        std::fs::write(&p, "1.0.0.0,1.0.0.255,13335,\"Cloudflare,\r\nInc.\"\n").unwrap();
        let mut b = AsnMapBuilder::default();
        asn_csv(&p, &mut b).unwrap();
        assert_eq!(b.build().org(13335), Some("Cloudflare, Inc."));
    }
}
