//! Read-time processing: a processor applied to a fetch, its output returned to the consumer
//! and never stored. An instance is kept between the fetches of one read, so a stateful
//! processor keeps its state from one fetch to the next.

use std::sync::Mutex;
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
    instance: Instance,
    used: Instant,
}

/// The instances of reads in progress.
#[derive(Default)]
pub(super) struct ReadTime {
    cache: Mutex<Vec<Cached>>,
}

impl ReadTime {
    /// The instance kept for `key`, if its read went on recently.
    pub fn take(&self, key: &ReadKey) -> Option<Instance> {
        let mut cache = self.cache.lock().expect("consume cache");
        cache.retain(|c| c.used.elapsed() < Duration::from_millis(CONSUME_IDLE_MS_MAX));
        cache.iter().position(|c| c.key == *key).map(|i| cache.swap_remove(i).instance)
    }

    /// Keeps `instance` for the fetch that continues at `key.next_offset`.
    pub fn keep(&self, key: ReadKey, instance: Instance) {
        let mut cache = self.cache.lock().expect("consume cache");
        if cache.len() >= CONSUME_CACHE_MAX {
            if let Some(oldest) = cache.iter().enumerate().min_by_key(|(_, c)| c.used).map(|(i, _)| i) {
                cache.swap_remove(oldest);
            }
        }
        cache.push(Cached { key, instance, used: Instant::now() });
    }
}

/// Runs `instance` over fetched batches (the first trimmed to start at `start`) and returns
/// its output batches, each stamped with the base offset of the input batch it came from.
pub(super) fn apply(
    instance: &mut Instance,
    processor: &str,
    start: u64,
    fetched: &[u8],
) -> Result<Vec<u8>, HostError> {
    let mut out = Vec::new();
    for view in batch::split_batches(fetched) {
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
    Ok(out)
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
