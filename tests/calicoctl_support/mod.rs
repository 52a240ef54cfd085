//! Shared by `tests/calicoctl_*.rs`: run the calicoctl example binary with a clean
//! environment, record a transcript, normalise the random endpoint ids, compare with
//! golden files under `tests/golden/calicoctl/`.

#![allow(dead_code)] // reason: each test crate uses a different subset of these helpers.

#[path = "../golden_support/mod.rs"]
mod golden_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `target/<profile>/examples/<name>` (cargo builds examples before integration tests).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "example binary {} not built (cargo test builds examples)",
        path.display()
    );
    path
}

/// A free loopback TCP port (bound to port 0 and released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// What one command printed and returned.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

/// Runs calicoctl with only `env` (plus PATH) in its environment; `line` is split on
/// spaces, and leading `NAME=value` words are environment, as a shell would take them.
pub fn calicoctl(line: &str, env: &[(String, String)], stdin: Option<&str>) -> Run {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let mut cmd = Command::new(example_binary("calicoctl"));
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    while let Some((k, v)) = words.first().and_then(|w| w.split_once('=')) {
        if !k.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            break;
        }
        cmd.env(k, v);
        words.remove(0);
    }
    cmd.args(&words)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn calicoctl");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait calicoctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One transcript entry: the command, stdout, stderr lines prefixed `2> `, the status.
pub fn entry(line: &str, r: &Run) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let n_env = words
        .iter()
        .take_while(|w| {
            w.split_once('=')
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        })
        .count();
    let env = words[..n_env]
        .iter()
        .map(|w| format!("{w} "))
        .collect::<String>();
    let mut s = format!("$ {env}calicoctl {}\n", words[n_env..].join(" "));
    s.push_str(&r.out);
    for l in r.err.lines() {
        s.push_str("2> ");
        s.push_str(l);
        s.push('\n');
    }
    s.push_str(&format!("[exit {}]\n\n", r.code));
    s
}

/// Replaces every 32-hex endpoint id by `<epN>` (numbered by first appearance), the
/// interface names and model MACs derived from it by `cali<epN>` and `<macN>`.
pub fn normalise(text: &str) -> String {
    let mut ids: Vec<String> = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i + 32 <= bytes.len() {
        let is_hex = |c: &char| c.is_ascii_digit() || ('a'..='f').contains(c);
        let window = &bytes[i..i + 32];
        let boundary_before = i == 0 || !is_hex(&bytes[i - 1]);
        let boundary_after = bytes.get(i + 32).is_none_or(|c| !is_hex(c));
        if boundary_before && boundary_after && window.iter().all(is_hex) {
            let id: String = window.iter().collect();
            if !ids.contains(&id) {
                ids.push(id);
            }
            i += 32;
        } else {
            i += 1;
        }
    }
    let mut out = text.to_string();
    for (n, id) in ids.iter().enumerate() {
        let n = n + 1;
        out = out.replace(id.as_str(), &format!("<ep{n}>"));
        out = out.replace(&format!("cali{}", &id[..11]), &format!("cali<ep{n}>"));
        let mac = format!(
            "02:{}:{}:{}:{}:{}",
            &id[0..2],
            &id[2..4],
            &id[4..6],
            &id[6..8],
            &id[8..10]
        );
        out = out.replace(&mac, &format!("<mac{n}>"));
    }
    out
}

/// Compares `actual` with `tests/golden/calicoctl/<name>`; `UPDATE_GOLDEN=1` rewrites it.
pub fn check_golden(name: &str, actual: &str) {
    golden_support::check_golden_in("calicoctl", name, actual, true);
}

/// Compares `actual` with the first `n` entries (`$ ... calicoctl ...` blocks) of a golden
/// file.
pub fn check_golden_prefix(name: &str, actual: &str, n: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/calicoctl")
        .join(name);
    let golden =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut starts: Vec<usize> = golden
        .match_indices("$ ")
        .map(|(i, _)| i)
        .filter(|i| *i == 0 || golden.as_bytes()[i - 1] == b'\n')
        .collect();
    starts.push(golden.len());
    let end = starts.get(n).copied().unwrap_or(golden.len());
    let expected = &golden[..end];
    assert!(
        expected == actual,
        "the first {n} entries of golden {} differ:\n--- expected ---\n{expected}\n--- actual ---\n{actual}",
        path.display()
    );
}

/// Whether the test must not skip for a missing tool (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_interfaces_and_macs_are_numbered() {
        let id = "1e5a4c3f0b8f11e6a0b1c2d3e4f50617";
        let text = format!("{id} cali1e5a4c3f0b8 02:1e:5a:4c:3f:0b {id}");
        assert_eq!(normalise(&text), "<ep1> cali<ep1> <mac1> <ep1>");
    }
}
