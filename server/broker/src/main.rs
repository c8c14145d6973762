//! `silt-broker`: see `silt-broker --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use silt_broker::config::{Config, FsyncPolicy, LogFormat};

/// The Silt broker: a durable, replayable event log for sensor data, served over QUIC.
///
/// With no arguments it starts on embedded defaults: data in ./silt-data, QUIC on
/// 127.0.0.1:7400, HTTP admin (GET /health) on 127.0.0.1:7401. On first start it writes a
/// self-signed certificate to DATA_DIR/tls/cert.pem; clients trust it with --ca-cert.
///
/// Settings come from the embedded defaults, then --config FILE (TOML), then environment
/// variables and flags.
///
/// Exit codes: 0 after a clean shutdown on SIGINT or SIGTERM; 1 when startup or the final
/// flush fails (the message says why); 2 for bad command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "silt-broker", version)]
struct Args {
    /// Directory for the log, metadata and TLS identity.
    #[arg(long, env = "SILT_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// QUIC (UDP) address clients connect to.
    #[arg(long, env = "SILT_LISTEN", value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// HTTP admin address (GET /health).
    #[arg(long, env = "SILT_ADMIN_LISTEN", value_name = "HOST:PORT")]
    admin_listen: Option<SocketAddr>,
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SILT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// When a produce is acknowledged: always (flush before ack, shared by concurrent
    /// producers), every:<ms> (ack at once, flush periodically), never (leave it to sled).
    #[arg(long, env = "SILT_FSYNC", value_name = "POLICY")]
    fsync: Option<FsyncPolicy>,
    /// Log format.
    #[arg(long, env = "SILT_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Export OpenTelemetry traces over OTLP/HTTP to this endpoint (e.g.
    /// http://127.0.0.1:4318): spans of appends and processor calls, children of the trace
    /// context that records carry in their `traceparent` header.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.admin_listen {
        config.admin_listen = v;
    }
    if let Some(v) = args.fsync {
        config.fsync = v;
    }
    if let Some(v) = args.log_format {
        config.log_format = v;
    }
    if let Some(v) = args.otlp_endpoint {
        config.otlp_endpoint = Some(v);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The OTLP exporter's batch processor needs no runtime, but its guard flushes on drop,
    // after the broker stopped.
    let _telemetry = silt_telemetry::init(
        "silt-broker",
        config.log_format == LogFormat::Json,
        config.otlp_endpoint.as_deref(),
    )?;
    runtime.block_on(silt_broker::run(config))
}
