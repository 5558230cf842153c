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
        Cluster::start_durable(false)
    }

    /// [`Self::start`] with fsync on, as in production (for benchmarks).
    pub fn start_with_fsync() -> Result<Cluster, Error> {
        Cluster::start_durable(true)
    }

    fn start_durable(fsync: bool) -> Result<Cluster, Error> {
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
                 {durability}",
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

    /// The connection URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
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
    /// current process has exited (however it exits).
    fn watch(&self) -> Result<(), Error> {
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

/// A fresh database on the shared cluster: its URL.
pub fn fresh_database_url() -> Result<String, Error> {
    shared()?.create_database_url()
}
