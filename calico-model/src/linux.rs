//! Applying host plans to Linux network namespaces by running `ip`, `bridge`, `sysctl`,
//! `ipset` and `iptables-restore` inside them (`ip netns exec`) — felix's job, plus the
//! veth plumbing `calicoctl container add` does.
//!
//! [`Applier::apply`] makes a namespace match a [`HostPlan`] and is **idempotent** (every
//! step is "replace" or "create if missing", so applying twice changes nothing):
//!
//! 1. host sysctls, then per-interface sysctls for workload interfaces that exist
//!    (missing ones are reported in [`ApplyReport::missing_interfaces`], as felix waits
//!    for an interface to appear);
//! 2. the tunnel device: `vxlan.calico` created or updated; `tunl0` created — where the
//!    kernel lacks IP-in-IP this is [`Error::Unsupported`], before anything else changed;
//! 3. ipsets, each rebuilt in a temporary set and swapped in (`ipset restore`);
//! 4. each iptables table in **one atomic** `iptables-restore --noflush`: owned chains
//!    rewritten, missing hooks inserted, `felix-*` chains no longer in the plan deleted;
//!    a failure leaves the table as it was;
//! 5. stale `felix-*` ipsets destroyed (now unreferenced);
//! 6. routes (`ip route replace ... proto 80`), permanent neighbours, FDB entries;
//!    routes with protocol 80 that the plan no longer has are deleted, as are permanent
//!    neighbours on `cali*` / `vxlan.calico` and FDB entries on `vxlan.calico`.
//!
//! Ownership: everything this module creates is recognisable — chains and sets named
//! `felix-*`, the hook rules `-j felix-*`, routes with protocol 80
//! ([`ROUTE_PROTOCOL`]), the `vxlan.calico` device — and [`Applier::remove`] deletes
//! exactly that. Nothing outside the given namespace is touched.
//!
//! **Which namespace.** [`Netns::new`] names a namespace (`/run/netns/<name>`; commands
//! run through `ip netns exec` / `ip -n`); [`Netns::current`] is the namespace this
//! process runs in — calico-node on a host, or started by `ip netns exec <host> ...` —
//! where the same commands run directly. Everything else is the same in both modes.
//!
//! Caveats: needs root (CAP_NET_ADMIN) and the tools on `PATH`; the iptables backend is
//! selectable ([`IptablesBackend`]) because legacy and nf_tables rules coexist and both
//! apply.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use ipnetwork::IpNetwork;

use crate::dataplane::incremental::PlanDelta;
use crate::dataplane::iptables::Table;
use crate::dataplane::routes::{
    Tunnel, IPIP_DEVICE, VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI, WORKLOAD_GATEWAY,
};
use crate::dataplane::{HostPlan, InterfacePlan};
use crate::error::{Error, Result};
use crate::model::MacAddr;

/// The routing protocol number marking routes this module owns (`ip route ... proto 80`).
pub const ROUTE_PROTOCOL: u8 = 80;

/// Which iptables implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IptablesBackend {
    /// `iptables-restore` (whatever the system's alternative points at).
    #[default]
    System,
    /// `iptables-legacy-restore` (x_tables).
    Legacy,
    /// `iptables-nft-restore` (nf_tables).
    Nft,
}

impl IptablesBackend {
    /// The binary for a family and verb (`restore`/`save`).
    pub fn binary(self, v4: bool, verb: &str) -> String {
        let base = if v4 { "iptables" } else { "ip6tables" };
        match self {
            IptablesBackend::System => format!("{base}-{verb}"),
            IptablesBackend::Legacy => format!("{base}-legacy-{verb}"),
            IptablesBackend::Nft => format!("{base}-nft-{verb}"),
        }
    }
}

