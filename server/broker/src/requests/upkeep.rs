//! The broker's upkeep: the metrics page read from the live state, and the periodic work
//! (expiring silent group members, retention).

use super::*;

impl Broker {
    /// The Prometheus text of every metric, with the state gauges (partition sizes and
    /// watermarks, processor states and lag) read from the live state first.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.partition_size_bytes.reset();
        m.partition_high_watermark.reset();
        m.consumer_group_lag.reset();
        for meta in self.store.topics() {
            let mut visible = Vec::with_capacity(meta.partitions as usize);
            for p in 0..meta.partitions {
                let Ok(h) = self.partition(&meta.name, p) else {
                    visible.push(None);
                    continue;
                };
                let labels = [meta.name.as_str(), &p.to_string()];
                m.partition_size_bytes.with_label_values(&labels).set(h.log.size_bytes() as i64);
                m.partition_high_watermark.with_label_values(&labels).set(h.visible() as i64);
                visible.push(Some(h.visible()));
            }
            for (group, p, offset) in self.store.group_offsets_of_topic(&meta.name).unwrap_or_default() {
                if let Some(Some(hw)) = visible.get(p as usize) {
                    let labels = [group.as_str(), meta.name.as_str(), &p.to_string()];
                    m.consumer_group_lag.with_label_values(&labels).set(hw.saturating_sub(offset) as i64);
                }
            }
        }
        self.processors.refresh_metrics();
        m.render()
    }

    /// Expires silent group members; called periodically.
    pub fn expire_members(&self) {
        let n = self.groups.lock().expect("group lock").expire(now_ms() as u64, self.partitions_of());
        if n > 0 {
            tracing::info!(expired = n, "consumer group members expired");
        }
    }

    /// Applies every topic's retention; called periodically from a blocking thread.
    pub fn apply_retention(&self) {
        for meta in self.store.topics() {
            if meta.retention_ms.is_none() && meta.retention_bytes.is_none() {
                continue;
            }
            for p in 0..meta.partitions {
                let result = self
                    .partition(&meta.name, p)
                    .and_then(|h| h.log.apply_retention(now_ms(), meta.retention_ms, meta.retention_bytes));
                match result {
                    Ok(r) if r.batches_removed > 0 => {
                        tracing::info!(topic = %meta.name, partition = p, batches = r.batches_removed, bytes = r.bytes_removed, "retention removed batches")
                    }
                    Ok(_) | Err(StorageError::UnknownTopic(_)) => {}
                    Err(e) => {
                        tracing::warn!(topic = %meta.name, partition = p, error = %e, "retention failed")
                    }
                }
            }
        }
    }
}
