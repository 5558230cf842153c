//! The server's configuration: defaults, the TOML file, then `EVIDENT_<FIELD>` environment
//! variables (the CLI applies its flags last). Owns parsing and validation of settings only;
//! what the settings mean is up to the modules that read them.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Every setting of a node. Unknown keys in the TOML file are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the node keeps its database, keys and identity (`./evident-data`).
    pub data_dir: PathBuf,
    /// Where the log is kept: unset or `embedded` for the embedded SQLite store inside the
    /// data directory (the default), or a `postgres://user@host:port/db` URL (a password
    /// missing from it is read from `PGPASSWORD`). Node keys stay in the data directory's
    /// files either way. Once set, the data directory records it (password removed).
    pub storage: Option<String>,
    /// Address the HTTP API listens on (`127.0.0.1:7707`).
    pub listen: SocketAddr,
    /// This node's id, recorded in every event. `None`: the id recorded in the data directory,
    /// or `node-1` for a new one (see [`ServerConfig::effective_node_id`]).
    pub node_id: Option<String>,
    /// Checkpoint origin and signing key name; `None` means `evident/<node_id>`.
    pub origin: Option<String>,
    /// Sign a checkpoint once this many entries were appended since the last one.
    pub checkpoint_every_events: u64,
    /// Sign a checkpoint when entries have waited this long without one.
    pub checkpoint_every_ms: u64,
    /// Most events one `POST /events` request may carry.
    pub max_batch_events: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Bytes of append bodies the server holds at once, from reading a body to answering it:
    /// further appends wait (without reading their bodies) until earlier ones are answered.
    /// Bounds the memory of a burst of large batches; a body larger than this still goes
    /// through, alone.
    pub max_pending_append_bytes: usize,
    /// Most events the sequencer commits in one transaction.
    pub max_group_commit_events: usize,
    /// Page cache of the embedded store's writer connection, in bytes (at least 1 MiB).
    /// Larger loads a large log a little faster (10M entries: 64 MiB ≈ 10 % faster than the
    /// default 16 MiB) at the cost of that much more resident memory.
    pub sqlite_writer_cache_bytes: usize,
    /// PEM certificate chain for TLS on the listener (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the listener (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// Generate (once, kept in `<data_dir>/tls/`) a self-signed development certificate for
    /// `localhost`, `127.0.0.1` and `::1`, and serve TLS with it.
    pub tls_self_signed: bool,
    /// Serve plain HTTP on a non-loopback address. Off by default: without TLS the server
    /// only listens on loopback.
    pub allow_plain_http: bool,
    /// Brute-force protection: this many failures to authenticate (401) from one IP address
    /// within `auth_failure_window_ms` block that address's requests without a valid key;
    /// this many refusals (403) of one key block that key's refused requests.
    pub auth_failure_limit: u32,
    /// The window over which failures are counted, in milliseconds.
    pub auth_failure_window_ms: u64,
    /// How long a blocked address (or key) gets 429, in milliseconds.
    pub auth_block_ms: u64,
    /// Proxies (CIDR networks) whose `X-Forwarded-For` / `Forwarded` headers name the
    /// client. Empty (the default): the headers are ignored and the client is the peer.
    pub trusted_proxies: Vec<crate::client_ip::Cidr>,
    /// A request's headers must arrive in full this long after the connection turns to them
    /// (slowloris protection; an idle keep-alive connection is closed after it too).
    pub header_timeout_ms: u64,
    /// A request body must arrive in full this long after its handler starts reading it.
    pub body_timeout_ms: u64,
    /// Largest request head (request line and headers), in bytes; larger ones get 431.
    pub max_header_bytes: usize,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Connections served at once from one address (trusted proxies excepted); more from it
    /// are answered 429 and closed.
    pub max_connections_per_ip: usize,
    /// Days entries are kept before the daily pruner deletes them (365): at least 90, or
    /// `unlimited` (or 0) to keep every entry.
    pub retention_days: crate::retention::RetentionDays,
    /// The background verifier checks the entries, checkpoints and Merkle nodes added since
    /// its last pass this often, in milliseconds (10 minutes).
    pub verify_every_ms: u64,
    /// …and the whole log this often, in milliseconds (one day).
    pub verify_full_every_ms: u64,
    /// Four-eyes rules (`[[four_eyes]]` tables): events that must be confirmed by another
    /// actor within a time. None by default.
    pub four_eyes: Vec<crate::review::FourEyesRuleConfig>,
    /// `[alerts]`: alert rules (`[[alerts.rules]]`) and signed webhook endpoints
    /// (`[[alerts.webhooks]]`); the built-in rules are on, no endpoint is configured.
    pub alerts: crate::alerts::AlertsConfig,
    /// Publishing to object storage (`[publish]`): off unless `target` is set.
    pub publish: crate::publish::PublishConfig,
    /// Where committed entries are forwarded (`[[forward.syslog]]` destinations); none by
    /// default.
    pub forward: crate::forward::ForwardConfig,
    /// `[dashboard]`: the web dashboard at `/` (on) and its session timeouts.
    pub dashboard: crate::dashboard::DashboardConfig,
    /// `[cluster]`: this node's cluster certificate and its peers (`[[cluster.peers]]`);
    /// off unless `ca_cert` is set.
    pub cluster: crate::cluster::ClusterConfig,
    /// `[witness]`: the witness policy (`policy_k` cosignatures from the `keys` listed);
    /// off by default.
    pub witness: crate::witness::WitnessConfig,
}

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./evident-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7707";
/// Default node id.
pub const DEFAULT_NODE_ID: &str = "node-1";
/// Default brute-force threshold: failed requests from one address per window.
pub const DEFAULT_AUTH_FAILURE_LIMIT: u32 = 20;
/// Default brute-force window (one minute).
pub const DEFAULT_AUTH_FAILURE_WINDOW_MS: u64 = 60_000;
/// Default cap on one address's open connections: a quarter of the default 512 slots, so
/// that no one address (nor three) can take them all, and far more than a browser (6) or a
/// busy pooled client opens.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 128;
/// Default block after the threshold is crossed (five minutes).
pub const DEFAULT_AUTH_BLOCK_MS: u64 = 300_000;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            storage: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7707)),
            node_id: None,
            origin: None,
            checkpoint_every_events: 1000,
            checkpoint_every_ms: 1000,
            max_batch_events: 1000,
            max_body_bytes: 8 * 1024 * 1024,
            max_pending_append_bytes: 16 * 1024 * 1024,
            max_group_commit_events: 10_000,
            sqlite_writer_cache_bytes: evident_store::sqlite::DEFAULT_WRITER_CACHE_BYTES,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            allow_plain_http: false,
            auth_failure_limit: DEFAULT_AUTH_FAILURE_LIMIT,
            auth_failure_window_ms: DEFAULT_AUTH_FAILURE_WINDOW_MS,
            auth_block_ms: DEFAULT_AUTH_BLOCK_MS,
            trusted_proxies: Vec::new(),
            header_timeout_ms: 30_000,
            body_timeout_ms: 60_000,
            max_header_bytes: 64 * 1024,
            max_connections: 512,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            retention_days: crate::retention::RetentionDays::default(),
            verify_every_ms: 600_000,
            verify_full_every_ms: 86_400_000,
            four_eyes: Vec::new(),
            alerts: crate::alerts::AlertsConfig::default(),
            publish: crate::publish::PublishConfig::default(),
            forward: crate::forward::ForwardConfig::default(),
            dashboard: crate::dashboard::DashboardConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            witness: crate::witness::WitnessConfig::default(),
        }
    }
}

