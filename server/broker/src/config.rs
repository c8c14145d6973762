//! Broker configuration: embedded defaults, then a TOML file, then environment variables and
//! flags (later sources win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use toml::de::DeTable;
use toml::Spanned;

/// When a produce counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Flush before every acknowledgement; concurrent producers share each flush.
    Always,
    /// Acknowledge after the in-memory append; flush every this many milliseconds.
    Every(u64),
    /// Acknowledge after the in-memory append; leave flushing to sled's own background thread.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => match s.strip_prefix("every:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Every(ms)),
                _ => Err(format!("fsync policy {s:?} is not one of: always, never, every:<milliseconds>")),
            },
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub fsync: FsyncPolicy,
    pub log_format: LogFormat,
    /// Extra DNS names or addresses for the self-signed certificate.
    pub tls_names: Vec<String>,
    pub limits: Limits,
    /// Per-principal rates and connections per address.
    pub quotas: crate::quotas::QuotaConfig,
    /// How often retention runs.
    pub retention_check_ms: u64,
    /// sled's page cache, shared out among the topics' databases (each gets an equal share
    /// when it opens, and at least 16 MiB; the metadata database 32 MiB at most).
    pub cache_bytes: u64,
    /// Produces are refused (retriable `DiskFull`) while the data directory's filesystem has
    /// less than this free (`crate::space`). `None`: 5 % of the filesystem, between 4 and 256
    /// MiB; 0: never.
    pub disk_free_min_bytes: Option<u64>,
    /// The background scrub's rate (`crate::scrub`); 0: off.
    pub scrub_bytes_per_s: u64,
    /// Least time between the starts of two scrub passes.
    pub scrub_interval_ms: u64,
    pub processors: ProcessorConfig,
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`) traces are exported to; `None`: none.
    pub otlp_endpoint: Option<String>,
    /// Authentication and its lock-out of failed logins.
    pub auth: crate::auth::AuthConfig,
    /// Authentication off on a non-loopback address is refused unless this is set: only the
    /// configuration file's `auth = "off"` sets it (a flag or variable is not explicit enough).
    pub auth_off_exposed: bool,
    /// `GET /metrics` needs `Authorization: Bearer TOKEN` (a principal that may describe `*`).
    pub metrics_require_token: bool,
    /// PEM certificates of the CAs whose client certificates authenticate connections (mTLS):
    /// a certificate's first DNS name (else its common name) is principal `user:NAME`.
    /// `None`: clients authenticate with tokens or passwords only.
    pub client_ca: Option<PathBuf>,
    /// Cluster membership (`[cluster]`, `--node-id`, `--cluster-listen`, `--peers`); none set:
    /// the broker runs alone.
    pub cluster: crate::cluster::FileCluster,
}

/// Settings of the WebAssembly processor host.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Ed25519 public keys whose signatures are accepted. When empty, unsigned modules are
    /// accepted (a signed module must still carry a valid signature); when not, every module
    /// must be signed by one of them.
    pub trusted_keys: Vec<[u8; 32]>,
    /// Linear memory per processor instance.
    pub memory_bytes_max: usize,
    /// Time per call into a processor (one batch).
    pub call_time_ms_max: u64,
    /// Output bytes one input batch may produce.
    pub output_bytes_max: usize,
    /// Read-time processing instances running or kept between a read's fetches, at most; the
    /// rest of the runtime's instance slots stay for pipelines.
    pub read_time_instances_max: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            trusted_keys: Vec::new(),
            memory_bytes_max: 64 * 1024 * 1024,
            call_time_ms_max: 1000,
            output_bytes_max: silt_wire::batch::BATCH_BYTES_MAX - silt_wire::batch::HEADER_LEN,
            read_time_instances_max: 16,
        }
    }
}

/// The `[processors]` table of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProcessors {
    /// Hex Ed25519 public keys (64 hex digits each), as `silt processor keygen` prints them.
    pub trusted_keys: Option<Vec<String>>,
    pub memory_bytes_max: Option<usize>,
    pub call_time_ms_max: Option<u64>,
    pub output_bytes_max: Option<usize>,
    pub read_time_instances_max: Option<usize>,
}

/// Named maxima, checked at the edge.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open QUIC connections.
    pub connections_max: usize,
    /// Concurrent streams per connection.
    pub streams_per_connection_max: u32,
    /// Largest request frame (a produce carries one batch of at most 8 MiB).
    pub frame_bytes_max: usize,
    /// Largest fetch response payload.
    pub fetch_bytes_max: u32,
    /// Longest long-poll of a fetch.
    pub fetch_wait_ms_max: u32,
    /// Requests read ahead of their responses on one stream (the in-flight window).
    pub pipeline_depth_max: usize,
    /// Members per consumer group.
    pub group_members_max: usize,
    /// Fetch response bytes the broker holds at once, read but not yet taken by their clients:
    /// a fetch waits for its share, so slow readers cannot pin more memory than this.
    pub response_bytes_max: u64,
    /// Request frame bytes the broker holds at once, read but not yet answered (produces
    /// waiting for their append and flush, say): past it, reading requests waits, and QUIC's
    /// flow control holds the clients back. Per connection, and broker-wide.
    pub connection_request_bytes_max: u64,
    pub request_bytes_max: u64,
    /// Fetch response bytes one connection holds at once (within `response_bytes_max`), so
    /// that one connection's slow reads wait on it alone.
    pub connection_response_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 4096,
            streams_per_connection_max: 256,
            frame_bytes_max: silt_wire::batch::BATCH_BYTES_MAX + 64 * 1024,
            fetch_bytes_max: 16 * 1024 * 1024,
            fetch_wait_ms_max: 30_000,
            pipeline_depth_max: 64,
            group_members_max: 1024,
            response_bytes_max: 512 * 1024 * 1024,
            connection_request_bytes_max: 64 * 1024 * 1024,
            request_bytes_max: 512 * 1024 * 1024,
            connection_response_bytes_max: 64 * 1024 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("silt-data"),
            listen: "127.0.0.1:7400".parse().expect("literal"),
            admin_listen: "127.0.0.1:7401".parse().expect("literal"),
            fsync: FsyncPolicy::Always,
            log_format: LogFormat::Text,
            tls_names: Vec::new(),
            limits: Limits::default(),
            quotas: crate::quotas::QuotaConfig::default(),
            retention_check_ms: 10_000,
            cache_bytes: 256 * 1024 * 1024,
            disk_free_min_bytes: None,
            scrub_bytes_per_s: 8 * 1024 * 1024,
            scrub_interval_ms: 3_600_000,
            processors: ProcessorConfig::default(),
            otlp_endpoint: None,
            auth: crate::auth::AuthConfig::default(),
            auth_off_exposed: false,
            metrics_require_token: false,
            client_ca: None,
            cluster: Default::default(),
        }
    }
}

/// The TOML file. Every key is optional; unknown keys are an error so typos do not pass
/// silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub fsync: Option<String>,
    pub log_format: Option<LogFormat>,
    pub tls_names: Option<Vec<String>>,
    pub retention_check_ms: Option<u64>,
    pub cache_bytes: Option<u64>,
    /// Free bytes below which produces are refused; 0 turns the guard off.
    pub disk_free_min_bytes: Option<u64>,
    /// The background scrub's rate, 0 for none, and the least time between two passes.
    pub scrub_bytes_per_s: Option<u64>,
    pub scrub_interval_ms: Option<u64>,
    pub connections_max: Option<usize>,
    pub fetch_bytes_max: Option<u32>,
    pub fetch_wait_ms_max: Option<u32>,
    pub response_bytes_max: Option<u64>,
    /// Request bytes read and not yet answered, per connection and broker-wide.
    pub connection_request_bytes_max: Option<u64>,
    pub request_bytes_max: Option<u64>,
    pub connection_response_bytes_max: Option<u64>,
    /// Per principal, 0 for none: produce and fetch bytes and requests per second.
    pub quota_produce_bytes_per_s: Option<u64>,
    pub quota_fetch_bytes_per_s: Option<u64>,
    pub quota_requests_per_s: Option<u64>,
    /// Open QUIC connections from one source address.
    pub connections_per_address_max: Option<usize>,
    /// Rates of named principals, by principal (`user:NAME`, `device:ID`).
    pub quotas: Option<std::collections::BTreeMap<String, crate::quotas::PrincipalQuota>>,
    pub processors: Option<FileProcessors>,
    pub otlp_endpoint: Option<String>,
    /// `on` (the default) or `off` (loudly; the only way to run without it on a non-loopback
    /// address).
    pub auth: Option<String>,
    /// Failed logins from one address within a minute before it is locked out.
    pub login_failures_max: Option<u32>,
    /// How long a locked-out address waits.
    pub login_lockout_ms: Option<u64>,
    /// Whether `GET /metrics` needs a bearer token.
    pub metrics_require_token: Option<bool>,
    /// CA certificates (PEM) of client certificates.
    pub client_ca: Option<PathBuf>,
    pub cluster: Option<crate::cluster::FileCluster>,
}

impl Config {
    /// Defaults overlaid with the file at `path`.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let document = DeTable::parse(&text).with_context(|| format!("parsing config {}", path.display()))?;
        Config::from_document(document, &text, path)
    }

    /// Defaults overlaid with a parsed TOML document whose source is `text`, read from
    /// `path`. For a binary whose configuration file holds tables of its own besides the
    /// broker's keys: it parses the file, removes its tables and passes the rest here. Errors
    /// point at the line in `text`.
    pub fn from_document(document: Spanned<DeTable<'_>>, text: &str, path: &Path) -> anyhow::Result<Config> {
        let file = FileConfig::deserialize(toml::de::Deserializer::from(document))
            .map_err(|mut e| {
                e.set_input(Some(text));
                e
            })
            .with_context(|| format!("parsing config {}", path.display()))?;
        Config::from_file_config(file, path)
    }

    /// Defaults overlaid with `file`, read from `path` (named in errors).
    fn from_file_config(file: FileConfig, path: &Path) -> anyhow::Result<Config> {
        let mut c = Config::default();
        if let Some(v) = file.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = file.listen {
            c.listen = v;
        }
        if let Some(v) = file.admin_listen {
            c.admin_listen = v;
        }
        if let Some(v) = file.fsync {
            c.fsync =
                v.parse().map_err(anyhow::Error::msg).with_context(|| format!("in {}", path.display()))?;
        }
        if let Some(v) = file.log_format {
            c.log_format = v;
        }
        if let Some(v) = file.tls_names {
            c.tls_names = v;
        }
        if let Some(v) = file.retention_check_ms {
            c.retention_check_ms = v.max(100);
        }
        if let Some(v) = file.cache_bytes {
            c.cache_bytes = v;
        }
        if let Some(v) = file.disk_free_min_bytes {
            c.disk_free_min_bytes = Some(v);
        }
        c.scrub_bytes_per_s = file.scrub_bytes_per_s.unwrap_or(c.scrub_bytes_per_s);
        c.scrub_interval_ms = file.scrub_interval_ms.map_or(c.scrub_interval_ms, |v| v.max(100));
        if let Some(v) = file.connections_max {
            c.limits.connections_max = v.max(1);
        }
        if let Some(v) = file.fetch_bytes_max {
            c.limits.fetch_bytes_max = v.max(64 * 1024);
        }
        if let Some(v) = file.fetch_wait_ms_max {
            c.limits.fetch_wait_ms_max = v;
        }
        let q = &mut c.quotas;
        q.produce_bytes_per_s = file.quota_produce_bytes_per_s.unwrap_or(q.produce_bytes_per_s);
        q.fetch_bytes_per_s = file.quota_fetch_bytes_per_s.unwrap_or(q.fetch_bytes_per_s);
        q.requests_per_s = file.quota_requests_per_s.unwrap_or(q.requests_per_s);
        q.connections_per_address_max =
            file.connections_per_address_max.map_or(q.connections_per_address_max, |v| v.max(1));
        for (principal, quota) in file.quotas.unwrap_or_default() {
            let named =
                ["user:", "device:"].iter().any(|k| principal.strip_prefix(k).is_some_and(|n| !n.is_empty()));
            if !named {
                anyhow::bail!("quotas.{principal:?}: a quota names one principal, user:NAME or device:ID");
            }
            q.principals.insert(principal, quota);
        }
        if let Some(v) = file.response_bytes_max {
            // At least one largest fetch (and one largest batch, which a fetch always returns).
            c.limits.response_bytes_max =
                v.max(u64::from(c.limits.fetch_bytes_max).max(silt_wire::batch::BATCH_BYTES_MAX as u64));
        }
        // At least one largest frame each (quic.rs raises them to that too).
        let frame = c.limits.frame_bytes_max as u64;
        c.limits.connection_request_bytes_max =
            file.connection_request_bytes_max.map_or(c.limits.connection_request_bytes_max, |v| v.max(frame));
        c.limits.request_bytes_max =
            file.request_bytes_max.map_or(c.limits.request_bytes_max, |v| v.max(frame));
        // At least one largest fetch.
        c.limits.connection_response_bytes_max = file
            .connection_response_bytes_max
            .map_or(c.limits.connection_response_bytes_max, |v| v.max(u64::from(c.limits.fetch_bytes_max)));
        if let Some(p) = file.processors {
            if let Some(keys) = p.trusted_keys {
                for k in keys {
                    let key = silt_wire::signature::parse_key_hex(&k).with_context(|| {
                        format!(
                            "in {}: trusted key {k:?} is not 64 hex digits (an Ed25519 public key)",
                            path.display()
                        )
                    })?;
                    c.processors.trusted_keys.push(key);
                }
            }
            if let Some(v) = p.memory_bytes_max {
                c.processors.memory_bytes_max = v.clamp(64 * 1024, 4 << 30);
            }
            if let Some(v) = p.call_time_ms_max {
                c.processors.call_time_ms_max = v.max(1);
            }
            if let Some(v) = p.output_bytes_max {
                c.processors.output_bytes_max = v.clamp(1, ProcessorConfig::default().output_bytes_max);
            }
            if let Some(v) = p.read_time_instances_max {
                // The runtime's pool has 128 slots; pipelines keep at least 64 of them.
                c.processors.read_time_instances_max = v.clamp(1, 64);
            }
        }
        if let Some(v) = file.otlp_endpoint {
            c.otlp_endpoint = Some(v);
        }
        if let Some(v) = file.auth {
            c.set_auth(&v).with_context(|| format!("in {}", path.display()))?;
            c.auth_off_exposed = !c.auth.enabled;
        }
        if let Some(v) = file.login_failures_max {
            c.auth.login_failures_max = v.max(1);
        }
        if let Some(v) = file.login_lockout_ms {
            c.auth.lockout_ms = v;
        }
        if let Some(v) = file.metrics_require_token {
            c.metrics_require_token = v;
        }
        if let Some(v) = file.cluster {
            c.cluster = v;
        }
        if let Some(v) = file.client_ca {
            c.client_ca = Some(v);
        }
        Ok(c)
    }

    /// Applies an `auth` setting: `on` or `off`.
    pub fn set_auth(&mut self, value: &str) -> anyhow::Result<()> {
        self.auth.enabled = match value {
            "on" => true,
            "off" => false,
            other => anyhow::bail!("auth = {other:?} is neither on nor off"),
        };
        Ok(())
    }

    pub fn retention_check(&self) -> Duration {
        Duration::from_millis(self.retention_check_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policies_parse() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!("every:250".parse(), Ok(FsyncPolicy::Every(250)));
        assert!("every:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("silt-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:9000\"\nfsync = \"every:5\"\n").unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.fsync, FsyncPolicy::Every(5));
        assert_eq!(c.admin_listen.port(), 7401);
        std::fs::write(&p, "lissen = \"x\"\n").unwrap();
        assert!(Config::from_file(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A document whose caller removed a table of its own (the server binary's `[bridge]`) is
    /// read like a file: the rest as strictly, and an error points at its line.
    #[test]
    fn quotas_of_named_principals_fall_back_per_rate() {
        use crate::quotas::Rate;
        let path = Path::new("broker.toml");
        let text = "quota_fetch_bytes_per_s = 100\n[quotas.\"user:bulk\"]\nproduce_bytes_per_s = 7\n";
        let c = Config::from_document(DeTable::parse(text).unwrap(), text, path).unwrap();
        assert_eq!(c.quotas.per_s("user:bulk", Rate::ProduceBytes), 7);
        assert_eq!(c.quotas.per_s("user:bulk", Rate::FetchBytes), 100);
        assert_eq!(c.quotas.per_s("user:other", Rate::ProduceBytes), 0);
        for bad in ["[quotas.bulk]\nrequests_per_s = 1\n", "[quotas.\"user:a\"]\nrequests = 1\n"] {
            assert!(Config::from_document(DeTable::parse(bad).unwrap(), bad, path).is_err(), "{bad}");
        }
    }

    #[test]
    fn document_without_the_callers_tables() {
        let path = Path::new("broker.toml");
        let text = "listen = \"127.0.0.1:9000\"\n[bridge]\nlisten_tcp = \"127.0.0.1:9001\"\n";
        let mut document = DeTable::parse(text).unwrap();
        assert!(document.get_mut().remove("bridge").is_some());
        assert_eq!(Config::from_document(document, text, path).unwrap().listen.port(), 9000);
        let text = "fsync = \"always\"\nlissen = 1\n";
        let e = Config::from_document(DeTable::parse(text).unwrap(), text, path).unwrap_err();
        let message = format!("{e:#}");
        assert!(message.contains("line 2") && message.contains("lissen"), "{message}");
        let text = "[bridge]\nlisten_tcp = 1\n";
        assert!(
            Config::from_document(DeTable::parse(text).unwrap(), text, path).is_err(),
            "not the broker's key"
        );
    }
}
