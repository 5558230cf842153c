//! The object-store sink the publisher writes to: one small trait, [`Bucket`] (create-only
//! puts, the checkpoint's compare-and-swap, get, head, list, delete), and its implementation
//! over the `object_store` crate for S3-compatible services and local directories.
//!
//! S3: create-only is `If-None-Match: *`, the compare-and-swap is `If-Match: <etag>`, both
//! answered by the server (412 when they do not hold). A local directory has no conditional
//! update: create-only is a hard link (atomic, refused when the file exists), and the
//! checkpoint's swap compares the current file's ETag and then replaces it by an atomic rename,
//! which is safe against crashes but not against a second writer in the same directory at the
//! same moment (one publisher per directory; it is serialized within the process).

use super::{PublishConfig, Target};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use std::sync::Arc;
use std::time::Duration;

/// One object of a listing, its key relative to the target's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// An object's bytes and ETag.
pub type Fetched = (Bytes, Option<String>);

/// What a create-only put did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The object is new.
    Created,
    /// An object with that key was there already; nothing was written.
    AlreadyExists,
}

/// Why a bucket operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BucketError {
    /// The compare-and-swap found another object than expected (or one where none was).
    #[error("{key} was changed by someone else (expected {expected})")]
    Conflict { key: String, expected: String },
    /// The store refused or could not be reached.
    #[error("{operation} {key}: {message}")]
    Store {
        operation: &'static str,
        key: String,
        message: String,
    },
    /// The target cannot be set up from the configuration.
    #[error("publish: {0}")]
    Config(String),
}

/// Where the publisher writes. Keys are relative to the target's prefix.
pub trait Bucket: Send + Sync + 'static {
    /// The target, for messages and status (`s3://bucket/prefix`, `file:///dir`).
    fn describe(&self) -> String;
    /// Writes `bytes` at `key` unless an object is there already (then writes nothing).
    fn put_create_only<'a>(
        &'a self,
        key: &'a str,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Created, BucketError>>;
    /// Replaces the object at `key` if its ETag is still `expected` (`None`: only if there is
    /// none); the new ETag. [`BucketError::Conflict`] when it changed meanwhile.
    fn put_checkpoint_cas<'a>(
        &'a self,
        key: &'a str,
        bytes: Bytes,
        expected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, BucketError>>;
    /// The object's bytes and ETag, or `None` when there is none.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Fetched>, BucketError>>;
    /// The object's size and ETag, or `None` when there is none.
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, BucketError>>;
    /// Every object whose key starts with `prefix` (a directory-like prefix: `tile/0/`).
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, BucketError>>;
    /// Deletes the object (used only for partial tiles a wider one superseded).
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BucketError>>;
}

/// A [`Bucket`] over an `object_store` store: S3 or a local directory.
#[derive(Debug)]
pub struct StoreBucket {
    store: Arc<dyn ObjectStore>,
    /// Prepended to every key (no leading or trailing `/`; may be empty).
    prefix: String,
    description: String,
    /// The store answers `If-Match` itself (S3); otherwise the swap compares, then renames.
    native_cas: bool,
    /// Serializes the compare-then-rename swap of a local directory.
    swap: tokio::sync::Mutex<()>,
}

/// How long one request may take before the publisher gives up on it (and retries later).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl StoreBucket {
    /// Opens the target `config` names (no request is made).
    pub fn open(config: &PublishConfig) -> Result<StoreBucket, BucketError> {
        let target = config.parsed_target().map_err(BucketError::Config)?;
        let description = config.describe_target().map_err(BucketError::Config)?;
        match target {
            Target::Dir(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    BucketError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| BucketError::Config(format!("{}: {e}", dir.display())))?
                    .with_fsync(true);
                Ok(StoreBucket {
                    store: Arc::new(store),
                    prefix: String::new(),
                    description,
                    native_cas: false,
                    swap: tokio::sync::Mutex::new(()),
                })
            }
            Target::S3 { bucket, prefix } => {
                let store = s3_store(config, &bucket)?;
                Ok(StoreBucket {
                    store: Arc::new(store),
                    description,
                    prefix,
                    native_cas: true,
                    swap: tokio::sync::Mutex::new(()),
                })
            }
        }
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn relative(&self, path: &Path) -> String {
        let full = path.as_ref();
        if self.prefix.is_empty() {
            full.to_owned()
        } else {
            full.strip_prefix(&self.prefix)
                .map(|rest| rest.trim_start_matches('/').to_owned())
                .unwrap_or_else(|| full.to_owned())
        }
    }
}

