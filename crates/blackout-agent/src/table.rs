//! The agent's targets in compact form, and the ICMP block state that goes with them.
//!
//! At the sustained scale (the whole IPv4 /24 space, 4.2M blocks) a [`Target`] per block
//! costs ~400 bytes of RSS (its id, country and region strings on the heap, the `kind`
//! enum sized for its largest variant), twice over while the catalog is filtered: more
//! than the agent's whole budget of 256 bytes per block. So the blocks of a prefix entry
//! are kept as 24-byte records (the block and the index of the entry's shared labels),
//! their ids derived when an observation is written; only targets that carry their own data
//! (DNS, HTTP, TCP, ICMP blocks with known hosts) stay [`Target`]s. The block state of the
//! adaptive prober lives beside them in a `Vec` indexed like the blocks (56 bytes a block,
//! where the prober's own hash map costs 163).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::filter::{Refusal, TargetFilter};
use blackout_model::catalog::{
    CatalogError, CatalogFile, IPV4_BLOCK_LEN, IPV6_BLOCK_LEN, Target, TargetKind,
};
use blackout_model::observation::{Observation, Signal};
use blackout_probe::Outcome;
use blackout_probe::icmp::BlockState;

/// How the id of a block of an entry is written (as `CatalogFile::expand_into` does).
#[derive(Debug, Clone, PartialEq)]
enum IdForm {
    /// `icmp:{block}`.
    Default,
    /// `{base}/{block}`: an entry with an id that splits into several blocks.
    Base(Arc<str>),
    /// The id itself: an entry that is exactly one block.
    Exact(Arc<str>),
}

/// What the blocks of one catalog entry share.
#[derive(Debug, Clone, PartialEq)]
struct Labels {
    id: IdForm,
    country: Arc<str>,
    asn: u32,
    region: Option<Arc<str>>,
    control: bool,
    availability: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    net: IpNet,
    labels: u32,
}

/// The id of a compact block, written only when needed.
pub struct BlockId<'a> {
    form: &'a IdForm,
    net: IpNet,
}

impl fmt::Display for BlockId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.form {
            IdForm::Default => write!(f, "icmp:{}", self.net),
            IdForm::Base(b) => write!(f, "{b}/{}", self.net),
            IdForm::Exact(id) => f.write_str(id),
        }
    }
}

/// One target of the table.
pub enum Entry<'a> {
    /// An ICMP block without known hosts; its state is in [`BlockStates`] at the same index.
    Block {
        id: BlockId<'a>,
        net: IpNet,
        availability: Option<f64>,
    },
    Other(&'a Target),
}

/// The agent's targets: compact blocks first (indices `0..blocks()`), then the others.
#[derive(Debug, Default, PartialEq)]
pub struct TargetTable {
    labels: Vec<Labels>,
    /// Sorted by block, so a new table finds the state of the blocks it keeps in one pass.
    blocks: Vec<Block>,
    others: Vec<Target>,
}

/// Targets a filter refused while a table was built.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Refused {
    pub reserved: usize,
    pub opted_out: usize,
}

impl Refused {
    fn count(&mut self, r: Refusal) {
        match r {
            Refusal::Reserved => self.reserved += 1,
            Refusal::OptedOut => self.opted_out += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.reserved + self.opted_out
    }
}

fn block_len(prefix: &IpNet, given: Option<u8>) -> u8 {
    given.unwrap_or(match prefix {
        IpNet::V4(_) => IPV4_BLOCK_LEN,
        IpNet::V6(_) => IPV6_BLOCK_LEN,
    })
}

fn duplicate(id: impl fmt::Display) -> CatalogError {
    CatalogError::Invalid {
        origin: "catalog".into(),
        message: format!("target id {:?} appears more than once", id.to_string()),
    }
}

/// Country, ASN, region, control, availability (bits): what blocks with default ids
/// may share.
type LabelsKey = (Arc<str>, u32, Option<Arc<str>>, bool, Option<u64>);

#[derive(Default)]
struct Interner(HashMap<String, Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = s.into();
        self.0.insert(s.to_string(), a.clone());
        a
    }
}

