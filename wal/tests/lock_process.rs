//! The directory lock against another process: a child process (this test binary, run
//! again) is refused while the parent holds the WAL open, and succeeds once it is closed.
//! Alone in its binary: while a fork is in flight, the child shares every descriptor of
//! the parent, including a lock another test in the same binary just released.

use std::process::Command;

use wal::{RecordRef, Wal, WalError, WalOptions};

fn real_options() -> WalOptions {
    WalOptions {
        segment_size: 4096,
        ..WalOptions::default()
    }
}

/// Set in the child process: the directory to try.
const CHILD_ENV: &str = "WAL_LOCK_TEST_CHILD_DIR";

/// Runs this test binary again as a child that tries to open `dir`; returns its verdict.
fn child_open(dir: &std::path::Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "another_process_is_refused_while_the_lock_is_held",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        // The test harness prints "test ... " on the same line before the child's output.
        .find_map(|l| l.split("CHILD-VERDICT: ").nth(1))
        .unwrap_or_else(|| panic!("no verdict in child output: {stdout}"))
        .to_owned()
}

#[test]
fn another_process_is_refused_while_the_lock_is_held() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        // Child: report what opening the directory does, then exit.
        let verdict = match Wal::open(&dir, real_options()) {
            Ok(_) => "opened".to_owned(),
            Err(WalError::Locked { .. }) => "locked".to_owned(),
            Err(e) => format!("error {e}"),
        };
        println!("CHILD-VERDICT: {verdict}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Wal::open(dir.path(), real_options()).unwrap();
    log.append(&[RecordRef::new(1, b"held")]).unwrap();
    assert_eq!(child_open(dir.path()), "locked");
    drop(log);
    assert_eq!(child_open(dir.path()), "opened");
    // And the child's exit released its lock.
    let (_, rec) = Wal::open(dir.path(), real_options()).unwrap();
    assert_eq!(rec.next_index, 2);
}
