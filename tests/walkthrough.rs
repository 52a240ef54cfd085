//! The README's main job: `examples/walkthrough` runs shared/walkthrough.md end to end.
//!
//! * Default mode (embedded, no root, dataplane decided by the model): exit 0, every
//!   section printed, every check passed, and §2–§3 (the Calico part, deterministic once
//!   loopback ports are masked) equal to `tests/golden/calicoctl/walkthrough-calico.txt`.
//! * As root, `--dataplane netns`: §2 on real network namespaces with calico-node agents
//!   and real pings; the same reachability must be measured. Not root: that test says it
//!   skips — under `CI=true` (where scripts/test.sh runs as root) a non-root run fails.
//!
//! `UPDATE_GOLDEN=1 cargo test --test walkthrough` rewrites the golden section.

#[path = "calicoctl_support/mod.rs"]
mod calicoctl_support;

use std::process::Command;

use calicoctl_support::{check_golden, example_binary, in_ci, is_root};

/// The two runs start etcd clusters and (as root) agents: one at a time on 2 cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_walkthrough(args: &[&str]) -> (i32, String, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(example_binary("walkthrough"))
        .args(args)
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("ETCD_AUTHORITY")
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .expect("run the walkthrough");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Masks loopback ports (`127.0.0.1:<n>` → `127.0.0.1:<port>`).
fn mask_ports(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("127.0.0.1:") {
        out.push_str(&rest[..i + "127.0.0.1:".len()]);
        rest = &rest[i + "127.0.0.1:".len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("<port>");
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

fn section<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let a = text.find(from).unwrap_or(0);
    let b = text[a..].find(to).map_or(text.len(), |b| a + b);
    &text[a..b]
}

#[test]
fn walkthrough_runs_end_to_end_on_the_model_dataplane() {
    let (code, out, err) = run_walkthrough(&[]);
    assert_eq!(code, 0, "walkthrough failed:\n{out}\n{err}");
    for heading in [
        "## 1. An etcd cluster of two members",
        "## 2. Docker and Calico on each host",
        "## 3. Calico inside Docker networking (libnetwork)",
        "## 4. Growing the etcd cluster",
        "## 5. Backups",
        "## What the walkthrough says about Raft",
    ] {
        assert!(out.contains(heading), "missing {heading:?}:\n{out}");
    }
    assert!(!out.contains('✘'), "a check failed:\n{out}");
    assert!(out.contains("walkthrough: all "), "{out}");
    // §1: the value written on one member is read on the other, as JSON.
    assert!(
        out.contains(r#"{"action":"set","node":{"key":"/newworld","value":"Hello Docker""#),
        "{out}"
    );
    assert!(
        out.contains(r#"{"action":"get","node":{"key":"/newworld","value":"Hello Docker""#),
        "{out}"
    );
    // §4: three members, each healthy.
    assert_eq!(
        out.matches("is healthy: got healthy result from").count(),
        3,
        "{out}"
    );
    // §2 and §3 are deterministic once ports are masked.
    let calico = mask_ports(section(&out, "## 2. ", "## 4. "));
    check_golden("walkthrough-calico.txt", &calico);
}

#[test]
fn walkthrough_on_real_namespaces_as_root() {
    if !is_root() {
        assert!(
            !in_ci(),
            "CI=true runs as root: the netns walkthrough must run"
        );
        eprintln!("SKIP: --dataplane netns needs root");
        return;
    }
    let (code, out, err) = run_walkthrough(&["--dataplane", "netns"]);
    assert_eq!(
        code, 0,
        "walkthrough --dataplane netns failed:\n{out}\n{err}"
    );
    assert!(!out.contains('✘'), "a check failed:\n{out}");
    assert!(
        out.contains("profiles assigned: measured/rendered reachability equals policy::allowed"),
        "{out}"
    );
}
