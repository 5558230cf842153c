//! `evident publish`: publishes the log to the node's configured bucket now, through the API
//! (`POST /api/v1/publish`, an owner key), and prints what the bucket's checkpoint covers.

use crate::client::{ApiClient, ClientArgs};
use anyhow::Context as _;
use clap::Args;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Seconds to wait for the publication to finish (0: only ask for it).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub wait: u64,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    // The request itself waits up to `wait` seconds on the server.
    let timeout = Duration::from_secs(args.client.timeout.max(args.wait + 30));
    let client = ApiClient::with_timeout(&args.client, Some(timeout))?;
    let answer: serde_json::Value = client
        .post_json_query(
            "api/v1/publish",
            &[("wait", args.wait.to_string())],
            &serde_json::json!({}),
        )
        .context("publishing")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let target = answer["target_size"].as_u64().unwrap_or(0);
    let status = &answer["status"]["publish"];
    let bucket = status["target"].as_str().unwrap_or("the bucket");
    if answer["published"].as_bool() == Some(true) {
        println!(
            "published: {bucket} holds the checkpoint of size {} ({} objects written, {} already there since the node started)",
            status["published_size"].as_u64().unwrap_or(target),
            status["objects_written"].as_u64().unwrap_or(0),
            status["objects_existing"].as_u64().unwrap_or(0),
        );
        return Ok(());
    }
    let error = answer["status"]["cursor"]["last_error"]
        .as_str()
        .or_else(|| status["last_error"].as_str());
    match error {
        Some(error) => Err(anyhow::anyhow!(
            "not published yet (size {target} requested, {} in {bucket}): {error}",
            status["published_size"].as_u64().unwrap_or(0)
        )),
        None if args.wait == 0 => {
            println!("publication of size {target} to {bucket} requested");
            Ok(())
        }
        None => Err(anyhow::anyhow!(
            "not published within {} s (size {target} requested, {} in {bucket}); it goes on in the background",
            args.wait,
            status["published_size"].as_u64().unwrap_or(0)
        )),
    }
}
