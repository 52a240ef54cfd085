//! `calicoctl node`, `node stop|remove|show` and `calicoctl status` (spec/calico.md
//! §2.1, §2.9).
//!
//! Where calicoctl 0.22 ran the `calico/node` container (`docker run -d --net=host
//! --privileged`), this starts the `calico-node` executable found beside calicoctl's own,
//! detached (`setsid`), with a pidfile `<run-dir>/calico-node.<host>.pid` and its output
//! in `<log-dir>/calico-node.<host>.log`, and waits for "Calico node started
//! successfully" in that log (or for the host's registration in the datastore). With
//! `--libnetwork` it also starts `calico-libnetwork` (Docker's network + IPAM plugin on
//! `/run/docker/plugins/calico.sock`). When `CALICOCTL_HOST_NETNS=<ns>` is set the agent
//! runs inside that namespace (`ip netns exec`), which is how one machine plays several
//! hosts.
//!
//! Datastores: with etcd the agent shares the cluster with calicoctl. The embedded store
//! is one process's, so with it `calicoctl node` runs the agent once in the foreground
//! (`calico-node --once`: register, program the dataplane, exit) and says so.
//! `--runtime=none` registers the host from calicoctl itself and starts no agent (the
//! model dataplane does this too).

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use calico_model::datastore::DeleteOptions;
use calico_model::layout;
use calico_model::model::{parse_as_number, Host, Pool, DEFAULT_AS_NUMBER};

use super::args::Args;
use super::backend::{self, Selection};
use super::table::Table;
use super::{beside_exe, Ctx};

/// `calicoctl node --help`.
pub const USAGE: &str = "\
Usage:
  calicoctl node [--ip=<IP>] [--ip6=<IP6>] [--as=<AS_NUM>] [--name=<HOSTNAME>]
                 [--log-dir=<LOG_DIR>] [--run-dir=<RUN_DIR>] [--runtime=<RUNTIME>]
                 [--detach=<DETACH>] [--libnetwork]
  calicoctl node stop [--force]
  calicoctl node remove [--hostname=<HOSTNAME>] [--remove-endpoints]
  calicoctl node show

Description:
  Start the calico-node agent on this host (routes, iptables policy, BGP or static
  routing: Felix and BIRD of calico/node in one process), stop it, or remove a host's
  Calico configuration.

Options:
  --ip=<IP>                The local management address to use (autodetected when
                           omitted).
  --ip6=<IP6>              The local IPv6 management address to use.
  --as=<AS_NUM>            The default AS number for this node.
  --name=<HOSTNAME>        The Calico host id (default: $HOSTNAME, else the kernel's
                           host name).
  --log-dir=<LOG_DIR>      The directory for the agents' logs
                           [default: /var/log/calico]
  --run-dir=<RUN_DIR>      The directory for pidfiles [default: /var/run/calico]
  --runtime=<RUNTIME>      process: start the calico-node executable found beside
                           calicoctl; none: only register the host [default: process]
  --detach=<DETACH>        true: return once the node has started; false: stay
                           attached to its output until it exits [default: true]
  --libnetwork             Also start calico-libnetwork, Docker's network and IPAM
                           driver (needs etcd).
  --force                  Stop the node process even if it has active endpoints.
  --hostname=<HOSTNAME>    The host to remove (default: this host).
  --remove-endpoints       Remove the host's endpoints (releasing their addresses)
                           with it.
";

/// Dispatches `node ...`.
pub fn run(ctx: &mut Ctx<'_>, args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        ctx.print(USAGE);
        return Ok(());
    }
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["node"]
            if args
                .unexpected(&[
                    "ip",
                    "ip6",
                    "as",
                    "name",
                    "log-dir",
                    "run-dir",
                    "runtime",
                    "detach",
                    "libnetwork",
                    "node-image",
                    "libnetwork-image",
                    "no-pull",
                ])
                .is_none() =>
        {
            start(ctx, args)
        }
        ["node", "stop"] if args.unexpected(&["force", "run-dir"]).is_none() => {
            stop(ctx, args.has("force"), args.value("run-dir"))
        }
        ["node", "remove"]
            if args
                .unexpected(&["hostname", "remove-endpoints", "run-dir"])
                .is_none() =>
        {
            remove(
                ctx,
                args.value("hostname"),
                args.has("remove-endpoints"),
                args.value("run-dir"),
            )
        }
        ["node", "show"] if args.unexpected(&[]).is_none() => show(ctx),
        _ => Err(ctx.usage(USAGE)),
    }
}

