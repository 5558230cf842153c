//! Syslog over plain TCP with RFC 6587 octet-counting framing (`LEN SP MSG`, as RFC 5425
//! frames TLS). The connection is opened on first use and after any failure; a receiver
//! closing it is noticed without sending (see [`stream_is_open`]).

use super::{SyslogTransport, TransportError};
use futures_util::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub struct TcpTransport {
    address: String,
    stream: Option<TcpStream>,
}

impl TcpTransport {
    pub fn new(address: String) -> TcpTransport {
        TcpTransport {
            address,
            stream: None,
        }
    }
}

/// Opens a TCP connection to `address` (host:port), with a bounded wait.
pub async fn connect(address: &str) -> Result<TcpStream, TransportError> {
    let target = super::resolve(address).await?;
    let stream = tokio::time::timeout(super::CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| TransportError::Timeout("connecting"))?
        .map_err(TransportError::Io)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Writes `messages`, each octet-counted, as one buffered write, with a bounded wait.
pub async fn write_framed<S: AsyncWrite + Unpin>(
    stream: &mut S,
    messages: &[Vec<u8>],
) -> Result<(), TransportError> {
    let mut buf = Vec::with_capacity(messages.iter().map(|m| m.len() + 8).sum());
    for message in messages {
        buf.extend_from_slice(&super::rfc5424::octet_counted(message));
    }
    let write = async {
        stream.write_all(&buf).await?;
        stream.flush().await
    };
    tokio::time::timeout(super::WRITE_TIMEOUT, write)
        .await
        .map_err(|_| TransportError::Timeout("sending"))?
        .map_err(TransportError::Io)
}

/// Whether a syslog connection is still open. A syslog receiver never sends, so a read that
/// would not block means it closed (or reset) the connection, or spoke out of turn: either
/// way the connection cannot be trusted to have taken what was sent.
pub fn stream_is_open<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut byte = [0u8; 1];
    stream.read(&mut byte).now_or_never().is_none()
}

impl SyslogTransport for TcpTransport {
    async fn send(&mut self, messages: &[Vec<u8>]) -> Result<(), TransportError> {
        if self.stream.is_none() {
            self.stream = Some(connect(&self.address).await?);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(TransportError::Closed);
        };
        let result = write_framed(stream, messages).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn is_alive(&mut self) -> bool {
        self.stream.as_mut().is_none_or(stream_is_open)
    }

    fn reset(&mut self) {
        self.stream = None;
    }

    fn confirms_by_connection(&self) -> bool {
        true
    }
}
