//! The HTTP admin port: `GET /health`.

use std::net::SocketAddr;

use anyhow::Context;
use axum::routing::get;
use axum::Router;

/// Binds the admin listener (so a port conflict fails startup, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the admin port {addr}"))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new().route("/health", get(|| async { "ok\n" }));
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin server failed");
    }
}
