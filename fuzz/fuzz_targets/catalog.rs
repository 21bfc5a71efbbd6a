//! The catalog an agent receives from its collector (`GET /api/v1/catalog`), on arbitrary
//! bytes, through the path the agent takes: the body within its limits, parsed and
//! checked, then built into the target table with the agent's filter. Never a panic and
//! never an allocation beyond the limits; what passes builds a table with as many targets
//! as counted; and the compact table agrees with the plain expansion of the model (same
//! ids, the same duplicates refused).
#![no_main]

use std::collections::BTreeSet;

use blackout_agent::catalog::{CatalogLimits, count_targets, parse_catalog};
use blackout_agent::filter::TargetFilter;
use blackout_agent::table::{Entry, TargetTable};
use libfuzzer_sys::fuzz_target;

/// Far below the agent's default, so that one input costs milliseconds; the limit is
/// the same code whatever its value.
const MAX_TARGETS: u64 = 50_000;

fuzz_target!(|data: &[u8]| {
    let limits = CatalogLimits {
        max_targets: MAX_TARGETS,
        ..CatalogLimits::default()
    };
    let Ok(fetched) = parse_catalog(data, &limits) else {
        return;
    };
    if fetched.assignment.is_some() {
        return;
    }
    let files = fetched.files;
    let counted = count_targets(&files);
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
});
