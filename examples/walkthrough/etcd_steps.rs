//! The walkthrough's etcd half: members of our etcd run in this process (each on its own
//! tokio runtime, started from the very command line the walkthrough prints, parsed by
//! `raft_kv::server::config` as the `etcd` example parses it), `etcdctl` is the etcdctl
//! example's own code run in-process, and `curl` is a minimal HTTP/1.1 client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use raft_kv::server::config::Invocation;
use raft_kv::server::{keyspace, run::run_member, ServerError};

/// `n` distinct free loopback TCP ports (bound to port 0 together, then released: etcd
/// needs the numbers up front for its URLs). Holding them all until the last is bound
/// keeps the kernel from handing the same port out twice.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// One in-process etcd member.
pub struct Member {
    /// `--name`.
    pub name: String,
    /// The first client URL.
    pub client_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Member {
    /// Starts a member from `etcd` flags and `ETCD_*` variables; waits until its client
    /// port answers `/health` (a joining member: until it is up at all).
    pub fn start(args: &[String], env: &[(String, String)]) -> anyhow::Result<Member> {
        let (invocation, _warnings) = Invocation::parse(args, env)
            .map_err(|e| anyhow::anyhow!("etcd flags rejected: {e}"))?;
        let Invocation::Run(config) = invocation else {
            bail!("etcd flags did not ask to run a member");
        };
        let name = config.name.clone();
        let client_url = config
            .advertise_client_urls
            .first()
            .map(|u| u.to_string())
            .context("no advertised client URL")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("etcd-{name}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| ServerError::io("start the runtime", "tokio", e))?;
                runtime.block_on(run_member(*config, keyspace::new_store, async move {
                    let _ = stopped.await;
                }))
            })
            .context("starting the member thread")?;
        let member = Member {
            name,
            client_url,
            stop: Some(stop),
            thread: Some(thread),
        };
        member.wait_healthy(Duration::from_secs(30))?;
        Ok(member)
    }

    /// Waits until `/health` says true.
    pub fn wait_healthy(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok((200, body)) = http(&self.client_url, "GET", "/health", None) {
                if body.contains("true") {
                    return Ok(());
                }
            }
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                bail!("member {} stopped during startup", self.name);
            }
            if Instant::now() > deadline {
                bail!("member {} not healthy within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the member and waits for it.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `curl -L <url><path> [-XPUT -d form]`: (status, body).
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let authority = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = TcpStream::connect(&authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    match form {
        Some(body) => req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None => req.push_str("\r\n"),
    }
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A `Write` whose bytes can be read back (captures in-process command output).
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Takes what was written so far.
    pub fn take(&self) -> String {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&buf).into_owned();
        buf.clear();
        text
    }
}

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the etcdctl example's code with `args` and extra environment; (status, stdout,
/// stderr).
pub fn etcdctl(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Capture::default();
    let err = Capture::default();
    let mut io = crate::cli::Io {
        out: crate::cli::Sink::new(out.clone()),
        err: crate::cli::Sink::new(err.clone()),
        stdin: Box::new(std::io::empty()),
    };
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env_vec: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| {
        env_vec
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let code = crate::cli::run(&owned, &lookup, &mut io);
    (code, out.take(), err.take())
}

/// Every (key, value) under `/` as a recursive GET of `base` shows them, sorted.
pub fn all_keys(base: &str) -> anyhow::Result<Vec<(String, String)>> {
    let (status, body) = http(base, "GET", "/v2/keys/?recursive=true&sorted=true", None)?;
    if status != 200 {
        bail!("GET / answered {status}: {body}");
    }
    let json: serde_json::Value = serde_json::from_str(&body)?;
    let mut out = Vec::new();
    fn walk(node: &serde_json::Value, out: &mut Vec<(String, String)>) {
        if let Some(v) = node.get("value").and_then(|v| v.as_str()) {
            let key = node.get("key").and_then(|k| k.as_str()).unwrap_or_default();
            out.push((key.to_string(), v.to_string()));
        }
        if let Some(children) = node.get("nodes").and_then(|n| n.as_array()) {
            for c in children {
                walk(c, out);
            }
        }
    }
    if let Some(node) = json.get("node") {
        walk(node, &mut out);
    }
    out.sort();
    Ok(out)
}

/// The `etcd` command line of a walkthrough member, on loopback ports.
pub fn member_args(
    name: &str,
    peer: u16,
    clients: (u16, u16),
    cluster: &str,
    state: &str,
    data_dir: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--name".into(),
        name.into(),
        "--initial-advertise-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--listen-client-urls".into(),
        format!(
            "http://127.0.0.1:{},http://127.0.0.1:{}",
            clients.0, clients.1
        ),
        "--advertise-client-urls".into(),
        format!("http://127.0.0.1:{}", clients.0),
        "--initial-cluster-token".into(),
        "etcd-cluster".into(),
        "--initial-cluster".into(),
        cluster.into(),
        "--initial-cluster-state".into(),
        state.into(),
    ];
    args.extend(["--data-dir".into(), data_dir.display().to_string()]);
    args
}
