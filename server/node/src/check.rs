//! `silt-broker check`: verifies a stopped broker's data directory offline and prints what it
//! found (`silt_storage::check`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use silt_storage::check::{PartitionReport, Report};
use silt_storage::StoreConfig;

/// Verify a stopped broker's data directory: every batch's checksums and offsets, the stats
/// of each partition, every stored processor, checkpoint, module, device, user, token and
/// entry, and the acknowledgement ledger against the logs: a partition whose log ends before
/// the end the broker acknowledged lost records, and the check says which.
///
/// The storage engine writes whenever it opens a store, so the check opens a copy (see
/// --scratch) and leaves the data directory as it was. Run it on a stopped broker: the copy of
/// a running one's store is not consistent.
///
/// Exit codes: 0 when everything checks out; 1 when anything does not (the report says what);
/// 2 for bad arguments.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The broker's data directory.
    #[arg(long, env = "SILT_DATA_DIR", value_name = "DIR", default_value = "silt-data")]
    data_dir: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Where the check copies the store to open it (removed afterwards; default: a directory
    /// in DATA_DIR). It needs as much free space as the store takes.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
}

pub fn main(args: CheckArgs) -> ExitCode {
    // sled panics on some damage while opening; the report says so, without a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let scratch = args.scratch.clone().unwrap_or_else(|| {
        let name = format!(".check-{}", std::process::id());
        args.data_dir.join(name)
    });
    let report = silt_storage::check::check(&args.data_dir, &scratch, StoreConfig { cache_bytes: 64 << 20 });
    let _ = std::panic::take_hook();
    if args.json {
        println!("{}", json(&report));
    } else {
        print_text(&args.data_dir, &report);
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn partition_json(p: &PartitionReport) -> serde_json::Value {
    serde_json::json!({
        "topic": p.topic,
        "partition": p.partition,
        "log_start": p.log_start,
        "end": p.end,
        "batches": p.batches,
        "bytes": p.bytes,
        "acknowledged": p.acknowledged,
        "problems": p.problems,
        "problem_count": p.problem_count,
        "accepted_losses": p.accepted_losses.iter().map(|(from, to)| serde_json::json!({ "from": from, "to": to })).collect::<Vec<_>>(),
    })
}

fn json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "clean": r.is_clean(),
        "open_error": r.open_error,
        "ledger": {
            "records": r.ledger.entries.len(),
            "torn_tail_bytes": r.ledger.torn_tail,
            "damaged": r.ledger.damaged.iter().map(|(from, to, why)| serde_json::json!({
                "from": from, "to": to, "reason": why,
            })).collect::<Vec<_>>(),
        },
        "partitions": r.partitions.iter().map(partition_json).collect::<Vec<_>>(),
        "losses": r.losses.iter().map(|l| serde_json::json!({
            "topic": l.topic, "partition": l.partition, "from": l.from, "to": l.to, "reason": l.reason,
        })).collect::<Vec<_>>(),
        "records": r.records,
    })
}

fn print_text(dir: &std::path::Path, r: &Report) {
    println!("checking {}", dir.display());
    let l = &r.ledger;
    print!("ledger: {} records", l.entries.len());
    if l.torn_tail > 0 {
        print!(", and a last write of {} bytes cut short (never acknowledged)", l.torn_tail);
    }
    println!();
    for (from, to, why) in &l.damaged {
        println!("DAMAGED ledger bytes {from}..{to}: {why}");
    }
    if let Some(e) = &r.open_error {
        println!("FAILED to open the store: {e}");
    }
    for p in &r.partitions {
        let acked = p
            .acknowledged
            .map_or_else(|| "nothing acknowledged yet".into(), |a| format!("acknowledged to {a}"));
        println!(
            "{}/{}: offsets {}..{}, {} batches, {} bytes, {acked}: {}",
            p.topic,
            p.partition,
            p.log_start,
            p.end,
            p.batches,
            p.bytes,
            if p.problem_count == 0 { "ok".to_string() } else { format!("{} problems", p.problem_count) }
        );
        for problem in &p.problems {
            println!("  CORRUPT {problem}");
        }
        for (from, to) in &p.accepted_losses {
            println!("  accepted loss of offsets {from}..{to} (silt topic repair --accept-loss)");
        }
    }
    for loss in &r.losses {
        println!(
            "LOST {}/{}: acknowledged offsets {}..{} ({})",
            loss.topic, loss.partition, loss.from, loss.to, loss.reason
        );
    }
    for record in &r.records {
        println!("CORRUPT {record}");
    }
    let lost: u64 = r.losses.iter().map(|l| l.to - l.from).sum();
    let corrupt: u64 = r.partitions.iter().map(|p| p.problem_count).sum();
    if r.is_clean() {
        println!("clean: every batch and record checks out, nothing acknowledged is missing");
    } else if let Some(e) = &r.open_error {
        println!("damaged: the store cannot be opened ({e})");
    } else {
        println!(
            "damaged: {lost} acknowledged records lost in {} partitions, {corrupt} corrupt batches, {} bad records, {} damaged ledger ranges",
            r.losses.len(),
            r.records.len(),
            l.damaged.len()
        );
    }
}
