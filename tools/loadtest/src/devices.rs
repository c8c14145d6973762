//! `silt-loadtest devices`: a fleet of simulated devices (`silt-devsim`) sending readings
//! through a running bridge, over TCP frames or MQTT QoS 1. Reports acked frames per second and
//! the latency from each frame's first send to its durable ack (p50, p90, p99, p99.9, max).
//!
//! The devices `sim-<first>`.. are registered in the broker's registry (or their keys fetched),
//! every device connects and says hello, and all start together once connected; the run ends
//! when every generated reading is acked, and fails if that does not happen within --timeout.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use silt_devsim::cli::{FleetArgs, Load};
use silt_devsim::{SimDevice, SimError, SimReport, Transport};

use crate::stats::Report;
use crate::targets::Kind;

#[derive(Debug, Args)]
pub(crate) struct DevicesArgs {
    /// `silt`: devices go through a Silt device bridge (registered in the broker's device
    /// registry first). `mqtt`: they publish to a plain MQTT broker instead (--transport mqtt,
    /// no registration; credentials are sent and may be ignored), to compare the two.
    #[arg(long, default_value = "silt", value_name = "silt|mqtt")]
    pub(crate) target: crate::targets::Kind,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
    /// Simulated devices, each on its own connection.
    #[arg(long, default_value_t = 100)]
    devices: u32,
    /// Frames per second per device; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 0.0, value_name = "FRAMES_PER_S")]
    rate: f64,
    /// Frames per device (default 1000 when --duration is not given).
    #[arg(long)]
    frames: Option<u64>,
    /// Seed of the fault plan and jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write an SVG plot of the frame-to-ack latency percentiles to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PathBuf>,
}

impl DevicesArgs {
    fn load(&self) -> Load {
        Load { rate_per_s: self.rate, frames: self.frames, frames_default: 1000, seed: self.seed }
    }
}

/// Runs the fleet; an incomplete run is an error (after its report is printed).
pub(crate) async fn run(args: &DevicesArgs) -> anyhow::Result<SimReport> {
    silt_devsim::raise_open_files_limit();
    let devices = match args.target {
        Kind::Silt => args.fleet.register(args.devices).await?,
        Kind::Mqtt if args.fleet.transport == Transport::Mqtt => {
            let first = args.fleet.first;
            (first..first + args.devices)
                .map(|i| SimDevice { id: silt_devsim::device_id(i), key: [0; 32] })
                .collect()
        }
        Kind::Mqtt => anyhow::bail!("--target mqtt needs --transport mqtt"),
        Kind::Nats => anyhow::bail!("device fleets run against a Silt bridge or an MQTT broker, not NATS"),
    };
    let config = args.fleet.config(devices, args.load());
    config.validate()?;
    let result = silt_devsim::cli::run_with_progress(config).await;
    match result {
        Ok(report) => Ok(report),
        Err(SimError::Incomplete(report)) => {
            let message = SimError::Incomplete(report.clone()).to_string();
            print(&report, args.fleet.json);
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
    let elapsed = Duration::from_secs_f64(sim.seconds);
    let mut r = Report::new("devices", sim.counters.acked, 0.0, elapsed, &sim.latencies);
    r.target = label.to_string();
    r.events_per_sec = sim.frames_per_s;
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
        let device = SimDevice { id: silt_devsim::device_id(0), key: [1; 32] };
        let c = args.fleet.config(vec![device; 3], args.load());
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
