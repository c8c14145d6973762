//! The device tier's deployments: the processor module each device should run on its readings
//! (docs/processor-abi.md, "Tiers"), its earlier versions, and what the device last reported.
//!
//! `silt device deploy` stores a version here (the bytes in the modules tree, under their
//! hash, as processors' are); the bridge serving the device delivers the requested version over
//! the frame link. A module is checked at deploy as the device will check and run it: with the
//! device tier's own host (`silt-device-runtime`, wasmi) under the device's default limits,
//! `silt_init` included, so that a module a device cannot run is refused here rather than found
//! out on the device. Each device's versions are one checksummed record
//! (`silt_storage::records::devices::StoredDeviceModules`).

use silt_storage::records::devices::{StoredDeviceModule, StoredDeviceModules};
use silt_storage::records::seal;
use silt_storage::Store;
use silt_wire::message::{DEVICE_MODULE_BYTES_MAX, DEVICE_MODULE_INPUTS, DEVICE_MODULE_VERSIONS_KEPT};
use silt_wire::signature::{hex, module_hash};
use silt_wire::{check_device_id, DeviceModuleInfo, DeviceModuleVersion, ErrorCode};

use crate::devices::{self, RegistryError};

/// Tries of a change that lost a race with another change of the same device.
const UPDATE_TRIES: usize = 8;

fn invalid(message: String) -> RegistryError {
    RegistryError { code: ErrorCode::InvalidRequest, message }
}

/// Checks a module for a device before it is stored: size, input kind, and that the device
/// tier's host loads it and `silt_init` accepts `params` under the device's default limits.
pub fn check(wasm: &[u8], input: &str, params: &[(String, String)]) -> Result<(), RegistryError> {
    if wasm.len() > DEVICE_MODULE_BYTES_MAX {
        return Err(RegistryError {
            code: ErrorCode::TooLarge,
            message: format!(
                "module of {} bytes; a device's module slot holds at most {DEVICE_MODULE_BYTES_MAX}",
                wasm.len()
            ),
        });
    }
    if !DEVICE_MODULE_INPUTS.contains(&input) {
        return Err(invalid(format!(
            "input {input:?}: a device module runs on temperature, humidity or numeric"
        )));
    }
    let refused = |e: silt_device_runtime::Error| RegistryError {
        code: ErrorCode::InvalidModule,
        message: format!("the device tier cannot run this module: {e}"),
    };
    let module = silt_device_runtime::Module::new(wasm).map_err(refused)?;
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    module.instantiate(&params, &silt_device_runtime::Limits::default()).map_err(refused)?;
    Ok(())
}

/// Stores `wasm` as the next version of device `id`'s module and makes it the requested one.
/// The caller checked it ([`check`]) and its signature (`signed_by`).
pub fn deploy(
    store: &Store,
    id: &str,
    input: String,
    params: Vec<(String, String)>,
    wasm: &[u8],
    signed_by: Option<[u8; 32]>,
    now_ms: i64,
) -> Result<DeviceModuleInfo, RegistryError> {
    let device = devices::get(store, id)?;
    if device.revoked_ms.is_some() {
        return Err(invalid(format!("device {id:?} is revoked")));
    }
    let sha256 = module_hash(wasm);
    store.put_module(&sha256, wasm)?;
    let next = update(store, id, |mut m| {
        let version = m.versions.last().map_or(1, |v| v.version + 1);
        m.versions.push(StoredDeviceModule {
            version,
            sha256,
            bytes: wasm.len() as u64,
            input: input.clone(),
            params: params.clone(),
            deployed_ms: now_ms,
            signed_by,
        });
        let drop = m.versions.len().saturating_sub(DEVICE_MODULE_VERSIONS_KEPT);
        m.versions.drain(..drop);
        m.requested = Some(version);
        Ok(m)
    })?;
    Ok(info(id, &next))
}

/// Makes the version before the requested one requested again.
pub fn rollback(store: &Store, id: &str) -> Result<DeviceModuleInfo, RegistryError> {
    devices::get(store, id)?;
    let next = update(store, id, |mut m| {
        let Some(requested) = m.requested else {
            return Err(invalid(format!("device {id:?} has no module to roll back")));
        };
        let previous = m.versions.iter().rev().map(|v| v.version).find(|&v| v < requested);
        let Some(previous) = previous else {
            return Err(invalid(format!(
                "device {id:?} has no version before {requested} (the broker keeps the last \
                 {DEVICE_MODULE_VERSIONS_KEPT})"
            )));
        };
        m.requested = Some(previous);
        Ok(m)
    })?;
    Ok(info(id, &next))
}

