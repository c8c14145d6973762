//! `silt-broker` (package `silt-server`): the composition root of the Silt server. It starts
//! the broker library (`silt_broker::start`) and, with a `[bridge]` table in its configuration
//! file, a device bridge in the same process as a client of it (`serve`, `config`);
//! `silt-broker demo` runs the whole system on loopback with simulated sensors (`demo`).
//!
//! Deliberately absent: request handling, storage, processors and the device protocol. Those
//! are the libraries this binary joins; here are only arguments, configuration, signals and
//! the demo's view. The `silt` client links none of this: its `silt demo` runs this binary.

mod check;
mod cluster_init;
mod config;
mod demo;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use silt_broker::config::{FsyncPolicy, LogFormat};

use crate::config::ServerConfig;

/// The Silt broker: a durable, replayable event log for sensor data, served over QUIC.
///
/// With no arguments it starts on embedded defaults: data in ./silt-data, QUIC on
/// 127.0.0.1:7400, HTTP admin (GET /health) on 127.0.0.1:7401. On first start it writes a
/// self-signed certificate to DATA_DIR/tls/cert.pem; clients trust it with --ca-cert. With
/// authentication on (the default), it also makes a user `admin` with every right and writes
/// its token to DATA_DIR/admin.token (mode 0600); `silt` run in the same directory finds it.
///
/// Settings come from the embedded defaults, then --config FILE (TOML), then environment
/// variables and flags. A `[bridge]` table in the file (the keys of `silt-bridge --config`
/// files) runs a device bridge in this process too, as a client of this broker, with its
/// journal in DATA_DIR/bridge unless the table says otherwise.
///
/// `silt-broker demo` runs the whole system on loopback with simulated sensors instead (see
/// `silt-broker demo --help`; `silt demo` runs it). `silt-broker check` verifies a stopped
/// broker's data directory.
///
/// Several brokers make a cluster that replicates each partition on a Raft group (openraft):
/// `silt-broker cluster-init DIR --nodes 3` prepares their data directories, then each starts
/// with --node-id, --cluster-listen and the same --peers (scripts/cluster-local.sh does it all
/// on loopback).
///
/// Exit codes: 0 after a clean shutdown on SIGINT or SIGTERM; 1 when startup or the final
/// flush fails (the message says why); 2 for bad command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "silt-broker", version, args_conflicts_with_subcommands = true)]
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
    /// Authentication: on (the default) or off (every client may do anything; refused on a
    /// non-loopback address unless the configuration file says `auth = "off"`).
    #[arg(long, env = "SILT_AUTH", value_name = "on|off")]
    auth: Option<String>,
    /// Export OpenTelemetry traces over OTLP/HTTP to this endpoint (e.g.
    /// http://127.0.0.1:4318): spans of appends and processor calls, children of the trace
    /// context that records carry in their `traceparent` header.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// This broker's id in its cluster (1 or more). With --peers it joins the cluster instead
    /// of running alone; its certificates are in DATA_DIR/cluster/ (`silt-broker cluster-init`
    /// makes them) unless the [cluster] table names others.
    #[arg(long, env = "SILT_NODE_ID", value_name = "N")]
    node_id: Option<u64>,
    /// Where other brokers reach this one (QUIC with mutual TLS); default: this broker's
    /// address in --peers.
    #[arg(long, env = "SILT_CLUSTER_LISTEN", value_name = "HOST:PORT")]
    cluster_listen: Option<SocketAddr>,
    /// The cluster's initial members, ID@HOST:PORT (cluster addresses) separated by commas:
    /// the same list on every broker; the cluster forms once most of them are up.
    #[arg(long, env = "SILT_PEERS", value_name = "ID@HOST:PORT,...")]
    peers: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    // Their help is the args' doc comment (a variant's would replace the long help).
    Demo(demo::DemoArgs),
    Check(check::CheckArgs),
    ClusterInit(cluster_init::ClusterInitArgs),
}

/// glibc's malloc raises its mmap threshold to the largest block freed (up to 32 MiB); from
/// then on blocks of several MiB (processor outputs of up to 8 MiB, fetch buffers) come from
/// per-thread arenas, which keep them once freed. Under server/broker/tests/hostile_load.rs
/// that held hundreds of MiB more in the broker's dozens of blocking threads, and the kernel
/// killed it inside its 1 GiB cgroup. A fixed threshold returns such blocks to the kernel when
/// they are freed; smaller ones stay in the arenas as before.
fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; it runs before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Raises the limit of open files to the hard limit (often 1,024 against 524,288 under
/// systemd): each partition keeps its batch file open for appends and up to four for reads,
/// besides sled's files and every connection's socket.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn main() -> ExitCode {
    return_large_blocks();
    raise_open_files_limit();
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::Demo(demo)) => return demo::main(demo),
        Some(Command::Check(check)) => return check::main(check),
        Some(Command::ClusterInit(init)) => return cluster_init::main(init),
        None => {}
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    let broker = &mut config.broker;
    if let Some(v) = args.data_dir {
        broker.data_dir = v;
    }
    if let Some(v) = args.listen {
        broker.listen = v;
    }
    if let Some(v) = args.admin_listen {
        broker.admin_listen = v;
    }
    if let Some(v) = args.fsync {
        broker.fsync = v;
    }
    if let Some(v) = args.log_format {
        broker.log_format = v;
    }
    if let Some(v) = args.auth {
        broker.set_auth(&v)?;
        if broker.auth.enabled {
            broker.auth_off_exposed = false;
        }
    }
    if let Some(v) = args.otlp_endpoint {
        broker.otlp_endpoint = Some(v);
    }
    if let Some(v) = args.node_id {
        broker.cluster.node_id = Some(v);
    }
    if let Some(v) = args.cluster_listen {
        broker.cluster.listen = Some(v);
    }
    if let Some(v) = args.peers {
        broker.cluster.peers = Some(v);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The OTLP exporter's batch processor needs no runtime, but its guard flushes on drop,
    // after the broker stopped.
    let _telemetry = silt_telemetry::init(
        "silt-broker",
        broker.log_format == LogFormat::Json,
        broker.otlp_endpoint.as_deref(),
    )?;
    let result = runtime.block_on(serve::run(config));
    // A blocking task can outlive the broker: a sled flush that never returns after a disk
    // error. Dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}
