//! The trees of principals and rights: users, tokens, access-control entries and producer ids,
//! each a map of key -> the broker's encoded entry (opaque here).
//!
//! Writes here are not flushed; the broker flushes before it answers a change.

use crate::layout::AUTH_TREE_PREFIX;
use crate::{StorageError, Store};

/// One of the auth trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthTree {
    Users,
    Tokens,
    Acls,
    /// Producer ids the broker assigned, with their owner and epoch.
    Producers,
}

impl AuthTree {
    fn name(self) -> String {
        let kind = match self {
            AuthTree::Users => "users",
            AuthTree::Tokens => "tokens",
            AuthTree::Acls => "acls",
            AuthTree::Producers => "producers",
        };
        format!("{AUTH_TREE_PREFIX}{kind}")
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

impl Store {
    fn auth_tree(&self, tree: AuthTree) -> Result<sled::Tree, StorageError> {
        Ok(self.db.open_tree(tree.name())?)
    }

    /// Marks the metadata for the next flush to copy (`store::backup`): producer ids, which
    /// every new client claims, with the group offsets, at most once a second.
    fn changed(&self, tree: AuthTree) {
        let flag = if tree == AuthTree::Producers { &self.offsets_changed } else { &self.meta_changed };
        flag.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Every entry of `tree`, as `(key, value)` sorted by key.
    pub fn auth_entries(&self, tree: AuthTree) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        for item in self.auth_tree(tree)?.iter() {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Stores `value` under `key` only if `key` has none yet; returns whether it did.
    pub fn auth_insert_new(&self, tree: AuthTree, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        let done = self.auth_tree(tree)?.compare_and_swap(key, None as Option<&[u8]>, Some(value))?.is_ok();
        self.changed(tree);
        Ok(done)
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn auth_put(&self, tree: AuthTree, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.auth_tree(tree)?.insert(key, value)?;
        self.changed(tree);
        Ok(())
    }

    /// Removes `key`; returns whether it was there.
    pub fn auth_remove(&self, tree: AuthTree, key: &[u8]) -> Result<bool, StorageError> {
        let done = self.auth_tree(tree)?.remove(key)?.is_some();
        self.changed(tree);
        Ok(done)
    }
}
