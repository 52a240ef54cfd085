//! Shared helpers of the end-to-end etcd tests: find the example binaries, start and stop
//! clusters of our `etcd` on loopback, make HTTP requests.

#![allow(dead_code)] // reason: each test file uses a different subset of these helpers

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/examples/<name>` (cargo builds examples before running tests).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "example binary {} not built (run cargo test, which builds examples)",
        path.display()
    );
    path
}

/// The shared/ reference directory beside the repository.
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The real etcdctl 3.4, if installed.
pub fn real_etcdctl() -> Option<PathBuf> {
    ["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A minimal HTTP/1.1 request; returns (status, headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((content_type, data)) = body {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{data}",
            data.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// A cluster of our `etcd` example on loopback; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub members: Vec<(String, u16, u16, Child)>,
}

impl Cluster {
    /// Starts `n` members: clients on `client_base + i`, peers on `peer_base + i`, and
    /// waits until each reports healthy.
    pub fn start(label: &str, n: usize, client_base: u16, peer_base: u16) -> Cluster {
        let dir = PathBuf::from(format!("/tmp/tabby-etcd-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let initial: Vec<String> = (0..n)
            .map(|i| format!("{label}{i}=http://127.0.0.1:{}", peer_base + i as u16))
            .collect();
        let mut members = Vec::new();
        for i in 0..n {
            let name = format!("{label}{i}");
            let client = client_base + i as u16;
            let peer = peer_base + i as u16;
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
            let child = Command::new(example_binary("etcd"))
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(format!("{name}.etcd")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", &format!("tabby-{label}")])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::from(log.try_clone().expect("log")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn etcd example");
            members.push((name, client, peer, child));
        }
        let cluster = Cluster { dir, members };
        for (_, client, _, _) in &cluster.members {
            cluster.wait_healthy(*client);
        }
        cluster
    }

    fn wait_healthy(&self, client: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", client)) {
                drop(stream);
                let (status, _, body) =
                    http(&format!("127.0.0.1:{client}"), "GET", "/health", None);
                if status == 200 && body.contains("\"true\"") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "member on {client} not healthy in 30 s\n{}",
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Client URLs joined by commas.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|(_, client, _, _)| format!("http://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The last lines of every member's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for (name, _, _, _) in &self.members {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(20);
            out.push_str(&format!("== {name}\n{}\n", lines[from..].join("\n")));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, _, _, child) in &mut self.members {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for (_, _, _, child) in &mut self.members {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
