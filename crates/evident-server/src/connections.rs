//! The accept loop: serves the HTTP application on a listener (plain TCP or TLS) with the
//! limits that keep slow and hostile clients from starving the others. Every connection is
//! its own task, so a client that stalls holds only its own connection; on top of that:
//! - request headers must arrive in full within [`ConnectionLimits::header_timeout`] of their
//!   first byte (slowloris), else the connection is closed;
//! - request headers larger than [`ConnectionLimits::max_header_bytes`] (or more than 100 of
//!   them) are answered 431 and the connection closed;
//! - at most [`ConnectionLimits::max_connections`] connections are served at once; past that
//!   the loop stops accepting (new clients wait in the kernel's backlog) until one closes.
//!
//! Request bodies have their own deadline where they are read (`http/events.rs`), after
//! authentication. Graceful shutdown stops accepting, lets in-flight requests finish and
//! closes idle connections.
//!
//! Closing is lingering ([`Lingering`]): a connection answered before its request body was
//! read (a 413 for an oversized body, a 401) sends its end of stream, then reads and discards
//! what the client still sends for a moment. Closing with unread data would make the kernel
//! reset the connection, and a reset can destroy the answer before the client reads it.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time allowed from the first byte of a request's headers to their end.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; at least 8192.
    pub max_header_bytes: usize,
    /// Connections served at once.
    pub max_connections: usize,
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
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request| {
                request.extensions_mut().insert(ConnectInfo(remote));
                app.clone().oneshot(request)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
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
