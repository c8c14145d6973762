//! Offline verification of a stopped broker's data directory (`silt-broker check`): the
//! acknowledgement ledger, every partition's batches (both checksums, offsets in sequence,
//! the stats entry), the ledger's ends against the recovered logs, and every control-plane
//! record (processors, checkpoints, modules, devices, users, tokens, entries, producer ids).
//!
//! sled writes whenever it opens a store (its recovery starts a new segment of its log), so
//! the check opens a copy (`scratch`, removed afterwards) and the data directory stays byte
//! for byte as it was: a second check, or the broker's next start, sees the same files.
//! A store sled cannot open (it panics on some damage) is reported, not propagated.

use std::path::Path;

use crate::ledger::{self, Reading};
use crate::records::devices::{StoredDevice, StoredDeviceModules};
use crate::records::processors::StoredBridgeProcessor;
use crate::records::processors::{Checkpoint, StoredDefinition};
use crate::records::{open, StoredProducer, StoredToken, StoredUser};
use crate::{AuthTree, Loss, Store, StoreConfig};

/// Problems reported per partition at most (the first ones; the count is exact).
const PROBLEMS_SHOWN_MAX: usize = 16;

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    pub ledger: Reading,
    /// Why the store could not be opened, if it could not.
    pub open_error: Option<String>,
    pub partitions: Vec<PartitionReport>,
    /// Acknowledged ranges the logs no longer hold.
    pub losses: Vec<Loss>,
    /// Control-plane records that do not check out.
    pub records: Vec<String>,
}

/// One partition's scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: u32,
    pub log_start: u64,
    pub end: u64,
    pub batches: u64,
    pub bytes: u64,
    /// The end the ledger recorded, if any.
    pub acknowledged: Option<u64>,
    /// The first problems found (at most [`PROBLEMS_SHOWN_MAX`]), and how many in all.
    pub problems: Vec<String>,
    pub problem_count: u64,
    /// Offset ranges whose loss an operator accepted (not problems).
    pub accepted_losses: Vec<(u64, u64)>,
}

impl Report {
    /// Whether nothing is wrong: the store opened, every batch and record checks out, and no
    /// acknowledged record is missing. A torn ledger tail (a write the crash cut short, never
    /// acknowledged) is not a problem.
    pub fn is_clean(&self) -> bool {
        self.open_error.is_none()
            && self.ledger.damaged.is_empty()
            && self.losses.is_empty()
            && self.records.is_empty()
            && self.partitions.iter().all(|p| p.problem_count == 0)
    }
}

