//! `evident completions SHELL` and `evident man --out DIR`: shell completions and man pages
//! generated from the same clap command tree the binary parses, so they never drift from it.

use anyhow::Context as _;
use clap::Args;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write `evident.1` and one page per subcommand (`evident-serve.1`, …)
    /// into; created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Writes the completion script for `args.shell` to standard output.
pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> anyhow::Result<()> {
    let name = command.get_name().to_owned();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, name, &mut stdout);
    stdout.flush()?;
    Ok(())
}

/// Writes the man pages of `command` and of every subcommand, recursively, into `args.out`.
pub fn man(args: &ManArgs, command: clap::Command) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut written = 0usize;
    write_pages(&args.out, command, &mut written)?;
    eprintln!("wrote {written} man pages to {}", args.out.display());
    Ok(())
}

fn write_pages(dir: &Path, command: clap::Command, written: &mut usize) -> anyhow::Result<()> {
    // Subcommand pages are named as `man` looks them up: `evident-keys-create.1`.
    let command = command.disable_help_subcommand(true);
    let name = command
        .get_display_name()
        .unwrap_or(command.get_name())
        .to_owned();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .with_context(|| format!("rendering the man page of {name}"))?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    for sub in command.get_subcommands() {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub
            .clone()
            .display_name(sub_name.clone())
            .bin_name(sub_name);
        write_pages(dir, sub, written)?;
    }
    Ok(())
}
