//! The server under test: starts `evident serve` as a child process on a fresh data directory
//! and a free loopback port (its log in the embedded store, or in PostgreSQL with `--storage`),
//! creates an owner key with `evident keys create`, samples the child's memory and CPU from
//! `/proc`, measures its data directory, and stops it. Owns the process; talking HTTP to it is
//! `client.rs`'s job. Also reads the CPU time of other processes from `/proc` (the bench
//! itself, a PostgreSQL postmaster and its backends).

use anyhow::{Context as _, anyhow, bail};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often the memory sampler reads `/proc/PID/status`.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// A running `evident serve`.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub base_url: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// `--storage` (a `postgres://` URL), when the log is not in the embedded store.
    storage: Option<String>,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    max_threads: Arc<std::sync::atomic::AtomicU64>,
    sampling: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

fn clean_env(cmd: &mut Command) {
    // The bench owns the configuration: no inherited EVIDENT_* setting or log level.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("EVIDENT_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("RUST_LOG");
}

impl Server {
    /// Starts `evident serve --data-dir DATA --listen 127.0.0.1:0` (plus `--storage URL` when
    /// `storage` is given) and waits until it prints its address.
    pub fn start(evident: &Path, work_dir: &Path, storage: Option<&str>) -> anyhow::Result<Server> {
        Server::start_with(evident, work_dir, storage, &[], &[])
    }

    /// Like [`Server::start`] on the embedded store, with `--config FILE`.
    pub fn start_with_config(
        evident: &Path,
        work_dir: &Path,
        config: &Path,
    ) -> anyhow::Result<Server> {
        let config = config.to_string_lossy();
        Server::start_with(evident, work_dir, None, &["--config", &config], &[])
    }

