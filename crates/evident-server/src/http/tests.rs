//! In-process tests of the HTTP API: requests go through the whole router (auth, handlers,
//! error mapping) against a real store in a temporary directory.

use super::AppState;
use crate::auth::{Role, create_key};
use crate::config::ServerConfig;
use crate::test_support::{FaultyStore, event_json, faulty_node, test_config};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use evident_core::export::ExportVerifier;
use evident_core::{Checkpoint, Hash, merkle};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tower::ServiceExt;

struct TestApp {
    _tmp: tempfile::TempDir,
    state: AppState,
    app: Router,
    faulty: Arc<FaultyStore>,
    owner: String,
    readonly: String,
    writer: String,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    /// Asserts an error reply with `status` and `code`; returns the error object.
    fn error(&self, status: StatusCode, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        body["error"].clone()
    }
}

fn setup_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = test_config(tmp.path());
    adjust(&mut config);
    let (node, faulty) = faulty_node(config);
    let store = node.store().clone();
    let now = crate::now_ms();
    let key = |role| create_key(&*store, role, None, None, now).unwrap().0;
    let (owner, readonly, writer) = (key(Role::Owner), key(Role::Readonly), key(Role::Writer));
    let state = AppState::new(node);
    TestApp {
        _tmp: tmp,
        app: super::router(state.clone()),
        state,
        faulty,
        owner,
        readonly,
        writer,
    }
}

fn setup() -> TestApp {
    setup_with(|_| {})
}

