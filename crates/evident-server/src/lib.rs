//! Evident's service: everything between the HTTP socket and the storage backend.
//!
//! [`config`] reads settings; [`node`] owns the data directory, its keys and the started node;
//! [`sequencer`] is the one writer (group commit, checkpoints); [`auth`] the API keys and
//! roles; [`audit`] the self-audit events and the brute-force limiter; [`tls`] HTTPS on the
//! listener; [`verification`] and [`export`] read the log out (in chunks, [`scan`]) through
//! the integrity core;
//! [`http`] is the axum API; [`metrics`] what is counted; [`consumers`] is the one way out
//! of the committed log, by durable cursor, for everything that ships entries elsewhere;
//! [`review`] the four-eyes rules, their reports and overdue alerts; [`alerts`] the alert
//! rules and [`webhooks`] their signed delivery. The integrity rules themselves live
//! in `evident-core`, storage in `evident-store`. Logging uses `tracing`; installing a
//! subscriber is the binary's job.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod client_ip;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod consumers;
pub mod counts;
pub mod dashboard;
pub mod export;
pub mod file_modes;
pub mod formats;
pub mod forward;
pub mod guard;
pub mod http;
pub mod keyring;
pub mod metrics;
pub mod node;
pub mod publish;
pub mod recent;
pub mod retention;
pub mod review;
pub mod scan;
pub mod self_check;
pub mod sequencer;
pub mod tls;
pub mod verification;
pub mod webhooks;
pub mod witness;

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
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Alerts(#[from] alerts::RulesError),
}

/// The HTTP application for `state` (for in-process tests and embedding).
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}

/// Milliseconds since the Unix epoch now (what the server stamps keys and checkpoints with).
pub fn now_ms() -> evident_core::event::Millis {
    sequencer::now_ms()
}

/// Pending connections the kernel queues for the listener (capped by `net.core.somaxconn`).
/// Issue 16: tokio's default of 1024 overflowed under a burst of new clients (an open-loop
/// load), and a dropped SYN is retried by the client only after 1 s, 3 s, 7 s…: the
/// multi-second tail of the open-loop benchmark.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (address reuse as `TcpListener::bind` sets it).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Opens the node, listens on `config.listen` (with TLS when configured), prints the
/// address, and serves until SIGINT or SIGTERM; then stops taking requests, lets in-flight
/// ones finish, commits what is queued and signs a final checkpoint.
pub async fn run(config: ServerConfig) -> Result<(), ServeError> {
    config.validate().map_err(NodeError::from)?;
    let addr = config.listen;
    // Bound before anything is created: a listen address in use or not this machine's
    // leaves no new data directory (or certificate) behind.
    let listener = listen(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let tls_config = if config.tls_enabled() {
        let config = config.clone();
        Some(
            tokio::task::spawn_blocking(move || tls_server_config(&config))
                .await
                .map_err(|e| ServeError::Task(e.to_string()))??,
        )
    } else {
        None
    };
    let node = tokio::task::spawn_blocking(move || Node::open(config))
        .await
        .map_err(|e| ServeError::Task(e.to_string()))??;
    serve_with(node, listener, tls_config, shutdown_signal()).await
}

/// The TLS configuration `config` asks for: its PEM files, or the data directory's
/// self-signed development certificate (generated on first use).
pub fn tls_server_config(
    config: &ServerConfig,
) -> Result<std::sync::Arc<rustls::ServerConfig>, tls::TlsError> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        // In a cluster the node serves its cluster certificate and requires client ones.
        _ if config.cluster.enabled() => match (&config.cluster.cert, &config.cluster.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => {
                return Err(tls::TlsError::Config(
                    "cluster.cert and cluster.key must be set".to_owned(),
                ));
            }
        },
        _ => {
            file_modes::create_private_dir(&config.data_dir).map_err(|source| {
                tls::TlsError::Io {
                    path: config.data_dir.clone(),
                    source,
                }
            })?;
            tls::self_signed(&config.data_dir, config.listen)?
        }
    };
    let (chain, key) = tls::load_pem(&cert, &key)?;
    if config.cluster.enabled() {
        return cluster::server_config(&config.cluster, chain, key);
    }
    tls::server_config(chain, key)
}

/// Serves `node` on `listener` (plain HTTP) until `shutdown` resolves, then shuts down
/// gracefully.
pub async fn serve<F>(
    node: Node,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(node, listener, None, shutdown).await
}

/// Serves `node` on `listener`, over TLS when `tls` is given, until `shutdown` resolves.
pub async fn serve_with<F>(
    node: Node,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Printed on stdout so that scripts and tests can find the port when listening on :0.
    println!("evident listening on {scheme}://{local}");
    tracing::info!(addr = %local, tls = tls.is_some(), "listening");
    let state = AppState::new(node);
    state.set_tls(tls.is_some());
    let rules = {
        let config = state.node().config().clone();
        tokio::task::spawn_blocking(move || alerts::RuleSet::open(&config.alerts, &config.data_dir))
            .await
            .map_err(|e| ServeError::Task(e.to_string()))??
    };
    state.alerts().set_rules(rules);
    let limits = state.node().config().connection_limits();
    let app = app(state.clone());
    let flag = state.clone();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        flag.begin_shutdown();
    };
    let flusher = tokio::spawn(flush_key_usage(state.clone()));
    let pruner = tokio::spawn(retention::run_daily(state.clone()));
    let verifier = tokio::spawn(self_check::run(state.clone()));
    let counter = tokio::spawn(counts::run(state.clone()));
    let consumers = start_consumers(&state);
    let result: Result<(), ServeError> = match tls {
        None => {
            use axum::serve::ListenerExt as _;
            // Small answers go out at once rather than waiting for the client's ACK.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            connections::serve(listener, app, limits, graceful).await;
            Ok(())
        }
        Some(config) => match tls::TlsListener::new(listener, config) {
            Ok(listener) => {
                connections::serve(listener, app, limits, graceful).await;
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
    };
    flusher.abort();
    pruner.abort();
    verifier.abort();
    counter.abort();
    // At-least-once: a consumer stopped between a delivery and its next cursor save
    // delivers those entries again after the restart.
    for consumer in consumers {
        consumer.abort();
    }
    let closing = state.clone();
    tokio::task::spawn_blocking(move || {
        closing.usage().flush(&**closing.store());
        closing.node().shutdown();
    })
    .await
    .map_err(|e| ServeError::Task(e.to_string()))?;
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// Starts every configured consumer of the committed log, each on its own task reading from
/// its durable cursor (see [`consumers`]).
fn start_consumers(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    handles.extend(review::spawn_overdue_checkers(state));
    handles.extend(webhooks::spawn_all(state));
    if let Some(publisher) = publish::start(state) {
        handles.push(publisher);
    }
    handles.extend(forward::spawn_all(state));
    handles.extend(witness::spawn_all(state));
    handles
}

/// Writes the keys' last use to the store every [`auth::USAGE_FLUSH_EVERY`].
async fn flush_key_usage(state: AppState) {
    let mut tick = tokio::time::interval(auth::USAGE_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || state.usage().flush(&**state.store())).await;
    }
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

    #[tokio::test]
    async fn the_listener_queues_a_burst_of_new_clients() {
        // The kernel reports a listening socket's backlog as its Send-Q (`ss -ltn`).
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("this test needs `ss` (Debian package iproute2: apt-get install iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        let send_q: u32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unexpected `ss` output: {text:?}"));
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(send_q, LISTEN_BACKLOG.min(somaxconn));
        assert!(send_q > 1024 || somaxconn <= 1024, "backlog {send_q}");
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
