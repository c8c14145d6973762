//! `silt-bridge`: see `silt-bridge --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use silt_bridge::config::{Config, LogFormat, SerialConfig};

/// The Silt device bridge: MCU frames over TCP and serial lines, and MQTT 3.1.1, into the
/// broker's log, exactly once.
///
/// Devices are registered with `silt device add <id>` (the registry lives in the broker). A
/// frame is acknowledged only after its readings are durable in the broker; MQTT QoS 1
/// publishes get their PUBACK then too. With no arguments it listens for frames on
/// 127.0.0.1:7410, MQTT on 127.0.0.1:1883 and admin HTTP on 127.0.0.1:7411, and talks to the
/// broker at 127.0.0.1:7400 (trusting ./silt-data/tls/cert.pem when it exists).
///
/// Settings: embedded defaults, then --config FILE (TOML, see the README), then environment
/// variables and flags. A listener address of `off` turns that listener off.
///
/// Exit codes: 0 after SIGINT or SIGTERM; 1 when startup fails (the message says why) or the
/// bridge's journal fails; 2 for bad command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "silt-bridge", version)]
struct Args {
    /// Broker QUIC address; several, comma-separated, are tried in order until one answers.
    #[arg(long, env = "SILT_BROKER", value_name = "HOST:PORT")]
    broker: Option<String>,
    /// PEM certificate to trust (the broker's DATA_DIR/tls/cert.pem).
    #[arg(long, env = "SILT_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// API token to authenticate to the broker with (needs device-keys on devices, produce
    /// and create-topic on the topics devices write, consume on those they subscribe to).
    /// Default: --token-file, else ./silt-data/admin.token when it exists.
    #[arg(long, env = "SILT_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token.
    #[arg(long, env = "SILT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Client certificate (PEM) to authenticate with instead of a token (mTLS); needs
    /// --client-key, and the broker's client_ca must have signed it.
    #[arg(long, env = "SILT_CLIENT_CERT", value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "SILT_CLIENT_KEY", value_name = "FILE")]
    client_key: Option<PathBuf>,
    /// The bridge's own state (producer id, device sequences, append journal).
    #[arg(long, env = "SILT_BRIDGE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where devices connect with frames over TCP (`off` to disable).
    #[arg(long, value_name = "HOST:PORT|off", value_parser = parse_listen)]
    listen_tcp: Option<Listen>,
    /// MQTT 3.1.1 in clear text (`off` to disable); loopback only unless the config file sets
    /// mqtt.plain_non_loopback.
    #[arg(long, value_name = "HOST:PORT|off", value_parser = parse_listen)]
    listen_mqtt: Option<Listen>,
    /// MQTT 3.1.1 over TLS (`off` to disable); its certificate is mqtt.tls_cert in the config
    /// file, else one the bridge makes in DATA_DIR/tls/cert.pem.
    #[arg(long, value_name = "HOST:PORT|off", value_parser = parse_listen)]
    listen_mqtts: Option<Listen>,
    /// HTTP admin: GET /health and GET /metrics (`off` to disable).
    #[arg(long, value_name = "HOST:PORT|off", value_parser = parse_listen)]
    admin_listen: Option<Listen>,
    /// Connect out to a listening frame endpoint, such as a QEMU serial socket; repeatable.
    /// Reconnects after every loss.
    #[arg(long, value_name = "HOST:PORT")]
    connect_tcp: Vec<String>,
    /// Read frames from a serial device (e.g. /dev/ttyUSB0 or a pty) at 115200 baud;
    /// repeatable. Use the config file for other baud rates.
    #[arg(long, value_name = "PATH")]
    serial: Vec<PathBuf>,
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SILT_BRIDGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "SILT_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Export OpenTelemetry traces over OTLP/HTTP to this endpoint (e.g.
    /// http://127.0.0.1:4318): a span per frame or publish until it is durable, whose context
    /// its records carry in a `traceparent` header to the broker, processors and consumers.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse().map(|a| Listen(Some(a))).map_err(|e| format!("{e}: expected HOST:PORT or off"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt-bridge: {e:#}");
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
    if let Some(v) = args.broker {
        config.broker = v;
    }
    if let Some(v) = args.ca_cert {
        config.ca_cert = Some(v);
    }
    if config.ca_cert.is_none() {
        let default = PathBuf::from("silt-data/tls/cert.pem");
        config.ca_cert = default.exists().then_some(default);
    }
    if let Some(v) = args.token_file {
        config.token_file = Some(v);
    }
    if let Some(v) = args.client_cert {
        config.client_cert = Some(v);
    }
    if let Some(v) = args.client_key {
        config.client_key = Some(v);
    }
    config.credential = silt_client::token_credential(args.token.as_deref(), config.token_file.as_deref())?;
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(Listen(v)) = args.listen_tcp {
        config.listen_tcp = v;
    }
    if let Some(Listen(v)) = args.listen_mqtt {
        config.listen_mqtt = v;
    }
    if let Some(Listen(v)) = args.listen_mqtts {
        config.listen_mqtts = v;
    }
    if let Some(Listen(v)) = args.admin_listen {
        config.admin_listen = v;
    }
    config.connect_tcp.extend(args.connect_tcp);
    config.serial.extend(args.serial.into_iter().map(|path| SerialConfig { path, baud: 115_200 }));
    if let Some(v) = args.log_format {
        config.log_format = v;
    }
    if let Some(v) = args.otlp_endpoint {
        config.otlp_endpoint = Some(v);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _telemetry = silt_telemetry::init(
        "silt-bridge",
        config.log_format == LogFormat::Json,
        config.otlp_endpoint.as_deref(),
    )?;
    runtime.block_on(silt_bridge::run(config))
}
