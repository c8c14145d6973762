//! `silt-broker`: the Silt broker. A QUIC server (quinn, TLS 1.3) in front of the sled
//! partition log (`silt-storage`), with topics, idempotent produce with group commit, long-poll
//! fetch, consumer groups, retention and an HTTP admin port.
//!
//! A library: [`start`] runs a broker in the calling process and returns a [`Running`] handle.
//! The `silt-broker` binary (package `silt-server`) is the composition root that starts it,
//! with a device bridge beside it when configured. Request semantics live in [`requests`] and
//! take typed requests; [`quic`] only moves frames between QUIC streams and the handlers.
//! Deliberately absent: any parsing of record values (batches are validated, stamped and
//! stored as they came), global locks on the produce or fetch path, signal handling (the
//! binary's), and any other Silt server component: this crate embeds no bridge.

pub mod admin;
pub mod auth;
pub mod bridge_processors;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod device_modules;
pub mod devices;
pub mod durability;
pub mod metrics;
pub mod partitions;
pub mod processors;
pub mod quic;
pub mod quotas;
pub mod requests;
pub mod scrub;
pub mod space;
pub mod trace_context;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use silt_storage::{Store, StoreConfig};

use crate::config::Config;
use crate::durability::Durability;
use crate::partitions::Partitions;
use crate::requests::Broker;

/// A running broker, started by [`start`].
pub struct Running {
    /// The bound QUIC address (useful with port 0).
    pub listen: std::net::SocketAddr,
    /// The bound HTTP admin address.
    pub admin_listen: std::net::SocketAddr,
    /// The certificate clients should trust.
    pub ca_cert: std::path::PathBuf,
    /// The admin token, when authentication is on (also in `DATA_DIR/admin.token`).
    pub admin_token: Option<String>,
    /// Users, tokens and rights; for the composition root's own services (the embedded
    /// bridge gets its token here).
    pub auth: Arc<auth::Auth>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The address a client in this process connects to: the QUIC listener, with an
    /// unspecified IP (0.0.0.0) replaced by loopback.
    pub fn connect_addr(&self) -> std::net::SocketAddr {
        let mut addr = self.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        addr
    }

    /// Closes connections, flushes the log and waits for the broker to stop.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("broker task")?
    }
}

/// Opens the acknowledgement ledger and checks the recovered store against it: each partition
/// that lost acknowledged records is logged, counted, and refuses what it cannot serve.
fn open_ledger(
    data_dir: &std::path::Path,
    store: &Store,
    metrics: &metrics::Metrics,
) -> anyhow::Result<(Arc<silt_storage::ledger::Ledger>, Vec<silt_storage::Loss>)> {
    let path = data_dir.join("ledger");
    if !path.exists() && store.ledger_kept()? {
        tracing::error!(ledger = %path.display(),
            "the acknowledgement ledger is gone: records acknowledged before this start cannot be checked");
        metrics.storage_faults.with_label_values(&["ledger"]).inc();
    }
    let (ledger, reading) = silt_storage::ledger::Ledger::open(&path)
        .with_context(|| format!("opening the acknowledgement ledger {}", path.display()))?;
    if reading.torn_tail > 0 {
        tracing::info!(
            bytes = reading.torn_tail,
            "the ledger's last write was cut short by a crash (never acknowledged)"
        );
    }
    for (from, to, why) in &reading.damaged {
        tracing::error!(from, to, reason = %why, "the acknowledgement ledger is damaged; its records there are skipped");
        metrics.storage_faults.with_label_values(&["ledger"]).inc();
    }
    if let Some(r) = store.metadata_restored() {
        tracing::error!(reason = %r.reason, moved_to = %r.moved_to.display(), meta_written_ms = r.meta_written_ms,
            offsets_written_ms = ?r.offsets_written_ms,
            "the metadata database could not be used and was restored from its copies; changes after them are lost");
        metrics.storage_faults.with_label_values(&["metadata"]).inc();
    }
    if !store.ledger_kept()? {
        store.keep_ledger()?;
    }
    let losses = store.verify(&ledger.ends());
    for l in &losses {
        tracing::error!(topic = %l.topic, partition = l.partition, from = l.from, to = l.to, reason = %l.reason,
            "acknowledged records are lost to storage damage; the partition serves offsets before `from` and refuses the rest");
        metrics.storage_faults.with_label_values(&["lost_records"]).inc();
        metrics
            .lost_records
            .with_label_values(&[&l.topic, &l.partition.to_string()])
            .set(i64::try_from(l.to - l.from).unwrap_or(i64::MAX));
    }
    Ok((Arc::new(ledger), losses))
}

