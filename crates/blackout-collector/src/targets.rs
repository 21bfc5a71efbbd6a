//! The catalog's targets as the collector holds them: every id once, in one string, with
//! what observations must agree with in a few bytes beside it, and a hash table of
//! indices (no second copy of the ids) to find a target by id.
//!
//! At a million targets the expanded `Vec<Target>` and a `HashMap<String, _>` of
//! validation facts cost ~450 bytes per target before any observation; this costs ~45.
//! Agents get their share by expanding the catalog files again (see
//! [`crate::ingest::Collector::catalog_for`]), which is as fast as copying the targets.

use std::hash::BuildHasher;

use blackout_model::catalog::{CatalogError, CatalogFile};
use blackout_model::observation::Signal;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// Marks "no region" in [`Meta::region`].
const NO_REGION: u32 = u32::MAX;

/// What observations of a target must agree with (and its region, which the catalog
/// decides).
#[derive(Debug, Clone, Copy)]
struct Meta {
    asn: u32,
    country: u32,
    region: u32,
    signal: Signal,
    control: bool,
}

/// A target of the catalog, as [`TargetTable::get`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetFacts<'a> {
    pub country: &'a str,
    pub asn: u32,
    pub signal: Signal,
    pub control: bool,
    pub region: Option<&'a str>,
}

/// The targets of a catalog, in the order of [`blackout_model::catalog::expand`].
#[derive(Debug, Default)]
pub struct TargetTable {
    /// Every id, one after the other.
    ids: String,
    /// End of each target's id in `ids`.
    ends: Vec<u32>,
    meta: Vec<Meta>,
    countries: Vec<String>,
    regions: Vec<String>,
    /// Indices into `ends`/`meta`, hashed by their id.
    index: HashTable<u32>,
}

fn hash_id(id: &str) -> u64 {
    FxBuildHasher.hash_one(id)
}

impl TargetTable {
    /// The targets of `files`; an id that appears twice is an error, as in
    /// [`blackout_model::catalog::expand`].
    pub fn new(files: &[CatalogFile]) -> Result<TargetTable, String> {
        let mut t = TargetTable::default();
        let mut dup: Option<String> = None;
        for f in files {
            f.expand_each(|target| {
                if dup.is_some() {
                    return;
                }
                if t.find(&target.id).is_some() {
                    dup = Some(target.id);
                    return;
                }
                let country = intern(&mut t.countries, &target.country);
                let region = target
                    .region
                    .as_deref()
                    .map_or(NO_REGION, |r| intern(&mut t.regions, r));
                let i = t.meta.len() as u32;
                t.ids.push_str(&target.id);
                t.ends.push(t.ids.len() as u32);
                t.meta.push(Meta {
                    asn: target.asn,
                    country,
                    region,
                    signal: target.signal(),
                    control: target.control,
                });
                let TargetTable {
                    ids, ends, index, ..
                } = &mut t;
                index.insert_unique(hash_id(&target.id), i, |&j| hash_id(id_at(ids, ends, j)));
            });
        }
        if let Some(id) = dup {
            return Err(CatalogError::Invalid {
                origin: "catalog".into(),
                message: format!("target id {id:?} appears more than once"),
            }
            .to_string());
        }
        if t.ids.len() > u32::MAX as usize {
            return Err("catalog: the target ids exceed 4 GiB".into());
        }
        t.ids.shrink_to_fit();
        t.ends.shrink_to_fit();
        t.meta.shrink_to_fit();
        t.index
            .shrink_to_fit(|&j| hash_id(id_at(&t.ids, &t.ends, j)));
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// The index of the target `id`.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.index
            .find(hash_id(id), |&j| id_at(&self.ids, &self.ends, j) == id)
            .map(|&j| j as usize)
    }

    /// The facts of the target `id`.
    pub fn get(&self, id: &str) -> Option<TargetFacts<'_>> {
        let m = self.meta[self.find(id)?];
        Some(TargetFacts {
            country: &self.countries[m.country as usize],
            asn: m.asn,
            signal: m.signal,
            control: m.control,
            region: (m.region != NO_REGION).then(|| self.regions[m.region as usize].as_str()),
        })
    }

    /// (id, is control) of every target, in order.
    pub fn ids(&self) -> impl Iterator<Item = (&str, bool)> {
        (0..self.meta.len()).map(|i| (id_at(&self.ids, &self.ends, i as u32), self.meta[i].control))
    }
}

fn id_at<'a>(ids: &'a str, ends: &[u32], i: u32) -> &'a str {
    let i = i as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &ids[start..ends[i] as usize]
}

/// Countries and regions are few (hundreds, thousands) and come one entry at a time: a
/// search from the end finds the one just used first.
fn intern(names: &mut Vec<String>, name: &str) -> u32 {
    if let Some(i) = names.iter().rposition(|n| n == name) {
        return i as u32;
    }
    names.push(name.to_string());
    (names.len() - 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_expanded_target_is_found_with_its_facts() {
        let files = vec![
            blackout_model::catalog::parse(
                "country = \"XA\"\n[[icmp]]\nprefix = \"198.18.0.0/20\"\nasn = 64500\nregion = \"North\"\n[[tcp]]\naddress = \"198.18.0.1:443\"\nasn = 64501\n",
                "xa.toml",
            )
            .unwrap(),
            blackout_model::catalog::parse(
                "country = \"ZZ\"\ncontrol = true\n[[tcp]]\naddress = \"192.0.2.1:443\"\nasn = 1\n",
                "zz.toml",
            )
            .unwrap(),
        ];
        let expanded = blackout_model::catalog::expand(&files).unwrap();
        let table = TargetTable::new(&files).unwrap();
        assert_eq!(table.len(), expanded.len());
        for (i, t) in expanded.iter().enumerate() {
            assert_eq!(table.find(&t.id), Some(i), "{}", t.id);
            assert_eq!(
                table.get(&t.id),
                Some(TargetFacts {
                    country: &t.country,
                    asn: t.asn,
                    signal: t.signal(),
                    control: t.control,
                    region: t.region.as_deref(),
                })
            );
        }
        let ids: Vec<(&str, bool)> = table.ids().collect();
        let want: Vec<(&str, bool)> = expanded
            .iter()
            .map(|t| (t.id.as_str(), t.control))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(table.get("icmp:203.0.113.0/24"), None);
        assert_eq!(table.find("icmp:198.18.0.0/2"), None);
    }

    #[test]
    fn an_id_twice_is_refused_by_name() {
        let f = blackout_model::catalog::parse(
            "country = \"XA\"\n[[tcp]]\naddress = \"198.18.0.1:443\"\nasn = 1\n",
            "xa.toml",
        )
        .unwrap();
        let e = TargetTable::new(&[f.clone(), f]).unwrap_err();
        assert!(
            e.contains("\"tcp:198.18.0.1:443\" appears more than once"),
            "{e}"
        );
    }
}
