//! What the bridge's integration tests share: a real broker in this process (QUIC on an
//! ephemeral loopback port, sled in a temp dir) or as a `silt-broker` child process a test can
//! SIGKILL, the real `silt-bridge` binary as a child process, and a test device speaking frames
//! over TCP.
//!
//! Each test crate uses a different part of this module, so items unused by one are expected.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use silt_client::{Client, ClientConfig, ConsumedRecord, Consumer, ConsumerConfig, FetchFrom};
use silt_frame::{
    Body, Data, Deframer, Frame, Hello, Key, Reading, Time, FRAME_BYTES_MAX, STUFFED_BYTES_MAX,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for a bridge or broker to start serving.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for one expected reply or record.
pub const WAIT: Duration = Duration::from_secs(15);

/// A loopback TCP port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral TCP port");
    s.local_addr().expect("local address").port()
}

/// The real broker, in this process, or as a child process ([`Broker::start_process`]).
pub struct Broker {
    pub dir: TempDir,
    running: Option<silt_broker::Running>,
    /// The `silt-broker` process, when the broker runs as one.
    process: Option<process::BrokerProcess>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub ca_cert: PathBuf,
    /// The admin token the broker wrote; bridges started here authenticate with it.
    pub token: String,
    pub client: Client,
    /// Where the running broker keeps its data (`dir/data` until [`Broker::restart_with`]).
    pub data_dir: PathBuf,
}

impl Broker {
    pub async fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = silt_broker::config::Config {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..silt_broker::config::Config::default()
        };
        let running = silt_broker::start(config).await.expect("starting the broker");
        let token = running.admin_token.clone().expect("authentication is on by default");
        let config = ClientConfig::new(running.listen.to_string(), &running.ca_cert).unwrap();
        let client = Client::connect(config.with_token(&token)).await.expect("connecting to the broker");
        Broker {
            listen: running.listen,
            admin: running.admin_listen,
            ca_cert: running.ca_cert.clone(),
            token,
            running: Some(running),
            process: None,
            data_dir: dir.path().join("data"),
            dir,
            client,
        }
    }

    /// The broker as a `silt-broker` child process (the binary `SILT_BROKER_BIN` names, else
    /// one built here) on loopback ports, with its data in a temp dir; [`Broker::kill`] and
    /// [`Broker::respawn`] crash and restart it on the same ports and data.
    pub async fn start_process() -> Broker {
        let process = process::BrokerProcess::start(&[]).await;
        let token = process.admin_token();
        let client = connect(process.listen, &process.ca_cert(), &token).await;
        Broker {
            listen: process.listen,
            admin: process.admin,
            ca_cert: process.ca_cert(),
            token,
            running: None,
            data_dir: process.data_dir(),
            // The process keeps its data in a temp dir of its own.
            dir: tempfile::tempdir().expect("temp dir"),
            process: Some(process),
            client,
        }
    }

    /// SIGKILLs the broker process ([`Broker::start_process`]).
    pub fn kill(&mut self) {
        self.process.as_mut().expect("a broker process").kill();
    }

    /// Starts the broker process again, on the same ports and data, once killed.
    pub async fn respawn(&mut self) {
        self.process.as_mut().expect("a broker process").restart().await;
        self.client = connect(self.listen, &self.ca_cert, &self.token).await;
    }

    /// Registers a device and returns its key.
    pub async fn add_device(&self, id: &str) -> Key {
        let d = self.client.add_device(id).await.expect("adding a device");
        d.key.expect("a new device has a key").try_into().expect("32-byte key")
    }

    /// Lets `principal` (`device:ID`, `device:*`) do `operation` on `resource`.
    pub async fn grant(&self, principal: &str, operation: silt_client::Operation, resource: &str) {
        let entry = silt_client::AclEntry {
            principal: principal.into(),
            operation,
            resource: resource.into(),
            allow: true,
        };
        self.client.grant_acl(entry).await.expect("granting a right");
    }

    /// Stops the broker and starts it again on the same QUIC port, so bridges find it where
    /// it was, on the data directory `between` returns, given the one it stopped on. (A new
    /// directory each time: a broker stopped in this process may hold its store's lock a
    /// while longer.)
    pub async fn restart_with(&mut self, between: impl FnOnce(&std::path::Path) -> PathBuf) {
        self.client.close().await;
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("broker shutdown");
        }
        self.data_dir = between(&self.data_dir);
        let config = silt_broker::config::Config {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..silt_broker::config::Config::default()
        };
        let running = silt_broker::start(config).await.expect("restarting the broker");
        let config = ClientConfig::new(running.listen.to_string(), &running.ca_cert).unwrap();
        self.client =
            Client::connect(config.with_token(&self.token)).await.expect("connecting to the broker");
        self.admin = running.admin_listen;
        self.running = Some(running);
    }

    pub async fn stop(mut self) {
        self.client.close().await;
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("broker shutdown");
        }
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

