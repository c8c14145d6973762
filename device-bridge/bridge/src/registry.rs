//! Device keys and rights, looked up in the broker's registry and cached for `key_cache_ms`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use silt_client::{AclEntry, Client, ClientError, ErrorCode, Operation};
use silt_frame::Key;

use crate::delivery::Package;

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
    /// The module version (and error) each device last reported, as passed on to the broker.
    modules: Arc<DashMap<Arc<str>, Reported>>,
    /// Each device's requested module version as the broker last said, and its package when
    /// this bridge fetched it (module delivery).
    requested: DashMap<Arc<str>, Requested>,
}

/// A device's module version and last error, as passed on to the broker.
type Reported = (u32, Option<String>);

#[derive(Clone)]
struct Requested {
    at: Instant,
    version: Option<u32>,
    package: Option<Arc<Package>>,
}

impl Registry {
    pub fn new(client: Client, ttl: Duration) -> Arc<Registry> {
        Arc::new(Registry {
            client,
            ttl,
            cache: DashMap::new(),
            modules: Arc::default(),
            requested: DashMap::new(),
        })
    }

    /// Passes on the processor module version a device reported (0: none) and, from a module
    /// state, its last module error (empty: none; `None` from a hello, which carries none) to
    /// the broker, in the background, when they differ from what this bridge passed on last.
    /// A failure is logged and the next report tries again.
    pub fn report_module(&self, device: &Arc<str>, module: u32, error: Option<&str>) {
        let last = self.modules.get(device).map(|m| m.clone());
        if last.as_ref().is_some_and(|(m, e)| *m == module && (error.is_none() || error == e.as_deref())) {
            return;
        }
        if self.modules.len() >= CACHE_ENTRIES_MAX {
            self.modules.clear();
        }
        let kept_error = error.map(str::to_string).or(last.and_then(|(_, e)| e));
        self.modules.insert(device.clone(), (module, kept_error));
        let client = self.client.clone();
        let (device, modules) = (device.clone(), self.modules.clone());
        let error = error.map(str::to_string);
        tokio::spawn(async move {
            let running = (module != 0).then_some(module);
            if let Err(e) = client.report_device_module(&device, running, error).await {
                tracing::warn!(%device, module, error = %e, "cannot report the device's module version");
                modules.remove(&device);
            }
        });
    }

    /// The package a device that runs module version `running` (0: none) should be sent: its
    /// requested version's, unless it runs that one or none is requested. The broker's answer
    /// is cached for the TTL, the package until another version is requested.
    pub async fn module_to_deliver(
        &self,
        device: &Arc<str>,
        running: u32,
    ) -> Result<Option<Arc<Package>>, ClientError> {
        let cached = self.requested.get(device).map(|r| r.clone());
        let deliver = |r: &Requested| match r.version {
            Some(v) if v != running => r.package.clone().filter(|p| p.version == v),
            _ => None,
        };
        if let Some(r) = cached.as_ref().filter(|r| r.at.elapsed() < self.ttl) {
            let need_bytes = r.version.is_some_and(|v| v != running) && deliver(r).is_none();
            if !need_bytes {
                return Ok(deliver(r));
            }
        }
        let old = cached.and_then(|r| r.package);
        let have = old.as_ref().map(|p| p.version).or((running != 0).then_some(running));
        let (info, module) = self.client.fetch_device_module(device, have).await?;
        let package = match (info.requested_version, module) {
            (None, _) => None,
            (Some(v), Some(module)) => {
                Some(Arc::new(Package::build(&info, v, &module).map_err(ClientError::Protocol)?))
            }
            (Some(v), None) => old.filter(|p| p.version == v),
        };
        if self.requested.len() >= CACHE_ENTRIES_MAX {
            self.requested.clear();
        }
        let r = Requested { at: Instant::now(), version: info.requested_version, package };
        let deliver = deliver(&r);
        self.requested.insert(device.clone(), r);
        Ok(deliver)
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