/// Records the version device `id` says it runs (`None`: none) and, when the report carries
/// one, its last module error (empty: none), as its bridge passes them on from the device's
/// hello or module state. Written only when something changed.
pub fn report(
    store: &Store,
    id: &str,
    running: Option<u32>,
    error: Option<String>,
) -> Result<(), RegistryError> {
    devices::get(store, id)?;
    update(store, id, |mut m| {
        m.running = running;
        if let Some(error) = &error {
            m.last_error = (!error.is_empty()).then(|| error.clone());
        }
        Ok(m)
    })?;
    Ok(())
}

/// Device `id`'s versions and, unless it is `have`, the module of its requested version, for
/// the bridge that delivers it.
pub fn fetch(
    store: &Store,
    id: &str,
    have: Option<u32>,
) -> Result<(DeviceModuleInfo, Option<Vec<u8>>), RegistryError> {
    devices::get(store, id)?;
    let m = load(store, id)?.unwrap_or_default();
    let module = match m.requested.filter(|&r| Some(r) != have) {
        None => None,
        Some(requested) => {
            let Some(v) = m.versions.iter().find(|v| v.version == requested) else {
                return Err(RegistryError {
                    code: ErrorCode::Storage,
                    message: format!("device {id:?}: requested version {requested} is not among those kept"),
                });
            };
            let Some(bytes) = store.module(&v.sha256)? else {
                return Err(RegistryError {
                    code: ErrorCode::Storage,
                    message: format!(
                        "device {id:?}: the module of version {requested} is missing from storage"
                    ),
                });
            };
            Some(bytes)
        }
    };
    Ok((info(id, &m), module))
}

/// Device `id`'s module versions (none yet is an empty answer, not an error).
pub fn get(store: &Store, id: &str) -> Result<DeviceModuleInfo, RegistryError> {
    devices::get(store, id)?;
    Ok(info(id, &load(store, id)?.unwrap_or_default()))
}

fn load(store: &Store, id: &str) -> Result<Option<StoredDeviceModules>, RegistryError> {
    let bytes = store.device_modules(id)?;
    bytes
        .map(|b| StoredDeviceModules::decode(id, &b))
        .transpose()
        .map_err(|message| RegistryError { code: ErrorCode::Storage, message })
}

/// Changes `id`'s versions with `change`, retrying when another change came in between;
/// durable when it returns. A change that changes nothing writes nothing.
fn update(
    store: &Store,
    id: &str,
    change: impl Fn(StoredDeviceModules) -> Result<StoredDeviceModules, RegistryError>,
) -> Result<StoredDeviceModules, RegistryError> {
    check_device_id(id).map_err(invalid)?;
    for _ in 0..UPDATE_TRIES {
        let old = store.device_modules(id)?;
        let current = match &old {
            Some(b) => StoredDeviceModules::decode(id, b)
                .map_err(|message| RegistryError { code: ErrorCode::Storage, message })?,
            None => StoredDeviceModules::default(),
        };
        let next = change(current.clone())?;
        if next == current {
            return Ok(next);
        }
        if store.swap_device_modules(id, old.as_deref(), &seal(&next))? {
            store.flush()?;
            return Ok(next);
        }
    }
    Err(RegistryError {
        code: ErrorCode::Storage,
        message: format!("device {id:?} kept changing; try again"),
    })
}

fn info(id: &str, m: &StoredDeviceModules) -> DeviceModuleInfo {
    DeviceModuleInfo {
        device: id.to_string(),
        requested_version: m.requested,
        running_version: m.running,
        last_error: m.last_error.clone(),
        versions: m
            .versions
            .iter()
            .map(|v| DeviceModuleVersion {
                version: v.version,
                module_sha256: hex(&v.sha256),
                module_bytes: v.bytes,
                input: v.input.clone(),
                params: v.params.clone(),
                deployed_ms: v.deployed_ms,
                signed_by: v.signed_by.map(|k| hex(&k)),
            })
            .collect(),
    }
}
