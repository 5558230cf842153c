//! The CLI does not surprise, through the real binary: a mistyped data directory is refused,
//! never turned into a new node with fresh keys; `serve` checks its listen address before it
//! creates anything; man pages and shell completions are generated from the command tree.

mod common;

use common::{Node, run};

/// Commands that need an existing node refuse a directory that is not one, name it, say
/// what to do, and leave nothing behind; `keys create --init` creates the node.
#[test]
fn a_directory_that_is_not_a_node_is_refused_unless_init_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("evident-dta");
    let typo_str = typo.to_str().unwrap();

    let out = run(&["keys", "create", "--data-dir", typo_str, "--role", "owner"]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains(typo_str),
        "names the path: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--init"),
        "says what to do: {}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("evk_"),
        "no key printed: {}",
        out.stdout
    );
    assert!(!typo.exists(), "nothing created at {typo_str}");

    for args in [
        vec!["verify", "--data-dir", typo_str],
        vec!["prune", "--data-dir", typo_str, "--retention-days", "365"],
        vec!["keys", "list", "--data-dir", typo_str],
    ] {
        let out = run(&args);
        assert_ne!(out.code, Some(0), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.contains(typo_str) && out.stderr.contains("not an"),
            "{args:?} names the directory and the problem: {}",
            out.stderr
        );
        assert!(!typo.exists(), "{args:?} created {typo_str}");
    }

    let out = run(&[
        "keys",
        "create",
        "--init",
        "--data-dir",
        typo_str,
        "--role",
        "owner",
    ])
    .ok();
    assert!(out.stdout.lines().last().unwrap().starts_with("evk_"));
    // Now it is a node: no --init needed, and the same node (not a second one) answers.
    let again = run(&["keys", "create", "--data-dir", typo_str, "--role", "writer"]).ok();
    let node_of = |s: &str| {
        s.lines()
            .next()
            .and_then(|l| l.split(" for node ").nth(1))
            .map(str::to_owned)
    };
    assert!(node_of(&out.stdout).is_some(), "{}", out.stdout);
    assert_eq!(node_of(&out.stdout), node_of(&again.stdout));
    let listed = run(&["keys", "list", "--data-dir", typo_str, "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
}

/// `serve` on an address that is taken fails before it creates the data directory.
#[test]
fn serve_checks_the_listen_address_before_creating_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new-node");
    let out = run(&[
        "serve",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &addr,
    ]);
    assert_ne!(out.code, Some(0), "{}", out.stdout);
    assert!(
        out.stderr.contains(&addr),
        "names the address: {}",
        out.stderr
    );
    assert!(
        !dir.exists(),
        "serve created {} before binding",
        dir.display()
    );
    // An existing node is untouched by the failed start and still verifies.
    let node = Node::new();
    let out = run(&["serve", "--data-dir", node.dir_str(), "--listen", &addr]);
    assert_ne!(out.code, Some(0));
    node.verify().ok();
}