/// The S3 store for `config`: credentials from the configuration, else its credentials file,
/// else the standard `AWS_*` environment variables.
fn s3_store(
    config: &PublishConfig,
    bucket: &str,
) -> Result<object_store::aws::AmazonS3, BucketError> {
    use object_store::aws::AmazonS3Builder;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(config.virtual_hosted_style);
    let region = config
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_owned());
    builder = builder.with_region(region);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
    }
    let credentials = config.credentials().map_err(BucketError::Config)?;
    if let Some(credentials) = credentials {
        builder = builder
            .with_access_key_id(credentials.access_key_id)
            .with_secret_access_key(credentials.secret_access_key);
        if let Some(token) = credentials.session_token {
            builder = builder.with_token(token);
        }
    }
    // The trust roots are given explicitly: the system's, then the CA file's (the HTTP client
    // is built without a platform verifier of its own).
    let mut options = object_store::ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_no_system_certificates(true)
        // Plain HTTP only to an endpoint configured as http:// (a local test server).
        .with_allow_http(
            config
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
        );
    for der in rustls_native_certs::load_native_certs().certs {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        if let Ok(certificate) = object_store::Certificate::from_pem(pem.as_bytes()) {
            options = options.with_root_certificate(certificate);
        }
    }
    if let Some(ca_file) = &config.ca_file {
        let pem = std::fs::read(ca_file).map_err(|e| {
            BucketError::Config(format!("publish.ca_file {}: {e}", ca_file.display()))
        })?;
        let certificates = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            BucketError::Config(format!("publish.ca_file {}: {e}", ca_file.display()))
        })?;
        if certificates.is_empty() {
            return Err(BucketError::Config(format!(
                "publish.ca_file {}: no PEM certificate in it",
                ca_file.display()
            )));
        }
        for certificate in certificates {
            options = options.with_root_certificate(certificate);
        }
    }
    // A few quick retries inside one attempt; the publisher's own backoff does the rest, so
    // that an unreachable bucket shows up in the status within seconds.
    let retry = object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..object_store::RetryConfig::default()
    };
    builder
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .map_err(|e| BucketError::Config(format!("s3://{bucket}: {e}")))
}

fn store_error(operation: &'static str, key: &str, e: object_store::Error) -> BucketError {
    // The causes carry the useful part ("connection refused", the server's answer).
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let next = c.to_string();
        if !message.contains(&next) {
            message.push_str(": ");
            message.push_str(&next);
        }
        cause = c.source();
    }
    BucketError::Store {
        operation,
        key: key.to_owned(),
        message,
    }
}

