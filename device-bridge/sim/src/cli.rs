//! The flags that `silt-devsim` and `silt-loadtest devices` share (flattened into both), and
//! how they become a [`SimConfig`]. The device count, the rate, the default frame count and
//! the seed stay with each tool: their defaults differ (a try-out against a load test).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use silt_client::{Client, ClientConfig};

use crate::{
    provision, FaultPlan, Progress, SimConfig, SimDevice, SimError, SimReport, Transport, CONNECT_CONCURRENCY,
};

/// Registration requests in flight at once while provisioning a fleet.
const PROVISION_CONCURRENCY: usize = 64;

/// Where the fleet goes, how each device sends, which faults it suffers, and the run's bounds.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Broker QUIC address, for registering the devices.
    #[arg(long, env = "SILT_BROKER", default_value = "127.0.0.1:7400", value_name = "HOST:PORT")]
    pub broker: String,
    /// The broker's certificate (its DATA_DIR/tls/cert.pem).
    #[arg(long, env = "SILT_CA_CERT", default_value = "silt-data/tls/cert.pem", value_name = "FILE")]
    pub ca_cert: PathBuf,
    /// API token for registering devices (needs manage-devices and device-keys on
    /// `device:sim-*`). Default: --token-file, else ./silt-data/admin.token when it exists.
    #[arg(long, env = "SILT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token.
    #[arg(long, env = "SILT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The bridge's frame listener (tcp, default 127.0.0.1:7410) or MQTT listener (mqtt,
    /// default 127.0.0.1:1883).
    #[arg(long, value_name = "HOST:PORT")]
    pub bridge: Option<String>,
    /// How devices talk to the bridge: `tcp` (silt frames) or `mqtt` (MQTT 3.1.1, QoS 1).
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// Index of the first device: ids are sim-<index>, five digits.
    #[arg(long, default_value_t = 0)]
    pub first: u32,
    /// Generate frames for this long (e.g. 30s, 2m), then wait for the last acks.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Frames in flight per device (sent, not yet acked).
    #[arg(long, default_value_t = 8)]
    pub window: u32,
    /// A device resends what is unacked when its ack has not moved for this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub ack_timeout: Duration,
    /// Readings per frame (1 to 16): temperature, humidity, then numeric channels. MQTT
    /// publishes carry one temperature each.
    #[arg(long, default_value_t = 2)]
    pub readings: u8,
    #[command(flatten)]
    pub faults: FaultPlan,
    /// Bound on the whole run: provisioning, connecting, sending, waiting for acks.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = CONNECT_CONCURRENCY)]
    pub connect_concurrency: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How much each device sends, where the tools' defaults differ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Frames per second per device; 0 sends as fast as the window allows.
    pub rate_per_s: f64,
    /// Frames per device, if given.
    pub frames: Option<u64>,
    /// Frames per device when neither a count nor a duration is given.
    pub frames_default: u64,
    pub seed: u64,
}

impl FleetArgs {
    /// Registers `count` devices from `--first` with the broker's registry (or fetches the
    /// keys of those that exist).
    pub async fn register(&self, count: u32) -> Result<Vec<SimDevice>, SimError> {
        let connect = |source| SimError::Connect { broker: self.broker.clone(), source };
        let credential = silt_client::token_credential(self.token.as_deref(), self.token_file.as_deref())
            .map_err(connect)?;
        let config = ClientConfig::new(self.broker.clone(), &self.ca_cert).map_err(connect)?;
        let client = Client::connect(config.with_credential(credential)).await.map_err(connect)?;
        let devices = provision(&client, self.first, count, PROVISION_CONCURRENCY).await;
        client.close().await;
        devices
    }

    /// The settings of a run of `devices` sending `load`.
    pub fn config(&self, devices: Vec<SimDevice>, load: Load) -> SimConfig {
        let bridge = self.bridge.clone().unwrap_or_else(|| self.transport.default_bridge().to_string());
        let mut config = SimConfig::new(bridge, self.transport, devices);
        config.rate_per_s = load.rate_per_s;
        config.frames = load.frames.or(self.duration.is_none().then_some(load.frames_default));
        config.duration = self.duration;
        config.window = self.window;
        config.ack_timeout = self.ack_timeout;
        config.readings = self.readings;
        config.faults = self.faults;
        config.seed = load.seed;
        config.timeout = self.timeout;
        config.connect_concurrency = self.connect_concurrency;
        config
    }
}

/// Runs the fleet ([`crate::run`]) with a progress bar on stderr when it is a terminal:
/// devices connected, then frames acked and devices done.
pub async fn run_with_progress(config: SimConfig) -> Result<SimReport, SimError> {
    let n = config.devices.len() as u64;
    let visible = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(n), target);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} devices done, {msg} ({elapsed})")
            .expect("template"),
    );
    let progress = Arc::new(Progress::default());
    let ticker = {
        let (progress, bar) = (progress.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                let connected = progress.connected.load(Ordering::Relaxed);
                if connected < n {
                    bar.set_message(format!("connected {connected}/{n}"));
                } else {
                    bar.set_message(format!(
                        "acked {}/{} frames",
                        progress.acked.load(Ordering::Relaxed),
                        progress.generated.load(Ordering::Relaxed),
                    ));
                }
                bar.set_position(progress.finished.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let result = crate::run(config, progress).await;
    ticker.abort();
    bar.finish_and_clear();
    result
}

/// `250ms`, `30s`, `2m`, `1h 30m` (anything `humantime` reads), or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(seconds) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?}: {e}; expected a duration such as 500ms, 30s or 2m"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        fleet: FleetArgs,
    }

    /// Durations parse with the units the help names, and nonsense is refused.
    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("").is_err());
    }

    /// The flags reach the settings, a duration alone means no frame count, and the transport
    /// names its default bridge.
    #[test]
    fn flags_become_settings() {
        let load = Load { rate_per_s: 2.5, frames: None, frames_default: 10, seed: 7 };
        let device = SimDevice { id: crate::device_id(0), key: [1; 32] };
        let cli =
            Cli::try_parse_from(["t", "--transport", "mqtt", "--drop", "0.01", "--ack-timeout", "500ms"])
                .unwrap();
        let c = cli.fleet.config(vec![device.clone()], load);
        assert_eq!((c.transport, c.bridge.as_str()), (Transport::Mqtt, "127.0.0.1:1883"));
        assert_eq!((c.frames, c.duration, c.rate_per_s, c.seed), (Some(10), None, 2.5, 7));
        assert_eq!((c.faults.drop, c.ack_timeout), (0.01, Duration::from_millis(500)));
        let cli = Cli::try_parse_from(["t", "--duration", "30s", "--bridge", "10.0.0.1:9"]).unwrap();
        let c = cli.fleet.config(vec![device], load);
        assert_eq!((c.frames, c.duration), (None, Some(Duration::from_secs(30))));
        assert_eq!((c.transport, c.bridge.as_str()), (Transport::Tcp, "10.0.0.1:9"));
        assert!(Cli::try_parse_from(["t", "--transport", "udp"]).is_err());
    }
}
