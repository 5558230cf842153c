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
    /// Address the HTTP API listens on (`127.0.0.1:7707`).
    pub listen: SocketAddr,
    /// This node's id, recorded in every event (`node-1`).
    pub node_id: String,
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
    /// Most events the sequencer commits in one transaction.
    pub max_group_commit_events: usize,
}

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./evident-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7707";
/// Default node id.
pub const DEFAULT_NODE_ID: &str = "node-1";

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: SocketAddr::from(([127, 0, 0, 1], 7707)),
            node_id: DEFAULT_NODE_ID.to_owned(),
            origin: None,
            checkpoint_every_events: 1000,
            checkpoint_every_ms: 1000,
            max_batch_events: 1000,
            max_body_bytes: 8 * 1024 * 1024,
            max_group_commit_events: 20_000,
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
                "LISTEN" => {
                    self.listen = value
                        .parse()
                        .map_err(|e| bad(format!("{value:?} is not an address:port ({e})")))?
                }
                "NODE_ID" => self.node_id = value,
                "ORIGIN" => self.origin = Some(value),
                "CHECKPOINT_EVERY_EVENTS" => {
                    self.checkpoint_every_events = parse_number(&value).map_err(bad)?
                }
                "CHECKPOINT_EVERY_MS" => {
                    self.checkpoint_every_ms = parse_number(&value).map_err(bad)?
                }
                "MAX_BATCH_EVENTS" => self.max_batch_events = parse_number(&value).map_err(bad)?,
                "MAX_BODY_BYTES" => self.max_body_bytes = parse_number(&value).map_err(bad)?,
                "MAX_GROUP_COMMIT_EVENTS" => {
                    self.max_group_commit_events = parse_number(&value).map_err(bad)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The checkpoint origin (and note key name) in effect.
    pub fn effective_origin(&self) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| format!("evident/{}", self.node_id))
    }

    /// Checks every setting; the first problem found is returned, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        evident_core::event::validate_node_id(&self.node_id).map_err(|e| ConfigError::Invalid {
            field: "node_id",
            message: e.problem,
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
            ("max_group_commit_events", self.max_group_commit_events == 0),
        ];
        for (field, is_zero) in positive {
            if is_zero {
                return Err(ConfigError::Invalid {
                    field,
                    message: "must be greater than 0".to_owned(),
                });
            }
        }
        Ok(())
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
        assert_eq!(c.node_id, "node-1");
        assert_eq!(c.effective_origin(), "evident/node-1");
        assert_eq!(c.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(c.max_group_commit_events, 20_000);
    }

    #[test]
    fn toml_overrides_defaults_and_refuses_unknown_keys() {
        let c = ServerConfig::from_toml_str(
            "listen = \"0.0.0.0:9000\"\nnode_id = \"edge-7\"\ncheckpoint_every_ms = 50\n",
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.node_id, "edge-7");
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
        assert_eq!(c.node_id, "n2");
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
}