/// A client of the broker on `listen`, authenticated with `token`.
async fn connect(listen: SocketAddr, ca_cert: &std::path::Path, token: &str) -> Client {
    let config = ClientConfig::new(listen.to_string(), ca_cert).expect("client config");
    Client::connect(config.with_token(token)).await.expect("connecting to the broker")
}

/// A `silt-bridge` child process on loopback ports, killed when dropped; its log is printed
/// when the test fails.
pub struct BridgeProcess {
    pub dir: TempDir,
    pub tcp: SocketAddr,
    pub mqtt: SocketAddr,
    /// MQTT over TLS, with the certificate the bridge makes in `dir/data/tls/cert.pem`.
    pub mqtts: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<String>,
    child: Option<Child>,
}

impl BridgeProcess {
    /// Starts a bridge for `broker`; `config` is the TOML of `--config` (may be empty), `extra`
    /// more flags.
    pub async fn start(broker: &Broker, config: &str, extra: &[&str]) -> BridgeProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("bridge.toml"), config).unwrap();
        let mut bridge = BridgeProcess {
            dir,
            tcp: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], 0)),
            mqtts: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            args: Vec::new(),
            child: None,
        };
        // A port free a moment ago may be taken by a test running beside this one before the
        // bridge binds it: then the bridge exits at once, and it starts again on new ports.
        for attempt in 1.. {
            let port = |_| SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
            (bridge.tcp, bridge.mqtt, bridge.mqtts, bridge.admin) = (port(0), port(1), port(2), port(3));
            bridge.args = bridge.args_for(broker, extra);
            bridge.spawn();
            match bridge.try_ready().await {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("Address already in use") => {
                    let _ = std::fs::remove_file(bridge.log_path());
                }
                Err(log) => panic!("{log}"),
            }
        }
        bridge
    }

    fn args_for(&self, broker: &Broker, extra: &[&str]) -> Vec<String> {
        let dir = self.dir.path();
        let mut args: Vec<String> = vec![
            "--broker".into(),
            broker.listen.to_string(),
            "--ca-cert".into(),
            broker.ca_cert.display().to_string(),
            "--token".into(),
            broker.token.clone(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--listen-tcp".into(),
            self.tcp.to_string(),
            "--listen-mqtt".into(),
            self.mqtt.to_string(),
            "--listen-mqtts".into(),
            self.mqtts.to_string(),
            "--admin-listen".into(),
            self.admin.to_string(),
            "--config".into(),
            dir.join("bridge.toml").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("bridge.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_silt-bridge"))
            .args(&self.args)
            .env_remove("SILT_BROKER")
            .env_remove("SILT_CA_CERT")
            .env_remove("SILT_TOKEN")
            .env_remove("SILT_TOKEN_FILE")
            .env_remove("SILT_BRIDGE_CONFIG")
            .env_remove("SILT_BRIDGE_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting silt-bridge");
        self.child = Some(child);
    }

    /// Waits until the admin port answers `GET /health`.
    pub async fn wait_ready(&mut self) {
        if let Err(why) = self.try_ready().await {
            panic!("{why}");
        }
    }

    /// Waits until the admin port answers `GET /health`; `Err` says why not, with the log.
    async fn try_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("silt-bridge exited with {status}:\n{}", self.log()));
            }
            if http_get(self.admin, "/health").await.is_some_and(|b| b.contains("ok")) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("silt-bridge did not answer /health within {READY_TIMEOUT:?}:\n{}", self.log()))
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await.expect("GET /metrics")
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- silt-bridge log ---\n{}", self.log());
        }
    }
}

/// A minimal HTTP/1.0 GET; `None` when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await.ok()?.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await.ok()?.ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// A reply the bridge sent, decoded and verified with the device's key (or the zero key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack(u32),
    Heartbeat(u32),
    Nack { seq: u32, ack: u32, reason: silt_frame::NackReason, verified: bool },
}

