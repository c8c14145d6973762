//! Servers the harness starts itself (`--start`): a release `silt-broker` (from next to this
//! binary), Debian's `nats-server` with JetStream, and `mosquitto`, each on free loopback
//! ports with its data in a temp dir that goes when the server does.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::targets::{Kind, Target};

/// How a started Silt broker acknowledges produces (its `--fsync`).
pub const DEFAULT_SILT_FSYNC: &str = "always";

pub struct Server {
    target: Target,
    program: PathBuf,
    args: Vec<String>,
    /// Where its data and its log live.
    dir: tempfile::TempDir,
    /// A port to wait for before the server counts as up.
    ready: String,
    child: Option<Child>,
    /// The embedded bridge's frame (TCP) and MQTT listeners, when started with one.
    bridge: Option<(String, String)>,
}

fn free_port() -> anyhow::Result<u16> {
    // A port free for TCP and UDP alike (QUIC listens on UDP).
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port")
}

/// `name` on the PATH or, for our own binaries, next to this one.
fn program(name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(me) = std::env::current_exe() {
        let sibling = me.with_file_name(name);
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    for dir in
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default()
    {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    for dir in ["/usr/sbin", "/usr/bin"] {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let hint = match name {
        "silt-broker" => "build it: cargo build --release -p silt-server",
        "nats-server" => "install Debian's package: apt-get install nats-server",
        _ => "install Debian's package: apt-get install mosquitto",
    };
    bail!("{name} not found ({hint})")
}

impl Server {
    /// Starts a server of `kind` and waits until it accepts connections. `silt_fsync` is the
    /// `--fsync` policy of a Silt broker.
    pub async fn start(kind: Kind, label: &str, silt_fsync: &str) -> anyhow::Result<Server> {
        Server::start_with(kind, label, silt_fsync, false).await
    }

    /// As [`Server::start`]; with `bridge`, a Silt broker embeds a device bridge (its `[bridge]`
    /// config table) listening for frames and MQTT on free ports ([`Server::bridge`]).
    pub async fn start_with(
        kind: Kind,
        label: &str,
        silt_fsync: &str,
        bridge: bool,
    ) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new().prefix(&format!("silt-loadtest-{kind}-")).tempdir()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let d = dir.path().display().to_string();
        let mut bridge_addrs = None;
        let (program, args, ready, ca_cert) = match kind {
            Kind::Silt => {
                let admin = format!("127.0.0.1:{}", free_port()?);
                let mut args = vec![
                    "--data-dir".into(),
                    format!("{d}/data"),
                    "--listen".into(),
                    addr.clone(),
                    "--admin-listen".into(),
                    admin.clone(),
                    "--fsync".into(),
                    silt_fsync.into(),
                ];
                if bridge {
                    let (tcp, mqtt) =
                        (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?));
                    let conf = dir.path().join("silt-broker.toml");
                    std::fs::write(
                        &conf,
                        format!(
                            "[bridge]\nlisten_tcp = \"{tcp}\"\nlisten_mqtt = \"{mqtt}\"\nlisten_mqtts = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n",
                            free_port()?,
                            free_port()?
                        ),
                    )?;
                    args.extend(["--config".into(), conf.display().to_string()]);
                    bridge_addrs = Some((tcp, mqtt));
                }
                (program("silt-broker")?, args, admin, Some(dir.path().join("data/tls/cert.pem")))
            }
            Kind::Nats => {
                let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd", &format!("{d}/nats")]
                    .map(String::from)
                    .to_vec();
                (program("nats-server")?, args, addr.clone(), None)
            }
            Kind::Mqtt => {
                let conf = dir.path().join("mosquitto.conf");
                std::fs::create_dir_all(dir.path().join("mosquitto"))?;
                // Unbounded in-flight and queued messages per client: with mosquitto's defaults
                // (20 and 1000) a subscriber that falls behind loses QoS 1 messages. Stays root
                // when run as root, so it can write to the temp dir.
                std::fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                         persistence_location {d}/mosquitto/\nmax_inflight_messages 0\n\
                         max_queued_messages 0\nset_tcp_nodelay true\nuser root\nlog_dest stderr\n"
                    ),
                )?;
                (program("mosquitto")?, vec!["-c".into(), conf.display().to_string()], addr.clone(), None)
            }
        };
        // A broker started here writes its admin token beside its certificate.
        let token_file = ca_cert.as_ref().map(|_| dir.path().join("data/admin.token"));
        let target = Target { kind, label: label.to_string(), addr, ca_cert, token: None, token_file };
        let mut server = Server { target, program, args, dir, ready, child: None, bridge: bridge_addrs };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = TcpStream::connect(&self.ready).is_ok()
                && self.target.ca_cert.as_ref().is_none_or(|c| c.is_file());
            if up {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{} exited with {status} at start: {}", self.program.display(), self.log_tail());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} did not start within 30 s: {}", self.program.display(), self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// The embedded bridge's frame and MQTT listeners (see [`Server::start_with`]).
    pub fn bridge(&self) -> Option<&(String, String)> {
        self.bridge.as_ref()
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = child.id() {
            // SAFETY: signalling a child process this harness started and has not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// Stops and starts the server on the same data and ports: what it serves next comes from
    /// its files, not from what the writes left in its memory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.spawn().await
    }
}
