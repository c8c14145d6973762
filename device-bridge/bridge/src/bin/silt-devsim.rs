//! `silt-devsim`: simulated devices for the Silt bridge; see `silt-devsim --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use silt_bridge::sim::{self, FaultPlan, Progress, SimConfig, SimError, Transport};
use silt_client::{Client, ClientConfig};

/// Simulated devices for the Silt bridge: N virtual devices send readings over TCP (silt
/// frames) or MQTT (QoS 1) at a set rate, with a window of frames in flight and optional
/// faults, and check that every reading they generated was acknowledged as durable.
///
/// The devices `sim-00000`, `sim-00001`, ... (from --first) are registered in the broker's
/// device registry first, or their keys fetched when they exist. Every device connects and
/// says hello; once all are connected they start together, each at a random phase of its
/// interval. Frames continue from the bridge's last durable sequence of each device, so runs
/// can be repeated against one bridge.
///
/// Faults are probabilities per generated frame, at most one per frame, applied to its first
/// transmission only: --drop (never send that copy), --duplicate (send it twice), --reorder
/// (swap with the next frame), --bad-tag (corrupt its tag; TCP only), --reconnect (close the
/// connection after it). The fault plan is drawn from --seed and each device's index, so a
/// failing run's faults replay with the same seed; the seed is printed at the start.
///
/// Reported: frames generated, sent, retransmitted and acked, nacks by reason, ack timeouts,
/// reconnects, and the latency from each frame's first send to the durable ack that covers
/// it (p50, p90, p99, p99.9, max), and acked frames per second.
///
/// Exit codes: 0 every generated reading was acked; 1 the run failed or did not complete in
/// --timeout (the report and the first problems are printed); 2 bad arguments.
#[derive(Debug, Parser)]
#[command(name = "silt-devsim", version)]
struct Args {
    /// Broker QUIC address, for registering the devices.
    #[arg(long, env = "SILT_BROKER", default_value = "127.0.0.1:7400", value_name = "HOST:PORT")]
    broker: String,
    /// The broker's certificate (its DATA_DIR/tls/cert.pem).
    #[arg(long, env = "SILT_CA_CERT", default_value = "silt-data/tls/cert.pem", value_name = "FILE")]
    ca_cert: PathBuf,
    /// The bridge's frame listener (tcp, default 127.0.0.1:7410) or MQTT listener (mqtt,
    /// default 127.0.0.1:1883).
    #[arg(long, value_name = "HOST:PORT")]
    bridge: Option<String>,
    /// How devices talk to the bridge: `tcp` (silt frames) or `mqtt` (MQTT 3.1.1, QoS 1).
    #[arg(long, default_value = "tcp", value_name = "tcp|mqtt")]
    transport: Transport,
    /// Simulated devices, each on its own connection.
    #[arg(long, default_value_t = 10)]
    devices: u32,
    /// Index of the first device: ids are sim-<index>, five digits.
    #[arg(long, default_value_t = 0)]
    first: u32,
    /// Frames per second per device; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 1.0, value_name = "FRAMES_PER_S")]
    rate: f64,
    /// Frames per device (default 10 when --duration is not given).
    #[arg(long, value_name = "N")]
    frames: Option<u64>,
    /// Generate frames for this long (e.g. 30s, 2m), then wait for the last acks.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Frames in flight per device (sent, not yet acked).
    #[arg(long, default_value_t = 8)]
    window: u32,
    /// A device resends what is unacked when its ack has not moved for this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    ack_timeout: Duration,
    /// Readings per frame (1 to 16): temperature, humidity, then numeric channels. MQTT
    /// publishes carry one temperature each.
    #[arg(long, default_value_t = 2)]
    readings: u8,
    #[command(flatten)]
    faults: FaultPlan,
    /// Seed of the fault plan and the devices' jitter (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Bound on the whole run: provisioning, connecting, sending, waiting for acks.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    timeout: Duration,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = sim::CONNECT_CONCURRENCY)]
    connect_concurrency: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `250ms`, `30s`, `2m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 =
        number.parse().map_err(|_| format!("{s:?}: expected a duration such as 500ms, 30s or 2m"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("silt-devsim: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt-devsim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let files = sim::raise_open_files_limit();
    if files.is_some_and(|files| files < u64::from(args.devices) + 64) {
        let files = files.unwrap_or_default();
        eprintln!(
            "silt-devsim: warning: {} devices need more than the {files} open files this process may have \
             (raise the hard limit: ulimit -Hn)",
            args.devices
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    eprintln!("silt-devsim: seed {seed} (replay the fault plan with --seed {seed})");
    let client = Client::connect(ClientConfig::new(args.broker.clone(), &args.ca_cert)?)
        .await
        .with_context(|| format!("connecting to the broker at {}", args.broker))?;
    let devices = tokio::time::timeout(args.timeout, sim::provision(&client, args.first, args.devices, 64))
        .await
        .context("registering the devices took longer than --timeout")??;
    client.close().await;
    let bridge = args.bridge.clone().unwrap_or_else(|| args.transport.default_bridge().to_string());
    let mut config = SimConfig::new(bridge, args.transport, devices);
    config.rate_per_s = args.rate;
    config.frames = match (args.frames, args.duration) {
        (None, None) => Some(10),
        (f, _) => f,
    };
    config.duration = args.duration;
    config.window = args.window;
    config.ack_timeout = args.ack_timeout;
    config.readings = args.readings;
    config.faults = args.faults;
    config.seed = seed;
    config.timeout = args.timeout;
    config.connect_concurrency = args.connect_concurrency;
    config.validate()?;

    let progress = Arc::new(Progress::default());
    let bar = progress_bar(u64::from(args.devices));
    let ticker = {
        let (progress, bar) = (progress.clone(), bar.clone());
        let n = u64::from(args.devices);
        tokio::spawn(async move {
            loop {
                let connected = progress.connected.load(Ordering::Relaxed);
                if connected < n {
                    bar.set_message(format!("connected {connected}/{n}"));
                } else {
                    bar.set_message(format!(
                        "acked {}/{} frames, {} devices done",
                        progress.acked.load(Ordering::Relaxed),
                        progress.generated.load(Ordering::Relaxed),
                        progress.finished.load(Ordering::Relaxed)
                    ));
                }
                bar.set_position(progress.finished.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let result = sim::run(config, progress).await;
    ticker.abort();
    bar.finish_and_clear();
    let (report, failure) = match result {
        Ok(report) => (report, None),
        Err(SimError::Incomplete(report)) => {
            let message = SimError::Incomplete(report.clone()).to_string();
            (*report, Some(message))
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_text());
    }
    match failure {
        Some(message) => anyhow::bail!("{message}"),
        None => Ok(()),
    }
}

fn progress_bar(devices: u64) -> ProgressBar {
    let visible = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(devices), target);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} devices done, {msg} ({elapsed})")
            .expect("template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations parse with the units the help names, and nonsense is refused.
    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
