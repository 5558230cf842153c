//! `evident prune --data-dir DIR [--dry-run]`: the server's daily retention pruner, run once
//! offline on a data directory (and the store it points at), with the same code
//! (`evident_server::retention::prune`). No server may run on the directory meanwhile.

use anyhow::Context as _;
use clap::Args;
use evident_server::Node;
use evident_server::retention::{PruneOutcome, PruneRequest, RetentionDays, prune};
use std::path::PathBuf;

/// A hidden clock override for end-to-end tests: milliseconds since the Unix epoch.
const TEST_NOW_VAR: &str = "EVIDENT_TEST_NOW";

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Data directory [default: ./evident-data, or EVIDENT_DATA_DIR, or `data_dir` in the file].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "EVIDENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Days to keep (at least 90, or `unlimited`) [default: 365, or EVIDENT_RETENTION_DAYS,
    /// or `retention_days` in the file].
    #[arg(long, value_name = "DAYS|unlimited")]
    pub retention_days: Option<String>,
    /// Only say what would be pruned.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: PruneArgs) -> anyhow::Result<()> {
    let mut config = crate::cmd::serve::config_from(args.config.as_deref(), args.data_dir, None)?;
    if let Some(days) = &args.retention_days {
        config.retention_days =
            RetentionDays::parse(days).map_err(|e| anyhow::anyhow!("--retention-days: {e}"))?;
    }
    config.validate()?;
    let Some(days) = config.retention_days.0 else {
        println!("retention is unlimited: nothing is pruned");
        return Ok(());
    };
    let dir = config.data_dir.clone();
    if !dir.join("node.toml").exists() {
        anyhow::bail!("{} is not an Evident data directory", dir.display());
    }
    let now = match std::env::var(TEST_NOW_VAR) {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{TEST_NOW_VAR}={value:?} is not a number of ms"))?,
        Err(_) => evident_server::now_ms(),
    };
    let node = Node::open(config).with_context(|| format!("opening {}", dir.display()))?;
    let request = PruneRequest {
        dry_run: args.dry_run,
        ..PruneRequest::new(now, days)
    };
    let outcome = prune(&node, &request);
    // Seal secrets of epochs now pruned entirely are no longer needed (docs/FORMAT.md §18).
    let discarded = if args.dry_run || outcome.is_err() {
        Ok(Vec::new())
    } else {
        evident_server::keyring::discard_unneeded_seal_secrets(&node)
    };
    node.shutdown();
    match discarded {
        Ok(epochs) if !epochs.is_empty() => println!(
            "discarded the secrets of seal epoch(s) {epochs:?}: retention pruned all their entries"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: could not discard the unneeded seal secrets: {e}"),
    }
    match outcome.with_context(|| format!("pruning {}", dir.display()))? {
        PruneOutcome::Nothing { kept_from } => {
            println!("nothing to prune: no entry from {kept_from} on is older than {days} days")
        }
        PruneOutcome::WouldPrune {
            from_seq,
            below_seq,
            unfinished,
        } => println!(
            "dry run: would prune entries {from_seq} to {} ({} entries){}",
            below_seq - 1,
            below_seq - from_seq,
            if unfinished {
                ", finishing an interrupted prune"
            } else {
                ""
            }
        ),
        PruneOutcome::Pruned {
            from_seq,
            below_seq,
            count,
            event_seq,
            resumed,
        } => println!(
            "pruned entries {from_seq} to {} ({count} entries{}), recorded as entry {event_seq} \
             (retention.pruned); the log now starts at entry {below_seq}",
            below_seq - 1,
            if resumed {
                ", an interrupted prune finished"
            } else {
                ""
            }
        ),
        PruneOutcome::Interrupted { below_seq, deleted } => println!(
            "stopped after deleting {deleted} entries below {below_seq}: run again to finish"
        ),
    }
    Ok(())
}
