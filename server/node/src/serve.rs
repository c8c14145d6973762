//! The server: a broker and, when configured, a device bridge in this process as a QUIC client
//! of it, until SIGINT or SIGTERM. The demo's stack embeds its bridge the same way.

use std::time::Duration;

use silt_broker::Running;

use crate::config::ServerConfig;

/// Bound on the embedded bridge flushing its journal after the stop signal.
const BRIDGE_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to stop once told to, before the process exits without it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The principal of the embedded bridge.
const BRIDGE_USER: &str = "bridge";

/// `bridge` set up to run in this process as a client of `broker`: the broker's address and
/// certificate, and (with authentication on) a fresh token of user `bridge`, which may read
/// device keys, create, write and read topics and describe; it authenticates like any client.
pub fn embed_bridge(
    broker: &Running,
    mut bridge: silt_bridge::config::Config,
) -> anyhow::Result<silt_bridge::config::Config> {
    use silt_client::{AclEntry, Credential, Operation};
    bridge.broker = broker.connect_addr().to_string();
    bridge.ca_cert = Some(broker.ca_cert.clone());
    if bridge.mqtt.tls_cert.is_none() {
        // MQTT over TLS with the broker's own certificate, so devices trust the same file as
        // every other client (DATA_DIR/tls/cert.pem).
        bridge.mqtt.tls_cert = Some(broker.ca_cert.clone());
        bridge.mqtt.tls_key = Some(broker.ca_cert.with_file_name("key.pem"));
    }
    if broker.auth.enabled() {
        let allow = |operation, resource: &str| AclEntry {
            principal: format!("user:{BRIDGE_USER}"),
            operation,
            resource: resource.into(),
            allow: true,
        };
        let rights = [
            allow(Operation::DeviceKeys, "device:*"),
            allow(Operation::Produce, "topic:*"),
            allow(Operation::CreateTopic, "topic:*"),
            allow(Operation::Consume, "topic:*"),
            allow(Operation::Describe, "*"),
        ];
        let token = broker.auth.service_token(BRIDGE_USER, "embedded bridge", &rights)?;
        bridge.credential = Some(Credential::Token(token));
    }
    Ok(bridge)
}

/// Runs the broker until SIGINT or SIGTERM, then flushes and closes.
///
/// With a bridge configured, it runs in this process too, as a QUIC client of this broker; it
/// stops on the same signal, before the broker.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let ServerConfig { broker, bridge } = config;
    let bridge_dir = broker.data_dir.join("bridge");
    let running = silt_broker::start(broker).await?;
    let bridge = match bridge {
        Some(b) => {
            let mut b = embed_bridge(&running, b)?;
            if b.data_dir.as_os_str().is_empty() {
                b.data_dir = bridge_dir;
            }
            tracing::info!(data_dir = %b.data_dir.display(), "starting the embedded device bridge");
            Some(tokio::spawn(silt_bridge::run(b)))
        }
        None => None,
    };
    match bridge {
        Some(mut task) => tokio::select! {
            () = shutdown_signal() => {
                // The bridge heard the same signal; let it flush its journal first.
                let _ = tokio::time::timeout(BRIDGE_STOP_TIMEOUT, task).await;
            }
            r = &mut task => {
                let e = r.map_err(anyhow::Error::from).and_then(|r| r).err();
                let _ = stop(running).await;
                return Err(e.unwrap_or_else(|| anyhow::anyhow!("the embedded bridge stopped")).context("embedded device bridge"));
            }
        },
        None => shutdown_signal().await,
    }
    stop(running).await
}

/// Stops the broker; if that takes longer than [`STOP_TIMEOUT`], a thread of its own (the
/// runtime's workers may be what is stuck: a write that blocks inside sled after a disk
/// error) ends the process with exit code 1, as a crash would: what the fsync policy made
/// durable is kept.
async fn stop(running: Running) -> anyhow::Result<()> {
    std::thread::spawn(|| {
        std::thread::sleep(STOP_TIMEOUT);
        tracing::error!(
            seconds = STOP_TIMEOUT.as_secs(),
            "the broker did not stop in time; exiting without it"
        );
        std::process::exit(1);
    });
    running.shutdown().await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
