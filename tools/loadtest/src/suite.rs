//! `silt-loadtest suite`: the standard comparison of Silt with NATS JetStream and mosquitto,
//! each started by the harness on loopback with a temp data dir, written into BENCHMARKS.md
//! between its suite markers (the rest of the file, the hand-written analysis, is kept) with
//! SVG plots next to it and every report as JSON.
//!
//! Every figure of one table comes from the same run on the same machine, one system after
//! the other, so the ratios compare like with like even where the machine is noisy.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser};

use crate::payload::Shape;
use crate::plot;
use crate::scenarios::{self, EndToEndArgs, Scenario};
use crate::servers::Server;
use crate::stats::Report;
use crate::targets::Kind;
use crate::{Cli, Command, Common};

pub const BEGIN: &str = "<!-- suite:begin (written by `silt-loadtest suite`; edits here are overwritten) -->";
pub const END: &str = "<!-- suite:end -->";

#[derive(Debug, Args)]
pub(crate) struct SuiteArgs {
    /// The file to write the results into, between its suite markers (appended when it has
    /// none; created when missing).
    #[arg(long, default_value = "BENCHMARKS.md", value_name = "FILE")]
    output: PathBuf,
    /// Directory for the plots and suite.json, relative to the output file's directory.
    #[arg(long, default_value = "docs/benchmarks", value_name = "DIR")]
    plots: PathBuf,
    /// The processor of the end-to-end step: a module that keeps every reading, run with
    /// min=0 (threshold_filter.wasm).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "target/wasm32-unknown-unknown/release/threshold_filter.wasm"
    )]
    module: PathBuf,
    /// Seconds each timed step runs at most (ingest stops at its count or this, whichever
    /// comes first).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    step: Duration,
    /// A small, fast run (counts and the fleet cut a hundredfold, steps of 2 s) that checks the
    /// suite works; its figures mean little.
    #[arg(long)]
    quick: bool,
    /// The command line to name in the output as the one that regenerates it.
    #[arg(long, default_value = "bash scripts/bench-suite.sh")]
    command: String,
}

/// One row of a results table: the systems' figures of one measurement.
struct Row {
    name: String,
    /// (target label, report) in the order measured.
    cells: Vec<(String, Report)>,
}

/// Builds the common flags of a step as if given on the command line, so the suite runs
/// exactly what `silt-loadtest <scenario> ...` would.
fn common(args: &[String]) -> anyhow::Result<Common> {
    let argv = ["silt-loadtest".to_string(), "produce".to_string()].into_iter().chain(args.iter().cloned());
    match Cli::try_parse_from(argv)?.command {
        Command::Produce(c) => Ok(c),
        _ => unreachable!("parsed as produce"),
    }
}