impl Bucket for StoreBucket {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn put_create_only<'a>(
        &'a self,
        key: &'a str,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Created, BucketError>> {
        Box::pin(async move {
            let options = PutOptions::from(PutMode::Create);
            match self
                .store
                .put_opts(&self.path(key), PutPayload::from(bytes), options)
                .await
            {
                Ok(_) => Ok(Created::Created),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Ok(Created::AlreadyExists),
                Err(e) => Err(store_error("PUT", key, e)),
            }
        })
    }

    fn put_checkpoint_cas<'a>(
        &'a self,
        key: &'a str,
        bytes: Bytes,
        expected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<String>, BucketError>> {
        Box::pin(async move {
            let conflict = || BucketError::Conflict {
                key: key.to_owned(),
                expected: expected.map_or_else(|| "no object".to_owned(), |e| format!("ETag {e}")),
            };
            let path = self.path(key);
            let payload = PutPayload::from(bytes);
            let result = if self.native_cas {
                let mode = match expected {
                    None => PutMode::Create,
                    Some(etag) => PutMode::Update(UpdateVersion {
                        e_tag: Some(etag.to_owned()),
                        version: None,
                    }),
                };
                self.store
                    .put_opts(&path, payload, PutOptions::from(mode))
                    .await
            } else {
                let _one_at_a_time = self.swap.lock().await;
                let current = match self.store.head(&path).await {
                    Ok(meta) => meta.e_tag,
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => return Err(store_error("HEAD", key, e)),
                };
                if current.as_deref() != expected {
                    return Err(conflict());
                }
                let mode = if expected.is_none() {
                    PutMode::Create
                } else {
                    PutMode::Overwrite
                };
                self.store
                    .put_opts(&path, payload, PutOptions::from(mode))
                    .await
            };
            match result {
                Ok(put) => Ok(put.e_tag),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => Err(conflict()),
                Err(e) => Err(store_error("PUT", key, e)),
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Fetched>, BucketError>> {
        Box::pin(async move {
            match self.store.get(&self.path(key)).await {
                Ok(result) => {
                    let etag = result.meta.e_tag.clone();
                    let bytes = result
                        .bytes()
                        .await
                        .map_err(|e| store_error("GET", key, e))?;
                    Ok(Some((bytes, etag)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_error("GET", key, e)),
            }
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, BucketError>> {
        Box::pin(async move {
            match self.store.head(&self.path(key)).await {
                Ok(meta) => Ok(Some(ObjectInfo {
                    key: key.to_owned(),
                    size: meta.size,
                    etag: meta.e_tag,
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(store_error("HEAD", key, e)),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, BucketError>> {
        Box::pin(async move {
            let trimmed = prefix.trim_end_matches('/');
            let base = if trimmed.is_empty() {
                if self.prefix.is_empty() {
                    None
                } else {
                    Some(Path::from(self.prefix.as_str()))
                }
            } else {
                Some(self.path(trimmed))
            };
            let mut stream = self.store.list(base.as_ref());
            let mut objects = Vec::new();
            while let Some(meta) = stream.next().await {
                match meta {
                    Ok(meta) => objects.push(ObjectInfo {
                        key: self.relative(&meta.location),
                        size: meta.size,
                        etag: meta.e_tag,
                    }),
                    // A local directory that does not exist yet lists as empty.
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(store_error("LIST", prefix, e)),
                }
            }
            objects.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(objects)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), BucketError>> {
        Box::pin(async move {
            match self.store.delete(&self.path(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(store_error("DELETE", key, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evident_tests3::S3Server;

    async fn exercise(bucket: &dyn Bucket) {
        let one = Bytes::from_static(b"one");
        assert_eq!(
            bucket
                .put_create_only("tile/0/000", one.clone())
                .await
                .unwrap(),
            Created::Created
        );
        assert_eq!(
            bucket
                .put_create_only("tile/0/000", Bytes::from_static(b"two"))
                .await
                .unwrap(),
            Created::AlreadyExists
        );
        assert_eq!(bucket.get("tile/0/000").await.unwrap().unwrap().0, one);
        assert_eq!(bucket.get("tile/0/001").await.unwrap(), None);
        let first = bucket
            .put_checkpoint_cas("checkpoint", Bytes::from_static(b"c1"), None)
            .await
            .unwrap();
        let again = bucket
            .put_checkpoint_cas("checkpoint", Bytes::from_static(b"c0"), None)
            .await;
        assert!(
            matches!(again, Err(BucketError::Conflict { .. })),
            "{again:?}"
        );
        let stale = bucket
            .put_checkpoint_cas("checkpoint", Bytes::from_static(b"c0"), Some("\"nope\""))
            .await;
        assert!(
            matches!(stale, Err(BucketError::Conflict { .. })),
            "{stale:?}"
        );
        bucket
            .put_checkpoint_cas("checkpoint", Bytes::from_static(b"c2"), first.as_deref())
            .await
            .unwrap();
        assert_eq!(
            bucket.get("checkpoint").await.unwrap().unwrap().0,
            Bytes::from_static(b"c2")
        );
        bucket
            .put_create_only("tile/0/000.p/5", one.clone())
            .await
            .unwrap();
        let keys: Vec<String> = bucket
            .list("tile/0/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["tile/0/000", "tile/0/000.p/5"]);
        bucket.delete("tile/0/000.p/5").await.unwrap();
        assert!(bucket.head("tile/0/000.p/5").await.unwrap().is_none());
        assert_eq!(bucket.head("tile/0/000").await.unwrap().unwrap().size, 3);
    }

    /// Create-only, the checkpoint's compare-and-swap, get, head, list and delete, on a real
    /// S3 server and on a local directory.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_sink_is_create_only_and_swaps_the_checkpoint_by_etag() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let s3 = tokio::task::spawn_blocking(S3Server::start)
            .await
            .unwrap()
            .unwrap();
        let config = PublishConfig {
            target: Some(s3.target("node-1")),
            endpoint: Some(s3.endpoint()),
            access_key_id: Some(evident_tests3::ACCESS_KEY.to_owned()),
            secret_access_key: Some(super::super::Secret(evident_tests3::SECRET_KEY.to_owned())),
            ..PublishConfig::default()
        };
        let bucket = StoreBucket::open(&config).unwrap();
        exercise(&bucket).await;
        let tmp = tempfile::tempdir().unwrap();
        let config = PublishConfig {
            target: Some(format!("file://{}", tmp.path().join("archive").display())),
            ..PublishConfig::default()
        };
        exercise(&StoreBucket::open(&config).unwrap()).await;
        drop(s3);
    }
}