/// A configuration that cannot be read or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("setting {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl ServerConfig {
    /// Defaults, overlaid by the TOML file at `path` (if any), overlaid by `EVIDENT_*`
    /// environment variables. Not validated yet: call [`Self::validate`] after applying flags.
    pub fn load(path: Option<&Path>) -> Result<ServerConfig, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml_str(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
            None => ServerConfig::default(),
        };
        config.apply_env(std::env::vars_os().filter_map(|(k, v)| {
            Some((k.into_string().ok()?, v.into_string().unwrap_or_default()))
        }))?;
        Ok(config)
    }

    /// Parses a TOML document; missing keys take their defaults, unknown keys are refused.
    pub fn from_toml_str(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    /// Applies `EVIDENT_<FIELD>` variables from `vars` (name, value); other names are ignored,
    /// except an `EVIDENT_` name that matches no setting is ignored too, since the CLI and
    /// tests have their own `EVIDENT_` variables.
    pub fn apply_env<I>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        for (var, value) in vars {
            let Some(field) = var.strip_prefix("EVIDENT_") else {
                continue;
            };
            let bad = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            match field {
                "DATA_DIR" => self.data_dir = PathBuf::from(value),
                "STORAGE" => self.storage = Some(value),
                "LISTEN" => {
                    self.listen = value
                        .parse()
                        .map_err(|e| bad(format!("{value:?} is not an address:port ({e})")))?
                }
                "NODE_ID" => self.node_id = Some(value),
                "ORIGIN" => self.origin = Some(value),
                "CHECKPOINT_EVERY_EVENTS" => {
                    self.checkpoint_every_events = parse_number(&value).map_err(bad)?
                }
                "CHECKPOINT_EVERY_MS" => {
                    self.checkpoint_every_ms = parse_number(&value).map_err(bad)?
                }
                "MAX_BATCH_EVENTS" => self.max_batch_events = parse_number(&value).map_err(bad)?,
                "MAX_BODY_BYTES" => self.max_body_bytes = parse_number(&value).map_err(bad)?,
                "MAX_PENDING_APPEND_BYTES" => {
                    self.max_pending_append_bytes = parse_number(&value).map_err(bad)?
                }
                "MAX_GROUP_COMMIT_EVENTS" => {
                    self.max_group_commit_events = parse_number(&value).map_err(bad)?
                }
                "SQLITE_WRITER_CACHE_BYTES" => {
                    self.sqlite_writer_cache_bytes = parse_number(&value).map_err(bad)?
                }
                "TLS_CERT" => self.tls_cert = Some(PathBuf::from(value)),
                "TLS_KEY" => self.tls_key = Some(PathBuf::from(value)),
                "TLS_SELF_SIGNED" => self.tls_self_signed = parse_bool(&value).map_err(bad)?,
                "ALLOW_PLAIN_HTTP" => self.allow_plain_http = parse_bool(&value).map_err(bad)?,
                "AUTH_FAILURE_LIMIT" => {
                    self.auth_failure_limit = parse_number(&value).map_err(bad)?
                }
                "AUTH_FAILURE_WINDOW_MS" => {
                    self.auth_failure_window_ms = parse_number(&value).map_err(bad)?
                }
                "AUTH_BLOCK_MS" => self.auth_block_ms = parse_number(&value).map_err(bad)?,
                "TRUSTED_PROXIES" => {
                    self.trusted_proxies =
                        crate::client_ip::parse_list(&value).map_err(|e| bad(e.to_string()))?
                }
                "HEADER_TIMEOUT_MS" => {
                    self.header_timeout_ms = parse_number(&value).map_err(bad)?
                }
                "BODY_TIMEOUT_MS" => self.body_timeout_ms = parse_number(&value).map_err(bad)?,
                "MAX_HEADER_BYTES" => self.max_header_bytes = parse_number(&value).map_err(bad)?,
                "MAX_CONNECTIONS" => self.max_connections = parse_number(&value).map_err(bad)?,
                "MAX_CONNECTIONS_PER_IP" => {
                    self.max_connections_per_ip = parse_number(&value).map_err(bad)?
                }
                "RETENTION_DAYS" => {
                    self.retention_days =
                        crate::retention::RetentionDays::parse(&value).map_err(bad)?
                }
                "VERIFY_EVERY_MS" => self.verify_every_ms = parse_number(&value).map_err(bad)?,
                "FORWARD_SYSLOG" => {
                    self.forward.syslog =
                        crate::forward::ForwardConfig::parse_syslog_list(&value).map_err(bad)?
                }
                "VERIFY_FULL_EVERY_MS" => {
                    self.verify_full_every_ms = parse_number(&value).map_err(bad)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The node id for a new data directory: the configured one, or `node-1`. An existing
    /// data directory keeps the id it records (a configured one must match it).
    pub fn effective_node_id(&self) -> &str {
        self.node_id.as_deref().unwrap_or(DEFAULT_NODE_ID)
    }

    /// The checkpoint origin (and note key name) for a new data directory.
    pub fn effective_origin(&self) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| format!("evident/{}", self.effective_node_id()))
    }

    /// Checks every setting; the first problem found is returned, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        evident_core::event::validate_node_id(self.effective_node_id()).map_err(|e| {
            ConfigError::Invalid {
                field: "node_id",
                message: e.problem,
            }
        })?;
        self.alerts.validate().map_err(|e| ConfigError::Invalid {
            field: "alerts",
            message: e.to_string(),
        })?;
        let origin = self.effective_origin();
        // A C2SP key name is non-empty and has no whitespace or `+`.
        if origin.is_empty()
            || origin
                .chars()
                .any(|c| c.is_whitespace() || c == '+' || c.is_control())
        {
            return Err(ConfigError::Invalid {
                field: "origin",
                message: format!("{origin:?} must be non-empty without spaces or '+'"),
            });
        }
        let positive = [
            ("checkpoint_every_events", self.checkpoint_every_events == 0),
            ("checkpoint_every_ms", self.checkpoint_every_ms == 0),
            ("max_batch_events", self.max_batch_events == 0),
            ("max_body_bytes", self.max_body_bytes == 0),
            (
                "max_pending_append_bytes",
                self.max_pending_append_bytes == 0,
            ),
            ("max_group_commit_events", self.max_group_commit_events == 0),
            ("auth_failure_limit", self.auth_failure_limit == 0),
            ("auth_failure_window_ms", self.auth_failure_window_ms == 0),
            ("auth_block_ms", self.auth_block_ms == 0),
            ("header_timeout_ms", self.header_timeout_ms == 0),
            ("body_timeout_ms", self.body_timeout_ms == 0),
            ("max_connections", self.max_connections == 0),
            ("max_connections_per_ip", self.max_connections_per_ip == 0),
            ("verify_every_ms", self.verify_every_ms == 0),
            ("verify_full_every_ms", self.verify_full_every_ms == 0),
        ];
        for (field, is_zero) in positive {
            if is_zero {
                return Err(ConfigError::Invalid {
                    field,
                    message: "must be greater than 0".to_owned(),
                });
            }
        }
        if self.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid {
                field: "max_header_bytes",
                message: "must be at least 8192".to_owned(),
            });
        }
        if self.max_connections > 1_000_000 {
            return Err(ConfigError::Invalid {
                field: "max_connections",
                message: "must be at most 1000000".to_owned(),
            });
        }
        crate::review::rules(&self.four_eyes).map_err(|e| ConfigError::Invalid {
            field: "four_eyes",
            message: e.to_string(),
        })?;
        self.publish
            .validate()
            .map_err(|(field, message)| ConfigError::Invalid { field, message })?;
        self.forward.validate().map_err(|e| ConfigError::Invalid {
            field: "forward",
            message: e.to_string(),
        })?;
        self.cluster
            .validate(self.effective_node_id())
            .map_err(|e| ConfigError::Invalid {
                field: "cluster",
                message: e.to_string(),
            })?;
        self.witness.validate().map_err(|e| ConfigError::Invalid {
            field: "witness",
            message: e.to_string(),
        })?;
        self.retention_days
            .check()
            .map_err(|message| ConfigError::Invalid {
                field: "retention_days",
                message,
            })?;
        if let Some(storage) = &self.storage {
            if !is_embedded(storage) && !evident_store::postgres::is_postgres_url(storage) {
                return Err(ConfigError::Invalid {
                    field: "storage",
                    message: format!(
                        "{:?} is neither `embedded` nor a postgres:// URL",
                        evident_store::postgres::redact_url(storage)
                    ),
                });
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    field: "tls_key",
                    message: "tls_cert is set but tls_key is not; give both PEM files".to_owned(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: "tls_cert",
                    message: "tls_key is set but tls_cert is not; give both PEM files".to_owned(),
                });
            }
            (Some(_), Some(_)) if self.tls_self_signed => {
                return Err(ConfigError::Invalid {
                    field: "tls_self_signed",
                    message: "choose either a certificate (tls_cert, tls_key) or a self-signed one, not both"
                        .to_owned(),
                });
            }
            _ => {}
        }
        if !self.tls_enabled() && !self.listen.ip().is_loopback() && !self.allow_plain_http {
            return Err(ConfigError::Invalid {
                field: "listen",
                message: format!(
                    "refusing to serve plain HTTP on {}, which is not a loopback address: API keys \
                     would cross the network in clear text. Give a certificate (--tls-cert and \
                     --tls-key, or EVIDENT_TLS_CERT and EVIDENT_TLS_KEY), use --tls-self-signed for \
                     development, or, behind a TLS-terminating proxy, pass --allow-plain-http \
                     (EVIDENT_ALLOW_PLAIN_HTTP=true)",
                    self.listen
                ),
            });
        }
        Ok(())
    }

    /// The limits every connection is served with.
    pub fn connection_limits(&self) -> crate::connections::ConnectionLimits {
        crate::connections::ConnectionLimits {
            header_timeout: std::time::Duration::from_millis(self.header_timeout_ms),
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            uncapped: self.trusted_proxies.clone().into(),
            cluster_peers: self
                .cluster
                .enabled()
                .then(|| std::sync::Arc::new(crate::cluster::PeerIdentifier::new(&self.cluster))),
        }
    }

    /// Whether the listener speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls_self_signed || self.tls_cert.is_some() || self.cluster.enabled()
    }
}

