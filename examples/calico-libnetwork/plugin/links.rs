//! The host side of a Docker endpoint: the veth pair the plugin hands to Docker on
//! `Join`, and the host namespace state that makes the container reachable.
//!
//! What `Join` leaves behind, for an endpoint whose id starts with `6f0c2d9b7a1`:
//!
//! ```text
//! host namespace                          container namespace (after Docker moves it)
//!   cali6f0c2d9b7a1  up, proxy_arp=1  <-veth->  tmp6f0c2d9b7a1 -> renamed eth0 by Docker
//!   192.168.0.10/32 dev cali6f0c2d9b7a1        MAC ee:ee:ee:ee:ee:ee, 192.168.0.10/xx
//!                                              169.254.1.1 dev eth0 scope link
//!                                              default via 169.254.1.1 dev eth0
//! ```
//!
//! Proxy ARP on the host end answers the container's ARP for `169.254.1.1` (and, in
//! default-IPAM networks, for on-link neighbours) with the host end's MAC, so every packet
//! leaves the container towards the host, where routing and policy apply. The `/32` route
//! makes the container reachable from the host and from other containers. Both are what
//! felix would program too (spec/calico.md §5.2); doing it here makes an endpoint work the
//! moment Docker starts the container, and felix's `replace` is idempotent with it.
//!
//! Invariants:
//! * Names are `cali` + 11 characters and `tmp` + 11 characters: 15 and 14 bytes, within
//!   the kernel's 15-byte limit.
//! * [`HostLinks::create_veth`] is idempotent: a stale pair with the same host name (from a
//!   crashed earlier `Join`) is deleted first; a failure half way deletes what was made.
//! * [`HostLinks::delete_veth`] of a missing interface succeeds (it reports `false`).
//!
//! [`IpRoute2`] programs the kernel by running `ip` (iproute2) and writing `/proc/sys`,
//! as Calico's plugin did; [`FakeLinks`] records the same operations in memory for tests.
//!
//! Caveats: deleting the host end deletes the peer too (veth semantics), and with it the
//! routes through it. IPv6 gateways are the host end's kernel-assigned link-local address,
//! which appears shortly after the link comes up; we wait up to two seconds for it.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use parking_lot::Mutex;

use super::error::{PluginError, Result};

/// What `Join` asks the host to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Host-side name, `cali<11>`.
    pub host: String,
    /// Container-side name before Docker renames it, `tmp<11>`.
    pub peer: String,
    /// MAC of the container side, e.g. `ee:ee:ee:ee:ee:ee`.
    pub peer_mac: String,
    /// The container's addresses; each gets a host route (`/32`, `/128`) via `host`.
    pub addresses: Vec<IpNetwork>,
    /// Bring the peer up and report the host end's IPv6 link-local address.
    pub want_ipv6_link_local: bool,
}

/// The host-namespace operations the driver needs.
pub trait HostLinks: Send + Sync {
    /// Builds the pair described by `spec` (see the module docs); returns the host end's
    /// IPv6 link-local address when `spec.want_ipv6_link_local`.
    fn create_veth(&self, spec: &VethSpec) -> Result<Option<Ipv6Addr>>;
    /// Deletes the host end (and so the pair); `Ok(false)` when it did not exist.
    fn delete_veth(&self, host: &str) -> Result<bool>;
}

/// Programs the real host with `ip` and `/proc/sys`.
#[derive(Debug, Default, Clone)]
pub struct IpRoute2;

fn run(program: &str, args: &[&str]) -> Result<String> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| PluginError::Dataplane {
            command: command.clone(),
            status: "spawn failed".into(),
            stderr: e.to_string(),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(PluginError::Dataplane {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| PluginError::Dataplane {
        command: format!("echo {value} > {path}"),
        status: "write failed".into(),
        stderr: e.to_string(),
    })
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Parses the first `inet6 fe80::.../64 scope link` address of `ip -6 addr show` output.
fn parse_link_local(ip_output: &str) -> Option<Ipv6Addr> {
    ip_output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "inet6" {
            return None;
        }
        let addr = words.next()?.split('/').next()?;
        let addr: Ipv6Addr = addr.parse().ok()?;
        let link_local = (addr.segments()[0] & 0xffc0) == 0xfe80;
        link_local.then_some(addr)
    })
}

