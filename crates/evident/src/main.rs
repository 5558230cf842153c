//! The `evident` binary: argument parsing and wiring only. Each command group lives in its
//! own module under `cmd/`; the HTTP client, output helpers and exit codes are shared.
//!
//! Exit codes: 0 success; 1 failure (a verification that found a problem, a refused request,
//! an I/O error); 2 usage error.

mod client;
mod cmd;
mod output;

use clap::{CommandFactory as _, Parser, Subcommand};
use std::process::ExitCode;

/// jemalloc instead of the system allocator (issue 16): allocation was about a quarter of the
/// server's CPU on batched appends in the profile.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Evident: a tamper-evident audit log. One binary is the server, the admin tool and the
/// offline verifier.
#[derive(Debug, Parser)]
#[command(name = "evident", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (creates the data directory on first start).
    Serve(cmd::serve::ServeArgs),
    /// Append one event (from flags) or many (NDJSON on stdin); prints a receipt per event.
    Append(cmd::append::AppendArgs),
    /// Query the log with filters; a table on a terminal, JSON with --json.
    Query(cmd::query::QueryArgs),
    /// Export matching events as the self-verifying NDJSON bundle, CSV or JSON.
    Export(cmd::export::ExportArgs),
    /// Verify a log: a local data directory, a running server, or an export file offline.
    #[command(override_usage = "\
evident verify [--url URL] [--key KEY] [--ca-cert FILE] [--checkpoint FILE]... [--from SEQ]
       evident verify ... --witness-key KEY... --witnesses-required K
       evident verify --checkpoint FILE... --public-key VKEY --witness-key KEY... --witnesses-required K
       evident verify --data-dir DIR [--checkpoint FILE]... [--from SEQ]
       evident verify --export FILE --public-key VKEY [--checkpoint FILE]...
       evident verify --syslog FILE --public-key VKEY
       evident verify --dir DIR --public-key VKEY
       evident verify --bucket s3://BUCKET/PREFIX --public-key VKEY [--endpoint URL] [--region R] [--ca-file PEM]")]
    Verify(cmd::verify::VerifyArgs),
    /// Fetch the latest signed checkpoint.
    Checkpoint(cmd::checkpoint::CheckpointArgs),
    /// Print the public key that verifies this node's checkpoints.
    PublicKey(cmd::checkpoint::PublicKeyArgs),
    /// Fetch a Merkle proof and verify it locally.
    #[command(subcommand)]
    Proof(cmd::proof::ProofCommand),
    /// Manage API keys: through the server (with --key, recorded in the log) or directly on a
    /// data directory (with --data-dir; works while a server runs on it).
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Copy a node's log between storages (data directory or PostgreSQL), integrity intact.
    Migrate(cmd::migrate::MigrateArgs),
    /// Delete entries older than the retention window (what the server does daily), keeping
    /// the log verifiable from the recorded anchor.
    Prune(cmd::prune::PruneArgs),
    /// Reviews: four-eyes reports (a table, JSON, or a signed bundle to verify offline).
    #[command(subcommand)]
    Review(cmd::review::ReviewCommand),
    /// Publish the log to the node's configured bucket now (owner key).
    Publish(cmd::publish::PublishArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::docs::CompletionsArgs),
    /// Write the man pages (evident.1 and one per subcommand) into a directory.
    Man(cmd::docs::ManArgs),
    /// Cluster certificates: `ca init` creates the cluster CA, `cert issue` a node's
    /// certificate for mTLS between nodes.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    output::init_tracing(default_level);
    // Every HTTPS connection uses ring; installing it can only fail if one is already set.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::Append(args) => cmd::append::run(args),
        Command::Query(args) => cmd::query::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Checkpoint(args) => cmd::checkpoint::run(args),
        Command::PublicKey(args) => cmd::checkpoint::run_public_key(args),
        Command::Proof(command) => cmd::proof::run(command),
        Command::Keys(command) => cmd::keys::run(command),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::Prune(args) => cmd::prune::run(args),
        Command::Review(command) => cmd::review::run(command),
        Command::Publish(args) => cmd::publish::run(args),
        Command::Completions(args) => cmd::docs::completions(&args, Cli::command()),
        Command::Man(args) => cmd::docs::man(&args, Cli::command()),
        Command::Cluster(command) => cmd::cluster::run(command),
    };
    output::exit_code(result)
}
