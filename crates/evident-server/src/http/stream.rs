//! Streaming a synchronous writer (an export running on a blocking thread) into a response
//! body through a small bounded channel: memory stays constant however many rows flow, and a
//! slow client slows the writer down instead of filling memory.

use super::error::ApiError;
use crate::export::ExportWriteError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use evident_store::StoreError;
use futures_util::StreamExt;
use std::io::{self, Write};
use tokio::sync::mpsc;

/// Bytes collected before a chunk is handed to the response.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the writer and the socket.
const CHANNEL_CHUNKS: usize = 8;

type Item = Result<Bytes, io::Error>;

/// A `Write` that sends its output, in chunks, to the response body.
pub struct ChannelWriter {
    tx: mpsc::Sender<Item>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// The answer for an export that failed before its first chunk.
fn export_error(e: io::Error) -> ApiError {
    let Some(inner) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ExportWriteError>())
    else {
        return ApiError::internal(format!("export failed: {e}"));
    };
    // What is stored cannot make this export: a finding about the data, not a fault of the
    // server.
    match inner {
        ExportWriteError::Damaged { seq, problem } => ApiError::log_damaged(*seq, problem),
        ExportWriteError::Store(StoreError::Corrupt { seq, problem }) => {
            ApiError::log_damaged(*seq, problem)
        }
        ExportWriteError::Store(StoreError::NotFound(what)) => {
            ApiError::log_damaged(None, format!("{what} is missing from the store"))
        }
        ExportWriteError::MissingNodes(what) => {
            ApiError::log_damaged(None, format!("stored Merkle nodes: {what}"))
        }
        _ => ApiError::internal(format!("export failed: {e}")),
    }
}

/// Runs `write` on a blocking thread and streams what it writes as a 200 response with
/// `content_type` (and `disposition`, when given). An error before the first chunk is sent
/// (the first 64 KiB are gathered first, so damage met early is always caught here) becomes
/// an error response, 409 `log_damaged` for damaged stored data; an error later aborts the
/// body (no final chunk), so that the client sees a truncated transfer rather than a
/// complete-looking file, and a saved bundle fails verification as truncated (no trailer).
pub async fn stream_response<F>(
    content_type: &'static str,
    disposition: Option<&'static str>,
    write: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(&mut ChannelWriter) -> Result<(), ExportWriteError> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Item>(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK_BYTES),
        };
        let result = write(&mut writer).and_then(|()| writer.flush().map_err(Into::into));
        if let Err(e) = result {
            if !matches!(&e, ExportWriteError::Io(io) if io.kind() == io::ErrorKind::BrokenPipe) {
                tracing::error!(error = %e, "export failed");
            }
            // The error itself travels, so that one before the first chunk keeps its status.
            let _ = tx.blocking_send(Err(io::Error::other(e)));
        }
    });
    let first = match rx.recv().await {
        Some(Ok(chunk)) => Some(chunk),
        Some(Err(e)) => return Err(export_error(e)),
        None => None,
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let body = match first {
        Some(chunk) => {
            Body::from_stream(futures_util::stream::once(async move { Ok(chunk) }).chain(rest))
        }
        None => Body::empty(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(disposition) = disposition {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static(disposition),
        );
    }
    Ok(response)
}
