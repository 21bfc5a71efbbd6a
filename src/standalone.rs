//! `blackout standalone`: the agent and the collector in one process. The agent's upload
//! sink is a trait of the agent crate; this is its in-process implementation, here
//! because only the binary knows both ends.

use std::sync::Arc;

use blackout_agent::spool::Outgoing;
use blackout_agent::upload::{SendResult, Sink};
use blackout_collector::{Collector, IngestError, Uploader};
use blackout_model::observation::SpoolStatus;
use futures::future::BoxFuture;

/// Hands batches straight to a collector in the same process (`blackout standalone`).
pub struct InProcessSink(pub Arc<Collector>);

impl Sink for InProcessSink {
    fn send<'a>(&'a self, batch: &'a Outgoing, status: SpoolStatus) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let c = self.0.clone();
            let mut b = match batch.batch() {
                Ok(b) => b,
                Err(e) => return SendResult::Rejected(format!("not a batch: {e}")),
            };
            b.spool = Some(status);
            let r = tokio::task::spawn_blocking(move || {
                c.ingest(&Uploader::InProcess, b, chrono::Utc::now())
            })
            .await;
            match r {
                Ok(Ok(_)) => SendResult::Acked,
                Ok(Err(IngestError::Invalid(m))) => SendResult::Rejected(m),
                Ok(Err(e)) => SendResult::Retry {
                    after: None,
                    reason: e.to_string(),
                },
                Err(e) => SendResult::Retry {
                    after: None,
                    reason: e.to_string(),
                },
            }
        })
    }
}
