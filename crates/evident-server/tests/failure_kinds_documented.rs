//! docs/FORMAT.md §12 lists every failure kind a verifier reports; this test fails when a kind
//! exists in the code and not in that table, or the table lists one the code does not have.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_core::export::ExportError;
use evident_core::verify::Violation;
use evident_server::verification::Problem;
use std::collections::BTreeSet;

/// The kinds in the first column of the table under *Every failure a verifier reports*.
fn documented_kinds() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/FORMAT.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let start = doc
        .find("### Every failure a verifier reports")
        .expect("FORMAT.md has no section \"Every failure a verifier reports\"");
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    assert!(!rows.is_empty(), "no table rows in:\n{section}");
    rows.iter()
        .map(|row| {
            let cell = row.split('|').nth(1).unwrap().trim();
            cell.strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .unwrap_or_else(|| panic!("first cell is not a `kind`: {row}"))
                .to_owned()
        })
        .collect()
}

/// Every kind the verifiers can report, from the code's own lists.
fn code_kinds() -> BTreeSet<String> {
    Violation::KINDS
        .iter()
        .chain(ExportError::KINDS.iter())
        .chain(Problem::STORE_KINDS.iter())
        .chain(evident_core::four_eyes::bundle::ReportError::KINDS.iter())
        .map(|k| (*k).to_owned())
        .collect()
}

#[test]
fn every_failure_kind_is_in_format_md_and_nothing_else() {
    let documented = documented_kinds();
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        "a kind is listed twice: {documented:?}"
    );
    let code = code_kinds();
    let missing: Vec<_> = code.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/FORMAT.md §12 lacks {missing:?} and lists {extra:?}, which the code does not report"
    );
}

/// The lists the test compares are complete: every variant's `kind()` is in them.
#[test]
fn the_code_lists_hold_every_variant() {
    let code = code_kinds();
    let violation = Violation::RootMismatch { size: 1 };
    let exports = [
        ExportError::Malformed {
            line: 1,
            problem: "x".into(),
        },
        ExportError::Violation {
            line: 1,
            violation: violation.clone(),
        },
        ExportError::Truncated("x".into()),
        ExportError::Unprovable {
            line: 1,
            problem: "x".into(),
        },
    ];
    for e in &exports {
        assert!(code.contains(e.kind()), "{}", e.kind());
    }
    let problems = [
        Problem::Violation(violation),
        Problem::Undecodable {
            seq: Some(1),
            problem: "x".into(),
        },
    ];
    for p in &problems {
        assert!(code.contains(p.kind()), "{}", p.kind());
    }
    assert!(code.contains(evident_server::verification::BAD_ANCHOR));
}
