//! `evident serve`: settings from defaults, then the TOML file, then `EVIDENT_*` variables,
//! then these flags (TLS among them); then the server runs on a tokio runtime until SIGINT or
//! SIGTERM.

use anyhow::Context as _;
use clap::Args;
use evident_server::ServerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory [default: ./evident-data, or EVIDENT_DATA_DIR, or `data_dir` in the file].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one (the address is printed on stdout)
    /// [default: 127.0.0.1:7707, or EVIDENT_LISTEN, or `listen` in the file].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "EVIDENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id, recorded in every event [default: node-1, or EVIDENT_NODE_ID].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Where the log lives: `embedded` (SQLite in the data directory, the default) or a
    /// postgres://user@host:port/db URL [or EVIDENT_STORAGE, `storage`]. Keys stay in the
    /// data directory either way.
    #[arg(long, value_name = "embedded|URL")]
    pub storage: Option<String>,
    /// PEM certificate chain: serve HTTPS (with --tls-key) [or EVIDENT_TLS_CERT, `tls_cert`].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [or EVIDENT_TLS_KEY, `tls_key`].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed development certificate, generated once into
    /// DATA_DIR/tls/cert.pem (give that file to clients as --ca-cert).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
    /// Allow plain HTTP on a non-loopback address (behind a TLS-terminating proxy only);
    /// without TLS the server otherwise refuses to listen off loopback.
    #[arg(long)]
    pub allow_plain_http: bool,
    /// Proxies whose X-Forwarded-For / Forwarded headers name the client, as CIDR networks
    /// separated by commas [default: none (the headers are ignored), or
    /// EVIDENT_TRUSTED_PROXIES, `trusted_proxies`].
    #[arg(long, value_name = "CIDR,…")]
    pub trusted_proxies: Option<String>,
    /// Days entries are kept before the daily pruner deletes them: at least 90, or
    /// `unlimited` [default: 365, or EVIDENT_RETENTION_DAYS, `retention_days`].
    #[arg(long, value_name = "DAYS|unlimited")]
    pub retention_days: Option<String>,
}

/// The configuration in effect: file, then environment, then flags.
pub fn config_from(
    config: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    node_id: Option<String>,
) -> anyhow::Result<ServerConfig> {
    let mut settings = ServerConfig::load(config)?;
    if let Some(dir) = data_dir {
        settings.data_dir = dir;
    }
    if let Some(id) = node_id {
        settings.node_id = Some(id);
    }
    Ok(settings)
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = config_from(args.config.as_deref(), args.data_dir, args.node_id)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
        config.tls_self_signed = false;
    }
    if args.tls_self_signed {
        config.tls_self_signed = true;
        config.tls_cert = None;
        config.tls_key = None;
    }
    if args.allow_plain_http {
        config.allow_plain_http = true;
    }
    if let Some(storage) = args.storage {
        config.storage = Some(storage);
    }
    if let Some(list) = &args.trusted_proxies {
        config.trusted_proxies = evident_server::client_ip::parse_list(list)
            .map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?;
    }
    if let Some(days) = &args.retention_days {
        config.retention_days = evident_server::retention::RetentionDays::parse(days)
            .map_err(|e| anyhow::anyhow!("--retention-days: {e}"))?;
    }
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("evident")
        .build()
        .context("cannot start the async runtime")?;
    let data_dir = config.data_dir.clone();
    runtime
        .block_on(evident_server::run(config))
        .with_context(|| format!("server on {} stopped", data_dir.display()))
}
