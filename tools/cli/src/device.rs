//! `silt device`: the registry of devices allowed to send frames and MQTT publishes through a
//! bridge.

use crate::output::time_rfc3339;
use std::time::Duration;

use clap::Subcommand;
use silt_client::{Client, DeviceInfo};
use silt_wire::signature::hex;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device and print its new key (64 hex digits). The key is the HMAC key of the
    /// device's frames and its MQTT password; keep it, `list` never shows it again.
    ///
    /// A revoked id is enrolled again this way, with a new key.
    Add {
        /// 1 to 64 characters of letters, digits, '.', '_' and '-'; also its MQTT username.
        id: String,
    },
    /// Give a device a new key and print it. The old key keeps working for `--overlap`, so the
    /// device can be moved to the new one without a gap; after that bridges refuse it and
    /// close sessions that logged in with it (within their key cache time).
    Rotate {
        id: String,
        /// How long the old key stays valid, like `10m` or `1h` (at most 30 days; 0 ends it now).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        overlap: Duration,
    },
    /// List registered devices, revoked ones included.
    List,
    /// Revoke a device: bridges refuse its frames and MQTT logins and close its sessions from
    /// then on (within the bridge's key cache time, 5 s by default). The id stays listed;
    /// `add` enrols it again with a new key.
    Revoke { id: String },
}

pub async fn run(client: &Client, cmd: DeviceCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Add { id } => {
            let d = client.add_device(&id).await?;
            let key = hex(d.key.as_deref().unwrap_or_default());
            if json {
                println!("{}", serde_json::json!({ "id": d.id, "key": key, "created_ms": d.created_ms }));
            } else {
                println!("{key}");
                eprintln!("device {} registered; the line above is its key (shown only now)", d.id);
            }
        }
        DeviceCommand::Rotate { id, overlap } => {
            let overlap_ms = u64::try_from(overlap.as_millis()).unwrap_or(u64::MAX);
            let d = client.rotate_device(&id, overlap_ms).await?;
            let key = hex(d.key.as_deref().unwrap_or_default());
            if json {
                let mut v = device_json(&d);
                v["key"] = key.into();
                println!("{v}");
            } else {
                println!("{key}");
                match d.previous_until_ms {
                    Some(until) => eprintln!(
                        "device {}: the line above is its new key (shown only now); the old one works until {}",
                        d.id,
                        time_rfc3339(until)
                    ),
                    None => eprintln!("device {}: the line above is its new key (shown only now)", d.id),
                }
            }
        }
        DeviceCommand::List => {
            let devices = client.list_devices().await?;
            if json {
                println!("{}", serde_json::Value::Array(devices.iter().map(device_json).collect()));
            } else if devices.is_empty() {
                println!("no devices");
            } else {
                for d in &devices {
                    let state = if d.revoked_ms.is_some() { "revoked" } else { "active" };
                    println!("{}\t{state}\tcreated {}", d.id, time_rfc3339(d.created_ms));
                }
            }
        }
        DeviceCommand::Revoke { id } => {
            let d = client.revoke_device(&id).await?;
            if json {
                println!("{}", device_json(&d));
            } else {
                println!("device {} revoked", d.id);
            }
        }
    }
    Ok(())
}

fn device_json(d: &DeviceInfo) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "state": if d.revoked_ms.is_some() { "revoked" } else { "active" },
        "created_ms": d.created_ms,
        "revoked_ms": d.revoked_ms,
        "previous_key_until_ms": d.previous_until_ms,
    })
}