/// Runs a command, optionally with stdin, returning stdout; failures become
/// [`Error::Command`] with the command line and stderr.
pub fn run(program: &str, args: &[String], stdin: Option<&str>) -> Result<String> {
    let line = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|e| Error::Command {
        command: line.clone(),
        status: "spawn failed".into(),
        stderr: e.to_string(),
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means the child exited early; its status and stderr explain why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| Error::Command {
        command: line.clone(),
        status: "wait failed".into(),
        stderr: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .trim()
                .chars()
                .take(2000)
                .collect(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace by name (`/run/netns/<name>`), or the process's own
/// ([`Netns::current`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    /// Empty for the current namespace.
    name: String,
}

impl Netns {
    /// Refers to an existing namespace (or one about to be created).
    pub fn new(name: &str) -> Netns {
        Netns {
            name: name.to_string(),
        }
    }

    /// The namespace this process runs in: commands run directly, without
    /// `ip netns exec`.
    pub fn current() -> Netns {
        Netns {
            name: String::new(),
        }
    }

    /// Whether this is [`Netns::current`].
    pub fn is_current(&self) -> bool {
        self.name.is_empty()
    }

    /// How `ip link ... netns <X>` names this namespace: its name, or for the current
    /// namespace this process's pid.
    pub fn link_target(&self) -> String {
        if self.is_current() {
            std::process::id().to_string()
        } else {
            self.name.clone()
        }
    }

    /// `ip`'s global options selecting the namespace (`-n <name>`, none when current).
    fn ip_prefix(&self) -> Vec<String> {
        if self.is_current() {
            Vec::new()
        } else {
            vec!["-n".into(), self.name.clone()]
        }
    }

    /// `ip netns add <name>` and bring `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        crate::names::validate_key_segment("network namespace name", name)?;
        run("ip", &["netns".into(), "add".into(), name.into()], None)?;
        let ns = Netns::new(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip netns del <name>` (refused for [`Netns::current`]).
    pub fn delete(&self) -> Result<()> {
        if self.is_current() {
            return Err(Error::invalid(
                "network namespace",
                "(current)",
                "the process's own namespace cannot be deleted",
            ));
        }
        run(
            "ip",
            &["netns".into(), "del".into(), self.name.clone()],
            None,
        )
        .map(|_| ())
    }

    /// The name (empty for [`Netns::current`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `program args...` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        if self.is_current() {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            return run(program, &args, stdin);
        }
        let mut full: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.name.clone(),
            program.into(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        run("ip", &full, stdin)
    }

    /// `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = self.ip_prefix();
        full.extend(args.iter().map(|a| a.to_string()));
        run("ip", &full, None)
    }

    /// `ip -n <ns> -batch -` with one command per line.
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let input = lines.join("\n") + "\n";
        let mut full = self.ip_prefix();
        full.extend(["-batch".into(), "-".into()]);
        run("ip", &full, Some(&input)).map(|_| ())
    }

    /// `ip -6 -n <ns> -batch -` with one command per line.
    pub fn ip6_batch(&self, lines: &[String]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let input = lines.join("\n") + "\n";
        let mut full = vec!["-6".to_string()];
        full.extend(self.ip_prefix());
        full.extend(["-batch".into(), "-".into()]);
        run("ip", &full, Some(&input)).map(|_| ())
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> Result<BTreeSet<String>> {
        let out = self.ip(&["-o", "link", "show"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect())
    }

    /// The MAC of a link.
    pub fn mac_of(&self, link: &str) -> Result<MacAddr> {
        let out = self.ip(&["-o", "link", "show", "dev", link])?;
        let mac = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .ok_or_else(|| Error::Command {
                command: format!("ip {} link show {link}", self.ip_prefix().join(" ")),
                status: "ok".into(),
                stderr: "no link/ether address".into(),
            })?;
        mac.parse()
    }
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Workload interfaces in the plan not (yet) present in the namespace.
    pub missing_interfaces: Vec<String>,
    /// Routes deleted because the plan no longer has them.
    pub stale_routes: usize,
    /// Chains deleted because the plan no longer has them.
    pub stale_chains: usize,
    /// ipsets destroyed because the plan no longer has them.
    pub stale_sets: usize,
}

/// Applies plans to one namespace. See the module docs.
#[derive(Debug, Clone)]
pub struct Applier {
    ns: Netns,
    backend: IptablesBackend,
    ipv6: bool,
}

/// The `felix-*` chains and `-j felix-*` hooks present in an `iptables-save` dump.
fn parse_save(dump: &str) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut chains = BTreeSet::new();
    let mut hooks = Vec::new();
    for line in dump.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl
                .split_whitespace()
                .next()
                .filter(|n| n.starts_with("felix-"))
            {
                chains.insert(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            if let Some((chain, spec)) = rule.split_once(' ') {
                if !chain.starts_with("felix-") && spec.starts_with("-j felix-") {
                    hooks.push((chain.to_string(), spec.trim().to_string()));
                }
            }
        }
    }
    (chains, hooks)
}

impl Applier {
    /// An applier for `ns` using `backend`; IPv6 tables are programmed when `ipv6`.
    pub fn new(ns: Netns, backend: IptablesBackend, ipv6: bool) -> Applier {
        Applier { ns, backend, ipv6 }
    }

    /// The namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Writes sysctls by path under `/proc/sys` (which follows the namespace of the
    /// writer), so no `procps` is needed: `net.ipv4.conf.cali1.rp_filter` →
    /// `/proc/sys/net/ipv4/conf/cali1/rp_filter`.
    fn sysctl(&self, settings: &[(String, String)]) -> Result<()> {
        if settings.is_empty() {
            return Ok(());
        }
        let safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        let mut script = String::from("set -e\n");
        for (k, v) in settings {
            if !safe(k) || !safe(v) || k.contains("..") {
                return Err(Error::invalid(
                    "sysctl",
                    format!("{k}={v}"),
                    "names and values are [A-Za-z0-9._-]",
                ));
            }
            script.push_str(&format!("echo {v} > /proc/sys/{}\n", k.replace('.', "/")));
        }
        self.ns.exec("sh", &["-c", &script], None).map(|_| ())
    }

    /// Whether the kernel can make an IP-in-IP device here.
    pub fn check_ipip(&self) -> Result<()> {
        if self.ns.links()?.contains(IPIP_DEVICE) {
            return Ok(());
        }
        match self.ns.ip(&["link", "add", "name", IPIP_DEVICE, "type", "ipip"]) {
            Ok(_) => Ok(()),
            Err(Error::Command { stderr, .. }) => Err(Error::Unsupported {
                feature: "IP-in-IP (tunl0)".into(),
                reason: format!(
                    "`ip link add tunl0 type ipip` failed: {stderr}; the kernel lacks CONFIG_NET_IPIP — use a VXLAN pool or render with ipip_as_vxlan"
                ),
            }),
            Err(e) => Err(e),
        }
    }

    fn apply_tunnel(&self, tunnel: Option<&Tunnel>) -> Result<()> {
        let links = self.ns.links()?;
        match tunnel {
            Some(Tunnel::IpIp { mtu, address }) => {
                self.check_ipip()?;
                self.ns
                    .ip(&["link", "set", IPIP_DEVICE, "mtu", &mtu.to_string(), "up"])?;
                self.ns.ip(&["addr", "flush", "dev", IPIP_DEVICE])?;
                if let Some(a) = address {
                    self.ns
                        .ip(&["addr", "add", &format!("{a}/32"), "dev", IPIP_DEVICE])?;
                }
            }
            Some(Tunnel::Vxlan { local, mac, mtu }) => {
                if !links.contains(VXLAN_DEVICE) {
                    let (vni, port, local) = (
                        VXLAN_VNI.to_string(),
                        VXLAN_PORT.to_string(),
                        local.to_string(),
                    );
                    self.ns.ip(&[
                        "link",
                        "add",
                        VXLAN_DEVICE,
                        "type",
                        "vxlan",
                        "id",
                        &vni,
                        "dstport",
                        &port,
                        "local",
                        &local,
                        "nolearning",
                    ])?;
                }
                self.ns.ip(&[
                    "link",
                    "set",
                    VXLAN_DEVICE,
                    "address",
                    &mac.to_string(),
                    "mtu",
                    &mtu.to_string(),
                    "up",
                ])?;
            }
            None => {}
        }
        if !matches!(tunnel, Some(Tunnel::Vxlan { .. })) && links.contains(VXLAN_DEVICE) {
            self.ns.ip(&["link", "del", VXLAN_DEVICE])?;
        }
        Ok(())
    }

    fn felix_sets(&self) -> Result<BTreeSet<String>> {
        let out = self.ns.exec("ipset", &["list", "-n"], None)?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|s| s.starts_with("felix-"))
            .map(String::from)
            .collect())
    }

    fn apply_table(&self, table: &Table, v4: bool) -> Result<usize> {
        let save = self.backend.binary(v4, "save");
        let dump = self.ns.exec(&save, &["-t", &table.name], None)?;
        let (present, hooks) = parse_save(&dump);
        let stale: Vec<String> = present
            .iter()
            .filter(|c| !table.chains.contains_key(*c))
            .cloned()
            .collect();
        let text = table.to_restore_noflush(&hooks, &stale);
        self.ns.exec(
            &self.backend.binary(v4, "restore"),
            &["--noflush"],
            Some(&text),
        )?;
        Ok(stale.len())
    }

    /// Makes the namespace match `plan` (see module docs).
    pub fn apply(&self, plan: &HostPlan) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        // Fail early, before changing anything, when the kernel cannot do the tunnel.
        if let Some(Tunnel::IpIp { .. }) = plan.tunnel {
            self.check_ipip()?;
        }
        self.sysctl(&plan.sysctls)?;
        let links = self.ns.links()?;
        let mut iface_sysctls = Vec::new();
        for (name, iface) in &plan.interfaces {
            if links.contains(name) {
                iface_sysctls.extend(iface.sysctls());
            } else {
                report.missing_interfaces.push(name.clone());
            }
        }
        self.sysctl(&iface_sysctls)?;
        self.apply_tunnel(plan.tunnel.as_ref())?;

        let before_sets = self.felix_sets()?;
        self.ns
            .exec("ipset", &["restore"], Some(&plan.ipset_restore()))?;
        report.stale_chains += self.apply_table(&plan.filter, true)?;
        report.stale_chains += self.apply_table(&plan.nat, true)?;
        if self.ipv6 {
            report.stale_chains += self.apply_table(&plan.filter6, false)?;
        }
        for set in before_sets.iter().filter(|s| !plan.ipsets.contains_key(*s)) {
            self.ns.exec("ipset", &["destroy", set], None)?;
            report.stale_sets += 1;
        }

        report.stale_routes = self.apply_routes(plan, &report.missing_interfaces)?;
        self.apply_neighbors(plan, &report.missing_interfaces)?;
        Ok(report)
    }

    fn owned_routes(&self, v4: bool) -> Result<BTreeSet<IpNetwork>> {
        let fam = if v4 { "-4" } else { "-6" };
        let out = self
            .ns
            .ip(&[fam, "route", "show", "proto", &ROUTE_PROTOCOL.to_string()])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let first = words.next()?;
                let dst = if matches!(first, "blackhole" | "unreachable" | "prohibit") {
                    words.next()?
                } else {
                    first
                };
                let net: IpNetwork = dst.parse().ok()?;
                Some(net)
            })
            .collect())
    }

    fn apply_routes(&self, plan: &HostPlan, missing: &[String]) -> Result<usize> {
        let proto = ROUTE_PROTOCOL.to_string();
        let mut lines = Vec::new();
        let mut lines6 = Vec::new();
        for route in plan.routes.values() {
            if let crate::dataplane::routes::Route::Local { dev, .. } = route {
                if missing.contains(dev) {
                    continue;
                }
            }
            let line = format!("route replace {} proto {proto}", route.args().join(" "));
            if route.dst().is_ipv4() {
                lines.push(line);
            } else {
                lines6.push(line);
            }
        }
        self.ns.ip_batch(&lines)?;
        self.ns.ip6_batch(&lines6)?;
        let mut stale = Vec::new();
        for v4 in [true, false] {
            for dst in self.owned_routes(v4)? {
                if !plan.routes.contains_key(&dst) {
                    stale.push(format!("route del {dst} proto {proto}"));
                }
            }
        }
        let n = stale.len();
        self.ns.ip_batch(&stale)?;
        Ok(n)
    }

    fn apply_neighbors(&self, plan: &HostPlan, missing: &[String]) -> Result<()> {
        let wanted: Vec<String> = plan
            .neighbors
            .iter()
            .filter(|n| !missing.contains(&n.dev))
            .map(|n| format!("neigh replace {}", n.args().join(" ")))
            .collect();
        self.ns.ip_batch(&wanted)?;
        // Stale permanent neighbours on devices we own.
        let out = self.ns.ip(&["neigh", "show", "nud", "permanent"])?;
        let keep: BTreeSet<(IpAddr, &str)> = plan
            .neighbors
            .iter()
            .map(|n| (n.ip, n.dev.as_str()))
            .collect();
        let mut stale = Vec::new();
        for line in out.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (Some(ip), Some(dev)) = (
                words.first().and_then(|w| w.parse::<IpAddr>().ok()),
                words.iter().skip_while(|w| **w != "dev").nth(1),
            ) else {
                continue;
            };
            let ours = dev.starts_with("cali") || *dev == VXLAN_DEVICE;
            if ours && !keep.contains(&(ip, *dev)) {
                stale.push(format!("neigh del {ip} dev {dev}"));
            }
        }
        self.ns.ip_batch(&stale)?;
        if plan.fdb.is_empty() && !matches!(plan.tunnel, Some(Tunnel::Vxlan { .. })) {
            return Ok(());
        }
        for f in &plan.fdb {
            let mut args = vec!["fdb", "replace"];
            let a = f.args();
            args.extend(a.iter().map(String::as_str));
            self.ns.exec("bridge", &args, None)?;
        }
        let out = self
            .ns
            .exec("bridge", &["fdb", "show", "dev", VXLAN_DEVICE], None)?;
        for line in out.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (Some(mac), Some(dst)) = (
                words.first().and_then(|w| w.parse::<MacAddr>().ok()),
                words
                    .iter()
                    .skip_while(|w| **w != "dst")
                    .nth(1)
                    .and_then(|d| d.parse::<IpAddr>().ok()),
            ) else {
                continue;
            };
            if !plan.fdb.iter().any(|f| f.mac == mac && f.dst == dst) {
                let (m, d) = (mac.to_string(), dst.to_string());
                self.ns.exec(
                    "bridge",
                    &["fdb", "del", &m, "dev", VXLAN_DEVICE, "dst", &d],
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// Applies an incremental [`PlanDelta`] (from [`crate::dataplane::incremental`]);
    /// `plan` is the plan after the delta, applied whole when the delta is
    /// [`PlanDelta::global`]. Same ordering as [`Applier::apply`]: new sets and members,
    /// then one atomic restore per changed table, then set destruction, routes,
    /// neighbours.
    pub fn apply_delta(&self, delta: &PlanDelta, plan: &HostPlan) -> Result<()> {
        if delta.global {
            return self.apply(plan).map(|_| ());
        }
        let links = self.ns.links()?;
        let sysctls: Vec<(String, String)> = delta
            .interfaces_added
            .iter()
            .filter(|i| links.contains(&i.name))
            .flat_map(InterfacePlan::sysctls)
            .collect();
        self.sysctl(&sysctls)?;
        let sets = delta.ipset_text();
        if !sets.is_empty() {
            self.ns.exec("ipset", &["restore"], Some(&sets))?;
        }
        for (table, v4) in [
            (&delta.filter, true),
            (&delta.nat, true),
            (&delta.filter6, false),
        ] {
            if table.is_empty() || (!v4 && !self.ipv6) {
                continue;
            }
            self.ns.exec(
                &self.backend.binary(v4, "restore"),
                &["--noflush"],
                Some(&table.to_restore_noflush()),
            )?;
        }
        let destroy = delta.ipset_destroy_text();
        if !destroy.is_empty() {
            self.ns.exec("ipset", &["restore"], Some(&destroy))?;
        }
        let proto = ROUTE_PROTOCOL.to_string();
        let mut lines = Vec::new();
        let mut lines6 = Vec::new();
        for r in &delta.routes_set {
            if let crate::dataplane::routes::Route::Local { dev, .. } = r {
                if dev != "lo" && !links.contains(dev) {
                    continue;
                }
            }
            let line = format!("route replace {} proto {proto}", r.args().join(" "));
            if r.dst().is_ipv4() {
                lines.push(line)
            } else {
                lines6.push(line)
            }
        }
        for dst in &delta.routes_removed {
            let line = format!("route del {dst} proto {proto}");
            if dst.is_ipv4() {
                lines.push(line)
            } else {
                lines6.push(line)
            }
        }
        for n in &delta.neighbors_removed {
            if links.contains(&n.dev) {
                lines.push(format!("neigh del {} dev {}", n.ip, n.dev));
            }
        }
        for n in &delta.neighbors_set {
            if links.contains(&n.dev) {
                lines.push(format!("neigh replace {}", n.args().join(" ")));
            }
        }
        self.ns.ip_batch(&lines)?;
        self.ns.ip6_batch(&lines6)?;
        Ok(())
    }

    /// Removes everything this module owns from the namespace (see module docs).
    pub fn remove(&self) -> Result<()> {
        let mut families = vec![true];
        if self.ipv6 {
            families.push(false);
        }
        for v4 in families {
            for table in ["filter", "nat"] {
                if !v4 && table == "nat" {
                    continue;
                }
                let dump = self
                    .ns
                    .exec(&self.backend.binary(v4, "save"), &["-t", table], None)?;
                let (chains, hooks) = parse_save(&dump);
                if chains.is_empty() && hooks.is_empty() {
                    continue;
                }
                let t = Table {
                    name: table.into(),
                    hooks,
                    chains: BTreeMap::new(),
                };
                let owned: Vec<String> = chains.into_iter().collect();
                self.ns.exec(
                    &self.backend.binary(v4, "restore"),
                    &["--noflush"],
                    Some(&t.to_restore_removal(&owned)),
                )?;
            }
        }
        for set in self.felix_sets()? {
            self.ns.exec("ipset", &["destroy", &set], None)?;
        }
        let mut stale = Vec::new();
        for v4 in [true, false] {
            for dst in self.owned_routes(v4)? {
                stale.push(format!("route del {dst} proto {ROUTE_PROTOCOL}"));
            }
        }
        self.ns.ip_batch(&stale)?;
        if self.ns.links()?.contains(VXLAN_DEVICE) {
            self.ns.ip(&["link", "del", VXLAN_DEVICE])?;
        }
        Ok(())
    }
}

/// The container side of a workload, as `calicoctl container add` builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadLink<'a> {
    /// The host's namespace.
    pub host: &'a Netns,
    /// The container's namespace.
    pub container: &'a Netns,
    /// Host-side name (`cali` + 11).
    pub host_iface: &'a str,
    /// Container-side name (`eth1` for calicoctl, `eth0` for CNI-style).
    pub container_iface: &'a str,
    /// The container's addresses (/32 each).
    pub ipv4: &'a [std::net::Ipv4Addr],
    /// A MAC to give the container side (else the kernel's random one).
    pub mac: Option<MacAddr>,
}

