//! A broker started in this test process (`silt_broker::start` on port 0) and a runner for the
//! real `silt` binary with a bounded wait. Each test crate uses a different part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use silt_broker::config::Config;
use silt_broker::Running;
use tempfile::TempDir;

/// Bound on one `silt` run. Commands here finish in well under a second; connecting to an
/// address where nothing listens takes the client's 5 s connect timeout.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// A broker serving on an ephemeral loopback port from its own runtime; shut down on drop.
pub struct Broker {
    /// Holds `silt-data/` (the data dir) and whatever files a test writes.
    pub dir: TempDir,
    pub listen: std::net::SocketAddr,
    pub ca_cert: PathBuf,
    running: Option<Running>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Broker {
    /// Starts a broker whose data dir is `DIR/silt-data`, the place `silt` looks for a
    /// certificate by default when run in `DIR`.
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            data_dir: dir.path().join("silt-data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("broker runtime");
        let running = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(20), silt_broker::start(config)).await
            })
            .expect("broker start timed out")
            .expect("starting the broker");
        Broker {
            listen: running.listen,
            ca_cert: running.ca_cert.clone(),
            dir,
            running: Some(running),
            runtime: Some(runtime),
        }
    }

    /// A `silt` command pointed at this broker, run in the broker's directory, with the
    /// environment variables it reads cleared.
    pub fn silt(&self, args: &[&str]) -> Silt {
        let mut cmd = silt_command(self.dir.path());
        cmd.arg("--broker").arg(self.listen.to_string()).arg("--ca-cert").arg(&self.ca_cert).args(args);
        Silt::new(cmd)
    }

    /// Writes `text` to `name` in the broker's directory and returns the path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("writing a test file");
        p
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let (Some(running), Some(runtime)) = (self.running.take(), self.runtime.take()) {
            let _ = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), running.shutdown()).await });
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// `silt` with no broker flags, run in `dir`, ignoring the caller's `SILT_*` variables.
pub fn silt_command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_silt"));
    cmd.current_dir(dir)
        .env_remove("SILT_BROKER")
        .env_remove("SILT_CA_CERT")
        .env_remove("SILT_BROKER_BIN")
        .env_remove("SILT_TOKEN")
        .env_remove("SILT_TOKEN_FILE");
    cmd
}

/// A `silt` invocation being prepared.
pub struct Silt {
    pub cmd: Command,
    stdin: Vec<u8>,
}

/// What a finished `silt` run produced.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Asserts exit 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.status.code(), Some(0), "silt failed: {self:?}");
        &self.stdout
    }

    /// Asserts `code`, an empty stdout and a one-line stderr, and returns that line.
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.status.code(), Some(code), "{self:?}");
        let line = self.stderr.trim_end_matches('\n');
        if code == 1 {
            assert!(!line.is_empty() && !line.contains('\n'), "one-line error expected: {self:?}");
        }
        line
    }

    /// stdout split in lines.
    pub fn lines(&self) -> Vec<&str> {
        self.ok().lines().collect()
    }
}

/// Kills the child when a run is abandoned (timeout or panic).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Silt {
    /// Wraps a command built with [`silt_command`].
    pub fn new(cmd: Command) -> Silt {
        Silt { cmd, stdin: Vec::new() }
    }

    /// More arguments.
    pub fn args(mut self, args: &[&str]) -> Silt {
        self.cmd.args(args);
        self
    }

    /// Feeds `bytes` to stdin (otherwise stdin is empty).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Silt {
        self.stdin = bytes.into();
        self
    }

    /// Runs to completion within [`RUN_TIMEOUT`].
    pub fn run(mut self) -> Outcome {
        self.cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard(self.cmd.spawn().expect("spawning silt"));
        let mut stdin = child.0.stdin.take().expect("stdin");
        let input = std::mem::take(&mut self.stdin);
        // Pipes are drained on their own threads so a chatty child never blocks on them.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let read_all = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = r.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        };
        let stdout = read_all(Box::new(child.0.stdout.take().expect("stdout")));
        let stderr = read_all(Box::new(child.0.stderr.take().expect("stderr")));
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "silt {:?} did not finish within {RUN_TIMEOUT:?}", self.cmd);
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = writer.join();
        Outcome {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }
}

/// A loopback UDP port with nothing listening on it (a moment ago).
pub fn closed_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding an ephemeral UDP port");
    s.local_addr().expect("local address").port()
}

/// Builds example processor crates for wasm32 (as the README says to build them) into the test
/// builds' own target dir, shared with the other wasm tests (usually built already); the
/// directory holding the `.wasm` files.
pub fn build_examples(packages: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let outer =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target = outer.join("wasm-examples");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--quiet", "--release", "--locked", "--target", "wasm32-unknown-unknown"])
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .status()
        .expect("running cargo");
    assert!(status.success(), "building {packages:?} for wasm32 failed");
    target.join("wasm32-unknown-unknown/release")
}