/// Starts a broker in this process and returns once it serves.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let cluster_config =
        config.cluster.is_set().then(|| config.cluster.resolve(&config.data_dir)).transpose()?;
    // A cluster's brokers serve clients with the certificate its CA signed, so that clients
    // trust one CA for all of them.
    let (certs, key) = match &cluster_config {
        Some(c) => silt_tls::load(&c.cert, &c.key).with_context(|| {
            format!(
                "the cluster certificate (make one with `silt-broker cluster-init`): {}",
                c.cert.display()
            )
        })?,
        None => silt_tls::load_or_create(&config.data_dir.join("tls"), config.listen, &config.tls_names)?,
    };
    let store_dir = config.data_dir.join("log");
    let cache_bytes = config.cache_bytes;
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir, StoreConfig { cache_bytes }))
        .await?
        .context("opening the log store (is another broker using this data directory?)")?;
    let store = Arc::new(store);
    let metrics = Arc::new(metrics::Metrics::new());
    let durability = Durability::new(config.fsync, metrics.clone());
    let (ledger, losses) = open_ledger(&config.data_dir, &store, &metrics)?;
    let space = space::SpaceGuard::new(&config.data_dir, config.disk_free_min_bytes, metrics.clone())
        .context("reading the free space of the data directory's filesystem")?;
    durability.guard_space(space.clone());
    let partitions = Partitions::new(store.clone(), durability.clone(), metrics.clone(), ledger, losses);
    check_exposure(&config)?;
    ensure_audit_topic(&store)?;
    let audit = auth::audit::Audit::new(metrics.audit_dropped.clone());
    let auth = auth::Auth::open(store.clone(), config.auth, &config.data_dir, audit)?;
    let admin_token = if config.auth.enabled {
        std::fs::read_to_string(config.data_dir.join(auth::ADMIN_TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_string())
    } else {
        None
    };
    let client_ca = config.client_ca.as_deref().map(quic::client_roots).transpose()?;
    let endpoint = quic::endpoint(config.listen, certs, key, client_ca, &config.limits)?;
    let listen = endpoint.local_addr()?;
    let ca_cert = match &cluster_config {
        Some(c) => c.ca.clone(),
        None => config.data_dir.join("tls").join("cert.pem"),
    };
    let cluster = match cluster_config {
        Some(c) => {
            auth.producers.forget_local();
            let flush = config.fsync == config::FsyncPolicy::Always;
            Some(
                cluster::Cluster::start(c, &config.data_dir, listen, partitions.clone(), auth.clone(), flush)
                    .await?,
            )
        }
        None => None,
    };
    let broker = Broker::new(
        partitions,
        durability.clone(),
        config.limits,
        config.quotas.clone(),
        config.processors.clone(),
        metrics.clone(),
        auth.clone(),
    )?;
    if let Some(cluster) = &cluster {
        broker.join_cluster(cluster.clone());
    }

    let admin_listener = admin::bind(config.admin_listen).await?;
    let admin_listen = admin_listener.local_addr()?;
    tracing::info!(%listen, admin = %admin_listen, data_dir = %config.data_dir.display(), fsync = ?config.fsync, "silt-broker started");

    let flusher = tokio::spawn(durability.clone().run(store.clone()));
    let durability_at_stop = durability.clone();
    let space_guard = tokio::spawn(space.run());
    let scrub = tokio::spawn(scrub::run(
        store.clone(),
        config.scrub_bytes_per_s,
        Duration::from_millis(config.scrub_interval_ms),
        metrics,
    ));
    broker.start_processors();
    let housekeeping = {
        let broker = broker.clone();
        let every = config.retention_check();
        tokio::spawn(async move {
            let mut members = tokio::time::interval(Duration::from_millis(500));
            let mut retention = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = members.tick() => broker.expire_members(),
                    _ = retention.tick() => {
                        let b = broker.clone();
                        let _ = tokio::task::spawn_blocking(move || b.apply_retention()).await;
                    }
                }
            }
        })
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let admin = {
        let mut rx = stop_rx.clone();
        tokio::spawn(admin::serve(admin_listener, broker.clone(), config.metrics_require_token, async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    };
    let quic = tokio::spawn(quic::serve(endpoint.clone(), broker.clone(), config.limits));

    let mut stop_rx = stop_rx;
    let task = tokio::spawn(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
        tracing::info!("shutting down: closing connections and flushing");
        endpoint.close(quic::close_code::SHUTDOWN.into(), b"broker shutting down");
        housekeeping.abort();
        space_guard.abort();
        scrub.abort();
        flusher.abort();
        if let Some(cluster) = &cluster {
            cluster.shutdown().await;
        }
        // After a failed write sled returns the same error to every call, and a flush may
        // never return: the broker stops without one, and says so in its exit code.
        let final_flush = match durability_at_stop.healthy() {
            Ok(()) => {
                let s = store.clone();
                tokio::task::spawn_blocking(move || s.flush()).await?.context("final flush")
            }
            Err(refused) => Err(anyhow::anyhow!("no final flush: {refused}")),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        quic.abort();
        let _ = admin.await;
        final_flush?;
        tracing::info!("silt-broker stopped");
        Ok(())
    });
    Ok(Running { listen, admin_listen, ca_cert, admin_token, auth, stop, task })
}

/// Authentication off is said out loud, and refused outright where others can reach the
/// broker unless the configuration insists.
fn check_exposure(config: &Config) -> anyhow::Result<()> {
    if config.auth.enabled {
        return Ok(());
    }
    let exposed = !config.listen.ip().is_loopback();
    if exposed && !config.auth_off_exposed {
        anyhow::bail!(
            "authentication is off and {} is not a loopback address: anyone who reaches it could do anything. \
             Turn authentication on, listen on 127.0.0.1, or say `auth = \"off\"` in the configuration file",
            config.listen
        );
    }
    tracing::warn!(listen = %config.listen, "AUTHENTICATION IS OFF: every client may do anything, and nothing is audited by principal");
    Ok(())
}

/// Creates the audit topic on first start (one partition, kept 90 days).
fn ensure_audit_topic(store: &Store) -> anyhow::Result<()> {
    if store.topic(auth::audit::AUDIT_TOPIC).is_some() {
        return Ok(());
    }
    let meta = silt_storage::TopicMeta {
        name: auth::audit::AUDIT_TOPIC.into(),
        partitions: 1,
        retention_ms: Some(auth::audit::AUDIT_RETENTION_MS),
        retention_bytes: None,
        created_ms: clock::now_ms(),
    };
    match store.create_topic(meta) {
        Ok(()) | Err(silt_storage::StorageError::TopicExists(_)) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("creating the audit topic")),
    }
}
