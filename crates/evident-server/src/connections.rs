//! The accept loop: serves the HTTP application on a listener (plain TCP or TLS) with the
//! limits that keep slow and hostile clients from starving the others. Every connection is
//! its own task, so a client that stalls holds only its own connection; on top of that:
//! - request headers must arrive in full within [`ConnectionLimits::header_timeout`] of their
//!   first byte (slowloris), else the connection is closed;
//! - a request head (request line and headers) larger than
//!   [`ConnectionLimits::max_header_bytes`], counted as [`head_size`] says, or with more than
//!   100 headers, is answered 431 and the connection closed;
//! - at most [`ConnectionLimits::max_connections`] connections are served at once; past that
//!   the loop stops accepting (new clients wait in the kernel's backlog) until one closes;
//! - at most [`ConnectionLimits::max_connections_per_ip`] of them from one address (trusted
//!   proxies excepted), so that one client cannot take every slot: a connection past that is
//!   answered 429 `too_many_connections` and closed.
//!
//! Request bodies have their own deadline where they are read (`http/events.rs`), after
//! authentication. Graceful shutdown stops accepting, lets in-flight requests finish and
//! closes idle connections.
//!
//! Closing is lingering ([`Lingering`]): a connection answered before its request body was
//! read (a 413 for an oversized body, a 401) sends its end of stream, then reads and discards
//! what the client still sends for a moment. Closing with unread data would make the kernel
//! reset the connection, and a reset can destroy the answer before the client reads it.

use crate::client_ip::Cidr;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// Limits applied to every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time allowed from the first byte of a request's headers to their end.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; at least 8192.
    pub max_header_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one address.
    pub max_connections_per_ip: usize,
    /// Addresses the per-address cap does not apply to (the trusted proxies, which carry
    /// many clients' connections).
    pub uncapped: Arc<[Cidr]>,
    /// In a cluster: who the connections' client certificates belong to (requests of a
    /// peer's connection carry its [`crate::cluster::PeerIdentity`]).
    pub cluster_peers: Option<Arc<crate::cluster::PeerIdentifier>>,
}

/// A connection that may carry a verified client certificate (TLS with client auth).
pub trait ClientCertificate {
    /// The client's end-entity certificate, when it presented one.
    fn client_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        None
    }
}

impl ClientCertificate for tokio::net::TcpStream {}

impl ClientCertificate for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn client_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        self.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.clone().into_owned())
    }
}

/// How many connections each address has open, against the per-address cap.
#[derive(Debug)]
struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted for its address; uncounted when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for one more connection from `ip`, or `None` when it has `limit` open.
    fn take(table: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = table.open.lock().ok()?;
        let count = open.entry(ip).or_insert(0);
        if *count >= table.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock() {
            if let Some(count) = open.get_mut(&self.ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}

/// The size of a request head as it is counted against `max_header_bytes`: the request line
/// `METHOD SP TARGET SP VERSION CRLF`, each header as `name: value CRLF`, and the final CRLF
/// (so a head sent in that usual form counts exactly its bytes).
pub fn head_size<B>(request: &hyper::Request<B>) -> usize {
    // Every HTTP/1 version is written `HTTP/x.y`.
    const VERSION: usize = "HTTP/1.1".len();
    let line =
        request.method().as_str().len() + 1 + request.uri().to_string().len() + 1 + VERSION + 2;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.as_bytes().len() + 2)
        .sum();
    line + headers + 2
}

/// A small JSON error answer that closes the connection.
fn closing_answer(
    status: hyper::StatusCode,
    code: &str,
    message: &str,
) -> axum::response::Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "application/json"),
        ("connection", "close"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
    response
}

/// How long a refused connection is given to take its 429.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers a connection past the per-address cap with 429 and closes it (lingering).
async fn refuse_connection<I: AsyncRead + AsyncWrite + Unpin>(io: I, limit: usize) {
    use tokio::io::AsyncWriteExt as _;
    let message = format!(
        "this address already has {limit} connections open (max_connections_per_ip); close one or retry later"
    );
    let body = serde_json::json!({"error": {"code": "too_many_connections", "message": message}})
        .to_string();
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\nx-content-type-options: nosniff\r\n\
         cache-control: no-store\r\n\r\n",
        body.len()
    );
    let mut io = Lingering::new(io);
    let answer = async {
        io.write_all(head.as_bytes()).await?;
        io.write_all(body.as_bytes()).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, answer).await;
}

/// hyper's smallest read buffer.
const MIN_HEADER_BYTES: usize = 8192;
/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// How much a closing connection reads and discards at most.
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the open connections to finish their in-flight requests.
pub async fn serve<L, F>(mut listener: L, app: Router, limits: ConnectionLimits, shutdown: F)
where
    L: Listener<Addr = SocketAddr>,
    L::Io: ClientCertificate,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = Arc::new(PerAddress {
        limit: limits.max_connections_per_ip.max(1),
        open: Mutex::new(HashMap::new()),
    });
    // Raised once on shutdown; every connection task watches it.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (io, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let ip = remote.ip().to_canonical();
        let slot = if limits.uncapped.iter().any(|c| c.contains(ip)) {
            None
        } else {
            match PerAddress::take(&per_address, ip) {
                Some(slot) => Some(slot),
                None => {
                    tracing::warn!(%remote, limit = per_address.limit, "connection refused: too many from this address");
                    let limit = per_address.limit;
                    tokio::spawn(async move {
                        refuse_connection(io, limit).await;
                        drop(permit);
                    });
                    continue;
                }
            }
        };
        let app = app.clone();
        let mut stop = stop_rx.clone();
        let max_header_bytes = limits.max_header_bytes;
        let header_timeout = limits.header_timeout;
        let peer = limits.cluster_peers.as_ref().and_then(|peers| {
            io.client_certificate()
                .and_then(|cert| peers.identify(&cert))
        });
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                if let Some(peer) = &peer {
                    request.extensions_mut().insert(peer.clone());
                }
                let app = app.clone();
                async move {
                    let size = head_size(&request);
                    if size > max_header_bytes {
                        return Ok(closing_answer(
                            hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "headers_too_large",
                            &format!(
                                "the request line and headers are {size} bytes; at most {max_header_bytes} are accepted (max_header_bytes)"
                            ),
                        ));
                    }
                    app.oneshot(request).await
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_header_bytes.max(MIN_HEADER_BYTES));
            let io = TokioIo::new(Lingering::new(io));
            let mut conn = pin!(builder.serve_connection(io, service));
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%remote, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stop.changed(), if !stopping => {
                        stopping = true;
                        if changed.is_ok() {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds a permit until it ends.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// A connection whose shutdown lingers: it sends its end of stream, then drains what the peer
/// still sends until the peer closes, [`LINGER`] passes or [`LINGER_BYTES`] were discarded.
pub struct Lingering<T> {
    io: T,
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    drained: usize,
}

impl<T> Lingering<T> {
    pub fn new(io: T) -> Lingering<T> {
        Lingering {
            io,
            linger: None,
            drained: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 8192];
        loop {
            if let Some(deadline) = this.linger.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    this.drained += buf.filled().len();
                    if this.drained >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                // The peer reset or the read failed: nothing more to wait for.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
