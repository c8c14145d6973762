//! Producer ids owned by the broker (decision 3 relies on them): the broker assigns each id,
//! binds it to the principal that asked, and counts an epoch that goes up each time that
//! principal claims it again (after a reconnect or a restart). A connection may send batches
//! under an id only while it holds the id at its current epoch, so no client can make another
//! producer's batches count as duplicates, and an older session of the same producer is fenced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use silt_core::partition::ANONYMOUS_PRODUCER;
use silt_storage::records::{open, seal, StoredProducer};
use silt_storage::{AuthTree, Store};
use silt_wire::ErrorCode;

use super::{refuse, storage, Principal, Refusal, Session};

/// The ids a connection holds, and at which epoch.
#[derive(Debug, Default)]
pub struct Held(Mutex<HashMap<u64, u32>>);

impl Held {
    /// The connection holds `id` at `epoch` from now on (a claim the cluster decided).
    pub fn hold(&self, id: u64, epoch: u32) {
        self.0.lock().expect("held producers lock").insert(id, epoch);
    }
}

/// Every assigned producer id.
pub struct Producers {
    store: Arc<Store>,
    /// Read by every batch's check; written only after a claim is durable.
    ids: RwLock<HashMap<u64, StoredProducer>>,
    /// Serializes claims (fresh ids stay unique, epochs go up one at a time) without holding
    /// `ids` across the flush.
    claims: Mutex<()>,
}

impl Producers {
    pub fn open(store: Arc<Store>) -> anyhow::Result<Producers> {
        let mut ids = HashMap::new();
        for (key, value) in store.auth_entries(AuthTree::Producers)? {
            let p: StoredProducer = open("producer id", &value).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(key == p.id.to_be_bytes(), "stored producer id {} is under another key", p.id);
            ids.insert(p.id, p);
        }
        Ok(Producers { store, ids: RwLock::new(ids), claims: Mutex::new(()) })
    }

    /// Gives `session` a new id (`None`) or claims `id` again for it, at the next epoch.
    /// Durable before it answers, so an id once given survives a crash.
    pub fn claim(
        &self,
        session: &Session,
        principal: &Principal,
        id: Option<u64>,
        now_ms: i64,
    ) -> Result<(u64, u32), Refusal> {
        let _claiming = self.claims.lock().expect("producer claims lock");
        let ids = self.ids.read().expect("producers lock");
        let entry = match id {
            None => {
                let id = loop {
                    let candidate = fresh_id();
                    if !ids.contains_key(&candidate) {
                        break candidate;
                    }
                };
                StoredProducer { id, principal: principal.name.clone(), epoch: 0, claimed_ms: now_ms }
            }
            Some(id) => next_epoch(&ids, &principal.name, id, now_ms)?,
        };
        drop(ids);
        self.store.auth_put(AuthTree::Producers, &entry.id.to_be_bytes(), &seal(&entry)).map_err(storage)?;
        self.store.flush().map_err(storage)?;
        let claimed = (entry.id, entry.epoch);
        self.ids.write().expect("producers lock").insert(entry.id, entry);
        session.producers.0.lock().expect("held producers lock").insert(claimed.0, claimed.1);
        Ok(claimed)
    }

    /// In a cluster the metadata group decides producer ids: the ids this broker kept alone are
    /// dropped, and the group's claims fill the table as they are applied.
    pub fn forget_local(&self) {
        self.ids.write().expect("producers lock").clear();
    }

    /// Applies a producer claim of the cluster's metadata group: a fresh `id` for `principal`,
    /// or `id` again at the next epoch. Every broker applies the same claims in the same order
    /// to the same table, so they decide alike; the table is in memory, made again from the
    /// group's log at start.
    pub fn apply_claim(
        &self,
        principal: &str,
        id: u64,
        fresh: bool,
        now_ms: i64,
    ) -> Result<(u64, u32), Refusal> {
        let mut ids = self.ids.write().expect("producers lock");
        let entry = if fresh {
            if ids.contains_key(&id) || id == ANONYMOUS_PRODUCER {
                return Err(refuse(ErrorCode::Storage, "producer id collision; try again"));
            }
            StoredProducer { id, principal: principal.to_string(), epoch: 0, claimed_ms: now_ms }
        } else {
            next_epoch(&ids, principal, id, now_ms)?
        };
        let claimed = (entry.id, entry.epoch);
        ids.insert(entry.id, entry);
        Ok(claimed)
    }

    /// Whether `session` may send a batch under `producer_id`: it holds the id at its current
    /// epoch. Id 0 (no deduplication) is anyone's.
    pub fn check(&self, session: &Session, producer_id: u64) -> Result<(), Refusal> {
        if producer_id == ANONYMOUS_PRODUCER {
            return Ok(());
        }
        let held = session.producers.0.lock().expect("held producers lock").get(&producer_id).copied();
        let Some(held) = held else {
            return Err(refuse(
                ErrorCode::PermissionDenied,
                format!("producer id {producer_id} is not held by this connection (ask for one with InitProducer)"),
            ));
        };
        let current = self.ids.read().expect("producers lock").get(&producer_id).map(|p| p.epoch);
        match current {
            Some(epoch) if epoch == held => Ok(()),
            _ => Err(refuse(
                ErrorCode::ProducerFenced,
                format!("producer id {producer_id} was claimed by a newer session (epoch {held} is fenced)"),
            )),
        }
    }
}

/// `id`, known and `principal`'s, claimed again at the next epoch.
fn next_epoch(
    ids: &HashMap<u64, StoredProducer>,
    principal: &str,
    id: u64,
    now_ms: i64,
) -> Result<StoredProducer, Refusal> {
    let Some(known) = ids.get(&id) else {
        return Err(refuse(ErrorCode::UnknownProducer, format!("producer id {id} was never assigned here")));
    };
    if known.principal != principal {
        return Err(refuse(
            ErrorCode::PermissionDenied,
            format!("producer id {id} belongs to another principal"),
        ));
    }
    let epoch = known.epoch.checked_add(1).ok_or_else(|| {
        refuse(ErrorCode::ProducerFenced, format!("producer id {id} has used up its epochs"))
    })?;
    Ok(StoredProducer { epoch, claimed_ms: now_ms, ..known.clone() })
}

/// A random id, never 0. std's randomly keyed hasher is the randomness: ids need to be
/// unpredictable enough not to collide, not secret (ownership is what protects them).
pub fn fresh_id() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()).max(1)
}
