//! The device registry: which devices may send frames through a bridge, and their keys.
//!
//! It lives in the broker so that every bridge of a cluster shares it; bridges ask for a
//! device's key with `GetDevice` and cache the answer. An entry is never deleted: a revoked
//! device stays listed, so its id cannot be registered again by mistake and its old frames
//! cannot come back under a new key.

use ring::rand::{SecureRandom, SystemRandom};
use silt_storage::{StorageError, Store};
use silt_wire::{check_device_id, DeviceInfo, ErrorCode};

/// Bytes of a device key (HMAC-SHA256 key of its frames).
pub const DEVICE_KEY_BYTES: usize = 32;
const ENTRY_BYTES: usize = DEVICE_KEY_BYTES + 8 + 8;
/// Stored as `revoked_ms` for a device that is not revoked.
const NOT_REVOKED: i64 = i64::MIN;

/// A registry operation that failed, with the code the client sees.
#[derive(Debug)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        RegistryError { code: ErrorCode::Storage, message: e.to_string() }
    }
}

fn invalid(message: String) -> RegistryError {
    RegistryError { code: ErrorCode::InvalidRequest, message }
}

fn unknown(id: &str) -> RegistryError {
    RegistryError { code: ErrorCode::UnknownDevice, message: format!("no device {id:?} is registered") }
}

struct Entry {
    key: [u8; DEVICE_KEY_BYTES],
    created_ms: i64,
    revoked_ms: i64,
}

impl Entry {
    fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[..DEVICE_KEY_BYTES].copy_from_slice(&self.key);
        out[DEVICE_KEY_BYTES..DEVICE_KEY_BYTES + 8].copy_from_slice(&self.created_ms.to_le_bytes());
        out[DEVICE_KEY_BYTES + 8..].copy_from_slice(&self.revoked_ms.to_le_bytes());
        out
    }

    fn decode(id: &str, bytes: &[u8]) -> Result<Entry, RegistryError> {
        let bytes: &[u8; ENTRY_BYTES] = bytes.try_into().map_err(|_| RegistryError {
            code: ErrorCode::Storage,
            message: format!(
                "stored entry of device {id:?} is {} bytes, expected {ENTRY_BYTES}",
                bytes.len()
            ),
        })?;
        let mut key = [0u8; DEVICE_KEY_BYTES];
        key.copy_from_slice(&bytes[..DEVICE_KEY_BYTES]);
        let int = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        Ok(Entry { key, created_ms: int(DEVICE_KEY_BYTES), revoked_ms: int(DEVICE_KEY_BYTES + 8) })
    }

    fn info(&self, id: &str, with_key: bool) -> DeviceInfo {
        DeviceInfo {
            id: id.to_string(),
            key: with_key.then(|| self.key.to_vec()),
            created_ms: self.created_ms,
            revoked_ms: (self.revoked_ms != NOT_REVOKED).then_some(self.revoked_ms),
        }
    }
}

/// Registers `id` with a fresh random key; durable when it returns.
pub fn add(store: &Store, id: &str, now_ms: i64) -> Result<DeviceInfo, RegistryError> {
    check_device_id(id).map_err(invalid)?;
    let mut key = [0u8; DEVICE_KEY_BYTES];
    SystemRandom::new().fill(&mut key).map_err(|_| RegistryError {
        code: ErrorCode::Storage,
        message: "the system random generator failed".to_string(),
    })?;
    let entry = Entry { key, created_ms: now_ms, revoked_ms: NOT_REVOKED };
    if !store.insert_device(id, &entry.encode())? {
        return Err(RegistryError {
            code: ErrorCode::DeviceExists,
            message: format!("device {id:?} is already registered (revoked devices stay registered)"),
        });
    }
    store.flush()?;
    Ok(entry.info(id, true))
}

/// Every device, without keys.
pub fn list(store: &Store) -> Result<Vec<DeviceInfo>, RegistryError> {
    store.devices()?.into_iter().map(|(id, bytes)| Ok(Entry::decode(&id, &bytes)?.info(&id, false))).collect()
}

/// One device, with its key.
pub fn get(store: &Store, id: &str) -> Result<DeviceInfo, RegistryError> {
    check_device_id(id).map_err(invalid)?;
    let bytes = store.device(id)?.ok_or_else(|| unknown(id))?;
    Ok(Entry::decode(id, &bytes)?.info(id, true))
}

/// Revokes `id` (idempotent: a second revoke keeps the first time); durable when it returns.
pub fn revoke(store: &Store, id: &str, now_ms: i64) -> Result<DeviceInfo, RegistryError> {
    check_device_id(id).map_err(invalid)?;
    let bytes = store.device(id)?.ok_or_else(|| unknown(id))?;
    let mut entry = Entry::decode(id, &bytes)?;
    if entry.revoked_ms == NOT_REVOKED {
        entry.revoked_ms = now_ms;
        store.put_device(id, &entry.encode())?;
        store.flush()?;
    }
    Ok(entry.info(id, false))
}
