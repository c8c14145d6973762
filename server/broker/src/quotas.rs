//! Quotas: per-principal rates of produce bytes, fetch bytes and requests, enforced by
//! throttling as Kafka's quotas are (a request over its principal's rate waits, it is not
//! refused), and open connections per source address. One setting applies to every principal;
//! named principals may have their own (`[quotas."user:NAME"]`), each rate unset falling back.
//!
//! Each rate is a virtual schedule (GCRA): a principal's next free time moves on by
//! `amount / rate` with each use, and a use waits for whatever of it lies more than one second
//! ahead, so a principal may burst one second's worth and then runs at its rate.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits per principal (0: none) and per address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    pub produce_bytes_per_s: u64,
    pub fetch_bytes_per_s: u64,
    pub requests_per_s: u64,
    pub connections_per_address_max: usize,
    /// Rates of named principals (`user:NAME`, `device:ID`) that differ from the above.
    pub principals: BTreeMap<String, PrincipalQuota>,
}

/// One principal's own rates (0: none); `None` takes the setting every principal has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalQuota {
    pub produce_bytes_per_s: Option<u64>,
    pub fetch_bytes_per_s: Option<u64>,
    pub requests_per_s: Option<u64>,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            produce_bytes_per_s: 0,
            fetch_bytes_per_s: 0,
            requests_per_s: 0,
            connections_per_address_max: 1024,
            principals: BTreeMap::new(),
        }
    }
}

impl QuotaConfig {
    /// The rate of `rate` per second that `principal` runs under (0: none).
    pub fn per_s(&self, principal: &str, rate: Rate) -> u64 {
        let own = self.principals.get(principal);
        let (own, all) = match rate {
            Rate::ProduceBytes => (own.and_then(|q| q.produce_bytes_per_s), self.produce_bytes_per_s),
            Rate::FetchBytes => (own.and_then(|q| q.fetch_bytes_per_s), self.fetch_bytes_per_s),
            Rate::Requests => (own.and_then(|q| q.requests_per_s), self.requests_per_s),
        };
        own.unwrap_or(all)
    }
}

/// Which rate a use counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rate {
    ProduceBytes,
    FetchBytes,
    Requests,
}

impl Rate {
    pub fn name(self) -> &'static str {
        match self {
            Rate::ProduceBytes => "produce_bytes",
            Rate::FetchBytes => "fetch_bytes",
            Rate::Requests => "requests",
        }
    }
}

/// The burst a principal may use at once: one second of its rate.
const BURST: Duration = Duration::from_secs(1);
/// Longest single wait: a huge use is spread over later ones rather than parking a stream.
const WAIT_MAX: Duration = Duration::from_secs(10);

pub struct Quotas {
    config: QuotaConfig,
    next_free: Mutex<HashMap<(String, Rate), Instant>>,
    addresses: Mutex<HashMap<IpAddr, usize>>,
}

impl Quotas {
    pub fn new(config: QuotaConfig) -> Arc<Quotas> {
        Arc::new(Quotas { config, next_free: Mutex::default(), addresses: Mutex::default() })
    }

    /// How long `principal` waits before a use of `amount` of `rate` at `now`.
    pub fn delay(&self, principal: &str, rate: Rate, amount: u64, now: Instant) -> Duration {
        let per_s = self.config.per_s(principal, rate);
        if per_s == 0 || amount == 0 {
            return Duration::ZERO;
        }
        let cost = Duration::from_secs_f64(amount as f64 / per_s as f64);
        let mut next_free = self.next_free.lock().expect("quota lock");
        let slot = next_free.entry((principal.to_string(), rate)).or_insert(now);
        *slot = (*slot).max(now) + cost;
        slot.saturating_duration_since(now + BURST).min(WAIT_MAX)
    }

    /// A connection slot of `ip`, given back when dropped; `None` when the address has
    /// `connections_per_address_max` open.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.addresses.lock().expect("quota lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= self.config.connections_per_address_max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { quotas: self.clone(), ip })
    }
}

/// One open connection of an address.
pub struct AddressSlot {
    quotas: Arc<Quotas>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.quotas.addresses.lock().expect("quota lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_bursts_one_second_then_runs_at_its_rate() {
        let q = Quotas::new(QuotaConfig { produce_bytes_per_s: 1000, ..QuotaConfig::default() });
        let t0 = Instant::now();
        assert_eq!(q.delay("user:a", Rate::ProduceBytes, 1000, t0), Duration::ZERO, "the burst");
        assert_eq!(q.delay("user:a", Rate::ProduceBytes, 500, t0), Duration::from_millis(500));
        assert_eq!(q.delay("user:b", Rate::ProduceBytes, 1000, t0), Duration::ZERO, "per principal");
        assert_eq!(q.delay("user:a", Rate::Requests, 1_000_000, t0), Duration::ZERO, "no request quota");
        // Two seconds later the schedule has caught up again.
        assert_eq!(q.delay("user:a", Rate::ProduceBytes, 1000, t0 + Duration::from_secs(2)), Duration::ZERO);
        assert_eq!(q.delay("user:a", Rate::ProduceBytes, 100_000_000, t0), WAIT_MAX, "waits are capped");
    }

    #[test]
    fn a_named_principal_has_its_own_rates() {
        let own =
            PrincipalQuota { produce_bytes_per_s: Some(0), requests_per_s: Some(10), ..Default::default() };
        let q = Quotas::new(QuotaConfig {
            produce_bytes_per_s: 1000,
            fetch_bytes_per_s: 1000,
            principals: [("user:bulk".to_string(), own)].into(),
            ..QuotaConfig::default()
        });
        let t0 = Instant::now();
        assert_eq!(q.delay("user:bulk", Rate::ProduceBytes, 1_000_000, t0), Duration::ZERO, "0: no limit");
        assert_eq!(
            q.delay("user:bulk", Rate::FetchBytes, 1500, t0),
            Duration::from_millis(500),
            "falls back"
        );
        assert_eq!(q.delay("user:bulk", Rate::Requests, 15, t0), Duration::from_millis(500), "its own");
        assert_eq!(q.delay("user:other", Rate::ProduceBytes, 1500, t0), Duration::from_millis(500));
    }

    #[test]
    fn connections_per_address_are_counted_and_given_back() {
        let q = Quotas::new(QuotaConfig { connections_per_address_max: 2, ..QuotaConfig::default() });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (a, _b) = (q.connect(ip).unwrap(), q.connect(ip).unwrap());
        assert!(q.connect(ip).is_none());
        assert!(q.connect("127.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(q.connect(ip).is_some());
    }
}
