//! Rights and audit on behalf of others. A processor's pipeline reads and writes with the
//! rights of the principal that deployed its active version, checked again as it runs, so a
//! right revoked (or a user removed) after the deploy stops the processor too. A bridge
//! reports the refusals of the devices it serves, which go to the audit as the devices'.

use silt_wire::auth::decide;
use silt_wire::message::{DEVICE_REFUSALS_MAX, DEVICE_REFUSAL_FIELD_BYTES_MAX};
use silt_wire::{check_device_id, DeviceRefusal, ErrorCode, Operation};

use super::audit::{Event, Outcome};
use super::rights::topic;
use super::{refuse, Auth, Principal, Refusal};

impl Auth {
    /// Whether `deployer` may still read `input` and write `output` for processor `name`;
    /// the refusal, audited, says which right is gone. A processor deployed without a
    /// principal (authentication off, or before brokers recorded one) is not checked.
    pub fn may_run(
        &self,
        name: &str,
        deployer: Option<&str>,
        input: &str,
        output: &str,
    ) -> Result<(), String> {
        let Some(deployer) = deployer.filter(|_| self.config.enabled) else {
            return Ok(());
        };
        let missing = {
            let state = self.state.read().expect("auth lock");
            [(Operation::Consume, topic(input)), (Operation::Produce, topic(output))]
                .into_iter()
                .find(|(op, resource)| !decide(&state.entries, deployer, *op, resource))
        };
        let Some((op, resource)) = missing else {
            return Ok(());
        };
        let why = format!("its deployer {deployer} may no longer {op} {resource}");
        self.audit.record(Event {
            time_ms: crate::clock::now_ms(),
            principal: deployer.to_string(),
            source: None,
            operation: "run-processor".into(),
            resource: format!("processor:{name}"),
            outcome: Outcome::Denied,
            detail: why.clone(),
        });
        Err(why)
    }

    /// Writes the refusals a bridge (`reporter`) made for its devices to the audit, each as
    /// the device's (or `anonymous`, for an attempt that named no well-formed id). The
    /// request's rights (`device-keys` on each device) were checked before.
    pub fn device_refusals(&self, reporter: &Principal, events: Vec<DeviceRefusal>) -> Result<(), Refusal> {
        if events.len() > DEVICE_REFUSALS_MAX {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                format!("{} events in one report; at most {DEVICE_REFUSALS_MAX}", events.len()),
            ));
        }
        for e in &events {
            let fields = [&e.source, &e.operation, &e.resource, &e.detail];
            if fields.iter().any(|f| f.len() > DEVICE_REFUSAL_FIELD_BYTES_MAX) {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!("a field of a device refusal is over {DEVICE_REFUSAL_FIELD_BYTES_MAX} bytes"),
                ));
            }
            if let Some(id) = &e.device {
                check_device_id(id).map_err(|why| refuse(ErrorCode::InvalidRequest, why))?;
            }
        }
        let now = crate::clock::now_ms();
        for e in events {
            let source = e.source.parse().ok();
            let seen = if source.is_some() { String::new() } else { format!(" on {}", e.source) };
            self.audit.record(Event {
                time_ms: now,
                principal: e.device.map_or_else(|| "anonymous".into(), |id| format!("device:{id}")),
                source,
                operation: e.operation,
                resource: e.resource,
                outcome: Outcome::Denied,
                detail: format!("{} (refused by the bridge {}{seen})", e.detail, reporter.name),
            });
        }
        Ok(())
    }
}
