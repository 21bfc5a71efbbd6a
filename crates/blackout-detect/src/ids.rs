//! Interned ids: every id once, one after the other in one string, and a hash table of
//! their indices. The engine keys every target by its index; at millions of targets a
//! `HashMap<String, u32>` cost ~80 bytes per target, this ~30.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Default)]
pub(crate) struct Ids {
    all: String,
    /// End of each id in `all`.
    ends: Vec<u32>,
    index: HashTable<u32>,
}

fn hash(id: &str) -> u64 {
    FxBuildHasher.hash_one(id)
}

fn at<'a>(all: &'a str, ends: &[u32], i: u32) -> &'a str {
    let i = i as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &all[start..ends[i] as usize]
}

impl Ids {
    pub(crate) fn get(&self, id: &str) -> Option<u32> {
        self.index
            .find(hash(id), |&j| at(&self.all, &self.ends, j) == id)
            .copied()
    }

    /// Appends `id` (not yet interned) and returns its index.
    pub(crate) fn push(&mut self, id: &str) -> u32 {
        let i = self.ends.len() as u32;
        self.all.push_str(id);
        self.ends.push(self.all.len() as u32);
        let Ids { all, ends, index } = self;
        index.insert_unique(hash(id), i, |&j| hash(at(all, ends, j)));
        i
    }
}

/// Saved as the string and the ends; the table is rebuilt when read back.
impl Serialize for Ids {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.all, &self.ends).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Ids {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ids, D::Error> {
        let (all, ends): (String, Vec<u32>) = Deserialize::deserialize(d)?;
        let mut prev = 0u32;
        for &e in &ends {
            if e < prev || e as usize > all.len() || !all.is_char_boundary(e as usize) {
                return Err(serde::de::Error::custom("interned ids: bad end offset"));
            }
            prev = e;
        }
        let mut index = HashTable::with_capacity(ends.len());
        for i in 0..ends.len() as u32 {
            index.insert_unique(hash(at(&all, &ends, i)), i, |&j| hash(at(&all, &ends, j)));
        }
        Ok(Ids { all, ends, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_again_and_survive_the_encoding() {
        let mut ids = Ids::default();
        let names: Vec<String> = (0..1000).map(|i| format!("icmp:10.{i}.0.0/24")).collect();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(ids.get(n), None);
            assert_eq!(ids.push(n), i as u32);
        }
        let back: Ids = postcard::from_bytes(&postcard::to_allocvec(&ids).unwrap()).unwrap();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(ids.get(n), Some(i as u32));
            assert_eq!(back.get(n), Some(i as u32));
        }
        assert_eq!(back.get("icmp:10.0.0.0/2"), None);
        assert_eq!(back.get(""), None);
    }
}