fn dir_or_default(ctx: &Ctx<'_>, flag: Option<&str>, var: &str, root_default: &str) -> PathBuf {
    if let Some(f) = flag {
        return PathBuf::from(f);
    }
    if let Some(v) = (ctx.env)(var).filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    if backend::is_root() {
        PathBuf::from(root_default)
    } else {
        std::env::temp_dir().join(format!(
            "calico-{}",
            Path::new(root_default)
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy().into_owned())
        ))
    }
}

fn run_dir(ctx: &Ctx<'_>, flag: Option<&str>) -> PathBuf {
    dir_or_default(ctx, flag, "CALICO_RUN_DIR", "/var/run/calico")
}

fn pidfile(run_dir: &Path, program: &str, host: &str) -> PathBuf {
    run_dir.join(format!("{program}.{host}.pid"))
}

/// The pid in a pidfile, if that process is alive and is `program`.
pub fn running_pid(run_dir: &Path, program: &str, host: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pidfile(run_dir, program, host)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    // A zombie has an empty cmdline: it is not running.
    cmdline.contains(program).then_some(pid)
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        if !alive {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first global IPv4 address not on a container/tunnel interface (calico/node's
/// autodetection).
fn autodetect_ip(ctx: &Ctx<'_>) -> Option<Ipv4Addr> {
    let mut cmd = match (ctx.env)("CALICOCTL_HOST_NETNS").filter(|n| !n.is_empty()) {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["-n", &ns]);
            c
        }
        None => Command::new("ip"),
    };
    let out = cmd
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let skip = [
        "docker", "cbr", "virbr", "lxcbr", "veth", "cali", "tunl", "flannel", "vxlan",
    ];
    text.lines().find_map(|line| {
        let mut w = line.split_whitespace();
        let iface = w.nth(1)?;
        if skip.iter().any(|p| iface.starts_with(p)) {
            return None;
        }
        let addr = w.skip_while(|x| *x != "inet").nth(1)?;
        addr.split('/').next()?.parse().ok()
    })
}

/// What calico/node's startup does to the datastore, done from calicoctl (the model
/// dataplane and `--runtime=none`).
pub fn register_in_process(
    ctx: &mut Ctx<'_>,
    host: &Host,
    no_default_pools: bool,
) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let guid = super::container::new_endpoint_id();
    store.ensure_global_config(&guid)?;
    let state = store.snapshot()?;
    if !no_default_pools && !state.pools.keys().any(|p| p.is_ipv4()) {
        store.add_pools(&[Pool::new("192.168.0.0/16".parse()?)])?;
    }
    if let Some(rec) = state.hosts.get(&host.name) {
        if rec.ipv4().is_some_and(|ip| ip != host.ipv4) {
            ctx.say(format!(
                "WARNING: Hostname '{}' is already in use with IP address {}. Calico requires each compute host to have a unique hostname.",
                host.name,
                rec.ipv4().map_or(String::new(), |i| i.to_string())
            ));
        }
    }
    match store.register_host(host) {
        Ok(()) => Ok(()),
        Err(calico_model::Error::Invalid { reason, value, .. })
            if reason.contains("already in use") =>
        {
            Err(ctx.fail(1, format!("ERROR: IP address {value} is {reason}")))
        }
        Err(e) => Err(e.into()),
    }
}

