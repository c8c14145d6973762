//! `silt-loadtest devices`: a fleet of simulated devices (`silt_bridge::sim`) sending readings
//! through a running bridge, over TCP frames or MQTT QoS 1. Reports acked frames per second and
//! the latency from each frame's first send to its durable ack (p50, p90, p99, p99.9, max).
//!
//! The devices `sim-<first>`.. are registered in the broker's registry (or their keys fetched),
//! every device connects and says hello, and all start together once connected; the run ends
//! when every generated reading is acked, and fails if that does not happen within --timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use silt_bridge::sim::{self, FaultPlan, Progress, SimConfig, SimError, SimReport, Transport};

use crate::progress;
use crate::stats::{histogram, Report};
use crate::targets::Kind;

#[derive(Debug, Args)]
pub(crate) struct DevicesArgs {
    /// `silt`: devices go through a Silt device bridge (registered in the broker's device
    /// registry first). `mqtt`: they publish to a plain MQTT broker instead (--transport mqtt,
    /// no registration; credentials are sent and may be ignored), to compare the two.
    #[arg(long, default_value = "silt", value_name = "silt|mqtt")]
    pub(crate) target: crate::targets::Kind,
    /// Broker QUIC address, for registering the devices.
    #[arg(long, env = "SILT_BROKER", default_value = "127.0.0.1:7400")]
    broker: String,
    /// The broker's certificate (DATA_DIR/tls/cert.pem).
    #[arg(long, env = "SILT_CA_CERT", default_value = "silt-data/tls/cert.pem")]
    ca_cert: PathBuf,
    /// The bridge's frame listener (tcp, default 127.0.0.1:7410) or MQTT listener (mqtt,
    /// default 127.0.0.1:1883).
    #[arg(long, value_name = "HOST:PORT")]
    bridge: Option<String>,
    /// `tcp` (silt frames) or `mqtt` (MQTT 3.1.1, QoS 1).
    #[arg(long, default_value = "tcp", value_name = "tcp|mqtt")]
    transport: Transport,
    /// Simulated devices, each on its own connection.
    #[arg(long, default_value_t = 100)]
    devices: u32,
    /// Index of the first device (ids sim-00000, sim-00001, ...).
    #[arg(long, default_value_t = 0)]
    first: u32,
    /// Frames per second per device; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 0.0, value_name = "FRAMES_PER_S")]
    rate: f64,
    /// Frames per device (default 1000 when --duration is not given).
    #[arg(long)]
    frames: Option<u64>,
    /// Generate frames for this long (e.g. 30s), then wait for the last acks.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Frames in flight per device.
    #[arg(long, default_value_t = 8)]
    window: u32,
    /// A device resends what is unacked when its ack has not moved for this long.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    ack_timeout: Duration,
    /// Readings per frame (1 to 16).
    #[arg(long, default_value_t = 2)]
    readings: u8,
    #[command(flatten)]
    faults: FaultPlan,
    /// Seed of the fault plan and jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bound on the whole run.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write an SVG plot of the frame-to-ack latency percentiles to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PathBuf>,
}

impl DevicesArgs {
    fn config(&self, devices: Vec<sim::SimDevice>) -> SimConfig {
        let bridge = self.bridge.clone().unwrap_or_else(|| self.transport.default_bridge().to_string());
        let mut config = SimConfig::new(bridge, self.transport, devices);
        config.rate_per_s = self.rate;
        config.frames = match (self.frames, self.duration) {
            (None, None) => Some(1000),
            (f, _) => f,
        };
        config.duration = self.duration;
        config.window = self.window;
        config.ack_timeout = self.ack_timeout;
        config.readings = self.readings;
        config.faults = self.faults;
        config.seed = self.seed;
        config.timeout = self.timeout;
        config
    }
}

