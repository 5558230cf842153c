//! Test support, never shipped: a throwaway PostgreSQL 15 cluster for the tests that run
//! Evident on PostgreSQL. Owns starting it (initdb and pg_ctl from [`BIN_DIR`], run as the
//! `postgres` system user when the tests run as root, since both refuse to run as root), on
//! a free loopback port with trust authentication for 127.0.0.1 only, one fresh database per
//! test, plain `psql` access for tests that act as an ordinary SQL client, and stopping it
//! (`pg_ctl stop -m immediate`) and removing its files: on drop, and, for the cluster shared
//! by a test binary ([`shared`]), by a watchdog process once the test process is gone, even
//! when it panicked or was killed.
//!
//! A missing PostgreSQL is an error whose message says how to install it ([`INSTALL_HINT`]):
//! the tests fail, they are not skipped.
//!
//! A cluster can also be started with TLS on ([`Cluster::start_tls`], shared by a test binary
//! through [`shared_tls`]): a certificate signed by a throwaway CA, and TLS-only
//! authentication over TCP (`tls.rs`).
//!
//! Also the SQL of the hand-built hash-chain trigger table the benchmarks compare against
//! ([`trigger_table`]).

mod tls;
pub mod trigger_table;

pub use tls::PLAIN_ONLY_DB;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where Debian's `postgresql-15` package puts the server binaries.
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// What to do when they are missing.
pub const INSTALL_HINT: &str = "PostgreSQL 15 is needed for these tests: install it with \
     `apt-get install postgresql-15` (Debian; it provides /usr/lib/postgresql/15/bin and the \
     `postgres` system user), or run scripts/test.sh, which installs it when missing";
/// The superuser of the test cluster (trust authentication, no password).
pub const SUPERUSER: &str = "postgres";

/// Why a cluster could not be started or used.
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

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Temporary directory holding `data/`, the socket and the server log.
    root: PathBuf,
    port: u16,
    /// Run initdb and pg_ctl through `runuser -u postgres` (the tests run as root).
    as_postgres: bool,
    databases: AtomicU64,
    stopped: bool,
    /// The certificates of a cluster started with TLS.
    tls: Option<tls::TlsFiles>,
}

fn bin(name: &str) -> PathBuf {
    Path::new(BIN_DIR).join(name)
}

fn describe(output: &Output) -> String {
    format!(
        "exit status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| err(format!("cannot find a free loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("cannot find a free loopback port: {e}")))
}

impl Cluster {
    /// Initializes and starts a new cluster in a fresh temporary directory, with fsync off
    /// (a throwaway cluster for correctness tests: commits still wait for their WAL write).
    pub fn start() -> Result<Cluster, Error> {
        Cluster::start_durable(false, false)
    }

    /// [`Self::start`] with fsync on, as in production (for benchmarks).
    pub fn start_with_fsync() -> Result<Cluster, Error> {
        Cluster::start_durable(true, false)
    }

    /// [`Self::start`] with `ssl = on`: the server presents a certificate for `localhost` and
    /// `127.0.0.1` signed by a CA generated now ([`Self::ca_cert`]), and takes TCP connections
    /// over TLS only (`hostssl`), except to database [`PLAIN_ONLY_DB`], which it takes without
    /// TLS only. `psql` reaches it all the same (libpq's default `sslmode=prefer`).
    pub fn start_tls() -> Result<Cluster, Error> {
        Cluster::start_durable(false, true)
    }

