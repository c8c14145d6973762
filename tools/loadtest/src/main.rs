//! `silt-loadtest`: load-test harness for the Silt broker and its peers. See
//! `silt-loadtest --help`.

mod devices;
mod payload;
mod pipeline;
mod plot;
mod scenarios;
mod schedule;
mod servers;
mod stats;
mod suite;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::payload::Shape;
use crate::stats::Report;
use crate::targets::Kind;

/// Load-test harness for the Silt broker, and for NATS JetStream and MQTT brokers side by side
/// (`--target silt,nats,mqtt`): the same scenario runs against each target in turn, in one run,
/// and reports events/s, MB/s and latency percentiles per target.
///
/// Closed loop (the default) sends as fast as acknowledgements allow; open loop (`--rate`)
/// sends on a fixed schedule and counts each latency from the send's intended time, so stalls
/// are not hidden (no coordinated omission). `--start` starts the targets itself (a release
/// silt-broker, Debian's nats-server and mosquitto) on free loopback ports with temp data
/// dirs; without it the harness connects to running ones. `--plot FILE.svg` draws latency
/// percentiles and throughput over time; `suite` runs the standard comparison and rewrites
/// BENCHMARKS.md.
///
/// Exit codes: 0 the run completed; 1 it failed (the message says why); 2 bad arguments.
#[derive(Debug, Parser)]
#[command(name = "silt-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce records with durable acknowledgements; latency is per record, from its send
    /// (closed loop) or its intended send time (open loop) to its acknowledgement.
    Produce(Common),
    /// Read the records stored in --topic from the earliest offset with --consumers readers
    /// (default 1, or --producers for compatibility); throughput only.
    Consume(Common),
    /// Write --count records, restart the target when the harness started it (so reads come
    /// from its files), then read them all back from the start; throughput only.
    Replay(Common),
    /// Produce stamped readings and time each one until a live subscriber sees it: through a
    /// processor deployed from --module for Silt (input --topic, output --topic-out), and
    /// produce to subscribe for peers, which have no processors.
    EndToEnd(scenarios::EndToEndArgs),
    /// Write --count records of history, then run at once: producers at --rate, a live
    /// subscriber timing delivery, and a reader replaying the history (not for MQTT, which
    /// keeps none). Reports each part per target.
    Mixed(Common),
    /// Produce --count sensor readings (JSON objects) to --topic, then deploy --module three
    /// times: twice from the latest offset to time deploy to first processed event (cold: the
    /// broker compiles the module; warm: it has it already), once from the earliest to time
    /// the pipeline over everything in the topic. All are undeployed afterwards.
    Pipeline(pipeline::PipelineArgs),
    /// Simulated devices (silt-devsim) send readings through a running silt-bridge over
    /// TCP frames or MQTT QoS 1 (or to a plain MQTT broker with --target mqtt), at --rate per
    /// device (0: as fast as --window allows), with optional faults; reports acked frames/s and
    /// frame-to-ack latency (durable acks from a bridge). Fails unless every generated reading was acked within
    /// --timeout.
    Devices(devices::DevicesArgs),
    /// Run the standard comparison (100-byte and 1 KiB events: durable ingest closed and open
    /// loop, replay, end to end through a processor, a device fleet) against Silt, NATS
    /// JetStream and mosquitto started by the harness, and write the tables, the plots and a
    /// description of the machine into BENCHMARKS.md (between its suite markers).
    Suite(suite::SuiteArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// Systems to run the scenario against, in this order, comma-separated: silt, nats (NATS
    /// JetStream, file storage), mqtt (an MQTT 3.1.1 broker, QoS 1).
    #[arg(long, value_delimiter = ',', default_value = "silt", value_name = "silt,nats,mqtt")]
    target: Vec<Kind>,
    /// Start each target on free loopback ports with a temp data dir (silt-broker from next to
    /// this binary, Debian's nats-server and mosquitto) and stop it afterwards, instead of
    /// connecting to running ones.
    #[arg(long)]
    start: bool,
    /// --fsync of a Silt broker started with --start: always, every:<ms> or never.
    #[arg(long, default_value = servers::DEFAULT_SILT_FSYNC, value_name = "POLICY")]
    silt_fsync: String,
    /// Broker QUIC address.
    #[arg(long, env = "SILT_BROKER", default_value = "127.0.0.1:7400")]
    broker: String,
    /// The broker's certificate (DATA_DIR/tls/cert.pem).
    #[arg(long, env = "SILT_CA_CERT", default_value = "silt-data/tls/cert.pem")]
    ca_cert: PathBuf,
    /// API token for the Silt broker (needs produce, consume, create-topic and describe on
    /// the topic). Default: --token-file, else ./silt-data/admin.token when it exists.
    #[arg(long, env = "SILT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token.
    #[arg(long, env = "SILT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// nats-server address (with JetStream enabled).
    #[arg(long, default_value = "127.0.0.1:4222", value_name = "HOST:PORT")]
    nats: String,
    /// MQTT broker address.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "HOST:PORT")]
    mqtt: String,
    /// Topic; created with --partitions when it does not exist (a JetStream stream with a
    /// subject per partition; MQTT topics <topic>/<partition>).
    #[arg(long, default_value = "loadtest")]
    topic: String,
    /// Concurrent producers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Concurrent readers or subscribers (consume defaults to --producers).
    #[arg(long)]
    consumers: Option<u32>,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    /// Records per batch (Silt); with --window, publishes in flight per publisher for peers.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
    /// Batches in flight per partition.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Open loop: send this many events per second in all (spread over the producers), each
    /// latency counted from its intended send time. Without it, closed loop.
    #[arg(long, value_name = "EVENTS_PER_S")]
    rate: Option<f64>,
    /// Records in total (per target).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Stop sending after this long instead (e.g. 30s), whichever comes first.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Longest wait for the acknowledgements or deliveries after the last send (pipeline: for
    /// the probe's output, and for the processor to catch up).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How long a Silt producer waits for a batch to fill before sending it anyway (open-loop
    /// runs at modest rates want it short).
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Compression of the produced batches (Silt).
    /// `lz4` or `none`.
    #[arg(long, default_value = "lz4", value_name = "CODEC")]
    compression: silt_client::Compression,
    /// Write an SVG plot of the latency percentiles and the throughput over time of every
    /// target to this file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Print JSON (one object per target and part, one per line) instead of text.
    #[arg(long)]
    json: bool,
}