impl IpRoute2 {
    fn build(&self, spec: &VethSpec) -> Result<Option<Ipv6Addr>> {
        run(
            "ip",
            &[
                "link", "add", &spec.host, "type", "veth", "peer", "name", &spec.peer,
            ],
        )?;
        run(
            "ip",
            &["link", "set", "dev", &spec.peer, "address", &spec.peer_mac],
        )?;
        let host = spec.host.as_str();
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp"), "1")?;
        write_sysctl(&format!("/proc/sys/net/ipv4/neigh/{host}/proxy_delay"), "0")?;
        if spec.addresses.iter().any(IpNetwork::is_ipv6) || spec.want_ipv6_link_local {
            // Answer the container's neighbour solicitations, as proxy ARP does for IPv4.
            write_sysctl(&format!("/proc/sys/net/ipv6/conf/{host}/proxy_ndp"), "1")?;
        }
        run("ip", &["link", "set", "dev", host, "up"])?;
        for addr in &spec.addresses {
            let dest = match addr {
                IpNetwork::V4(a) => format!("{}/32", a.ip()),
                IpNetwork::V6(a) => format!("{}/128", a.ip()),
            };
            let family = if addr.is_ipv4() { "-4" } else { "-6" };
            run("ip", &[family, "route", "replace", &dest, "dev", host])?;
        }
        if !spec.want_ipv6_link_local {
            return Ok(None);
        }
        run("ip", &["link", "set", "dev", &spec.peer, "up"])?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let out = run("ip", &["-6", "addr", "show", "dev", host, "scope", "link"])?;
            if let Some(addr) = parse_link_local(&out) {
                return Ok(Some(addr));
            }
            if Instant::now() >= deadline {
                return Err(PluginError::Dataplane {
                    command: format!("ip -6 addr show dev {host} scope link"),
                    status: "no address".into(),
                    stderr: "the host end has no IPv6 link-local address (is IPv6 disabled?)"
                        .into(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl HostLinks for IpRoute2 {
    fn create_veth(&self, spec: &VethSpec) -> Result<Option<Ipv6Addr>> {
        // A pair left by an earlier, interrupted Join of the same endpoint.
        for name in [&spec.host, &spec.peer] {
            if link_exists(name) {
                run("ip", &["link", "del", "dev", name])?;
            }
        }
        match self.build(spec) {
            Ok(addr) => Ok(addr),
            Err(e) => {
                // Best effort: the error that matters is the one being returned.
                if link_exists(&spec.host) {
                    let _ = run("ip", &["link", "del", "dev", &spec.host]);
                }
                Err(e)
            }
        }
    }

    fn delete_veth(&self, host: &str) -> Result<bool> {
        if !link_exists(host) {
            return Ok(false);
        }
        match run("ip", &["link", "del", "dev", host]) {
            Ok(_) => Ok(true),
            // Lost a race with another deleter (Docker deleting the sandbox, say).
            Err(_) if !link_exists(host) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// One veth pair as [`FakeLinks`] remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeVeth {
    /// The spec it was built from.
    pub spec: VethSpec,
    /// How many times `create_veth` built it (re-creations included).
    pub builds: u32,
}

/// An in-memory host for tests: records pairs, can be told to fail.
#[derive(Debug, Default)]
pub struct FakeLinks {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    links: BTreeMap<String, FakeVeth>,
    fail_next_create: Option<String>,
}

/// The link-local address [`FakeLinks`] reports for every host end.
pub const FAKE_LINK_LOCAL: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

impl FakeLinks {
    /// An empty host.
    pub fn new() -> FakeLinks {
        FakeLinks::default()
    }

    /// The pairs that exist now, by host-side name.
    pub fn links(&self) -> BTreeMap<String, FakeVeth> {
        self.state.lock().links.clone()
    }

    /// Makes the next `create_veth` fail with `stderr`.
    pub fn fail_next_create(&self, stderr: &str) {
        self.state.lock().fail_next_create = Some(stderr.to_string());
    }
}

impl HostLinks for FakeLinks {
    fn create_veth(&self, spec: &VethSpec) -> Result<Option<Ipv6Addr>> {
        let mut state = self.state.lock();
        if let Some(stderr) = state.fail_next_create.take() {
            return Err(PluginError::Dataplane {
                command: format!(
                    "ip link add {} type veth peer name {}",
                    spec.host, spec.peer
                ),
                status: "exit status: 2".into(),
                stderr,
            });
        }
        let builds = state.links.get(&spec.host).map_or(0, |v| v.builds) + 1;
        state.links.insert(
            spec.host.clone(),
            FakeVeth {
                spec: spec.clone(),
                builds,
            },
        );
        Ok(spec.want_ipv6_link_local.then_some(FAKE_LINK_LOCAL))
    }

    fn delete_veth(&self, host: &str) -> Result<bool> {
        Ok(self.state.lock().links.remove(host).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_found_in_ip_output() {
        let out = "7: cali123: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500\n    \
                   inet6 fe80::ecee:eeff:feee:eeee/64 scope link \n       valid_lft forever\n";
        assert_eq!(parse_link_local(out), Some(FAKE_LINK_LOCAL));
        assert_eq!(
            parse_link_local("    inet6 2001:db8::1/64 scope global\n"),
            None
        );
        assert_eq!(parse_link_local(""), None);
        assert_eq!(parse_link_local("inet6"), None);
    }

    #[test]
    fn fake_links_rebuild_and_delete_idempotently() {
        let links = FakeLinks::new();
        let spec = VethSpec {
            host: "cali0123456789a".into(),
            peer: "tmp0123456789a".into(),
            peer_mac: "ee:ee:ee:ee:ee:ee".into(),
            addresses: vec!["10.0.0.1/32".parse().unwrap()],
            want_ipv6_link_local: false,
        };
        assert_eq!(links.create_veth(&spec).unwrap(), None);
        assert_eq!(links.create_veth(&spec).unwrap(), None);
        assert_eq!(
            links.links().get("cali0123456789a").map(|v| v.builds),
            Some(2)
        );
        assert!(links.delete_veth("cali0123456789a").unwrap());
        assert!(!links.delete_veth("cali0123456789a").unwrap());
        links.fail_next_create("RTNETLINK answers: File exists");
        assert!(links.create_veth(&spec).is_err());
        assert!(links.links().is_empty());
    }
}
