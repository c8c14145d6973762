//! The real `silt` binary against a real broker (started in this process on an ephemeral
//! port): topic commands with text and `--json` output, produce from stdin, files and JSON
//! lines, consume from every kind of start, consumer groups, replay of a time range to CSV and
//! JSON lines, and the exit codes and one-line messages of its errors (issue 2, points 6-7).

mod support;

use serde_json::Value;
use support::{closed_udp_port, silt_command, Broker, Silt};

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(json).collect()
}

/// Creates `topic` with `partitions` partitions through the CLI.
fn create(broker: &Broker, topic: &str, partitions: u32) {
    broker.silt(&["topic", "create", topic, "--partitions", &partitions.to_string()]).run().ok();
}

/// `value-0` .. `value-{n-1}`, one per line.
fn numbered_lines(n: usize) -> String {
    (0..n).map(|i| format!("value-{i}\n")).collect()
}

/// Minute `m` of 2026-01-01, as RFC 3339 and as ms since the epoch.
fn minute(m: u32) -> (String, i64) {
    (format!("2026-01-01T00:{m:02}:00Z"), 1_767_225_600_000 + i64::from(m) * 60_000)
}

/// JSON-lines input: record `m` has event time minute `m`, key `dev-{m % 2}`, value `t{m}`.
fn timed_jsonl(minutes: std::ops::Range<u32>) -> String {
    minutes
        .map(|m| {
            format!("{{\"key\":\"dev-{}\",\"value\":\"t{m}\",\"timestamp\":\"{}\"}}\n", m % 2, minute(m).0)
        })
        .collect()
}

/// `topic create|list|describe|delete` work in text and JSON; describe --json gives each
/// partition's high watermark and size in bytes.
#[test]
fn topic_commands_in_text_and_json() {
    let broker = Broker::start();
    let out = broker.silt(&["topic", "create", "sensors", "--partitions", "3"]).run();
    assert_eq!(out.ok(), "created topic sensors with 3 partition(s)\n");
    let created = json(broker.silt(&["--json", "topic", "create", "alarms", "--retention", "7d"]).run().ok());
    assert_eq!(created["name"], "alarms");
    assert_eq!(created["retention_ms"], 7 * 24 * 3_600_000u64);
    assert_eq!(created["partitions"].as_array().unwrap().len(), 1);

    broker.silt(&["produce", "sensors", "--partition", "1"]).stdin(numbered_lines(7)).run().ok();

    let listed = json(broker.silt(&["topic", "list", "--json"]).run().ok());
    let mut names: Vec<&str> =
        listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["alarms", "sensors"]);
    let text = broker.silt(&["topic", "list"]).run();
    assert!(text.ok().contains("sensors\t3 partition(s)\t7 record(s)"), "{text:?}");

    let described = json(broker.silt(&["topic", "describe", "sensors", "--json"]).run().ok());
    let parts = described["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let hw: Vec<u64> = parts.iter().map(|p| p["high_watermark"].as_u64().unwrap()).collect();
    let size: Vec<u64> = parts.iter().map(|p| p["size_bytes"].as_u64().unwrap()).collect();
    assert_eq!(hw, [0, 7, 0]);
    assert!(size[0] == 0 && size[1] > 7 * "value-0".len() as u64 && size[2] == 0, "{size:?}");
    let text = broker.silt(&["topic", "describe", "sensors"]).run();
    assert!(text.ok().starts_with("topic sensors: 3 partition(s), 7 record(s)"), "{text:?}");
    // `topic repair` on an undamaged partition finds nothing, and accepting changes nothing
    // (damaged ones: server/broker/tests/integrity.rs).
    let repair = broker.silt(&["topic", "repair", "sensors", "--partition", "1"]).run();
    assert_eq!(repair.ok(), "sensors/1: no damaged records found\n");
    let repair =
        json(broker.silt(&["--json", "topic", "repair", "sensors", "-p", "1", "--accept-loss"]).run().ok());
    assert_eq!((repair["damaged"].as_array().unwrap().len(), repair["accepted"].as_bool()), (0, Some(true)));
    let described = json(broker.silt(&["topic", "describe", "sensors", "--json"]).run().ok());
    assert_eq!(described["partitions"][1]["high_watermark"], 7);
    assert_eq!(described["partitions"][1]["accepted_losses"], serde_json::json!([]));
    let missing = broker.silt(&["topic", "repair", "sensors", "--partition", "9"]).run();
    assert!(missing.fails(1).contains("no partition 9"), "{missing:?}");

    assert_eq!(broker.silt(&["topic", "delete", "alarms"]).run().ok(), "deleted topic alarms\n");
    let listed = json(broker.silt(&["--json", "topic", "list"]).run().ok());
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let dup = broker.silt(&["topic", "create", "sensors"]).run();
    assert!(dup.fails(1).contains("already exists"), "{dup:?}");
}

