//! The device registry's trees: device id -> the broker's encoded entry, and device id -> its
//! module versions; and the processors the bridges run on device traffic, by name (all
//! opaque here).
//!
//! Writes here are not flushed; the broker flushes before it answers a registry change.

use crate::{StorageError, Store};

impl Store {
    /// Every registered device, as `(id, entry)` sorted by id.
    pub fn devices(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        crate::processors::named_entries(&self.devices)
    }

    /// One device's entry.
    pub fn device(&self, id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.devices.get(id.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Stores `entry` for `id` only if `id` has none yet; returns whether it did.
    pub fn insert_device(&self, id: &str, entry: &[u8]) -> Result<bool, StorageError> {
        let done = self.devices.compare_and_swap(id.as_bytes(), None as Option<&[u8]>, Some(entry))?.is_ok();
        self.meta_changed.store(true, std::sync::atomic::Ordering::Release);
        Ok(done)
    }

    /// Replaces a device's entry if it is still `old`; returns whether it did.
    pub fn swap_device(&self, id: &str, old: &[u8], entry: &[u8]) -> Result<bool, StorageError> {
        let done = self.devices.compare_and_swap(id.as_bytes(), Some(old), Some(entry))?.is_ok();
        self.meta_changed.store(true, std::sync::atomic::Ordering::Release);
        Ok(done)
    }

    /// Every device's module versions, as `(id, entry)` sorted by id: for checks.
    pub fn device_modules_all(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        crate::processors::named_entries(&self.device_modules)
    }

    /// One device's module versions.
    pub fn device_modules(&self, id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.device_modules.get(id.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Every bridge-tier processor, as `(name, entry)` sorted by name.
    pub fn bridge_processors(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        crate::processors::named_entries(&self.bridge_processors)
    }

    /// One bridge-tier processor's entry.
    pub fn bridge_processor(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.bridge_processors.get(name.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Replaces a bridge-tier processor's entry if it is still `old` (`None`: none yet;
    /// `entry` `None`: removes it); returns whether it did.
    pub fn swap_bridge_processor(
        &self,
        name: &str,
        old: Option<&[u8]>,
        entry: Option<&[u8]>,
    ) -> Result<bool, StorageError> {
        let done = self.bridge_processors.compare_and_swap(name.as_bytes(), old, entry)?.is_ok();
        self.meta_changed.store(true, std::sync::atomic::Ordering::Release);
        Ok(done)
    }

    /// Replaces a device's module versions if they are still `old` (`None`: none yet);
    /// returns whether it did.
    pub fn swap_device_modules(
        &self,
        id: &str,
        old: Option<&[u8]>,
        entry: &[u8],
    ) -> Result<bool, StorageError> {
        let done = self.device_modules.compare_and_swap(id.as_bytes(), old, Some(entry))?.is_ok();
        self.meta_changed.store(true, std::sync::atomic::Ordering::Release);
        Ok(done)
    }
}
