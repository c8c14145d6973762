//! The device registry: which devices may send frames through a bridge, and their keys.
//!
//! It lives in the broker so that every bridge of a cluster shares it; bridges ask for a
//! device's key with `GetDevice` and cache the answer. An entry is never deleted: a revoked
//! device stays listed, so its id is not registered again by mistake and its old frames cannot
//! come back under a new key; `AddDevice` of a revoked id enrols it again with a new key.
//! `RotateDevice` gives a new key and keeps the old one valid for an overlap window.
//!
//! Each entry is a checksummed record (`silt_storage::records::devices`).

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use silt_storage::records::devices::StoredDevice;
pub use silt_storage::records::devices::DEVICE_KEY_BYTES;
use silt_storage::records::seal;
use silt_storage::{StorageError, Store};
use silt_wire::{check_device_id, DeviceInfo, ErrorCode};
/// Longest overlap of an old and a new key after a rotation: 30 days.
pub const ROTATION_OVERLAP_MS_MAX: u64 = 30 * 24 * 3600 * 1000;
/// Tries of a change that lost a race with another change of the same device.
const UPDATE_TRIES: usize = 8;

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

/// A device entry as stored (sealed), read back.
pub fn decode(id: &str, bytes: &[u8]) -> Result<StoredDevice, RegistryError> {
    StoredDevice::decode(id, bytes).map_err(|message| RegistryError { code: ErrorCode::Storage, message })
}

/// What a client is told of a device entry; its keys only `with_key`.
pub fn info(d: &StoredDevice, id: &str, with_key: bool) -> DeviceInfo {
    DeviceInfo {
        id: id.to_string(),
        key: with_key.then(|| d.key.to_vec()),
        created_ms: d.created_ms,
        revoked_ms: d.revoked_ms,
        previous_key: d.previous.filter(|_| with_key).map(|(k, _)| k.to_vec()),
        previous_until_ms: d.previous.map(|(_, until)| until),
        rights: None,
    }
}

fn new_key() -> Result<[u8; DEVICE_KEY_BYTES], RegistryError> {
    let mut key = [0u8; DEVICE_KEY_BYTES];
    SystemRandom::new().fill(&mut key).map_err(|_| RegistryError {
        code: ErrorCode::Storage,
        message: "the system random generator failed".to_string(),
    })?;
    Ok(key)
}

/// Changes `id`'s entry with `change` (which sees the current one), retrying when another
/// change of the same device came in between; durable when it returns.
fn update(
    store: &Store,
    id: &str,
    change: impl Fn(Option<StoredDevice>) -> Result<StoredDevice, RegistryError>,
) -> Result<StoredDevice, RegistryError> {
    check_device_id(id).map_err(invalid)?;
    for _ in 0..UPDATE_TRIES {
        let old = store.device(id)?;
        let current = old.as_deref().map(|b| decode(id, b)).transpose()?;
        let next = change(current)?;
        let done = match &old {
            None => store.insert_device(id, &seal(&next))?,
            Some(old) => store.swap_device(id, old, &seal(&next))?,
        };
        if done {
            store.flush()?;
            return Ok(next);
        }
    }
    Err(RegistryError {
        code: ErrorCode::Storage,
        message: format!("device {id:?} kept changing; try again"),
    })
}

/// A change to one device's entry, decided before it is applied (a new key is drawn then), so
/// that every broker of a cluster applies the same change to its registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DeviceChange {
    /// Register with `key`, or enrol a revoked device again with it.
    Add {
        key: [u8; DEVICE_KEY_BYTES],
        now_ms: i64,
    },
    /// `key` from now on; the current key stays valid until `until_ms` (none when 0 overlap).
    Rotate {
        key: [u8; DEVICE_KEY_BYTES],
        until_ms: Option<i64>,
    },
    Revoke {
        now_ms: i64,
    },
}

/// The change that registers `id` (or enrols it again) with a fresh random key.
pub fn decide_add(now_ms: i64) -> Result<DeviceChange, RegistryError> {
    Ok(DeviceChange::Add { key: new_key()?, now_ms })
}

/// The change that gives a device a new key, the current one valid for `overlap_ms` more.
pub fn decide_rotate(overlap_ms: u64, now_ms: i64) -> Result<DeviceChange, RegistryError> {
    if overlap_ms > ROTATION_OVERLAP_MS_MAX {
        return Err(invalid(format!(
            "overlap of {overlap_ms} ms is over the {ROTATION_OVERLAP_MS_MAX} ms allowed"
        )));
    }
    let until = now_ms.saturating_add(i64::try_from(overlap_ms).unwrap_or(i64::MAX));
    Ok(DeviceChange::Rotate { key: new_key()?, until_ms: (overlap_ms > 0).then_some(until) })
}

