//! The HTTP client the benchmark drives the server with: one async reqwest client (HTTP/1.1,
//! keep-alive, connections pooled and reused, Nagle off), the bearer key, and the few calls
//! the measurements need. Each call checks the status so that a failing server cannot look
//! fast.

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use std::time::Duration;

/// A cheap-to-clone handle on the server's API.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    auth: HeaderValue,
}

impl Api {
    pub fn new(base: &str, key: &str) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(None)
            .pool_max_idle_per_host(1024)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .context("cannot build the HTTP client")?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key is not a valid header value")?;
        auth.set_sensitive(true);
        Ok(Api {
            client,
            base: base.to_owned(),
            auth,
        })
    }

    /// Appends `body` (`events` events) and checks that the server answered 201 with one
    /// receipt per event.
    pub async fn append(&self, body: Bytes, events: usize) -> anyhow::Result<()> {
        let response = self
            .client
            .post(format!("{}/api/v1/events", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .context("append: request failed")?;
        let status = response.status();
        let answer = response.bytes().await.context("append: reading answer")?;
        if status != reqwest::StatusCode::CREATED {
            bail!(
                "append: server answered {status}: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(500)])
            );
        }
        // Counting `"seq":` keys is enough to know every event got a receipt, without
        // spending client CPU on parsing the answer.
        let receipts = count(&answer, b"\"seq\":");
        if receipts != events {
            bail!("append: {events} events sent, {receipts} receipts received");
        }
        Ok(())
    }

    /// GET `path_and_query` (under the base URL), returning the response once its status is
    /// known to be 200.
    /// POST with no body; the answer's status and JSON (publish on demand).
    pub async fn post_empty(
        &self,
        path_and_query: &str,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = self
            .client
            .post(format!("{}{path_and_query}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .with_context(|| format!("POST {path_and_query}: request failed"))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.context("reading the answer")?;
        Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
    }

    pub async fn get(&self, path_and_query: &str) -> anyhow::Result<reqwest::Response> {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .with_context(|| format!("GET {path_and_query}: request failed"))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            return Err(anyhow!(
                "GET {path_and_query}: server answered {status}: {}",
                &text[..text.len().min(500)]
            ));
        }
        Ok(response)
    }

    /// Waits until `/api/v1/healthz` answers 200.
    pub async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ok = self
                .client
                .get(format!("{}/api/v1/healthz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the server did not become healthy within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Occurrences of `needle` in `haystack`.
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| w == &needle)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_receipts() {
        let answer = br#"{"receipts":[{"seq":0,"hash":"aa"},{"seq":1,"hash":"bb"}]}"#;
        assert_eq!(count(answer, b"\"seq\":"), 2);
        assert_eq!(count(b"", b"\"seq\":"), 0);
    }
}