/// An open-loop step: 100-byte events at `rate` for `step`, Silt's producer with linger 0.
fn paced(topic: &str, rate: u32, step: &str) -> anyhow::Result<Common> {
    let rate = rate.to_string();
    common(&strings(&[
        "--topic",
        topic,
        "--rate",
        &rate,
        "--duration",
        step,
        "--count",
        "100000000",
        "--linger",
        "0ms",
    ]))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

pub(crate) async fn run(a: &SuiteArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let scale = if a.quick { 100 } else { 1 };
    let step = if a.quick { Duration::from_secs(2) } else { a.step };
    let step_arg = format!("{}ms", step.as_millis());
    if !a.module.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release --target wasm32-unknown-unknown -p threshold-filter` (scripts/bench-suite.sh does)",
            a.module.display()
        );
    }
    let mut tables: Vec<(String, String, Vec<Row>)> = Vec::new();
    let mut all: Vec<Report> = Vec::new();
    let base = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let plots = base.join(&a.plots);
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;

    // 1. Durable ingest (closed loop) and replay after a restart, per event size.
    let systems: [(Kind, &str, &str); 4] = [
        (Kind::Silt, "silt", "always"),
        (Kind::Silt, "silt fsync=never", "never"),
        (Kind::Nats, "nats", "always"),
        (Kind::Mqtt, "mqtt", "always"),
    ];
    let mut ingest_rows = Vec::new();
    let mut replay_rows = Vec::new();
    for (size, count) in [(100usize, 2_000_000u64), (1024, 500_000)] {
        let count = count / scale;
        let c = common(&strings(&[
            "--topic",
            &format!("suite-{size}"),
            "--message-size",
            &size.to_string(),
            "--count",
            &count.to_string(),
            "--duration",
            &step_arg,
        ]))?;
        let (mut ingest, mut replay) = (Vec::new(), Vec::new());
        for (kind, label, fsync) in systems {
            eprintln!("silt-loadtest suite: ingest {size} B, {label}");
            let mut server =
                Server::start(kind, label, if fsync.is_empty() { "always" } else { fsync }).await?;
            let target = server.target().clone();
            let written = scenarios::produce(&target, &c, Shape::Array, false, "ingest").await;
            let written = match written {
                Ok(r) => r,
                Err(e) => {
                    server.stop().await;
                    return Err(e.context(format!("ingest {size} B on {label}")));
                }
            };
            if kind.has_log() && fsync != "never" {
                eprintln!("silt-loadtest suite: replay {size} B, {label}");
                server.restart().await?;
                let r = scenarios::read_back(&target, &c, written.events, "replay").await;
                replay.push((label.to_string(), r.with_context(|| format!("replay on {label}"))?));
            }
            server.stop().await;
            ingest.push((label.to_string(), written));
        }
        let name = format!("ingest-{size}");
        plot::write(
            &plots.join(format!("{name}.svg")),
            &format!("durable ingest, {size}-byte events, closed loop"),
            &ingest.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        )?;
        plot::write(
            &plots.join(format!("replay-{size}.svg")),
            &format!("replay after a restart, {size}-byte events"),
            &replay.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        )?;
        all.extend(ingest.iter().chain(&replay).map(|(_, r)| r.clone()));
        ingest_rows.push(Row { name: format!("{size}-byte events"), cells: ingest });
        replay_rows.push(Row { name: format!("{size}-byte events"), cells: replay });
    }
    tables.push((
        "Durable ingest, closed loop".into(),
        "One producer, one partition, 1000-record batches (Silt, LZ4) or 8000 publishes in flight \
         (peers), as fast as acknowledgements come back. Latency: each event from its send to its ack."
            .into(),
        ingest_rows,
    ));
    tables.push((
        "Replay after a restart".into(),
        "Everything the ingest step wrote, read back from the start by one reader after the server \
         restarted (its files, not its write buffers). MQTT keeps no log to replay."
            .into(),
        replay_rows,
    ));

    // 2. Open loop at a fixed rate: latency without coordinated omission.
    let rate = if a.quick { 2_000 } else { 20_000 };
    let c = paced("suite-open", rate, &step_arg)?;
    let mut cells = Vec::new();
    for (kind, label, fsync) in systems {
        eprintln!("silt-loadtest suite: open loop {rate}/s, {label}");
        cells.extend(on_started(kind, label, fsync, Scenario::Produce, &c, None).await?);
    }
    plot::write(
        &plots.join("open-loop.svg"),
        &format!("durable ingest, open loop at {rate} events/s"),
        &reports(&cells),
    )?;
    all.extend(reports(&cells));
    tables.push((
        format!("Durable ingest, open loop at {rate} events/s"),
        "100-byte events sent on a fixed schedule whatever the acks do; each latency counts from the \
         event's intended send time (no coordinated omission). Silt's producer runs with linger 0: \
         a batch goes out as soon as the window has room, and records that arrive while the window \
         is full batch up behind it."
            .into(),
        vec![Row { name: "100-byte events".into(), cells }],
    ));

    // 3. End to end: produce -> processor -> subscriber (peers: produce -> subscriber).
    let rate = if a.quick { 1_000 } else { 10_000 };
    let c = paced("suite-e2e", rate, &step_arg)?;
    let e2e = EndToEndArgs::new(c.clone(), Some(a.module.clone()), vec![("min".into(), "0".into())]);
    let mut cells = Vec::new();
    for (kind, label, fsync) in systems {
        eprintln!("silt-loadtest suite: end to end {rate}/s, {label}");
        cells.extend(on_started(kind, label, fsync, Scenario::EndToEnd, &c, Some(&e2e)).await?);
    }
    plot::write(&plots.join("end-to-end.svg"), &format!("end to end at {rate} events/s"), &reports(&cells))?;
    all.extend(reports(&cells));
    tables.push((
        format!("End to end at {rate} events/s"),
        "From each event's intended send time until a live subscriber has it: for Silt through a \
         deployed WebAssembly processor (threshold filter keeping every reading) into its output \
         topic; NATS and MQTT have no processors, so theirs is produce to subscribe."
            .into(),
        vec![Row { name: "100-byte events".into(), cells }],
    ));

    // 4. Device fleet: frames to a Silt bridge over TCP and MQTT; MQTT publishes to mosquitto.
    let (devices, per_device) = if a.quick { (20u32, 5.0) } else { (2_000, 5.0) };
    let mut cells = Vec::new();
    for (label, via_bridge, transport) in
        [("silt bridge tcp", true, "tcp"), ("silt bridge mqtt", true, "mqtt"), ("mqtt", false, "mqtt")]
    {
        eprintln!("silt-loadtest suite: {devices} devices at {per_device}/s, {label}");
        let kind = if via_bridge { Kind::Silt } else { Kind::Mqtt };
        let mut server = Server::start_with(kind, label, "always", via_bridge).await?;
        let t = server.target().clone();
        let mut args = strings(&[
            "silt-loadtest",
            "devices",
            "--transport",
            transport,
            "--devices",
            &devices.to_string(),
            "--rate",
            &per_device.to_string(),
            "--duration",
            &step_arg,
            "--timeout",
            "120s",
        ]);
        match server.bridge() {
            Some((tcp, mqtt)) => args.extend(strings(&[
                "--broker",
                &t.addr,
                "--ca-cert",
                &t.ca_cert.as_ref().expect("silt has a certificate").display().to_string(),
                "--token-file",
                &t.token_file.as_ref().expect("a started broker has a token file").display().to_string(),
                "--bridge",
                if transport == "tcp" { tcp } else { mqtt },
            ])),
            None => args.extend(strings(&["--target", "mqtt", "--bridge", &t.addr])),
        }
        let Command::Devices(d) = Cli::try_parse_from(args)?.command else { unreachable!("devices") };
        let outcome = crate::devices::run(&d).await;
        server.stop().await;
        let sim = outcome.with_context(|| format!("device fleet on {label}"))?;
        cells.push((label.to_string(), crate::devices::report(&sim, label)));
    }
    plot::write(
        &plots.join("devices.svg"),
        &format!("device fleet, {devices} devices at {per_device} frames/s each: frame to ack"),
        &reports(&cells),
    )?;
    all.extend(reports(&cells));
    tables.push((
        format!("Device fleet: {devices} devices at {per_device} frames/s each"),
        "Simulated devices (silt-devsim), each on its own connection, two readings per frame. \
         Silt: authenticated frames over TCP or MQTT QoS 1 to the device bridge embedded in the \
         broker, acked once durable in the log. mqtt: the same MQTT devices publishing QoS 1 to \
         mosquitto, acked on receipt. Latency: from a frame's first send to its ack."
            .into(),
        vec![Row { name: "frames".into(), cells }],
    ));

    let json: Vec<serde_json::Value> = all.iter().map(Report::to_json).collect();
    std::fs::write(plots.join("suite.json"), serde_json::to_string_pretty(&json)?)?;
    let section = render(a, &tables, &a.plots, started.elapsed()).await;
    write_section(&a.output, &section)?;
    eprintln!(
        "silt-loadtest suite: wrote {} and {} in {:.0} s",
        a.output.display(),
        plots.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn reports(cells: &[(String, Report)]) -> Vec<Report> {
    cells.iter().map(|(_, r)| r.clone()).collect()
}

/// Starts `kind` (a Silt broker with `fsync`), runs `scenario` on it, stops it; (label,
/// report) of each report.
async fn on_started(
    kind: Kind,
    label: &str,
    fsync: &str,
    scenario: Scenario,
    c: &Common,
    e2e: Option<&EndToEndArgs>,
) -> anyhow::Result<Vec<(String, Report)>> {
    let mut server = Server::start(kind, label, fsync).await?;
    let target = server.target().clone();
    let outcome = scenarios::run_on(scenario, &target, Some(&mut server), c, e2e).await;
    server.stop().await;
    let reports = outcome.with_context(|| label.to_string())?;
    Ok(reports
        .into_iter()
        .map(|mut r| {
            r.target = label.to_string();
            (label.to_string(), r)
        })
        .collect())
}

fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// "Silt ÷ peer" of a figure, or a dash.
fn ratio(silt: f64, peer: f64) -> String {
    if silt > 0.0 && peer > 0.0 {
        format!("{:.2}x", silt / peer)
    } else {
        "-".into()
    }
}

/// The Markdown of one table: a line per row and system, with ratios against Silt's figure of
/// the same row.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| events | system | events/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | events/s: Silt ÷ this | p99: this ÷ Silt |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for row in rows {
        let silt =
            row.cells.iter().find(|(l, _)| l == "silt" || l.starts_with("silt bridge")).map(|(_, r)| r);
        for (label, r) in &row.cells {
            let lat = |us: u64| if r.latency.samples > 0 { ms(us) } else { "-".into() };
            let (tput, p99) = match silt {
                Some(s) if !label.starts_with("silt") => (
                    ratio(s.events_per_sec, r.events_per_sec),
                    if r.latency.samples > 0 && s.latency.samples > 0 {
                        ratio(r.latency.p99_us as f64, s.latency.p99_us as f64)
                    } else {
                        "-".into()
                    },
                ),
                _ => ("".into(), "".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {label} | {} | {} | {} | {} | {} | {} | {tput} | {p99} |",
                row.name,
                plot::si(r.events_per_sec),
                if r.mb_per_sec > 0.0 { format!("{:.1}", r.mb_per_sec) } else { "-".into() },
                lat(r.latency.p50_us),
                lat(r.latency.p99_us),
                lat(r.latency.p999_us),
                lat(r.latency.max_us),
            );
        }
    }
    out
}

async fn output_of(program: &str, args: &[&str]) -> String {
    match tokio::process::Command::new(program).args(args).output().await {
        Ok(o) => {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        }
        Err(_) => "not found".into(),
    }
}

/// What the run ran on.
async fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = output_of("uname", &["-r"]).await;
    let fs = output_of("sh", &["-c", "df -T \"${TMPDIR:-/tmp}\" | awk 'NR==2 {print $2}'"]).await;
    let nats = output_of("nats-server", &["--version"]).await;
    let mosquitto = output_of("sh", &["-c", "mosquitto -h | head -1"]).await;
    let rustc = output_of("rustc", &["--version"]).await;
    format!(
        "- {cores} cores ({model}), {mem_gib:.0} GiB RAM, Linux {kernel}; data dirs on {fs} in {}\n\
         - silt {} (release build), {nats}, {mosquitto}; {rustc}\n\
         - Client and server share the machine (loopback); one system runs at a time.\n",
        std::env::temp_dir().display(),
        env!("CARGO_PKG_VERSION"),
    )
}

async fn render(
    a: &SuiteArgs,
    tables: &[(String, String, Vec<Row>)],
    plots: &Path,
    took: Duration,
) -> String {
    let now = output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).await;
    let mut out = format!(
        "{BEGIN}\n## Side by side: Silt, NATS JetStream, MQTT (mosquitto)\n\n\
         Written by `{}` on {now}{} in {:.0} s; every figure below is from that one run.\n\n{}\n\
         Durability differs, and the tables say so rather than hide it: Silt acknowledges a produce \
         after an fsync of the log (`fsync = always`, group commit; the `silt fsync=never` rows \
         leave flushing to sled, as the peers do). nats-server {} acknowledges once a message is in \
         its file store and syncs to disk every 2 minutes; mosquitto acknowledges QoS 1 on receipt \
         and writes its persistence file on shutdown or its autosave interval. Ratios are Silt's \
         figure over the peer's for throughput (above 1: Silt is faster), the peer's over Silt's for \
         p99 latency (above 1: Silt's tail is shorter).\n\n",
        a.command,
        if a.quick { " (--quick: small counts, figures only show the suite works)" } else { "" },
        took.as_secs_f64(),
        machine().await,
        "2.9",
    );
    for (title, what, rows) in tables {
        let _ = writeln!(out, "### {title}\n\n{what}\n\n{}", table(rows));
    }
    let _ = writeln!(out, "Plots (latency by percentile, throughput over time):\n");
    for (file, what) in [
        ("ingest-100.svg", "ingest, 100 B"),
        ("ingest-1024.svg", "ingest, 1 KiB"),
        ("replay-100.svg", "replay, 100 B"),
        ("replay-1024.svg", "replay, 1 KiB"),
        ("open-loop.svg", "open loop"),
        ("end-to-end.svg", "end to end"),
        ("devices.svg", "device fleet"),
    ] {
        let _ = writeln!(out, "- [{what}]({})", plots.join(file).display());
    }
    let _ = writeln!(out, "- every report as JSON: [suite.json]({})\n", plots.join("suite.json").display());
    out.push_str(END);
    out.push('\n');
    out
}

/// Replaces the text between the markers of `path` with `section` (markers included), or
/// appends it.
fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::write(path, splice(&old, section)).with_context(|| format!("writing {}", path.display()))
}

fn splice(old: &str, section: &str) -> String {
    let begin = old.find("<!-- suite:begin");
    let end = old.find(END).map(|e| e + END.len());
    match (begin, end) {
        (Some(b), Some(e)) if b < e => {
            let rest = old[e..].strip_prefix('\n').unwrap_or(&old[e..]);
            format!("{}{section}{rest}", &old[..b])
        }
        _ if old.is_empty() => section.to_string(),
        _ => format!("{}\n\n{section}", old.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section replaces what is between the markers and keeps the rest; a file without
    /// markers gets it appended, a missing one just the section.
    #[test]
    fn section_is_spliced_between_markers() {
        let first = splice("# Benchmarks\n\nintro\n", &format!("{BEGIN}\nA\n{END}\n"));
        assert_eq!(first, format!("# Benchmarks\n\nintro\n\n{BEGIN}\nA\n{END}\n"));
        let again = splice(&format!("{first}\n## Later\n"), &format!("{BEGIN}\nB\n{END}\n"));
        assert_eq!(again, format!("# Benchmarks\n\nintro\n\n{BEGIN}\nB\n{END}\n\n## Later\n"));
        assert_eq!(splice("", "S\n"), "S\n");
    }

    /// Rows list each system with ratios against Silt's figure of the same row.
    #[test]
    fn table_states_ratios_against_silt() {
        let mut h = crate::stats::histogram();
        h.record(2000).unwrap();
        let report = |target: &str, eps: f64, p99: u64| {
            let mut r = Report::new("ingest", 10, 1e6, Duration::from_secs(1), &h);
            r.target = target.into();
            r.events_per_sec = eps;
            r.latency.p99_us = p99;
            r
        };
        let rows = [Row {
            name: "100-byte events".into(),
            cells: vec![
                ("silt".into(), report("silt", 1_000_000.0, 2_000)),
                ("nats".into(), report("nats", 250_000.0, 8_000)),
            ],
        }];
        let t = table(&rows);
        assert!(t.contains("| 100-byte events | silt | 1M |"), "{t}");
        assert!(t.contains("| 100-byte events | nats | 250k | 1.0 | 2.00 | 8.00 |"), "{t}");
        assert!(t.contains("| 4.00x | 4.00x |"), "{t}");
    }
}
