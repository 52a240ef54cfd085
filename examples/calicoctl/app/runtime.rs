//! Where containers live and how calicoctl plumbs them: the OS side of `container add`,
//! `container remove` and `container <C> ip add|remove`.
//!
//! Two runtimes:
//! * [`Linux`] (the default): a container is a Docker container (name or id prefix,
//!   resolved with `docker inspect`; its network namespace is `/proc/<pid>/ns/net`), or
//!   else a named network namespace (`ip netns`, `/run/netns/<name>`), or an absolute
//!   path to a namespace file. `container add` does what calicoctl 0.22 did: `ip link
//!   add cali<11> type veth peer name tmp<11>`, host side up, the peer moved into the
//!   container and renamed (`eth1` unless `--interface`), `<ip>/32` (`/128`) on it,
//!   `169.254.1.1 dev <if> scope link` and `default via 169.254.1.1` (IPv4). The host
//!   side is the namespace calicoctl runs in, or the named namespace in
//!   `CALICOCTL_HOST_NETNS` (how tests and the walkthrough make several "hosts" on one
//!   machine).
//! * [`Model`]: nothing is done to this machine. A container is just its name; the MAC is
//!   derived from the endpoint id. The datastore alone then decides reachability
//!   (calico-model's simulator): what the walkthrough's default mode and the golden
//!   tests use, without root.
//!
//! Orchestrator ids: `docker` with the full 64-hex container id for Docker containers
//! (as calicoctl 0.22), `namespace` with the namespace name (or the path with `/` → `-`)
//! for namespaces. Calico 0.22 wrote netns-path endpoints under `docker` but looked them
//! up under `namespace`, so they could not be removed; this writes and reads `namespace`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use ipnetwork::IpNetwork;

use calico_model::model::MacAddr;

/// Calico's link-local gateway for workloads.
pub const GATEWAY: &str = "169.254.1.1";

/// A container, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// As the user named it.
    pub name: String,
    /// `docker` or `namespace`.
    pub orchestrator: String,
    /// Workload id: the 64-hex Docker id, or the namespace name.
    pub id: String,
    /// The namespace file, when there is one to plumb.
    pub netns: Option<PathBuf>,
}

/// Why a container name did not resolve (calicoctl's messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// "Container X was not found."
    NotFound,
    /// "X is not currently running."
    NotRunning,
    /// "Can't add X to Calico because it is running NetworkMode = host."
    HostNetwork,
}

/// The OS side of workload networking.
pub trait Runtime: Send + Sync {
    /// `linux` or `model`.
    fn kind(&self) -> &'static str;
    /// Whether commands that touch namespaces need root (calicoctl's `enforce_root`).
    fn needs_root(&self) -> bool;
    /// Finds a container.
    fn resolve(&self, name: &str) -> Result<Workload, ResolveError>;
    /// Creates the veth pair, moves one end into the workload as `container_if` with the
    /// addresses and the gateway routes; returns the container-side MAC.
    fn attach(
        &self,
        workload: &Workload,
        host_if: &str,
        temp_if: &str,
        container_if: &str,
        nets: &[IpNetwork],
    ) -> anyhow::Result<Option<MacAddr>>;
    /// Deletes the host side of a veth (the peer goes with it).
    fn detach(&self, host_if: &str) -> anyhow::Result<()>;
    /// Whether the workload has this interface.
    fn has_interface(&self, workload: &Workload, container_if: &str) -> anyhow::Result<bool>;
    /// Adds an address to a workload interface.
    fn add_address(
        &self,
        workload: &Workload,
        container_if: &str,
        net: IpNetwork,
    ) -> anyhow::Result<()>;
    /// Removes an address from a workload interface.
    fn remove_address(
        &self,
        workload: &Workload,
        container_if: &str,
        net: IpNetwork,
    ) -> anyhow::Result<()>;
}

/// The host network for an address: `/32` or `/128`.
pub fn host_net(addr: IpAddr) -> IpNetwork {
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    IpNetwork::new(addr, prefix).unwrap_or_else(|_| IpNetwork::from(addr))
}

/// No OS effects; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Model;

