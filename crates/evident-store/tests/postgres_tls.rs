//! TLS to PostgreSQL, against a real throwaway cluster with `ssl = on` that takes TCP
//! connections over TLS only (one cluster for the whole binary, its certificate signed by a
//! CA generated at start, and one database that takes plain connections only): each libpq
//! `sslmode` connects, checks and falls back as libpq does, with the server's own view
//! (`pg_stat_ssl`) of whether the session is encrypted; wrong CAs, wrong host names, plain
//! connections to a TLS-only server and bad parameters fail with messages naming the cause.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use evident_store::{PostgresStore, Store, StoreError};
use evident_testpg::PLAIN_ONLY_DB;
use std::path::Path;

fn cluster() -> &'static evident_testpg::Cluster {
    evident_testpg::shared_tls().unwrap_or_else(|e| panic!("{e}"))
}

fn ca() -> &'static Path {
    cluster().ca_cert().unwrap()
}

/// A fresh database's URL with `params` appended.
fn url(params: &str) -> String {
    let db = cluster()
        .create_database()
        .unwrap_or_else(|e| panic!("{e}"));
    format!("{}?{params}", cluster().url(&db))
}

/// The same database reached through host name `host` at 127.0.0.1 (`hostaddr`): what the
/// certificate is checked against when the name is.
fn url_via(host: &str, params: &str) -> String {
    let db = cluster()
        .create_database()
        .unwrap_or_else(|e| panic!("{e}"));
    format!(
        "postgres://postgres@{host}:{}/{db}?hostaddr=127.0.0.1&{params}",
        cluster().port()
    )
}

/// The server's view of the sessions of node `node` (their `application_name`): how many,
/// and how many of them are encrypted.
fn sessions(node: &str) -> (u32, u32) {
    let out = cluster()
        .psql(
            "postgres",
            &format!(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'evident {node}'"
            ),
        )
        .unwrap();
    let (all, ssl) = out.trim().split_once('|').unwrap();
    (all.parse().unwrap(), ssl.parse().unwrap())
}

/// Opens the store of `node` at `url` and checks that it works and that its open session is
/// encrypted (or not, as `encrypted` says).
fn opens(url: &str, node: &str, encrypted: bool) -> PostgresStore {
    let store = PostgresStore::open(url, node).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(store.load_head().unwrap().next_seq, 0);
    let (all, ssl) = sessions(node);
    assert!(all >= 1, "no session of {node}");
    assert_eq!(ssl, if encrypted { all } else { 0 }, "{url}");
    store
}

fn refused(url: &str) -> String {
    match PostgresStore::open(url, "refused") {
        Err(StoreError::Backend(m)) => m,
        Err(other) => panic!("{url}: expected a backend error, got {other:?}"),
        Ok(_) => panic!("{url}: connected"),
    }
}