/// Creates the veth pair, addresses the container side and routes it via 169.254.1.1
/// (spec §2.3 step 5). Returns the container-side MAC.
pub fn attach_workload(link: &WorkloadLink<'_>) -> Result<MacAddr> {
    let c = link.container;
    c.ip(&[
        "link",
        "add",
        link.container_iface,
        "type",
        "veth",
        "peer",
        "name",
        link.host_iface,
        "netns",
        &link.host.link_target(),
    ])?;
    if let Some(mac) = link.mac {
        c.ip(&[
            "link",
            "set",
            link.container_iface,
            "address",
            &mac.to_string(),
        ])?;
    }
    link.host.ip(&["link", "set", link.host_iface, "up"])?;
    for a in link.ipv4 {
        c.ip(&[
            "addr",
            "add",
            &format!("{a}/32"),
            "dev",
            link.container_iface,
        ])?;
    }
    c.ip(&["link", "set", link.container_iface, "up"])?;
    let gw = WORKLOAD_GATEWAY.to_string();
    c.ip(&[
        "route",
        "replace",
        &gw,
        "dev",
        link.container_iface,
        "scope",
        "link",
    ])?;
    c.ip(&[
        "route",
        "replace",
        "default",
        "via",
        &gw,
        "dev",
        link.container_iface,
    ])?;
    c.mac_of(link.container_iface)
}