impl Runtime for Model {
    fn kind(&self) -> &'static str {
        "model"
    }

    fn needs_root(&self) -> bool {
        false
    }

    fn resolve(&self, name: &str) -> Result<Workload, ResolveError> {
        if calico_model::names::validate_key_segment("workload id", name).is_err() {
            return Err(ResolveError::NotFound);
        }
        Ok(Workload {
            name: name.to_string(),
            orchestrator: "namespace".into(),
            id: name.to_string(),
            netns: None,
        })
    }

    fn attach(
        &self,
        _workload: &Workload,
        host_if: &str,
        _temp_if: &str,
        _container_if: &str,
        _nets: &[IpNetwork],
    ) -> anyhow::Result<Option<MacAddr>> {
        Ok(Some(model_mac(host_if)))
    }

    fn detach(&self, _host_if: &str) -> anyhow::Result<()> {
        Ok(())
    }

    fn has_interface(&self, _workload: &Workload, _container_if: &str) -> anyhow::Result<bool> {
        Ok(true)
    }

    fn add_address(&self, _: &Workload, _: &str, _: IpNetwork) -> anyhow::Result<()> {
        Ok(())
    }

    fn remove_address(&self, _: &Workload, _: &str, _: IpNetwork) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A locally administered MAC from the hex digits of an interface name.
pub fn model_mac(host_if: &str) -> MacAddr {
    let hex: Vec<u8> = host_if
        .trim_start_matches("cali")
        .chars()
        .filter_map(|c| c.to_digit(16))
        .map(|d| d as u8)
        .collect();
    let mut mac = [0x02u8, 0, 0, 0, 0, 0];
    for (i, byte) in mac.iter_mut().enumerate().skip(1) {
        let hi = hex.get(2 * (i - 1)).copied().unwrap_or(0);
        let lo = hex.get(2 * (i - 1) + 1).copied().unwrap_or(0);
        *byte = (hi << 4) | lo;
    }
    MacAddr(mac)
}

