//! `--dataplane netns`: §2 on real network namespaces (root).
//!
//! ```text
//!   <p>a (host dockera) eth0 192.168.1.23/24 ===veth=== eth0 192.168.1.24/24 <p>b (dockerb)
//!     cali… ⇄ <p>centos-1 eth1 10.20.10.1/32         cali… ⇄ <p>centos-3 eth1 10.20.10.3/32
//!     cali… ⇄ <p>centos-2 eth1 10.20.10.2/32
//! ```
//!
//! Every name starts with a per-run prefix (`wt<pid>-`); every address lives inside these
//! namespaces; everything is deleted on drop, even after a failure. calicoctl (this
//! process, in the root namespace) plumbs containers with `CALICOCTL_HOST_NETNS` and
//! starts one calico-node agent per host inside the host's namespace. The agents reach
//! the etcd members of §1 — which listen on 127.0.0.1 of the root namespace — through a
//! relay: inside each host namespace a copy of this program listens on the members'
//! client ports and hands each connection over a unix socket (sockets on the filesystem
//! cross namespaces) to a thread of this process that connects to the member. So the same
//! URLs work in every namespace and no address is added outside them.

use std::io::Write;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use calico_model::datastore::Datastore;
use calico_model::policy;
use calico_model::rule::Protocol;
use calico_model::store::CalicoStore;

use crate::calico_steps::{address_of, endpoint_of, Calicoctl, Matrix};
use crate::calicoctl;

