//! `silt-devsim`: simulated devices for the Silt bridge; see `silt-devsim --help`.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::Parser;
use silt_devsim::cli::{FleetArgs, Load};
use silt_devsim::SimError;

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
    #[command(flatten)]
    fleet: FleetArgs,
    /// Simulated devices, each on its own connection.
    #[arg(long, default_value_t = 10)]
    devices: u32,
    /// Frames per second per device; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 1.0, value_name = "FRAMES_PER_S")]
    rate: f64,
    /// Frames per device (default 10 when --duration is not given).
    #[arg(long, value_name = "N")]
    frames: Option<u64>,
    /// Seed of the fault plan and the devices' jitter (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = run(Args::parse()).await;
    result.map_or_else(
        |e| {
            eprintln!("silt-devsim: {e:#}");
            ExitCode::FAILURE
        },
        |()| ExitCode::SUCCESS,
    )
}

async fn run(args: Args) -> anyhow::Result<()> {
    let files = silt_devsim::raise_open_files_limit();
    if files.is_some_and(|files| files < u64::from(args.devices) + 64) {
        let files = files.unwrap_or_default();
        eprintln!(
            "silt-devsim: warning: {} devices need more than the {files} open files this process may have \
             (raise the hard limit: ulimit -Hn)",
            args.devices
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        silt_wire::time::unix_ms(SystemTime::now()) as u64 ^ u64::from(std::process::id())
    });
    eprintln!("silt-devsim: seed {seed} (replay the fault plan with --seed {seed})");
    let devices = tokio::time::timeout(args.fleet.timeout, args.fleet.register(args.devices))
        .await
        .context("registering the devices took longer than --timeout")??;
    let load = Load { rate_per_s: args.rate, frames: args.frames, frames_default: 10, seed };
    let config = args.fleet.config(devices, load);
    config.validate()?;

    let result = silt_devsim::cli::run_with_progress(config).await;
    let (report, failure) = match result {
        Ok(report) => (report, None),
        Err(SimError::Incomplete(report)) => {
            let message = SimError::Incomplete(report.clone()).to_string();
            (*report, Some(message))
        }
        Err(e) => return Err(e.into()),
    };
    if args.fleet.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_text());
    }
    match failure {
        Some(message) => anyhow::bail!("{message}"),
        None => Ok(()),
    }
}