    fn start_durable(fsync: bool, tls: bool) -> Result<Cluster, Error> {
        for tool in ["initdb", "pg_ctl", "psql"] {
            if !bin(tool).exists() {
                return Err(err(format!(
                    "{} not found. {INSTALL_HINT}",
                    bin(tool).display()
                )));
            }
        }
        let as_postgres = running_as_root();
        if as_postgres {
            let known = Command::new("id")
                .arg(SUPERUSER)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !known {
                return Err(err(format!(
                    "running as root, but there is no `postgres` system user to run initdb \
                     and pg_ctl as. {INSTALL_HINT}"
                )));
            }
        }
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        let n = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        // As root, under /tmp: the `postgres` user must reach the directory, which a private
        // TMPDIR may not let it.
        let base = if as_postgres {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let root = base.join(format!("evident-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)
            .map_err(|e| err(format!("cannot create {}: {e}", root.display())))?;
        let mut cluster = Cluster {
            root,
            port: 0,
            as_postgres,
            databases: AtomicU64::new(0),
            stopped: true,
            tls: None,
        };
        if as_postgres {
            cluster.run_checked(
                Command::new("chown")
                    .arg(format!("{SUPERUSER}:"))
                    .arg(&cluster.root),
            )?;
        }
        let data = cluster.data_dir();
        cluster.run_checked(
            cluster
                .tool("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C"])
                // A throwaway cluster: no need to sync its files at creation.
                .arg("--no-sync"),
        )?;
        let mut ssl = String::new();
        if tls {
            let owner = as_postgres.then(|| format!("{SUPERUSER}:"));
            let files = tls::write_certificates(&cluster.root.join("tls"), owner.as_deref())?;
            ssl = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                files.server_cert.display(),
                files.server_key.display()
            );
            let hba = data.join("pg_hba.conf");
            // Overwritten in place: the file stays the server user's.
            std::fs::write(&hba, tls::hba_conf())
                .map_err(|e| err(format!("cannot write {}: {e}", hba.display())))?;
            cluster.tls = Some(files);
        }
        // A port picked free can be taken before the server binds it: try a few.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            let durability = if fsync {
                "-c fsync=on"
            } else {
                "-c fsync=off -c full_page_writes=off"
            };
            let options = format!(
                "-p {} -h 127.0.0.1 -k {} -c max_connections=300 -c shared_buffers=32MB \
                 {durability}{ssl}",
                cluster.port,
                cluster.root.display()
            );
            let started = cluster.run_checked(
                cluster
                    .tool("pg_ctl")
                    .arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(cluster.root.join("server.log"))
                    .args(["-w", "-t", "60", "-o", &options, "start"]),
            );
            match started {
                Ok(_) => {
                    cluster.stopped = false;
                    if tls {
                        cluster.psql("postgres", &format!("CREATE DATABASE {PLAIN_ONLY_DB}"))?;
                    }
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| err("the test cluster did not start")))
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A PostgreSQL tool, run as the `postgres` user when we are root.
    fn tool(&self, name: &str) -> Command {
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", SUPERUSER, "--"]).arg(bin(name));
            cmd
        } else {
            Command::new(bin(name))
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn run_checked(&self, cmd: &mut Command) -> Result<Output, Error> {
        let output = cmd
            .output()
            .map_err(|e| err(format!("cannot run {cmd:?}: {e}. {INSTALL_HINT}")))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(err(format!(
                "{cmd:?} failed: {}\nserver log:\n{}",
                describe(&output),
                std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
            )))
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the cluster's postmaster (first line of `postmaster.pid`), for
    /// benchmarks that read its CPU time; `None` if the file cannot be read.
    pub fn server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The connection URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The PEM file of the CA that signed the server's certificate (a cluster started with
    /// [`Self::start_tls`]; `None` otherwise).
    pub fn ca_cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// The PEM file of a CA that signed nothing this cluster presents (TLS cluster only).
    pub fn unrelated_ca_cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.unrelated_ca.as_path())
    }

    /// Creates a fresh, empty database; returns its name.
    pub fn create_database(&self) -> Result<String, Error> {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("evident_test_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// Creates a fresh database; returns its URL.
    pub fn create_database_url(&self) -> Result<String, Error> {
        Ok(self.url(&self.create_database()?))
    }

    /// Runs `sql` with `psql` (a plain SQL client, as the superuser) on database `db`,
    /// stopping at the first error. Ok with psql's output, or an error carrying it.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, Error> {
        let output = self.psql_raw(db, sql)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(err(format!("psql {sql:?} failed: {}", describe(&output))))
        }
    }

    /// Runs `sql` with `psql` and returns what happened, success or not.
    pub fn psql_raw(&self, db: &str, sql: &str) -> Result<Output, Error> {
        Command::new(bin("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run psql: {e}. {INSTALL_HINT}")))
    }

    /// Stops the server at once (`-m immediate`) and removes its files.
    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// Starts a detached process that stops this cluster and removes its files once the
    /// current process has exited (however it exits, SIGKILL included).
    pub fn watch(&self) -> Result<(), Error> {
        let stop = if self.as_postgres {
            format!("runuser -u {SUPERUSER} -- ")
        } else {
            String::new()
        };
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \
             {stop}{pg_ctl} -D '{data}' -m immediate -w stop; rm -rf '{root}'",
            pid = std::process::id(),
            pg_ctl = bin("pg_ctl").display(),
            data = self.data_dir().display(),
            root = self.root.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| err(format!("cannot start the cluster's watchdog: {e}")))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cluster shared by every test of this test binary, started on first use and stopped
/// after the process exits. An error (PostgreSQL missing) is returned to every caller.
pub fn shared() -> Result<&'static Cluster, Error> {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let cluster = SHARED.get_or_init(|| {
        let cluster = Cluster::start().map_err(|e| e.0)?;
        cluster.watch().map_err(|e| e.0)?;
        Ok(cluster)
    });
    cluster.as_ref().map_err(|e| err(e.clone()))
}

/// The TLS cluster ([`Cluster::start_tls`]) shared by every test of this test binary that
/// needs one, started on first use and stopped after the process exits.
pub fn shared_tls() -> Result<&'static Cluster, Error> {
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let cluster = SHARED.get_or_init(|| {
        let cluster = Cluster::start_tls().map_err(|e| e.0)?;
        cluster.watch().map_err(|e| e.0)?;
        Ok(cluster)
    });
    cluster.as_ref().map_err(|e| err(e.clone()))
}

/// A fresh database on the shared cluster: its URL.
pub fn fresh_database_url() -> Result<String, Error> {
    shared()?.create_database_url()
}
