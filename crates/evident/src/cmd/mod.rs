//! One module per command group. Each has its clap arguments and a `run` that does the work
//! through the server library (local commands) or the HTTP API (client commands).

pub mod append;
pub mod checkpoint;
pub mod cluster;
pub mod docs;
pub mod export;
pub mod keys;
pub mod migrate;
pub mod proof;
pub mod prune;
pub mod publish;
pub mod query;
pub mod review;
pub mod serve;
pub mod verify;
pub mod verify_bucket;

/// The file an `--out` flag names: `None` for `-`, which means standard output (as it does
/// for every command with `--out`).
pub fn out_file(out: Option<&std::path::Path>) -> Option<&std::path::Path> {
    out.filter(|path| path.as_os_str() != "-")
}
