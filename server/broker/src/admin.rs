//! The HTTP admin port: `GET /health` and `GET /metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;

use crate::requests::Broker;

/// Binds the admin listener (so a port conflict fails startup, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the admin port {addr}"))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let metrics = move || {
        let broker = broker.clone();
        async move {
            // Refreshing the state gauges reads every partition's and processor's state.
            let text = tokio::task::spawn_blocking(move || broker.render_metrics()).await.unwrap_or_default();
            ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
        }
    };
    let app = Router::new().route("/health", get(|| async { "ok\n" })).route("/metrics", get(metrics));
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin server failed");
    }
}
