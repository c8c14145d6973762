//! Failed logins per source address: after `failures_max` failures within `window_ms`, the
//! address is refused every login, right or wrong, for `lockout_ms`. Time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;

/// Addresses remembered at most; beyond it the quietest are forgotten first.
const ADDRESSES_MAX: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    first_ms: u64,
    locked_until_ms: u64,
}

/// The failure counts and lock-outs of source addresses.
#[derive(Debug)]
pub struct Lockout {
    failures_max: u32,
    window_ms: u64,
    lockout_ms: u64,
    by_address: HashMap<IpAddr, Record>,
}

impl Lockout {
    pub fn new(failures_max: u32, window_ms: u64, lockout_ms: u64) -> Lockout {
        Lockout { failures_max: failures_max.max(1), window_ms, lockout_ms, by_address: HashMap::new() }
    }

    /// Milliseconds `addr` must still wait, when it is locked out.
    pub fn locked(&self, addr: IpAddr, now_ms: u64) -> Option<u64> {
        let r = self.by_address.get(&addr)?;
        (r.locked_until_ms > now_ms).then(|| r.locked_until_ms - now_ms)
    }

    /// Counts a failure; returns true when it locks the address out.
    pub fn failed(&mut self, addr: IpAddr, now_ms: u64) -> bool {
        if self.by_address.len() >= ADDRESSES_MAX && !self.by_address.contains_key(&addr) {
            self.forget_stale(now_ms);
        }
        let r = self.by_address.entry(addr).or_insert(Record {
            failures: 0,
            first_ms: now_ms,
            locked_until_ms: 0,
        });
        if now_ms.saturating_sub(r.first_ms) > self.window_ms {
            *r = Record { failures: 0, first_ms: now_ms, locked_until_ms: r.locked_until_ms };
        }
        r.failures += 1;
        if r.failures >= self.failures_max {
            r.locked_until_ms = now_ms + self.lockout_ms;
            r.failures = 0;
            r.first_ms = now_ms;
            return true;
        }
        false
    }

    /// A success clears the address's failures (not a running lock-out: it was refused).
    pub fn succeeded(&mut self, addr: IpAddr) {
        if self.by_address.get(&addr).is_some_and(|r| r.locked_until_ms == 0) {
            self.by_address.remove(&addr);
        }
    }

    fn forget_stale(&mut self, now_ms: u64) {
        let (window, before) = (self.window_ms, self.by_address.len());
        self.by_address
            .retain(|_, r| r.locked_until_ms > now_ms || now_ms.saturating_sub(r.first_ms) <= window);
        if self.by_address.len() == before {
            // Everyone is recent: drop the lot rather than grow without bound.
            self.by_address.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_the_failures_and_lets_go_after_the_time() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut l = Lockout::new(3, 60_000, 30_000);
        assert!(!l.failed(a, 0));
        assert!(!l.failed(a, 10));
        assert_eq!(l.locked(a, 20), None);
        assert!(l.failed(a, 20));
        assert_eq!(l.locked(a, 20), Some(30_000));
        assert_eq!(l.locked(b, 20), None, "per address");
        assert_eq!(l.locked(a, 30_020), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let a: IpAddr = "::1".parse().unwrap();
        let mut l = Lockout::new(2, 1_000, 5_000);
        assert!(!l.failed(a, 0));
        assert!(!l.failed(a, 2_000));
        assert!(l.failed(a, 2_500));
    }

    #[test]
    fn success_clears_failures() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut l = Lockout::new(2, 60_000, 5_000);
        assert!(!l.failed(a, 0));
        l.succeeded(a);
        assert!(!l.failed(a, 1));
    }
}