/// A test device on a TCP connection to the bridge.
pub struct TestDevice {
    pub id: String,
    pub key: Key,
    stream: TcpStream,
    deframer: Box<Deframer>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl TestDevice {
    pub async fn connect(addr: SocketAddr, id: &str, key: Key) -> TestDevice {
        let stream = TcpStream::connect(addr).await.expect("connecting to the bridge");
        stream.set_nodelay(true).unwrap();
        TestDevice {
            id: id.into(),
            key,
            stream,
            deframer: Box::new(Deframer::new()),
            buf: vec![0; 4096],
            start: 0,
            end: 0,
        }
    }

    pub async fn send(&mut self, frame: &Frame<'_>) {
        let mut out = [0u8; STUFFED_BYTES_MAX];
        let n = silt_frame::encode_stuffed(frame, &self.key, &mut out).unwrap();
        self.stream.write_all(&out[..n]).await.expect("writing a frame");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("writing bytes");
    }

    /// Sends hello (`next` = the next data sequence, 0 = no counter) and returns the ack.
    pub async fn hello(&mut self, next: u32) -> Reply {
        let id = self.id.clone();
        self.send(&Frame {
            seq: next,
            ack: 0,
            body: Body::Hello(Hello { device: &id, tick_ms: 1_000, firmware: "test", module: 0 }),
        })
        .await;
        self.recv().await
    }

    /// Sends data frame `seq` with a temperature and a humidity reading derived from it.
    pub async fn data(&mut self, seq: u32) {
        let id = self.id.clone();
        let mut readings = heapless::Vec::new();
        readings.push(Reading::Temperature(20.0 + seq as f32 / 100.0)).unwrap();
        readings.push(Reading::Humidity(40.0)).unwrap();
        let body = Body::Data(Data { device: &id, time: Time::TickMs(1_000 + u64::from(seq)), readings });
        self.send(&Frame { seq, ack: 0, body }).await;
    }

    /// The next reply, within [`WAIT`].
    pub async fn recv(&mut self) -> Reply {
        tokio::time::timeout(WAIT, self.recv_unbounded()).await.expect("no reply from the bridge in time")
    }

    /// The next reply, or `None` if none comes within `within`.
    pub async fn try_recv(&mut self, within: Duration) -> Option<Reply> {
        tokio::time::timeout(within, self.recv_unbounded()).await.ok()
    }

    async fn recv_unbounded(&mut self) -> Reply {
        loop {
            while self.start < self.end {
                let (used, frame) = self.deframer.push(&self.buf[self.start..self.end]);
                self.start += used;
                if let Some(frame) = frame {
                    let raw = frame.expect("bridge frames are well stuffed");
                    assert!(raw.len() <= FRAME_BYTES_MAX);
                    let decoded = || silt_frame::decode(raw).expect("bridge frames decode");
                    let (frame, verified) = match decoded().verify(&self.key) {
                        Ok(f) => (f, true),
                        Err(_) => (
                            decoded()
                                .verify(&silt_frame::ZERO_KEY)
                                .expect("tagged with the device or the zero key"),
                            false,
                        ),
                    };
                    return match frame.body {
                        Body::Ack => {
                            assert!(verified, "acks are tagged with the device key");
                            Reply::Ack(frame.ack)
                        }
                        Body::Heartbeat => Reply::Heartbeat(frame.ack),
                        Body::Nack(n) => {
                            Reply::Nack { seq: n.seq, ack: frame.ack, reason: n.reason, verified }
                        }
                        other => panic!("the bridge sent {other:?}"),
                    };
                }
            }
            let n = self.stream.read(&mut self.buf).await.expect("reading from the bridge");
            assert!(n > 0, "the bridge closed the connection");
            self.start = 0;
            self.end = n;
        }
    }

    /// Reads replies until the cumulative ack reaches `seq`.
    pub async fn wait_ack(&mut self, seq: u32) {
        loop {
            match self.recv().await {
                Reply::Ack(a) if a >= seq => return,
                Reply::Ack(_) | Reply::Heartbeat(_) => {}
                other => panic!("waiting for ack {seq}, got {other:?}"),
            }
        }
    }
}

/// Reads records of `topic` until `count` arrived (or [`WAIT`] passes without progress), then
/// waits a moment for any record beyond `count`, so a caller comparing against `count` also
/// sees duplicates.
pub async fn read_records(client: &Client, topic: &str, count: usize) -> Vec<ConsumedRecord> {
    let config = ConsumerConfig { from: FetchFrom::Earliest, follow: true, ..ConsumerConfig::default() };
    let mut consumer = loop {
        match Consumer::new(client, topic, config.clone()).await {
            Ok(c) => break c,
            Err(silt_client::ClientError::UnknownTopic(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("consuming {topic}: {e}"),
        }
    };
    let mut out = Vec::new();
    while out.len() < count {
        match tokio::time::timeout(WAIT, consumer.next_record()).await {
            Ok(Some(Ok(r))) => out.push(r),
            Ok(other) => panic!("reading {topic}: {other:?}"),
            Err(_) => break,
        }
    }
    if let Ok(Some(Ok(extra))) =
        tokio::time::timeout(Duration::from_millis(300), consumer.next_record()).await
    {
        out.push(extra);
    }
    consumer.close().await;
    out
}

/// The `seq` field of a reading record's JSON value.
pub fn seq_of(r: &ConsumedRecord) -> u32 {
    let v: serde_json::Value = serde_json::from_slice(&r.value).expect("JSON reading");
    v["seq"].as_u64().expect("seq field") as u32
}

/// Every record of `topic` from the earliest offset up to the end the log has when the reader
/// gets there: for checks after every writer finished. Each read is bounded by [`WAIT`].
pub async fn read_to_end(client: &Client, topic: &str) -> Vec<ConsumedRecord> {
    let config = ConsumerConfig { from: FetchFrom::Earliest, follow: false, ..ConsumerConfig::default() };
    let mut consumer =
        Consumer::new(client, topic, config).await.unwrap_or_else(|e| panic!("consuming {topic}: {e}"));
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, consumer.next_record()).await {
            Ok(Some(Ok(r))) => out.push(r),
            Ok(None) => break,
            Ok(Some(Err(e))) => panic!("reading {topic}: {e}"),
            Err(_) => panic!("reading {topic}: no record or end within {WAIT:?}"),
        }
    }
    consumer.close().await;
    out
}

/// The `device` and `seq` fields of a reading record's JSON value.
pub fn device_seq_of(r: &ConsumedRecord) -> (String, u32) {
    let v: serde_json::Value = serde_json::from_slice(&r.value).expect("JSON reading");
    let device = v["device"].as_str().expect("device field").to_string();
    (device, v["seq"].as_u64().expect("seq field") as u32)
}

/// How often each (device, seq) occurs in `records`.
pub fn count_readings(records: &[ConsumedRecord]) -> std::collections::HashMap<(String, u32), usize> {
    let mut counts = std::collections::HashMap::new();
    for r in records {
        *counts.entry(device_seq_of(r)).or_insert(0) += 1;
    }
    counts
}

// Processor ABI test modules: the broker tests' own.
#[path = "../../../../server/broker/tests/support/abi.rs"]
mod abi;
// Finding (or building) the `silt-broker` binary, and running it as a child process, shared
// with the broker's tests.
#[path = "../../../../server/broker/tests/support/process.rs"]
mod process;
#[path = "../../../../server/broker/tests/support/server_bin.rs"]
mod server_bin;
#[allow(unused_imports)]
pub use abi::{abi_module, abi_module_with, COUNTERS, COUNT_BATCH, PASSTHROUGH};

/// Waits (up to [`WAIT`]) for the broker's audit topic to hold a denied event of `principal`
/// for `operation` on `resource`; panics naming what is missing.
#[allow(dead_code)]
pub async fn await_refusal(client: &Client, principal: &str, operation: &str, resource: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let config = ConsumerConfig { from: FetchFrom::Earliest, follow: false, ..ConsumerConfig::default() };
        let mut consumer = Consumer::new(client, "silt.audit", config).await.expect("reading silt.audit");
        let mut found = false;
        while let Some(r) = consumer.next_record().await {
            let e: serde_json::Value = serde_json::from_slice(&r.expect("an audit record").value).unwrap();
            found |= e["principal"] == principal
                && e["operation"] == operation
                && e["resource"] == resource
                && e["outcome"] == "denied";
        }
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no denied {operation} of {principal} on {resource} in silt.audit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The QEMU firmware's ELF (`SILT_FW_QEMU_ELF`, else this target dir's release build) when
/// `qemu-system-arm` is installed too; `None` otherwise, after failing under `CI`, where
/// `scripts/test-all.sh` builds it first.
pub fn qemu_firmware() -> Option<PathBuf> {
    let elf = match std::env::var_os("SILT_FW_QEMU_ELF") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            // target/<profile>/silt-bridge -> target/thumbv7em-none-eabihf/release/silt-fw-qemu-mps2
            let bridge = PathBuf::from(env!("CARGO_BIN_EXE_silt-bridge"));
            let target = bridge.parent().and_then(|p| p.parent());
            target.map(|t| t.join("thumbv7em-none-eabihf/release/silt-fw-qemu-mps2")).filter(|e| e.exists())
        }
    };
    let qemu_found = Command::new("qemu-system-arm").arg("--version").output().is_ok();
    match (elf, qemu_found) {
        (Some(elf), true) => Some(elf),
        _ => {
            let why = "needs qemu-system-arm and the firmware ELF: run scripts/firmware-qemu.sh";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// The QEMU firmware as a device, served by a bridge of its own; both stop when it drops.
pub struct QemuDevice {
    qemu: tokio::process::Child,
    /// QEMU's arguments, to boot it again ([`QemuDevice::reboot`]).
    qemu_args: Vec<String>,
    pub bridge: BridgeProcess,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// `qemu-system-arm` with `args`, its output appended to `log_path`.
fn spawn_qemu(args: &[String], log_path: &std::path::Path) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).expect("QEMU's log");
    tokio::process::Command::new("qemu-system-arm")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("starting qemu-system-arm")
}

/// How the firmware's UART reaches its bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// A TCP socket QEMU listens on, which the bridge connects to (`--connect-tcp`).
    Tcp,
    /// A pseudo-terminal QEMU opens, which the bridge opens as a serial line at 115200 baud.
    Pty,
}