/// The namespaces, relays and agents of one run.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    namespaces: std::sync::Mutex<Vec<String>>,
    relays: std::sync::Mutex<Vec<Child>>,
}

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    /// Creates the two host namespaces and the link between them.
    pub fn create() -> anyhow::Result<Lab> {
        if !calicoctl::backend::is_root() {
            bail!("--dataplane netns must run as root (it creates network namespaces)");
        }
        let prefix = format!("wt{}-", std::process::id());
        let dir =
            std::env::temp_dir().join(format!("tabby-walkthrough-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let lab = Lab {
            prefix,
            dir,
            namespaces: std::sync::Mutex::new(Vec::new()),
            relays: std::sync::Mutex::new(Vec::new()),
        };
        let (a, b) = (lab.host_ns("dockera"), lab.host_ns("dockerb"));
        for ns in [&a, &b] {
            lab.add_ns(ns)?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ])?;
        }
        sh(&[
            "ip", "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &b,
        ])?;
        for (ns, ip) in [(&a, "192.168.1.23/24"), (&b, "192.168.1.24/24")] {
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"])?;
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    fn add_ns(&self, name: &str) -> anyhow::Result<()> {
        sh(&["ip", "netns", "add", name])?;
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_string());
        Ok(())
    }

    /// The namespace of a host.
    pub fn host_ns(&self, host: &str) -> String {
        let short = host.trim_start_matches("docker");
        format!("{}{short}", self.prefix)
    }

    /// The namespace standing for a container.
    pub fn container_ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `docker run --net=none`: an empty namespace with lo up.
    pub fn add_container(&self, name: &str) -> anyhow::Result<()> {
        let ns = self.container_ns(name);
        self.add_ns(&ns)?;
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// calicoctl for these hosts; starts the relays to `endpoints`.
    pub fn calicoctl(&self, endpoints: &str) -> anyhow::Result<Calicoctl> {
        let ports: Vec<u16> = endpoints
            .split(',')
            .filter_map(|u| u.rsplit(':').next()?.trim_end_matches('/').parse().ok())
            .collect();
        for host in ["dockera", "dockerb"] {
            let ns = self.host_ns(host);
            for port in &ports {
                let sock = self.dir.join(format!("{ns}-{port}.sock"));
                let _ = std::fs::remove_file(&sock);
                let listener = UnixListener::bind(&sock)
                    .with_context(|| format!("binding {}", sock.display()))?;
                let target = format!("127.0.0.1:{port}");
                std::thread::spawn(move || {
                    for conn in listener.incoming().flatten() {
                        let target = target.clone();
                        std::thread::spawn(move || {
                            if let Ok(tcp) = TcpStream::connect(&target) {
                                pipe_unix_tcp(conn, tcp);
                            }
                        });
                    }
                });
                let exe = std::env::current_exe()?;
                let child = Command::new("ip")
                    .args(["netns", "exec", &ns])
                    .arg(exe)
                    .args(["relay", &format!("127.0.0.1:{port}")])
                    .arg(&sock)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting a relay")?;
                self.relays
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(child);
            }
        }
        // Wait until the relays listen.
        std::thread::sleep(Duration::from_millis(300));
        let prefix = self.prefix.clone();
        let run_dir = self.dir.join("run");
        let log_dir = self.dir.join("log");
        Ok(Calicoctl {
            endpoints: endpoints.to_string(),
            runtime_for: Box::new({
                let prefix = prefix.clone();
                move |host| {
                    Arc::new(calicoctl::runtime::Linux {
                        host_netns: Some(format!("{prefix}{}", host.trim_start_matches("docker"))),
                    })
                }
            }),
            env_for: Box::new(move |host| {
                vec![
                    (
                        "CALICOCTL_HOST_NETNS".into(),
                        format!("{prefix}{}", host.trim_start_matches("docker")),
                    ),
                    ("CALICO_RUN_DIR".into(), run_dir.display().to_string()),
                    ("CALICO_LOG_DIR".into(), log_dir.display().to_string()),
                    // The plugin's socket stays in the lab, not in /run/docker/plugins.
                    (
                        "CALICO_LIBNETWORK_SOCKET".into(),
                        run_dir
                            .join(format!("calico-{host}.sock"))
                            .display()
                            .to_string(),
                    ),
                ]
            }),
        })
    }

    /// Real pings between every ordered pair of containers, beside `policy::allowed`.
    /// The agents converge asynchronously: until the pings agree with the model (at most
    /// 15 s), the matrix is measured again; the last measurement is printed and returned.
    pub fn ping_matrix<D: Datastore>(
        &self,
        store: &CalicoStore<D>,
        names: &[&str],
        print: fn(&str),
    ) -> anyhow::Result<Matrix> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (m, lines) = self.ping_once(store, names)?;
            let agree = m.values().all(|(got, model)| got == model);
            if agree || std::time::Instant::now() > deadline {
                for l in lines {
                    print(&l);
                }
                return Ok(m);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn ping_once<D: Datastore>(
        &self,
        store: &CalicoStore<D>,
        names: &[&str],
    ) -> anyhow::Result<(Matrix, Vec<String>)> {
        let mut lines = Vec::new();
        let state = store.snapshot()?;
        let mut out = Matrix::new();
        for from in names {
            for to in names {
                if from == to {
                    continue;
                }
                let allowed = match (endpoint_of(&state, from), endpoint_of(&state, to)) {
                    (Some(f), Some(t)) => policy::allowed(&state, f, t, Protocol::Icmp, None),
                    _ => false,
                };
                let Some(addr) = address_of(&state, to) else {
                    out.insert((from.to_string(), to.to_string()), (false, allowed));
                    continue;
                };
                let (ok, ttl) = ping(from, addr);
                lines.push(format!(
                    "    ping {from} -> {to} ({addr}): {}{}",
                    if ok { "reply" } else { "no reply" },
                    ttl.map_or(String::new(), |t| format!(", ttl {t}"))
                ));
                out.insert((from.to_string(), to.to_string()), (ok, allowed));
            }
        }
        Ok((out, lines))
    }

    /// Stops the calico-node agents started in this lab.
    pub fn stop_agents(&self) {
        let run_dir = self.dir.join("run");
        for host in ["dockera", "dockerb"] {
            for program in ["calico-node", "calico-libnetwork"] {
                if let Some(pid) = calicoctl::node::running_pid(&run_dir, program, host) {
                    let _ = Command::new("kill").arg(pid.to_string()).status();
                    for _ in 0..100 {
                        if calicoctl::node::running_pid(&run_dir, program, host).is_none() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_agents();
        for child in self
            .relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ns in namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One ping (two tries, 1 s each) from a namespace: (reply seen, its ttl).
fn ping(from_ns: &str, addr: IpAddr) -> (bool, Option<u32>) {
    let out = Command::new("ip")
        .args([
            "netns", "exec", from_ns, "busybox", "ping", "-c", "2", "-W", "1",
        ])
        .arg(addr.to_string())
        .output();
    let Ok(out) = out else {
        return (false, None);
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let ttl = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ttl=").and_then(|t| t.parse().ok()));
    (out.status.success(), ttl)
}

fn pipe_unix_tcp(unix: UnixStream, tcp: TcpStream) {
    let (Ok(mut u2), Ok(mut t2)) = (unix.try_clone(), tcp.try_clone()) else {
        return;
    };
    let (mut u, mut t) = (unix, tcp);
    let a = std::thread::spawn(move || {
        let _ = std::io::copy(&mut u, &mut t);
        let _ = t.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut t2, &mut u2);
    let _ = u2.shutdown(std::net::Shutdown::Write);
    let _ = a.join();
}

/// The relay's other half, run inside a host namespace as `walkthrough relay <listen>
/// <unix socket>`: accept TCP, connect the unix socket, copy both ways.
pub fn relay_main(listen: &str, socket: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    for conn in listener.incoming().flatten() {
        let socket = socket.to_string();
        std::thread::spawn(move || {
            if let Ok(unix) = UnixStream::connect(&socket) {
                pipe_unix_tcp(unix, conn);
            }
        });
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
