//! Produce: a validated batch queued for its partition's appender, acknowledged once durable
//! under the fsync policy.

use super::*;

impl Broker {
    pub(super) async fn produce(self: &Arc<Self>, topic: &str, partition: u32, frame: Frame) -> PendingReply {
        let started = std::time::Instant::now();
        if let Err(e) = batch::validate(frame.payload()) {
            return ready(wire_error(&e));
        }
        let handle = match self.partition(topic, partition) {
            Ok(h) => h,
            Err(e) => return ready(storage_error(e)),
        };
        if let Some(lost) = &handle.lost {
            return ready(error(ErrorCode::DataLoss, crate::partitions::lost_message(lost)));
        }
        let records = batch::peek_header(frame.payload()).0;
        let bytes = frame.payload().len() as u64;
        if let Err(refused) = self.durability.admit(bytes) {
            return ready(refusal(refused));
        }
        let records_in = self.metrics.records_in.with_label_values(&[topic]);
        let bytes_in = self.metrics.bytes_in.with_label_values(&[topic]);
        let ack_seconds = self.metrics.ack_seconds.clone();
        // One span per traced reading in the batch, from here to its durable ack.
        let spans = if silt_telemetry::enabled() {
            let traceparents = crate::trace_context::traceparents(frame.payload());
            silt_telemetry::child_spans!(traceparents, "silt.append", topic = %topic, partition)
        } else {
            Vec::new()
        };
        let Some(appended) = handle.append(frame).await else {
            return ready(error(ErrorCode::Storage, "the partition's appender stopped"));
        };
        let durability = self.durability.clone();
        Box::pin(async move {
            let _spans = spans;
            let Ok((result, ticket)) = appended.await else {
                return error(ErrorCode::Storage, "the partition's appender stopped");
            };
            let (response, next) = match result {
                Ok(Appended::New { base_offset }) => {
                    records_in.inc_by(u64::from(records));
                    bytes_in.inc_by(bytes);
                    (
                        Response::Produced { base_offset, duplicate: false },
                        Some(base_offset + u64::from(records)),
                    )
                }
                // The original append may not be flushed yet; wait as for a new one so a
                // duplicate is never acknowledged before the first copy is durable.
                Ok(Appended::Duplicate { base_offset }) => (
                    Response::Produced { base_offset: base_offset.unwrap_or(u64::MAX), duplicate: true },
                    None,
                ),
                Err(e) if e.is_io() => {
                    durability.fail(e.to_string());
                    return refusal(Refused::Failed(e.to_string()));
                }
                Err(e) => return storage_error(e),
            };
            if durability.acks_wait_for_flush() {
                if let Err(e) = durability.wait(ticket).await {
                    return refusal(Refused::Failed(e));
                }
            } else if let Err(refused) = durability.healthy() {
                // Under `every` and `never` an ack does not wait for its flush, but none is
                // given once a flush failed.
                return refusal(refused);
            }
            if let Some(next) = next {
                handle.durable(next);
                ack_seconds.observe(started.elapsed().as_secs_f64());
            }
            (response, Bytes::new())
        })
    }
}