/// Docker containers and network namespaces on this machine; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Linux {
    /// The named namespace that plays this host (`CALICOCTL_HOST_NETNS`), if any.
    pub host_netns: Option<String>,
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` inside a namespace file (through `nsenter`), or here.
fn ip_in(netns: Option<&Path>, args: &[&str]) -> anyhow::Result<String> {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", ns.display()))
                .arg("ip")
                .args(args);
            run(&mut cmd)
        }
        None => run(Command::new("ip").args(args)),
    }
}

impl Linux {
    fn host_ns(&self) -> Option<PathBuf> {
        self.host_netns
            .as_ref()
            .map(|n| Path::new("/run/netns").join(n))
    }

    fn host_ip(&self, args: &[&str]) -> anyhow::Result<String> {
        ip_in(self.host_ns().as_deref(), args)
    }

    fn docker(&self, name: &str) -> Option<Result<Workload, ResolveError>> {
        let out = Command::new("docker")
            .args([
                "inspect",
                "--type",
                "container",
                "-f",
                "{{.Id}} {{.State.Running}} {{.State.Pid}} {{.HostConfig.NetworkMode}}",
                name,
            ])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [id, running, pid, mode] = fields.as_slice() else {
            return None;
        };
        if *running != "true" {
            return Some(Err(ResolveError::NotRunning));
        }
        if *mode == "host" {
            return Some(Err(ResolveError::HostNetwork));
        }
        Some(Ok(Workload {
            name: name.to_string(),
            orchestrator: "docker".into(),
            id: id.to_string(),
            netns: Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
        }))
    }

    fn workload_ns<'a>(&self, workload: &'a Workload) -> anyhow::Result<&'a Path> {
        workload
            .netns
            .as_deref()
            .with_context(|| format!("{} has no network namespace", workload.name))
    }
}

impl Runtime for Linux {
    fn kind(&self) -> &'static str {
        "linux"
    }

    fn needs_root(&self) -> bool {
        true
    }

    fn resolve(&self, name: &str) -> Result<Workload, ResolveError> {
        if name.starts_with('/') {
            if !Path::new(name).exists() {
                return Err(ResolveError::NotFound);
            }
            return Ok(Workload {
                name: name.to_string(),
                orchestrator: "namespace".into(),
                id: name.replace('/', "-"),
                netns: Some(PathBuf::from(name)),
            });
        }
        if let Some(found) = self.docker(name) {
            return found;
        }
        let path = Path::new("/run/netns").join(name);
        if calico_model::names::validate_key_segment("workload id", name).is_ok()
            && !name.contains('/')
            && path.exists()
        {
            return Ok(Workload {
                name: name.to_string(),
                orchestrator: "namespace".into(),
                id: name.to_string(),
                netns: Some(path),
            });
        }
        Err(ResolveError::NotFound)
    }

    fn attach(
        &self,
        workload: &Workload,
        host_if: &str,
        temp_if: &str,
        container_if: &str,
        nets: &[IpNetwork],
    ) -> anyhow::Result<Option<MacAddr>> {
        let ns = self.workload_ns(workload)?;
        let ns_arg = ns.display().to_string();
        self.host_ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", temp_if,
        ])?;
        let plumb = || -> anyhow::Result<MacAddr> {
            self.host_ip(&["link", "set", host_if, "up"])?;
            self.host_ip(&["link", "set", temp_if, "netns", &ns_arg])?;
            ip_in(Some(ns), &["link", "set", temp_if, "name", container_if])?;
            ip_in(Some(ns), &["link", "set", container_if, "up"])?;
            ip_in(Some(ns), &["link", "set", "lo", "up"])?;
            for net in nets {
                ip_in(
                    Some(ns),
                    &["addr", "add", &net.to_string(), "dev", container_if],
                )?;
            }
            if nets.iter().any(IpNetwork::is_ipv4) {
                ip_in(
                    Some(ns),
                    &[
                        "route",
                        "replace",
                        GATEWAY,
                        "dev",
                        container_if,
                        "scope",
                        "link",
                    ],
                )?;
                ip_in(
                    Some(ns),
                    &[
                        "route",
                        "replace",
                        "default",
                        "via",
                        GATEWAY,
                        "dev",
                        container_if,
                    ],
                )?;
            }
            let link = ip_in(Some(ns), &["-o", "link", "show", "dev", container_if])?;
            let mac = link
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .context("no MAC on the container interface")?;
            Ok(mac.parse()?)
        };
        match plumb() {
            Ok(mac) => Ok(Some(mac)),
            Err(e) => {
                // Deleting the host side removes the peer wherever it went.
                let _ = self.host_ip(&["link", "del", host_if]);
                Err(e)
            }
        }
    }

    fn detach(&self, host_if: &str) -> anyhow::Result<()> {
        self.host_ip(&["link", "del", host_if]).map(|_| ())
    }

    fn has_interface(&self, workload: &Workload, container_if: &str) -> anyhow::Result<bool> {
        let ns = self.workload_ns(workload)?;
        Ok(ip_in(Some(ns), &["link", "show", "dev", container_if]).is_ok())
    }

    fn add_address(
        &self,
        workload: &Workload,
        container_if: &str,
        net: IpNetwork,
    ) -> anyhow::Result<()> {
        let ns = self.workload_ns(workload)?;
        ip_in(
            Some(ns),
            &["addr", "add", &net.to_string(), "dev", container_if],
        )
        .map(|_| ())
    }

    fn remove_address(
        &self,
        workload: &Workload,
        container_if: &str,
        net: IpNetwork,
    ) -> anyhow::Result<()> {
        let ns = self.workload_ns(workload)?;
        ip_in(
            Some(ns),
            &["addr", "del", &net.to_string(), "dev", container_if],
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_macs_are_local_and_stable() {
        let mac = model_mac("cali1e5a4c3f0b8");
        assert_eq!(mac.to_string(), "02:1e:5a:4c:3f:0b");
        assert_eq!(model_mac("cali1e5a4c3f0b8"), mac);
    }

    #[test]
    fn host_nets_are_host_routes() {
        assert_eq!(
            host_net("10.20.10.1".parse().unwrap()).to_string(),
            "10.20.10.1/32"
        );
        assert_eq!(
            host_net("fd00::1".parse().unwrap()).to_string(),
            "fd00::1/128"
        );
    }
}
