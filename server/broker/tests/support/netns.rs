//! Network namespaces for replication tests: each broker in a namespace of its own, its veth
//! pair joined to a bridge in the test's namespace (which has an address on it, so the test
//! reaches every broker), so that a nemesis can cut the network between brokers, in one
//! direction or both, and touch nothing else on the machine. The cut is a blackhole route in a
//! namespace towards another broker's address: packets to it are dropped where they are sent,
//! and the test's own traffic to the brokers goes on. (This machine's kernel has no netem or
//! netfilter modules to drop a share of packets; routes are the kernel's core.) Needs root (CI
//! runs as root) and `ip` (iproute2). Everything is removed when the value is dropped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// One test's namespaces.
pub struct Namespaces {
    /// Short and unique on the machine: part of every interface's name (15 bytes at most).
    tag: String,
    subnet: u8,
    count: u64,
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Which way a nemesis drops a broker's packets.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// Nothing it sends to the other brokers arrives (it still hears them).
    Outgoing,
    /// Nothing passes between it and the other brokers.
    Both,
}

impl Namespaces {
    /// `count` namespaces, node I at 10.213.S.I, the test's side at 10.213.S.254.
    pub fn create(count: u64) -> Namespaces {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() % 1000) * 10 + NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let subnet = 1 + (n % 250) as u8;
        let ns = Namespaces { tag: format!("st{n}"), subnet, count };
        let bridge = ns.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.213.{subnet}.254/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 1..=count {
            let (name, outer, inner) = (ns.name(i), ns.outer(i), ns.inner(i));
            ip(&["netns", "add", &name]);
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &name]);
            ip(&["link", "set", &outer, "master", &bridge]);
            ip(&["link", "set", &outer, "up"]);
            let addr = format!("{}/24", ns.addr(i));
            ip(&["-n", &name, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", &name, "link", "set", &inner, "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    /// Node `i`'s namespace.
    pub fn name(&self, i: u64) -> String {
        format!("silt-{}-{i}", self.tag)
    }

    /// The veth end on the bridge, and the one inside the namespace.
    fn outer(&self, i: u64) -> String {
        format!("{}o{i}", self.tag)
    }

    fn inner(&self, i: u64) -> String {
        format!("{}i{i}", self.tag)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: u64) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, i as u8)
    }

    /// Cuts node `i` off from the other brokers as `cut` says.
    pub fn cut(&self, i: u64, cut: Cut) {
        for j in (1..=self.count).filter(|j| *j != i) {
            ip(&["-n", &self.name(i), "route", "replace", "blackhole", &format!("{}/32", self.addr(j))]);
            if let Cut::Both = cut {
                ip(&["-n", &self.name(j), "route", "replace", "blackhole", &format!("{}/32", self.addr(i))]);
            }
        }
    }

    /// Joins node `i` to the other brokers again.
    pub fn heal(&self, i: u64) {
        for j in (1..=self.count).filter(|j| *j != i) {
            let (to_j, to_i) = (format!("{}/32", self.addr(j)), format!("{}/32", self.addr(i)));
            let _ =
                Command::new("ip").args(["-n", &self.name(i), "route", "del", "blackhole", &to_j]).output();
            let _ =
                Command::new("ip").args(["-n", &self.name(j), "route", "del", "blackhole", &to_i]).output();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for i in 1..=self.count {
            let _ = Command::new("ip").args(["netns", "del", &self.name(i)]).output();
            let _ = Command::new("ip").args(["link", "del", &self.outer(i)]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge()]).output();
    }
}
