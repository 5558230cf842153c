//! Who may read the data directory: it is created mode 0700 and every file the node keeps
//! there (identity, keys, database and its WAL and shared-memory files, lock, TLS key) 0600,
//! whatever the umask; at each start, existing ones that are looser are tightened, or, when
//! that fails (another owner, a read-only filesystem), warned about.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Mode of the data directory and its subdirectories.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every private file in the data directory.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// The files in the data directory that must be private, relative to it.
const PRIVATE_FILES: &[&str] = &[
    crate::node::NODE_FILE,
    crate::node::LOCK_FILE,
    crate::node::DB_FILE,
    "evident.db-wal",
    "evident.db-shm",
    "evident.db-journal",
    "keys/checkpoint.key",
    "keys/seal.key",
    "tls/key.pem",
];

/// The subdirectories that must be private.
const PRIVATE_DIRS: &[&str] = &["keys", "tls"];

/// Creates `dir` (and missing parents, with the default mode) as a private directory; an
/// existing one is tightened.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR_MODE);
    }
    match builder.create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
            tighten(dir, PRIVATE_DIR_MODE);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Creates `dir` and any missing parents, each new one mode 0700 (like
/// `std::fs::create_dir_all`); existing ones are left as they are.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR_MODE);
    }
    builder.create(dir)
}

/// Creates `path` empty with mode 0600 when it does not exist yet (so that a library that
/// creates it otherwise, SQLite, finds it private, and gives its side files the same mode).
pub fn create_private_file(path: &Path) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE_MODE);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a durable write fails when the directory holding the file cannot be synced after
/// the rename (the file is then in place but its name may not survive a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirSync {
    Required,
    BestEffort,
}

/// The step of a durable write that failed: the file it was on and the error.
#[derive(Debug)]
pub struct WriteFailed {
    pub path: PathBuf,
    pub source: io::Error,
}

/// The one durable write of a private file: writes `contents` to a temporary file (mode
/// 0600) next to `path`, fsyncs it, renames it over `path` and syncs the directory, so that
/// a crash leaves either the old file or the whole new one.
pub fn write_private_file_durably(
    path: &Path,
    contents: &str,
    dir_sync: DirSync,
) -> Result<(), WriteFailed> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteFailed { path, source }
    };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE_MODE);
    }
    let mut file = options.open(&tmp).map_err(failed(&tmp))?;
    file.write_all(contents.as_bytes()).map_err(failed(&tmp))?;
    file.sync_all().map_err(failed(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(failed(path))?;
    if let Some(parent) = path.parent() {
        // The rename is durable once the directory entry is.
        let synced = std::fs::File::open(parent).and_then(|dir| dir.sync_all());
        if dir_sync == DirSync::Required {
            synced.map_err(failed(parent))?;
        }
    }
    Ok(())
}

/// Tightens the data directory, its private subdirectories and files that exist.
pub fn secure_data_dir(dir: &Path) {
    tighten(dir, PRIVATE_DIR_MODE);
    for sub in PRIVATE_DIRS {
        tighten(&dir.join(sub), PRIVATE_DIR_MODE);
    }
    for file in PRIVATE_FILES {
        tighten(&dir.join(file), PRIVATE_FILE_MODE);
    }
}

/// Removes from `path`'s mode every permission `wanted` does not have (when it exists); logs
/// a warning when it cannot.
pub fn tighten(path: &Path, wanted: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & !wanted == 0 {
            return;
        }
        let tightened = mode & wanted;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(tightened)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                was = format!("{mode:o}"),
                now = format!("{tightened:o}"),
                "tightened the permissions of a data directory entry other users could reach"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "a data directory entry is accessible to other users and cannot be tightened; chmod {:o} it",
                wanted
            ),
        }
    }
    #[cfg(not(unix))]
    let _ = (path, wanted);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_entries_are_private_and_loose_ones_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("parent").join("data");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join(crate::node::DB_FILE);
        create_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        // An existing file is left as it is by create_private_file…
        std::fs::write(&db, b"x").unwrap();
        create_private_file(&db).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"x");

        // …and tightened by secure_data_dir, with the directory.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o664)).unwrap();
        let wal = dir.join("evident.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A file already stricter than 0600 is not loosened.
        let lock = dir.join(crate::node::LOCK_FILE);
        std::fs::write(&lock, b"").unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o400)).unwrap();
        secure_data_dir(&dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&wal), 0o600);
        assert_eq!(mode(&lock), 0o400);
        create_private_dir(&dir).unwrap();
    }
}
