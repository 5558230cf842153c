//! The web dashboard in a real headless Chromium (Debian `chromium` + `chromium-driver`,
//! driven over WebDriver with fantoccini): sign-in, filters applied on the server, paging
//! over the whole log, an event's proof verified in the browser and failing once the store
//! is edited, a CSV export downloaded and read back, sign-out; cookie flags, CSRF refusal and
//! tenant isolation. Screenshots land in `target/dashboard-screenshots/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Node, Server, create_key};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromedriver ({e}): install the browser and its driver with \
                 `apt-get install chromium chromium-driver` (scripts/test.sh does)"
            )
        });
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, url }
}

async fn browser(driver: &Driver, downloads: &Path) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1800"],
            "prefs": {
                "download.default_directory": downloads.to_str().unwrap(),
                "download.prompt_for_download": false,
            }
        }
    });
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("start a Chromium session over WebDriver")
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Waits until `text` of element `#id` satisfies `ok`; returns it (fails naming what it saw).
async fn wait_text(c: &Client, id: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Id(id)).await {
            if let Ok(text) = e.text().await {
                if ok(&text) {
                    return text;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("#{id} never became as expected; last text: {last:?}")
}

async fn fill(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn sign_in(c: &Client, url: &str, key: &str) {
    c.goto(url).await.unwrap();
    wait_visible(c, "key").await;
    fill(c, "key", key).await;
    click(c, "login-submit").await;
    wait_text(c, "who", |t| t.starts_with("Signed in as")).await;
}

async fn wait_visible(c: &Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(e) = c.find(Locator::Id(id)).await {
            if e.is_displayed().await.unwrap_or(false) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "#{id} never shown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The seq numbers of the table's rows.
async fn table_seqs(c: &Client) -> Vec<u64> {
    let mut out = Vec::new();
    for b in c
        .find_all(Locator::Css("#events tbody button.seq"))
        .await
        .unwrap()
    {
        out.push(b.text().await.unwrap().parse().unwrap());
    }
    out
}

/// Runs `script` (an async body using `fetch`) in the page and returns its result.
async fn in_page(c: &Client, script: &str) -> Value {
    c.execute_async(
        &format!("const done = arguments[arguments.length - 1]; (async () => {{ {script} }})().then(done, (e) => done('error: ' + e));"),
        vec![],
    )
    .await
    .unwrap()
}

fn app_event(i: usize) -> Value {
    let actors = ["alice", "bob", "carol"];
    let severities = ["info", "notice", "warning", "error"];
    // Every form the canonical encoding has: IPv4, IPv6 (full and compressed), no address;
    // a user agent or none; occurred_at or none; awkward context strings and numbers.
    let ip = match i % 5 {
        0 | 1 => json!(format!("10.0.{}.{}", i % 2, i % 250)),
        2 => json!(format!("2001:db8:0:1:2:3:4:{:x}", i)),
        3 => json!(format!("2001:db8::{:x}", i)),
        _ => Value::Null,
    };
    let mut event = json!({
        "tenant": if i % 4 == 3 { "acme" } else { "default" },
        "actor": {"id": actors[i % 3], "kind": "user", "ip": ip},
        "action": if i % 5 == 0 { "app.config.changed" } else { "app.login" },
        "target": {"kind": "service", "id": format!("svc-{}", i % 7)},
        "outcome": if i % 6 == 0 { "failure" } else { "success" },
        "severity": severities[i % 4],
        "context": {"i": i, "note": "ü \"quoted\"\n\u{1}\u{7f}é😀", "z": [1, 2.5, true, null, -0.0, 1e-7, 123456789012345.0, 0.1], "a": {"b": "c", "B": "é", "aa": {}}, "": []}
    });
    if i % 2 == 0 {
        event["occurred_at"] = json!("2026-01-02T03:04:05.000Z");
    }
    if i % 3 == 1 {
        event["actor"]["user_agent"] = json!(format!("Mozilla/5.0 (e2e {i})"));
    }
    event
}

/// A blocking HTTP request from the async browser part (the blocking client lives and dies
/// on a blocking thread).
async fn blocking_request(method: &'static str, url: String, session_id: String) -> (u16, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let http = common::http_client();
        let request = match method {
            "POST" => http.post(url),
            _ => http.get(url),
        };
        let answer = request
            .header("cookie", format!("evident_session={session_id}"))
            .send()
            .unwrap();
        (answer.status().as_u16(), answer.bytes().unwrap().to_vec())
    })
    .await
    .unwrap()
}

struct Setup {
    dir: PathBuf,
    base: String,
    readonly: String,
    writer: String,
    acme: String,
    events: Vec<Value>,
    receipts: Vec<(u64, String)>,
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let node = Node::embedded();
    let readonly = create_key(&node.dir, "readonly", &[]);
    let writer = create_key(&node.dir, "writer", &[]);
    let acme = create_key(&node.dir, "readonly", &["--tenant", "acme"]);
    let config = node.file("evident.toml");
    std::fs::write(
        &config,
        "[[four_eyes]]\nname = \"config-change\"\nwithin = \"1h\"\n\
         confirmed = { action = \"app.config.changed\" }\n\
         confirmation = { action = \"app.config.confirmed\" }\n",
    )
    .unwrap();
    let server = Server::start_with(
        &node.dir,
        &[],
        &["--config", config.to_str().unwrap()],
        None,
    );
    let api = server.api(&node.owner_key);
    let events: Vec<Value> = (0..130).map(app_event).collect();
    let receipts = api.append(&Value::Array(events.clone())).unwrap();
    api.wait_checkpoint(130);
    let setup = Setup {
        dir: node.dir.clone(),
        base: server.url.clone(),
        readonly,
        writer,
        acme,
        events,
        receipts,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(browse(&setup));
    drop(runtime);

    // Sign-ins, refusals and sign-outs are in the log.
    let audit = api
        .get("/api/v1/audit-log?action=evident.*&limit=1000")
        .json();
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "evident.dashboard.signed_in",
        "evident.dashboard.signed_out",
        "evident.dashboard.csrf_refused",
        "evident.access.forbidden",
        "evident.log.exported",
        "evident.access.cross_tenant",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
}

async fn browse(setup: &Setup) {
    let Setup {
        dir,
        base,
        readonly,
        writer,
        acme,
        events,
        receipts,
    } = setup;
    let url = format!("{base}/");
    let driver = start_driver();
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(&driver, downloads.path()).await;

    // A writer key may not sign in; a readonly key may.
    c.goto(&url).await.unwrap();
    wait_visible(&c, "key").await;
    screenshot(&c, "01-sign-in").await;
    fill(&c, "key", writer).await;
    click(&c, "login-submit").await;
    let refused = wait_text(&c, "login-error", |t| !t.is_empty()).await;
    assert!(refused.contains("readonly"), "{refused}");
    sign_in(&c, &url, readonly).await;

    // Every control has a name a screen reader can say (a label, aria-label or its text).
    let unnamed = in_page(
        &c,
        "return [...document.querySelectorAll('input, select, button, a, textarea')]
           .filter((e) => !((e.id && document.querySelector(`label[for=\"${e.id}\"]`))
             || e.getAttribute('aria-label') || e.textContent.trim()))
           .map((e) => e.outerHTML);",
    )
    .await;
    assert_eq!(unnamed, json!([]), "controls without a label");

    // The session cookie: HttpOnly (invisible to scripts), SameSite=Strict, not Secure on
    // plain HTTP (the TLS case is checked below).
    let cookie = c.get_named_cookie("evident_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert_eq!(cookie.secure(), Some(false));
    let session_id = cookie.value().to_owned();
    assert_eq!(in_page(&c, "return document.cookie;").await, json!(""));

    // Filtering on the server: the counts are the API's exact counts for the whole log.
    fill(&c, "f-action", "app.*").await;
    click(&c, "apply").await;
    let coverage = wait_text(&c, "coverage", |t| t.starts_with("130 events")).await;
    assert_eq!(coverage, "130 events matched in this range");
    fill(&c, "f-actor", "bob").await;
    c.find(Locator::Id("f-severity"))
        .await
        .unwrap()
        .select_by_value("warning")
        .await
        .unwrap();
    click(&c, "apply").await;
    let bob_warning: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["actor"]["id"] == "bob"
                && ["warning", "error"].contains(&e["severity"].as_str().unwrap())
        })
        .collect();
    let expected = format!("{} events matched in this range", bob_warning.len());
    wait_text(&c, "coverage", |t| t == expected).await;
    let current = c.current_url().await.unwrap();
    let query: Vec<(String, String)> = current
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    for pair in [
        ("actor", "bob"),
        ("severity", "warning"),
        ("action", "app.*"),
    ] {
        assert!(
            query.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "{current}"
        );
    }
    // The URL is the view: a fresh load of it shows the same filter and count.
    c.goto(current.as_str()).await.unwrap();
    wait_text(&c, "coverage", |t| t == expected).await;
    let legend = wait_text(&c, "chart-legend", |t| t.contains("warning")).await;
    assert!(
        legend.contains("error") && !legend.contains("info"),
        "{legend}"
    );
    screenshot(&c, "02-explorer-filtered").await;

    // Export CSV of the current filter: the downloaded file holds exactly bob's warnings.
    click(&c, "export-csv").await;
    let csv_path = downloads.path().join("evident-export.csv");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !csv_path.exists() {
        assert!(Instant::now() < deadline, "the CSV download never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), bob_warning.len());
    for r in &rows {
        assert_eq!(&r[col("actor")], "bob");
        assert!(["warning", "error"].contains(&&r[col("severity")]), "{r:?}");
    }

    // Paging over the whole filter, 25 a page: every app event once, newest first.
    c.goto(&format!("{url}?action=app.*&limit=25"))
        .await
        .unwrap();
    wait_text(&c, "coverage", |t| t.starts_with("130 events")).await;
    let mut seen = Vec::new();
    loop {
        wait_text(&c, "page-info", |t| {
            t.starts_with(&format!("Page {}:", seen.len() / 25 + 1))
        })
        .await;
        seen.extend(table_seqs(&c).await);
        let next = c.find(Locator::Id("next-page")).await.unwrap();
        if next.attr("disabled").await.unwrap().is_some() {
            break;
        }
        next.click().await.unwrap();
    }
    let mut all: Vec<u64> = receipts.iter().map(|(s, _)| *s).collect();
    all.reverse();
    assert_eq!(seen, all, "paging must show every match once, in order");

    // The browser's canonical encoder agrees with the server's on every one of the events
    // (their hashes recomputed in the page, chained from entry 0).
    let mismatches = in_page(
        &c,
        "const all = await (await fetch('/dashboard/export.json?action=app.*')).json();
         let prev = '0'.repeat(64); const bad = [];
         for (const e of all) {
           const bytes = EvidentVerify.canonicalEntry(e);
           const joined = new Uint8Array(32 + bytes.length);
           joined.set(EvidentVerify.unhex(prev)); joined.set(bytes, 32);
           const h = EvidentVerify.hex(await EvidentVerify.sha256(joined));
           if (h !== e.hash) bad.push(e.seq);
           prev = e.hash;
         }
         return [all.length, bad];",
    )
    .await;
    assert_eq!(
        mismatches,
        json!([130, []]),
        "entries the browser hashes differently"
    );

    // An event's detail: all fields, and its proof verified in this browser.
    let target = receipts[7].0;
    c.goto(&format!("{url}?action=app.*&limit=25"))
        .await
        .unwrap();
    wait_text(&c, "coverage", |t| t.starts_with("130")).await;
    c.goto(&format!("{url}?action=app.*&seq={target}"))
        .await
        .unwrap();
    let verified = wait_text(&c, "proof-status", |t| {
        t.starts_with("Verified") || t.starts_with("FAILED")
    })
    .await;
    assert!(
        verified.starts_with(&format!("Verified in this browser: entry {target}")),
        "{verified}"
    );
    let steps = wait_text(&c, "proof-steps", |t| !t.is_empty()).await;
    for step in [
        "entry hash: recomputed",
        "inclusion: leaf",
        "node signature (Ed25519): valid",
        "witness policy: none on this node",
    ] {
        assert!(steps.contains(step), "{steps}");
    }
    // No [witness] table and no peers: nothing cosigned it, and nothing is required.
    let cosignatures = wait_text(&c, "proof-cosignatures", |t| !t.is_empty()).await;
    assert_eq!(cosignatures, "No witness cosignatures on this checkpoint");
    let fields = c
        .find(Locator::Id("detail-fields"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "Occurred at (claimed by the sender)",
        "not given",
        "Appended by key",
        "evk_",
        "2001:db8:0:1:2:3:4:7",
        "Mozilla/5.0 (e2e 7)",
    ] {
        assert!(fields.contains(want), "{want} in {fields}");
    }
    screenshot(&c, "03-event-proof-verified").await;

    // The session cookie without its CSRF token may not change state (here: sign out).
    let (status, body) = blocking_request(
        "POST",
        format!("{base}/dashboard/logout"),
        session_id.clone(),
    )
    .await;
    assert_eq!(status, 403);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "csrf", "{body}");
    let from_page = in_page(
        &c,
        "const r = await fetch('/dashboard/logout', {method: 'POST'}); return r.status;",
    )
    .await;
    assert_eq!(from_page, json!(403));

    // Sign out: the session is gone on the server too.
    click(&c, "logout").await;
    wait_visible(&c, "login").await;
    let (status, _) = blocking_request(
        "GET",
        format!("{base}/api/v1/audit-log"),
        session_id.clone(),
    )
    .await;
    assert_eq!(status, 401);

    // A tenant-scoped session sees its tenant only, in counts, rows and details.
    sign_in(&c, &url, acme).await;
    c.goto(&format!("{url}?action=app.*&limit=500"))
        .await
        .unwrap();
    let acme_count = events.iter().filter(|e| e["tenant"] == "acme").count();
    wait_text(&c, "coverage", |t| {
        t == format!("{acme_count} events matched in this range")
    })
    .await;
    let rows = table_seqs(&c).await;
    let acme_seqs: Vec<u64> = receipts
        .iter()
        .zip(events.iter())
        .filter(|(_, e)| e["tenant"] == "acme")
        .map(|((s, _), _)| *s)
        .rev()
        .collect();
    assert_eq!(rows, acme_seqs);
    let other = receipts[0].0; // tenant default
    let status = in_page(
        &c,
        "const r = await fetch('/api/v1/audit-log?tenant=default'); return r.status;",
    )
    .await;
    assert_eq!(status, json!(403));
    c.goto(&format!("{url}?seq={other}")).await.unwrap();
    let denied = wait_text(&c, "proof-status", |t| t.starts_with("Cannot load")).await;
    assert!(
        denied.contains("not one of that tenant's events"),
        "{denied}"
    );
    assert!(
        !denied.contains("mallory") && !denied.contains("alice"),
        "{denied}"
    );
    screenshot(&c, "06-tenant-scoped").await;
    click(&c, "logout").await;
    wait_visible(&c, "login").await;

    // Edit the store behind the server's back: the same proof now fails, naming why.
    {
        // While the server runs (it may be writing a self-audit event: wait for its lock).
        let conn = rusqlite::Connection::open(dir.join("evident.db")).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        common::drop_triggers(&conn);
        let n = conn
            .execute(
                "UPDATE events SET actor_id = 'mallory' WHERE seq = ?1",
                [target as i64],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    sign_in(&c, &url, readonly).await;
    c.goto(&format!("{url}?action=app.*&actor=mallory"))
        .await
        .unwrap();
    wait_text(&c, "coverage", |t| t == "1 event matched in this range").await;
    // By keyboard: Enter on the row's button opens the detail (Escape closes it, below).
    let enter = char::from(fantoccini::key::Key::Enter).to_string();
    c.find(Locator::Css("#events tbody button.seq"))
        .await
        .unwrap()
        .send_keys(&enter)
        .await
        .unwrap();
    let failed = wait_text(&c, "proof-status", |t| {
        t.starts_with("Verified") || t.starts_with("FAILED")
    })
    .await;
    assert!(failed.starts_with("FAILED: entry hash:"), "{failed}");
    assert!(failed.contains("changed after it was written"), "{failed}");
    screenshot(&c, "04-event-proof-failed").await;
    let escape = char::from(fantoccini::key::Key::Escape).to_string();
    c.active_element()
        .await
        .unwrap()
        .send_keys(&escape)
        .await
        .unwrap();
    let focused = c.active_element().await.unwrap().text().await.unwrap();
    assert_eq!(
        focused,
        target.to_string(),
        "focus returns to the row that opened the detail"
    );
    assert!(
        !c.find(Locator::Id("detail"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );

    // The integrity panel: the checkpoint, and verify-now finds the edit.
    click(&c, "nav-integrity").await;
    let cp = wait_text(&c, "checkpoint-fields", |t| t.contains("Root")).await;
    assert!(cp.contains("Size"), "{cp}");
    assert!(cp.contains("none ([witness] policy_k = 0)"), "{cp}");
    assert!(cp.contains("no policy to meet"), "{cp}");
    click(&c, "verify-now").await;
    let result = wait_text(&c, "verify-result", |t| {
        t.starts_with("Verified:") || t.starts_with("FAILED")
    })
    .await;
    assert!(result.starts_with("FAILED"), "{result}");
    assert!(result.contains(&target.to_string()), "{result}");

    // The failed verification turned the node read-only: the banner says so, in red.
    let banner = wait_text(&c, "readonly-banner", |t| t.starts_with("READ-ONLY")).await;
    assert!(banner.contains("refuses writes"), "{banner}");
    screenshot(&c, "05-integrity").await;

    // The review views answer (this node has no cluster: it says so).
    click(&c, "nav-reviews").await;
    let report = wait_text(&c, "four-eyes", |t| t.starts_with('{')).await;
    assert!(report.contains("\"name\": \"config-change\""), "{report}");
    let cluster = wait_text(&c, "cluster", |t| !t.is_empty()).await;
    assert!(cluster.starts_with("Not a cluster node"), "{cluster}");
    screenshot(&c, "07-reviews").await;
    c.close().await.unwrap();
}

/// A cosigner verifier key as the page receives it, and one cosignature line's bytes.
fn witness(name: &str, seed: u8) -> evident_core::cosignature::CosignatureSigner {
    evident_core::cosignature::CosignatureSigner::from_seed(name, [seed; 32]).unwrap()
}

fn flip_byte(line: &str, at: usize) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (head, sig) = line.trim_end().rsplit_once(' ').unwrap();
    let mut bytes = b64.decode(sig).unwrap();
    bytes[at] ^= 1;
    format!("{head} {}\n", b64.encode(bytes))
}

#[test]
fn the_witness_policy_in_a_real_browser() {
    let w1 = witness("witness.example/w1", 9);
    let node = Node::embedded();
    let readonly = create_key(&node.dir, "readonly", &[]);
    let config = node.file("evident.toml");
    // A witness policy of one listed witness and no cluster: no peer ever cosigns, so no
    // checkpoint of this node meets it.
    std::fs::write(
        &config,
        format!(
            "[witness]\npolicy_k = 1\nkeys = [\"{}\"]\n",
            w1.verifier().to_vkey_string()
        ),
    )
    .unwrap();
    let server = Server::start_with(
        &node.dir,
        &[],
        &["--config", config.to_str().unwrap()],
        None,
    );
    let api = server.api(&node.owner_key);
    let receipts = api
        .append(&Value::Array((0..5).map(app_event).collect()))
        .unwrap();
    api.wait_checkpoint(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(browse_witnessed(&server.url, &readonly, &w1, receipts[2].0));
    runtime.block_on(browse_cosigned(
        &server.url,
        &node,
        &readonly,
        &w1,
        receipts[2].0,
    ));
}

/// Stores, as the witness submitter would have collected them, the lines `lines_for` makes
/// for the node's latest checkpoint; returns that checkpoint's size.
async fn store_cosignatures(
    base: &str,
    node: &Node,
    lines_for: impl Fn(&str) -> Vec<(String, String)> + Send + 'static,
) -> u64 {
    let (base, owner, db) = (
        base.to_owned(),
        node.owner_key.clone(),
        node.dir.join("evident.db"),
    );
    tokio::task::spawn_blocking(move || {
        let note = common::http_client()
            .get(format!("{base}/api/v1/checkpoint"))
            .bearer_auth(owner)
            .send()
            .unwrap()
            .text()
            .unwrap();
        let size: u64 = note.lines().nth(1).unwrap().parse().unwrap();
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        for (witness, line) in lines_for(&note) {
            conn.execute(
                "INSERT OR REPLACE INTO cosignatures (size, witness, line, received_at) \
                 VALUES (?1, ?2, ?3, 0)",
                rusqlite::params![size as i64, witness, line],
            )
            .unwrap();
        }
        size
    })
    .await
    .unwrap()
}

/// The proof panel of event `target` once its checkpoint is the one of `size` (None: the
/// node's checkpoint moved on before the page read it): (status, steps, cosignatures).
async fn proof_at(c: &Client, url: &str, target: u64, size: u64) -> Option<[String; 3]> {
    c.goto(&format!("{url}?seq={target}")).await.unwrap();
    let status = wait_text(c, "proof-status", |t| {
        t.starts_with("Verified") || t.starts_with("FAILED")
    })
    .await;
    let steps = wait_text(c, "proof-steps", |t| !t.is_empty()).await;
    let cosignatures = wait_text(c, "proof-cosignatures", |t| !t.is_empty()).await;
    steps
        .contains(&format!(
            "checkpoint size: proof for {size}, checkpoint of {size}"
        ))
        .then_some([status, steps, cosignatures])
}

/// (b, continued) Cosignatures stored for the node's checkpoint: a valid one by the listed
/// witness meets the policy (an unlisted witness's line beside it counts for nothing); a
/// forged one under the listed witness's name and key id fails the proof.
async fn browse_cosigned(
    base: &str,
    node: &Node,
    readonly: &str,
    w1: &evident_core::cosignature::CosignatureSigner,
    target: u64,
) {
    let url = format!("{base}/");
    let driver = start_driver();
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(&driver, downloads.path()).await;
    sign_in(&c, &url, readonly).await;
    let stranger = witness("stranger.example/w9", 11);
    let mut shown = None;
    // The checkpoint moves on when the node appends (its own sign-in events): retry then.
    for _ in 0..10 {
        let (w, s) = (w1.clone(), stranger.clone());
        let size = store_cosignatures(base, node, move |note| {
            vec![
                (
                    w.name().to_owned(),
                    w.cosign_note(note, 1_700_000_100).unwrap(),
                ),
                (
                    s.name().to_owned(),
                    s.cosign_note(note, 1_700_000_200).unwrap(),
                ),
            ]
        })
        .await;
        if let Some(panel) = proof_at(&c, &url, target, size).await {
            click(&c, "nav-integrity").await;
            let cp = wait_text(&c, "checkpoint-fields", |t| t.contains("Witness policy")).await;
            if cp.contains(&format!("Size\n{size}\n")) {
                shown = Some((panel, cp));
                break;
            }
        }
    }
    let ([status, steps, cosignatures], cp) = shown.expect("the checkpoint never held still");
    assert!(
        status.starts_with("Verified in this browser"),
        "{status}\n{steps}"
    );
    assert!(
        steps.contains(
            "witness policy: 1 of the 1 required cosignatures verified (witness.example/w1)"
        ),
        "{steps}"
    );
    let key = w1.verifier().to_vkey_string();
    let key_ref = key.rsplit_once('+').unwrap().0;
    // The node appends collected lines in the witnesses' name order.
    assert_eq!(
        cosignatures,
        format!(
            "– Cosignature by unlisted witness stranger.example/w9 (claims 2023-11-14T22:16:40.000Z): witness not listed on this node ([witness] keys): not verified, not counted\n\
             ✓ Cosigned by witness witness.example/w1 at 2023-11-14T22:15:00.000Z: verified against the pinned witness key {key_ref}"
        )
    );
    assert!(cp.contains("yes: 1 of 1 (witness.example/w1)"), "{cp}");
    screenshot(&c, "09-witness-policy-met").await;

    let mut failed = None;
    for _ in 0..10 {
        let w = w1.clone();
        let size = store_cosignatures(base, node, move |note| {
            // Signed at 1_700_000_300, claiming 1_700_000_301.
            let line = flip_byte(&w.cosign_note(note, 1_700_000_300).unwrap(), 11);
            vec![(w.name().to_owned(), line)]
        })
        .await;
        if let Some(panel) = proof_at(&c, &url, target, size).await {
            failed = Some(panel);
            break;
        }
    }
    // (The unlisted witness's line stays stored beside it if the checkpoint did not move.)
    let [status, _, cosignatures] = failed.expect("the checkpoint never held still");
    assert!(
        status.starts_with(
            "FAILED: witness cosignature: the cosignature by listed witness witness.example/w1 does not verify"
        ),
        "{status}"
    );
    assert!(
        cosignatures.contains("✗ Cosignature by listed witness witness.example/w1 (claims 2023-11-14T22:18:21.000Z): does not verify"),
        "{cosignatures}"
    );
    c.close().await.unwrap();
}

async fn browse_witnessed(
    base: &str,
    readonly: &str,
    w1: &evident_core::cosignature::CosignatureSigner,
    target: u64,
) {
    use evident_core::{Checkpoint, Hash, NoteSigner};
    let url = format!("{base}/");
    let driver = start_driver();
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(&driver, downloads.path()).await;
    sign_in(&c, &url, readonly).await;

    // (a) The page's cosignature/v1 check against lines made here by the Rust cosigner.
    let log = NoteSigner::from_seed("log.example", [7; 32]).unwrap();
    let note = Checkpoint {
        origin: "log.example".into(),
        size: 3,
        root: Hash([1; 32]),
        extensions: vec![],
    }
    .sign(&log)
    .unwrap();
    let other_body = note.replacen("\n3\n", "\n4\n", 1);
    assert_ne!(other_body, note);
    let line = w1.cosign_note(&note, 1_700_000_000).unwrap();
    let later = w1.cosign_note(&note, 1_700_000_005).unwrap();
    // Byte 11 is the timestamp's last byte: the line now claims 1_700_000_001.
    let retimed = flip_byte(&line, 11);
    let vkey = w1.verifier().to_vkey_string();
    let same_name = witness("witness.example/w1", 10)
        .verifier()
        .to_vkey_string();
    let stranger = witness("stranger.example/w9", 11);
    let cosigned = format!(
        "{note}{line}{later}{}",
        stranger.cosign_note(&note, 1_700_000_002).unwrap()
    );
    let forged = format!("{note}{retimed}");
    let args = json!({
        "note": note, "other": other_body, "line": line, "retimed": retimed, "vkey": vkey,
        "same_name": same_name, "stranger": stranger.verifier().to_vkey_string(),
        "cosigned": cosigned, "forged": forged,
    });
    let result = in_page(
        &c,
        &format!(
            "const a = {args};
             const V = EvidentVerify;
             const w = async (note, k) => {{ const r = await V.checkWitnesses(note, [a.vkey], k);
               return {{ counted: r.counted, met: r.met, ok: r.ok, reason: r.reason,
                         lines: r.lines.map((l) => l.status + ' ' + l.name + ' ' + l.time) }}; }};
             return {{
               good: await V.verifyCosignature(a.note, a.line, a.vkey),
               body_only: await V.verifyCosignature(a.note.slice(0, a.note.indexOf('\\n\\n') + 1), a.line, a.vkey),
               other_body: await V.verifyCosignature(a.other, a.line, a.vkey),
               retimed: await V.verifyCosignature(a.note, a.retimed, a.vkey),
               same_name: await V.verifyCosignature(a.note, a.line, a.same_name),
               stranger: await V.verifyCosignature(a.note, a.line, a.stranger),
               // The listed name and key id with another public key: Ed25519 refuses it.
               wrong_key: await V.verifyCosignature(a.note, a.line,
                 {{ ...(await V.parseCosignerKey(a.vkey)), publicKey: (await V.parseCosignerKey(a.same_name)).publicKey }}),
               one: await w(a.cosigned, 1), two: await w(a.cosigned, 2),
               forged: await w(a.forged, 1), bare: await w(a.note, 1),
             }};"
        ),
    )
    .await;
    assert_eq!(
        result["good"],
        json!({"ok": true, "timestamp": 1_700_000_000u64, "time": "2023-11-14T22:13:20.000Z"}),
        "{result}"
    );
    assert_eq!(result["body_only"]["ok"], true, "{result}");
    for (case, why) in [
        ("other_body", "does not verify"),
        ("retimed", "at time 1700000001"),
        ("same_name", "key id"),
        ("wrong_key", "the Ed25519 signature does not verify"),
        ("stranger", "the line is by witness.example/w1"),
    ] {
        assert_eq!(result[case]["ok"], false, "{case}: {result}");
        let reason = result[case]["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{case}: {reason}");
    }
    // The policy: w1 counted once for its two lines, the unlisted witness shown, not counted.
    assert_eq!(
        result["one"],
        json!({"counted": ["witness.example/w1"], "met": true, "ok": true, "reason": null, "lines": [
            "verified witness.example/w1 2023-11-14T22:13:20.000Z",
            "verified witness.example/w1 2023-11-14T22:13:25.000Z",
            "unlisted stranger.example/w9 2023-11-14T22:13:22.000Z",
        ]}),
        "{result}"
    );
    assert_eq!(result["two"]["met"], false, "{result}");
    assert_eq!(
        result["two"]["reason"],
        "witness policy: 2 valid cosignatures required, 1 found"
    );
    assert_eq!(result["forged"]["ok"], false, "{result}");
    assert!(
        result["forged"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("the cosignature by listed witness witness.example/w1 does not verify"),
        "{result}"
    );
    assert_eq!(
        result["bare"]["reason"],
        "witness policy: 1 valid cosignature required, 0 found"
    );

    // (b) The node's own checkpoints carry no cosignature: every proof fails on the policy,
    // after everything else verified.
    c.goto(&format!("{url}?seq={target}")).await.unwrap();
    let status = wait_text(&c, "proof-status", |t| {
        t.starts_with("Verified") || t.starts_with("FAILED")
    })
    .await;
    assert_eq!(
        status,
        "FAILED: witness policy: 1 valid cosignature required, 0 found"
    );
    let steps = wait_text(&c, "proof-steps", |t| !t.is_empty()).await;
    for step in [
        "entry hash: recomputed",
        "inclusion: leaf",
        "node signature (Ed25519): valid",
        "witness policy: 1 valid cosignature required, 0 found",
    ] {
        assert!(steps.contains(step), "{steps}");
    }
    screenshot(&c, "08-witness-policy-failed").await;
    click(&c, "nav-integrity").await;
    let cp = wait_text(&c, "checkpoint-fields", |t| t.contains("Witness policy")).await;
    assert!(
        cp.contains(
            "1 valid cosignature by distinct witnesses of the 1 listed (witness.example/w1)"
        ),
        "{cp}"
    );
    assert!(
        cp.contains("NO: witness policy: 1 valid cosignature required, 0 found"),
        "{cp}"
    );
    c.close().await.unwrap();
}

#[test]
fn the_session_cookie_is_secure_under_tls() {
    let node = Node::embedded();
    let readonly = create_key(&node.dir, "readonly", &[]);
    let server = Server::start_tls_self_signed(&node);
    let answer = server
        .client()
        .post(format!("{}/dashboard/login", server.url))
        .header("content-type", "application/json")
        .body(json!({ "key": readonly }).to_string())
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200);
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let csp = server
        .client()
        .get(format!("{}/", server.url))
        .send()
        .unwrap()
        .headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
}
