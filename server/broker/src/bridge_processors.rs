//! The bridge tier's deployments: processors the bridges run on device readings before they
//! are appended (docs/processor-abi.md, "Tiers"). The broker only keeps them: a version's
//! module is checked at deploy as a broker processor's is (signature, size, a compile and a
//! trial `silt_init` under the broker's default limits, `ProcessorHost::check_bridge_module`),
//! stored in the modules tree under its hash, and each processor is one checksummed record
//! (`silt_storage::records::processors::StoredBridgeProcessor`). Bridges list them and fetch
//! the modules (`silt-bridge`'s `bridge_tier`).

use silt_storage::records::processors::{StoredBridgeProcessor, StoredBridgeVersion};
use silt_storage::records::seal;
use silt_storage::Store;
use silt_wire::signature::hex;
use silt_wire::{BridgeProcessorInfo, ErrorCode};

use crate::devices::RegistryError;

/// Versions of a bridge-tier processor the broker keeps; older ones are dropped.
const VERSIONS_KEPT: usize = 8;
/// Tries of a change that lost a race with another change of the same processor.
const UPDATE_TRIES: usize = 8;

fn invalid(message: String) -> RegistryError {
    RegistryError { code: ErrorCode::InvalidRequest, message }
}

fn unknown(name: &str) -> RegistryError {
    RegistryError { code: ErrorCode::UnknownProcessor, message: format!("no bridge-tier processor {name:?}") }
}

/// Stores a checked module (`sha256`, `bytes` long, signed by `signed_by`) as the next
/// version of bridge-tier processor `name` on `topic`, and makes it the one the bridges run.
#[allow(clippy::too_many_arguments)]
pub fn deploy(
    store: &Store,
    name: &str,
    topic: &str,
    params: Vec<(String, String)>,
    sha256: [u8; 32],
    bytes: u64,
    signed_by: Option<[u8; 32]>,
    now_ms: i64,
) -> Result<BridgeProcessorInfo, RegistryError> {
    // One processor per topic: a bridge would not know in which order to run two.
    for (other, bytes) in store.bridge_processors()? {
        if other != name && decode(&other, &bytes)?.topic == topic {
            return Err(invalid(format!(
                "bridge-tier processor {other:?} runs on {topic:?} already; undeploy it first"
            )));
        }
    }
    let next = update(store, name, |current| {
        let mut p = current
            .unwrap_or_else(|| StoredBridgeProcessor { topic: topic.to_string(), ..Default::default() });
        if p.topic != topic {
            return Err(invalid(format!(
                "bridge-tier processor {name:?} runs on {:?}; undeploy it first or deploy under another name",
                p.topic
            )));
        }
        let version = p.versions.last().map_or(1, |v| v.version + 1);
        p.versions.push(StoredBridgeVersion {
            version,
            sha256,
            bytes,
            params: params.clone(),
            deployed_ms: now_ms,
            signed_by,
        });
        let drop = p.versions.len().saturating_sub(VERSIONS_KEPT);
        p.versions.drain(..drop);
        p.active = version;
        Ok(Some(p))
    })?;
    info(name, &next.expect("deployed"))
}

/// Forgets bridge-tier processor `name`: bridges stop running it at their next look.
pub fn undeploy(store: &Store, name: &str) -> Result<(), RegistryError> {
    update(store, name, |current| match current {
        Some(_) => Ok(None),
        None => Err(unknown(name)),
    })?;
    Ok(())
}

/// Every bridge-tier processor at the version the bridges run.
pub fn list(store: &Store) -> Result<Vec<BridgeProcessorInfo>, RegistryError> {
    let mut out = Vec::new();
    for (name, bytes) in store.bridge_processors()? {
        out.push(info(&name, &decode(&name, &bytes)?)?);
    }
    Ok(out)
}

/// Processor `name` and the module of its `version`, for a bridge.
pub fn fetch(
    store: &Store,
    name: &str,
    version: u32,
) -> Result<(BridgeProcessorInfo, Vec<u8>), RegistryError> {
    let bytes = store.bridge_processor(name)?.ok_or_else(|| unknown(name))?;
    let p = decode(name, &bytes)?;
    let v = p.versions.iter().find(|v| v.version == version).ok_or_else(|| RegistryError {
        code: ErrorCode::UnknownProcessor,
        message: format!("bridge-tier processor {name:?} has no version {version}"),
    })?;
    let module = store.module(&v.sha256)?.ok_or_else(|| RegistryError {
        code: ErrorCode::Storage,
        message: format!(
            "the module of bridge-tier processor {name:?} version {version} is missing from storage"
        ),
    })?;
    Ok((info(name, &p)?, module))
}

fn decode(name: &str, bytes: &[u8]) -> Result<StoredBridgeProcessor, RegistryError> {
    StoredBridgeProcessor::decode(name, bytes)
        .map_err(|message| RegistryError { code: ErrorCode::Storage, message })
}

/// Changes `name`'s entry with `change` (`None`: none / remove it), retrying when another
/// change came in between; durable when it returns.
fn update(
    store: &Store,
    name: &str,
    change: impl Fn(Option<StoredBridgeProcessor>) -> Result<Option<StoredBridgeProcessor>, RegistryError>,
) -> Result<Option<StoredBridgeProcessor>, RegistryError> {
    for _ in 0..UPDATE_TRIES {
        let old = store.bridge_processor(name)?;
        let current = old.as_deref().map(|b| decode(name, b)).transpose()?;
        let next = change(current)?;
        let sealed = next.as_ref().map(seal);
        if store.swap_bridge_processor(name, old.as_deref(), sealed.as_deref())? {
            store.flush()?;
            return Ok(next);
        }
    }
    Err(RegistryError {
        code: ErrorCode::Storage,
        message: format!("bridge-tier processor {name:?} kept changing; try again"),
    })
}

fn info(name: &str, p: &StoredBridgeProcessor) -> Result<BridgeProcessorInfo, RegistryError> {
    let v = p.versions.iter().find(|v| v.version == p.active).ok_or_else(|| RegistryError {
        code: ErrorCode::Storage,
        message: format!("bridge-tier processor {name:?}: its active version {} is not kept", p.active),
    })?;
    Ok(BridgeProcessorInfo {
        name: name.to_string(),
        topic: p.topic.clone(),
        version: v.version,
        module_sha256: hex(&v.sha256),
        module_bytes: v.bytes,
        params: v.params.clone(),
        deployed_ms: v.deployed_ms,
        signed_by: v.signed_by.map(|k| hex(&k)),
        versions: p.versions.iter().map(|v| v.version).collect(),
    })
}
