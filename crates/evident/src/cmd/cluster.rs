//! `evident cluster ca init` and `evident cluster cert issue`: the cluster CA and the node
//! certificates nodes use for mTLS with each other (`[cluster]` ca_cert, cert, key).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use evident_server::cluster::certs;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The cluster certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Node certificates.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a cluster CA: `ca.pem` (give it to every node as cluster.ca_cert) and `ca.key`
    /// (mode 0600; keep it off the nodes). Refuses to replace an existing one.
    Init(CaInitArgs),
}

#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// Directory to create the CA in.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a node certificate (server and client auth) naming the node id: `node.pem` and
    /// `node.key` (cluster.cert and cluster.key).
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The node id the certificate names (common name and DNS subject alternative name).
    #[arg(long)]
    pub node_id: String,
    /// The CA directory (`evident cluster ca init --out`).
    #[arg(long)]
    pub ca: PathBuf,
    /// Directory to write the certificate and key to.
    #[arg(long)]
    pub out: PathBuf,
    /// A host name or IP address the node is reached by (repeatable); default localhost,
    /// 127.0.0.1 and ::1.
    #[arg(long = "san")]
    pub sans: Vec<String>,
}

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Ca(CaCommand::Init(args)) => {
            let cert = certs::init_ca(&args.out).context("cluster ca init")?;
            println!("cluster CA certificate: {}", cert.display());
            println!(
                "CA private key: {} (keep it off the nodes)",
                args.out.join(certs::CA_KEY).display()
            );
        }
        ClusterCommand::Cert(CertCommand::Issue(args)) => {
            let cert = certs::issue_node_cert(&args.ca, &args.node_id, &args.sans, &args.out)
                .context("cluster cert issue")?;
            println!("node certificate for {}: {}", args.node_id, cert.display());
            println!("private key: {}", args.out.join(certs::NODE_KEY).display());
        }
    }
    Ok(())
}