fn start(ctx: &mut Ctx<'_>, args: &Args) -> anyhow::Result<()> {
    let mut bad = Vec::new();
    let ip = match args.value("ip") {
        Some(text) => match text.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                bad.push("Invalid IPv4 address specified with --ip argument.".to_string());
                None
            }
        },
        None => None,
    };
    let ip6 = match args.value("ip6") {
        Some(text) => match text.parse::<Ipv6Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                bad.push("Invalid IPv6 address specified with --ip6 argument.".to_string());
                None
            }
        },
        None => None,
    };
    let as_number = match args.value("as") {
        Some(text) => match parse_as_number(text) {
            Ok(n) => Some(n),
            Err(_) => {
                bad.push("Invalid AS Number specified.".to_string());
                None
            }
        },
        None => None,
    };
    let detach = match args.value("detach").unwrap_or("true") {
        "true" => true,
        "false" => false,
        _ => {
            bad.push("Invalid value for --detach: it must be true or false.".to_string());
            true
        }
    };
    if !detach && args.has("libnetwork") {
        bad.push("The only valid value for --detach is 'true' when using libnetwork".into());
    }
    let runtime = args.value("runtime").unwrap_or("process").to_string();
    if !matches!(runtime.as_str(), "process" | "docker" | "none") {
        bad.push(format!(
            "Invalid runtime {runtime:?}: it must be process or none."
        ));
    }
    if !bad.is_empty() {
        return Err(ctx.fail(1, bad.join("\n")));
    }
    let name = match args.value("name") {
        Some(n) => n.to_string(),
        None => ctx.hostname()?,
    };
    if calico_model::names::validate_key_segment("host name", &name).is_err() {
        return Err(ctx.fail(1, format!("Invalid host name {name:?}.")));
    }
    let ip = match ip.or_else(|| autodetect_ip(ctx)) {
        Some(ip) => {
            if args.value("ip").is_none() {
                ctx.say(format!("No IP provided. Using detected IP: {ip}"));
            }
            ip
        }
        None => return Err(ctx.fail(
            1,
            "Couldn't autodetect a management IP address. Please provide an IP address with --ip.",
        )),
    };
    let host = Host {
        name: name.clone(),
        ipv4: ip,
        ipv6: ip6,
        as_number,
    };
    let no_default_pools = (ctx.env)("NO_DEFAULT_POOLS").is_some_and(|v| v == "true");
    if ctx.runtime.kind() == "model" || runtime == "none" {
        register_in_process(ctx, &host, no_default_pools)?;
        if ctx.runtime.kind() == "model" {
            ctx.say(format!(
                "Calico node {name} registered with IP {ip} (model dataplane: the datastore decides, no agent runs)"
            ));
        } else {
            ctx.say(format!(
                "Calico node {name} registered with IP {ip} (no agent started)"
            ));
        }
        return Ok(());
    }
    ctx.enforce_root()?;
    let Some(node_exe) = beside_exe("calico-node") else {
        let here = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        return Err(ctx.fail(
            1,
            format!(
                "ERROR: calico-node executable not found beside calicoctl in {}. Build it: cargo build --example calico-node",
                here.display()
            ),
        ));
    };
    let selection = ctx.selection().cloned();
    let mut node_args: Vec<String> =
        vec!["--name".into(), name.clone(), "--ip".into(), ip.to_string()];
    if let Some(v6) = ip6 {
        node_args.extend(["--ip6".into(), v6.to_string()]);
    }
    if let Some(n) = as_number {
        node_args.extend(["--as".into(), n.to_string()]);
    }
    let embedded_dir = match &selection {
        Some(Selection::Etcd(urls)) => {
            node_args.extend(["--etcd-endpoints".into(), urls.join(",")]);
            None
        }
        Some(Selection::Embedded(dir)) => {
            node_args.extend(["--data-dir".into(), dir.display().to_string()]);
            Some(dir.clone())
        }
        None => {
            return Err(ctx.fail(
                1,
                "calicoctl node needs a datastore the agent can open: configure etcd (--etcd-endpoints).",
            ))
        }
    };
    if args.has("libnetwork") && embedded_dir.is_some() {
        return Err(ctx.fail(
            1,
            "--libnetwork needs etcd (--etcd-endpoints or ETCD_ENDPOINTS): the embedded datastore belongs to one process.",
        ));
    }
    let host_netns = (ctx.env)("CALICOCTL_HOST_NETNS").filter(|n| !n.is_empty());
    let log_dir = dir_or_default(
        ctx,
        args.value("log-dir"),
        "CALICO_LOG_DIR",
        "/var/log/calico",
    );
    let run_dir = run_dir(ctx, args.value("run-dir"));
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("creating the log directory {}", log_dir.display()))?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("creating the run directory {}", run_dir.display()))?;
    // Replace a previous agent (calicoctl force-removed the old calico-node container).
    for program in ["calico-node", "calico-libnetwork"] {
        if let Some(pid) = running_pid(&run_dir, program, &name) {
            kill(pid);
        }
    }
    if let Some(dir) = embedded_dir {
        node_args.push("--once".into());
        ctx.say(format!(
            "Running {}",
            shown(host_netns.as_deref(), &node_exe, &node_args)
        ));
        run_once(ctx, host_netns.as_deref(), &node_exe, &node_args)?;
        // Remember how to run it again: later commands that change the datastore re-run
        // the agent once, so the dataplane follows them (see `resync_embedded`).
        let marker = EmbeddedNode {
            netns: host_netns.clone(),
            exe: node_exe.clone(),
            args: node_args.clone(),
        };
        std::fs::write(marker_path(&dir, &name), serde_json::to_string(&marker)?)
            .with_context(|| format!("writing the node marker in {}", dir.display()))?;
        ctx.say(format!(
            "Calico node ran once over the embedded datastore in {}: the embedded store belongs to one process, so no agent stays running; calicoctl runs it again after each change. Use etcd (--etcd-endpoints) for a running agent.",
            dir.display()
        ));
        return Ok(());
    }
    let log_path = log_dir.join(format!("calico-node.{name}.log"));
    let pid = spawn(
        ctx,
        host_netns.as_deref(),
        &node_exe,
        &node_args,
        &log_path,
        &pidfile(&run_dir, "calico-node", &name),
    )?;
    ctx.say(shown(host_netns.as_deref(), &node_exe, &node_args));
    ctx.say(format!("Calico node is running with id: {pid}"));
    ctx.say("Waiting for successful startup");
    wait_started(ctx, pid, &log_path, &host)?;
    ctx.say("Calico node started successfully");
    if args.has("libnetwork") {
        let Some(plugin_exe) = beside_exe("calico-libnetwork") else {
            return Err(ctx.fail(
                1,
                "ERROR: calico-libnetwork executable not found beside calicoctl. Build it: cargo build --example calico-libnetwork",
            ));
        };
        let mut plugin_args = vec!["--hostname".to_string(), name.clone()];
        if let Some(Selection::Etcd(urls)) = &selection {
            plugin_args.extend(["--etcd-endpoints".into(), urls.join(",")]);
        }
        let socket = (ctx.env)("CALICO_LIBNETWORK_SOCKET")
            .unwrap_or_else(|| "/run/docker/plugins/calico.sock".into());
        plugin_args.extend(["--socket".into(), socket.clone()]);
        let log_path = log_dir.join(format!("calico-libnetwork.{name}.log"));
        let pid = spawn(
            ctx,
            None,
            &plugin_exe,
            &plugin_args,
            &log_path,
            &pidfile(&run_dir, "calico-libnetwork", &name),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Path::new(&socket).exists() {
            if Instant::now() > deadline || !alive(pid) {
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(ctx.fail(
                    1,
                    format!("ERROR: calico-libnetwork did not start (no socket {socket}):\n{tail}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ctx.say(format!(
            "Calico libnetwork driver is running with id: {pid}"
        ));
    }
    if !detach {
        // Stay attached: follow the log until the agent exits.
        let mut shown_len = 0;
        while running_pid(&run_dir, "calico-node", &name).is_some() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.len() > shown_len {
                ctx.print(&text[shown_len..]);
                shown_len = text.len();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

fn wrap(netns: Option<&str>, exe: &Path, args: &[String]) -> Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(args);
    cmd
}

fn shown(netns: Option<&str>, exe: &Path, args: &[String]) -> String {
    let prefix = netns.map_or(String::new(), |ns| format!("ip netns exec {ns} "));
    format!("{prefix}{} {}", exe.display(), args.join(" "))
}

/// Starts a detached agent (its own session, output to `log`), writes its pidfile.
fn spawn(
    ctx: &mut Ctx<'_>,
    netns: Option<&str>,
    exe: &Path,
    args: &[String],
    log: &Path,
    pidfile: &Path,
) -> anyhow::Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let inner = wrap(netns, exe, args);
    let mut cmd = Command::new("setsid");
    cmd.arg(inner.get_program()).args(inner.get_args());
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    for (k, v) in [
        ("HOSTNAME", (ctx.env)("HOSTNAME")),
        ("RUST_LOG", (ctx.env)("RUST_LOG")),
    ] {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id();
    std::fs::write(pidfile, format!("{pid}\n"))
        .with_context(|| format!("writing {}", pidfile.display()))?;
    // The child outlives this process; std's Child does not kill on drop.
    drop(child);
    Ok(pid)
}

fn wait_started(ctx: &mut Ctx<'_>, pid: u32, log: &Path, host: &Host) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("Calico node started successfully")
            || text.contains("dataplane programmed")
        {
            return Ok(());
        }
        if !alive(pid) {
            return Err(ctx.fail(
                1,
                format!("ERROR: calico-node exited during startup:\n{text}"),
            ));
        }
        // An agent that does not print the startup line: registered (this run may only
        // have refreshed an older registration) and still alive after 3 s.
        if started.elapsed() > Duration::from_secs(3) {
            let registered = ctx
                .store()
                .ok()
                .and_then(|s| s.snapshot().ok())
                .and_then(|st| st.hosts.get(&host.name).and_then(|h| h.ipv4()))
                == Some(host.ipv4);
            if registered {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(ctx.fail(
                1,
                format!("ERROR: calico-node did not start within 30 s:\n{text}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How `calicoctl node` ran the agent over the embedded store (so later commands can
/// run it again).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct EmbeddedNode {
    netns: Option<String>,
    exe: PathBuf,
    args: Vec<String>,
}

fn marker_path(data_dir: &Path, host: &str) -> PathBuf {
    data_dir.join(format!("calicoctl-node.{host}.json"))
}

/// Runs `calico-node --once` in the foreground (the embedded store must be free).
fn run_once(
    ctx: &mut Ctx<'_>,
    netns: Option<&str>,
    exe: &Path,
    args: &[String],
) -> anyhow::Result<()> {
    // Release our own handle on the store first: the agent opens it.
    ctx.release_datastore();
    let out = wrap(netns, exe, args)
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    if !out.status.success() {
        let _ = ctx.io.err.write_all(&out.stderr);
        return Err(ctx.fail(1, "ERROR: calico-node failed (see above)."));
    }
    Ok(())
}

/// After a command changed the embedded datastore: if `calicoctl node` ran the agent
/// for this host over this store, run it once more so the dataplane follows.
pub fn resync_embedded(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let Some(Selection::Embedded(dir)) = ctx.selection().cloned() else {
        return Ok(());
    };
    if ctx.runtime.kind() != "linux" {
        return Ok(());
    }
    let host = ctx.hostname()?;
    let Ok(text) = std::fs::read_to_string(marker_path(&dir, &host)) else {
        return Ok(());
    };
    let node: EmbeddedNode = serde_json::from_str(&text)
        .with_context(|| format!("reading {}", marker_path(&dir, &host).display()))?;
    run_once(ctx, node.netns.as_deref(), &node.exe, &node.args)
}

/// Whether a process we started is still running (not gone, not a zombie). Unlike
/// [`running_pid`] this does not look at the command line, which is still the parent's
/// between `fork` and `exec`.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn stop(ctx: &mut Ctx<'_>, force: bool, run_dir_flag: Option<&str>) -> anyhow::Result<()> {
    let host = ctx.hostname()?;
    if !force {
        let state = ctx.store()?.snapshot()?;
        if state.endpoints.keys().any(|k| k.host == host) {
            return Err(ctx.fail(
                1,
                "Current host has active endpoints so can't be stopped. Force with --force",
            ));
        }
    }
    let dir = run_dir(ctx, run_dir_flag);
    for program in ["calico-node", "calico-libnetwork"] {
        if let Some(pid) = running_pid(&dir, program, &host) {
            kill(pid);
        }
        let _ = std::fs::remove_file(pidfile(&dir, program, &host));
    }
    ctx.say("Node stopped");
    Ok(())
}

fn remove(
    ctx: &mut Ctx<'_>,
    hostname: Option<&str>,
    remove_endpoints: bool,
    run_dir_flag: Option<&str>,
) -> anyhow::Result<()> {
    let local = ctx.hostname()?;
    let host = hostname.map_or_else(|| local.clone(), String::from);
    if host == local {
        let dir = run_dir(ctx, run_dir_flag);
        if ["calico-node", "calico-libnetwork"]
            .iter()
            .any(|p| running_pid(&dir, p, &host).is_some())
        {
            return Err(ctx.fail(
                1,
                "The calico-node agent (or calico-libnetwork) is running on this host. Stop it first with: calicoctl node stop",
            ));
        }
    }
    let store = ctx.store()?;
    let state = store.snapshot()?;
    let endpoints: Vec<_> = state
        .endpoints
        .iter()
        .filter(|(k, _)| k.host == host)
        .collect();
    if !endpoints.is_empty() && !remove_endpoints {
        return Err(ctx.fail(
            1,
            "The node has active Calico endpoints so can't be deleted. Force with --remove-endpoints. Note that this will not release the IP addresses of the endpoints' containers' network namespaces.",
        ));
    }
    let ipam = ctx.ipam()?;
    for (_, ep) in &endpoints {
        if host == local {
            let _ = ctx.runtime.detach(&ep.name);
        }
        let addrs: Vec<_> = ep.addresses().collect();
        ipam.release_ips(&addrs)?;
    }
    ipam.remove_host(&host)?;
    let ds = ctx.ds()?;
    let tunnel_key = layout::host_config(&host, "IpInIpTunnelAddr");
    if let Some((addr, _)) = ds.get_value(&tunnel_key)? {
        if let Ok(a) = addr.parse() {
            ipam.release_ips(&[a])?;
        }
    }
    let recursive = DeleteOptions {
        recursive: true,
        ..DeleteOptions::default()
    };
    for dir in [layout::bgp_host_dir(&host), layout::host_dir(&host)] {
        match ds.delete(&dir, &recursive) {
            Ok(_) | Err(calico_model::Error::KeyNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let ipam_host = format!("{}/{host}", layout::IPAM_HOSTS_DIR);
    match ds.delete(&ipam_host, &recursive) {
        Ok(_) | Err(calico_model::Error::KeyNotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    ctx.say("Node configuration removed");
    Ok(())
}

fn show(ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let state = ctx.store()?.snapshot()?;
    let global_as = state.bgp_as.unwrap_or(DEFAULT_AS_NUMBER);
    let mut table = Table::new(&[
        "Hostname",
        "Bird IPv4",
        "Bird IPv6",
        "AS Num",
        "BGP Peers v4",
        "BGP Peers v6",
    ]);
    for (name, rec) in &state.hosts {
        table.row(vec![
            name.clone(),
            rec.bgp_ipv4.map(|a| a.to_string()).unwrap_or_default(),
            rec.bgp_ipv6.map(|a| a.to_string()).unwrap_or_default(),
            match rec.as_number {
                Some(n) => n.to_string(),
                None => format!("{global_as} (inherited)"),
            },
            String::new(),
            String::new(),
        ]);
    }
    ctx.print(table.render());
    Ok(())
}

/// `calicoctl status`.
pub fn status(ctx: &mut Ctx<'_>, args: &Args) -> anyhow::Result<()> {
    if args.unexpected(&["run-dir", "runtime"]).is_some() {
        return Err(ctx.usage("Usage:\n  calicoctl status [--run-dir=<RUN_DIR>]\n"));
    }
    let host = ctx.hostname()?;
    let state = ctx.store()?.snapshot()?;
    if ctx.runtime.kind() == "model" {
        ctx.say("Model dataplane: no calico-node agent runs; the datastore decides.");
    } else {
        let dir = run_dir(ctx, args.value("run-dir"));
        match running_pid(&dir, "calico-node", &host) {
            Some(pid) => ctx.say(format!(
                "calico-node process is running. Status: Up (pid {pid})"
            )),
            None => return Err(ctx.fail(1, "calico-node container not running")),
        }
        ctx.say(format!(
            "Running felix version tabby {}",
            env!("CARGO_PKG_VERSION")
        ));
    }
    let Some(me) = state.hosts.get(&host) else {
        return Err(ctx.fail(1, format!("Host {host} is not registered with Calico.")));
    };
    let global_as = state.bgp_as.unwrap_or(DEFAULT_AS_NUMBER);
    let as_text = match me.as_number {
        Some(n) => n.to_string(),
        None => format!("{global_as} (inherited)"),
    };
    ctx.say("");
    ctx.say("IPv4 BGP status");
    ctx.say(format!(
        "IP: {}    AS Number: {as_text}",
        me.bgp_ipv4.map(|a| a.to_string()).unwrap_or_default()
    ));
    let mut table = Table::new(&["Peer address", "Peer type", "State", "Since", "Info"]);
    if state.node_mesh.unwrap_or(true) {
        for (name, rec) in &state.hosts {
            if name == &host {
                continue;
            }
            if let Some(ip) = rec.bgp_ipv4 {
                table.row(vec![
                    ip.to_string(),
                    "node-to-node mesh".into(),
                    "-".into(),
                    "-".into(),
                    "see calico-node's log for BIRD session state".into(),
                ]);
            }
        }
    }
    ctx.print(table.render());
    Ok(())
}