/// `silt produce` exits 0 only once every line is acknowledged, so a consumer started right
/// after it sees them all; `consume --count N` prints exactly N values and exits.
#[test]
fn produce_from_stdin_then_consume_a_count() {
    let broker = Broker::start();
    create(&broker, "lines", 2);
    let input = numbered_lines(5_000);
    let out = broker.silt(&["--json", "produce", "lines"]).stdin(input.clone()).run();
    assert_eq!(json(out.ok())["acknowledged"], 5_000);

    let all = broker.silt(&["consume", "lines", "--from", "earliest", "--count", "5000"]).run();
    let mut got: Vec<&str> = all.lines();
    got.sort();
    let mut want: Vec<&str> = input.lines().collect();
    want.sort();
    assert_eq!(got, want, "every acknowledged line, once");

    let some =
        broker.silt(&["consume", "lines", "--from", "earliest", "--count", "3", "--partition", "0"]).run();
    assert_eq!(some.lines().len(), 3);
    // Empty input is fine too.
    let out = broker.silt(&["--json", "produce", "lines"]).run();
    assert_eq!(json(out.ok())["acknowledged"], 0);
}

/// `--file` reads lines from a file; `--key` sends every record to the key's partition; JSON
/// lines carry key, event time and headers through to `consume --format jsonl`.
#[test]
fn produce_from_a_file_and_as_json_lines() {
    let broker = Broker::start();
    create(&broker, "keyed", 4);
    let file = broker.write_file("input.txt", "first\nsecond\nthird\n");
    broker.silt(&["produce", "keyed", "--file", file.to_str().unwrap(), "--key", "dev-7"]).run().ok();
    let out = broker.silt(&["consume", "keyed", "--format", "jsonl"]).run();
    let records = json_lines(out.ok());
    let partition = u64::from(silt_wire::partition_for_key(b"dev-7", 4));
    assert_eq!(records.len(), 3);
    for (r, want) in records.iter().zip(["first", "second", "third"]) {
        assert_eq!((r["value"].as_str(), r["key"].as_str()), (Some(want), Some("dev-7")));
        assert_eq!(r["partition"], partition, "same key, same partition");
    }

    create(&broker, "jsonl", 1);
    let input = concat!(
        "{\"key\":\"dev-1\",\"value\":{\"t\":21.5},\"timestamp\":\"2026-01-01T00:00:00Z\",\"headers\":{\"unit\":\"C\"}}\n",
        "{\"value\":\"plain\",\"timestamp\":1767225660000}\n",
    );
    broker.silt(&["produce", "jsonl", "--format", "jsonl"]).stdin(input).run().ok();
    let records = json_lines(broker.silt(&["consume", "jsonl", "--format", "jsonl"]).run().ok());
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["key"], "dev-1");
    assert_eq!(records[0]["value"], serde_json::json!({ "t": 21.5 }));
    assert_eq!(records[0]["timestamp"], "2026-01-01T00:00:00.000Z");
    assert_eq!(records[0]["headers"], serde_json::json!({ "unit": "C" }));
    assert_eq!((&records[1]["key"], &records[1]["value"]), (&Value::Null, &Value::from("plain")));
    assert_eq!(records[1]["timestamp"], "2026-01-01T00:01:00.000Z");
    assert_eq!((&records[1]["offset"], &records[1]["topic"]), (&Value::from(1), &Value::from("jsonl")));

    let bad = broker.silt(&["produce", "jsonl", "--format", "jsonl"]).stdin("{\"key\":\"no value\"}\n").run();
    let line = bad.fails(1);
    assert!(line.contains("line 1") && line.contains("value"), "{line}");
}