/// Applies a decided change to `id`'s entry; durable when it returns. Revoking is idempotent
/// (a second revoke keeps the first time).
pub fn apply(store: &Store, id: &str, change: &DeviceChange) -> Result<StoredDevice, RegistryError> {
    update(store, id, |current| match (change, current) {
        (DeviceChange::Add { .. }, Some(d)) if d.revoked_ms.is_none() => Err(RegistryError {
            code: ErrorCode::DeviceExists,
            message: format!("device {id:?} is already registered (rotate its key, or revoke it first)"),
        }),
        (DeviceChange::Add { key, now_ms }, _) => {
            Ok(StoredDevice { key: *key, created_ms: *now_ms, revoked_ms: None, previous: None })
        }
        (_, None) => Err(unknown(id)),
        (DeviceChange::Rotate { .. }, Some(d)) if d.revoked_ms.is_some() => {
            Err(invalid(format!("device {id:?} is revoked; add it again")))
        }
        (DeviceChange::Rotate { key, until_ms }, Some(d)) => {
            Ok(StoredDevice { key: *key, previous: until_ms.map(|until| (d.key, until)), ..d })
        }
        (DeviceChange::Revoke { now_ms }, Some(d)) => {
            Ok(StoredDevice { revoked_ms: Some(d.revoked_ms.unwrap_or(*now_ms)), previous: None, ..d })
        }
    })
}

/// Registers `id` with a fresh random key, or enrols a revoked `id` again with a new one.
pub fn add(store: &Store, id: &str, now_ms: i64) -> Result<DeviceInfo, RegistryError> {
    Ok(info(&apply(store, id, &decide_add(now_ms)?)?, id, true))
}

/// Gives `id` a new key; the current one stays valid for `overlap_ms`.
pub fn rotate(store: &Store, id: &str, overlap_ms: u64, now_ms: i64) -> Result<DeviceInfo, RegistryError> {
    Ok(info(&apply(store, id, &decide_rotate(overlap_ms, now_ms)?)?, id, true))
}

/// Every device, without keys.
pub fn list(store: &Store) -> Result<Vec<DeviceInfo>, RegistryError> {
    store.devices()?.into_iter().map(|(id, bytes)| Ok(info(&decode(&id, &bytes)?, &id, false))).collect()
}

/// One device, with its keys.
pub fn get(store: &Store, id: &str) -> Result<DeviceInfo, RegistryError> {
    check_device_id(id).map_err(invalid)?;
    let bytes = store.device(id)?.ok_or_else(|| unknown(id))?;
    Ok(info(&decode(id, &bytes)?, id, true))
}

/// Revokes `id` (idempotent: a second revoke keeps the first time); durable when it returns.
pub fn revoke(store: &Store, id: &str, now_ms: i64) -> Result<DeviceInfo, RegistryError> {
    Ok(info(&apply(store, id, &DeviceChange::Revoke { now_ms })?, id, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Default::default()).unwrap();
        (dir, store)
    }

    /// Revoke, then add again: a new key; rotate: a new key with the old one kept for the
    /// overlap; a first-format entry still reads; a damaged entry is refused, not misread.
    #[test]
    fn enrol_rotate_revoke_and_damage() {
        let (_dir, store) = store();
        let first = add(&store, "d1", 10).unwrap();
        assert_eq!(add(&store, "d1", 11).unwrap_err().code, ErrorCode::DeviceExists);
        let rotated = rotate(&store, "d1", 500, 20).unwrap();
        assert_ne!(rotated.key, first.key);
        assert_eq!((rotated.previous_key.clone(), rotated.previous_until_ms), (first.key.clone(), Some(520)));
        assert_eq!(revoke(&store, "d1", 30).unwrap().revoked_ms, Some(30));
        assert_eq!(revoke(&store, "d1", 40).unwrap().revoked_ms, Some(30));
        assert_eq!(get(&store, "d1").unwrap().previous_key, None, "revoking ends the overlap");
        assert!(rotate(&store, "d1", 0, 50).is_err());
        let again = add(&store, "d1", 60).unwrap();
        assert_eq!(again.revoked_ms, None);
        assert_ne!(again.key, rotated.key);

        let mut legacy = [7u8; silt_storage::records::devices::FIRST_FORMAT_BYTES];
        legacy[DEVICE_KEY_BYTES..DEVICE_KEY_BYTES + 8].copy_from_slice(&5i64.to_le_bytes());
        legacy[DEVICE_KEY_BYTES + 8..].copy_from_slice(&i64::MIN.to_le_bytes());
        assert!(store.insert_device("old", &legacy).unwrap());
        let old = get(&store, "old").unwrap();
        assert_eq!((old.key, old.created_ms, old.revoked_ms), (Some(vec![7; 32]), 5, None));

        let mut damaged =
            seal(&StoredDevice { key: [1; 32], created_ms: 1, revoked_ms: None, previous: None });
        damaged[9] ^= 0x10;
        assert!(store.insert_device("bad", &damaged).unwrap());
        assert_eq!(get(&store, "bad").unwrap_err().code, ErrorCode::Storage);
    }
}