impl TargetTable {
    /// Builds the table from catalog files, keeping only what `filter` allows. Targets
    /// and ids are those of [`blackout_model::catalog::expand`]; blocks are never expanded into
    /// [`Target`]s.
    pub fn from_catalog(
        files: &[CatalogFile],
        filter: &TargetFilter,
    ) -> Result<(TargetTable, Refused), CatalogError> {
        Self::from_catalog_within(files, filter, crate::catalog::DEFAULT_MAX_TARGETS)
    }

    /// As [`Self::from_catalog`], refusing catalogs that expand into more than
    /// `max_targets` targets before anything is allocated for them.
    pub fn from_catalog_within(
        files: &[CatalogFile],
        filter: &TargetFilter,
        max_targets: u64,
    ) -> Result<(TargetTable, Refused), CatalogError> {
        crate::catalog::check_target_count(files, max_targets).map_err(|e| {
            CatalogError::Invalid {
                origin: "catalog".into(),
                message: e.to_string(),
            }
        })?;
        let mut t = TargetTable::default();
        let mut refused = Refused::default();
        let mut strings = Interner::default();
        // Entries whose blocks carry default ids and the same labels share one record: a
        // collector's per-agent share of the catalog (fleet assignment) is one entry per
        // block, and must cost no more per block than the prefixes it came from.
        let mut shared: HashMap<LabelsKey, u32> = HashMap::new();
        let compact = |e: &blackout_model::catalog::IcmpEntry| e.hosts.is_empty();
        // Bounded by `max_targets` (checked above), so the sum cannot overflow.
        let blocks: usize = files
            .iter()
            .flat_map(|f| f.icmp.iter().filter(|e| compact(e)))
            .map(|e| {
                let bits = block_len(&e.prefix, e.block_len).saturating_sub(e.prefix.prefix_len());
                1usize.checked_shl(bits as u32).unwrap_or(0)
            })
            .fold(0usize, usize::saturating_add);
        t.blocks.reserve_exact(blocks);
        advise_huge_pages(&t.blocks);
        for f in files {
            let country = strings.get(&f.country);
            let mut rest = CatalogFile {
                country: f.country.clone(),
                name: None,
                control: f.control,
                source: Vec::new(),
                network: Vec::new(),
                icmp: Vec::new(),
                dns: f.dns.clone(),
                http: f.http.clone(),
                tcp: f.tcp.clone(),
            };
            for e in &f.icmp {
                if !compact(e) {
                    rest.icmp.push(e.clone());
                    continue;
                }
                let len = block_len(&e.prefix, e.block_len);
                let id = match &e.id {
                    None => IdForm::Default,
                    // What `catalog::to_files` writes for a block with its default id.
                    Some(id)
                        if e.prefix.prefix_len() == len
                            && id.strip_prefix("icmp:") == Some(&e.prefix.to_string()) =>
                    {
                        IdForm::Default
                    }
                    Some(id) if e.prefix.prefix_len() == len => IdForm::Exact(id.as_str().into()),
                    Some(base) => IdForm::Base(strings.get(base)),
                };
                let region = e.region.as_deref().map(|r| strings.get(r));
                let key = (
                    country.clone(),
                    e.asn,
                    region.clone(),
                    f.control,
                    e.availability.map(f64::to_bits),
                );
                let labels = match (&id, shared.get(&key)) {
                    (IdForm::Default, Some(&i)) => i,
                    _ => {
                        let i = t.labels.len() as u32;
                        if matches!(id, IdForm::Default) {
                            shared.insert(key, i);
                        }
                        t.labels.push(Labels {
                            id,
                            country: country.clone(),
                            asn: e.asn,
                            region,
                            control: f.control,
                            availability: e.availability,
                        });
                        i
                    }
                };
                // A prefix that touches no refused range needs no check per block.
                let whole = filter.check_prefix(&e.prefix);
                let Ok(subnets) = e.prefix.subnets(len) else {
                    continue;
                };
                for net in subnets {
                    if whole.is_err()
                        && let Err(r) = filter.check_prefix(&net)
                    {
                        refused.count(r);
                        continue;
                    }
                    t.blocks.push(Block { net, labels });
                }
            }
            let mut targets = Vec::new();
            rest.expand_into(&mut targets);
            for target in targets {
                match filter.check(&target) {
                    Ok(()) => t.others.push(target),
                    Err(r) => refused.count(r),
                }
            }
        }
        t.finish()?;
        Ok((t, refused))
    }

