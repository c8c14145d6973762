//! What the store keeps for WebAssembly processors: their definitions, module bytes, compiled
//! artefacts and pipeline checkpoints.
//!
//! The values are the broker's own encodings; this module only names the trees and keys, so
//! the storage crate knows nothing of wasmtime or of the processor ABI. Writes here are not
//! flushed: the broker flushes after a control operation, before it answers.

use std::convert::Infallible;

use sled::transaction::ConflictableTransactionError;

use crate::layout::{checkpoint_key, checkpoint_prefix};
use crate::{StorageError, Store};

/// A stored WebAssembly module is at most this large (deploys refuse bigger ones first).
pub const MODULE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Every entry of `tree` as `(key as text, value)`, sorted by key.
pub(crate) fn named_entries(tree: &sled::Tree) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (key, value) = item?;
        out.push((String::from_utf8_lossy(&key).into_owned(), value.to_vec()));
    }
    Ok(out)
}

impl Store {
    /// Every stored processor definition, as `(name, bytes)` sorted by name.
    pub fn processors(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        named_entries(&self.processors)
    }

    /// One processor definition.
    pub fn processor(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.processors.get(name.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Stores a processor definition, replacing the previous one.
    pub fn put_processor(&self, name: &str, definition: &[u8]) -> Result<(), StorageError> {
        self.processors.insert(name.as_bytes(), definition)?;
        self.meta_changed.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Removes a processor's definition, then its checkpoints in the database of its output
    /// topic `output` (a pipeline's; `None` for read-time processors, which have none). The
    /// definition goes durably first: a crash between the two leaves checkpoints that no
    /// processor reads (a deploy under the name writes its own), never a processor without
    /// its checkpoints, which would start again from the beginning. Module bytes and artefacts
    /// stay: other processors may share them (they are keyed by hash).
    pub fn delete_processor(&self, name: &str, output: Option<&str>) -> Result<(), StorageError> {
        self.processors.remove(name.as_bytes())?;
        self.meta_changed.store(true, std::sync::atomic::Ordering::Release);
        crate::store::flush_durably(&self.db, &self.dir)?;
        let Some(output) = output else { return Ok(()) };
        let checkpoints = match self.checkpoint_tree(output) {
            Ok(tree) => tree,
            Err(StorageError::UnknownTopic(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let keys: Vec<sled::IVec> =
            checkpoints.scan_prefix(checkpoint_prefix(name)).keys().collect::<Result<_, _>>()?;
        checkpoints
            .transaction(|checkpoints| {
                for key in &keys {
                    checkpoints.remove(key)?;
                }
                Ok::<_, ConflictableTransactionError<Infallible>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StorageError::Sled(e),
                sled::transaction::TransactionError::Abort(never) => match never {},
            })?;
        Ok(())
    }

    /// Stores module bytes under their hash. Idempotent.
    pub fn put_module(&self, hash: &[u8; 32], wasm: &[u8]) -> Result<(), StorageError> {
        assert!(wasm.len() <= MODULE_BYTES_MAX, "the broker checks module size first");
        self.modules.insert(&hash[..], wasm)?;
        self.meta_changed.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Every stored module, as `(hex of its key, bytes)`: for checks, which hash the bytes.
    pub fn modules(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        for item in self.modules.iter() {
            let (key, value) = item?;
            out.push((key.iter().map(|b| format!("{b:02x}")).collect(), value.to_vec()));
        }
        Ok(out)
    }

    /// Every checkpoint of every topic's database, as `(topic: key as text, bytes)`: for checks.
    pub fn checkpoints(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        for topic in self.topics() {
            let Ok(tree) = self.checkpoint_tree(&topic.name) else { continue };
            for (key, value) in named_entries(&tree)? {
                out.push((format!("{}: {key}", topic.name), value));
            }
        }
        Ok(out)
    }

    /// Module bytes by hash.
    pub fn module(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.modules.get(&hash[..])?.map(|v| v.to_vec()))
    }

    /// Stores a compiled artefact. The key is the caller's (module hash plus engine
    /// compatibility), so an artefact from another engine build is never looked up.
    pub fn put_artefact(&self, key: &[u8], artefact: &[u8]) -> Result<(), StorageError> {
        self.artefacts.insert(key, artefact)?;
        Ok(())
    }

    /// A compiled artefact by key.
    pub fn artefact(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.artefacts.get(key)?.map(|v| v.to_vec()))
    }

    /// A processor's checkpoint for one input partition, as last committed, from the database
    /// of its output topic `output` (where [`crate::Partition::append_checkpointed`] writes it).
    pub fn checkpoint(
        &self,
        output: &str,
        processor: &str,
        input_partition: u32,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let tree = self.checkpoint_tree(output)?;
        Ok(tree.get(checkpoint_key(processor, input_partition))?.map(|v| v.to_vec()))
    }

    /// Replaces a processor's checkpoint for one input partition outside an append (a deploy
    /// that starts from a chosen position). Pipeline commits use
    /// [`crate::Partition::append_checkpointed`] instead.
    pub fn put_checkpoint(
        &self,
        output: &str,
        processor: &str,
        input_partition: u32,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let tree = self.checkpoint_tree(output)?;
        tree.insert(checkpoint_key(processor, input_partition), value)?;
        Ok(())
    }
}
