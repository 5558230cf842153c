//! The HTTP client of the client commands: the `--url`/`--key` arguments, timeouts, and the
//! translation of the API's error body `{"error":{"code","message","field","index"}}` into a
//! readable error. Blocking (reqwest), since each command does one thing at a time.

use anyhow::Context as _;
use clap::Args;
use reqwest::Url;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use std::fmt;
use std::time::Duration;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Base URL of the evident server.
    #[arg(long, env = "EVIDENT_URL", default_value = "http://127.0.0.1:7707")]
    pub url: String,
    /// API key (`evk_…`), sent as a bearer token.
    #[arg(long, env = "EVIDENT_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Seconds to wait for the server (connecting, and between reads of an answer).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// PEM file of the certificate authority (or the self-signed certificate) to trust for an
    /// https:// URL, in place of the system's roots.
    #[arg(long, value_name = "FILE", env = "EVIDENT_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

/// An error answer from the server.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: reqwest::StatusCode,
    pub code: Option<String>,
    pub message: String,
    pub field: Option<String>,
    pub index: Option<u64>,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server answered {}", self.status)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(field) = &self.field {
            write!(f, "\n  field: {field}")?;
        }
        if let Some(index) = self.index {
            write!(f, "\n  event index in the batch: {index}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    field: Option<String>,
    index: Option<u64>,
}

/// Longest non-JSON error body quoted back to the user.
const MAX_QUOTED_BODY: usize = 500;

impl ApiFailure {
    fn from_response(response: Response) -> ApiFailure {
        let status = response.status();
        let body = response.bytes().unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => ApiFailure {
                status,
                code: Some(error.code),
                message: error.message,
                field: error.field,
                index: error.index,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(&body);
                let mut message: String = text.trim().chars().take(MAX_QUOTED_BODY).collect();
                if message.is_empty() {
                    message = "(no error body)".to_owned();
                }
                ApiFailure {
                    status,
                    code: None,
                    message,
                    field: None,
                    index: None,
                }
            }
        }
    }
}

/// A configured connection to one server.
pub struct ApiClient {
    http: Client,
    base: Url,
    key: Option<String>,
}

impl ApiClient {
    /// A client with the timeout from `args`.
    pub fn new(args: &ClientArgs) -> anyhow::Result<ApiClient> {
        Self::with_timeout(args, Some(Duration::from_secs(args.timeout)))
    }

    /// A client with its own read timeout (`None`: wait as long as it takes, e.g. for a
    /// verification of a big log that answers only at the end).
    pub fn with_timeout(args: &ClientArgs, timeout: Option<Duration>) -> anyhow::Result<ApiClient> {
        let mut base =
            Url::parse(&args.url).with_context(|| format!("--url {:?} is not a URL", args.url))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(crate::output::usage(format!(
                "--url {:?}: expected an http:// or https:// URL",
                args.url
            )));
        }
        // Join relative paths under the base path, whatever the user typed.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = Client::builder()
            .connect_timeout(Duration::from_secs(args.timeout.clamp(1, 60)))
            .timeout(timeout)
            .user_agent(concat!("evident-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --ca-cert {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-cert {}: not a PEM certificate", path.display()))?;
            if certs.is_empty() {
                return Err(crate::output::usage(format!(
                    "--ca-cert {}: no certificate in the file",
                    path.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(ApiClient {
            http,
            base,
            key: args.key.clone(),
        })
    }

    /// The URL of API route `path` (relative, e.g. `api/v1/checkpoint`) with `query`.
    pub fn url(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Url> {
        let mut url = self
            .base
            .join(path)
            .with_context(|| format!("cannot build a URL for {path}"))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        Ok(url)
    }

    fn authorized(&self, request: RequestBuilder) -> anyhow::Result<RequestBuilder> {
        match &self.key {
            Some(key) => Ok(request.bearer_auth(key.trim())),
            None => Err(crate::output::usage(
                "this command needs an API key: pass --key or set EVIDENT_KEY",
            )),
        }
    }

    fn send(&self, request: RequestBuilder, what: &Url) -> anyhow::Result<Response> {
        let response = request.send().map_err(|e| {
            if let Some(hint) = tls_hint(&e, what) {
                return anyhow::anyhow!("cannot talk to evident at {}: {hint}", origin_of(what));
            }
            let hint = if e.is_connect() {
                " (is `evident serve` running there?)"
            } else if e.is_timeout() {
                " (timed out; raise --timeout)"
            } else {
                ""
            };
            anyhow::anyhow!(
                "cannot reach evident at {}{hint}: {}",
                origin_of(what),
                with_causes(&e)
            )
        })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(ApiFailure::from_response(response).into())
        }
    }

    /// GET with the API key; the answer when it is a 2xx, else the server's error.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Response> {
        let url = self.url(path, query)?;
        let request = self.authorized(self.http.get(url.clone()))?;
        self.send(request, &url)
    }

    /// GET and parse the JSON answer.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let response = self.get(path, query)?;
        let body = response
            .bytes()
            .with_context(|| format!("reading the answer to {path}"))?;
        serde_json::from_slice(&body).with_context(|| format!("unexpected answer to {path}"))
    }

    /// GET a text answer.
    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        self.get(path, &[])?
            .text()
            .with_context(|| format!("reading the answer to {path}"))
    }

