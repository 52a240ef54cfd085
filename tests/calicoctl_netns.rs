//! calicoctl on the Linux dataplane, as root: the binary plumbs real network namespaces.
//!
//! A host namespace (`CALICOCTL_HOST_NETNS`) and two container namespaces; the embedded
//! datastore in a temporary directory. `calicoctl node` runs the calico-node agent once
//! inside the host namespace (the embedded store is one process's); `container add`
//! must leave the veth calicoctl 0.22 made — `cali<11>` up on the host, `eth1` in the
//! container with `<ip>/32`, `169.254.1.1` on-link and the default route through it, the
//! endpoint's MAC = the container interface's — `ip add|remove` must change the
//! container's addresses, and `container remove` must delete the veth and release the
//! address. Policy is real too: calicoctl re-runs the agent after each change, so two
//! containers ping each other only while they share a profile. Unique names, everything
//! deleted by a guard even on failure.
//!
//! Not root: skips with a message, except under `CI=true` (scripts/test.sh runs as root).

#[path = "calicoctl_support/mod.rs"]
mod calicoctl_support;

use std::process::Command;

use calicoctl_support::{calicoctl, example_binary, in_ci, is_root, Run};

/// Deletes the namespaces it created.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("ip netns add")
            .success();
        assert!(ok, "ip netns add {name}");
        self.0.push(name.to_string());
        ip(name, &["link", "set", "lo", "up"]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One ping (two tries, 1 s each) from a namespace.
fn ping(from_ns: &str, addr: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", from_ns, "busybox", "ping", "-c", "2", "-W", "1", addr,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ok(r: &Run) {
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn container_plumbing_on_real_namespaces() {
    if !is_root() {
        assert!(!in_ci(), "CI=true runs as root: this test must run");
        eprintln!("SKIP: needs root (network namespaces)");
        return;
    }
    // calico-node is looked up beside calicoctl.
    let _ = example_binary("calico-node");
    let tag = format!("cc{}", std::process::id());
    let (host, c1, c2) = (format!("{tag}-h"), format!("{tag}-c1"), format!("{tag}-c2"));
    let mut guard = Namespaces(Vec::new());
    for ns in [&host, &c1, &c2] {
        guard.add(ns);
    }
    ip(&host, &["link", "add", "eth0", "type", "dummy"]);
    ip(&host, &["addr", "add", "10.77.0.1/24", "dev", "eth0"]);
    ip(&host, &["link", "set", "eth0", "up"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![
        (
            "CALICO_DATA_DIR".to_string(),
            dir.path().join("store").display().to_string(),
        ),
        ("CALICOCTL_HOST_NETNS".to_string(), host.clone()),
        ("HOSTNAME".to_string(), "hosta".to_string()),
        (
            "CALICO_RUN_DIR".to_string(),
            dir.path().join("run").display().to_string(),
        ),
        (
            "CALICO_LOG_DIR".to_string(),
            dir.path().join("log").display().to_string(),
        ),
    ];

    let r = calicoctl("node --ip=10.77.0.1", &env, None);
    ok(&r);
    assert!(
        r.out.contains("ran once over the embedded datastore"),
        "{r:?}"
    );
    ok(&calicoctl(
        "pool add 10.20.10.0/24 --nat-outgoing",
        &env,
        None,
    ));
    ok(&calicoctl("profile add p1", &env, None));

    let r = calicoctl(&format!("container add {c1} 10.20.10.1"), &env, None);
    ok(&r);
    assert_eq!(r.out, format!("IP 10.20.10.1 added to {c1}\n"));
    let r = calicoctl(&format!("container add {c2} ipv4"), &env, None);
    ok(&r);
    let c2_ip = r
        .out
        .split_whitespace()
        .nth(1)
        .expect("IP <addr> added to ...")
        .to_string();
    let r = calicoctl(&format!("container add {c2} 10.20.10.5"), &env, None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("already been configured"), "{r:?}");

    // The container side.
    let addrs = ip(&c1, &["-o", "addr", "show", "dev", "eth1"]);
    assert!(addrs.contains("10.20.10.1/32"), "{addrs}");
    let routes = ip(&c1, &["route", "show"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth1"),
        "{routes}"
    );
    assert!(routes.contains("169.254.1.1 dev eth1"), "{routes}");
    let link = ip(&c1, &["-o", "link", "show", "dev", "eth1"]);
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("container MAC")
        .to_string();

    // The endpoint as stored, and the host side of its veth.
    let r = calicoctl(&format!("container {c1} endpoint show"), &env, None);
    ok(&r);
    assert!(
        r.out.contains(&mac),
        "endpoint MAC is the container's: {r:?}"
    );
    let r = calicoctl(&format!("container {c1} endpoint-id show"), &env, None);
    ok(&r);
    let endpoint_id = r.out.trim().to_string();
    assert_eq!(endpoint_id.len(), 32, "{r:?}");
    let host_if = format!("cali{}", &endpoint_id[..11]);
    let host_link = ip(&host, &["-o", "link", "show", "dev", &host_if]);
    assert!(
        host_link.contains("UP") || host_link.contains("state LOWERLAYERDOWN"),
        "{host_if} on the host: {host_link}"
    );

    // Policy, programmed by calico-node (run again by calicoctl after each change over
    // the embedded store): no profile, no traffic; one shared profile, traffic.
    assert!(!ping(&c1, &c2_ip), "no profiles yet: c1 must not reach c2");
    ok(&calicoctl(
        &format!("container {c1} profile append p1"),
        &env,
        None,
    ));
    ok(&calicoctl(
        &format!("container {c2} profile append p1"),
        &env,
        None,
    ));
    assert!(ping(&c1, &c2_ip), "both in p1: c1 reaches c2 ({c2_ip})");
    ok(&calicoctl(
        &format!("container {c2} profile remove p1"),
        &env,
        None,
    ));
    assert!(!ping(&c1, &c2_ip), "c2 left p1: c1 must not reach it");

    // ip add / remove change the container's addresses.
    ok(&calicoctl(
        &format!("container {c1} ip add 10.20.10.9"),
        &env,
        None,
    ));
    assert!(ip(&c1, &["-o", "addr", "show", "dev", "eth1"]).contains("10.20.10.9/32"));
    let r = calicoctl(
        &format!("container {c1} ip add 10.20.10.10 --interface=eth7"),
        &env,
        None,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("Interface provided does not exist"), "{r:?}");
    ok(&calicoctl(
        &format!("container {c1} ip remove 10.20.10.9"),
        &env,
        None,
    ));
    assert!(!ip(&c1, &["-o", "addr", "show", "dev", "eth1"]).contains("10.20.10.9/32"));
    let r = calicoctl("ipam info 10.20.10.9", &env, None);
    assert_eq!(r.out, "IP 10.20.10.9 is not currently assigned\n");

    // remove: veth gone from both sides, address released.
    let r = calicoctl(&format!("container remove {c1}"), &env, None);
    ok(&r);
    assert_eq!(r.out, format!("Removed Calico from {c1}\n"));
    assert!(ip(&host, &["-o", "link", "show", "dev", &host_if]).is_empty());
    assert!(ip(&c1, &["-o", "link", "show", "dev", "eth1"]).is_empty());
    let r = calicoctl("ipam info 10.20.10.1", &env, None);
    assert_eq!(r.out, "IP 10.20.10.1 is not currently assigned\n");

    // A namespace that does not exist is not a container.
    let r = calicoctl(&format!("container add {tag}-nope 10.20.10.7"), &env, None);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.out, format!("Container {tag}-nope was not found.\n"));
    drop(guard);
}

/// Removes the Docker containers it names.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("docker")
                .args(["rm", "-f", c])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn docker(args: &[&str]) -> (bool, String) {
    match Command::new("docker").args(args).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ),
        Err(e) => (false, e.to_string()),
    }
}

#[test]
fn docker_containers_are_resolved_and_plumbed() {
    if !is_root() {
        assert!(!in_ci(), "CI=true runs as root: this test must run");
        eprintln!("SKIP: needs root (network namespaces)");
        return;
    }
    let (up, why) = docker(&["info", "--format", "{{.ServerVersion}}"]);
    if !up {
        assert!(
            !in_ci(),
            "CI=true but the Docker Engine is not usable: {why}"
        );
        eprintln!("SKIP: Docker Engine not usable: {why}");
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/docker-image.sh");
    let image = Command::new(&script)
        .output()
        .expect("run scripts/docker-image.sh");
    assert!(image.status.success(), "{image:?}");
    let image = String::from_utf8_lossy(&image.stdout).trim().to_string();

    let tag = format!("ccd{}", std::process::id());
    let (name, hostnet, stopped) = (
        format!("{tag}-c"),
        format!("{tag}-hostnet"),
        format!("{tag}-stopped"),
    );
    let _containers = Containers(vec![name.clone(), hostnet.clone(), stopped.clone()]);
    let (ok_run, out) = docker(&["run", "-d", "--net=none", "--name", &name, &image]);
    assert!(ok_run, "docker run: {out}");
    let (ok_run, out) = docker(&["run", "-d", "--net=host", "--name", &hostnet, &image]);
    assert!(ok_run, "docker run --net=host: {out}");
    let (ok_run, out) = docker(&["create", "--net=none", "--name", &stopped, &image]);
    assert!(ok_run, "docker create: {out}");
    let (_, id) = docker(&["inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(id.len(), 64, "{id}");

    let host = format!("{tag}-h");
    let mut guard = Namespaces(Vec::new());
    guard.add(&host);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![
        (
            "CALICO_DATA_DIR".to_string(),
            dir.path().join("store").display().to_string(),
        ),
        ("CALICOCTL_HOST_NETNS".to_string(), host.clone()),
        ("HOSTNAME".to_string(), "hosta".to_string()),
    ];
    ok(&calicoctl("pool add 10.20.10.0/24", &env, None));
    let r = calicoctl(&format!("container add {name} 10.20.10.1"), &env, None);
    ok(&r);
    let (_, addrs) = docker(&["exec", &name, "ip", "-o", "addr", "show", "dev", "eth1"]);
    assert!(addrs.contains("10.20.10.1/32"), "{addrs}");
    let r = calicoctl("endpoint show --detailed", &env, None);
    ok(&r);
    assert!(
        r.out.contains(" docker ") && r.out.contains(&id),
        "orchestrator docker, workload = the full container id: {r:?}"
    );
    let r = calicoctl(&format!("container add {hostnet} 10.20.10.2"), &env, None);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.out,
        format!("Can't add {hostnet} to Calico because it is running NetworkMode = host.\n")
    );
    let r = calicoctl(&format!("container add {stopped} 10.20.10.3"), &env, None);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.out, format!("{stopped} is not currently running.\n"));
    let r = calicoctl(&format!("container remove {name}"), &env, None);
    ok(&r);
    let (_, links) = docker(&["exec", &name, "ip", "-o", "link"]);
    assert!(!links.contains("eth1"), "{links}");
    drop(guard);
}