/// Values are stored as given: a JSON-lines value that is not a string keeps its exact text
/// (key order, spacing, every digit of its numbers), `--format value` prints the stored bytes,
/// and `--format jsonl` embeds them unchanged (issue 14, point 9).
#[test]
fn values_are_stored_and_printed_as_given() {
    let broker = Broker::start();
    create(&broker, "exact", 1);
    let values = [
        r#"{"z":1,"a":0.1000000000000000055511151231257827,"m":[1e5, 2.50, -0.0]}"#,
        r#"[3.141592653589793238462643383279,  {"b":true,"a":null}]"#,
        r#"{"t":21.5}"#,
    ];
    let input: String = values.iter().map(|v| format!("{{\"value\":{v}}}\n")).collect();
    broker.silt(&["produce", "exact", "--format", "jsonl"]).stdin(input).run().ok();
    let stored = broker.silt(&["consume", "exact", "--format", "value"]).run();
    assert_eq!(stored.lines(), values, "the stored bytes are the bytes sent");
    let lines = broker.silt(&["consume", "exact", "--format", "jsonl"]).run();
    for (line, value) in lines.lines().iter().zip(values) {
        assert!(line.contains(&format!("\"value\":{value}")), "{value} is not embedded as stored: {line}");
    }
}

/// `silt consume ... | head` ends quietly with 0 once the reader closes the pipe, in every
/// output format (issue 14, point 9).
#[test]
fn consume_ends_quietly_on_a_closed_pipe() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let broker = Broker::start();
    create(&broker, "piped", 1);
    // Far more than a pipe holds, so the writer meets the closed end.
    broker.silt(&["produce", "piped"]).stdin(numbered_lines(50_000)).run().ok();
    for format in ["value", "jsonl", "csv"] {
        let mut cmd = broker.silt(&["consume", "piped", "--format", format]).cmd;
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).spawn().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        // The reader is dropped here: the pipe is closed after one line, as `head -1` does.
        assert!(!first.is_empty(), "{format}: no first line");
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert!(stderr.trim().is_empty(), "{format}: {stderr}");
    }
}

/// Without `--count` or `--follow`, consume prints up to the end of the log and exits, also
/// on an empty topic; `--from` takes an offset, an RFC 3339 time, or `latest`.
#[test]
fn consume_stops_at_the_end_and_starts_where_asked() {
    let broker = Broker::start();
    create(&broker, "timed", 1);
    assert_eq!(broker.silt(&["consume", "timed"]).run().ok(), "", "an empty topic ends at once");
    broker.silt(&["produce", "timed", "--format", "jsonl"]).stdin(timed_jsonl(0..10)).run().ok();

    let values = |from: &str| broker.silt(&["consume", "timed", "--from", from]).run().ok().to_string();
    let t = |r: std::ops::Range<u32>| r.map(|m| format!("t{m}\n")).collect::<String>();
    assert_eq!(values("earliest"), t(0..10));
    assert_eq!(values("4"), t(4..10), "from an offset");
    assert_eq!(values("10"), "", "from the end");
    assert_eq!(values(&minute(5).0), t(5..10), "from a record's exact time");
    assert_eq!(values("2026-01-01T00:05:30Z"), t(6..10), "from between two records");
    assert_eq!(values("2025-12-31T23:00:00Z"), t(0..10), "from before the first record");
    assert_eq!(values("2026-01-02T00:00:00Z"), "", "from after the last record");
    assert_eq!(values("latest"), "");
}

