//! Bridge settings: embedded defaults, then a TOML file, then flags (see `silt-bridge --help`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use silt_wire::message::check_topic_name;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything the bridge needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The broker's QUIC address.
    pub broker: String,
    /// PEM certificate of the broker (its DATA_DIR/tls/cert.pem).
    pub ca_cert: Option<PathBuf>,
    /// File holding the API token the bridge authenticates with.
    pub token_file: Option<PathBuf>,
    /// Client certificate (PEM) and key the bridge authenticates with instead (mTLS; the
    /// broker's `client_ca` must have signed it, and its name needs `device-keys`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// What the bridge authenticates with (from `--token`, `token_file`, or given by the
    /// server binary to its embedded bridge); never read from the file itself.
    #[serde(skip)]
    pub credential: Option<silt_wire::Credential>,
    /// The bridge's own state: its producer id, per-device sequences, the append journal.
    pub data_dir: PathBuf,
    /// Where devices connect with frames over TCP; `None` turns it off.
    pub listen_tcp: Option<SocketAddr>,
    /// MQTT 3.1.1 in clear text; `None` turns it off. Loopback only unless
    /// `mqtt.plain_non_loopback` says otherwise: device keys are MQTT passwords.
    pub listen_mqtt: Option<SocketAddr>,
    /// MQTT 3.1.1 over TLS (`mqtt.tls_cert`, else a certificate the bridge makes in
    /// `DATA_DIR/tls/`); `None` turns it off.
    pub listen_mqtts: Option<SocketAddr>,
    /// HTTP admin: `GET /health`, `GET /metrics`; `None` turns it off.
    pub admin_listen: Option<SocketAddr>,
    /// Endpoints the bridge connects out to and reads frames from, e.g. a QEMU serial socket
    /// (`127.0.0.1:5555`); reconnected after every loss.
    pub connect_tcp: Vec<String>,
    /// Serial devices (a USB adapter, a pty) carrying frames.
    pub serial: Vec<SerialConfig>,
    pub topics: TopicConfig,
    pub mqtt: MqttConfig,
    pub limits: Limits,
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint traces are exported to (e.g. `http://127.0.0.1:4318`); `None`: none.
    pub otlp_endpoint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker: "127.0.0.1:7400".to_string(),
            ca_cert: None,
            token_file: None,
            client_cert: None,
            client_key: None,
            credential: None,
            data_dir: PathBuf::from("silt-bridge-data"),
            listen_tcp: Some(SocketAddr::from(([127, 0, 0, 1], 7410))),
            listen_mqtt: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
            listen_mqtts: Some(SocketAddr::from(([127, 0, 0, 1], 8883))),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7411))),
            connect_tcp: Vec::new(),
            serial: Vec::new(),
            topics: TopicConfig::default(),
            mqtt: MqttConfig::default(),
            limits: Limits::default(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
        }
    }
}

/// One serial line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    pub path: PathBuf,
    /// Baud rate set on real serial ports; ignored by ptys.
    #[serde(default = "default_baud")]
    pub baud: u32,
}

fn default_baud() -> u32 {
    115_200
}

/// Where device readings go.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Topic of each reading: `{kind}` becomes temperature, humidity, numeric or raw, and
    /// `{device}` the device id.
    pub template: String,
    /// Create a missing topic on first use, by a reading or an MQTT publish (with
    /// `partitions` partitions); when false, records for a missing topic wait (and devices are
    /// not acked) until someone creates it.
    pub create: bool,
    pub partitions: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig { template: "sensors.{kind}".to_string(), create: true, partitions: 1 }
    }
}

impl TopicConfig {
    /// The topic of a reading of `kind` from `device`.
    pub fn topic(&self, kind: &str, device: &str) -> String {
        self.template.replace("{kind}", kind).replace("{device}", device)
    }
}

/// MQTT listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Rewrites between MQTT topic names and Silt topics, first match wins; after them, the
    /// default: `a/b/c` is `a.b.c`.
    pub map: Vec<MqttMap>,
    /// Largest PUBLISH payload accepted.
    pub payload_bytes_max: usize,
    /// PEM certificate chain and key of the TLS listener; both or neither. Neither: the bridge
    /// makes a self-signed certificate in `DATA_DIR/tls/` (clients trust its `cert.pem`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Lets the clear-text listener bind a non-loopback address (devices then send their keys
    /// in clear over that network).
    pub plain_non_loopback: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            map: Vec::new(),
            payload_bytes_max: 256 * 1024,
            tls_cert: None,
            tls_key: None,
            plain_non_loopback: false,
        }
    }
}