impl TestApp {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Some(&self.owner), None, Body::empty())
            .await
    }

    async fn post_json(&self, body: &Value) -> Reply {
        self.call(
            Method::POST,
            "/api/v1/events",
            Some(&self.writer),
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    fn size(&self) -> u64 {
        self.state.node().sequencer().size()
    }

    /// Appends events for these actors, one request.
    async fn fill(&self, actors: &[&str]) {
        let batch: Vec<Value> = actors.iter().map(|a| event_json(a, "auth.login")).collect();
        let reply = self.post_json(&Value::Array(batch)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.state.node().shutdown();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn append_one_a_batch_and_ndjson_returns_receipts_in_order() {
    let t = setup();
    let r = t.post_json(&event_json("alice", "auth.login")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = r.json();
    let receipts = body["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["seq"], 0);
    assert_eq!(receipts[0]["hash"].as_str().unwrap().len(), 64);
    assert!(receipts[0]["recorded_at"].as_str().unwrap().ends_with('Z'));

    let r = t
        .post_json(&json!([event_json("a", "x.y"), event_json("b", "x.y")]))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let seqs: Vec<u64> = r.json()["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);

    let ndjson = format!(
        "{}\r\n\n{}\n",
        event_json("c", "x.y"),
        event_json("d", "x.y")
    );
    let r = t
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&t.writer),
            Some("application/x-ndjson"),
            ndjson,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["receipts"][1]["seq"], 4);
    assert_eq!(t.size(), 5);

    // The receipt's hash is the stored entry's hash.
    let page = t.get("/api/v1/audit-log?order=asc&limit=1").await.json();
    assert_eq!(page["events"][0]["hash"], receipts[0]["hash"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_event_rejects_the_whole_batch_naming_index_and_field() {
    let t = setup();
    let mut bad = event_json("bob", "auth.login");
    bad["severity"] = json!("loud");
    let r = t
        .post_json(&json!([event_json("alice", "auth.login"), bad]))
        .await;
    let e = r.error(StatusCode::BAD_REQUEST, "invalid_event");
    assert_eq!(e["index"], 1);
    assert_eq!(e["field"], "severity");
    assert!(e["message"].as_str().unwrap().contains("event 1"), "{e}");

    let mut bad = event_json("bob", "auth.login");
    bad["actor"]["ip"] = json!("not-an-ip");
    let e = t
        .post_json(&bad)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_event");
    assert_eq!(e["field"], "actor.ip");

    let mut bad = event_json("bob", "auth.login");
    bad["surprise"] = json!(1);
    let e = t
        .post_json(&bad)
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_event");
    assert_eq!(e["index"], 0);

    assert_eq!(t.size(), 0);
    assert_eq!(t.faulty.appends.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_evident_namespace_and_appended_by_are_refused_from_clients_storing_nothing() {
    let t = setup();
    for action in [
        "evident.x",
        "evident.key.created",
        "evident.integrity.damaged",
        "evident",
    ] {
        // Alone, and as the last of an otherwise valid batch (JSON array and NDJSON).
        let e = t
            .post_json(&event_json("mallory", action))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_event");
        assert_eq!(
            (e["field"].as_str(), e["index"].as_u64()),
            (Some("action"), Some(0))
        );
        assert!(e["message"].as_str().unwrap().contains("reserved"), "{e}");
        let e = t
            .post_json(&json!([
                event_json("alice", "auth.login"),
                event_json("mallory", action)
            ]))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_event");
        assert_eq!(
            (e["field"].as_str(), e["index"].as_u64()),
            (Some("action"), Some(1))
        );
        let ndjson = format!(
            "{}\n{}\n",
            event_json("alice", "auth.login"),
            event_json("mallory", action)
        );
        let e = t
            .call(
                Method::POST,
                "/api/v1/events",
                Some(&t.writer),
                Some("application/x-ndjson"),
                ndjson,
            )
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_event");
        assert_eq!(
            (e["field"].as_str(), e["index"].as_u64()),
            (Some("action"), Some(1))
        );
    }
    for value in [json!("evk_0123456789ab"), json!("system"), json!(null)] {
        let mut forged = event_json("mallory", "auth.login");
        forged["appended_by"] = value;
        let e = t
            .post_json(&json!([event_json("alice", "auth.login"), forged]))
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_event");
        assert_eq!(
            (e["field"].as_str(), e["index"].as_u64()),
            (Some("appended_by"), Some(1))
        );
        assert!(
            e["message"].as_str().unwrap().contains("set by the server"),
            "{e}"
        );
    }
    assert_eq!(t.size(), 0);
    assert_eq!(t.faulty.appends.load(Ordering::SeqCst), 0);
    // Names that merely start alike are the client's.
    let r = t.post_json(&event_json("alice", "evidently.fine")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_stored_event_names_the_key_that_appended_it() {
    let t = setup();
    let store = t.state.node().store().clone();
    let now = crate::now_ms();
    let (second, _) = create_key(&*store, Role::Writer, None, None, now).unwrap();
    let id_of = |key: &str| crate::auth::key_id_of(key).unwrap().to_owned();
    t.fill(&["alice", "bob"]).await;
    let r = t
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&second),
            Some("application/json"),
            event_json("carol", "auth.login").to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let page = t
        .get("/api/v1/audit-log?order=asc&actor_kind=user")
        .await
        .json();
    let by: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["appended_by"].as_str().unwrap())
        .collect();
    let (writer, second) = (id_of(&t.writer), id_of(&second));
    assert_eq!(by, [writer.as_str(), writer.as_str(), second.as_str()]);
    // The node's own events are appended by `system`, whatever key caused them: a forbidden
    // request by the read-only key is recorded, and the record is the node's.
    let r = t
        .call(
            Method::POST,
            "/api/v1/events",
            Some(&t.readonly),
            Some("application/json"),
            event_json("dave", "auth.login").to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let page = t.get("/api/v1/audit-log?action=evident.*").await.json();
    let events = page["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{page}");
    for e in events {
        assert_eq!(e["appended_by"], "system", "{e}");
    }
    // And the stored rows say the same.
    let mut stored = Vec::new();
    store
        .scan(
            &evident_store::Filter::default(),
            evident_store::Order::Ascending,
            None,
            None,
            &mut |e| {
                stored.push(e.event.appended_by.unwrap());
                std::ops::ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(stored[..3], [writer.clone(), writer, second]);
}

/// Appends wait for a share of `max_pending_append_bytes` before reading their body and give
/// it back when answered (issue 16: 64 clients of 1000-event batches held ~270 MB at once):
/// while the whole budget is held, an append does not complete; once it is free, it does. A
/// body larger than the whole budget goes through alone, again and again (its share comes
/// back).
#[tokio::test(flavor = "multi_thread")]
async fn appends_wait_for_the_pending_bytes_budget_and_give_it_back() {
    let t = setup_with(|c| c.max_pending_append_bytes = 2048);
    let batch = Value::Array(
        (0..20)
            .map(|i| event_json(&format!("user-{i}"), "auth.login"))
            .collect(),
    );
    assert!(batch.to_string().len() > 2048);
    for _ in 0..2 {
        let r = tokio::time::timeout(std::time::Duration::from_secs(30), t.post_json(&batch))
            .await
            .expect("an append larger than the whole budget is answered");
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let held = t
        .state
        .append_permit(2048)
        .await
        .expect("the budget is open");
    let (app, key) = (t.app.clone(), t.writer.clone());
    let pending = tokio::spawn(async move {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/events")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(event_json("mallory", "auth.login").to_string()))
            .unwrap();
        app.oneshot(request).await.unwrap().status()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "an append was answered while the whole budget was held"
    );
    drop(held);
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), pending)
        .await
        .expect("the append is answered once the budget is free")
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_get_named_errors_and_store_nothing() {
    let t = setup_with(|c| {
        c.max_body_bytes = 4096;
        c.max_batch_events = 3;
    });
    let post = |ct: Option<&'static str>, body: Vec<u8>| {
        t.call(Method::POST, "/api/v1/events", Some(&t.writer), ct, body)
    };
    post(Some("application/json"), b"{\"actor\":".to_vec())
        .await
        .error(StatusCode::BAD_REQUEST, "malformed_json");
    post(Some("application/json"), b"{\"a\":\"\xff\"}".to_vec())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_utf8");
    post(Some("application/json"), b"[]".to_vec())
        .await
        .error(StatusCode::BAD_REQUEST, "empty_batch");
    post(Some("application/json"), b"42".to_vec())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_body");
    post(Some("text/plain"), b"{}".to_vec())
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    post(None, b"{}".to_vec())
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    post(Some("application/json; charset=latin1"), b"{}".to_vec())
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let refused = post(Some("application/json"), vec![b' '; 5000]).await;
    // The body was left unread, so the connection cannot carry another request: the answer
    // says so, or a client would reuse it and lose its next request.
    assert_eq!(
        refused
            .headers
            .get(header::CONNECTION)
            .map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    refused.error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let four: Vec<Value> = (0..4)
        .map(|i| event_json(&format!("u{i}"), "a.b"))
        .collect();
    post(
        Some("application/json"),
        Value::Array(four).to_string().into_bytes(),
    )
    .await
    .error(StatusCode::PAYLOAD_TOO_LARGE, "too_many_events");
    let e = post(
        Some("application/x-ndjson"),
        format!("{}\nnot json\n", event_json("a", "a.b")).into_bytes(),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "malformed_json");
    assert_eq!(e["index"], 1);
    assert!(e["message"].as_str().unwrap().contains("line 2"), "{e}");
    t.call(
        Method::POST,
        "/api/v1/events?dry_run=1",
        Some(&t.writer),
        Some("application/json"),
        event_json("a", "a.b").to_string(),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "unknown_parameter");
    assert_eq!(t.size(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_roles_are_enforced() {
    let t = setup();
    let r = t
        .call(Method::GET, "/api/v1/audit-log", None, None, Body::empty())
        .await;
    r.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));

    let unknown = format!("evk_000000000000_{}", "A".repeat(43));
    t.call(
        Method::GET,
        "/api/v1/checkpoint",
        Some(&unknown),
        None,
        Body::empty(),
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    t.call(
        Method::GET,
        "/api/v1/checkpoint",
        Some("letmein"),
        None,
        Body::empty(),
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");

    // Writer may append but not read; readonly the reverse.
    t.call(
        Method::GET,
        "/api/v1/audit-log",
        Some(&t.writer),
        None,
        Body::empty(),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    t.call(
        Method::POST,
        "/api/v1/events",
        Some(&t.readonly),
        Some("application/json"),
        event_json("a", "a.b").to_string(),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    let r = t
        .call(
            Method::GET,
            "/api/v1/audit-log",
            Some(&t.readonly),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Revoked and expired keys stop working.
    let store = t.state.store().clone();
    let now = crate::now_ms();
    let (key, record) = create_key(&*store, Role::Readonly, None, None, now).unwrap();
    let ok = t
        .call(
            Method::GET,
            "/api/v1/checkpoint",
            Some(&key),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    crate::auth::revoke_key(&*store, &record.id, now).unwrap();
    let e = t
        .call(
            Method::GET,
            "/api/v1/checkpoint",
            Some(&key),
            None,
            Body::empty(),
        )
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");

    let (key, record) = create_key(&*store, Role::Readonly, None, None, now).unwrap();
    let (new_key, _) = crate::auth::rotate_key(&*store, &record.id, 0, now - 1).unwrap();
    let e = t
        .call(
            Method::GET,
            "/api/v1/checkpoint",
            Some(&key),
            None,
            Body::empty(),
        )
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");
    let ok = t
        .call(
            Method::GET,
            "/api/v1/checkpoint",
            Some(&new_key),
            None,
            Body::empty(),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    // Health needs no key.
    let r = t
        .call(Method::GET, "/api/v1/healthz", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_use_is_recorded() {
    let t = setup();
    t.get("/api/v1/checkpoint").await;
    // Uses are kept in memory and written in batches (the server flushes every 2 s).
    let pending = t.state.usage().pending(&t.owner[..16]);
    assert!(pending.is_some_and(|(at, _)| at > 0));
    t.state.usage().flush(&**t.state.store());
    let mut used = None;
    for _ in 0..100 {
        let keys = t.state.store().keys().unwrap();
        used = keys
            .into_iter()
            .find(|k| t.owner.starts_with(&format!("{}_", k.id)))
            .and_then(|k| k.last_used_at);
        if used.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(used.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_scoped_keys_stay_in_their_tenant() {
    let t = setup();
    let store = t.state.store().clone();
    let now = crate::now_ms();
    let (acme, _) = create_key(&*store, Role::Admin, Some("acme".into()), None, now).unwrap();
    let post = |body: Value| {
        t.call(
            Method::POST,
            "/api/v1/events",
            Some(&acme),
            Some("application/json"),
            body.to_string(),
        )
    };
    let r = post(event_json("a", "a.b")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let mut other = event_json("a", "a.b");
    other["tenant"] = json!("globex");
    post(other).await.error(StatusCode::FORBIDDEN, "forbidden");
    t.fill(&["someone-in-default"]).await;

    let r = t
        .call(
            Method::GET,
            "/api/v1/audit-log",
            Some(&acme),
            None,
            Body::empty(),
        )
        .await;
    let events = r.json()["events"].as_array().unwrap().clone();
    // The client's event, and the recorded refusal of the cross-tenant append.
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["tenant"] == "acme"));
    assert_eq!(events[0]["action"], "evident.access.cross_tenant");
    assert_eq!(events[0]["target"]["id"], "globex");
    t.call(
        Method::GET,
        "/api/v1/audit-log?tenant=default",
        Some(&acme),
        None,
        Body::empty(),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_filter_and_page_with_cursors() {
    let t = setup();
    let mut batch = Vec::new();
    for i in 0..7 {
        let mut e = event_json(if i % 2 == 0 { "alice" } else { "bob" }, "auth.login");
        if i == 3 {
            e["action"] = json!("config.threshold.changed");
            e["severity"] = json!("critical");
            e["actor"]["ip"] = json!("10.1.2.3");
        }
        batch.push(e);
    }
    t.post_json(&Value::Array(batch)).await;

    let seqs = |v: &Value| -> Vec<u64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let page = t.get("/api/v1/audit-log").await.json();
    assert_eq!(seqs(&page), vec![6, 5, 4, 3, 2, 1, 0]);
    assert!(page["next_cursor"].is_null());
    let first = &page["events"][6];
    for field in [
        "id",
        "recorded_at",
        "node_id",
        "tenant",
        "actor",
        "target",
        "context",
        "hash",
        "seal",
    ] {
        assert!(!first[field].is_null(), "{field} missing in {first}");
    }
    assert_eq!(first["context"], json!({"old": 5, "new": 7}));

    assert_eq!(
        seqs(
            &t.get("/api/v1/audit-log?actor=alice&order=asc")
                .await
                .json()
        ),
        vec![0, 2, 4, 6]
    );
    assert_eq!(
        seqs(&t.get("/api/v1/audit-log?action=config.*").await.json()),
        vec![3]
    );
    assert_eq!(
        seqs(&t.get("/api/v1/audit-log?action=config").await.json()),
        Vec::<u64>::new()
    );
    assert_eq!(
        seqs(&t.get("/api/v1/audit-log?severity=error").await.json()),
        vec![3]
    );
    assert_eq!(
        seqs(&t.get("/api/v1/audit-log?ip=10.0.0.0%2F8").await.json()),
        vec![3]
    );
    assert_eq!(
        seqs(
            &t.get("/api/v1/audit-log?target=node:nyc-edge-01&limit=2")
                .await
                .json()
        ),
        vec![6, 5]
    );
    assert_eq!(
        seqs(
            &t.get("/api/v1/audit-log?to=1970-01-02T00:00:00Z")
                .await
                .json()
        ),
        Vec::<u64>::new()
    );
    assert_eq!(
        seqs(
            &t.get("/api/v1/audit-log?from=0&outcome=success&actor=bob")
                .await
                .json()
        ),
        vec![5, 3, 1]
    );

    // Paging: 3 + 3 + 1, newest first, and the last page has no cursor.
    let mut all = Vec::new();
    let mut uri = "/api/v1/audit-log?limit=3".to_owned();
    loop {
        let page = t.get(&uri).await.json();
        all.extend(seqs(&page));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/audit-log?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(all, vec![6, 5, 4, 3, 2, 1, 0]);
    let page = t.get("/api/v1/audit-log?limit=3&order=asc").await.json();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = t
        .get(&format!(
            "/api/v1/audit-log?limit=3&order=asc&cursor={cursor}"
        ))
        .await
        .json();
    assert_eq!(seqs(&next), vec![3, 4, 5]);
    t.get(&format!("/api/v1/audit-log?limit=3&cursor={cursor}"))
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_parameter");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_query_parameters_are_named() {
    let t = setup();
    for (uri, field, code) in [
        ("/api/v1/audit-log?actr=alice", "actr", "unknown_parameter"),
        ("/api/v1/audit-log?limit=1001", "limit", "invalid_parameter"),
        ("/api/v1/audit-log?limit=0", "limit", "invalid_parameter"),
        ("/api/v1/audit-log?limit=ten", "limit", "invalid_parameter"),
        (
            "/api/v1/audit-log?cursor=garbage!",
            "cursor",
            "invalid_parameter",
        ),
        (
            "/api/v1/audit-log?from=yesterday",
            "from",
            "invalid_parameter",
        ),
        (
            "/api/v1/audit-log?severity=loud",
            "severity",
            "invalid_parameter",
        ),
        (
            "/api/v1/audit-log?outcome=maybe",
            "outcome",
            "invalid_parameter",
        ),
        (
            "/api/v1/audit-log?ip=10.0.0.0%2F40",
            "ip",
            "invalid_parameter",
        ),
        (
            "/api/v1/audit-log?format=xml",
            "format",
            "invalid_parameter",
        ),
        ("/api/v1/audit-log?order=up", "order", "invalid_parameter"),
        (
            "/api/v1/audit-log?format=ndjson&order=desc",
            "order",
            "invalid_parameter",
        ),
        (
            "/api/v1/audit-log?format=csv&cursor=AAAA",
            "cursor",
            "invalid_parameter",
        ),
        (
            "/api/v1/audit-log?actor=a&actor=b",
            "actor",
            "invalid_parameter",
        ),
        (
            "/api/v1/audit-log?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z",
            "to",
            "invalid_parameter",
        ),
        ("/api/v1/proof/inclusion", "seq", "invalid_parameter"),
        (
            "/api/v1/proof/consistency?from=0&to=1",
            "from",
            "invalid_parameter",
        ),
        ("/api/v1/verify?from=x", "from", "invalid_parameter"),
        ("/api/v1/checkpoint?x=1", "x", "unknown_parameter"),
    ] {
        let e = t.get(uri).await.error(StatusCode::BAD_REQUEST, code);
        assert_eq!(e["field"], field, "{uri}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_answer_json() {
    let t = setup();
    t.get("/api/v1/nope")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    t.get("/nowhere")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    // `/` is the dashboard's page (on by default), HTML, not a JSON 404.
    let page = t.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("Evident dashboard"), "{}", page.text());
    t.call(
        Method::DELETE,
        "/api/v1/events",
        Some(&t.owner),
        None,
        Body::empty(),
    )
    .await
    .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    t.call(
        Method::PUT,
        "/api/v1/audit-log",
        Some(&t.owner),
        None,
        Body::empty(),
    )
    .await
    .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ndjson_export_verifies_offline_with_the_public_key() {
    let t = setup();
    t.fill(&["alice", "bob", "alice", "carol", "alice"]).await;
    let vkey = t.get("/api/v1/public-key").await.text();
    let verifier = evident_core::NoteVerifier::parse(vkey.trim()).unwrap();

    // Each export is recorded (before it is cut) as a self-audit event of kind api_key.
    for (exports, (uri, entries)) in [
        ("/api/v1/audit-log?format=ndjson&actor_kind=user", 5),
        ("/api/v1/audit-log?format=ndjson&actor=alice", 3),
        ("/api/v1/audit-log?format=ndjson&actor=nobody", 0),
    ]
    .into_iter()
    .enumerate()
    {
        let r = t.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-ndjson");
        let mut v = ExportVerifier::new(verifier.clone(), None);
        for line in r.text().lines() {
            v.push_line(line.as_bytes()).unwrap();
        }
        let report = v.finish().unwrap();
        assert_eq!(report.entries, entries, "{uri}");
        assert_eq!(report.checkpoint_size, 5 + exports as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_ties_to_an_older_trusted_checkpoint_with_consistency_from() {
    let t = setup();
    t.fill(&["a", "b", "c"]).await;
    let old = t.get("/api/v1/checkpoint").await.text();
    t.fill(&["d", "e"]).await;
    let vkey = t.get("/api/v1/public-key").await.text();
    let verifier = evident_core::NoteVerifier::parse(vkey.trim()).unwrap();
    let check = |body: String| {
        let mut v = ExportVerifier::new(verifier.clone(), Some(old.clone()));
        for line in body.lines() {
            v.push_line(line.as_bytes())?;
        }
        v.finish()
    };
    let with = t
        .get("/api/v1/audit-log?format=ndjson&consistency_from=3&actor_kind=user")
        .await;
    assert_eq!(with.status, StatusCode::OK, "{}", with.text());
    let report = check(with.text()).unwrap();
    // The export's own self-audit event is in the log it is tied to.
    assert_eq!((report.entries, report.checkpoint_size), (5, 6));
    let without = t.get("/api/v1/audit-log?format=ndjson").await;
    let err = check(without.text()).unwrap_err();
    assert!(
        matches!(err, evident_core::export::ExportError::Unprovable { .. }),
        "{err}"
    );
    let e = t
        .get("/api/v1/audit-log?format=ndjson&consistency_from=600")
        .await
        .error(StatusCode::NOT_FOUND, "out_of_range");
    assert_eq!(e["field"], "consistency_from");
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_export_streams_every_row() {
    let t = setup();
    let names: Vec<String> = (0..50).map(|i| format!("user{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    t.fill(&refs).await;
    let r = t.get("/api/v1/audit-log?format=csv&actor_kind=user").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = r.text();
    assert!(text.starts_with("timestamp,node_id,tenant,actor,actor_kind,action,target,ip_address,user_agent,outcome,severity,context,seq,hash,seal,appended_by,occurred_at\r\n"));
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 50);
    assert_eq!(&rows[0][3], "user0");
    assert_eq!(&rows[49][12], "49");
    assert_eq!(&rows[49][15], crate::auth::key_id_of(&t.writer).unwrap());
    let r = t
        .get("/api/v1/audit-log?format=csv&order=desc&limit=2&actor_kind=user")
        .await;
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(r.body.as_slice())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][12], "49");
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_and_proofs_verify() {
    let t = setup();
    t.fill(&["a", "b", "c", "d", "e", "f"]).await;
    let vkey = t.get("/api/v1/public-key").await.text();
    let verifier = evident_core::NoteVerifier::parse(vkey.trim()).unwrap();
    let r = t.get("/api/v1/checkpoint").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let checkpoint = Checkpoint::open(&r.text(), &verifier).unwrap();
    assert_eq!(checkpoint.size, 6);
    assert_eq!(checkpoint.origin, "evident/node-1");

    let p = t.get("/api/v1/proof/inclusion?seq=2").await.json();
    assert_eq!(p["size"], 6);
    let hash = |v: &Value| Hash::from_hex(v.as_str().unwrap()).unwrap();
    let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(hash).collect();
    assert_eq!(hash(&p["root"]), checkpoint.root);
    merkle::verify_inclusion(&hash(&p["leaf_hash"]), 2, 6, &proof, &checkpoint.root).unwrap();
    assert!(p["checkpoint"].as_str().is_some());

    t.fill(&["g", "h", "i"]).await;
    let p = t.get("/api/v1/proof/inclusion?seq=7&size=9").await.json();
    let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(hash).collect();
    merkle::verify_inclusion(&hash(&p["leaf_hash"]), 7, 9, &proof, &hash(&p["root"])).unwrap();
    assert!(p["checkpoint"].is_null());

    let c = t.get("/api/v1/proof/consistency?from=6&to=9").await.json();
    let proof: Vec<Hash> = c["proof"].as_array().unwrap().iter().map(hash).collect();
    assert_eq!(hash(&c["from_root"]), checkpoint.root);
    merkle::verify_consistency(6, &checkpoint.root, 9, &hash(&c["to_root"]), &proof).unwrap();

    // Well-formed requests for a tree or proof the log does not hold: 404 `out_of_range`
    // (schema-valid requests are never 400s; the OpenAPI document cannot know the log's size).
    t.get("/api/v1/proof/inclusion?seq=9&size=9")
        .await
        .error(StatusCode::NOT_FOUND, "out_of_range");
    t.get("/api/v1/proof/inclusion?seq=1&size=10")
        .await
        .error(StatusCode::NOT_FOUND, "out_of_range");
    t.get("/api/v1/proof/consistency?from=7&to=6")
        .await
        .error(StatusCode::NOT_FOUND, "out_of_range");
    t.get("/api/v1/proof/consistency?from=1&to=10")
        .await
        .error(StatusCode::NOT_FOUND, "out_of_range");
}

/// `format=ndjson` streams the walk's progress (entries checked, never past the total,
/// never backwards), then the same answer the whole form gives; a failure the whole form
/// answers with a status is the last line's error body; findings are the answer's.
#[tokio::test(flavor = "multi_thread")]
async fn verify_streams_progress_then_the_answer() {
    let t = setup();
    let input = evident_core::event::EventInput::from_json(&event_json("a", "auth.login")).unwrap();
    // Enough entries for progress between the first line and the answer.
    let n = 2 * crate::verification::PROGRESS_EVERY + 500;
    let state = t.state.clone();
    tokio::task::spawn_blocking(move || {
        state
            .node()
            .sequencer()
            .append_blocking(vec![input; n as usize])
            .unwrap()
    })
    .await
    .unwrap();
    let lines = |reply: Reply| -> Vec<Value> {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.headers[header::CONTENT_TYPE], "application/x-ndjson");
        reply
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let streamed = lines(t.get("/api/v1/verify?format=ndjson").await);
    let (answer, progress) = streamed.split_last().unwrap();
    let checked: Vec<u64> = progress
        .iter()
        .map(|p| {
            assert_eq!(p["progress"]["total"], n, "{p}");
            p["progress"]["checked"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(checked[0], 0, "{checked:?}");
    assert!(checked.windows(2).all(|w| w[0] <= w[1]), "{checked:?}");
    assert!(checked.iter().any(|c| *c > 0 && *c < n), "{checked:?}");
    assert!(checked.iter().all(|c| *c <= n), "{checked:?}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["entries"], n);

    let last = |lines: Vec<Value>| lines.last().cloned().unwrap();
    let beyond = last(lines(
        t.get(&format!("/api/v1/verify?format=ndjson&from={}", n + 10))
            .await,
    ));
    assert_eq!(beyond["error"]["code"], "out_of_range", "{beyond}");
    *t.faulty.tamper_seq.lock().unwrap() = Some(7);
    let broken = last(lines(t.get("/api/v1/verify?format=ndjson").await));
    assert_eq!(broken["ok"], false, "{broken}");
    assert_eq!(broken["violation"]["seq"], 7, "{broken}");
    t.get("/api/v1/verify?format=csv")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_parameter");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_ok_and_the_first_violation() {
    let t = setup();
    t.fill(&["a", "b", "c", "d"]).await;
    let v = t.get("/api/v1/verify").await.json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 4);
    assert_eq!(v["size"], 4);
    // The first run is recorded after it finished: the log has one more entry now.
    let v = t.get("/api/v1/verify?from=2").await.json();
    assert_eq!(
        (v["ok"].clone(), v["entries"].clone()),
        (json!(true), json!(3))
    );
    t.get("/api/v1/verify?from=9")
        .await
        .error(StatusCode::NOT_FOUND, "out_of_range");

    *t.faulty.tamper_seq.lock().unwrap() = Some(2);
    let v = t.get("/api/v1/verify").await.json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["violation"]["kind"], "chain_broken");
    assert_eq!(v["violation"]["seq"], 2);
    assert!(v["violation"]["message"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_507_and_nothing_is_stored() {
    let t = setup();
    t.fill(&["a"]).await;
    t.faulty.disk_full.store(true, Ordering::SeqCst);
    t.post_json(&event_json("b", "a.b"))
        .await
        .error(StatusCode::INSUFFICIENT_STORAGE, "storage_full");
    t.faulty.disk_full.store(false, Ordering::SeqCst);
    let r = t.post_json(&event_json("c", "a.b")).await;
    assert_eq!(r.json()["receipts"][0]["seq"], 1);
    assert_eq!(t.get("/api/v1/verify").await.json()["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutting_down_refuses_appends_with_503() {
    let t = setup();
    t.state.begin_shutdown();
    t.post_json(&event_json("a", "a.b"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down");
    let r = t
        .call(Method::GET, "/api/v1/healthz", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_appends_and_requests() {
    let t = setup();
    t.fill(&["a", "b", "c"]).await;
    let text = t.get("/api/v1/metrics").await.text();
    assert!(text.contains("evident_events_appended_total 3"), "{text}");
    assert!(text.contains("evident_log_size 3"), "{text}");
    assert!(
        text.contains(
            r#"evident_http_requests_total{route="/api/v1/events",method="POST",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("evident_commit_seconds_count 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_metrics_answer_at_the_root_paths_too() {
    // Probes and Prometheus look at /healthz and /metrics by default.
    let t = setup();
    t.fill(&["a"]).await;
    let r = t
        .call(Method::GET, "/healthz", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let text = t.get("/metrics").await.text();
    assert!(text.contains("evident_events_appended_total 1"), "{text}");
    // /metrics needs a key like every route but the health checks.
    let r = t
        .call(Method::GET, "/metrics", None, None, Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_describes_every_route() {
    let t = setup();
    let doc = t.get("/api/v1/openapi.json").await.json();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/events",
        "/api/v1/audit-log",
        "/api/v1/checkpoint",
        "/api/v1/public-key",
        "/api/v1/proof/inclusion",
        "/api/v1/proof/consistency",
        "/api/v1/verify",
        "/api/v1/healthz",
        "/api/v1/metrics",
        "/healthz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/keys",
        "/api/v1/keys/{id}/revoke",
        "/api/v1/keys/{id}/rotate",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    // Every route of the router's table is documented with the permission it enforces.
    for (method, path, permission) in super::ROUTES {
        let op = &doc["paths"][*path][method.as_str().to_ascii_lowercase()];
        assert_eq!(
            op["x-evident-permission"],
            permission.map_or("none", |p| p.as_str()),
            "{method} {path}"
        );
    }
    let params = doc["paths"]["/api/v1/audit-log"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert_eq!(params.len(), super::log::PARAMS.len());
    // An empty optional query parameter counts as absent, and the document says so.
    assert!(
        params.iter().all(|p| p["allowEmptyValue"] == true),
        "{params:?}"
    );
    let from = &doc["paths"]["/api/v1/proof/consistency"]["get"]["parameters"][0];
    assert_eq!(
        (from["name"].clone(), from["required"].clone()),
        (json!("from"), json!(true))
    );
    assert!(from.get("allowEmptyValue").is_none(), "{from}");
    // The append body: one event or a non-empty array of them, each closed to unknown fields.
    let body = &doc["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(body["oneOf"][1]["minItems"], 1, "{body}");
    let event = &doc["components"]["schemas"]["EventInputDoc"];
    assert_eq!(event["additionalProperties"], false);
    assert_eq!(event["properties"]["actor"]["additionalProperties"], false);
    // The rotation body may be left out.
    assert_eq!(
        doc["paths"]["/api/v1/keys/{id}/rotate"]["post"]["requestBody"]["required"],
        false
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn key_management_follows_role_and_tenant() {
    let t = setup();
    let store = t.state.store().clone();
    let now = crate::now_ms();
    let (acme_admin, _) = create_key(&*store, Role::Admin, Some("acme".into()), None, now).unwrap();
    let (admin, _) = create_key(&*store, Role::Admin, None, None, now).unwrap();
    let post = |key: String, uri: String, body: &'static str| {
        let t = &t;
        async move {
            t.call(
                Method::POST,
                &uri,
                Some(&key),
                Some("application/json"),
                body.to_owned(),
            )
            .await
        }
    };
    // A tenant-scoped admin's keys are scoped to its tenant, and only readonly or writer.
    let r = post(
        acme_admin.clone(),
        "/api/v1/keys".to_owned(),
        r#"{"role":"writer"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["record"]["tenant"], "acme");
    let key = r.json()["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(r.json()["record"]["id"].as_str().unwrap()));
    post(
        acme_admin.clone(),
        "/api/v1/keys".to_owned(),
        r#"{"role":"writer","tenant":"globex"}"#,
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    post(
        acme_admin.clone(),
        "/api/v1/keys".to_owned(),
        r#"{"role":"admin"}"#,
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    post(
        admin.clone(),
        "/api/v1/keys".to_owned(),
        r#"{"role":"owner"}"#,
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    post(
        admin.clone(),
        "/api/v1/keys".to_owned(),
        r#"{"role":"root"}"#,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_body");
    post(
        admin.clone(),
        "/api/v1/keys".to_owned(),
        r#"{"role":"writer","x":1}"#,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_body");
    // Admins may not touch owners; the acme admin sees and manages only acme keys.
    let owner_revoke = format!("/api/v1/keys/{}/revoke", &t.owner[..16]);
    post(admin.clone(), owner_revoke, "")
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    let readonly_revoke = format!("/api/v1/keys/{}/revoke", &t.readonly[..16]);
    // A key outside its tenant is, to the acme admin, a key that does not exist.
    post(acme_admin.clone(), readonly_revoke.clone(), "")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    let r = t
        .call(
            Method::GET,
            "/api/v1/keys",
            Some(&acme_admin),
            None,
            Body::empty(),
        )
        .await;
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k["tenant"] == "acme"));
    // An admin revokes a readonly key; it stops at once.
    let r = post(admin.clone(), readonly_revoke, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "revoked");
    t.call(
        Method::GET,
        "/api/v1/checkpoint",
        Some(&t.readonly),
        None,
        Body::empty(),
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    post(
        admin.clone(),
        "/api/v1/keys/evk_nothex/revoke".to_owned(),
        "",
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_parameter");
    post(admin, "/api/v1/keys/evk_000000000000/rotate".to_owned(), "")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

/// Found by schemathesis: `{"grace_seconds": 26.0}` is an integer to JSON Schema (the
/// document's `integer`), and was refused; a fraction or a negative number still is.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_grace_accepts_integral_numbers_only() {
    let t = setup();
    let rotate = |body: &'static str| {
        let t = &t;
        let uri = format!("/api/v1/keys/{}/rotate", &t.writer[..16]);
        async move {
            t.call(
                Method::POST,
                &uri,
                Some(&t.owner),
                Some("application/json"),
                body.to_owned(),
            )
            .await
        }
    };
    for bad in [r#"{"grace_seconds":2.5}"#, r#"{"grace_seconds":-1}"#] {
        let e = rotate(bad)
            .await
            .error(StatusCode::BAD_REQUEST, "invalid_body");
        assert!(
            e["message"].as_str().unwrap().contains("grace_seconds"),
            "{e}"
        );
    }
    let r = rotate(r#"{"grace_seconds":26.0}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["replaced"]["status"], "expiring");
}

/// Found by schemathesis: schema-valid requests for a tree size or entry the log does not hold
/// were 400s; they are 404 `out_of_range`, naming the parameter.
#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_log_are_out_of_range() {
    let t = setup();
    t.fill(&["a", "b"]).await;
    for (uri, field) in [
        (
            "/api/v1/proof/inclusion?seq=0&size=9223372036854775806",
            "size",
        ),
        ("/api/v1/proof/inclusion?seq=5&size=2", "seq"),
        ("/api/v1/proof/consistency?from=1&to=99", "to"),
        ("/api/v1/proof/consistency?from=2&to=1", "from"),
        ("/api/v1/verify?from=9223372036854775806", "from"),
        (
            "/api/v1/audit-log?format=ndjson&consistency_from=99",
            "consistency_from",
        ),
    ] {
        let e = t
            .get(uri)
            .await
            .error(StatusCode::NOT_FOUND, "out_of_range");
        assert_eq!(e["field"], field, "{uri}: {e}");
    }
}

/// One request carrying a session cookie (and optionally a CSRF token).
async fn with_cookie(
    app: &TestApp,
    method: Method,
    uri: &str,
    cookie: &str,
    csrf: Option<&str>,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, format!("evident_session={cookie}"));
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    let response = app
        .app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_sessions_sign_in_check_csrf_and_sign_out() {
    let app = setup();
    app.fill(&["alice", "bob", "carol"]).await;
    let login = |key: String| {
        let body = json!({ "key": key }).to_string();
        app.call(
            Method::POST,
            "/dashboard/login",
            None,
            Some("application/json"),
            body,
        )
    };
    login(app.writer.clone())
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    login("evk_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned())
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    let reply = login(app.readonly.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let cookie = reply.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let id = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("evident_session=")
        .unwrap()
        .to_owned();
    let csrf = reply.json()["csrf_token"].as_str().unwrap().to_owned();
    // No [witness] table: the page pins no witness keys and no policy.
    assert_eq!(reply.json()["witness_policy_k"], 0, "{}", reply.text());
    assert_eq!(reply.json()["witness_keys"], json!([]), "{}", reply.text());

    let histogram = with_cookie(
        &app,
        Method::GET,
        "/api/v1/audit-log/histogram?actor=bob",
        &id,
        None,
    )
    .await;
    assert_eq!(histogram.status, StatusCode::OK, "{}", histogram.text());
    assert_eq!(histogram.json()["total"], 1);
    assert_eq!(
        histogram.json()["buckets"][0]["by_severity"]["notice"],
        1,
        "{}",
        histogram.text()
    );

    with_cookie(&app, Method::POST, "/dashboard/logout", &id, None)
        .await
        .error(StatusCode::FORBIDDEN, "csrf");
    with_cookie(&app, Method::POST, "/dashboard/logout", &id, Some("wrong"))
        .await
        .error(StatusCode::FORBIDDEN, "csrf");
    let out = with_cookie(&app, Method::POST, "/dashboard/logout", &id, Some(&csrf)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text());
    with_cookie(&app, Method::GET, "/api/v1/audit-log", &id, None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");

    let page = app.call(Method::GET, "/", None, None, Body::empty()).await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_json_export_and_entry_follow_the_filter_and_the_tenant() {
    let app = setup();
    app.fill(&["alice", "bob", "alice"]).await;
    let store = app.state.store().clone();
    let (acme, _) = create_key(
        &*store,
        Role::Readonly,
        Some("acme".into()),
        None,
        crate::now_ms(),
    )
    .unwrap();
    let app = &app;
    let get = |uri: &'static str, key: String| async move {
        app.call(Method::GET, uri, Some(&key), None, Body::empty())
            .await
    };

    let r = get("/dashboard/export.json?actor=alice", app.readonly.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("evident-export.json")
    );
    let all: Value = serde_json::from_slice(&r.body).unwrap();
    let seqs: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["actor"]["id"], "alice");
            assert_eq!(e["hash"].as_str().unwrap().len(), 64);
            e["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, [0, 2]);
    let none = get("/dashboard/export.json?actor=nobody", app.readonly.clone()).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&none.body).unwrap(),
        json!([])
    );
    get("/dashboard/export.json?limit=5", app.readonly.clone())
        .await
        .error(StatusCode::BAD_REQUEST, "unknown_parameter");
    // The acme key's export holds none of the default tenant's events.
    let scoped = get("/dashboard/export.json", acme.clone()).await;
    let scoped: Value = serde_json::from_slice(&scoped.body).unwrap();
    assert!(
        scoped
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "acme"),
        "{scoped}"
    );

    let one = get("/dashboard/entry/1", app.readonly.clone()).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    assert_eq!(one.json()["actor"]["id"], "bob");
    assert_eq!(one.json()["seq"], 1);
    get("/dashboard/entry/1", acme.clone())
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    get("/dashboard/entry/999", app.readonly.clone())
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    get("/dashboard/entry/x", app.readonly.clone())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_parameter");
    // The inclusion proof names the previous entry's hash (zeros before entry 0).
    let proof = app.get("/api/v1/proof/inclusion?seq=1&size=3").await;
    let first = app.get("/dashboard/entry/0").await;
    assert_eq!(proof.json()["prev_hash"], first.json()["hash"]);
    let proof0 = app.get("/api/v1/proof/inclusion?seq=0&size=3").await;
    assert_eq!(proof0.json()["prev_hash"], "0".repeat(64));
}

#[tokio::test(flavor = "multi_thread")]
async fn histogram_counts_every_severity_exactly() {
    let app = setup();
    let severities = [
        "debug", "info", "info", "notice", "warning", "error", "error", "alert",
    ];
    let batch: Vec<Value> = severities
        .iter()
        .map(|s| {
            let mut e = event_json("alice", "auth.login");
            e["severity"] = json!(s);
            e
        })
        .collect();
    let r = app.post_json(&Value::Array(batch)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let sum = |h: &Value| {
        let mut out = std::collections::BTreeMap::<String, u64>::new();
        for b in h["buckets"].as_array().unwrap() {
            for (s, n) in b["by_severity"].as_object().unwrap() {
                *out.entry(s.clone()).or_default() += n.as_u64().unwrap();
            }
        }
        out
    };
    let h = app
        .get("/api/v1/audit-log/histogram?actor=alice&buckets=7")
        .await
        .json();
    assert_eq!(h["total"], 8, "{h}");
    let expected: std::collections::BTreeMap<String, u64> = [
        ("alert", 1),
        ("debug", 1),
        ("error", 2),
        ("info", 2),
        ("notice", 1),
        ("warning", 1),
    ]
    .into_iter()
    .map(|(s, n)| (s.to_owned(), n))
    .collect();
    assert_eq!(sum(&h), expected, "{h}");
    let h = app
        .get("/api/v1/audit-log/histogram?actor=alice&severity=error")
        .await
        .json();
    assert_eq!(h["total"], 3, "{h}");
    assert_eq!(sum(&h).keys().collect::<Vec<_>>(), ["alert", "error"]);
}

/// The chart's buckets are round widths on the UTC grid (so that they line up with the
/// store's per-second to per-day counts), contiguous, never more than asked; they hold exactly
/// what the audit log lists for the same filter, and say the same before and after the store's
/// counts take the events in (the store reads what its counts do not cover yet).
#[tokio::test(flavor = "multi_thread")]
async fn histogram_buckets_are_round_and_count_the_same_before_and_after_the_counts_catch_up() {
    let app = setup();
    let mut batch = Vec::new();
    for i in 0..60usize {
        let action = ["auth.login", "auth.logout", "config.changed"][i % 3];
        let mut e = event_json(["alice", "bob"][i % 2], action);
        e["severity"] = json!(["info", "notice", "error", "alert", "debug"][i % 5]);
        e["outcome"] = json!(["success", "failure", "denied", "success"][i % 4]);
        e["tenant"] = json!(["acme", "default", "globex"][i % 3]);
        batch.push(e);
    }
    let r = app.post_json(&Value::Array(batch)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let hour_ago = crate::now_ms() - 3_600_123;
    let round = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 900_000, 1_800_000,
    ];
    let filters = [
        "",
        "tenant=acme",
        "action=auth.*",
        "action=config.changed",
        "severity=error",
        "outcome=failure",
        "tenant=globex&severity=notice&outcome=denied",
        "actor=alice",
    ];
    // The audit-log route's count of each filter, before anything else is read.
    let mut listed = Vec::new();
    for f in filters {
        let page = app
            .get(&format!("/api/v1/audit-log?limit=1000&{f}"))
            .await
            .json();
        listed.push(page["events"].as_array().map_or(0, Vec::len) as u64);
    }
    async fn charts(
        app: &TestApp,
        filters: &[&str],
        hour_ago: i64,
        round: &[i64],
    ) -> Vec<(String, Value, Vec<Value>)> {
        let mut out = Vec::new();
        for f in filters {
            for range in [format!("&from={hour_ago}"), String::new()] {
                let q = format!("/api/v1/audit-log/histogram?buckets=40&{f}{range}");
                let h = app.get(&q).await.json();
                let width = h["bucket_ms"].as_i64().unwrap();
                assert!(round.contains(&width), "{q}: {h}");
                let buckets = h["buckets"].as_array().unwrap();
                assert!(!buckets.is_empty() && buckets.len() <= 40, "{q}: {h}");
                assert_eq!(buckets[0]["start"], h["from"], "{q}: {h}");
                assert_eq!(buckets[buckets.len() - 1]["end"], h["to"], "{q}: {h}");
                for pair in buckets.windows(2) {
                    assert_eq!(pair[0]["end"], pair[1]["start"], "{q}: {h}");
                    assert_eq!(pair[1]["start"].as_i64().unwrap() % width, 0, "{q}: {h}");
                }
                let sum: u64 = buckets.iter().map(|b| b["total"].as_u64().unwrap()).sum();
                assert_eq!(h["total"].as_u64(), Some(sum), "{q}: {h}");
                // What a chart shows: the total and the buckets holding events (by their
                // start: the last bucket ends at the bucket of "now", which moves on).
                let filled: Vec<Value> = buckets
                    .iter()
                    .filter(|b| b["total"] != 0)
                    .map(|b| json!([b["start"], b["total"], b["by_severity"]]))
                    .collect();
                out.push((q, h["total"].clone(), filled));
            }
        }
        out
    }
    let before = charts(&app, &filters, hour_ago, &round).await;
    for (i, (q, total, _)) in before.iter().enumerate() {
        assert_eq!(total.as_u64(), Some(listed[i / 2]), "{q}");
    }
    assert!(before.iter().any(|(_, t, _)| t.as_u64() > Some(0)));
    let store = app.state.store().clone();
    let mut taken = 0;
    loop {
        let n = store.advance_counts(7).unwrap();
        if n == 0 {
            break;
        }
        taken += n;
    }
    assert!(taken >= 60, "the counts took in {taken} entries");
    assert_eq!(charts(&app, &filters, hour_ago, &round).await, before);
}

/// Every route that filters the log takes the audit log's filters, spans included: the
/// histogram and the dashboard's JSON export once refused `occurred_*` and `since` (the
/// histogram) or took `since` and ignored it (the export).
#[tokio::test(flavor = "multi_thread")]
async fn the_histogram_and_the_dashboard_export_take_every_filter_of_the_audit_log() {
    let app = setup();
    let mut old = event_json("alice", "auth.login");
    old["occurred_at"] = json!("2020-01-01T00:00:00.000Z");
    let mut recent = event_json("alice", "auth.login");
    recent["occurred_at"] = json!(evident_core::event::format_rfc3339_millis(
        crate::now_ms() - 60_000
    ));
    let r = app.post_json(&Value::Array(vec![old, recent])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    app.fill(&["bob"]).await;

    let total = |q: &str| {
        let app = &app;
        let q = q.to_owned();
        async move {
            let h = app
                .get(&format!("/api/v1/audit-log/histogram?{q}"))
                .await
                .json();
            h["total"].as_u64().unwrap_or_else(|| panic!("{q}: {h}"))
        }
    };
    assert_eq!(total("since=1h").await, 3);
    assert_eq!(total("occurred_since=1d").await, 1);
    assert_eq!(
        total("occurred_from=2019-01-01T00:00:00Z&occurred_to=2021-01-01T00:00:00Z").await,
        1
    );
    assert_eq!(total("occurred_from=2019-01-01T00:00:00Z").await, 2);
    app.get("/api/v1/audit-log/histogram?since=1h&from=0")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_parameter");

    let exported = |q: &str| {
        let app = &app;
        let q = q.to_owned();
        async move {
            let r = app.get(&format!("/dashboard/export.json?{q}")).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text());
            let all: Value = serde_json::from_slice(&r.body).unwrap();
            all.as_array().unwrap().len()
        }
    };
    assert_eq!(exported("occurred_since=1d").await, 1);
    assert_eq!(
        exported("occurred_from=2019-01-01T00:00:00Z&order=desc").await,
        2
    );
    // `since` is a span before now (every event here is recent: all three; the exports'
    // own records are left out by the action); `since` with `from` is refused, not ignored.
    assert_eq!(exported("since=1h&action=auth.login").await, 3);
    app.get("/dashboard/export.json?since=1h&from=0")
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_parameter");
}
