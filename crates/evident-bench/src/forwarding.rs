//! The forwarding benchmark (issue 11, `--forwarding`): ingestion with one TCP and one TLS
//! syslog destination attached (a real rsyslogd on loopback, writing to files) against none,
//! in the same run, cells interleaved; and the forwarders' sustained rate, draining a loaded
//! log into rsyslog from their cursors.

use crate::client::Api;
use crate::ingest;
use crate::server::{Server, tree_cpu};
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
/// The cell measured on both servers: the main bench's typical batched load.
const BATCH: usize = 100;
const CLIENTS: usize = 8;
/// Rounds of (plain cell, forwarding cell).
const ROUNDS: usize = 3;

pub(crate) struct Rsyslog(Child, PathBuf);

impl Rsyslog {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

/// CPU seconds between two readings, as text.
fn cpu_delta(before: Option<Duration>, after: Option<Duration>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("{:.2} s", a.saturating_sub(b).as_secs_f64()),
        _ => "n/a".to_owned(),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A CA and rsyslog's certificate for `localhost`, as PEM files in `dir`: (ca, cert, key).
fn certificates(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "evident-bench CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_pem = params.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &issuer)?;
    let files = (
        dir.join("ca.pem"),
        dir.join("rsyslog.pem"),
        dir.join("rsyslog.key"),
    );
    std::fs::write(&files.0, ca_pem)?;
    std::fs::write(&files.1, cert.pem())?;
    std::fs::write(&files.2, key.serialize_pem())?;
    Ok(files)
}

/// Starts rsyslogd with a TCP and a TLS input, each writing RFC 5424 lines to a file in `dir`.
pub(crate) fn start_rsyslog(dir: &Path) -> anyhow::Result<(Rsyslog, u16, u16, PathBuf)> {
    if !Path::new(RSYSLOGD).exists() {
        bail!(
            "{RSYSLOGD} not found: install rsyslog and rsyslog-gnutls (apt-get install rsyslog rsyslog-gnutls)"
        );
    }
    let (ca, cert, key) = certificates(dir)?;
    let (tcp, tls) = (free_port()?, free_port()?);
    let d = dir.display();
    let conf = format!(
        r#"global(workDirectory="{d}" maxMessageSize="64k"
  defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}" defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="RSYSLOG_SyslogProtocol23Format") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="RSYSLOG_SyslogProtocol23Format") }}
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display()
    );
    let conf_path = dir.join("rsyslog.conf");
    std::fs::write(&conf_path, conf)?;
    let pid = dir.join("rsyslogd.pid");
    let child = Command::new(RSYSLOGD)
        .arg("-n")
        .arg("-f")
        .arg(&conf_path)
        .arg("-i")
        .arg(&pid)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start rsyslogd")?;
    let rsyslog = Rsyslog(child, pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in [tcp, tls] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("rsyslogd did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok((rsyslog, tcp, tls, ca))
}

/// The `[[forward.syslog]]` config of one TCP and one TLS destination named `<prefix>-tcp`,
/// `<prefix>-tls`.
fn forward_config(path: &Path, prefix: &str, tcp: u16, tls: u16, ca: &Path) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "[[forward.syslog]]\nname = \"{prefix}-tcp\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{tcp}\"\n\n\
             [[forward.syslog]]\nname = \"{prefix}-tls\"\ntransport = \"tls\"\naddress = \"127.0.0.1:{tls}\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
            ca.display()
        ),
    )?;
    Ok(())
}

/// (smallest next_seq of the forwarders, log size) from `GET /api/v1/forwarders`.
async fn forwarder_position(api: &Api) -> anyhow::Result<(u64, u64, usize)> {
    let answer = api.get("/api/v1/forwarders").await?;
    let list: serde_json::Value = serde_json::from_slice(&answer.bytes().await?)?;
    let list = list.as_array().cloned().unwrap_or_default();
    let next = list
        .iter()
        .filter_map(|f| f["next_seq"].as_u64())
        .min()
        .unwrap_or(0);
    let size = list
        .iter()
        .filter_map(|f| f["log_size"].as_u64())
        .max()
        .unwrap_or(0);
    Ok((next, size, list.len()))
}