/// One prefix rewrite: MQTT `{mqtt}rest/of/name` is Silt `{silt}rest.of.name`, both ways.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttMap {
    pub mqtt: String,
    pub silt: String,
}

/// Bounds on what the bridge holds; each is checked where work enters.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open device connections (TCP frames and MQTT together); more are refused.
    pub connections_max: usize,
    /// Frames of one connection submitted and not yet durable; the connection is not read
    /// further until one completes.
    pub in_flight_per_connection_max: usize,
    /// Submissions queued for the appender; producers wait (and so do their devices) when
    /// it is full. Bounds the bridge's memory whatever the broker's speed.
    pub queue_max: usize,
    /// Records appended in one round (one journal flush, one batch per topic partition).
    pub round_records_max: usize,
    /// How long a device's key (or its absence) is cached; a revoke takes effect within this.
    pub key_cache_ms: u64,
    /// A connection with no frame for this long is closed.
    pub idle_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // Sized for the 10,000-device benchmark with room: 20k connections, 16 frames each in
        // flight, and rounds of up to 20k records (a few hundred KB of batches).
        Limits {
            connections_max: 20_000,
            in_flight_per_connection_max: 16,
            queue_max: 16_384,
            round_records_max: 20_000,
            key_cache_ms: 5_000,
            idle_timeout_ms: 120_000,
        }
    }
}

impl Config {
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Checks the values a user can get wrong, with messages that say which one.
    pub fn validate(&self) -> anyhow::Result<()> {
        for kind in ["temperature", "humidity", "numeric", "raw"] {
            // The longest device id is 64 bytes of topic-safe characters.
            let topic = self.topics.topic(kind, &"d".repeat(silt_wire::message::DEVICE_ID_BYTES_MAX));
            if let Err(e) = check_topic_name(&topic) {
                bail!("topics.template {:?} does not make valid topic names: {e}", self.topics.template);
            }
        }
        if self.topics.partitions == 0 {
            bail!("topics.partitions must be at least 1");
        }
        if let Some(addr) = self.listen_mqtt {
            if !addr.ip().is_loopback() && !self.mqtt.plain_non_loopback {
                bail!(
                    "listen_mqtt {addr} is not a loopback address: MQTT in clear text sends device keys in \
                     clear; use listen_mqtts (TLS), or set mqtt.plain_non_loopback = true to allow it"
                );
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            bail!("client_cert and client_key go together: set both or neither");
        }
        if self.mqtt.tls_cert.is_some() != self.mqtt.tls_key.is_some() {
            bail!("mqtt.tls_cert and mqtt.tls_key go together: set both or neither");
        }
        for m in &self.mqtt.map {
            if m.mqtt.contains(['+', '#']) {
                bail!("mqtt.map prefix {:?} must not contain wildcards", m.mqtt);
            }
        }
        let l = &self.limits;
        if l.connections_max == 0 || l.in_flight_per_connection_max == 0 || l.queue_max == 0 {
            bail!("limits must be at least 1");
        }
        if l.round_records_max < silt_frame::READINGS_MAX {
            bail!("limits.round_records_max must be at least {}", silt_frame::READINGS_MAX);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_text_mqtt_stays_on_loopback_unless_allowed() {
        let mut c = Config { listen_mqtt: Some("0.0.0.0:1883".parse().unwrap()), ..Config::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("listen_mqtts") && e.contains("plain_non_loopback"), "{e}");
        c.mqtt.plain_non_loopback = true;
        c.validate().unwrap();
        c.mqtt.tls_cert = Some("cert.pem".into());
        assert!(c.validate().unwrap_err().to_string().contains("tls_key"));
    }

    #[test]
    fn defaults_are_valid_and_templates_are_checked() {
        Config::default().validate().unwrap();
        let mut c = Config::default();
        c.topics.template = "sensors/{kind}".into();
        assert!(c.validate().unwrap_err().to_string().contains("template"));
        let c: Config = toml::from_str("[topics]\ntemplate = \"devices.{device}.{kind}\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.topics.topic("raw", "d-1"), "devices.d-1.raw");
        assert!(toml::from_str::<Config>("typo = 1").is_err());
    }
}
