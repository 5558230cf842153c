//! Fuzz target: the event parser. Bytes as a client sends them to `POST /api/v1/events` go
//! through the server's strict JSON reading and event validation; whatever validates is
//! sequenced (canonical encoding, chain hash, seal, tree append), which must not panic, and
//! its canonical context must read back as the same context.
#![no_main]

use evident_core::event::{Context, EventInput};
use evident_core::{ChainHead, SealKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = evident_core::json::from_str_strict(text) else {
        return;
    };
    let inputs: Vec<&serde_json::Value> = match &value {
        serde_json::Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let Ok(key) = SealKey::new(&[7u8; 32]) else {
        return;
    };
    let mut head = ChainHead::genesis();
    let mut nodes = Vec::new();
    for value in inputs {
        let Ok(input) = EventInput::from_json(value) else {
            continue;
        };
        let context = input.context.clone();
        let reread = Context::from_canonical(context.as_str().to_owned());
        assert_eq!(
            reread.as_ref().ok(),
            Some(&context),
            "canonical context does not read back"
        );
        head.append(
            uuid_from(head.next_seq),
            1_700_000_000_000,
            "node-1",
            "evk_0123456789ab",
            input,
            &key,
            &mut nodes,
        );
    }
});

fn uuid_from(n: u64) -> uuid::Uuid {
    uuid::Uuid::from_u128(u128::from(n))
}
