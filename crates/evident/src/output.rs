//! What the binary shows a person: log setup, progress bars (on a terminal only, silent when
//! piped), plain-text tables, and the mapping of a command's result to an exit code and a
//! message. Commands write their results to stdout and nothing else there.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

/// Exit code of a usage error (as clap uses for bad arguments).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of any other failure, a failed verification included.
pub const EXIT_FAILURE: u8 = 1;

/// Logs go to stderr; `RUST_LOG` overrides `default_level`.
pub fn init_tracing(default_level: &str) {
    // The certificate verifier logs each failure itself; the client reports it once, with
    // what to do (see `client::tls_hint`), so its own line would only repeat it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},rustls_platform_verifier=off"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        // Colour codes only for a person at a terminal, never into a log file.
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

/// Arguments that parse but make no sense together (exit code 2, like clap's own errors).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// A verification that ran and found a problem: the verdict is the message, exit code 1.
#[derive(Debug)]
pub struct VerificationFailed(pub String);

impl fmt::Display for VerificationFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerificationFailed {}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Prints what went wrong (to stderr) and picks the exit code.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    // A reader that stopped early (`evident query | head`) is not an error of ours.
    if is_broken_pipe(&error) {
        return ExitCode::SUCCESS;
    }
    let mut stderr = io::stderr().lock();
    if let Some(failed) = error.downcast_ref::<VerificationFailed>() {
        let _ = writeln!(stderr, "{failed}");
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Some(bad) = error.downcast_ref::<UsageError>() {
        let _ = writeln!(
            stderr,
            "error: {bad}\n\nFor more information, try '--help'."
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let _ = writeln!(stderr, "error: {}", error_chain(&error));
    ExitCode::from(EXIT_FAILURE)
}

/// The error and its causes joined with `: `, skipping a cause whose text the message before
/// it already ends with (many library errors print their source in their own message, and
/// `{:#}` would then say it twice).
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// Whether progress should be drawn: only for a person watching a terminal.
pub fn stderr_is_terminal() -> bool {
    io::stderr().is_terminal()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A progress bar over bytes (with a total when known), drawn on stderr only when it is a
/// terminal; hidden otherwise, so piped output and logs stay clean.
pub fn bytes_progress(total: Option<u64>, what: &str) -> ProgressBar {
    if !stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(style(
                "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} ({eta})",
            )),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            style("{spinner} {prefix} {bytes} {binary_bytes_per_sec} {msg} ({elapsed})"),
        ),
    };
    bar.set_prefix(what.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A progress bar over entries, same terminal rule as [`bytes_progress`].
pub fn count_progress(total: Option<u64>, what: &str) -> ProgressBar {
    if !stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(style(
                "{spinner} {prefix} [{bar:30}] {human_pos}/{human_len} entries {per_sec} ({eta})",
            )),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            style("{spinner} {prefix} {human_pos} entries {per_sec} ({elapsed})"),
        ),
    };
    bar.set_prefix(what.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Widest a table cell is shown; longer text is cut with an ellipsis.
const MAX_CELL_CHARS: usize = 40;

/// A plain-text table: column widths from the rows given, cells cut at [`MAX_CELL_CHARS`].
pub struct Table {
    headers: Vec<&'static str>,
    widths: Vec<usize>,
}

/// Whether `c` is shown escaped in a table cell: controls (C0, DEL, C1), the bidirectional
/// embeddings, overrides, isolates and marks (which can make a cell read backwards, as in
/// "Trojan Source"), and the invisible format characters (zero-width spaces and joiners,
/// line and paragraph separators, the byte-order mark, tag characters).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// How `c` is shown: itself, or `\u{hex}` for [`needs_escape`], `\\` for a backslash (so
/// that text cannot pass itself off as an escape).
fn shown(c: char) -> String {
    if c == '\\' {
        "\\\\".to_owned()
    } else if needs_escape(c) {
        format!("\\u{{{:x}}}", u32::from(c))
    } else {
        c.to_string()
    }
}

/// `text` as a terminal shows it safely: see [`shown`].
pub fn escape_for_terminal(text: &str) -> String {
    text.chars().map(shown).collect()
}

fn cut(text: &str) -> String {
    // Controls would break the layout (and could move the cursor); bidi overrides would make
    // the cell read otherwise than it is stored: both are shown escaped.
    let clean = escape_for_terminal(text);
    if clean.chars().count() <= MAX_CELL_CHARS {
        return clean;
    }
    // Cut between shown characters, never inside an escape.
    let mut short = String::new();
    let mut width = 0;
    for c in text.chars() {
        let piece = shown(c);
        let len = piece.chars().count();
        if width + len > MAX_CELL_CHARS - 1 {
            break;
        }
        short.push_str(&piece);
        width += len;
    }
    short.push('…');
    short
}

impl Table {
    /// Sizes the columns for `headers` and a first batch of `rows`.
    pub fn new(headers: Vec<&'static str>, rows: &[Vec<String>]) -> Table {
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cut(cell).chars().count());
            }
        }
        Table { headers, widths }
    }

    pub fn write_header(&self, out: &mut dyn Write) -> io::Result<()> {
        let cells: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        self.write_row(out, &cells)
    }

    pub fn write_row(&self, out: &mut dyn Write, row: &[String]) -> io::Result<()> {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&self.widths).enumerate() {
            let cell = cut(cell);
            if i + 1 == row.len() {
                line.push_str(&cell);
            } else {
                let pad = width.saturating_sub(cell.chars().count());
                line.push_str(&cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like the server's listen error: its message includes its source.
    #[derive(Debug)]
    struct Listen(std::io::Error);

    impl std::fmt::Display for Listen {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot listen on 127.0.0.1:1: {}", self.0)
        }
    }

    impl std::error::Error for Listen {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(Listen(io)).context("server stopped");
        assert_eq!(
            error_chain(&error),
            "server stopped: cannot listen on 127.0.0.1:1: Address already in use"
        );
        // A cause its parent does not repeat is kept.
        let error = anyhow::anyhow!("disk on fire").context("writing the export");
        assert_eq!(error_chain(&error), "writing the export: disk on fire");
    }

    #[test]
    fn tables_align_and_cut_long_cells() {
        let rows = vec![
            vec!["1".to_owned(), "alice".to_owned(), "x".to_owned()],
            vec!["10".to_owned(), "a".repeat(60), "y\nz".to_owned()],
        ];
        let table = Table::new(vec!["SEQ", "ACTOR", "NOTE"], &rows);
        let mut out = Vec::new();
        table.write_header(&mut out).unwrap();
        for row in &rows {
            table.write_row(&mut out, row).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("SEQ  ACTOR"), "{text}");
        assert!(lines[2].contains('…'), "{text}");
        assert!(lines[2].ends_with(r"y\u{a}z"), "{text}");
        // Every row puts its last column at the same offset.
        let col = lines[0].find("NOTE").unwrap();
        assert_eq!(lines[1].chars().count() - 1, col, "{text}");
    }

    #[test]
    fn bidi_and_control_characters_are_shown_escaped() {
        // An actor name that a terminal would show as "alice" followed by reversed text.
        let rows = vec![vec![
            "alice\u{202e}nimda\u{202c}".to_owned(),
            "a\u{2066}b\u{2069}\u{200e}\u{200f}".to_owned(),
            "\u{1b}[31m\u{85}\u{7f}\u{feff}\u{2028}".to_owned(),
            r"C:\temp\u{202e}".to_owned(),
        ]];
        let table = Table::new(vec!["ACTOR", "NOTE", "MORE", "PATH"], &rows);
        let mut out = Vec::new();
        table.write_row(&mut out, &rows[0]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let cells: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                r"alice\u{202e}nimda\u{202c}",
                r"a\u{2066}b\u{2069}\u{200e}\u{200f}",
                r"\u{1b}[31m\u{85}\u{7f}\u{feff}\u{2028}",
                // A literal backslash is doubled, so stored text cannot fake an escape.
                r"C:\\temp\\u{202e}",
            ],
            "{text}"
        );
        for c in text.trim_end().chars() {
            assert!(!needs_escape(c), "{c:?} left raw in {text:?}");
        }
        for c in [
            '\u{202a}', '\u{202b}', '\u{202d}', '\u{2067}', '\u{2068}', '\u{0}', '\u{9f}',
        ] {
            assert!(needs_escape(c), "{c:?}");
        }
        assert_eq!(escape_for_terminal("Zoë 東京"), "Zoë 東京");
        // A long cell is cut between escapes, never inside one.
        let long = format!("{}\u{202e}tail", "x".repeat(35));
        assert_eq!(cut(&long), format!("{}…", "x".repeat(35)));
    }
}