/// `consume --group` commits what it printed: a second run of the same group prints only
/// records that arrived after the first run, also when `--count` stopped the first run in the
/// middle of a fetched batch.
#[test]
fn consume_with_a_group_resumes_after_committed_offsets() {
    let broker = Broker::start();
    create(&broker, "grouped", 2);
    broker.silt(&["produce", "grouped"]).stdin(numbered_lines(6)).run().ok();
    let run = |group: &str, extra: &[&str]| {
        let mut args = vec!["consume", "grouped", "--group", group];
        args.extend_from_slice(extra);
        let out = broker.silt(&args).run();
        let mut lines: Vec<String> = out.lines().iter().map(|s| s.to_string()).collect();
        lines.sort();
        lines
    };
    assert_eq!(run("g", &[]).len(), 6);
    assert!(run("g", &[]).is_empty(), "nothing new");
    broker.silt(&["produce", "grouped"]).stdin("late-1\nlate-2\n").run().ok();
    assert_eq!(run("g", &[]), ["late-1", "late-2"]);

    // A count that ends inside a batch: the next run continues right after the last printed.
    let single = "single";
    create(&broker, single, 1);
    broker.silt(&["produce", single]).stdin(numbered_lines(6)).run().ok();
    let run1 = broker.silt(&["consume", single, "--group", "h", "--count", "4"]).run();
    assert_eq!(run1.lines(), ["value-0", "value-1", "value-2", "value-3"]);
    let run2 = broker.silt(&["consume", single, "--group", "h"]).run();
    assert_eq!(run2.lines(), ["value-4", "value-5"], "resumes after what was printed");
}

/// `replay --from --to` writes exactly the records whose event time is in [from, to), across
/// partitions, as CSV with a header row to a file, or as JSON lines to stdout.
#[test]
fn replay_a_time_range_to_csv_and_json_lines() {
    let broker = Broker::start();
    create(&broker, "history", 2);
    broker.silt(&["produce", "history", "--format", "jsonl"]).stdin(timed_jsonl(0..10)).run().ok();
    let (from, to) = (minute(3).0, minute(7).0);

    let csv_path = broker.dir.path().join("range.csv");
    let out = broker
        .silt(&[
            "replay",
            "history",
            "--from",
            &from,
            "--to",
            &to,
            "--format",
            "csv",
            "--output",
            csv_path.to_str().unwrap(),
        ])
        .run();
    assert_eq!(out.ok(), "", "the data goes to the file");
    assert!(out.stderr.contains("wrote 4 records to"), "{out:?}");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.remove(0), ["topic", "partition", "offset", "timestamp", "key", "value"]);
    rows.sort_by_key(|r| r[3]);
    let want: Vec<(String, String, String)> = (3..7)
        .map(|m| (minute(m).0.replace(":00Z", ":00.000Z"), format!("dev-{}", m % 2), format!("t{m}")))
        .collect();
    let got: Vec<(String, String, String)> =
        rows.iter().map(|r| (r[3].to_string(), r[4].to_string(), r[5].to_string())).collect();
    assert_eq!(got, want);
    assert!(rows.iter().all(|r| r[0] == "history"));

    let out = broker.silt(&["replay", "history", "--from", &from, "--to", &to, "--format", "jsonl"]).run();
    let records = json_lines(out.ok());
    let mut values: Vec<&str> = records.iter().map(|r| r["value"].as_str().unwrap()).collect();
    values.sort();
    assert_eq!(values, ["t3", "t4", "t5", "t6"]);
    for r in &records {
        let ts = r["timestamp"].as_str().unwrap();
        assert!(("2026-01-01T00:03".."2026-01-01T00:07").contains(&ts), "{ts}");
    }
    // Without --to the range runs to now.
    let out = broker.silt(&["replay", "history", "--from", &minute(8).0]).run();
    assert_eq!(json_lines(out.ok()).len(), 2);

    let backwards = broker.silt(&["replay", "history", "--from", &to, "--to", &from]).run();
    assert!(backwards.fails(1).contains("--to must be after --from"), "{backwards:?}");
}

