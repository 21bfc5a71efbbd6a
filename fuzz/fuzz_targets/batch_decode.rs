//! The collector's upload decoder and validator on arbitrary bytes: never a panic; a
//! batch it accepts always re-encodes and decodes to itself.
#![no_main]

use std::sync::OnceLock;

use blackout_collector::Uploader;
use blackout_collector::{Collector, CollectorConfig};
use blackout_model::observation::Batch;
use libfuzzer_sys::fuzz_target;

fn collector() -> &'static Collector {
    static C: OnceLock<Collector> = OnceLock::new();
    C.get_or_init(|| {
        Collector::new(
            CollectorConfig::default(),
            blackout::embedded().expect("embedded catalogs parse"),
        )
        .expect("collector without state")
    })
}

fuzz_target!(|data: &[u8]| {
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
});
