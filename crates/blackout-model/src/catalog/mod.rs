//! Target catalogs: what the agents probe, one TOML file per country in `probes/`.
//!
//! A catalog file names its country and lists targets of four kinds. Every target carries
//! its origin ASN, so observations aggregate per network as well as per country. An ICMP
//! entry may name a whole prefix: it expands into blocks (/24 for IPv4, /48 for IPv6),
//! each probed on its own, as Trinocular does. See `probes/README.md` for the format.

mod model;

pub use model::*;

/// What `GET /api/v1/catalog?agent=ID&share=rule` answers: the catalog as written
/// (prefixes, not blocks) and the rule of the agent's share, which the agent applies
/// itself ([`crate::assign::Share`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedCatalog {
    pub files: Vec<CatalogFile>,
    pub assignment: Assignment,
}

/// The fleet an agent's share is taken in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The agent the share is for.
    pub agent: String,
    /// Agents per target (control targets go to every agent).
    pub k: usize,
    /// The agents the collector counts as live (the agent itself included).
    pub fleet: Vec<String>,
}

impl Assignment {
    pub fn share(&self) -> crate::assign::Share {
        crate::assign::Share::new(&self.agent, &self.fleet, self.k)
    }
}

use std::path::{Path, PathBuf};

/// Why a catalog could not be loaded. Always names the file; parse errors also name the
/// line and key (the TOML parser reports them).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{0}: no catalog files (*.toml) found")]
    Empty(PathBuf),
}

/// Parses one catalog file. `origin` names it in errors (a path, or `embedded:kz.toml`).
pub fn parse(text: &str, origin: &str) -> Result<CatalogFile, CatalogError> {
    let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Parse {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    file.check().map_err(|message| CatalogError::Invalid {
        origin: origin.to_string(),
        message,
    })?;
    Ok(file)
}

/// Loads one file, or every `*.toml` in a directory (sorted by name, so ids and order are
/// deterministic).
pub fn load_path(path: &Path) -> Result<Vec<CatalogFile>, CatalogError> {
    let io = |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mut files = Vec::new();
    if meta.is_dir() {
        let mut names: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(CatalogError::Empty(path.to_path_buf()));
        }
        for p in names {
            files.extend(load_path(&p)?);
        }
    } else {
        let text = std::fs::read_to_string(path).map_err(io)?;
        files.push(parse(&text, &path.display().to_string())?);
    }
    Ok(files)
}

/// Expands catalog files into the flat target list the agent schedules. Fails on
/// duplicate target ids (two files claiming the same block is a catalog bug).
pub fn expand(files: &[CatalogFile]) -> Result<Vec<Target>, CatalogError> {
    let mut out = Vec::new();
    for f in files {
        f.expand_into(&mut out);
    }
    let mut seen = std::collections::HashSet::with_capacity(out.len());
    for t in &out {
        if !seen.insert(t.id.as_str()) {
            return Err(CatalogError::Invalid {
                origin: "catalog".into(),
                message: format!("target id {:?} appears more than once", t.id),
            });
        }
    }
    Ok(out)
}