/// Whether a `storage` setting names the embedded store.
pub fn is_embedded(storage: &str) -> bool {
    matches!(storage, "" | "embedded" | "sqlite")
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

fn parse_number<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| format!("{value:?} is not a number ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let c = ServerConfig::default();
        assert_eq!(c.data_dir, PathBuf::from("./evident-data"));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.effective_node_id(), "node-1");
        assert_eq!(c.effective_origin(), "evident/node-1");
        assert_eq!(c.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(c.max_group_commit_events, 10_000);
        assert_eq!(c.sqlite_writer_cache_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn toml_overrides_defaults_and_refuses_unknown_keys() {
        let c = ServerConfig::from_toml_str(
            "listen = \"0.0.0.0:9000\"\nnode_id = \"edge-7\"\ncheckpoint_every_ms = 50\n",
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.node_id.as_deref(), Some("edge-7"));
        assert_eq!(c.effective_origin(), "evident/edge-7");
        assert_eq!(c.checkpoint_every_ms, 50);
        assert_eq!(c.checkpoint_every_events, 1000);

        let err = ServerConfig::from_toml_str("lisen = \"0.0.0.0:9000\"\n").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        let err = ServerConfig::from_toml_str("max_batch_events = \"many\"\n").unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn env_overrides_and_names_the_bad_variable() {
        let mut c = ServerConfig::default();
        c.apply_env([
            ("EVIDENT_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("EVIDENT_DATA_DIR".to_owned(), "/tmp/x".to_owned()),
            ("EVIDENT_NODE_ID".to_owned(), "n2".to_owned()),
            ("EVIDENT_MAX_BATCH_EVENTS".to_owned(), "5".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.node_id.as_deref(), Some("n2"));
        assert_eq!(c.max_batch_events, 5);

        let err = c
            .apply_env([("EVIDENT_MAX_BODY_BYTES".to_owned(), "lots".to_owned())])
            .unwrap_err();
        assert!(err.to_string().contains("EVIDENT_MAX_BODY_BYTES"), "{err}");
    }

    #[test]
    fn validate_refuses_zero_limits_and_bad_origins() {
        let mut c = ServerConfig {
            max_batch_events: 0,
            ..ServerConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("max_batch_events"), "{err}");
        c.max_batch_events = 1;
        c.origin = Some("has space".to_owned());
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("origin"), "{err}");
    }

    #[test]
    fn forward_destinations_come_from_the_file_and_the_environment() {
        let c = ServerConfig::from_toml_str(
            "[[forward.syslog]]\nname = \"siem\"\ntransport = \"tls\"\naddress = \"siem:6514\"\nca_file = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.forward.syslog[0].name, "siem");
        c.validate().unwrap();
        let mut c = ServerConfig::default();
        c.apply_env([(
            "EVIDENT_FORWARD_SYSLOG".to_owned(),
            "[{ name = \"a\", transport = \"udp\", address = \"h:514\" }]".to_owned(),
        )])
        .unwrap();
        assert_eq!(c.forward.syslog[0].address, "h:514");
        let err = c
            .apply_env([(
                "EVIDENT_FORWARD_SYSLOG".to_owned(),
                "[{ name = 1 }]".to_owned(),
            )])
            .unwrap_err();
        assert!(err.to_string().contains("EVIDENT_FORWARD_SYSLOG"), "{err}");
    }

    #[test]
    fn trusted_proxies_come_from_the_file_and_the_environment() {
        assert!(ServerConfig::default().trusted_proxies.is_empty());
        let c =
            ServerConfig::from_toml_str("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.trusted_proxies[0].contains("10.2.3.4".parse().unwrap()));
        let err = ServerConfig::from_toml_str("trusted_proxies = [\"10.0.0.0/40\"]\n").unwrap_err();
        assert!(err.contains("10.0.0.0/40"), "{err}");
        let mut c = ServerConfig::default();
        c.apply_env([(
            "EVIDENT_TRUSTED_PROXIES".to_owned(),
            "192.0.2.0/24, 2001:db8::/32".to_owned(),
        )])
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        let err = c
            .apply_env([(
                "EVIDENT_TRUSTED_PROXIES".to_owned(),
                "proxy.local".to_owned(),
            )])
            .unwrap_err();
        assert!(err.to_string().contains("EVIDENT_TRUSTED_PROXIES"), "{err}");
    }

    #[test]
    fn plain_http_off_loopback_needs_an_explicit_setting() {
        let mut c = ServerConfig {
            listen: "0.0.0.0:7707".parse().unwrap(),
            ..ServerConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("--allow-plain-http") && err.contains("0.0.0.0:7707"),
            "{err}"
        );
        c.allow_plain_http = true;
        c.validate().unwrap();
        c.allow_plain_http = false;
        c.tls_self_signed = true;
        c.validate().unwrap();
        c.tls_self_signed = false;
        c.tls_cert = Some(PathBuf::from("cert.pem"));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tls_key"), "{err}");
        c.apply_env([("EVIDENT_ALLOW_PLAIN_HTTP".to_owned(), "maybe".to_owned())])
            .unwrap_err();
    }
}
