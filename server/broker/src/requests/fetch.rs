//! Fetch: a partition's stored batches from an offset, the earliest or latest record, or a
//! point in event time, long-polling for new ones, within the response budget.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use silt_core::watermarks::FetchRefused;
use silt_wire::batch::{self, BatchView};
use silt_wire::{ErrorCode, FetchFrom, ProcessorRef, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{error, storage_error, Broker, Reply};

impl Broker {
    /// `connection`: the response budget of the connection asking, if it has one.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        from: FetchFrom,
        max_bytes: u32,
        max_wait_ms: u32,
        processor: Option<ProcessorRef>,
        connection: Option<Arc<Semaphore>>,
    ) -> Reply {
        let handle = match self.partition(topic, partition) {
            Ok(h) => h,
            Err(e) => return storage_error(e),
        };
        let asked = match from {
            FetchFrom::Offset(o) => o,
            FetchFrom::Earliest => handle.log.log_start(),
            FetchFrom::Latest => handle.visible(),
            FetchFrom::Timestamp(t) => match handle.log.offset_for_time(t) {
                Ok(o) => o,
                Err(e) => return storage_error(e),
            },
        };
        if let Some(lost) = handle.lost.as_ref().filter(|l| asked >= l.from) {
            return error(ErrorCode::DataLoss, crate::partitions::lost_message(lost));
        }
        // A reader inside a loss an operator accepted goes on after it.
        let asked = handle.log.past_gaps(asked);
        let (mut start, wait) = match handle.fetch_start(asked, max_wait_ms > 0) {
            Ok(s) => (s.start, s.wait),
            Err(FetchRefused::BeyondEnd { asked, visible }) => {
                return error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "offset {asked} is beyond the end of {topic}/{partition} (high watermark {visible})"
                    ),
                )
            }
        };
        if wait {
            let wait = Duration::from_millis(u64::from(max_wait_ms.min(self.limits.fetch_wait_ms_max)));
            let mut rx = handle.subscribe_visible();
            let _ = tokio::time::timeout(wait, rx.wait_for(|v| *v > start)).await;
        }
        let limit = handle.visible();
        let max_bytes = (max_bytes as usize).clamp(1, self.limits.fetch_bytes_max as usize);
        // The response's share of the budgets, before any byte is read: with slow readers
        // holding them, this waits instead of growing memory. The connection's share first,
        // so one connection's slow reads wait on it alone.
        let connection_permit = match connection {
            Some(budget) => match budget.clone().acquire_many_owned(max_bytes as u32).await {
                Ok(p) => Some((budget, p)),
                Err(_) => return error(ErrorCode::ShuttingDown, "the broker is shutting down"),
            },
            None => None,
        };
        let Ok(mut permit) = self.responses.clone().acquire_many_owned(max_bytes as u32).await else {
            return error(ErrorCode::ShuttingDown, "the broker is shutting down");
        };
        let log = handle.log.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            log.read(start, max_bytes, limit, &mut out).map(|r| (r, out))
        })
        .await;
        let (outcome, out) = match read {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return storage_error(e),
            Err(e) => return error(ErrorCode::Storage, format!("read task failed: {e}")),
        };
        if let FetchFrom::Timestamp(t) = from {
            // The index points at a batch; start at its first record at or after `t`.
            if let Some(Ok(first)) = batch::split_batches(&out).next() {
                start = first_at_or_after(first, t).unwrap_or(start).max(start);
            }
        }
        let mut next_offset = if outcome.batches == 0 { start } else { outcome.next_offset };
        let out = match processor {
            None => out,
            Some(p) => {
                let this = self.clone();
                let topic = topic.to_string();
                let applied = tokio::task::spawn_blocking(move || {
                    this.processors.apply(&topic, partition, &p, start, next_offset, &out, max_bytes)
                })
                .await;
                match applied {
                    Ok(Ok((v, next))) => {
                        next_offset = next;
                        v
                    }
                    Ok(Err(e)) => return error(e.code, e.message),
                    Err(e) => return error(ErrorCode::Storage, format!("processor task failed: {e}")),
                }
            }
        };
        self.metrics.records_out.with_label_values(&[topic]).inc_by(next_offset.saturating_sub(start));
        self.metrics.bytes_out.with_label_values(&[topic]).inc_by(out.len() as u64);
        let response = Response::Fetched {
            log_start: handle.log.log_start(),
            high_watermark: limit,
            next_offset,
            from_offset: start,
        };
        (response, self.budgeted(out, &mut permit, connection_permit).await)
    }

    /// `out` as response bytes that hold exactly their size of the response budget until they
    /// are dropped (written, and no longer needed by QUIC).
    async fn budgeted(
        &self,
        out: Vec<u8>,
        permit: &mut OwnedSemaphorePermit,
        connection: Option<(Arc<Semaphore>, OwnedSemaphorePermit)>,
    ) -> Bytes {
        // More than the fetch's size: a single batch larger than it, which a fetch always
        // returns, or read-time output. The broker's budget waits for it, and bounds it.
        let missing = out.len().saturating_sub(permit.num_permits());
        let extra = match missing {
            0 => None,
            n => self.responses.clone().acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX)).await.ok(),
        };
        resize(permit, out.len(), |_| extra);
        // The connection's takes only what is free.
        let connection = connection.map(|(budget, mut held)| {
            resize(&mut held, out.len(), |more| budget.try_acquire_many_owned(more).ok());
            held
        });
        let permit = permit.split(permit.num_permits()).expect("a permit splits into its own size");
        let pending = self.metrics.response_bytes_pending.clone();
        pending.add(out.len() as i64);
        Bytes::from_owner(Budgeted { bytes: out, _permits: (permit, connection), pending })
    }
}

/// Makes `permit` hold `len` permits: gives back what is over, and adds what `more` gets.
fn resize(
    permit: &mut OwnedSemaphorePermit,
    len: usize,
    more: impl FnOnce(u32) -> Option<OwnedSemaphorePermit>,
) {
    let held = permit.num_permits();
    if len < held {
        drop(permit.split(held - len));
    } else if len > held {
        if let Some(extra) = more(u32::try_from(len - held).unwrap_or(u32::MAX)) {
            permit.merge(extra);
        }
    }
}

/// Response bytes with their share of the response budget (`Broker::responses`).
struct Budgeted {
    bytes: Vec<u8>,
    /// The broker's, and the connection's when it has a budget.
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
    pending: prometheus::IntGauge,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Budgeted {
    fn drop(&mut self) {
        self.pending.sub(self.bytes.len() as i64);
    }
}

fn first_at_or_after(batch: BatchView<'_>, t: i64) -> Option<u64> {
    let plain = batch::decompress(batch.as_bytes()).ok()?;
    let view = BatchView::checked(&plain).ok()?;
    view.records().find(|r| r.timestamp_ms >= t).map(|r| r.offset)
}
