//! Read-time processing: a processor applied to a fetch, its output returned to the consumer
//! and never stored. An instance is kept between the fetches of one read, so a stateful
//! processor keeps its state from one fetch to the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use silt_runtime::Instance;
use silt_wire::batch::{self, BatchBuilder, BatchView};
use silt_wire::{Compression, ErrorCode};

use super::HostError;

/// Consume-time instances kept between fetches.
const CONSUME_CACHE_MAX: usize = 64;
/// A cached consume-time instance not reused for this long is dropped.
const CONSUME_IDLE_MS_MAX: u64 = 60_000;

/// Which read an instance belongs to: the same partition, processor version and parameters,
/// continuing where the last fetch ended.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) struct ReadKey {
    pub topic: String,
    pub partition: u32,
    pub name: String,
    pub version: u32,
    pub params: Vec<(String, String)>,
    /// The offset the next fetch of the same read starts at.
    pub next_offset: u64,
}

/// A consume-time instance waiting for the next fetch of the same read.
struct Cached {
    key: ReadKey,
    held: Held,
    used: Instant,
}

/// A read-time instance with its place in the read-time budget, given back when it is
/// dropped.
pub(super) struct Held {
    pub instance: Instance,
    _slot: Slot,
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The instances of reads in progress: at most `max` at once, running or kept between
/// fetches, so a flood of read-time processing cannot take the instance slots pipelines
/// need to start (they share the runtime's pool).
pub(super) struct ReadTime {
    cache: Mutex<Vec<Cached>>,
    held: Arc<AtomicUsize>,
    max: usize,
}

impl ReadTime {
    pub fn new(max: usize) -> ReadTime {
        ReadTime { cache: Mutex::default(), held: Arc::default(), max }
    }

    /// The instance kept for `key`, if its read went on recently.
    pub fn take(&self, key: &ReadKey) -> Option<Held> {
        let mut cache = self.cache.lock().expect("consume cache");
        cache.retain(|c| c.used.elapsed() < Duration::from_millis(CONSUME_IDLE_MS_MAX));
        cache.iter().position(|c| c.key == *key).map(|i| cache.swap_remove(i).held)
    }

    /// Makes `instance` count against the budget, dropping the least recently used kept
    /// instance when the budget is spent; `None` when every slot is running a fetch.
    pub fn hold(&self, instance: impl FnOnce() -> Result<Instance, HostError>) -> Result<Held, HostError> {
        loop {
            let n = self.held.load(Ordering::Acquire);
            if n < self.max {
                if self.held.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    let slot = Slot(self.held.clone());
                    return Ok(Held { instance: instance()?, _slot: slot });
                }
                continue;
            }
            let mut cache = self.cache.lock().expect("consume cache");
            match cache.iter().enumerate().min_by_key(|(_, c)| c.used).map(|(i, _)| i) {
                Some(oldest) => drop(cache.swap_remove(oldest)),
                None => {
                    return Err(HostError::new(
                        ErrorCode::Busy,
                        format!(
                            "read-time processing is at its limit of {} instances running at once; try again",
                            self.max
                        ),
                    ))
                }
            }
        }
    }

    /// Keeps `held` for the fetch that continues at `key.next_offset`.
    pub fn keep(&self, key: ReadKey, held: Held) {
        let mut cache = self.cache.lock().expect("consume cache");
        if cache.len() >= CONSUME_CACHE_MAX {
            if let Some(oldest) = cache.iter().enumerate().min_by_key(|(_, c)| c.used).map(|(i, _)| i) {
                cache.swap_remove(oldest);
            }
        }
        cache.push(Cached { key, held, used: Instant::now() });
    }
}

/// Runs `instance` over fetched batches (the first trimmed to start at `start`) and returns
/// its output batches, each stamped with the base offset of the input batch it came from,
/// and the offset after the last input batch it ran over: it stops after the batch whose
/// output reaches `out_max` bytes (`None`: it ran over them all).
pub(super) fn apply(
    instance: &mut Instance,
    processor: &str,
    start: u64,
    fetched: &[u8],
    out_max: usize,
) -> Result<(Vec<u8>, Option<u64>), HostError> {
    let mut out = Vec::new();
    for view in batch::split_batches(fetched) {
        if out.len() >= out_max {
            return Ok((out, Some(view.map_or(start, |v| v.base_offset().max(start)))));
        }
        let view = view.map_err(|e| HostError::new(ErrorCode::Storage, format!("stored batch: {e}")))?;
        let trimmed;
        let input: &[u8] = if view.base_offset() < start {
            trimmed = trim_batch(view, start)?;
            match &trimmed {
                Some(b) => b,
                None => continue,
            }
        } else {
            view.as_bytes()
        };
        let base = view.base_offset().max(start);
        let produced = instance.process(input).map_err(|e| {
            HostError::new(
                ErrorCode::InvalidModule,
                format!("processor {processor:?} failed at offset {base}: {e}"),
            )
        })?;
        if let Some(b) = produced {
            let mut b = batch::compress(b, Compression::Lz4);
            batch::stamp(&mut b, base, BatchView::new(input).map(|v| v.append_time_ms()).unwrap_or(0));
            out.extend_from_slice(&b);
        }
    }
    Ok((out, None))
}

/// The records of `view` at or after `start`, as a batch of their own (based at `start`).
/// `None` when none are. Only reads that start inside a batch need it, so the re-encoding
/// stays off the pipeline's path, which always starts at batch boundaries.
pub(super) fn trim_batch(view: BatchView<'_>, start: u64) -> Result<Option<Vec<u8>>, HostError> {
    let stored = |e: &dyn std::fmt::Display| HostError::new(ErrorCode::Storage, format!("stored batch: {e}"));
    let plain = batch::decompress(view.as_bytes()).map_err(|e| stored(&e))?;
    let plain = BatchView::new(&plain).map_err(|e| stored(&e))?;
    let mut builder = BatchBuilder::with_capacity(plain.as_bytes().len());
    for r in plain.records().filter(|r| r.offset >= start) {
        let headers: Vec<(&[u8], &[u8])> = r.headers().collect();
        builder
            .push(r.timestamp_ms, r.key, r.value, &headers)
            .map_err(|e| HostError::new(ErrorCode::Storage, format!("re-encoding a stored batch: {e}")))?;
    }
    if builder.is_empty() {
        return Ok(None);
    }
    let mut bytes = builder.finish(0, 0);
    batch::stamp(&mut bytes, start, plain.append_time_ms());
    Ok(Some(bytes))
}
