//! Fuzz target: the export reader and verifier. Bytes as an export file holds them are fed to
//! the streaming `ExportVerifier` in two chunks (cut a third of the way in, so that line
//! cutting across chunk boundaries is exercised), once alone and once with the seed's signed
//! checkpoint as the one "kept elsewhere". It must report, never panic, and stay within its
//! line limits. The seeds (`seeds/export_verify/`) are real exports signed by the key in
//! `seeds/node.vkey`.
#![no_main]

use evident_core::NoteVerifier;
use evident_core::export::ExportVerifier;
use libfuzzer_sys::fuzz_target;

const VKEY: &str = include_str!("../seeds/node.vkey");
const KEPT: &str = include_str!("../seeds/checkpoint_note/checkpoint.txt");

fuzz_target!(|data: &[u8]| {
    let Ok(verifier) = NoteVerifier::parse(VKEY.trim()) else {
        return;
    };
    let (first, second) = data.split_at(data.len() / 3);
    for trusted in [None, Some(KEPT.to_owned())] {
        let mut export = ExportVerifier::new(verifier.clone(), trusted);
        if export.push_bytes(first).is_ok() && export.push_bytes(second).is_ok() {
            let _ = export.finish();
        }
    }
});
