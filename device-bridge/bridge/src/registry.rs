//! Device keys and rights, looked up in the broker's registry and cached for `key_cache_ms`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use silt_client::{AclEntry, Client, ClientError, ErrorCode, Operation};
use silt_frame::Key;

/// What the registry says about a device id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Active(Arc<Device>),
    Revoked,
    Unknown,
}

impl Lookup {
    /// An active device with one key and every right but internal topics (tests, and brokers
    /// without authentication).
    pub fn active(key: Key) -> Lookup {
        Lookup::Active(Arc::new(Device { key, previous: None, rights: None }))
    }
}

/// A registered device's keys and rights.
#[derive(Debug, PartialEq, Eq)]
pub struct Device {
    pub key: Key,
    /// The key before the last rotation, and until when (ms since the epoch) it is accepted.
    pub previous: Option<(Key, i64)>,
    /// The access-control entries that apply to it; `None` when the broker runs without
    /// authentication.
    pub rights: Option<Vec<AclEntry>>,
}

impl Device {
    /// The keys accepted at `now_ms`: the current one, then the previous during its overlap.
    pub fn keys(&self, now_ms: i64) -> impl Iterator<Item = &Key> {
        let previous = self.previous.as_ref().filter(|(_, until)| now_ms < *until).map(|(k, _)| k);
        std::iter::once(&self.key).chain(previous)
    }

    /// Whether device `id` may do `operation` on `topic`. Internal topics (`silt.*`) never.
    pub fn may(&self, id: &str, operation: Operation, topic: &str) -> bool {
        if topic.starts_with("silt.") {
            return false;
        }
        match &self.rights {
            None => true,
            Some(entries) => silt_wire::auth::decide(
                entries,
                &format!("device:{id}"),
                operation,
                &format!("topic:{topic}"),
            ),
        }
    }
}

pub struct Registry {
    client: Client,
    ttl: Duration,
    cache: DashMap<String, (Instant, Lookup)>,
    /// The module version each device last reported in a hello, as passed on to the broker.
    modules: Arc<DashMap<Arc<str>, u32>>,
}

impl Registry {
    pub fn new(client: Client, ttl: Duration) -> Arc<Registry> {
        Arc::new(Registry { client, ttl, cache: DashMap::new(), modules: Arc::default() })
    }

    /// Passes on the processor module version a device's hello reported (0: none) to the
    /// broker, in the background, when it differs from what this bridge passed on last. A
    /// failure is logged and the next hello tries again.
    pub fn report_module(&self, device: &Arc<str>, module: u32) {
        if self.modules.get(device).is_some_and(|m| *m == module) {
            return;
        }
        if self.modules.len() >= CACHE_ENTRIES_MAX {
            self.modules.clear();
        }
        self.modules.insert(device.clone(), module);
        let client = self.client.clone();
        let (device, modules) = (device.clone(), self.modules.clone());
        tokio::spawn(async move {
            let running = (module != 0).then_some(module);
            if let Err(e) = client.report_device_module(&device, running).await {
                tracing::warn!(%device, module, error = %e, "cannot report the device's module version");
                modules.remove(&device);
            }
        });
    }

    /// How long an answer is cached: also how often sessions check their device again.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The device's state; `Err` when the broker cannot be asked (the caller answers
    /// "unavailable" and the device retries).
    pub async fn lookup(&self, id: &str) -> Result<Lookup, ClientError> {
        if let Some(hit) = self.cache.get(id) {
            if hit.0.elapsed() < self.ttl {
                return Ok(hit.1.clone());
            }
        }
        let found = match self.client.get_device(id).await {
            Ok(d) if d.revoked_ms.is_some() => Lookup::Revoked,
            Ok(d) => {
                let key = |k: Option<&[u8]>| k.and_then(|k| Key::try_from(k).ok());
                let Some(current) = key(d.key.as_deref()) else {
                    return Err(ClientError::Protocol(format!(
                        "the broker gave device {id:?} no 32-byte key"
                    )));
                };
                let previous = key(d.previous_key.as_deref()).zip(d.previous_until_ms);
                Lookup::Active(Arc::new(Device { key: current, previous, rights: d.rights }))
            }
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
        self.cache.insert(id.to_string(), (Instant::now(), found.clone()));
        Ok(found)
    }
}

/// Cached lookups kept at most; far above the 10,000-device target.
const CACHE_ENTRIES_MAX: usize = 100_000;
