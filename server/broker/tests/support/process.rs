//! A `silt-broker` child process for integration tests: started on loopback with its own
//! temporary directory, killed (SIGKILL) and started again on the same data and ports. Included
//! by path by the broker's and the device bridge's test support, each of which provides
//! `READY_TIMEOUT`, `free_tcp_port` and the `server_bin` module.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::server_bin::broker_bin;
use super::{free_tcp_port, READY_TIMEOUT};

/// Environment variables the broker reads; cleared so the caller's environment cannot leak in.
const BROKER_ENV: [&str; 7] = [
    "SILT_DATA_DIR",
    "SILT_LISTEN",
    "SILT_ADMIN_LISTEN",
    "SILT_CONFIG",
    "SILT_FSYNC",
    "SILT_LOG_FORMAT",
    "SILT_AUTH",
];

/// A loopback UDP port that was free a moment ago (for the QUIC listener).
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding an ephemeral UDP port");
    s.local_addr().expect("local address").port()
}

/// A `silt-broker` child process on loopback, with its own temporary directory. The child is
/// killed when this is dropped, and its log is printed when the test is failing.
pub struct BrokerProcess {
    /// Holds `data/` (the broker's data dir), `broker.log` and any config files.
    pub dir: TempDir,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<OsString>,
    /// A command the broker runs under (`ip netns exec NAME`), if any.
    prefix: Vec<OsString>,
    child: Option<Child>,
}

impl BrokerProcess {
    /// Starts a broker on fresh ports with `--data-dir`, `--listen` and `--admin-listen`, plus
    /// `extra` arguments, and waits until it serves.
    pub async fn start(extra: &[&str]) -> BrokerProcess {
        Self::start_in(tempfile::tempdir().expect("temp dir"), extra).await
    }

    pub async fn start_in(dir: TempDir, extra: &[&str]) -> BrokerProcess {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let data = dir.path().join("data");
        let mut args: Vec<OsString> = vec![
            "--data-dir".into(),
            data.into(),
            "--listen".into(),
            listen.to_string().into(),
            "--admin-listen".into(),
            admin.to_string().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        let mut b = BrokerProcess { dir, listen, admin, args, prefix: Vec::new(), child: None };
        b.spawn();
        b.wait_ready().await;
        b
    }

    /// A broker that will be started with exactly `args`; the caller says where it listens
    /// (for example through a config file in `dir`). Nothing runs until [`Self::spawn`].
    pub fn with_args(
        dir: TempDir,
        listen: SocketAddr,
        admin: SocketAddr,
        args: Vec<OsString>,
    ) -> BrokerProcess {
        BrokerProcess { dir, listen, admin, args, prefix: Vec::new(), child: None }
    }

    /// Runs the broker in the network namespace `name` (`ip netns exec`, which execs the
    /// broker, so the child is the broker itself).
    pub fn in_namespace(mut self, name: &str) -> BrokerProcess {
        self.prefix = ["ip", "netns", "exec", name].map(OsString::from).to_vec();
        self
    }

    /// Changes the arguments and addresses for the next [`Self::spawn`] (the broker must be
    /// stopped).
    pub fn reconfigure(&mut self, listen: SocketAddr, admin: SocketAddr, args: Vec<OsString>) {
        assert!(self.child.is_none(), "stop the broker before changing its arguments");
        (self.listen, self.admin, self.args) = (listen, admin, args);
    }

    /// The data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The certificate the broker wrote on first start.
    pub fn ca_cert(&self) -> PathBuf {
        self.data_dir().join("tls").join("cert.pem")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// Everything the broker processes wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the broker process (again) with the same arguments; its stderr is appended to
    /// `broker.log`.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the previous broker process is still running");
        let log =
            OpenOptions::new().create(true).append(true).open(self.log_path()).expect("opening broker.log");
        let mut cmd = match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(broker_bin());
                cmd
            }
            None => Command::new(broker_bin()),
        };
        cmd.args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for var in BROKER_ENV {
            cmd.env_remove(var);
        }
        self.child = Some(cmd.spawn().expect("spawning silt-broker"));
    }

    /// Waits (bounded) until `GET /health` on the admin port answers `ok`.
    pub async fn wait_ready(&mut self) {
        if let Err(why) = self.try_wait_ready().await {
            panic!("{why}");
        }
    }

    /// Like [`Self::wait_ready`], but a broker that exits during startup (or is not ready in
    /// time) is an `Err` saying so, with its log.
    pub async fn try_wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                self.child = None;
                return Err(format!("silt-broker exited during startup with {status}; log:\n{}", self.log()));
            }
            if health(self.admin).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!("silt-broker not ready within {READY_TIMEOUT:?}; log:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the broker again on the same data dir and ports and waits until it serves.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// The running broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker is running").id()
    }

    /// The broker's exit status, if it has exited (killed by the kernel, say).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// SIGKILL: the process gets no chance to flush or close anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM", within).await
    }

    /// Sends `SIG<name>` (with `kill`) and waits (bounded) for the exit status.
    pub async fn signal(&mut self, name: &str, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("a running broker");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
        self.wait_exit(within).await
    }

    /// Waits (bounded) for the process to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("a running broker");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "silt-broker did not exit within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin token the broker wrote on first start.
    pub fn admin_token(&self) -> String {
        let path = self.data_dir().join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_string()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- silt-broker log ({}) ---\n{}", self.log_path().display(), self.log());
        }
    }
}

/// One `GET /health` over plain TCP; true when it answered `ok`.
pub async fn health(admin: SocketAddr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        Some(text.starts_with("HTTP/1.1 200") && text.ends_with("ok\n"))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}
