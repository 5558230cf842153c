//! Evident's service: everything between the HTTP socket and the storage backend.
//!
//! [`config`] reads settings; [`node`] owns the data directory, its keys and the started node;
//! [`sequencer`] is the one writer (group commit, checkpoints); [`auth`] the API keys and
//! roles; [`verification`] and [`export`] read the log out (in chunks, [`scan`]) through the
//! integrity core;
//! [`http`] is the axum API; [`metrics`] what is counted. The integrity rules themselves live
//! in `evident-core`, storage in `evident-store`. Logging uses `tracing`; installing a
//! subscriber is the binary's job.

pub mod auth;
pub mod config;
pub mod export;
pub mod http;
pub mod metrics;
pub mod node;
pub mod scan;
pub mod sequencer;
pub mod verification;

#[cfg(test)]
mod test_support;

pub use config::ServerConfig;
pub use http::AppState;
pub use node::{Node, NodeError, NodeFiles};

use std::future::Future;
use std::net::SocketAddr;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("background task failed: {0}")]
    Task(String),
}

/// The HTTP application for `state` (for in-process tests and embedding).
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}

/// Milliseconds since the Unix epoch now (what the server stamps keys and checkpoints with).
pub fn now_ms() -> evident_core::event::Millis {
    sequencer::now_ms()
}

/// Opens the node, listens on `config.listen`, prints the address, and serves until SIGINT or
/// SIGTERM; then stops taking requests, lets in-flight ones finish, commits what is queued and
/// signs a final checkpoint.
pub async fn run(config: ServerConfig) -> Result<(), ServeError> {
    let addr = config.listen;
    let node = tokio::task::spawn_blocking(move || Node::open(config))
        .await
        .map_err(|e| ServeError::Task(e.to_string()))??;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve(node, listener, shutdown_signal()).await
}

/// Serves `node` on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve<F>(
    node: Node,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr()?;
    // Printed on stdout so that scripts and tests can find the port when listening on :0.
    println!("evident listening on http://{local}");
    tracing::info!(addr = %local, "listening");
    let state = AppState::new(node);
    let app = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let flag = state.clone();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            flag.begin_shutdown();
        })
        .await;
    let closing = state.clone();
    tokio::task::spawn_blocking(move || closing.node().shutdown())
        .await
        .map_err(|e| ServeError::Task(e.to_string()))?;
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{event_json, test_config};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request over a fresh connection; returns the status line and the body.
    async fn http(addr: SocketAddr, request: String) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8(response).unwrap();
        let status = text.lines().next().unwrap_or("").to_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn serve_answers_over_tcp_and_shuts_down_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            checkpoint_every_ms: 600_000,
            ..test_config(tmp.path())
        };
        let node = Node::open(config.clone()).unwrap();
        let (key, _) =
            auth::create_key(&**node.store(), auth::Role::Owner, None, None, now_ms()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(node, listener, async {
            let _ = stopped.await;
        }));

        let body = event_json("alice", "auth.login").to_string();
        let (status, reply) = http(
            addr,
            format!(
                "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(status.contains("201"), "{status}\n{reply}");
        let (status, _) = http(
            addr,
            "GET /api/v1/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
        )
        .await;
        assert!(status.contains("200"), "{status}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();

        // The lock is released, the event is there, and shutdown signed a final checkpoint.
        let node = Node::open(config).unwrap();
        assert_eq!(node.sequencer().size(), 1);
        let checkpoint = node.store().latest_checkpoint().unwrap().unwrap();
        assert_eq!(checkpoint.size, 1);
        let keys = node.store().keys().unwrap();
        assert!(
            keys.iter()
                .any(|k| k.last_used_ip.as_deref() == Some("127.0.0.1"))
        );
        node.shutdown();
    }
}
