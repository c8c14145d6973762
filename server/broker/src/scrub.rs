//! The background scrub: every stored batch of every partition read again and checked (both
//! checksums, its key, offsets following on), at a bounded rate, one pass per interval.
//!
//! Damage a read would only meet when a consumer reaches it (cold data, written once and not
//! read since) is found and reported while an operator can still act: logged at error level,
//! counted in `silt_storage_faults_total{kind="scrub"}`, and shown per partition by
//! `silt_partition_scrub_damage` until a later pass finds the partition whole (after `silt
//! topic repair --accept-loss`, say). The scrub changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use silt_storage::{ScrubCursor, Store};

use crate::metrics::Metrics;

/// Bytes read by one step on a blocking thread; the scrub then sleeps for as long as the
/// rate gives these bytes.
const STEP_BYTES: u64 = 1024 * 1024;

/// Scrubs `store` for ever: `bytes_per_s` at most, a pass started at most once per `every`.
/// Returns at once when `bytes_per_s` is 0 (the scrub is off).
pub async fn run(store: Arc<Store>, bytes_per_s: u64, every: Duration, metrics: Arc<Metrics>) {
    if bytes_per_s == 0 {
        return;
    }
    loop {
        let started = Instant::now();
        for meta in store.topics() {
            for partition in 0..meta.partitions {
                scrub_partition(&store, &meta.name, partition, bytes_per_s, &metrics).await;
            }
        }
        metrics.scrub_passes.inc();
        tokio::time::sleep_until((started + every).into()).await;
    }
}

async fn scrub_partition(store: &Store, topic: &str, partition: u32, bytes_per_s: u64, metrics: &Metrics) {
    // A partition that could not be opened was reported at start.
    let Ok(log) = store.partition(topic, partition) else {
        return;
    };
    let label = partition.to_string();
    let mut cursor = ScrubCursor::default();
    let mut damage = 0i64;
    while !cursor.done {
        let (log, mut at) = (log.clone(), cursor.clone());
        let step = tokio::task::spawn_blocking(move || log.scrub(&mut at, STEP_BYTES).map(|s| (s, at))).await;
        let (step, next) = match step {
            Ok(Ok(v)) => v,
            // The topic was deleted meanwhile, or the store failed (reported where it failed).
            Ok(Err(_)) | Err(_) => return,
        };
        cursor = next;
        metrics.scrub_bytes.inc_by(step.bytes);
        metrics.scrub_batches.inc_by(step.batches);
        for (offset, why) in &step.problems {
            tracing::error!(topic, partition, offset, problem = %why,
                "the scrub found stored records that fail their checks; readers get DataLoss there \
                 (silt topic repair reports and accepts the loss)");
            metrics.storage_faults.with_label_values(&["scrub"]).inc();
            damage += 1;
        }
        let pause = Duration::from_secs_f64(step.bytes as f64 / bytes_per_s as f64);
        tokio::time::sleep(pause).await;
    }
    metrics.scrub_damage.with_label_values(&[topic, &label]).set(damage);
}
