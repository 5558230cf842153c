//! End to end, through the real binary, on a real full disk: the data directory lives on a
//! 2 MiB tmpfs that the test mounts (root needed) and fills with a file of its own. Appends
//! then fail with 507 and the `storage_full` JSON error, nothing stored is damaged, reads and
//! verification keep working, and once the filler is deleted appends succeed again on the
//! same server process, densely after what was stored before.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, assert_dense, create_key, event, run};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    _parent: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("small");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "this test needs a small filesystem to fill: it mounts a {size} tmpfs, which takes \
             root (or CAP_SYS_ADMIN). Run the tests as root, e.g. in the CI container. \
             mount said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            _parent: parent,
            path,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Writes `path` until the filesystem is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // tmpfs has no reserve: a byte more does not fit.
    let _ = file.write_all(&[0u8; 1]);
    let _ = file.sync_all();
    written
}

#[test]
fn a_full_disk_gets_507_damages_nothing_and_appends_resume_when_space_returns() {
    let fs = Tmpfs::mount("2m");
    let dir = fs.path.join("data");
    let key = create_key(&dir, "owner", &[]);
    let server = Server::start_with_env(&dir, &[]);
    let api = server.api(&key);

    let mut acked = Vec::new();
    for i in 0..5 {
        acked.extend(
            api.append(&event("alice", &format!("before.full{i}")))
                .unwrap(),
        );
    }

    let filler = fs.path.join("filler");
    assert!(
        fill(&filler) > 0,
        "the tmpfs was full before the test filled it"
    );

    // Every append now fails whole, with the documented error.
    let mut refused = 0;
    for i in 0..5 {
        let batch = serde_json::json!([
            event("bob", &format!("during.full{i}")),
            event("bob", &format!("during.full{i}"))
        ]);
        match api.append(&batch) {
            Ok(receipts) => panic!("append accepted on a full disk: {receipts:?}"),
            Err(answer) => {
                let body = answer.assert_error(507, "storage_full", None);
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("nothing was stored"), "{body}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 5);

    // What was stored is intact and readable while the disk is full.
    let entries = api.all_entries();
    let stored: Vec<(u64, String)> = entries.iter().map(|e| (e.0, e.1.clone())).collect();
    for r in &acked {
        assert!(stored.contains(r), "entry {} lost", r.0);
    }
    assert!(
        entries.iter().all(|e| e.2["actor"]["id"] != "bob"),
        "a refused event was stored"
    );
    let answer = api.get("/api/v1/verify");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["ok"], true, "{}", answer.text());
    let verify = run(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);

    // Space returns: the same process appends again, right after what it had.
    std::fs::remove_file(&filler).unwrap();
    let mut seqs: Vec<u64> = stored.iter().map(|r| r.0).collect();
    for i in 0..5 {
        let receipts = api
            .append(&event("carol", &format!("after.full{i}")))
            .unwrap_or_else(|a| {
                panic!(
                    "append after space returned: {} {}\n{}",
                    a.status,
                    a.text(),
                    server.server_log()
                )
            });
        seqs.extend(receipts.iter().map(|r| r.0));
        acked.extend(receipts);
    }
    let entries = api.all_entries();
    let mut all: Vec<u64> = entries.iter().map(|e| e.0).collect();
    assert_dense(&mut all);
    for r in &acked {
        assert!(
            entries.iter().any(|e| e.0 == r.0 && e.1 == r.1),
            "entry {} lost",
            r.0
        );
    }
    let answer = api.get("/api/v1/verify");
    assert_eq!(answer.json()["ok"], true, "{}", answer.text());
    let verify = run(&["verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);
    assert!(seqs.len() >= 10);
}
