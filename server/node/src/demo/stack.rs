//! The server side of the demo: a broker (`silt_broker::start`) and a device bridge
//! (`silt_bridge::run`, embedded as the server's `[bridge]` table runs it) on a tokio runtime of
//! their own, with their data in a temporary directory.
//!
//! A runtime of their own, so that stopping is complete: once the broker has shut down, the
//! runtime is shut down too, which ends every task the broker and the bridge left behind
//! (pipelines, the bridge's appender with its journal) before the directory is removed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Bound on the bridge starting to accept frames.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the broker's shutdown (flush and close), and then on the runtime's.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);
/// The broker's sled cache: the demo's data is small.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Where the stack listens.
#[derive(Debug, Clone, Copy)]
pub struct StackConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Port 0 picks a free port.
    pub frames_listen: SocketAddr,
}

/// A running broker and bridge.
pub struct Stack {
    /// Addresses to connect to (loopback when a listener is bound to an unspecified IP).
    pub broker: SocketAddr,
    pub admin: SocketAddr,
    pub frames: SocketAddr,
    pub ca_cert: PathBuf,
    /// The broker's admin token (authentication is on, as everywhere).
    pub token: Option<String>,
    pub data_dir: PathBuf,
    running: Option<silt_broker::Running>,
    bridge: Option<JoinHandle<anyhow::Result<()>>>,
    // Declared before `dir`: shut down first when dropped.
    runtime: OwnedRuntime,
    dir: Option<TempDir>,
}

/// A runtime that may be dropped inside another runtime's task: it is shut down in the
/// background then (an error path); [`Stack::stop`] shuts it down properly.
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl OwnedRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running until stopped").handle()
    }
}

impl Stack {
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("silt-demo-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let runtime = OwnedRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("silt-demo-broker")
                .enable_all()
                .build()
                .context("starting the broker's runtime")?,
        ));
        let broker_config = silt_broker::config::Config {
            data_dir: dir.path().join("silt-data"),
            listen: config.listen,
            admin_listen: config.admin_listen,
            cache_bytes: CACHE_BYTES,
            ..silt_broker::config::Config::default()
        };
        let running = runtime
            .handle()
            .spawn(silt_broker::start(broker_config))
            .await
            .context("the broker's start panicked")?
            .context("starting the broker")?;
        let mut stack = Stack {
            broker: running.connect_addr(),
            admin: loopback(running.admin_listen),
            frames: config.frames_listen,
            ca_cert: running.ca_cert.clone(),
            token: running.admin_token.clone(),
            data_dir: dir.path().to_path_buf(),
            running: Some(running),
            bridge: None,
            runtime,
            dir: Some(dir),
        };
        // Bound here first: a port 0 becomes a free port, and a port in use fails now with a
        // clear message (rather than devices talking to whatever listens there).
        let frames_listen = free_port(config.frames_listen)
            .with_context(|| format!("binding the bridge's frame listener {}", config.frames_listen))?;
        stack.frames = loopback(frames_listen);
        let bridge = silt_bridge::config::Config {
            data_dir: stack.data_dir.join("bridge"),
            listen_tcp: Some(frames_listen),
            listen_mqtt: None,
            listen_mqtts: None,
            admin_listen: None,
            ..silt_bridge::config::Config::default()
        };
        let bridge = crate::serve::embed_bridge(stack.running.as_ref().expect("started above"), bridge)?;
        stack.bridge = Some(stack.runtime.handle().spawn(silt_bridge::run(bridge)));
        stack.wait_for_bridge().await?;
        Ok(stack)
    }

    /// Waits until the bridge accepts connections, or fails with its error.
    async fn wait_for_bridge(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(task) = self.bridge.as_mut().filter(|t| t.is_finished()) {
                let why = match task.await {
                    Ok(Ok(())) => anyhow::anyhow!("it stopped"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::Error::from(e),
                };
                self.bridge = None;
                return Err(why.context("starting the device bridge"));
            }
            if tokio::net::TcpStream::connect(self.frames).await.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the device bridge did not listen on {} within {READY_TIMEOUT:?}",
                self.frames
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the bridge and the broker (flushing and closing), ends their runtime and removes
    /// the data.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(bridge) = self.bridge.take() {
            // The bridge stops by itself on SIGINT; after --duration it is simply cancelled:
            // its devices are gone and its journal is about to be deleted.
            bridge.abort();
            let _ = bridge.await;
        }
        let mut result = Ok(());
        if let Some(running) = self.running.take() {
            let shutdown = self.runtime.handle().spawn(running.shutdown());
            result = match tokio::time::timeout(SHUTDOWN_TIMEOUT, shutdown).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("the broker's shutdown panicked")),
                Err(_) => Err(anyhow::anyhow!("the broker did not shut down within {SHUTDOWN_TIMEOUT:?}")),
            };
        }
        if let Some(rt) = self.runtime.0.take() {
            tokio::task::spawn_blocking(move || rt.shutdown_timeout(RUNTIME_SHUTDOWN))
                .await
                .context("shutting down the broker's runtime")?;
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            dir.close().with_context(|| format!("removing {}", path.display()))?;
        }
        result
    }
}

/// The address to connect to for a listener bound to `addr` (an unspecified IP, such as
/// 0.0.0.0, is reachable on loopback).
fn loopback(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// `addr` if it is free, with a free port if its port is 0. The bridge binds it a moment
/// later; in between another process could take it, and the bridge's start then fails.
fn free_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind(addr)?.local_addr()
}
