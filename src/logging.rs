//! Log set-up shared by the binaries: to stderr, as text or JSON lines.
//!
//! The level comes from `--log-level` when given, else from `RUST_LOG` (which also takes
//! per-module directives), else `info`. Colour codes only when stderr is a terminal and
//! `NO_COLOR` is unset: files and journald get plain text.

use std::io::{IsTerminal, Write};

/// Log levels the `--log-level` flag takes (as Prometheus' `--log.level` does).
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Writes to stderr and swallows write errors. With stderr a closed pipe (`... 2>&1 | head
/// -1`), a failing write must not panic (tracing's own error report uses `eprintln!`,
/// which panics) nor hold up anything, least of all shutdown.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. `format` is `text` or `json`; `level` one of [`LEVELS`].
pub fn init(format: &str, level: Option<&str>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .log_internal_errors(false);
    if format == "json" {
        b.json().init();
    } else {
        b.with_ansi(colour()).init();
    }
}
