//! RFC 5426 syslog over UDP: one message per datagram, no framing. UDP confirms nothing, so
//! a message is done once the datagram is handed to the kernel; the destination's
//! `max_message_bytes` (truncation rule in `rfc5424.rs`) keeps each within one datagram.

use super::{SyslogTransport, TransportError};
use tokio::net::UdpSocket;

/// A UDP socket "connected" to the destination (so that ICMP errors come back as errors).
pub struct UdpTransport {
    address: String,
    socket: Option<UdpSocket>,
}

impl UdpTransport {
    pub fn new(address: String) -> UdpTransport {
        UdpTransport {
            address,
            socket: None,
        }
    }

    async fn socket(&mut self) -> Result<&UdpSocket, TransportError> {
        if self.socket.is_none() {
            let target = super::resolve(&self.address).await?;
            let local = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(local).await.map_err(TransportError::Io)?;
            socket.connect(target).await.map_err(TransportError::Io)?;
            self.socket = Some(socket);
        }
        self.socket.as_ref().ok_or(TransportError::Closed)
    }
}

impl SyslogTransport for UdpTransport {
    async fn send(&mut self, messages: &[Vec<u8>]) -> Result<(), TransportError> {
        let socket = self.socket().await?;
        for message in messages {
            if let Err(e) = socket.send(message).await {
                self.socket = None;
                return Err(TransportError::Io(e));
            }
        }
        Ok(())
    }

    fn is_alive(&mut self) -> bool {
        true
    }

    fn reset(&mut self) {
        self.socket = None;
    }

    fn confirms_by_connection(&self) -> bool {
        false
    }
}
