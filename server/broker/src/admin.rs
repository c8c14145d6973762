//! The HTTP admin port: `GET /health` and `GET /metrics` (Prometheus text format). Health is
//! always open; with `metrics_require_token`, metrics need `Authorization: Bearer TOKEN` of a
//! principal that may `describe` `*`, and each refusal is audited.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::ConnectInfo;
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
    require_token: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let metrics = move |ConnectInfo(remote): ConnectInfo<SocketAddr>, headers: axum::http::HeaderMap| {
        let broker = broker.clone();
        async move {
            if require_token {
                let bearer = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                if let Err(r) = broker.auth.check_bearer(bearer, remote, "scrape-metrics") {
                    return Err((axum::http::StatusCode::UNAUTHORIZED, format!("{}\n", r.message)));
                }
            }
            // Refreshing the state gauges reads every partition's and processor's state.
            let text = tokio::task::spawn_blocking(move || broker.render_metrics()).await.unwrap_or_default();
            Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
        }
    };
    let app = Router::new().route("/health", get(|| async { "ok\n" })).route("/metrics", get(metrics));
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "admin server failed");
    }
}
