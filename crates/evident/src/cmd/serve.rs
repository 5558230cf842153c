//! `evident serve`: settings from defaults, then the TOML file, then `EVIDENT_*` variables,
//! then these flags; then the server runs on a tokio runtime until SIGINT or SIGTERM.

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
        settings.node_id = id;
    }
    Ok(settings)
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = config_from(args.config.as_deref(), args.data_dir, args.node_id)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
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