    /// POST `body` with `content_type` and the API key; parse the JSON answer.
    pub fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        self.post_with_query(path, &[], content_type, body)
    }

    /// POST `body` as JSON to `path` with `query`; parse the JSON answer.
    pub fn post_json_query<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        let bytes = serde_json::to_vec(body).context("encoding the request body")?;
        self.post_with_query(path, query, "application/json", bytes)
    }

    fn post_with_query<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        content_type: &'static str,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        let url = self.url(path, query)?;
        let request = self.authorized(
            self.http
                .post(url.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
                .body(body),
        )?;
        let body = self
            .send(request, &url)?
            .bytes()
            .with_context(|| format!("reading the answer to {path}"))?;
        serde_json::from_slice(&body).with_context(|| format!("unexpected answer to {path}"))
    }
}

/// An error and its causes, `outer: inner: …` (reqwest keeps the useful part, such as
/// "Connection refused", in the causes).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// What to do about a TLS mistake, in words, when `error` is one: the scheme does not match
/// what the server speaks, or its certificate is not one this client trusts for that name.
/// `None` for any other failure.
fn tls_hint(error: &reqwest::Error, url: &Url) -> Option<String> {
    let mut other = url.clone();
    let https = url.scheme() == "https";
    let _ = other.set_scheme(if https { "http" } else { "https" });
    let other = origin_of(&other);
    if let Some(tls) = rustls_cause(error) {
        {
            return Some(match tls {
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                    format!("it does not speak TLS there (plain HTTP?): use {other}")
                }
                rustls::Error::InvalidCertificate(cert) => certificate_hint(cert, url),
                rustls::Error::AlertReceived(alert) => format!(
                    "the server refused the TLS handshake ({alert:?}): if it asks for a client \
                     certificate, this command cannot give one"
                ),
                other_tls => format!("TLS failed: {other_tls}"),
            });
        }
    }
    // Plain HTTP sent to a TLS port: the answer is a TLS record, not HTTP.
    if !https && with_causes(error).contains("invalid HTTP version parsed") {
        return Some(format!(
            "it answered with something that is not HTTP (TLS?): use {other}"
        ));
    }
    None
}

/// The rustls error behind `error`, however deep: through `source()` and into the errors
/// that `io::Error`s wrap (whose `source()` skips them).
fn rustls_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(tls) = rustls_cause(inner) {
            return Some(tls);
        }
    }
    error.source().and_then(rustls_cause)
}

fn certificate_hint(error: &rustls::CertificateError, url: &Url) -> String {
    use rustls::CertificateError as E;
    let host = url.host_str().unwrap_or("the host");
    match error {
        E::UnknownIssuer | E::BadSignature => "its certificate is not signed by an authority \
             this client trusts: pass --ca-cert FILE with the server's CA certificate (for \
             `evident serve --tls-self-signed`, the file tls/cert.pem in its data directory)"
            .to_owned(),
        E::NotValidForName | E::NotValidForNameContext { .. } => format!(
            "its certificate is not valid for the name {host:?}: connect with a name the \
             certificate lists (for a self-signed development certificate: 127.0.0.1 or \
             localhost as it was created), or issue one for {host:?}"
        ),
        E::Expired | E::ExpiredContext { .. } => {
            "its certificate has expired: the server needs a new one".to_owned()
        }
        E::NotValidYet | E::NotValidYetContext { .. } => {
            "its certificate is not valid yet: check the clocks of both machines".to_owned()
        }
        E::Revoked => "its certificate has been revoked".to_owned(),
        other => format!("its certificate is refused ({other:?}): check --ca-cert"),
    }
}

/// `scheme://host:port` of a URL, for messages (never the path or query).
fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}
