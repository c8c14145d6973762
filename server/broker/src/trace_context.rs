//! The trace context stored records carry (`silt_telemetry::TRACEPARENT` headers), read where
//! the broker opens spans for a batch: the append and each processor call.

use silt_wire::batch::{self, BatchView};

/// Child spans opened per batch at most: a batch of a bridge round carries one context per
/// device frame, and a trace backend needs only some of them to show the path.
pub const SPANS_PER_BATCH_MAX: usize = 16;

/// The distinct `traceparent` values of a batch's records (compressed or not), at most
/// [`SPANS_PER_BATCH_MAX`]; empty for batches that do not decode.
pub fn traceparents(batch_bytes: &[u8]) -> Vec<Vec<u8>> {
    let Ok(bytes) = batch::decompress(batch_bytes) else { return Vec::new() };
    let Ok(view) = BatchView::new(&bytes) else { return Vec::new() };
    silt_telemetry::distinct_traceparents(view.records().flat_map(|r| r.headers()), SPANS_PER_BATCH_MAX)
}
