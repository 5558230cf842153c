//! The cluster: a static list of peer nodes (`[cluster]` in the config), the mTLS client
//! nodes use to talk to each other, and (in later modules) cluster-wide reads. Each node
//! keeps its own log; the cluster only aggregates and witnesses.

pub mod certs;
mod client;
mod config;
mod identity;
pub mod read;

pub use client::{PeerClient, PeerError, PeerResponse, load_roots};
pub use config::{ClusterConfig, ClusterConfigError, DEFAULT_PEER_TIMEOUT_MS, PeerConfig};
pub use identity::{PeerIdentifier, PeerIdentity, server_config};
