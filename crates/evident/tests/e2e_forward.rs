//! Syslog forwarding end to end, against a real rsyslog (Debian package `rsyslog`, started
//! here in the foreground with its own configuration on free loopback ports, writing what it
//! receives to files with the standard RFC 5424 template): UDP, TCP and TLS (mutual, with a
//! CA generated here) deliver every entry with the right fields in order; `evident verify
//! --syslog` accepts the files and reports a deleted line as a gap; an rsyslog killed under
//! load and an Evident server killed mid-forwarding lose nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use evident_server::forward::receiver::parse_message;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// The README, read at compile time: editing it rebuilds this test.
const README: &str = include_str!("../../../README.md");

/// The README's ```` ```rsyslog name=rsyslog-receiver ```` block.
fn readme_rsyslog_conf() -> String {
    let start = README
        .find("```rsyslog name=rsyslog-receiver\n")
        .expect("README.md has no rsyslog-receiver block");
    let body = &README[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test CA and the certificates it signs: rsyslog's (for `localhost`) and Evident's
/// client certificate (mutual TLS).
struct Certificates {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn certificates(dir: &Path) -> Certificates {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Evident syslog test CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_pem = params.self_signed(&ca_key).unwrap().pem();
    let ca = Issuer::new(params, ca_key);
    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key_pem) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_pem, client_key_pem) = leaf("evident-node", ExtendedKeyUsagePurpose::ClientAuth);
    let files = Certificates {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("rsyslog.pem"),
        server_key: dir.join("rsyslog.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    std::fs::write(&files.ca, ca_pem).unwrap();
    std::fs::write(&files.server_cert, server_pem).unwrap();
    std::fs::write(&files.server_key, server_key_pem).unwrap();
    std::fs::write(&files.client_cert, client_pem).unwrap();
    std::fs::write(&files.client_key, client_key_pem).unwrap();
    files
}

/// A running rsyslogd with one input per transport, each writing to its own file.
struct Rsyslog {
    dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
    udp: u16,
    tcp: u16,
    tls: u16,
}

impl Rsyslog {
    fn start(dir: &Path, certs: &Certificates) -> Rsyslog {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "{RSYSLOGD} not found: these tests need a real rsyslog; install it with \
             `apt-get install rsyslog` (scripts/test.sh does)"
        );
        let (udp, tcp, tls) = (free_udp_port(), free_tcp_port(), free_tcp_port());
        let d = dir.display().to_string();
        // The README's configuration, run as documented, on this test's paths and ports.
        let conf = readme_rsyslog_conf()
            .replace("/var/spool/rsyslog", &d)
            .replace("/var/log/evident", &d)
            .replace("/etc/rsyslog.d/evident-ca.pem", certs.ca.to_str().unwrap())
            .replace(
                "/etc/rsyslog.d/receiver-cert.pem",
                certs.server_cert.to_str().unwrap(),
            )
            .replace(
                "/etc/rsyslog.d/receiver-key.pem",
                certs.server_key.to_str().unwrap(),
            )
            .replace(
                "port=\"514\"",
                &format!("address=\"127.0.0.1\" port=\"{udp}\""),
            )
            .replace(
                "port=\"601\"",
                &format!("address=\"127.0.0.1\" port=\"{tcp}\""),
            )
            .replace(
                "port=\"6514\"",
                &format!("address=\"127.0.0.1\" port=\"{tls}\""),
            );
        for (file, what) in [("udp.log", "udp"), ("tcp.log", "tcp"), ("tls.log", "tls")] {
            assert!(
                conf.contains(&format!("{d}/{file}")),
                "the README's rsyslog configuration no longer writes {what} to {file}"
            );
        }
        let path = dir.join("rsyslog.conf");
        std::fs::write(&path, conf).unwrap();
        let mut rsyslog = Rsyslog {
            dir: dir.to_owned(),
            conf: path,
            child: None,
            udp,
            tcp,
            tls,
        };
        rsyslog.spawn();
        rsyslog
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("rsyslogd.out")).unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        // Up when both TCP ports take connections.
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.tcp, self.tls] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd did not listen on {port}: {}",
                    std::fs::read_to_string(self.dir.join("rsyslogd.out")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: whatever it holds in memory is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
    }

    fn file(&self, transport: &str) -> PathBuf {
        self.dir.join(format!("{transport}.log"))
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TOML config with one `[[forward.syslog]]` per (name, transport, port).
fn forward_config(
    dir: &Path,
    certs: &Certificates,
    confirm_after_ms: u64,
    extra: &str,
    destinations: &[(&str, &str, u16)],
) -> PathBuf {
    let mut toml = String::new();
    for (name, transport, port) in destinations {
        toml.push_str(&format!(
            "[[forward.syslog]]\nname = \"{name}\"\ntransport = \"{transport}\"\naddress = \"127.0.0.1:{port}\"\nconfirm_after_ms = {confirm_after_ms}\ncheckpoint_every_ms = 1000\n{extra}"
        ));
        if *transport == "tls" {
            toml.push_str(&format!(
                "ca_file = \"{}\"\nserver_name = \"localhost\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
                certs.ca.display(),
                certs.client_cert.display(),
                certs.client_key.display()
            ));
        }
        toml.push('\n');
    }
    let path = dir.join("forward.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The entries in a receiver's file, by line: (seq, parsed message parts) of entry
/// messages, and the sizes of checkpoint records.
struct Received {
    entries: Vec<(u64, ReceivedLine)>,
    checkpoint_sizes: Vec<u64>,
}

#[derive(Debug, Clone)]
struct ReceivedLine {
    priority: u16,
    timestamp: String,
    hostname: String,
    app_name: String,
    msgid: String,
    sd: BTreeMap<String, String>,
    msg: String,
}

fn read_received(file: &Path) -> Received {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut received = Received {
        entries: Vec::new(),
        checkpoint_sizes: Vec::new(),
    };
    for line in text.lines() {
        let m = parse_message(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let Some(sd) = m.structured_data.first() else {
            continue;
        };
        let params: BTreeMap<String, String> = sd.params.iter().cloned().collect();
        match sd.id.as_str() {
            "evident@32473" => received.entries.push((
                params["seq"].parse().unwrap(),
                ReceivedLine {
                    priority: m.priority,
                    timestamp: m.timestamp.to_owned(),
                    hostname: m.hostname.to_owned(),
                    app_name: m.app_name.to_owned(),
                    msgid: m.msgid.to_owned(),
                    sd: params,
                    msg: m.msg.to_owned(),
                },
            )),
            "evident-checkpoint@32473" => received
                .checkpoint_sizes
                .push(params["size"].parse().unwrap()),
            other => panic!("unexpected SD-ID {other}: {line}"),
        }
    }
    received
}

/// Waits until `file` holds every entry below `size` and a checkpoint record of at least
/// `size`.
fn wait_received(file: &Path, size: u64, server: &Server) -> Received {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let received = read_received(file);
        let mut seqs: Vec<u64> = received.entries.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let complete =
            seqs.len() as u64 >= size && seqs.get(size as usize - 1) == Some(&(size - 1));
        if complete && received.checkpoint_sizes.iter().any(|s| *s >= size) {
            return received;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not receive entries 0..{size} and a checkpoint record covering them: {} distinct entries, checkpoint records {:?}\nserver log:\n{}",
            file.display(),
            seqs.len(),
            received.checkpoint_sizes,
            server.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `evident verify --syslog FILE --public-key KEY`.
fn verify_syslog(file: &Path, public_key: &str) -> Run {
    run(&[
        "verify",
        "--syslog",
        file.to_str().unwrap(),
        "--public-key",
        public_key,
    ])
}

fn forwarders(api: &Api) -> BTreeMap<String, Value> {
    let answer = api.get("/api/v1/forwarders");
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f.clone()))
        .collect()
}

/// Polls the forwarders' status until `done` holds for every one of them.
fn wait_forwarders(api: &Api, done: impl Fn(&Value) -> bool) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = forwarders(api);
        if status.values().all(&done) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "forwarders never got there: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `metric{…name="NAME"…}` in the metrics text.
fn metric(api: &Api, metric: &str, name: &str) -> f64 {
    let text = api.get("/api/v1/metrics").text();
    let wanted = format!("name=\"{name}\"");
    text.lines()
        .find(|l| l.starts_with(metric) && l.contains(&wanted))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} for {name} in:\n{text}"))
}

#[test]
fn udp_tcp_and_tls_deliver_every_entry_in_order_and_verify_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = certificates(tmp.path());
    let rsyslog_dir = tmp.path().join("rsyslog");
    std::fs::create_dir(&rsyslog_dir).unwrap();
    let rsyslog = Rsyslog::start(&rsyslog_dir, &certs);
    let node = Node::new();
    let config = forward_config(
        tmp.path(),
        &certs,
        300,
        "",
        &[
            ("udp", "udp", rsyslog.udp),
            ("tcp", "tcp", rsyslog.tcp),
            ("tls", "tls", rsyslog.tls),
        ],
    );
    // Two more TLS destinations that must refuse rsyslog: one trusts another CA, one expects
    // another name.
    let other_dir = tmp.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = certificates(&other_dir);
    let mut toml = std::fs::read_to_string(&config).unwrap();
    for (name, ca, server_name) in [
        ("wrong-ca", &other.ca, "localhost"),
        ("wrong-name", &certs.ca, "siem.example"),
    ] {
        toml.push_str(&format!(
            "[[forward.syslog]]\nname = \"{name}\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{}\"\nca_file = \"{}\"\nserver_name = \"{server_name}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\n",
            rsyslog.tls,
            ca.display(),
            certs.client_cert.display(),
            certs.client_key.display()
        ));
    }
    std::fs::write(&config, toml).unwrap();
    let server = Server::start_with(
        &node.dir,
        &[],
        &["--config", config.to_str().unwrap()],
        None,
    );
    let key = create_key(&node.dir, "owner", &[]);
    let api = server.api(&key);

    // Events of every severity, with characters that need escaping in JSON and in SD.
    let severities = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    let mut batch = Vec::new();
    for i in 0..120 {
        let mut e = event(
            &format!("al\"ice]\\{i}"),
            if i % 3 == 0 {
                "auth.login"
            } else {
                "keys.created"
            },
        );
        e["severity"] = json!(severities[i % severities.len()]);
        e["tenant"] = json!(if i % 2 == 0 { "acme" } else { "globex" });
        e["context"] = json!({"i": i, "note": "ü ] \" \\"});
        batch.push(e);
    }
    api.append(&Value::Array(batch)).unwrap();
    let entries = api.all_entries();
    let size = entries.len() as u64;
    server.api(&key).wait_checkpoint(size);

    for transport in ["udp", "tcp", "tls"] {
        let received = wait_received(&rsyslog.file(transport), size, &server);
        // In order, each once (no reconnect happened), every field as mapped.
        let seqs: Vec<u64> = received.entries.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (0..size).collect::<Vec<_>>(), "{transport}: order");
        for ((seq, line), (api_seq, hash, event)) in received.entries.iter().zip(&entries) {
            assert_eq!(seq, api_seq);
            let severity =
                evident_core::Severity::from_name(event["severity"].as_str().unwrap()).unwrap();
            assert_eq!(
                line.priority,
                16 * 8 + u16::from(severity.syslog_code()),
                "{transport} {seq}: PRI (local0)"
            );
            assert_eq!(line.hostname, "node-1");
            assert_eq!(line.app_name, "evident");
            let action = event["action"].as_str().unwrap();
            assert_eq!(line.msgid, action);
            assert_eq!(
                evident_core::event::parse_rfc3339(&line.timestamp).unwrap(),
                evident_core::event::parse_rfc3339(event["recorded_at"].as_str().unwrap()).unwrap(),
                "{transport} {seq}: TIMESTAMP is recorded_at"
            );
            assert_eq!(line.sd["seq"], seq.to_string());
            assert_eq!(line.sd["leaf"], seq.to_string());
            assert_eq!(line.sd["node"], "node-1");
            assert_eq!(line.sd["tenant"], event["tenant"].as_str().unwrap());
            assert_eq!(&line.sd["hash"], hash);
            assert_eq!(line.sd["seal"], event["seal"].as_str().unwrap());
            let prev = if *seq == 0 {
                "-".to_owned()
            } else {
                (seq - 1).to_string()
            };
            assert_eq!(line.sd["prev"], prev);
            assert_eq!(line.sd["format"], "json");
            // The payload is the entry's export line: the event as the API shows it.
            let payload: Value = serde_json::from_str(&line.msg).unwrap();
            for field in [
                "seq",
                "id",
                "recorded_at",
                "actor",
                "action",
                "target",
                "context",
                "hash",
                "seal",
            ] {
                assert_eq!(payload[field], event[field], "{transport} {seq}: {field}");
            }
        }
        verify_syslog(&rsyslog.file(transport), &node.public_key()).ok();
    }

    // The status route and metrics name each destination; the cursors move once the
    // connections stayed open for confirm_after_ms.
    let status = wait_forwarders(&api, |f| {
        f["name"].as_str().unwrap().starts_with("wrong-") || f["next_seq"].as_u64().unwrap() >= size
    });
    assert_eq!(status.len(), 5, "{status:?}");
    // The receiver's certificate is checked: against the CA file, and for the server name.
    for (name, problem) in [
        ("wrong-ca", "invalid peer certificate"),
        ("wrong-name", "not valid for name"),
    ] {
        let f = &status[name];
        assert_eq!(f["next_seq"], 0, "{f}");
        assert_eq!(f["connected"], false, "{f}");
        let error = f["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(problem), "{name}: {f}");
    }
    for (name, f) in status.iter().filter(|(n, _)| !n.starts_with("wrong-")) {
        assert_eq!(f["kind"], "forwarder");
        assert_eq!(f["transport"], name.as_str());
        assert!(f["checkpoint_records"].as_u64().unwrap() >= 1, "{f}");
        assert_eq!(f["connected"], true, "{f}");
        assert!(metric(&api, "evident_forwarder_messages_total", name) >= size as f64);
    }
    let ready = server
        .client()
        .get(format!("{}/readyz", server.url))
        .send()
        .unwrap();
    let ready: Value = serde_json::from_str(&ready.text().unwrap()).unwrap();
    assert_eq!(ready["forwarders"].as_array().unwrap().len(), 5, "{ready}");

    // A deleted line is a gap, named by its range; an edited payload is caught by its hash.
    let text = std::fs::read_to_string(rsyslog.file("tcp")).unwrap();
    let cut: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(" seq=\"40\" ") && !l.contains(" seq=\"41\" "))
        .collect();
    let damaged = tmp.path().join("damaged.log");
    std::fs::write(&damaged, cut.join("\n") + "\n").unwrap();
    let failed = verify_syslog(&damaged, &node.public_key()).code(1);
    assert!(
        failed.stderr.contains("missing seqs 40-41"),
        "{}",
        failed.stderr
    );
    let edited = text.replacen("\"i\":7,", "\"i\":8,", 1);
    assert_ne!(edited, text);
    std::fs::write(&damaged, edited).unwrap();
    let failed = verify_syslog(&damaged, &node.public_key()).code(1);
    assert!(failed.stderr.contains("altered"), "{}", failed.stderr);
}

#[test]
fn an_rsyslog_outage_and_a_killed_server_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = certificates(tmp.path());
    let rsyslog_dir = tmp.path().join("rsyslog");
    std::fs::create_dir(&rsyslog_dir).unwrap();
    let mut rsyslog = Rsyslog::start(&rsyslog_dir, &certs);
    let node = Node::new();
    let config = forward_config(
        tmp.path(),
        &certs,
        1000,
        "lag_warn_events = 100\n",
        &[("tcp", "tcp", rsyslog.tcp), ("tls", "tls", rsyslog.tls)],
    );
    let config = config.to_str().unwrap().to_owned();
    let mut server = Server::start_with(&node.dir, &[], &["--config", &config], None);
    let key = create_key(&node.dir, "owner", &[]);

    // A steady load of appends, every one of which must be taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (api, stop) = (server.api(&key), stop.clone());
        std::thread::spawn(move || {
            let mut appended = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<Value> = (0..10)
                    .map(|i| event(&format!("load-{i}"), "load.tick"))
                    .collect();
                let receipts = api.append(&Value::Array(batch)).unwrap_or_else(|a| {
                    panic!("an append was refused while rsyslog was down: {}", a.text())
                });
                appended += receipts.len() as u64;
                std::thread::sleep(Duration::from_millis(5));
            }
            appended
        })
    };
    let api = server.api(&key);
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_received(&rsyslog.file("tcp")).entries.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "nothing arrived before the outage"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // rsyslog dies under load; the lag rises while appends go on.
    rsyslog.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lag = 0.0;
    while lag < 200.0 {
        lag = metric(&api, "evident_consumer_lag_events", "tcp");
        assert!(Instant::now() < deadline, "the lag never rose: {lag}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let down = forwarders(&api);
    assert!(
        down["tcp"]["last_error"].is_string() || down["tcp"]["lag_events"].as_u64().unwrap() > 0,
        "{down:?}"
    );
    rsyslog.spawn();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = load.join().unwrap();
    assert!(appended > 200);
    let size = api.all_entries().len() as u64;
    api.wait_checkpoint(size);
    for transport in ["tcp", "tls"] {
        wait_received(&rsyslog.file(transport), size, &server);
        verify_syslog(&rsyslog.file(transport), &node.public_key()).ok();
    }
    // …and falls back to zero once everything is delivered.
    wait_forwarders(&api, |f| f["next_seq"].as_u64().unwrap() >= size);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&api, "evident_consumer_lag_events", "tcp") != 0.0 {
        assert!(Instant::now() < deadline, "the lag never fell back to 0");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = forwarders(&api);
    assert!(
        status["tcp"]["connections"].as_u64().unwrap() >= 2,
        "{status:?}"
    );
    // One warning event for the incident (not one per retry), and one when it ended.
    let lag_events = |action: &str| -> Vec<String> {
        let page = api
            .get(&format!("/api/v1/audit-log?action={action}&limit=100"))
            .json();
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["target"]["id"].as_str().unwrap().to_owned())
            .filter(|id| id == "forwarder:tcp")
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while lag_events("evident.consumer.caught_up").is_empty() {
        assert!(Instant::now() < deadline, "no caught_up event");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lag_events("evident.consumer.lagging").len(), 1);
    assert_eq!(lag_events("evident.consumer.caught_up").len(), 1);

    // The server is killed while forwarding (a burst written, not yet confirmed): after the
    // restart the cursor resumes where it was, and nothing is missing.
    let burst: Vec<Value> = (0..400)
        .map(|i| event(&format!("burst-{i}"), "burst.one"))
        .collect();
    api.append(&Value::Array(burst)).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    server.kill();
    server.restart();
    let api = server.api(&key);
    let after: Vec<Value> = (0..20)
        .map(|i| event(&format!("after-{i}"), "after.restart"))
        .collect();
    api.append(&Value::Array(after)).unwrap();
    let size = api.all_entries().len() as u64;
    api.wait_checkpoint(size);
    for transport in ["tcp", "tls"] {
        let received = wait_received(&rsyslog.file(transport), size, &server);
        let mut seqs: Vec<u64> = received.entries.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_dense(&mut seqs);
        let ok = verify_syslog(&rsyslog.file(transport), &node.public_key()).ok();
        assert!(
            ok.stdout.contains("OK: syslog messages verified"),
            "{}",
            ok.stdout
        );
    }
}