/// Runs the fleet; an incomplete run is an error (after its report is printed).
pub(crate) async fn run(args: &DevicesArgs) -> anyhow::Result<SimReport> {
    sim::raise_open_files_limit();
    let devices = match args.target {
        Kind::Silt => {
            let config = silt_client::ClientConfig::new(args.broker.clone(), &args.ca_cert)?;
            let client = silt_client::Client::connect(config)
                .await
                .with_context(|| format!("connecting to the broker at {}", args.broker))?;
            let devices = sim::provision(&client, args.first, args.devices, 64).await?;
            client.close().await;
            devices
        }
        Kind::Mqtt if args.transport == Transport::Mqtt => (args.first..args.first + args.devices)
            .map(|i| sim::SimDevice { id: sim::device_id(i), key: [0; 32] })
            .collect(),
        Kind::Mqtt => anyhow::bail!("--target mqtt needs --transport mqtt"),
        Kind::Nats => anyhow::bail!("device fleets run against a Silt bridge or an MQTT broker, not NATS"),
    };
    let config = args.config(devices);
    config.validate()?;
    let progress_state = Arc::new(Progress::default());
    let bar = progress(u64::from(args.devices));
    let ticker = {
        let (p, bar) = (progress_state.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(p.finished.load(std::sync::atomic::Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let result = sim::run(config, progress_state).await;
    ticker.abort();
    bar.finish_and_clear();
    match result {
        Ok(report) => Ok(report),
        Err(SimError::Incomplete(report)) => {
            let message = SimError::Incomplete(report.clone()).to_string();
            print(&report, args.json);
            anyhow::bail!("{message}")
        }
        Err(e) => Err(e.into()),
    }
}

/// The report as the other scenarios print theirs: `events` and `events_per_sec` are acked
/// frames, besides the simulator's own fields.
pub(crate) fn to_json(report: &SimReport) -> serde_json::Value {
    let mut json = report.to_json();
    json["events"] = report.counters.acked.into();
    json["events_per_sec"] = report.frames_per_s.into();
    json
}

/// A fleet run in the shape of the other scenarios' reports (for tables and plots): acked
/// frames, and the latency percentiles the simulator measured (no timeline).
pub(crate) fn report(sim: &SimReport, label: &str) -> Report {
    let mut r =
        Report::new("devices", sim.counters.acked, 0.0, Duration::from_secs_f64(sim.seconds), &histogram());
    r.target = label.to_string();
    r.events_per_sec = sim.frames_per_s;
    (r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us, r.samples) =
        (sim.p50_us, sim.p90_us, sim.p99_us, sim.p999_us, sim.max_us, sim.samples);
    let quantiles = [(0.5, sim.p50_us), (0.9, sim.p90_us), (0.99, sim.p99_us), (0.999, sim.p999_us)];
    r.spectrum = quantiles.into_iter().filter(|(q, _)| (sim.samples as f64) * (1.0 - q) >= 1.0).collect();
    if sim.samples > 0 {
        r.spectrum.push((1.0, sim.max_us));
    }
    r
}

pub(crate) fn print(report: &SimReport, json: bool) {
    if json {
        println!("{}", to_json(report));
    } else {
        println!("{}", report.to_text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The scenario's flags reach the simulator's settings, with the defaults the help names.
    #[test]
    fn flags_become_simulator_settings() {
        let cli = crate::Cli::try_parse_from([
            "silt-loadtest",
            "devices",
            "--transport",
            "mqtt",
            "--devices",
            "3",
            "--rate",
            "2.5",
            "--duration",
            "30s",
            "--drop",
            "0.01",
            "--reconnect",
            "0.001",
        ])
        .unwrap();
        let crate::Command::Devices(args) = cli.command else { panic!("not the devices scenario") };
        let device = sim::SimDevice { id: sim::device_id(0), key: [1; 32] };
        let c = args.config(vec![device; 3]);
        assert_eq!(c.transport, Transport::Mqtt);
        assert_eq!(c.bridge, "127.0.0.1:1883");
        assert_eq!(c.rate_per_s, 2.5);
        assert_eq!(c.frames, None);
        assert_eq!(c.duration, Some(Duration::from_secs(30)));
        assert_eq!(c.faults.drop, 0.01);
        assert_eq!(c.faults.reconnect, 0.001);
        c.validate().unwrap();
        assert!(crate::Cli::try_parse_from(["silt-loadtest", "devices", "--transport", "udp"]).is_err());
    }
}