impl Common {
    fn load(&self) -> targets::Load {
        targets::Load {
            topic: self.topic.clone(),
            partitions: self.partitions.max(1),
            message_size: self.message_size,
            batch_size: self.batch_size.max(1),
            window: self.window.max(1),
            compression: self.compression,
            linger: self.linger,
        }
    }
}

fn main() -> ExitCode {
    payload::start_clock();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (reports, c) = match cli.command {
        Command::Produce(c) => (scenarios::run(scenarios::Scenario::Produce, &c, None).await?, c),
        Command::Consume(c) => (scenarios::run(scenarios::Scenario::Consume, &c, None).await?, c),
        Command::Replay(c) => (scenarios::run(scenarios::Scenario::Replay, &c, None).await?, c),
        Command::Mixed(c) => (scenarios::run(scenarios::Scenario::Mixed, &c, None).await?, c),
        Command::EndToEnd(e) => {
            (scenarios::run(scenarios::Scenario::EndToEnd, &e.common, Some(&e)).await?, e.common)
        }
        Command::Pipeline(p) => {
            let report = pipeline::run(&p).await?;
            if p.common.json {
                println!("{}", report.to_json());
            } else {
                println!("{}", report.to_text());
            }
            return Ok(());
        }
        Command::Devices(d) => {
            let report = devices::run(&d).await?;
            devices::print(&report, d.fleet.json);
            if let Some(path) = &d.plot {
                let label = format!("{} {}", d.target, report.transport.as_str());
                plot::write(path, "silt-loadtest devices", &[devices::report(&report, &label)])?;
                eprintln!("silt-loadtest: wrote {}", path.display());
            }
            return Ok(());
        }
        Command::Suite(s) => return suite::run(&s).await,
    };
    print_reports(&reports, c.json);
    if let Some(path) = &c.plot {
        let title = format!("silt-loadtest {}", reports.first().map_or("", |r| r.scenario.as_str()));
        plot::write(path, &title, &reports)?;
        eprintln!("silt-loadtest: wrote {}", path.display());
    }
    Ok(())
}

fn print_reports(reports: &[Report], json: bool) {
    for r in reports {
        if json {
            println!("{}", r.to_json());
        } else {
            println!("{}", r.to_text());
        }
    }
}

/// A progress bar on stderr when it is a terminal (hidden otherwise, e.g. in CI and pipes).
fn progress(total: u64) -> ProgressBar {
    let visible = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} events ({per_sec}, eta {eta})")
            .expect("template"),
    );
    bar
}

/// Produces `c.count` records to the Silt broker of `c` (what `pipeline` loads its input with).
async fn produce(c: &Common, shape: Shape) -> anyhow::Result<Report> {
    scenarios::produce(&scenarios::target_from_flags(Kind::Silt, c), c, shape, false, "produce").await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand's flags are well formed (no two flags with one name: pipeline once
    /// had its own --timeout beside the common one and refused to run).
    #[test]
    fn flags_are_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// The peer flags parse: a target list in order, open loop with --rate, --start.
    #[test]
    fn target_list_and_rate_parse() {
        let cli = Cli::try_parse_from([
            "silt-loadtest",
            "produce",
            "--target",
            "silt,nats,mqtt",
            "--rate",
            "5000",
            "--start",
        ])
        .unwrap();
        let Command::Produce(c) = cli.command else { panic!("not produce") };
        assert_eq!(c.target, vec![Kind::Silt, Kind::Nats, Kind::Mqtt]);
        assert_eq!(c.rate, Some(5000.0));
        assert!(c.start);
        assert!(Cli::try_parse_from(["silt-loadtest", "produce", "--target", "kafka"]).is_err());
        let Command::Produce(d) = Cli::try_parse_from(["silt-loadtest", "produce"]).unwrap().command else {
            panic!()
        };
        assert_eq!(d.target, vec![Kind::Silt]);
        assert_eq!(d.rate, None);
    }
}
