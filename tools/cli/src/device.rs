//! `silt device`: the registry of devices allowed to send frames and MQTT publishes through a
//! bridge, and the processor modules devices run on their readings (the device tier).

use crate::output::time_rfc3339;
use crate::processor::{parse_param, read_module};
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use silt_client::{Client, DeviceInfo, DeviceModuleInfo};
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
    /// Deploy a processor module to a device: it runs on the device, on its readings of one
    /// kind, before they are sent (docs/processor-abi.md, "Tiers"); what it returns is stored
    /// in that kind's topic instead of the readings.
    ///
    /// The broker checks the module as the device will run it (the device tier's interpreter
    /// and limits, `silt_init` with the parameters) and, when it requires signed modules, its
    /// signature; then stores it as the device's next version and makes it the requested
    /// one. The bridge serving the device delivers it over the frame link; the device checks
    /// the module's hash, switches to it, and reports the version it runs (`silt device
    /// status`). A new version starts from fresh state. Accepts `.wasm` and `.wat`.
    ///
    /// To deploy to a group, repeat `--device` or end an id with `*` (quoted): `--device
    /// 'line-3-*'` takes every active device whose id starts with `line-3-`. Each device gets
    /// its own next version; a device the broker refuses is reported and the others go on
    /// (the exit status is 1 when any was refused).
    Deploy {
        /// The module: a `.wasm` file, or `.wat` text.
        module: PathBuf,
        /// The device to run it: an id, or a prefix ending in `*`; repeat for more.
        #[arg(long = "device", value_name = "ID", required = true)]
        devices: Vec<String>,
        /// The kind of reading it runs on.
        #[arg(long, default_value = "temperature", value_parser = ["temperature", "humidity", "numeric"])]
        input: String,
        /// A parameter for the module's silt_init, as key=value; repeat for more.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Show a device's module: the requested version, the version the device reports it runs,
    /// the last error it reported, and the versions kept.
    Status { id: String },
    /// Make the version before the requested one requested again; the device switches back
    /// to it (with fresh state) once its bridge delivers the change.
    Rollback { id: String },
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
        DeviceCommand::Deploy { module, devices, input, params } => {
            let wasm = read_module(&module)?;
            let group = devices.len() > 1 || devices.iter().any(|d| d.contains('*'));
            if !group {
                let m = client.deploy_device_module(&devices[0], &input, params, wasm).await?;
                print_module(&m, json, "deployed");
                return Ok(());
            }
            let ids = expand_devices(client, &devices).await?;
            let mut deployed = Vec::new();
            let mut refused = 0;
            for id in &ids {
                match client.deploy_device_module(id, &input, params.clone(), wasm.clone()).await {
                    Ok(m) if json => deployed.push(module_json(&m)),
                    Ok(m) => print_module(&m, false, "deployed"),
                    Err(e) => {
                        eprintln!("silt: device {id}: {e}");
                        refused += 1;
                    }
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(deployed));
            }
            if refused > 0 {
                anyhow::bail!("{refused} of {} devices refused the module", ids.len());
            }
        }
        DeviceCommand::Status { id } => print_module(&client.device_module(&id).await?, json, ""),
        DeviceCommand::Rollback { id } => {
            print_module(&client.rollback_device_module(&id).await?, json, "rolled back")
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

/// The ids `--device` names: each as given, or for one ending in `*` every active device whose
/// id starts with what comes before it; in order, each once.
async fn expand_devices(client: &Client, given: &[String]) -> anyhow::Result<Vec<String>> {
    let registered = match given.iter().any(|d| d.contains('*')) {
        true => client.list_devices().await?,
        false => Vec::new(),
    };
    let mut ids: Vec<String> = Vec::new();
    for pattern in given {
        let before = ids.len();
        if !pattern.contains('*') {
            ids.push(pattern.clone());
        } else if pattern.find('*') == Some(pattern.len() - 1) {
            let active = registered.iter().filter(|d| d.revoked_ms.is_none());
            ids.extend(
                active.filter(|d| silt_wire::auth::pattern_matches(pattern, &d.id)).map(|d| d.id.clone()),
            );
        } else {
            anyhow::bail!("--device {pattern}: a group is a prefix ending in *, like 'line-3-*'");
        }
        if ids.len() == before {
            anyhow::bail!("--device {pattern}: no active device matches");
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids)
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

/// A device's module versions as text (with what just happened, if anything) or JSON.
fn print_module(m: &DeviceModuleInfo, json: bool, done: &str) {
    if json {
        println!("{}", module_json(m));
        return;
    }
    let version = |v: Option<u32>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    if !done.is_empty() {
        println!("device {}: {done}; requested version {}", m.device, version(m.requested_version));
    }
    println!("device {}", m.device);
    println!("  requested version: {}", version(m.requested_version));
    println!("  running version:   {}", version(m.running_version));
    println!("  last error:        {}", m.last_error.as_deref().unwrap_or("none"));
    for v in &m.versions {
        let params: Vec<String> = v.params.iter().map(|(k, val)| format!("{k}={val}")).collect();
        let mark = if Some(v.version) == m.requested_version { "*" } else { " " };
        println!(
            "  {mark} version {} on {}, {} bytes, sha256 {}, {}, deployed {}{}",
            v.version,
            v.input,
            v.module_bytes,
            v.module_sha256,
            if params.is_empty() { "no params".to_string() } else { params.join(" ") },
            time_rfc3339(v.deployed_ms),
            v.signed_by.as_ref().map(|k| format!(", signed by {k}")).unwrap_or_default()
        );
    }
}

fn module_json(m: &DeviceModuleInfo) -> serde_json::Value {
    serde_json::json!({
        "device": m.device,
        "requested_version": m.requested_version,
        "running_version": m.running_version,
        "last_error": m.last_error,
        "versions": m.versions.iter().map(|v| serde_json::json!({
            "version": v.version,
            "input": v.input,
            "module_sha256": v.module_sha256,
            "module_bytes": v.module_bytes,
            "params": v.params.iter().map(|(k, val)| (k.clone(), serde_json::Value::String(val.clone()))).collect::<serde_json::Map<_, _>>(),
            "deployed_ms": v.deployed_ms,
            "signed_by": v.signed_by,
        })).collect::<Vec<_>>(),
    })
}
