//! Log set-up shared by the binaries: `RUST_LOG` filter (default `info`), to stderr, as
//! text or JSON lines.

/// Installs the global subscriber. `format` is `text` or `json`.
pub fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}
