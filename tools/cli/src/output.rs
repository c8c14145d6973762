//! Human and JSON output of topic metadata, and the progress bar.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use silt_client::{RepairInfo, TopicInfo};

fn topic_json(t: &TopicInfo) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "retention_ms": t.retention_ms,
        "retention_bytes": t.retention_bytes,
        "created_ms": t.created_ms,
        "partitions": t.partitions.iter().map(|p| serde_json::json!({
            "partition": p.partition,
            "log_start": p.log_start,
            "high_watermark": p.high_watermark,
            "size_bytes": p.size_bytes,
            "batches": p.batches,
            "lost": p.lost.map(|(from, to)| serde_json::json!({ "from": from, "to": to })),
            "accepted_losses": ranges_json(&p.accepted_losses),
        })).collect::<Vec<_>>(),
    })
}

fn ranges_json(ranges: &[(u64, u64)]) -> serde_json::Value {
    ranges.iter().map(|(from, to)| serde_json::json!({ "from": from, "to": to })).collect()
}

/// What `silt topic repair` found and did.
pub fn print_repair(r: &RepairInfo, json: bool) {
    if json {
        let damaged: Vec<_> = r
            .damaged
            .iter()
            .map(|d| serde_json::json!({ "from": d.from, "to": d.to, "reason": d.reason }))
            .collect();
        let out = serde_json::json!({
            "topic": r.topic,
            "partition": r.partition,
            "damaged": damaged,
            "accepted": r.accepted,
            "batches_removed": r.batches_removed,
            "accepted_losses": ranges_json(&r.accepted_losses),
        });
        println!("{out}");
        return;
    }
    let at = format!("{}/{}", r.topic, r.partition);
    if r.damaged.is_empty() {
        println!("{at}: no damaged records found");
    }
    for d in &r.damaged {
        let verb = if r.accepted { "ACCEPTED as lost" } else { "DAMAGED" };
        println!("{at}: offsets {}..{} {verb}: {}", d.from, d.to, d.reason);
    }
    if r.accepted && !r.damaged.is_empty() {
        println!("{at}: {} damaged batch(es) removed; readers go on after the loss", r.batches_removed);
    }
}

pub fn print_topic(t: &TopicInfo, json: bool) {
    if json {
        println!("{}", topic_json(t));
        return;
    }
    let records: u64 = t.partitions.iter().map(|p| p.high_watermark - p.log_start).sum();
    println!("topic {}: {} partition(s), {} record(s)", t.name, t.partitions.len(), records);
    if let Some(ms) = t.retention_ms {
        println!("  retention: {}", humantime::format_duration(std::time::Duration::from_millis(ms)));
    }
    if let Some(b) = t.retention_bytes {
        println!("  retention: {b} bytes per partition");
    }
    println!("  {:>9} {:>14} {:>14} {:>14} {:>9}", "partition", "log start", "high mark", "bytes", "batches");
    for p in &t.partitions {
        println!(
            "  {:>9} {:>14} {:>14} {:>14} {:>9}",
            p.partition, p.log_start, p.high_watermark, p.size_bytes, p.batches
        );
        if let Some((from, to)) = p.lost {
            println!(
                "  {:>9} LOST acknowledged records {from}..{to} to storage damage (silt topic repair)",
                ""
            );
        }
        for (from, to) in &p.accepted_losses {
            println!("  {:>9} accepted loss of offsets {from}..{to} (skipped by readers)", "");
        }
    }
}

pub fn print_topics(topics: &[TopicInfo], json: bool) {
    if json {
        println!("{}", serde_json::Value::Array(topics.iter().map(topic_json).collect()));
        return;
    }
    if topics.is_empty() {
        println!("no topics");
    }
    for t in topics {
        let records: u64 = t.partitions.iter().map(|p| p.high_watermark - p.log_start).sum();
        println!("{}\t{} partition(s)\t{} record(s)", t.name, t.partitions.len(), records);
    }
}

/// A progress bar on stderr; hidden when stderr is not a terminal or `hidden` is false.
pub fn progress(total: u64, visible: bool) -> ProgressBar {
    let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records scanned ({per_sec}, eta {eta})")
            .expect("static template"),
    );
    bar
}

/// A time in milliseconds since the epoch as RFC 3339, to the second.
pub fn time_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}