    /// [`Self::start`] with extra `serve` arguments and environment variables.
    pub fn start_with(
        evident: &Path,
        work_dir: &Path,
        storage: Option<&str>,
        args: &[&str],
        envs: &[(String, String)],
    ) -> anyhow::Result<Server> {
        let data_dir = work_dir.join("data");
        let log_path = work_dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(evident);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0");
        if let Some(url) = storage {
            cmd.arg("--storage").arg(url);
        }
        cmd.args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        clean_env(&mut cmd);
        // Every benchmark client connects from loopback: the per-address cap would turn the
        // open-loop phase's surplus connections into 429s instead of letting them wait in
        // the backlog as before, so it is set to the global limit.
        cmd.env("EVIDENT_MAX_CONNECTIONS_PER_IP", "512");
        cmd.envs(envs.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} serve", evident.display()))?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe to the server"))?;
        let (tx, rx) = mpsc::channel::<String>();
        // Keeps draining stdout so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            pid,
            base_url: String::new(),
            data_dir,
            log_path,
            storage: storage.map(str::to_owned),
            samples: Arc::new(Mutex::new(Vec::new())),
            max_threads: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            sampling: Arc::new(AtomicBool::new(true)),
            sampler: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                        server.base_url = url.trim_end_matches('/').to_owned();
                        break;
                    }
                }
                Err(_) => {
                    let tail = server.log_tail();
                    bail!(
                        "the server did not print its address within 60 s (or exited); its log ends:\n{tail}"
                    );
                }
            }
        }
        server.start_sampler();
        Ok(server)
    }

    fn start_sampler(&mut self) {
        let samples = self.samples.clone();
        let max_threads = self.max_threads.clone();
        let sampling = self.sampling.clone();
        let pid = self.pid;
        self.sampler = Some(std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kb) = status_kb(pid, "VmRSS:") {
                    if let Ok(mut s) = samples.lock() {
                        s.push((Instant::now(), kb));
                    }
                }
                if let Some(n) = status_kb(pid, "Threads:") {
                    max_threads.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        }));
    }

    /// Creates an owner API key with the CLI; the key is the last line it prints.
    pub fn create_key(&self, evident: &Path) -> anyhow::Result<String> {
        let mut cmd = Command::new(evident);
        cmd.args(["keys", "create", "--init", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--role", "owner"]);
        clean_env(&mut cmd);
        if let Some(url) = &self.storage {
            // The data directory records it too; saying it again costs nothing.
            cmd.env("EVIDENT_STORAGE", url);
        }
        let out = cmd.output().context("cannot run `evident keys create`")?;
        if !out.status.success() {
            bail!(
                "`evident keys create` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("`evident keys create` printed no key"))
    }

    /// Largest RSS sampled between `from` and `to`, in KiB.
    pub fn rss_max_kb(&self, from: Instant, to: Instant) -> u64 {
        self.samples.lock().map_or(0, |s| {
            s.iter()
                .filter(|(t, _)| *t >= from && *t <= to)
                .map(|(_, kb)| *kb)
                .max()
                .unwrap_or(0)
        })
    }

    /// Most threads the server was seen running.
    pub fn max_threads(&self) -> u64 {
        self.max_threads.load(Ordering::Relaxed)
    }

    /// Number of RSS samples taken so far.
    pub fn rss_samples(&self) -> usize {
        self.samples.lock().map_or(0, |s| s.len())
    }

    /// The kernel's high-water mark of the server's resident set, in KiB.
    pub fn vm_hwm_kb(&self) -> Option<u64> {
        status_kb(self.pid, "VmHWM:")
    }

    /// CPU time the server used so far (user + system).
    pub fn cpu(&self) -> Option<Duration> {
        cpu_time(&format!("/proc/{}/stat", self.pid))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the server with SIGTERM (graceful: commits, signs a final checkpoint), killing
    /// it if it has not exited after `grace`.
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        self.stop_sampler();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("the server did not stop within {grace:?} of SIGTERM; killed it")
    }

    fn stop_sampler(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        if let Some(h) = self.sampler.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A bench that fails half-way must not leave the server running.
        self.sampling.store(false, Ordering::Relaxed);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The number of a `Name:   1234 kB` (or `Threads: 12`) line of `/proc/PID/status`.
fn status_kb(pid: u32, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Clock ticks per second of `/proc/*/stat` times.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// The fields of a `/proc/.../stat` file after the command name: index 0 is the state (field
/// 3 of the full line), so field N of proc(5) is index N - 3.
fn stat_fields(path: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    // The state is a letter: counted as 0 so that the indexes stay those of proc(5).
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// utime + stime of a `/proc/.../stat` file.
fn cpu_time(path: &str) -> Option<Duration> {
    let fields = stat_fields(path)?;
    // utime is field 14, stime 15.
    Some(ticks_to_duration(fields.get(11)? + fields.get(12)?))
}

/// CPU time of process `root` and its children so far: its own utime + stime, the time of its
/// children that have exited and been waited for (cutime + cstime), and utime + stime of its
/// live children. For a PostgreSQL postmaster that is the whole cluster: every backend and
/// background process is its direct child, and it reaps the ones that exit. A difference of
/// two readings is the CPU the tree used in between.
pub fn tree_cpu(root: u32) -> Option<Duration> {
    let own = stat_fields(&format!("/proc/{root}/stat"))?;
    // utime 14, stime 15, cutime 16, cstime 17.
    let mut ticks = own.get(11)? + own.get(12)? + own.get(13)? + own.get(14)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A child may exit between the listing and the read: then it is skipped here and
        // counted in the root's cutime once reaped.
        let Some(fields) = stat_fields(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        // ppid is field 4.
        if fields.get(1) == Some(&u64::from(root)) {
            ticks += fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
        }
    }
    Some(ticks_to_duration(ticks))
}

/// CPU time this process (the client) used so far.
pub fn own_cpu() -> Option<Duration> {
    cpu_time("/proc/self/stat")
}

/// Bytes allocated on disk and apparent bytes of every file under `dir`.
pub fn disk_usage(dir: &Path) -> anyhow::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut allocated = 0;
    let mut apparent = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                allocated += meta.blocks() * 512;
                apparent += meta.len();
            }
        }
    }
    Ok((allocated, apparent))
}

/// A one-line description of the machine, for the report.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.1} GiB RAM, Linux {kernel}")
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}
