//! End-to-end harness: runs the real `evident` binary. A [`Node`] is a temporary data
//! directory with an owner key; [`Server`] is `evident serve` on a free loopback port,
//! killed when dropped. [`Api`] is a plain HTTP client for what the tests send by hand.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_evident")
}

/// `evident` with a clean environment: no `EVIDENT_*` variable of the caller leaks in.
pub fn evident() -> Command {
    let mut cmd = Command::new(bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("EVIDENT_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.stdin(Stdio::null());
    cmd
}

/// What a finished command printed.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts exit code `code` and returns self.
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `evident args…` to completion.
pub fn run(args: &[&str]) -> Run {
    Run::from(evident().args(args).output().expect("run evident"))
}

/// Runs `evident args…` with `stdin` as its input.
pub fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Run {
    use std::io::Write;
    let mut child = evident()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn evident");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    Run::from(child.wait_with_output().unwrap())
}

/// A temporary data directory with an owner key created by `evident keys create`.
pub struct Node {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub owner_key: String,
}

impl Node {
    /// A node on the backend under test (see [`postgres_under_test`]).
    pub fn new() -> Node {
        let storage = storage_for_new_node();
        let envs: Vec<(&str, &str)> = storage
            .iter()
            .map(|url| ("EVIDENT_STORAGE", url.as_str()))
            .collect();
        Node::create(&envs)
    }

    /// A node on the embedded store, whatever the backend under test (for tests that edit
    /// the SQLite file itself).
    pub fn embedded() -> Node {
        Node::create(&[])
    }

    /// A node whose log is in a fresh database of this test binary's PostgreSQL cluster.
    pub fn postgres() -> Node {
        let url = fresh_postgres_database();
        Node::create(&[("EVIDENT_STORAGE", url.as_str())])
    }

    /// A node on the backend under test, created with extra environment variables (e.g.
    /// `EVIDENT_NODE_ID`).
    pub fn with_env(envs: &[(&str, &str)]) -> Node {
        let storage = storage_for_new_node();
        let mut all: Vec<(&str, &str)> = envs.to_vec();
        if let Some(url) = &storage {
            all.push(("EVIDENT_STORAGE", url.as_str()));
        }
        Node::create(&all)
    }

    fn create(envs: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let owner_key = create_key_with_env(&dir, "owner", &[], envs);
        Node {
            tmp,
            dir,
            owner_key,
        }
    }

    pub fn dir_str(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// A path for a scratch file in the temporary directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `evident verify --data-dir` on this node.
    pub fn verify(&self) -> Run {
        run(&["verify", "--data-dir", self.dir_str()])
    }

    /// The node's `storage` URL, as `node.toml` records it (a node on PostgreSQL).
    pub fn storage_url(&self) -> String {
        let config = std::fs::read_to_string(self.dir.join("node.toml")).unwrap();
        config
            .lines()
            .find_map(|l| l.strip_prefix("storage = \""))
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    }

    /// The name of the PostgreSQL database the node's log is in (the URL's last segment).
    pub fn postgres_database(&self) -> String {
        self.storage_url().rsplit('/').next().unwrap().to_owned()
    }

    /// The node's checkpoint verifier key, as `evident public-key --data-dir` prints it.
    pub fn public_key(&self) -> String {
        run(&["public-key", "--data-dir", self.dir_str()])
            .ok()
            .stdout
            .trim()
            .to_owned()
    }
}

/// Whether the suite runs against PostgreSQL: `EVIDENT_TEST_BACKEND=postgres` (scripts/test.sh
/// runs the end-to-end tests once per backend); otherwise the embedded store.
pub fn postgres_under_test() -> bool {
    match std::env::var("EVIDENT_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("embedded") | Ok("") | Err(_) => false,
        Ok(other) => panic!("EVIDENT_TEST_BACKEND={other:?}: expected sqlite or postgres"),
    }
}

/// A fresh database on this test binary's throwaway PostgreSQL cluster: its URL.
pub fn fresh_postgres_database() -> String {
    evident_testpg::fresh_database_url().unwrap_or_else(|e| panic!("{e}"))
}

/// The `storage` setting of a new node on the backend under test (`None`: embedded).
pub fn storage_for_new_node() -> Option<String> {
    postgres_under_test().then(fresh_postgres_database)
}

/// Creates a key with `evident keys create`; returns the key, the last line of stdout.
pub fn create_key(dir: &Path, role: &str, extra: &[&str]) -> String {
    create_key_with_env(dir, role, extra, &[])
}

/// [`create_key`] with environment variables (`EVIDENT_STORAGE` for a new data directory).
pub fn create_key_with_env(
    dir: &Path,
    role: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> String {
    let mut args = vec![
        "keys",
        "create",
        "--init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--role",
        role,
    ];
    args.extend_from_slice(extra);
    let out = Run::from(
        evident()
            .args(&args)
            .envs(envs.iter().copied())
            .output()
            .expect("run evident"),
    )
    .ok();
    let key = out.stdout.lines().last().unwrap_or("").to_owned();
    assert!(
        key.starts_with("evk_"),
        "no key on the last line:\n{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.matches(&key).count(),
        1,
        "the key must be printed once"
    );
    key
}

/// A running `evident serve`.
pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    envs: Vec<(String, String)>,
    args: Vec<String>,
    /// The certificate to trust, for a TLS server.
    pub ca_cert: Option<PathBuf>,
    /// The client certificate and key (one PEM file) to present, for a cluster node (mTLS).
    pub client_identity: Option<PathBuf>,
}

/// How long a server may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Server {
    /// Starts a server on `node`'s data directory.
    pub fn start(node: &Node) -> Server {
        Server::start_with_env(&node.dir, &[])
    }

    /// Starts a server on `dir` with extra environment variables.
    pub fn start_with_env(dir: &Path, envs: &[(&str, &str)]) -> Server {
        Server::start_with(dir, envs, &[], None)
    }

    /// Starts a server on `dir` with extra environment variables and `serve` arguments,
    /// trusting `ca_cert` when it serves TLS.
    pub fn start_with(
        dir: &Path,
        envs: &[(&str, &str)],
        args: &[&str],
        ca_cert: Option<PathBuf>,
    ) -> Server {
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut server = Server {
            child: None,
            url: String::new(),
            dir: dir.to_owned(),
            log: PathBuf::new(),
            envs,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ca_cert,
            client_identity: None,
        };
        server.spawn();
        server
    }

    /// Starts a cluster node: `evident serve --config CONFIG --listen LISTEN` on `dir` (the
    /// config's `[cluster]` turns mTLS on; peers must know the address up front); clients
    /// trust `ca_cert` and present `identity` (a PEM file with a certificate of the cluster
    /// CA and its key).
    pub fn start_cluster(
        dir: &Path,
        config: &Path,
        listen: &str,
        ca_cert: &Path,
        identity: &Path,
    ) -> Server {
        let mut server = Server {
            child: None,
            url: String::new(),
            dir: dir.to_owned(),
            log: PathBuf::new(),
            envs: Vec::new(),
            args: vec![
                "--config".to_owned(),
                config.to_str().unwrap().to_owned(),
                "--listen".to_owned(),
                listen.to_owned(),
            ],
            ca_cert: Some(ca_cert.to_owned()),
            client_identity: Some(identity.to_owned()),
        };
        server.spawn();
        server
    }

    /// Starts `evident serve --tls-self-signed` on `node`'s directory; clients trust the
    /// generated certificate.
    pub fn start_tls_self_signed(node: &Node) -> Server {
        let cert = node.dir.join("tls").join("cert.pem");
        Server::start_with(&node.dir, &[], &["--tls-self-signed"], Some(cert))
    }

    /// A client that trusts this server's certificate (when it has one).
    pub fn client(&self) -> reqwest::blocking::Client {
        match (&self.ca_cert, &self.client_identity) {
            (Some(ca), Some(identity)) => mtls_client(ca, identity),
            (Some(path), None) => tls_client(path),
            _ => http_client(),
        }
    }

    fn spawn(&mut self) {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.log = self
            .dir
            .parent()
            .unwrap()
            .join(format!("server-{}-{n}.log", std::process::id()));
        let log = std::fs::File::create(&self.log).unwrap();
        let mut cmd = evident();
        cmd.args(["serve", "--data-dir", self.dir.to_str().unwrap()]);
        if !self.args.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd
            // Checkpoints often, so that tests need not wait long for one.
            .env("EVIDENT_CHECKPOINT_EVERY_MS", "100")
            .env("RUST_LOG", "info")
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn evident serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads every line so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("evident listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        self.child = Some(child);
        let url = match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => panic!(
                "the server did not start; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        };
        self.url = url;
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let http = self.client();
        loop {
            let answer = http.get(format!("{}/api/v1/healthz", self.url)).send();
            if answer.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server never became healthy; its log:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: the process dies at once, mid-write if it was writing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the graceful exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("the server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the server to exit on its own (a test-triggered crash);
    /// its exit code (`None`: killed by a signal). Panics if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("the server did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same directory (after `kill` or `stop`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// An HTTP client for this server with `key`.
    pub fn api(&self, key: &str) -> Api {
        Api {
            http: self.client(),
            url: self.url.clone(),
            key: Some(key.to_owned()),
        }
    }

    /// `evident ARGS --url URL --key KEY`.
    pub fn cli(&self, key: &str, args: &[&str]) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&["--url", &self.url, "--key", key]);
        if let Some(ca) = &self.ca_cert {
            all.extend_from_slice(&["--ca-cert", ca.to_str().unwrap()]);
        }
        run(&all)
    }

    /// `evident export --format FORMAT --out FILE ARGS`.
    pub fn export(&self, key: &str, format: &str, file: &Path, args: &[&str]) -> Run {
        let mut all = vec![
            "export",
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        self.cli(key, &all)
    }

    /// `evident checkpoint --out OUT --public-key K`: the checkpoint a client keeps elsewhere.
    pub fn keep_checkpoint(&self, key: &str, out: &Path, public_key: &str) {
        self.cli(
            key,
            &[
                "checkpoint",
                "--out",
                out.to_str().unwrap(),
                "--public-key",
                public_key,
            ],
        )
        .ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking HTTP client (the same library the CLI uses).
pub fn http_client() -> reqwest::blocking::Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A blocking HTTPS client that trusts only the PEM certificate at `ca`.
pub fn tls_client(ca: &Path) -> reqwest::blocking::Client {
    let _ = http_client();
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_certs_only(certs)
        .build()
        .unwrap()
}

/// [`tls_client`] that also presents the client certificate and key in the PEM file
/// `identity` (mTLS with a cluster node).
pub fn mtls_client(ca: &Path, identity: &Path) -> reqwest::blocking::Client {
    let _ = http_client();
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
    let identity_pem =
        std::fs::read(identity).unwrap_or_else(|e| panic!("{}: {e}", identity.display()));
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .tls_certs_only(certs)
        .identity(reqwest::Identity::from_pem(&identity_pem).unwrap())
        .build()
        .unwrap()
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an error answer with `status` and error `code` (and `field` when given).
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, field: Option<&str>) -> Value {
        assert_eq!(self.status, status, "wrong status: {}", self.text());
        let body = self.json();
        let error = &body["error"];
        assert_eq!(error["code"], code, "wrong code: {body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {body}"
        );
        if let Some(field) = field {
            assert_eq!(error["field"], field, "wrong field: {body}");
        }
        body
    }
}

/// A plain HTTP client for one server and key.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::blocking::Client,
    pub url: String,
    pub key: Option<String>,
}

impl Api {
    fn authorized(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Sends a POST to /api/v1/events with `content_type` and raw `body`.
    pub fn post_raw(&self, content_type: &str, body: Vec<u8>) -> Result<Answer, reqwest::Error> {
        let req = self
            .http
            .post(format!("{}/api/v1/events", self.url))
            .header("content-type", content_type)
            .body(body);
        let resp = self.authorized(req).send()?;
        let status = resp.status().as_u16();
        Ok(Answer {
            status,
            body: resp.bytes()?.to_vec(),
        })
    }

    /// Appends `events` (one object or an array); returns (seq, hash) receipts or the answer.
    pub fn append(&self, events: &Value) -> Result<Vec<(u64, String)>, Answer> {
        let answer = self
            .post_raw("application/json", serde_json::to_vec(events).unwrap())
            .map_err(|e| Answer {
                status: 0,
                body: e.to_string().into_bytes(),
            })?;
        if answer.status != 201 {
            return Err(answer);
        }
        Ok(receipts(&answer.json()))
    }

    /// GET `path` (e.g. `/api/v1/audit-log?x=y`), raw.
    pub fn get(&self, path_and_query: &str) -> Answer {
        let req = self.http.get(format!("{}{path_and_query}", self.url));
        let resp = self.authorized(req).send().expect("GET");
        let status = resp.status().as_u16();
        Answer {
            status,
            body: resp.bytes().expect("body").to_vec(),
        }
    }

    /// Every entry of the log, ascending, following cursors: (seq, hash, event JSON).
    pub fn all_entries(&self) -> Vec<(u64, String, Value)> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/api/v1/audit-log?order=asc&limit=1000".to_owned();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let answer = self.get(&path);
            assert_eq!(answer.status, 200, "{}", answer.text());
            let page = answer.json();
            for e in page["events"].as_array().unwrap() {
                out.push((
                    e["seq"].as_u64().unwrap(),
                    e["hash"].as_str().unwrap().to_owned(),
                    e.clone(),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// How many entries the log holds.
    pub fn size(&self) -> usize {
        self.all_entries().len()
    }

    /// The latest checkpoint's size.
    pub fn checkpoint_size(&self) -> u64 {
        let answer = self.get("/api/v1/checkpoint");
        assert_eq!(answer.status, 200, "{}", answer.text());
        let text = answer.text();
        text.lines().nth(1).unwrap().parse().unwrap()
    }

    /// Waits until the latest signed checkpoint covers at least `size` entries.
    pub fn wait_checkpoint(&self, size: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.checkpoint_size() < size {
            assert!(Instant::now() < deadline, "no checkpoint of size {size}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The (seq, hash) pairs of an append answer.
pub fn receipts(answer: &Value) -> Vec<(u64, String)> {
    answer["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A valid client event by `actor`.
pub fn event(actor: &str, action: &str) -> Value {
    json!({
        "actor": {"id": actor, "kind": "user", "ip": "203.0.113.7", "user_agent": "e2e/1"},
        "action": action,
        "target": {"kind": "node", "id": "nyc-edge-01"},
        "outcome": "success",
        "severity": "notice",
        "context": {"n": 1}
    })
}

/// Asserts that `seqs` (any order) are exactly 0..n-1.
#[track_caller]
pub fn assert_dense(seqs: &mut [u64]) {
    seqs.sort_unstable();
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, i as u64, "sequence numbers not dense at position {i}");
    }
}

/// The database of `dir`, opened by an attacker who dropped its append-only triggers.
pub fn attacker_db(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("evident.db")).unwrap();
    drop_triggers(&conn);
    conn
}

/// Drops every trigger of the SQLite database `conn` is on (the append-only guards).
pub fn drop_triggers(conn: &rusqlite::Connection) {
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for t in triggers {
        conn.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
    }
}

/// The size (second line) of a checkpoint note saved to `file`.
pub fn saved_checkpoint_size(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines().nth(1).unwrap().parse().unwrap()
}

/// Copies the directory `from` to `to`, recursively, directories keeping their permissions
/// (an older copy of a data directory, as an attacker would keep to roll back to).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
            std::fs::set_permissions(&dst, std::fs::metadata(&src).unwrap().permissions()).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `evident verify --export FILE --public-key K`.
pub fn verify_export(file: &Path, public_key: &str) -> Run {
    run(&[
        "verify",
        "--export",
        file.to_str().unwrap(),
        "--public-key",
        public_key,
    ])
}
