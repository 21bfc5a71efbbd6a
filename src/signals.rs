//! Signals the binaries stop on.

use tokio_util::sync::CancellationToken;

/// Cancels `stop` on SIGTERM or SIGINT. The token is cancelled before anything is logged:
/// a log write (say, to a closed pipe) must never stand between a signal and shutdown.
pub async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install the SIGTERM/SIGINT handlers");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    stop.cancel();
    tracing::info!(signal = name, "shutting down");
}