/// Failures are one line on stderr with exit 1: an unknown topic, a broker nobody listens
/// for, a bad `--from`, a missing certificate; bad usage exits 2.
#[test]
fn errors_are_one_line_with_exit_codes() {
    let broker = Broker::start();
    create(&broker, "known", 1);

    for args in [
        &["consume", "nope"][..],
        &["produce", "nope"],
        &["topic", "describe", "nope"],
        &["replay", "nope", "--from", "2026-01-01T00:00:00Z"],
    ] {
        let out = broker.silt(args).run();
        assert_eq!(out.fails(1), "silt: topic \"nope\" does not exist", "{args:?}");
    }

    let bad_from = broker.silt(&["consume", "known", "--from", "yesterday"]).run();
    let line = bad_from.fails(1);
    assert!(line.contains("--from \"yesterday\"") && line.contains("RFC 3339"), "{line}");
    let bad_time = broker.silt(&["replay", "known", "--from", "2026-13-01T00:00:00Z"]).run();
    assert!(bad_time.fails(1).contains("not an RFC 3339 time"), "{bad_time:?}");

    let port = closed_udp_port();
    let nowhere = format!("127.0.0.1:{port}");
    let mut cmd = silt_command(broker.dir.path());
    cmd.args(["--broker", &nowhere, "--ca-cert", broker.ca_cert.to_str().unwrap(), "topic", "list"]);
    let out = Silt::new(cmd).run();
    let line = out.fails(1);
    assert!(line.contains(&format!("cannot reach the broker at {nowhere}")), "{line}");

    let mut cmd = silt_command(&broker.dir.path().join("silt-data"));
    cmd.args(["--broker", &broker.listen.to_string(), "topic", "list"]);
    let out = Silt::new(cmd).run();
    assert!(out.fails(1).contains("no CA certificate"), "{out:?}");

    for args in [
        &["topic", "frobnicate"][..],
        &["consume"],
        &["consume", "known", "--count", "many"],
        &["produce", "known", "--format", "xml"],
    ] {
        let out = broker.silt(args).run();
        out.fails(2);
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
    }
}

/// With neither `--ca-cert` nor `SILT_CA_CERT`, `silt` trusts `./silt-data/tls/cert.pem`.
#[test]
fn default_certificate_from_the_working_directory() {
    let broker = Broker::start();
    create(&broker, "defaults", 1);
    let mut cmd = silt_command(broker.dir.path());
    cmd.args(["--broker", &broker.listen.to_string(), "topic", "list"]);
    let out = Silt::new(cmd).run();
    assert!(out.ok().starts_with("defaults\t"), "{out:?}");

    // SILT_BROKER, SILT_CA_CERT and SILT_TOKEN_FILE work in place of the flags and defaults.
    let mut cmd = silt_command(std::env::temp_dir().as_path());
    cmd.env("SILT_BROKER", broker.listen.to_string())
        .env("SILT_CA_CERT", &broker.ca_cert)
        .env("SILT_TOKEN_FILE", broker.dir.path().join("silt-data/admin.token"))
        .args(["topic", "list"]);
    let out = Silt::new(cmd).run();
    assert!(out.ok().starts_with("defaults\t"), "{out:?}");

    // Without a token anywhere the broker refuses, and `silt` exits 3 saying so.
    let mut cmd = silt_command(std::env::temp_dir().as_path());
    cmd.env("SILT_BROKER", broker.listen.to_string())
        .env("SILT_CA_CERT", &broker.ca_cert)
        .args(["topic", "list"]);
    let err = Silt::new(cmd).run().fails(3).to_string();
    assert!(err.contains("not authenticated"), "{err}");
}
