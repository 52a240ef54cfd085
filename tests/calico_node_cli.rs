//! calico-node's command line without root: `--help` against a golden transcript
//! (`tests/golden/calico-node/help.txt`), and the errors an operator sees for bad flags
//! and an unreachable datastore with `--once` (one `calico-node: error:` line, exit 1).
//!
//! `UPDATE_GOLDEN=1 cargo test --test calico_node_cli` rewrites the golden file.

mod calico_node_support;

use std::path::PathBuf;
use std::process::Command;

use calico_node_support::{example_binary, free_port};

fn node(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(example_binary("calico-node"))
        .args(args)
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("ETCD_AUTHORITY")
        .env_remove("HOSTNAME")
        .env_remove("IP")
        .env_remove("IP6")
        .env_remove("AS")
        .env_remove("FELIX_IPTABLESBACKEND")
        .env_remove("CALICO_NODE_LOG_LEVEL")
        .output()
        .expect("run calico-node");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_matches_the_golden_transcript() {
    let (code, out, _) = node(&["--help"]);
    assert_eq!(code, Some(0));
    let golden =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/calico-node/help.txt");
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&golden, &out).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(
        out, want,
        "calico-node --help changed (UPDATE_GOLDEN=1 to accept)"
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    let (code, _, err) = node(&["--name", "h", "--ip", "10.0.0.300", "--once"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("invalid value '10.0.0.300' for '--ip <IP>'"),
        "{err}"
    );
    let (code, _, err) = node(&["--name", "h", "--ip", "10.0.0.1", "--routing", "ospf"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("[possible values: static, bird]"), "{err}");
    let (code, _, err) = node(&["--ip", "10.0.0.1", "--name", "a/b", "--once"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("calico-node: error:") && err.contains("host name"),
        "{err}"
    );
    let (code, _, err) = node(&[
        "--ip",
        "10.0.0.1",
        "--data-dir",
        "/tmp/x",
        "--etcd-endpoints",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn once_against_an_unreachable_etcd_fails_with_one_clear_line() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, err) = node(&[
        "--name",
        "h",
        "--ip",
        "10.0.0.1",
        "--etcd-endpoints",
        &url,
        "--once",
        "--log-level",
        "error",
    ]);
    assert_eq!(code, Some(1), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("calico-node: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("datastore unavailable") && lines[0].contains(&url),
        "{err}"
    );
}
