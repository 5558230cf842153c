//! End to end, through the real binary: access hardening as a user meets it. CLI tables show
//! bidi and control characters escaped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Answer, Node, Server, event};
use serde_json::{Value, json};

/// POSTs `body` as JSON to `path` with `key`.
fn post_json(server: &Server, key: &str, path: &str, body: &Value) -> Answer {
    let resp = server
        .client()
        .post(format!("{}{path}", server.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    Answer {
        status,
        body: resp.bytes().unwrap().to_vec(),
    }
}

#[test]
fn query_and_key_tables_show_bidi_and_control_characters_escaped() {
    let node = Node::new();
    let server = Server::start(&node);
    let api = server.api(&node.owner_key);
    let mut spoof = event("alice\u{202e}nimda\u{202c}", "auth.login");
    spoof["target"] = json!({"kind": "file", "id": "a\u{2066}b\u{2069}\u{200f}"});
    spoof["actor"]["ip"] = json!(null);
    api.append(&spoof).unwrap();
    let shown = server.cli(&node.owner_key, &["query"]).ok();
    assert!(
        shown.stdout.contains(r"alice\u{202e}nimda\u{202c} (user)"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains(r"file:a\u{2066}b\u{2069}\u{200f}"),
        "{}",
        shown.stdout
    );
    for c in shown.stdout.chars() {
        assert!(
            c == '\n' || !(c.is_control() || ('\u{2000}'..='\u{206f}').contains(&c)),
            "{c:?} reached the terminal raw:\n{}",
            shown.stdout
        );
    }
    // The same for a key label in `keys list`.
    let created = post_json(&server, &node.owner_key, "/api/v1/keys", &json!({"role": "readonly", "label": "ops\u{202e}tpyrc"}));
    assert_eq!(created.status, 201, "{}", created.text());
    let listed = server.cli(&node.owner_key, &["keys", "list"]).ok();
    assert!(listed.stdout.contains(r"ops\u{202e}tpyrc"), "{}", listed.stdout);
    assert!(!listed.stdout.contains('\u{202e}'), "{}", listed.stdout);
}