impl QemuDevice {
    /// Boots the firmware in QEMU (with `qemu_args` added) as device `device` with `words`
    /// before its last three command-line words, and serves it with a bridge of `broker` over
    /// TCP; returns once the bridge is up. The device must be added already.
    pub async fn start(
        broker: &Broker,
        elf: &std::path::Path,
        device: &str,
        key: &Key,
        words: &str,
        samples: u32,
        qemu_args: &[&str],
    ) -> QemuDevice {
        let qemu_args: Vec<&str> = qemu_args.to_vec();
        QemuDevice::start_on(Line::Tcp, broker, elf, &format!("{words} {device}"), key, samples, &qemu_args)
            .await
    }

    /// [`QemuDevice::start`] over `line`; `words` end with the device id.
    pub async fn start_on(
        line: Line,
        broker: &Broker,
        elf: &std::path::Path,
        words: &str,
        key: &Key,
        samples: u32,
        qemu_args: &[&str],
    ) -> QemuDevice {
        let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let serial = free_tcp_port();
        let serial_arg = match line {
            Line::Tcp => format!("tcp:127.0.0.1:{serial},server=on,wait=on"),
            Line::Pty => "pty".to_string(),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("qemu.log");
        let mut args: Vec<String> = ["-machine", "mps2-an386", "-nographic", "-monitor", "none"]
            .into_iter()
            .chain(["-semihosting-config", "enable=on,target=native", "-serial", &serial_arg])
            .chain(qemu_args.iter().copied())
            .map(String::from)
            .collect();
        args.extend(["-kernel".into(), elf.display().to_string()]);
        args.extend(["-append".into(), format!("{words} {key_hex} {samples}")]);
        let qemu = spawn_qemu(&args, &log_path);
        let bridge = match line {
            // The bridge must be QEMU's first client on the serial port (see tests/qemu.rs).
            Line::Tcp => {
                BridgeProcess::start(broker, "", &["--connect-tcp", &format!("127.0.0.1:{serial}")]).await
            }
            Line::Pty => {
                // QEMU says where: "char device redirected to /dev/pts/N (label serial0)".
                let deadline = Instant::now() + Duration::from_secs(10);
                let path = loop {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if let Some(rest) = log.split("redirected to ").nth(1) {
                        break rest.split_whitespace().next().unwrap_or_default().to_string();
                    }
                    assert!(Instant::now() < deadline, "QEMU named no pty:\n{log}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let config = format!("serial = [{{ path = \"{path}\", baud = 115200 }}]\n");
                BridgeProcess::start(broker, &config, &[]).await
            }
        };
        QemuDevice { qemu, qemu_args: args, bridge, log_path, _dir: dir }
    }

    /// Cuts the device's power (SIGKILL to QEMU) and boots it again with the same command
    /// line, on the same serial port, which its bridge connects to again; its output goes on
    /// in the same log.
    pub async fn reboot(&mut self) {
        self.qemu.kill().await.expect("SIGKILL to QEMU");
        self.qemu = spawn_qemu(&self.qemu_args, &self.log_path);
    }

    /// What the firmware printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits for the firmware to exit, at most `within` (QEMU's UART moves a few hundred
    /// frames a second; a loaded CI host is slower), and returns its exit status and output.
    pub async fn wait(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let status = match tokio::time::timeout(within, self.qemu.wait()).await {
            Ok(status) => status.expect("waiting for QEMU"),
            Err(_) => panic!(
                "the firmware did not finish within {within:?}:\n{}\n--- bridge ---\n{}",
                self.output(),
                self.bridge.log()
            ),
        };
        (status, self.output())
    }
}