#[test]
fn verify_full_with_the_right_ca_connects_encrypted() {
    let ca = ca().display();
    opens(
        &url(&format!("sslmode=verify-full&sslrootcert={ca}")),
        "full-ip",
        true,
    );
    // The certificate names `localhost` too.
    opens(
        &url_via(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "full-name",
        true,
    );
    opens(
        &url(&format!("sslmode=verify-ca&sslrootcert={ca}")),
        "ca",
        true,
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused_and_the_message_says_so() {
    let other = cluster().unrelated_ca_cert().unwrap().display().to_string();
    for mode in ["verify-full", "verify-ca", "require"] {
        let m = refused(&url(&format!("sslmode={mode}&sslrootcert={other}")));
        assert!(
            m.contains("invalid peer certificate") && m.contains("UnknownIssuer"),
            "{mode}: {m}"
        );
        assert!(
            m.contains(&format!(
                "sslmode={mode}: the server's certificate must chain to a CA certificate of \
                 sslrootcert {other}"
            )),
            "{mode}: {m}"
        );
    }
}

#[test]
fn without_sslrootcert_the_verifying_modes_trust_only_the_system_roots() {
    // The test CA is none of the system's: refused, whether the system has roots or not.
    for mode in ["verify-full", "verify-ca"] {
        let m = refused(&url(&format!("sslmode={mode}")));
        assert!(m.contains("the system's root certificates"), "{mode}: {m}");
    }
}

#[test]
fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let ca = ca().display();
    let m = refused(&url_via(
        "db.evident.invalid",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    assert!(
        m.contains("not valid for name \"db.evident.invalid\""),
        "{m}"
    );
    assert!(m.contains("and name the host connected to"), "{m}");
    opens(
        &url_via(
            "db.evident.invalid",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        "ca-other-name",
        true,
    );
}

#[test]
fn require_encrypts_without_checking_the_certificate() {
    // No sslrootcert: the client knows nothing of the CA, and neither the chain nor the
    // name is checked, as with libpq.
    opens(&url("sslmode=require"), "require", true);
    opens(
        &url_via("db.evident.invalid", "sslmode=require"),
        "require-other-name",
        true,
    );
    // With the right sslrootcert, libpq checks the chain in `require` too.
    opens(
        &url(&format!("sslmode=require&sslrootcert={}", ca().display())),
        "require-with-ca",
        true,
    );
}

#[test]
fn prefer_is_the_default_and_falls_back_to_plain_like_libpq() {
    // The server takes TLS: the session is encrypted.
    opens(
        &cluster().url(&cluster().create_database().unwrap()),
        "prefer-default",
        true,
    );
    opens(&url("sslmode=prefer"), "prefer", true);
    // The server refuses this database over TLS: a plain session, as libpq's retry gives.
    opens(&cluster().url(PLAIN_ONLY_DB), "prefer-plain", false);
    // `allow`: plain first, then TLS when the server refuses plain.
    opens(&url("sslmode=allow"), "allow", true);
    // When both attempts fail, the message tells of both.
    let missing = cluster().url("evident_no_such_db");
    let m = refused(&missing);
    assert!(
        m.contains("over TLS: database \"evident_no_such_db\" does not exist; then without TLS (sslmode=prefer): no pg_hba.conf entry"),
        "{m}"
    );
    let m = refused(&format!("{missing}?sslmode=allow"));
    assert!(
        m.contains("without TLS: no pg_hba.conf entry")
            && m.contains(
                "then over TLS (sslmode=allow): database \"evident_no_such_db\" does not exist"
            ),
        "{m}"
    );
}

#[test]
fn plain_connections_to_a_tls_only_server_are_refused_clearly() {
    let m = refused(&url("sslmode=disable"));
    assert!(m.contains("no pg_hba.conf entry"), "{m}");
    assert!(m.contains("no encryption"), "{m}");
    assert!(
        m.contains("sslmode=disable, but the server takes this connection only over TLS"),
        "{m}"
    );
    // And the other way round: TLS required where the server takes plain sessions only.
    let m = refused(&format!("{}?sslmode=require", cluster().url(PLAIN_ONLY_DB)));
    assert!(m.contains("pg_hba.conf rejects connection"), "{m}");
}

#[test]
fn bad_tls_parameters_are_refused_naming_the_parameter() {
    let m = refused(&url("sslmode=verify"));
    assert!(m.contains("sslmode \"verify\" is not one of"), "{m}");
    let m = refused(&url(
        "sslmode=verify-full&sslrootcert=/nonexistent/root.crt",
    ));
    assert!(
        m.contains("sslrootcert /nonexistent/root.crt cannot be read"),
        "{m}"
    );
    // A key is not a certificate.
    let dir = tempfile::tempdir().unwrap();
    let key_only = dir.path().join("key.pem");
    std::fs::write(
        &key_only,
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let m = refused(&url(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        key_only.display()
    )));
    assert!(m.contains("holds no PEM certificate"), "{m}");
}
