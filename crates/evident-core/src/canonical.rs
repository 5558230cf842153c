//! The one canonical encoding of an [`Event`]: deterministic, length-prefixed bytes that the
//! chain hashes. Specified byte for byte in `docs/FORMAT.md`.

use crate::event::Event;

/// Appends the canonical bytes of `event` to `out`.
pub fn encode_into(_event: &Event, _out: &mut Vec<u8>) {
    todo!()
}

/// The canonical bytes of `event`.
pub fn encode(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_into(event, &mut out);
    out
}
