//! Refusals of devices, for the broker's audit topic: a failed MQTT login, a frame whose tag
//! or device does not check out, a publish, subscribe or reading outside the device's rights,
//! a session closed because its device was revoked or rotated out.
//!
//! Each is logged at once (target `silt::audit`) and queued without waiting; one task sends
//! the queue to the broker in reports (`Request::AuditDevices`), which writes them to
//! `silt.audit` as the devices'. A full queue or a failed report drops events from the topic
//! (counted in `silt_bridge_audit_dropped_total`), never from the log: a device cannot slow
//! the bridge down by getting itself refused.

use std::sync::Arc;

use silt_client::{Client, DeviceRefusal};
use silt_wire::message::{DEVICE_REFUSALS_MAX, DEVICE_REFUSAL_FIELD_BYTES_MAX};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Refusals waiting for the reporting task at most.
const QUEUE_MAX: usize = 4096;

/// Where the bridge's connections report refusals.
pub struct Audit {
    queue: mpsc::Sender<DeviceRefusal>,
    metrics: Arc<Metrics>,
}

/// `s` cut to the field cap, at a character boundary.
fn capped(mut s: String) -> String {
    if s.len() > DEVICE_REFUSAL_FIELD_BYTES_MAX {
        let mut end = DEVICE_REFUSAL_FIELD_BYTES_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Audit {
    /// Starts the task that reports to the broker through `client`.
    pub fn start(client: Client, metrics: Arc<Metrics>) -> Audit {
        let (queue, mut rx) = mpsc::channel::<DeviceRefusal>(QUEUE_MAX);
        let dropped = metrics.audit_dropped.clone();
        tokio::spawn(async move {
            let mut events = Vec::with_capacity(DEVICE_REFUSALS_MAX);
            while rx.recv_many(&mut events, DEVICE_REFUSALS_MAX).await > 0 {
                let n = events.len() as u64;
                if let Err(e) = client.audit_devices(std::mem::take(&mut events)).await {
                    tracing::warn!(error = %e, events = n, "device refusals did not reach the audit topic");
                    dropped.inc_by(n);
                }
            }
        });
        Audit { queue, metrics }
    }

    /// Logs and reports one refusal. `device`: the id the attempt claimed, if well-formed;
    /// `source`: the peer as the bridge sees it; `resource`: `topic:NAME` or `device:ID`.
    pub fn refused(
        &self,
        device: Option<&str>,
        source: &str,
        operation: &str,
        resource: String,
        detail: &str,
    ) {
        let device = device.filter(|d| silt_wire::check_device_id(d).is_ok());
        tracing::warn!(target: "silt::audit", device = device.unwrap_or("-"), %source, %operation, %resource, "refused: {detail}");
        let event = DeviceRefusal {
            device: device.map(String::from),
            source: capped(source.to_string()),
            operation: operation.to_string(),
            resource: capped(resource),
            detail: capped(detail.to_string()),
        };
        if self.queue.try_send(event).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }
}
