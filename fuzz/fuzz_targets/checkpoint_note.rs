//! Fuzz target: the checkpoint and signed-note parsers. The input is read as a signed
//! checkpoint (C2SP signed note, checked against the seed node's key), as a bare note with any
//! signatures, as an unsigned checkpoint body, and as a verifier-key string. A parse that
//! succeeds must survive a round trip: a checkpoint's text parses back to the same checkpoint.
#![no_main]

use evident_core::{Checkpoint, NoteVerifier, note};
use libfuzzer_sys::fuzz_target;

const VKEY: &str = include_str!("../seeds/node.vkey");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(verifier) = NoteVerifier::parse(VKEY.trim()) {
        let _ = Checkpoint::open(text, &verifier);
        let _ = note::open(text, std::slice::from_ref(&verifier));
    }
    if let Ok(checkpoint) = Checkpoint::parse(text) {
        let again = Checkpoint::parse(&checkpoint.to_text());
        assert_eq!(
            again.as_ref().ok(),
            Some(&checkpoint),
            "checkpoint text does not round-trip"
        );
    }
    if let Ok(verifier) = NoteVerifier::parse(text) {
        let again = NoteVerifier::parse(&verifier.to_vkey_string());
        assert!(again.is_ok(), "verifier key does not round-trip");
    }
});
