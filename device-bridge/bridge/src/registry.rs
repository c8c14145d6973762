//! Device keys, looked up in the broker's registry and cached for `key_cache_ms`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use silt_client::{Client, ClientError, ErrorCode};
use silt_frame::Key;

/// What the registry says about a device id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Active(Key),
    Revoked,
    Unknown,
}

pub struct Registry {
    client: Client,
    ttl: Duration,
    cache: DashMap<String, (Instant, Lookup)>,
}

impl Registry {
    pub fn new(client: Client, ttl: Duration) -> Arc<Registry> {
        Arc::new(Registry { client, ttl, cache: DashMap::new() })
    }

    /// The device's state; `Err` when the broker cannot be asked (the caller answers
    /// "unavailable" and the device retries).
    pub async fn lookup(&self, id: &str) -> Result<Lookup, ClientError> {
        if let Some(hit) = self.cache.get(id) {
            if hit.0.elapsed() < self.ttl {
                return Ok(hit.1);
            }
        }
        let found = match self.client.get_device(id).await {
            Ok(d) if d.revoked_ms.is_some() => Lookup::Revoked,
            Ok(d) => match d.key.as_deref().and_then(|k| Key::try_from(k).ok()) {
                Some(key) => Lookup::Active(key),
                None => {
                    return Err(ClientError::Protocol(format!(
                        "the broker gave device {id:?} no 32-byte key"
                    )))
                }
            },
            Err(ClientError::Broker {
                code: ErrorCode::UnknownDevice | ErrorCode::InvalidRequest, ..
            }) => Lookup::Unknown,
            Err(e) => return Err(e),
        };
        // Bounded: unknown ids are cached too (so a flood of bad logins costs one lookup per id
        // and TTL), and the cache is cleared when it reaches a size no real fleet needs.
        if self.cache.len() >= CACHE_ENTRIES_MAX {
            self.cache.clear();
        }
        self.cache.insert(id.to_string(), (Instant::now(), found));
        Ok(found)
    }
}

/// Cached lookups kept at most; far above the 10,000-device target.
const CACHE_ENTRIES_MAX: usize = 100_000;
