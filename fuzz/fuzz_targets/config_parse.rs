//! The configuration and catalog parsers on arbitrary text: an error, never a panic;
//! every error names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = blackout_collector::CollectorConfig::parse(text, Path::new("fuzz.toml")) {
        assert!(e.to_string().starts_with("fuzz.toml: "));
    }
    if let Err(e) = blackout_agent::AgentConfig::parse(text, Path::new("fuzz.toml")) {
        assert!(e.to_string().starts_with("fuzz.toml: "));
    }
    if let Ok(file) = blackout_model::catalog::parse(text, "fuzz.toml") {
        // expand() has no size limit: a /0 of /48 blocks would exhaust memory (a known
        // finding, reported), so only modest catalogs are expanded here.
        let blocks: f64 = file
            .icmp
            .iter()
            .map(|e| {
                let default = if e.prefix.addr().is_ipv4() { 24 } else { 48 };
                let bl = i32::from(e.block_len.unwrap_or(default));
                2f64.powi((bl - i32::from(e.prefix.prefix_len())).max(0))
            })
            .sum();
        if blocks <= 100_000.0 {
            let _ = blackout_model::catalog::expand(&[file]);
        }
    }
});
