//! The collector's upload decoding on arbitrary bytes, as a compact batch under zstd,
//! under gzip and bare: never a panic; decompression never produces more than the limit
//! nor asks the budget for more; a compact batch that decodes holds no more than a JSON
//! body of the limit could, and encodes again to bytes that decode to a batch that encodes to the same bytes.
#![no_main]

use blackout_collector::wire::{self, Coding, Encoding};
use blackout_model::compact;
use libfuzzer_sys::fuzz_target;

/// Small, so that bombs are common in what the fuzzer finds.
const LIMIT: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
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
});