/// Deletes a workload's host-side veth (which removes the pair).
pub fn detach_workload(host: &Netns, host_iface: &str) -> Result<()> {
    host.ip(&["link", "del", host_iface]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_save_finds_owned_chains_and_hooks() {
        let dump = "*filter\n:INPUT ACCEPT [0:0]\n:felix-INPUT - [0:0]\n:DOCKER - [0:0]\n-A INPUT -j felix-INPUT\n-A INPUT -j DOCKER\n-A felix-INPUT -j DROP\nCOMMIT\n";
        let (chains, hooks) = parse_save(dump);
        assert_eq!(chains.into_iter().collect::<Vec<_>>(), vec!["felix-INPUT"]);
        assert_eq!(
            hooks,
            vec![("INPUT".to_string(), "-j felix-INPUT".to_string())]
        );
    }

    #[test]
    fn the_current_namespace_runs_commands_directly() {
        let here = Netns::current();
        assert!(here.is_current() && !Netns::new("x").is_current());
        assert_eq!(here.exec("echo", &["hi"], None).unwrap(), "hi\n");
        assert_eq!(here.link_target(), std::process::id().to_string());
        assert_eq!(Netns::new("x").link_target(), "x");
        assert!(here.ip_prefix().is_empty());
        assert!(matches!(here.delete(), Err(Error::Invalid { .. })));
    }

    #[test]
    fn backend_binaries() {
        assert_eq!(
            IptablesBackend::Legacy.binary(true, "restore"),
            "iptables-legacy-restore"
        );
        assert_eq!(
            IptablesBackend::Nft.binary(false, "save"),
            "ip6tables-nft-save"
        );
        assert_eq!(
            IptablesBackend::System.binary(true, "save"),
            "iptables-save"
        );
    }

    #[test]
    fn command_failures_carry_the_command_and_stderr() {
        let err = run("sh", &["-c".into(), "echo oops >&2; exit 3".into()], None).unwrap_err();
        match err {
            Error::Command {
                command, stderr, ..
            } => {
                assert!(command.starts_with("sh -c"));
                assert_eq!(stderr, "oops");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(run("cat", &[], Some("in")).unwrap(), "in");
        assert!(matches!(
            run("/nonexistent/tool", &[], None),
            Err(Error::Command { .. })
        ));
    }
}
