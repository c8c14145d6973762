//! `silt topic describe`: a topic's partitions, as the store and the partitions hold them.

use silt_storage::StorageError;
use silt_wire::{PartitionInfo, TopicInfo};

use super::Broker;

impl Broker {
    pub(super) fn describe(&self, name: &str) -> Result<TopicInfo, StorageError> {
        let meta = self.store.topic(name).ok_or_else(|| StorageError::UnknownTopic(name.to_string()))?;
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let h = match self.partition(name, p) {
                Ok(h) => h,
                // A partition that cannot be opened at all still describes: it serves nothing
                // and lost everything the ledger says it acknowledged.
                Err(e) => {
                    let lost = self.partitions.lost(name, p).ok_or(e)?;
                    partitions.push(PartitionInfo {
                        partition: p,
                        log_start: 0,
                        high_watermark: lost.from,
                        size_bytes: 0,
                        batches: 0,
                        lost: Some((lost.from, lost.to)),
                        accepted_losses: Vec::new(),
                    });
                    continue;
                }
            };
            partitions.push(PartitionInfo {
                partition: p,
                log_start: h.log.log_start(),
                high_watermark: h.visible(),
                size_bytes: h.log.size_bytes(),
                batches: h.log.batch_count(),
                lost: h.lost.as_ref().map(|l| (l.from, l.to)),
                accepted_losses: h.log.accepted_losses(),
            });
        }
        Ok(TopicInfo {
            name: meta.name,
            retention_ms: meta.retention_ms,
            retention_bytes: meta.retention_bytes,
            created_ms: meta.created_ms,
            partitions,
        })
    }
}
