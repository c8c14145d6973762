//! The audit trail: every authentication, every change of principals, rights, topics,
//! processors and devices, and every refused request, as one JSON record each in the internal
//! topic [`AUDIT_TOPIC`] (key: the principal) and as a line of the broker's log.
//!
//! Requests record events without waiting: they go into a bounded queue, and one task appends
//! them in batches through the partition's appender like any produce. A full queue drops the
//! event from the topic (counted in `silt_audit_dropped_total`), never from the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use silt_wire::batch::BatchBuilder;
use silt_wire::frame::{self, Frame, PREFIX_LEN};
use silt_wire::{Compression, Request};
use tokio::sync::mpsc;

use crate::durability::Durability;
use crate::partitions::Partitions;
use silt_storage::Appended;

/// The audit topic. Internal: no client may produce to it, create or delete it; reading it
/// takes the `audit` right.
pub const AUDIT_TOPIC: &str = "silt.audit";
/// Kept this long (retention of the audit topic).
pub const AUDIT_RETENTION_MS: u64 = 90 * 24 * 3600 * 1000;
/// Events waiting for the writer at most.
const QUEUE_MAX: usize = 16_384;
/// Events per appended batch at most.
const BATCH_EVENTS_MAX: usize = 512;

/// What came of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (a change that succeeded, a login that passed).
    Ok,
    /// Refused for want of a credential or a right.
    Denied,
    /// Attempted with the right but failed (an unknown topic, a bad module).
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct Event {
    pub time_ms: i64,
    /// `user:NAME`, `device:ID`, or `anonymous` before authentication.
    pub principal: String,
    pub source: Option<SocketAddr>,
    /// `authenticate`, or the request's name (`create-topic`, `produce`, `grant-acl`, ...).
    pub operation: String,
    /// `topic:NAME`, `user:NAME`, ... (empty when none).
    pub resource: String,
    pub outcome: Outcome,
    /// Why, for refusals and failures.
    pub detail: String,
}

impl Event {
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "time_ms": self.time_ms,
            "principal": self.principal,
            "source": self.source.map(|s| s.to_string()),
            "operation": self.operation,
            "resource": self.resource,
            "outcome": self.outcome.name(),
            "detail": self.detail,
        })
        .to_string()
    }
}

/// The sending side, held by the request handlers.
pub struct Audit {
    tx: mpsc::Sender<Event>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Event>>>,
    dropped: IntCounter,
}

impl Audit {
    pub fn new(dropped: IntCounter) -> Audit {
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        Audit { tx, rx: std::sync::Mutex::new(Some(rx)), dropped }
    }

    /// Records `event`: logs it now, queues it for the audit topic.
    pub fn record(&self, event: Event) {
        let source = event.source.map(|s| s.to_string()).unwrap_or_default();
        match event.outcome {
            Outcome::Ok => {
                tracing::info!(target: "silt::audit", principal = %event.principal, %source, operation = %event.operation, resource = %event.resource, outcome = "ok", detail = %event.detail)
            }
            _ => {
                tracing::warn!(target: "silt::audit", principal = %event.principal, %source, operation = %event.operation, resource = %event.resource, outcome = event.outcome.name(), detail = %event.detail)
            }
        }
        if self.tx.try_send(event).is_err() {
            self.dropped.inc();
        }
    }

    /// Starts the task that appends queued events to the audit topic (once).
    pub fn start_writer(&self, partitions: Arc<Partitions>, durability: Arc<Durability>) {
        let Some(mut rx) = self.rx.lock().expect("audit lock").take() else { return };
        let dropped = self.dropped.clone();
        tokio::spawn(async move {
            let mut events = Vec::with_capacity(BATCH_EVENTS_MAX);
            while rx.recv_many(&mut events, BATCH_EVENTS_MAX).await > 0 {
                if durability.healthy().is_err() {
                    // Nothing is written after a failed flush; the events are in the log.
                    dropped.inc_by(events.len() as u64);
                } else if let Err(e) = append(&partitions, &durability, &events).await {
                    tracing::error!(error = %e, events = events.len(), "could not append to the audit topic");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                events.clear();
            }
        });
    }
}

/// Appends `events` as one batch and waits until it is durable and visible.
async fn append(partitions: &Partitions, durability: &Durability, events: &[Event]) -> Result<(), String> {
    let mut b = BatchBuilder::with_capacity(events.len() * 200);
    for e in events {
        b.push(e.time_ms, e.principal.as_bytes(), e.to_json().as_bytes(), &[]).map_err(|e| e.to_string())?;
    }
    let records = u64::from(b.len());
    // Producer id 0: the audit writer is the topic's only writer and never retries a batch.
    let batch = b.finish_with(0, 0, Compression::Lz4);
    let control =
        silt_wire::message::encode_request(&Request::Produce { topic: AUDIT_TOPIC.into(), partition: 0 });
    let bytes = frame::encode(&control, &batch);
    let frame = Frame::decode(bytes[PREFIX_LEN..].to_vec()).map_err(|e| e.to_string())?;
    let handle = partitions.get(AUDIT_TOPIC, 0).map_err(|e| e.to_string())?;
    let appended = handle.append(frame).await.ok_or("the audit partition's appender stopped")?;
    let (result, ticket) = appended.await.map_err(|_| "the audit partition's appender stopped")?;
    let base_offset = match result.map_err(|e| e.to_string())? {
        Appended::New { base_offset } => base_offset,
        Appended::Duplicate { .. } => return Ok(()),
    };
    if durability.acks_wait_for_flush() {
        durability.wait(ticket).await?;
    }
    handle.durable(base_offset + records);
    Ok(())
}