/// Waits until every forwarder delivered the whole log of `size` entries; returns how long.
async fn wait_caught_up(api: &Api, size: u64, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let (next, _, n) = forwarder_position(api).await?;
        if n > 0 && next >= size {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("the forwarders did not catch up within {within:?} (at {next} of {size})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn log_size(api: &Api) -> anyhow::Result<u64> {
    let answer = api.get("/api/v1/checkpoint").await?;
    let text = answer.text().await?;
    Ok(text
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0))
}

async fn launch(
    evident: &Path,
    dir: &Path,
    config: Option<&Path>,
) -> anyhow::Result<(Server, Api)> {
    std::fs::create_dir_all(dir)?;
    let server = match config {
        Some(config) => Server::start_with_config(evident, dir, config)?,
        None => Server::start(evident, dir, None)?,
    };
    let key = server.create_key(evident)?;
    let api = Api::new(&server.base_url, &key)?;
    api.wait_healthy(Duration::from_secs(30)).await?;
    Ok((server, api))
}

/// Runs the forwarding benchmark in `work`; returns its Markdown report.
pub async fn run(evident: &Path, work: &Path, cell: Duration) -> anyhow::Result<String> {
    let rsyslog_dir = work.join("rsyslog");
    std::fs::create_dir_all(&rsyslog_dir)?;
    let (rsyslog, tcp, tls, ca) = start_rsyslog(&rsyslog_dir)?;
    let config = work.join("forward.toml");
    forward_config(&config, "bench", tcp, tls, &ca)?;
    eprintln!("forwarding: rsyslogd on TCP {tcp} and TLS {tls}");
    let (plain, plain_api) = launch(evident, &work.join("plain"), None).await?;
    let (fwd, fwd_api) = launch(evident, &work.join("fwd"), Some(&config)).await?;
    for api in [&plain_api, &fwd_api] {
        ingest::throughput(api, BATCH, CLIENTS, Duration::from_millis(500), 1).await?;
    }
    wait_caught_up(&fwd_api, log_size(&fwd_api).await?, Duration::from_secs(60)).await?;
    let mut rows = Vec::new();
    let (mut plain_sum, mut fwd_sum) = (0.0, 0.0);
    for round in 0..ROUNDS {
        let seed = 10 + round as u64;
        eprintln!("forwarding: round {round}: no destination");
        let cpu_before = plain.cpu();
        let a = ingest::throughput(&plain_api, BATCH, CLIENTS, cell, seed).await?;
        let plain_cpu = cpu_delta(cpu_before, plain.cpu());
        eprintln!("forwarding: round {round}: TCP + TLS destinations");
        let (cpu_before, rsyslog_before) = (fwd.cpu(), tree_cpu(rsyslog.0.id()));
        let b = ingest::throughput(&fwd_api, BATCH, CLIENTS, cell, seed).await?;
        let (fwd_cpu, rsyslog_cpu) = (
            cpu_delta(cpu_before, fwd.cpu()),
            cpu_delta(rsyslog_before, tree_cpu(rsyslog.0.id())),
        );
        // The forwarders finish before the next plain cell, so that it runs undisturbed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let size = log_size(&fwd_api).await?;
        let catch_up = wait_caught_up(&fwd_api, size, Duration::from_secs(300)).await?;
        if a.errors + b.errors > 0 {
            bail!("appends failed: {:?} / {:?}", a.first_error, b.first_error);
        }
        let (ra, rb) = (a.events_per_sec(), b.events_per_sec());
        plain_sum += ra;
        fwd_sum += rb;
        rows.push(format!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.1} s | {plain_cpu} / {fwd_cpu} | {rsyslog_cpu} |",
            round + 1,
            ra,
            rb,
            rb / ra,
            catch_up.as_secs_f64()
        ));
    }
    let _ = plain.stop(Duration::from_secs(60));
    let _ = fwd.stop(Duration::from_secs(60));

    // Sustained rate: the plain server's log (never forwarded) drained into rsyslog by two
    // new destinations starting at its oldest entry.
    let drain_config = work.join("drain.toml");
    forward_config(&drain_config, "drain", tcp, tls, &ca)?;
    let (drain, drain_api) = launch(evident, &work.join("plain"), Some(&drain_config)).await?;
    let started = Instant::now();
    let size = log_size(&drain_api).await?;
    let took = wait_caught_up(&drain_api, size, Duration::from_secs(600)).await?;
    let _ = drain.stop(Duration::from_secs(60));
    drop(rsyslog);
    let received: u64 = ["tcp.log", "tls.log"]
        .iter()
        .map(|f| std::fs::metadata(rsyslog_dir.join(f)).map_or(0, |m| m.len()))
        .sum();
    let _ = std::fs::remove_dir_all(&rsyslog_dir);
    let mean_ratio = fwd_sum / plain_sum;
    let mut out = String::new();
    out.push_str(&format!(
        "Ingestion, batch {BATCH} × {CLIENTS} clients, {:.1} s cells, interleaved (events/s):\n\n",
        cell.as_secs_f64()
    ));
    out.push_str("| round | no destination | TCP + TLS destinations | ratio | forwarders caught up after the cell | server CPU in the cell (none / forwarding) | rsyslogd CPU in the forwarding cell |\n|---|---|---|---|---|---|---|\n");
    for row in rows {
        out.push_str(&row);
        out.push('\n');
    }
    out.push_str(&format!(
        "| mean | {:.0} | {:.0} | **{mean_ratio:.3}** | | | |\n\n",
        plain_sum / ROUNDS as f64,
        fwd_sum / ROUNDS as f64
    ));
    out.push_str(&format!(
        "Forwarders' sustained rate: {size} entries drained from their cursors to rsyslog over TCP and TLS at once in {:.1} s ({:.0} entries/s per destination; {:.1} MB written by rsyslog; measured from the server's start, {:.1} s in total, including the last {} ms confirmation wait)\n",
        took.as_secs_f64(),
        size as f64 / took.as_secs_f64(),
        received as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        1000
    ));
    Ok(out)
}