    /// A table of already expanded targets (the list of `blackout standalone`, tests).
    pub fn from_targets(targets: Vec<Target>) -> Result<TargetTable, CatalogError> {
        let mut t = TargetTable::default();
        let mut strings = Interner::default();
        for target in targets {
            match &target.kind {
                TargetKind::Icmp {
                    block,
                    hosts,
                    availability,
                } if hosts.is_empty() => {
                    let labels = t.labels.len() as u32;
                    t.labels.push(Labels {
                        id: IdForm::Exact(target.id.as_str().into()),
                        country: strings.get(&target.country),
                        asn: target.asn,
                        region: target.region.as_deref().map(|r| strings.get(r)),
                        control: target.control,
                        availability: *availability,
                    });
                    t.blocks.push(Block {
                        net: *block,
                        labels,
                    });
                }
                _ => t.others.push(target),
            }
        }
        t.finish()?;
        Ok(t)
    }

    /// Sorts the blocks and refuses duplicate ids, as `catalog::expand` does.
    fn finish(&mut self) -> Result<(), CatalogError> {
        self.blocks.sort_unstable_by_key(|b| (b.net, b.labels));
        self.blocks.shrink_to_fit();
        // Derived ids can only meet on the same block, and equal blocks are adjacent.
        let mut i = 0;
        while i < self.blocks.len() {
            let mut j = i + 1;
            while j < self.blocks.len() && self.blocks[j].net == self.blocks[i].net {
                j += 1;
            }
            if j - i > 1 {
                let mut ids = HashSet::new();
                for k in i..j {
                    let id = self.id(k);
                    if !ids.insert(id.clone()) {
                        return Err(duplicate(id));
                    }
                }
            }
            i = j;
        }
        // Ids given whole (single-block entries, other targets) may meet each other or a
        // derived id on any block: parse them back into a block to look.
        let given: Vec<&str> = self
            .labels
            .iter()
            .filter_map(|l| match &l.id {
                IdForm::Exact(id) => Some(&**id),
                _ => None,
            })
            .chain(self.others.iter().map(|t| t.id.as_str()))
            .collect();
        let mut unique = HashSet::with_capacity(given.len());
        if let Some(id) = given.iter().find(|id| !unique.insert(**id)) {
            return Err(duplicate(id));
        }
        let bases: HashSet<&str> = self
            .labels
            .iter()
            .filter_map(|l| match &l.id {
                IdForm::Base(b) => Some(&**b),
                _ => None,
            })
            .collect();
        for id in given {
            let derived = id.strip_prefix("icmp:").map(|rest| (IdForm::Default, rest));
            let based = bases.iter().filter_map(|b| {
                id.strip_prefix(b)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(|rest| (IdForm::Base((*b).into()), rest))
            });
            for (form, rest) in derived.into_iter().chain(based) {
                // Only the id a block would get, character for character, is the same
                // id: `icmp:2a00:0::/48` names the block `2a00::/48` but is another id
                // (found by the `catalog` fuzz target).
                let Ok(net) = rest.parse::<IpNet>() else {
                    continue;
                };
                if rest != net.to_string() {
                    continue;
                }
                let start = self.blocks.partition_point(|b| b.net < net);
                let clash = self.blocks[start..]
                    .iter()
                    .take_while(|b| b.net == net)
                    .any(|b| self.labels[b.labels as usize].id == form);
                if clash {
                    return Err(duplicate(id));
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.blocks.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of compact blocks (indices `0..blocks()`).
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn entry(&self, i: usize) -> Entry<'_> {
        match self.blocks.get(i) {
            Some(b) => {
                let l = &self.labels[b.labels as usize];
                Entry::Block {
                    id: BlockId {
                        form: &l.id,
                        net: b.net,
                    },
                    net: b.net,
                    availability: l.availability,
                }
            }
            None => Entry::Other(&self.others[i - self.blocks.len()]),
        }
    }

    pub fn id(&self, i: usize) -> String {
        match self.entry(i) {
            Entry::Block { id, .. } => id.to_string(),
            Entry::Other(t) => t.id.clone(),
        }
    }

    /// Targets per signal, in [`Signal::PROBED`] order (blocks are ICMP).
    pub fn count_by_signal(&self) -> [u64; 4] {
        let mut n = [0u64; 4];
        let at = |s: Signal| Signal::PROBED.iter().position(|x| *x == s).unwrap_or(0);
        n[at(Signal::Icmp)] += self.blocks.len() as u64;
        for t in &self.others {
            n[at(t.signal())] += 1;
        }
        n
    }

    pub fn signal(&self, i: usize) -> Signal {
        match self.entry(i) {
            Entry::Block { .. } => Signal::Icmp,
            Entry::Other(t) => t.signal(),
        }
    }

    /// The record of one probe of target `i`.
    pub fn observation(
        &self,
        i: usize,
        agent: &str,
        outcome: Outcome,
        measured_at: DateTime<Utc>,
    ) -> Observation {
        let Some(b) = self.blocks.get(i) else {
            return outcome.into_observation(
                agent,
                &self.others[i - self.blocks.len()],
                measured_at,
            );
        };
        outcome.observe(agent, self.block_labels(b), Signal::Icmp, measured_at)
    }

    fn block_labels(&self, b: &Block) -> blackout_probe::Labels {
        let l = &self.labels[b.labels as usize];
        blackout_probe::Labels {
            id: BlockId {
                form: &l.id,
                net: b.net,
            }
            .to_string(),
            country: l.country.to_string(),
            asn: l.asn,
            region: l.region.as_deref().map(str::to_string),
            control: l.control,
        }
    }

    /// Every target in full (tests, small tables).
    pub fn to_targets(&self) -> Vec<Target> {
        let mut out: Vec<Target> = self
            .blocks
            .iter()
            .map(|b| {
                let l = &self.labels[b.labels as usize];
                let labels = self.block_labels(b);
                Target {
                    id: labels.id,
                    country: labels.country,
                    asn: labels.asn,
                    region: labels.region,
                    control: labels.control,
                    kind: TargetKind::Icmp {
                        block: b.net,
                        hosts: Vec::<IpAddr>::new(),
                        availability: l.availability,
                    },
                }
            })
            .collect();
        out.extend(self.others.iter().cloned());
        out
    }
}

const STATE_SHARDS: usize = 16;

/// Asks the kernel to back a large array's memory with transparent huge pages, before it
/// is first touched. A round visits the blocks in random order: with 4 KiB pages each
/// visit to the block table and to the block states missed the TLB, and in a virtual
/// machine (two levels of page tables) those two loads took half of the agent's CPU
/// (`perf` of the sustained benchmark). Advice only: without effect where THP is off
/// ("never") or on other systems.
#[allow(unsafe_code)]
fn advise_huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes < 4 << 20 {
            return;
        }
        let start = v.as_ptr() as usize;
        let first = start.next_multiple_of(PAGE);
        let len = (start + bytes).saturating_sub(first) / PAGE * PAGE;
        // SAFETY: the range lies inside the vector's own allocation, and MADV_HUGEPAGE
        // changes no contents, only how the kernel backs the pages.
        let r = unsafe { libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), bytes, "no huge pages for the block table");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// The adaptive prober's state of each compact block of a [`TargetTable`], same index.
/// Sharded locks: a probe copies its block's state out, probes, and writes it back.
#[derive(Debug)]
pub struct BlockStates {
    shards: Vec<Mutex<Vec<BlockState>>>,
}

impl BlockStates {
    /// Fresh state for every block of `table`, keeping the state of the blocks it shares
    /// with `old` (a catalog update must not forget what the agent learned).
    pub fn new(
        table: &TargetTable,
        old: Option<(&TargetTable, &BlockStates)>,
        fresh: BlockState,
    ) -> BlockStates {
        let n = table.blocks.len();
        let mut shards: Vec<Vec<BlockState>> = (0..STATE_SHARDS)
            .map(|s| Vec::with_capacity(n / STATE_SHARDS + usize::from(s < n % STATE_SHARDS)))
            .collect();
        shards.iter().for_each(advise_huge_pages);
        let old = old.map(|(t, s)| {
            let guards: Vec<_> = s
                .shards
                .iter()
                .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
                .collect();
            (t, guards)
        });
        let mut j = 0;
        for (i, b) in table.blocks.iter().enumerate() {
            let mut st = fresh;
            if let Some((t, guards)) = &old {
                while j < t.blocks.len() && t.blocks[j].net < b.net {
                    j += 1;
                }
                if j < t.blocks.len() && t.blocks[j].net == b.net {
                    st = guards[j % STATE_SHARDS][j / STATE_SHARDS];
                }
            }
            shards[i % STATE_SHARDS].push(st);
        }
        BlockStates {
            shards: shards.into_iter().map(Mutex::new).collect(),
        }
    }

    pub fn get(&self, i: usize) -> BlockState {
        let s = self.shards[i % STATE_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s[i / STATE_SHARDS]
    }

    pub fn set(&self, i: usize, st: BlockState) {
        let mut s = self.shards[i % STATE_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        s[i / STATE_SHARDS] = st;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blackout_model::catalog::{expand, parse};

    fn files(texts: &[&str]) -> Vec<CatalogFile> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| parse(t, &format!("f{i}.toml")).unwrap())
            .collect()
    }

    fn sorted(mut v: Vec<Target>) -> Vec<Target> {
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    const KZ: &str = r#"
country = "KZ"
[[icmp]]
prefix = "2.132.0.0/22"
asn = 9198
region = "Almaty"
[[icmp]]
id = "kt"
prefix = "5.34.0.0/23"
asn = 9198
availability = 0.4
[[icmp]]
id = "one"
prefix = "5.35.0.0/24"
asn = 9198
[[icmp]]
prefix = "5.36.0.0/24"
asn = 9198
hosts = ["5.36.0.1"]
[[icmp]]
prefix = "10.1.0.0/23"
asn = 9198
[[tcp]]
address = "5.37.0.1:443"
asn = 9198
"#;

    #[test]
    fn same_targets_as_expand_filtered() {
        let f = files(&[
            KZ,
            "country = \"ZZ\"\ncontrol = true\n[[icmp]]\nprefix = \"1.1.1.0/24\"\nasn = 13335\n",
        ]);
        let filter = TargetFilter::new(false, vec!["2.132.2.0/24".parse().unwrap()]);
        let (t, refused) = TargetTable::from_catalog(&f, &filter).unwrap();
        let want: Vec<Target> = expand(&f)
            .unwrap()
            .into_iter()
            .filter(|t| filter.check(t).is_ok())
            .collect();
        assert_eq!(sorted(t.to_targets()), sorted(want));
        assert_eq!(
            refused,
            Refused {
                reserved: 2,
                opted_out: 1
            }
        );
        assert_eq!(t.blocks(), 3 + 2 + 1 + 1);
        // Every index answers with its own id and signal.
        let ids: HashSet<String> = (0..t.len()).map(|i| t.id(i)).collect();
        assert_eq!(ids.len(), t.len());
        assert!(
            ids.contains("kt/5.34.1.0/24") && ids.contains("one"),
            "{ids:?}"
        );
        assert_eq!(t.signal(t.len() - 1), Signal::Tcp);
        // The table of the expanded targets is the same list.
        let again = TargetTable::from_targets(t.to_targets()).unwrap();
        assert_eq!(sorted(again.to_targets()), sorted(t.to_targets()));
    }

    #[test]
    fn an_assigned_share_shares_labels_per_network() {
        // What a collector serves under fleet assignment: one entry per block, ids given.
        let whole = files(&[
            "country = \"XA\"\n[[icmp]]\nprefix = \"5.0.0.0/16\"\nasn = 64500\n[[icmp]]\nprefix = \"5.1.0.0/16\"\nasn = 64501\nregion = \"North\"\n[[icmp]]\nid = \"named\"\nprefix = \"5.2.0.0/23\"\nasn = 64500\n",
        ]);
        let targets = expand(&whole).unwrap();
        let share: Vec<&Target> = targets.iter().step_by(3).collect();
        let served = blackout_model::catalog::to_files(&share);
        assert_eq!(served[0].icmp.len(), share.len(), "one entry per block");
        let filter = TargetFilter::new(false, vec![]);
        let (t, _) = TargetTable::from_catalog(&served, &filter).unwrap();
        let want: Vec<Target> = share.into_iter().cloned().collect();
        assert_eq!(sorted(t.to_targets()), sorted(want));
        // Two networks with default ids share two records; the named entry's blocks keep
        // their given ids, one record each.
        let named = t
            .labels
            .iter()
            .filter(|l| matches!(l.id, IdForm::Exact(_)))
            .count();
        assert_eq!(t.labels.len(), 2 + named, "{:?}", t.labels.len());
        assert!(named <= 2);
    }

    #[test]
    fn observation_carries_the_labels() {
        let (t, _) =
            TargetTable::from_catalog(&files(&[KZ]), &TargetFilter::new(false, vec![])).unwrap();
        let i = (0..t.len())
            .find(|i| t.id(*i) == "icmp:2.132.1.0/24")
            .unwrap();
        let now = Utc::now();
        let o = t.observation(
            i,
            "a1",
            Outcome::ok(std::time::Duration::from_millis(3)),
            now,
        );
        let target = t
            .to_targets()
            .into_iter()
            .find(|x| x.id == o.target)
            .unwrap();
        let want =
            Outcome::ok(std::time::Duration::from_millis(3)).into_observation("a1", &target, now);
        assert_eq!(o, want);
        assert_eq!(o.region.as_deref(), Some("Almaty"));
        o.validate().unwrap();
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let none = TargetFilter::new(true, vec![]);
        let cases = [
            // The same block twice with default ids.
            "country = \"KZ\"\n[[icmp]]\nprefix = \"2.0.0.0/23\"\nasn = 1\n[[icmp]]\nprefix = \"2.0.1.0/24\"\nasn = 1\n",
            // An explicit id equal to another block's derived id.
            "country = \"KZ\"\n[[icmp]]\nprefix = \"2.0.0.0/23\"\nasn = 1\n[[icmp]]\nid = \"icmp:2.0.1.0/24\"\nprefix = \"3.0.0.0/24\"\nasn = 1\n",
            // A based id met by another target's id.
            "country = \"KZ\"\n[[icmp]]\nid = \"x\"\nprefix = \"2.0.0.0/23\"\nasn = 1\n[[tcp]]\nid = \"x/2.0.0.0/24\"\naddress = \"2.0.0.1:443\"\nasn = 1\n",
            // Two single-block entries with one id.
            "country = \"KZ\"\n[[icmp]]\nid = \"y\"\nprefix = \"2.0.0.0/24\"\nasn = 1\n[[icmp]]\nid = \"y\"\nprefix = \"3.0.0.0/24\"\nasn = 1\n",
        ];
        for text in cases {
            let f = files(&[text]);
            assert!(expand(&f).is_err(), "expand accepts {text}");
            let e = TargetTable::from_catalog(&f, &none)
                .unwrap_err()
                .to_string();
            assert!(e.contains("more than once"), "{e}");
        }
        // Different ids on one block are two targets, as expand says.
        let f = files(&[
            "country = \"KZ\"\n[[icmp]]\nprefix = \"2.0.0.0/24\"\nasn = 1\n[[icmp]]\nid = \"z\"\nprefix = \"2.0.0.0/24\"\nasn = 2\n",
        ]);
        assert_eq!(TargetTable::from_catalog(&f, &none).unwrap().0.len(), 2);
        // An id that names another entry's block in a non-canonical form is another id,
        // as expand says (found by the `catalog` fuzz target: the table refused it).
        let f = files(&[
            "country = \"KZ\"\n[[icmp]]\nprefix = \"2a00::/48\"\nasn = 1\n[[icmp]]\nid = \"icmp:2a00:0::/48\"\nprefix = \"2a01::/48\"\nasn = 1\n",
        ]);
        assert_eq!(expand(&f).unwrap().len(), 2);
        assert_eq!(TargetTable::from_catalog(&f, &none).unwrap().0.len(), 2);
    }

    #[test]
    fn block_state_survives_an_update_for_blocks_that_stay() {
        let prober =
            blackout_probe::icmp::IcmpProber::new(&blackout_probe::ProbeSettings::default());
        let none = TargetFilter::new(true, vec![]);
        let a = "country = \"KZ\"\n[[icmp]]\nprefix = \"2.0.0.0/22\"\nasn = 1\n";
        let b = "country = \"KZ\"\n[[icmp]]\nprefix = \"2.0.2.0/23\"\nasn = 1\n[[icmp]]\nprefix = \"1.0.0.0/24\"\nasn = 1\n";
        let (ta, _) = TargetTable::from_catalog(&files(&[a]), &none).unwrap();
        let sa = BlockStates::new(&ta, None, prober.new_block_state());
        for i in 0..ta.blocks() {
            let mut st = sa.get(i);
            st.belief = i as f32 / 10.0;
            sa.set(i, st);
        }
        let (tb, _) = TargetTable::from_catalog(&files(&[b]), &none).unwrap();
        let sb = BlockStates::new(&tb, Some((&ta, &sa)), prober.new_block_state());
        let belief = |net: &str| {
            let i = (0..tb.len())
                .find(|i| tb.id(*i) == format!("icmp:{net}"))
                .unwrap();
            sb.get(i).belief
        };
        // 2.0.2.0 and 2.0.3.0 were the third and fourth blocks of the old table.
        assert_eq!(belief("2.0.2.0/24"), 0.2);
        assert_eq!(belief("2.0.3.0/24"), 0.3);
        assert_eq!(belief("1.0.0.0/24"), prober.new_block_state().belief);
    }

    /// The sustained target: the agent's whole per-block cost for the IPv4 /24 space.
    #[test]
    #[ignore = "measurement (~400 MB, seconds): cargo test --lib -- --ignored --nocapture table_memory"]
    fn table_memory_for_the_whole_ipv4_space() {
        let rss = || {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
            statm
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap()
                * 4096
        };
        let f: Vec<CatalogFile> = (1..10)
            .chain(11..66)
            .enumerate()
            .map(|(i, a)| {
                let cc = (b'A' + (i % 16) as u8) as char;
                let text = format!(
                    "country = \"X{cc}\"\n[[icmp]]\nprefix = \"{a}.0.0.0/8\"\nasn = {}\n",
                    64512 + i
                );
                parse(&text, "x.toml").unwrap()
            })
            .collect();
        let prober =
            blackout_probe::icmp::IcmpProber::new(&blackout_probe::ProbeSettings::default());
        let before = rss();
        let (t, _) = TargetTable::from_catalog(&f, &TargetFilter::new(false, vec![])).unwrap();
        let s = BlockStates::new(&t, None, prober.new_block_state());
        let per_block = (rss() - before) as f64 / t.blocks() as f64;
        eprintln!(
            "{} blocks: {per_block:.0} bytes of RSS per block (table + state)",
            t.blocks()
        );
        assert_eq!(t.blocks(), 1 << 22);
        assert!(s.get(12345).belief > 0.0);
        assert!(per_block <= 128.0, "{per_block}");
    }
}
