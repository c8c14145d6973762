//! `silt-bridge`: devices into the log, exactly once.
//!
//! Devices send frames (`silt-frame`, docs/device-frames.md) over TCP or serial lines, or
//! publish over MQTT 3.1.1. The bridge authenticates them against the broker's device
//! registry, deduplicates frames by (device, sequence), turns readings into records, appends
//! them through the broker as a QUIC client, and acknowledges only what is durable.
//!
//! Code map: `session` (frame protocol state, no I/O) and `stream` (its TCP and serial
//! drivers); `delivery` (processor modules sent to devices over their frame link, no I/O);
//! `bridge_tier` (processors run here on readings before they are appended, with their state
//! journaled with the rounds); `mqtt` (MQTT sessions on rumqttc's codec); `appender` (rounds of batches) with
//! `journal` (the bridge's durable state) and `sequences` (per-device dedup); `registry`
//! (cached device keys); `audit` (device refusals, to the broker's audit topic); `metrics` and
//! the admin HTTP port. [`Ingest`] is what every device
//! connection uses.
//!
//! Deliberately absent: any buffering without a bound (every queue has a limit in
//! `config::Limits`), persistent MQTT sessions (clean sessions only), QoS 2, TLS on the device
//! side (devices authenticate every frame with their key instead), and simulated devices: they
//! are `silt-devsim`, a crate of their own that talks to the bridge over sockets.

pub mod appender;
pub mod audit;
pub mod bridge_tier;
pub mod config;
pub mod delivery;
pub mod journal;
pub mod metrics;
pub mod mqtt;
pub mod registry;
pub mod sequences;
pub mod session;
pub mod stream;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use silt_client::{Client, ClientConfig};

use crate::appender::{Appender, AppenderConfig, AppenderHandle};
use crate::audit::Audit;
use crate::config::Config;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::sequences::Sequences;

/// The bridge's ingest path, which every device connection (frames or MQTT) uses: settings,
/// the broker client, the device registry, per-device sequences, the appender, metrics, and
/// the count of open connections.
pub struct Ingest {
    pub config: Config,
    pub client: Client,
    pub registry: Arc<Registry>,
    pub sequences: Arc<Sequences>,
    pub appender: AppenderHandle,
    pub metrics: Arc<Metrics>,
    /// Device refusals, to the log and the broker's audit topic.
    pub audit: Audit,
    /// Open device connections of every transport, against `limits.connections_max`.
    pub connections: AtomicUsize,
}

/// Runs the bridge until SIGINT or SIGTERM (or until the journal fails).
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate()?;
    let journal = Arc::new(Journal::open(&config.data_dir)?);
    let in_flight: Vec<(String, u32)> =
        journal.pending_rounds()?.into_iter().flat_map(|r| r.devices).collect();
    let sequences = Arc::new(Sequences::load(journal.devices()?, in_flight));
    let ca_cert =
        config.ca_cert.clone().context("--ca-cert is required: the broker's DATA_DIR/tls/cert.pem")?;
    let client = Client::connect(match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            ClientConfig::new(config.broker.clone(), &ca_cert)?.with_client_cert(cert, key)?
        }
        _ => ClientConfig::new(config.broker.clone(), &ca_cert)?.with_credential(config.credential.clone()),
    })
    .await
    .with_context(|| format!("connecting to the broker at {}", config.broker))?;
    let metrics = Arc::new(Metrics::new());
    let producer_id = appender::claim_producer_id(&client, &journal).await?;
    let (processors_tx, processors_rx) = tokio::sync::watch::channel(None);
    let (appender, handle, queue) = Appender::new(
        client.clone(),
        journal.clone(),
        sequences.clone(),
        metrics.clone(),
        AppenderConfig {
            queue_max: config.limits.queue_max,
            round_records_max: config.limits.round_records_max,
            create_topics: config.topics.create,
            partitions: config.topics.partitions,
        },
        producer_id,
        Some(processors_rx),
    )?;
    let registry = Registry::new(client.clone(), Duration::from_millis(config.limits.key_cache_ms));
    let ingest = Arc::new(Ingest {
        config: config.clone(),
        client: client.clone(),
        registry,
        sequences,
        appender: handle,
        audit: Audit::start(client.clone(), metrics.clone()),
        metrics: metrics.clone(),
        connections: AtomicUsize::new(0),
    });

    // Bind everything first, so a port conflict fails startup with a clear message.
    let tcp = match config.listen_tcp {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --listen-tcp {addr}"))?,
        ),
        None => None,
    };
    let mqtt = match config.listen_mqtt {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --listen-mqtt {addr}"))?,
        ),
        None => None,
    };
    let mqtts = match config.listen_mqtts {
        Some(addr) => {
            let identity = match (&config.mqtt.tls_cert, &config.mqtt.tls_key) {
                (Some(cert), Some(key)) => silt_tls::load(cert, key)?,
                _ => silt_tls::load_or_create(&config.data_dir.join("tls"), addr, &[])?,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --listen-mqtts {addr}"))?;
            Some((listener, mqtt::acceptor(identity)?))
        }
        None => None,
    };
    let admin = match config.admin_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --admin-listen {addr}"))?,
        ),
        None => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = tcp {
        tracing::info!(addr = %l.local_addr()?, "frames over TCP");
        tasks.spawn(stream::listen(l, ingest.clone()));
    }
    if let Some(l) = mqtt {
        tracing::info!(addr = %l.local_addr()?, "MQTT 3.1.1");
        tasks.spawn(mqtt::listen(l, ingest.clone()));
    }
    if let Some((l, acceptor)) = mqtts {
        tracing::info!(addr = %l.local_addr()?, "MQTT 3.1.1 over TLS");
        tasks.spawn(mqtt::listen_tls(l, acceptor, ingest.clone()));
    }
    if let Some(l) = admin {
        tracing::info!(addr = %l.local_addr()?, "admin HTTP (GET /health, /metrics)");
        let metrics = metrics.clone();
        let app = axum::Router::new().route("/health", get(|| async { "ok\n" })).route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        );
        tasks.spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
    }
    tasks.spawn(bridge_tier::watch(
        client.clone(),
        Duration::from_millis(config.limits.key_cache_ms),
        processors_tx,
    ));
    for addr in &config.connect_tcp {
        tasks.spawn(stream::connect_out(addr.clone(), ingest.clone()));
    }
    for s in &config.serial {
        tasks.spawn(stream::serial(s.clone(), ingest.clone()));
    }
    drop(ingest);

    let appended = tokio::spawn(appender.run(queue));
    tokio::select! {
        r = appended => {
            r.context("the appender panicked")?.context("the bridge journal failed")?;
        }
        () = shutdown_signal() => tracing::info!("shutting down"),
    }
    tasks.abort_all();
    journal.flush()?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