/// A copy of a store for the check, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Checks the data directory `data_dir` (the broker's `DATA_DIR`: its `log` store and its
/// `ledger`), on a copy of the store made in `scratch` (a directory that must not exist; it
/// is removed afterwards).
pub fn check(data_dir: &Path, scratch: &Path, config: StoreConfig) -> Report {
    let mut report = Report::default();
    match ledger::read(&data_dir.join("ledger")) {
        Ok(reading) => report.ledger = reading,
        Err(e) => report.records.push(format!("the ledger cannot be read: {e}")),
    }
    let store_dir = data_dir.join("log");
    if !store_dir.exists() {
        report.open_error = Some(format!("{} does not exist", store_dir.display()));
        return report;
    }
    if scratch.exists() {
        report.open_error = Some(format!("the scratch directory {} exists already", scratch.display()));
        return report;
    }
    let scratch = Scratch(scratch.to_path_buf());
    let copy = scratch.0.join("log");
    if let Err(e) = copy_tree(&store_dir, &copy) {
        report.open_error = Some(format!("copying the store to {} failed: {e}", scratch.0.display()));
        return report;
    }
    let opened = std::panic::catch_unwind(|| Store::open(&copy, config));
    let store = match opened {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => {
            report.open_error = Some(e.to_string());
            return report;
        }
        Err(panic) => {
            let why = crate::store::panic_message(&*panic);
            report.open_error = Some(format!("sled cannot open the store: {why}"));
            return report;
        }
    };
    let ledger_file = data_dir.join("ledger");
    if !ledger_file.exists() && store.ledger_kept().unwrap_or(true) {
        report.records.push(format!(
            "the acknowledgement ledger {} is gone: what was acknowledged cannot be checked",
            ledger_file.display()
        ));
    }
    let ends = ledger::ends(&report.ledger.entries);
    report.losses = store.verify(&ends);
    for meta in store.topics() {
        let incarnation = store.incarnation(&meta.name).unwrap_or(0);
        for p in 0..meta.partitions {
            let key = ledger::PartitionKey { topic: meta.name.clone(), incarnation, partition: p };
            let mut pr = PartitionReport {
                topic: meta.name.clone(),
                partition: p,
                acknowledged: ends.get(&key).copied(),
                ..PartitionReport::default()
            };
            match store.partition(&meta.name, p) {
                Ok(partition) => {
                    let scan = partition.scan();
                    pr.log_start = partition.log_start();
                    pr.end = partition.high_watermark();
                    pr.accepted_losses = partition.accepted_losses();
                    pr.batches = scan.batches;
                    pr.bytes = scan.bytes;
                    pr.problem_count = scan.problems.len() as u64;
                    pr.problems = scan.problems.into_iter().take(PROBLEMS_SHOWN_MAX).collect();
                }
                Err(e) => {
                    pr.problem_count = 1;
                    pr.problems.push(e.to_string());
                }
            }
            report.partitions.push(pr);
        }
    }
    report.records = check_records(&store);
    if let Some(r) = store.metadata_restored() {
        report.records.insert(
            0,
            format!(
                "the metadata database cannot be used ({}): the broker will restore it from its copies \
                 (metadata of {} ms, group offsets and producer ids of {:?} ms, Unix time), \
                 losing changes made after them",
                r.reason, r.meta_written_ms, r.offsets_written_ms
            ),
        );
    }
    drop(store);
    drop(scratch);
    report
}

/// Named stored values, as a store lists them.
type Listed = Result<Vec<(String, Vec<u8>)>, crate::StorageError>;
/// Whether one named value checks out.
type Checker<'a> = &'a dyn Fn(&str, &[u8]) -> Result<(), String>;

/// Decodes every control-plane record; the ones that do not check out, described.
fn check_records(store: &Store) -> Vec<String> {
    let mut bad = Vec::new();
    let mut each = |what: &str, listed: Listed, ok: Checker<'_>| match listed {
        Ok(items) => {
            for (name, bytes) in items {
                if let Err(e) = ok(&name, &bytes) {
                    bad.push(format!("{what} {name:?}: {e}"));
                }
            }
        }
        Err(e) => bad.push(format!("the {what}s cannot be read: {e}")),
    };
    each("processor", store.processors(), &|_, b| StoredDefinition::decode(b).map(drop));
    each("checkpoint", store.checkpoints(), &|_, b| Checkpoint::decode(b).map(drop));
    each("device", store.devices(), &|id, b| StoredDevice::decode(id, b).map(drop));
    each("device module", store.device_modules_all(), &|id, b| StoredDeviceModules::decode(id, b).map(drop));
    each("bridge processor", store.bridge_processors(), &|name, b| {
        StoredBridgeProcessor::decode(name, b).map(drop)
    });
    each("module", store.modules(), &|name, b| {
        let hash = silt_wire::signature::hex(&silt_wire::signature::module_hash(b));
        if hash == name {
            Ok(())
        } else {
            Err(format!("its bytes hash to {hash}"))
        }
    });
    let auth = |tree: AuthTree| -> Listed {
        store.auth_entries(tree).map(|entries| {
            entries.into_iter().map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)).collect()
        })
    };
    each("user", auth(AuthTree::Users), &|_, b| open::<StoredUser>("user", b).map(drop));
    each("token", auth(AuthTree::Tokens), &|_, b| open::<StoredToken>("token", b).map(drop));
    each("access-control entry", auth(AuthTree::Acls), &|_, b| {
        open::<silt_wire::AclEntry>("access-control entry", b).map(drop)
    });
    each("producer id", auth(AuthTree::Producers), &|_, b| {
        open::<StoredProducer>("producer id", b).map(drop)
    });
    bad
}
