//! Catalogs compiled into the binaries, so `blackout standalone` runs with no files.

use super::{CatalogError, CatalogFile, parse};

/// (file name, contents) of every catalog shipped in `probes/`.
const FILES: &[(&str, &str)] = &[
    ("control.toml", include_str!("../../probes/control.toml")),
    ("kz.toml", include_str!("../../probes/kz.toml")),
];

/// The shipped catalogs, parsed.
pub fn embedded() -> Result<Vec<CatalogFile>, CatalogError> {
    FILES
        .iter()
        .map(|(name, text)| parse(text, &format!("embedded:probes/{name}")))
        .collect()
}
