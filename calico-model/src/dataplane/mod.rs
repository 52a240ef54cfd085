//! The dataplane plan of one host, rendered from the cluster state the way felix 1.4
//! (iptables, ipsets, routes, sysctls) and confd (BIRD) render it.
//!
//! [`render_host`] is a pure function of ([`ClusterState`], host name, [`RenderOptions`])
//! producing a [`HostPlan`]:
//!
//! * **interfaces**: one per local active endpoint whose name starts with the
//!   `InterfacePrefix` (`cali` + 11 characters): sysctls `rp_filter=1`,
//!   `route_localnet=1`, `proxy_arp=1`, `neigh.proxy_delay=0`, `forwarding=1`
//!   (`proxy_ndp=1` with IPv6) — proxy ARP is what answers the workloads' ARP for their
//!   gateway 169.254.1.1;
//! * **routes**: `<ip>/32 dev cali… scope link` per workload address (+ a static ARP
//!   entry from the endpoint's MAC); with [`Routing::Static`], the other hosts' blocks
//!   (`/26 via <host>`) from IPAM affinities, `/32 via <host>` for workloads outside their
//!   host's blocks, and a `blackhole` for each own block; with [`Routing::Bird`] those
//!   come from BIRD ([`HostPlan::bird_conf`]) instead;
//! * **encapsulation**: routes into an `ipip` pool go through `tunl0` (felix's
//!   `IpInIpEnabled`; unsupported where the kernel lacks IP-in-IP, which applying
//!   reports), into a `vxlan` pool — or an `ipip` pool when
//!   [`RenderOptions::ipip_as_vxlan`] — through `vxlan.calico` with a permanent
//!   neighbour + FDB entry per other host;
//! * **iptables** (filter v4 and v6, nat v4; see [`iptables`]): the felix chain layout
//!   of spec/calico.md §5.3 — `felix-FORWARD` dispatching `-i cali+` / `-o cali+`
//!   packets through `felix-FROM-ENDPOINT` / `felix-TO-ENDPOINT` (a two-level tree
//!   by the first character after the prefix) to `felix-from-<if>` / `felix-to-<if>`,
//!   which clear the accept mark, police the source MAC, call each profile's
//!   `felix-p-<id>-o` / `-i` chain in order (returning as soon as the mark is set) and
//!   end in DROP; a missing profile is a stub chain that drops; `felix-INPUT` applies
//!   the workload's outbound policy to traffic for the host per
//!   `DefaultEndpointToHostAction`; nat `felix-POSTROUTING` masquerades nat-outgoing
//!   pools;
//! * **ipsets** (see [`ipset`]): `felix-v4-<tag>` / `felix-v6-<tag>` for every tag the
//!   rendered rules use, with the tag's cluster-wide members; `felix-all-ipam-pools` /
//!   `felix-masq-ipam-pools` for masquerade; `felix-calico-hosts-4` (all host addresses)
//!   to admit IP-in-IP / VXLAN only from Calico hosts.
//!
//! Invariants (tested): every jump/goto target in a rendered table is a chain of that
//! table; every set a rule names is in the plan; rendering is deterministic; the
//! rendered rules decide every endpoint pair exactly as [`crate::policy`] does
//! ([`sim`] interprets them). Applying lives in [`crate::linux`]; incremental updates in
//! [`incremental`].
//!
//! Caveats: IPv6 is policed (ip6tables) and routed locally, but cross-host IPv6 routes
//! are not rendered (Calico used BIRD6); tiered policy, host endpoints and floating IPs
//! (`felix-FIP-*` stay empty) are not modelled.

pub mod bird;
pub mod incremental;
pub mod ipset;
pub mod iptables;
pub mod routes;
pub mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::error::Result;
use crate::model::{EndpointKey, EndpointToHostAction, FelixConfig, MacAddr, WorkloadEndpoint};
use crate::names::uniquely_shorten;
use crate::rule::{Action, PortRange, Protocol, Rule, Rules};
use crate::state::ClusterState;

use self::bird::{BirdInput, MeshPeer};
use self::ipset::{IpSet, SetType};
use self::iptables::{comment, Table};
use self::routes::{
    vtep_mac, FdbEntry, Neighbor, Route, Tunnel, IPIP_DEVICE, VXLAN_DEVICE, VXLAN_MTU, VXLAN_PORT,
    WORKLOAD_GATEWAY,
};

/// Where routes to other hosts' workloads come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Routing {
    /// Rendered into the plan from IPAM block affinities and endpoints.
    #[default]
    Static,
    /// Learned from BIRD (full iBGP mesh); the plan carries `bird.conf`.
    Bird,
}

/// Rendering choices that are not in the datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RenderOptions {
    /// Route source.
    pub routing: Routing,
    /// Render VXLAN where a pool asks for IP-in-IP (for kernels without it).
    pub ipip_as_vxlan: bool,
    /// Add `169.254.1.1/32 dev lo`: proxy ARP only answers for addresses the host routes
    /// elsewhere, so a host without a default route (a test namespace) needs it.
    pub gateway_route_via_lo: bool,
}

/// One workload interface on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfacePlan {
    /// Host-side interface name.
    pub name: String,
    /// The endpoint it belongs to.
    pub endpoint: EndpointKey,
    /// Container-side MAC.
    pub mac: Option<MacAddr>,
    /// IPv4 addresses.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
}

impl InterfacePlan {
    /// The `sysctl` settings (name, value) felix applies to the interface.
    pub fn sysctls(&self) -> Vec<(String, String)> {
        let name = &self.name;
        let mut out = vec![
            (format!("net.ipv4.conf.{name}.rp_filter"), "1".to_string()),
            (
                format!("net.ipv4.conf.{name}.route_localnet"),
                "1".to_string(),
            ),
            (format!("net.ipv4.conf.{name}.proxy_arp"), "1".to_string()),
            (
                format!("net.ipv4.neigh.{name}.proxy_delay"),
                "0".to_string(),
            ),
            (format!("net.ipv4.conf.{name}.forwarding"), "1".to_string()),
        ];
        if !self.ipv6.is_empty() {
            out.push((format!("net.ipv6.conf.{name}.proxy_ndp"), "1".to_string()));
        }
        out
    }
}

/// Everything one host's dataplane should be. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// The host.
    pub host: String,
    /// The options it was rendered with.
    pub options: RenderOptions,
    /// The host's IPv4, if registered.
    pub host_ipv4: Option<Ipv4Addr>,
    /// Workload interfaces by name.
    pub interfaces: BTreeMap<String, InterfacePlan>,
    /// Routes by destination.
    pub routes: BTreeMap<IpNetwork, Route>,
    /// Permanent neighbour entries.
    pub neighbors: BTreeSet<Neighbor>,
    /// VXLAN forwarding entries.
    pub fdb: BTreeSet<FdbEntry>,
    /// The tunnel device, if any.
    pub tunnel: Option<Tunnel>,
    /// ipsets by name.
    pub ipsets: BTreeMap<String, IpSet>,
    /// IPv4 filter table.
    pub filter: Table,
    /// IPv4 nat table.
    pub nat: Table,
    /// IPv6 filter table.
    pub filter6: Table,
    /// Host-wide sysctls.
    pub sysctls: Vec<(String, String)>,
    /// `bird.conf` with [`Routing::Bird`].
    pub bird_conf: Option<String>,
    /// Things the plan could not honour (skipped endpoints, conflicting routes...).
    pub warnings: Vec<String>,
}

impl HostPlan {
    /// `ipset restore` text creating and filling every set.
    pub fn ipset_restore(&self) -> String {
        self.ipsets.values().map(IpSet::to_restore).collect()
    }
}

/// Chain and set names (felix 1.4's).
pub mod chain_names {
    use super::uniquely_shorten;

    /// `felix-INPUT`.
    pub const INPUT: &str = "felix-INPUT";
    /// `felix-OUTPUT`.
    pub const OUTPUT: &str = "felix-OUTPUT";
    /// `felix-FORWARD`.
    pub const FORWARD: &str = "felix-FORWARD";
    /// Dispatch of packets from workloads.
    pub const FROM_ENDPOINT: &str = "felix-FROM-ENDPOINT";
    /// Dispatch of packets to workloads.
    pub const TO_ENDPOINT: &str = "felix-TO-ENDPOINT";
    /// Host-endpoint dispatch (empty: host endpoints are not modelled).
    pub const FROM_HOST_IF: &str = "felix-FROM-HOST-IF";
    /// Host-endpoint dispatch (empty).
    pub const TO_HOST_IF: &str = "felix-TO-HOST-IF";
    /// nat PREROUTING hook.
    pub const NAT_PREROUTING: &str = "felix-PREROUTING";
    /// nat POSTROUTING hook.
    pub const NAT_POSTROUTING: &str = "felix-POSTROUTING";
    /// Floating-IP DNAT (empty).
    pub const FIP_DNAT: &str = "felix-FIP-DNAT";
    /// Floating-IP SNAT (empty).
    pub const FIP_SNAT: &str = "felix-FIP-SNAT";
    /// All pools (`hash:net`).
    pub const ALL_POOLS_SET: &str = "felix-all-ipam-pools";
    /// Masquerading pools (`hash:net`).
    pub const MASQ_POOLS_SET: &str = "felix-masq-ipam-pools";
    /// All hosts' IPv4 addresses (`hash:ip`).
    pub const HOSTS_SET: &str = "felix-calico-hosts-4";

    /// The per-endpoint suffix: interface name minus the prefix, shortened to 16.
    pub fn endpoint_suffix(interface: &str, prefix: &str) -> String {
        uniquely_shorten(interface.strip_prefix(prefix).unwrap_or(interface), 16)
    }

    /// `felix-from-<suffix>`.
    pub fn from_endpoint(suffix: &str) -> String {
        format!("felix-from-{suffix}")
    }

    /// `felix-to-<suffix>`.
    pub fn to_endpoint(suffix: &str) -> String {
        format!("felix-to-{suffix}")
    }

    /// `felix-p-<id16>-i` (inbound) or `-o` (outbound).
    pub fn profile(profile: &str, inbound: bool) -> String {
        format!(
            "felix-p-{}-{}",
            uniquely_shorten(profile, 16),
            if inbound { "i" } else { "o" }
        )
    }

    /// `felix-v4-<tag16>` / `felix-v6-<tag16>`.
    pub fn tag_set(tag: &str, v4: bool) -> String {
        format!(
            "felix-v{}-{}",
            if v4 { 4 } else { 6 },
            uniquely_shorten(tag, 16)
        )
    }
}

use chain_names as names;

/// Felix's rendering context for one host.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) cfg: FelixConfig,
    pub(crate) accept: u32,
}

impl Ctx {
    pub(crate) fn new(cfg: FelixConfig) -> Ctx {
        let accept = cfg.accept_mark();
        Ctx { cfg, accept }
    }

    fn prefix(&self) -> &str {
        &self.cfg.interface_prefix
    }

    fn wildcard(&self) -> String {
        format!("{}+", self.cfg.interface_prefix)
    }

    fn set_mark(&self) -> String {
        format!("-j MARK --set-xmark {:#x}/{:#x}", self.accept, self.accept)
    }

    fn clear_mark(&self) -> String {
        format!("-j MARK --set-xmark 0x0/{:#x}", self.accept)
    }

    fn return_if_marked(&self) -> String {
        format!(
            "-m mark --mark {:#x}/{:#x} -j RETURN",
            self.accept, self.accept
        )
    }

    /// Whether felix programs this endpoint on its host.
    pub(crate) fn programs(&self, ep: &WorkloadEndpoint) -> bool {
        ep.is_active() && ep.name.len() > self.prefix().len() && ep.name.starts_with(self.prefix())
    }

    /// The two chains of a profile for one family; `rules: None` renders stubs.
    /// Also returns the ipset names the chains reference.
    pub(crate) fn profile_chains(
        &self,
        profile: &str,
        rules: Option<&Rules>,
        v4: bool,
    ) -> ([(String, Vec<String>); 2], BTreeSet<String>) {
        let mut sets = BTreeSet::new();
        let mut chain = |inbound: bool| {
            let name = names::profile(profile, inbound);
            let body = match rules {
                None => vec![format!(
                    "{} -j DROP",
                    comment(&format!("WARNING Missing chain: profile {profile}"))
                )],
                Some(r) => {
                    let list = if inbound {
                        &r.inbound_rules
                    } else {
                        &r.outbound_rules
                    };
                    let mut body = Vec::new();
                    for rule in list {
                        body.extend(self.render_rule(rule, v4, &mut sets));
                    }
                    body
                }
            };
            (name, body)
        };
        let chains = [chain(true), chain(false)];
        (chains, sets)
    }

    /// One profile rule as iptables rule specs (empty when the rule is for the other
    /// family).
    fn render_rule(&self, rule: &Rule, v4: bool, sets: &mut BTreeSet<String>) -> Vec<String> {
        if rule.ip_version().is_some_and(|rv4| rv4 != v4) {
            return Vec::new();
        }
        if rule.is_unconditional_drop() {
            return vec![format!(
                "{} -j DROP",
                comment("ICMP type 255 cannot be matched: rule replaced by DROP")
            )];
        }
        let mut base = String::new();
        if let Some(p) = rule.protocol {
            base.push_str(&format!("-p {} ", protocol_arg(p)));
        }
        if let Some(n) = rule.src_net {
            base.push_str(&format!("-s {n} "));
        }
        if let Some(n) = rule.dst_net {
            base.push_str(&format!("-d {n} "));
        }
        if let Some(t) = &rule.src_tag {
            let set = names::tag_set(t, v4);
            base.push_str(&format!("-m set --match-set {set} src "));
            sets.insert(set);
        }
        if let Some(t) = &rule.dst_tag {
            let set = names::tag_set(t, v4);
            base.push_str(&format!("-m set --match-set {set} dst "));
            sets.insert(set);
        }
        if let Some(t) = rule.icmp_type {
            let tc = match rule.icmp_code {
                Some(c) => format!("{t}/{c}"),
                None => t.to_string(),
            };
            if v4 {
                base.push_str(&format!("-m icmp --icmp-type {tc} "));
            } else {
                base.push_str(&format!("-m icmp6 --icmpv6-type {tc} "));
            }
        }
        let target = match rule.action {
            Action::Allow => self.set_mark(),
            Action::Deny => "-j DROP".to_string(),
            Action::Log => "-j LOG --log-prefix \"calico-packet: \" --log-level 5".to_string(),
        };
        let src_chunks = port_chunks(rule.src_ports.as_deref());
        let dst_chunks = port_chunks(rule.dst_ports.as_deref());
        let mut out = Vec::new();
        for s in &src_chunks {
            for d in &dst_chunks {
                let mut line = base.clone();
                if let Some(s) = s {
                    line.push_str(&format!("-m multiport --sports {s} "));
                }
                if let Some(d) = d {
                    line.push_str(&format!("-m multiport --dports {d} "));
                }
                line.push_str(&target);
                out.push(line);
            }
        }
        if rule.action == Action::Allow {
            out.push(self.return_if_marked());
        }
        out
    }

    /// `felix-from-<sfx>` and `felix-to-<sfx>` of a local endpoint.
    pub(crate) fn endpoint_chains(
        &self,
        key: &EndpointKey,
        ep: &WorkloadEndpoint,
    ) -> [(String, Vec<String>); 2] {
        let suffix = names::endpoint_suffix(&ep.name, self.prefix());
        let chain = |outbound: bool| {
            let name = if outbound {
                names::from_endpoint(&suffix)
            } else {
                names::to_endpoint(&suffix)
            };
            let mut body = vec![self.clear_mark()];
            if outbound {
                if let Some(mac) = ep.mac {
                    body.push(format!("-m mac ! --mac-source {mac} -j DROP"));
                }
            }
            for p in &ep.profile_ids {
                body.push(format!("-j {}", names::profile(p, !outbound)));
                body.push(self.return_if_marked());
            }
            body.push(format!(
                "{} -j DROP",
                comment(&format!(
                    "Packet did not match any profile (endpoint {key})"
                ))
            ));
            (name, body)
        };
        [chain(true), chain(false)]
    }

    /// The dispatch trees for a set of local interface names.
    pub(crate) fn dispatch_chains<'a>(
        &self,
        interfaces: impl Iterator<Item = &'a str>,
    ) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<char, Vec<&str>> = BTreeMap::new();
        for name in interfaces {
            let c = name
                .get(self.prefix().len()..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or('_');
            groups.entry(c).or_default().push(name);
        }
        let mut out = Vec::new();
        for (root, leaf, flag, outbound) in [
            (names::FROM_ENDPOINT, "felix-FROM-EP-PFX-", "-i", true),
            (names::TO_ENDPOINT, "felix-TO-EP-PFX-", "-o", false),
        ] {
            let target = |ifname: &str| {
                let suffix = names::endpoint_suffix(ifname, self.prefix());
                if outbound {
                    names::from_endpoint(&suffix)
                } else {
                    names::to_endpoint(&suffix)
                }
            };
            let mut root_rules = Vec::new();
            for (c, group) in &groups {
                if let [only] = group.as_slice() {
                    root_rules.push(format!("{flag} {only} -g {}", target(only)));
                } else {
                    let leaf_name = format!("{leaf}{c}");
                    let mut leaf_rules: Vec<String> = group
                        .iter()
                        .map(|ifname| format!("{flag} {ifname} -g {}", target(ifname)))
                        .collect();
                    leaf_rules.push(format!("{} -j DROP", comment("Unknown interface")));
                    root_rules.push(format!("{flag} {}{c}+ -g {leaf_name}", self.prefix()));
                    out.push((leaf_name, leaf_rules));
                }
            }
            root_rules.push(format!("{} -j DROP", comment("Unknown interface")));
            out.push((root.to_string(), root_rules));
        }
        out
    }

    /// The fixed filter chains and hooks.
    pub(crate) fn fixed_filter(
        &self,
        table: &mut Table,
        v4: bool,
        ipip_check: bool,
        vxlan_check: bool,
    ) {
        let wc = self.wildcard();
        table.hooks = vec![
            ("INPUT".into(), format!("-j {}", names::INPUT)),
            ("FORWARD".into(), format!("-j {}", names::FORWARD)),
            ("OUTPUT".into(), format!("-j {}", names::OUTPUT)),
        ];
        let mut input = Vec::new();
        if v4 && ipip_check {
            input.push(format!(
                "-p 4 -m set ! --match-set {} src -j DROP",
                names::HOSTS_SET
            ));
        }
        if v4 && vxlan_check {
            input.push(format!(
                "-p udp -m udp --dport {VXLAN_PORT} -m set ! --match-set {} src -j DROP",
                names::HOSTS_SET
            ));
        }
        input.push("-m conntrack --ctstate INVALID -j DROP".into());
        input.push("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into());
        input.push(format!("! -i {wc} -g {}", names::FROM_HOST_IF));
        if v4 {
            input.push("-p udp -m udp --sport 68 --dport 67 -j ACCEPT".into());
        } else {
            for t in [130, 131, 132, 133, 135, 136] {
                input.push(format!("-p icmpv6 -m icmp6 --icmpv6-type {t} -j ACCEPT"));
            }
            input.push("-p udp -m udp --sport 546 --dport 547 -j ACCEPT".into());
        }
        input.push("-p udp -m udp --dport 53 -j ACCEPT".into());
        match self.cfg.endpoint_to_host_action {
            EndpointToHostAction::Drop => input.push(format!(
                "{} -j DROP",
                comment("Drop all traffic from endpoints to host")
            )),
            EndpointToHostAction::Accept => {
                input.push(format!("-j {}", names::FROM_ENDPOINT));
                input.push("-j ACCEPT".into());
            }
            EndpointToHostAction::Return => input.push(format!("-j {}", names::FROM_ENDPOINT)),
        }
        table.chains.insert(names::INPUT.into(), input);
        table.chains.insert(
            names::OUTPUT.into(),
            vec![
                "-m conntrack --ctstate INVALID -j DROP".into(),
                "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
                format!("! -o {wc} -g {}", names::TO_HOST_IF),
            ],
        );
        table.chains.insert(
            names::FORWARD.into(),
            vec![
                format!("-i {wc} -m conntrack --ctstate INVALID -j DROP"),
                format!("-o {wc} -m conntrack --ctstate INVALID -j DROP"),
                format!("-i {wc} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
                format!("-o {wc} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
                format!("-i {wc} -j {}", names::FROM_ENDPOINT),
                format!("-o {wc} -j {}", names::TO_ENDPOINT),
                format!("-i {wc} -j ACCEPT"),
                format!("-o {wc} -j ACCEPT"),
            ],
        );
        table.chains.insert(names::FROM_HOST_IF.into(), Vec::new());
        table.chains.insert(names::TO_HOST_IF.into(), Vec::new());
    }
}

/// iptables' `-p` argument.
fn protocol_arg(p: Protocol) -> String {
    match p.number() {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// Splits a port list into multiport chunks of at most 15 slots (a range takes two).
/// `None` (or an empty list) is one unconstrained chunk.
pub(crate) fn port_chunks(ports: Option<&[PortRange]>) -> Vec<Option<String>> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![None];
    };
    let mut chunks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut slots = 0;
    for p in ports {
        let cost = if p.lo() == p.hi() { 1 } else { 2 };
        if slots + cost > 15 {
            chunks.push(Some(current.join(",")));
            current.clear();
            slots = 0;
        }
        current.push(p.to_string());
        slots += cost;
    }
    if !current.is_empty() {
        chunks.push(Some(current.join(",")));
    }
    chunks
}

/// The encapsulation device for traffic to `addr`, from the pool containing it.
pub(crate) fn encapsulation(
    state: &ClusterState,
    opts: &RenderOptions,
    addr: IpAddr,
) -> Option<&'static str> {
    let pool = state.pool_for(addr)?;
    if pool.ipip {
        Some(if opts.ipip_as_vxlan {
            VXLAN_DEVICE
        } else {
            IPIP_DEVICE
        })
    } else if pool.vxlan {
        Some(VXLAN_DEVICE)
    } else {
        None
    }
}

/// Local endpoints felix programs on `host`, by interface name (first endpoint wins a
/// name clash; the loser is reported).
pub(crate) fn local_interfaces<'a>(
    state: &'a ClusterState,
    ctx: &Ctx,
    host: &'a str,
    warnings: &mut Vec<String>,
) -> BTreeMap<&'a str, (&'a EndpointKey, &'a WorkloadEndpoint)> {
    let mut out: BTreeMap<&str, (&EndpointKey, &WorkloadEndpoint)> = BTreeMap::new();
    for (key, ep) in state.host_endpoints(host) {
        if !ep.is_active() {
            continue;
        }
        if !ctx.programs(ep) {
            warnings.push(format!(
                "endpoint {key}: interface {} lacks the prefix {:?}; not programmed",
                ep.name,
                ctx.prefix()
            ));
            continue;
        }
        if let Some((other, _)) = out.get(ep.name.as_str()) {
            warnings.push(format!(
                "endpoint {key}: interface {} already used by {other}; not programmed",
                ep.name
            ));
            continue;
        }
        out.insert(&ep.name, (key, ep));
    }
    out
}

/// Renders `host`'s plan. Fails only when the host's felix configuration is invalid
/// (felix would refuse to start).
pub fn render_host(state: &ClusterState, host: &str, opts: RenderOptions) -> Result<HostPlan> {
    let ctx = Ctx::new(state.felix_config(host)?);
    let mut warnings = Vec::new();
    let host_ipv4 = state.hosts.get(host).and_then(|h| h.ipv4());
    let locals = local_interfaces(state, &ctx, host, &mut warnings);

    // Profiles used by local endpoints, with their chains per family.
    let mut required: BTreeSet<&str> = BTreeSet::new();
    for (_, ep) in locals.values() {
        required.extend(ep.profile_ids.iter().map(String::as_str));
    }
    let mut filter = Table::new("filter");
    let mut filter6 = Table::new("filter");
    let mut sets_v4 = BTreeSet::new();
    let mut sets_v6 = BTreeSet::new();
    for p in &required {
        let rules = state.profiles.get(*p).and_then(|r| r.rules.as_ref());
        let (chains, sets) = ctx.profile_chains(p, rules, true);
        filter.chains.extend(chains);
        sets_v4.extend(sets);
        let (chains, sets) = ctx.profile_chains(p, rules, false);
        filter6.chains.extend(chains);
        sets_v6.extend(sets);
    }
    for (key, ep) in locals.values() {
        // Identical in both families: render once.
        for (name, body) in ctx.endpoint_chains(key, ep) {
            filter6.chains.insert(name.clone(), body.clone());
            filter.chains.insert(name, body);
        }
    }
    let dispatch = ctx.dispatch_chains(locals.keys().copied());
    filter.chains.extend(dispatch.iter().cloned());
    filter6.chains.extend(dispatch);

    // Tunnels.
    let pools_v4: Vec<_> = state.pools.values().filter(|p| p.cidr.is_ipv4()).collect();
    let wants_vxlan = pools_v4
        .iter()
        .any(|p| p.vxlan || (p.ipip && opts.ipip_as_vxlan));
    let ipip_on = ctx.cfg.ipip_enabled && !opts.ipip_as_vxlan;
    let tunnel = match (host_ipv4, wants_vxlan, ipip_on) {
        (Some(local), true, _) => Some(Tunnel::Vxlan {
            local,
            mac: vtep_mac(host),
            mtu: VXLAN_MTU,
        }),
        (_, _, true) => Some(Tunnel::IpIp {
            mtu: ctx.cfg.ipip_mtu,
            address: ctx.cfg.ipip_tunnel_addr,
        }),
        _ => None,
    };
    let vxlan_on = matches!(tunnel, Some(Tunnel::Vxlan { .. }));
    ctx.fixed_filter(&mut filter, true, ipip_on, vxlan_on);
    ctx.fixed_filter(&mut filter6, false, false, false);

    // ipsets.
    let mut ipsets = BTreeMap::new();
    for (names_set, v4) in [(&sets_v4, true), (&sets_v6, false)] {
        for name in names_set.iter() {
            ipsets.insert(name.clone(), tag_ipset(name, v4, &ctx, BTreeSet::new()));
        }
    }
    if !ipsets.is_empty() {
        fill_tag_sets(state, &mut ipsets);
    }
    let host_set_members: BTreeSet<String> = state
        .hosts
        .values()
        .filter_map(|h| h.ipv4())
        .map(|ip| ip.to_string())
        .collect();
    if ipip_on || vxlan_on {
        ipsets.insert(
            names::HOSTS_SET.into(),
            IpSet {
                name: names::HOSTS_SET.into(),
                set_type: SetType::HashIp,
                v4: true,
                max_elements: ctx.cfg.max_ipset_size,
                members: host_set_members,
            },
        );
    }

    // nat.
    let mut nat = Table::new("nat");
    nat.hooks = vec![
        ("PREROUTING".into(), format!("-j {}", names::NAT_PREROUTING)),
        (
            "POSTROUTING".into(),
            format!("-j {}", names::NAT_POSTROUTING),
        ),
    ];
    nat.chains.insert(
        names::NAT_PREROUTING.into(),
        vec![format!("-j {}", names::FIP_DNAT)],
    );
    let mut post = vec![format!("-j {}", names::FIP_SNAT)];
    let masq: Vec<_> = pools_v4.iter().filter(|p| p.masquerade).collect();
    if !masq.is_empty() {
        post.push(format!(
            "-m set --match-set {} src -m set ! --match-set {} dst -j MASQUERADE",
            names::MASQ_POOLS_SET,
            names::ALL_POOLS_SET
        ));
        let all: BTreeSet<String> = pools_v4.iter().map(|p| p.cidr.to_string()).collect();
        let masq_members: BTreeSet<String> = masq.iter().map(|p| p.cidr.to_string()).collect();
        for (name, members) in [
            (names::ALL_POOLS_SET, all),
            (names::MASQ_POOLS_SET, masq_members),
        ] {
            ipsets.insert(
                name.into(),
                IpSet {
                    name: name.into(),
                    set_type: SetType::HashNet,
                    v4: true,
                    max_elements: ctx.cfg.max_ipset_size,
                    members,
                },
            );
        }
    }
    if ipip_on && ctx.cfg.ipip_tunnel_addr.is_some() {
        post.push(format!(
            "-o {IPIP_DEVICE} -m addrtype ! --src-type LOCAL --limit-iface-out -m addrtype --src-type LOCAL -j MASQUERADE"
        ));
    }
    nat.chains.insert(names::NAT_POSTROUTING.into(), post);
    nat.chains.insert(names::FIP_DNAT.into(), Vec::new());
    nat.chains.insert(names::FIP_SNAT.into(), Vec::new());

    // Interfaces, local routes, static ARP.
    let mut interfaces = BTreeMap::new();
    let mut routes = BTreeMap::new();
    let mut neighbors = BTreeSet::new();
    for (name, (key, ep)) in &locals {
        let plan = interface_plan(key, ep);
        for r in local_routes(&plan) {
            routes.entry(r.dst()).or_insert(r);
        }
        neighbors.extend(local_neighbors(&plan));
        interfaces.insert((*name).to_string(), plan);
    }
    if opts.gateway_route_via_lo {
        let dst = IpNetwork::from(IpAddr::V4(WORKLOAD_GATEWAY));
        routes.insert(
            dst,
            Route::Local {
                dst,
                dev: "lo".into(),
            },
        );
    }

    // Remote routes and tunnel neighbours.
    let mut fdb = BTreeSet::new();
    if vxlan_on {
        for (name, rec) in &state.hosts {
            if name == host {
                continue;
            }
            if let Some(ip) = rec.ipv4() {
                let mac = vtep_mac(name);
                neighbors.insert(Neighbor {
                    ip: IpAddr::V4(ip),
                    mac,
                    dev: VXLAN_DEVICE.into(),
                });
                fdb.insert(FdbEntry {
                    mac,
                    dev: VXLAN_DEVICE.into(),
                    dst: IpAddr::V4(ip),
                });
            }
        }
    }
    if opts.routing == Routing::Static {
        for r in remote_routes(state, host, &opts, &mut warnings) {
            routes.entry(r.dst()).or_insert(r);
        }
    }
    let bird_conf = (opts.routing == Routing::Bird)
        .then(|| bird_conf(state, host, &opts))
        .flatten();
    if opts.routing == Routing::Bird && bird_conf.is_none() {
        warnings.push(format!("host {host} has no IPv4 address: no bird.conf"));
    }

    Ok(HostPlan {
        host: host.to_string(),
        options: opts,
        host_ipv4,
        interfaces,
        routes,
        neighbors,
        fdb,
        tunnel,
        ipsets,
        filter,
        nat,
        filter6,
        sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
        bird_conf,
        warnings,
    })
}

/// An empty tag set.
pub(crate) fn tag_ipset(name: &str, v4: bool, ctx: &Ctx, members: BTreeSet<String>) -> IpSet {
    IpSet {
        name: name.to_string(),
        set_type: SetType::HashIp,
        v4,
        max_elements: ctx.cfg.max_ipset_size,
        members,
    }
}

/// Fills every tag set in `ipsets` from the state (one pass over endpoints).
fn fill_tag_sets(state: &ClusterState, ipsets: &mut BTreeMap<String, IpSet>) {
    // Set names per (tag, family), computed once; `None` when the plan has no such set.
    let mut names_of: BTreeMap<(&str, bool), Option<String>> = BTreeMap::new();
    for ep in state.endpoints.values() {
        for p in &ep.profile_ids {
            let Some(rec) = state.profiles.get(p) else {
                continue;
            };
            for tag in &rec.tags {
                for addr in ep.addresses() {
                    let v4 = addr.is_ipv4();
                    let name = names_of.entry((tag.as_str(), v4)).or_insert_with(|| {
                        let n = names::tag_set(tag, v4);
                        ipsets.contains_key(&n).then_some(n)
                    });
                    if let Some(s) = name.as_ref().and_then(|n| ipsets.get_mut(n)) {
                        s.members.insert(addr.to_string());
                    }
                }
            }
        }
    }
}

/// The interface plan of a local endpoint.
pub(crate) fn interface_plan(key: &EndpointKey, ep: &WorkloadEndpoint) -> InterfacePlan {
    InterfacePlan {
        name: ep.name.clone(),
        endpoint: key.clone(),
        mac: ep.mac,
        ipv4: ep.ipv4_nets.iter().map(|n| n.ip()).collect(),
        ipv6: ep.ipv6_nets.iter().map(|n| n.ip()).collect(),
    }
}

/// `/32` and `/128` routes of a local interface.
pub(crate) fn local_routes(plan: &InterfacePlan) -> Vec<Route> {
    plan.ipv4
        .iter()
        .map(|a| IpAddr::V4(*a))
        .chain(plan.ipv6.iter().map(|a| IpAddr::V6(*a)))
        .map(|a| Route::Local {
            dst: IpNetwork::from(a),
            dev: plan.name.clone(),
        })
        .collect()
}

/// Static ARP entries of a local interface.
pub(crate) fn local_neighbors(plan: &InterfacePlan) -> Vec<Neighbor> {
    match plan.mac {
        Some(mac) => plan
            .ipv4
            .iter()
            .map(|a| Neighbor {
                ip: IpAddr::V4(*a),
                mac,
                dev: plan.name.clone(),
            })
            .collect(),
        None => Vec::new(),
    }
}

/// Routes to other hosts' blocks and borrowed addresses, and blackholes for own blocks.
pub(crate) fn remote_routes(
    state: &ClusterState,
    host: &str,
    opts: &RenderOptions,
    warnings: &mut Vec<String>,
) -> Vec<Route> {
    let mut out = Vec::new();
    for (block, owner) in &state.affinities {
        if !block.is_ipv4() {
            continue;
        }
        if owner == host {
            out.push(Route::Blackhole { dst: *block });
        } else if let Some(gw) = state.hosts.get(owner).and_then(|h| h.ipv4()) {
            out.push(Route::Via {
                dst: *block,
                gateway: IpAddr::V4(gw),
                dev: encapsulation(state, opts, block.ip()).map(String::from),
            });
        } else {
            warnings.push(format!(
                "block {block} is affine to {owner}, which has no IPv4: no route"
            ));
        }
    }
    for (key, ep) in &state.endpoints {
        if key.host == host || !ep.is_active() {
            continue;
        }
        let Some(gw) = state.hosts.get(&key.host).and_then(|h| h.ipv4()) else {
            continue;
        };
        for net in &ep.ipv4_nets {
            let addr = IpAddr::V4(net.ip());
            let in_own_block = state
                .affinities
                .iter()
                .any(|(b, owner)| owner == &key.host && b.contains(addr));
            if !in_own_block {
                out.push(remote_endpoint_route(state, opts, addr, gw));
            }
        }
    }
    out
}

/// The `/32` route to a remote workload address outside its host's blocks.
pub(crate) fn remote_endpoint_route(
    state: &ClusterState,
    opts: &RenderOptions,
    addr: IpAddr,
    gw: Ipv4Addr,
) -> Route {
    Route::Via {
        dst: IpNetwork::from(addr),
        gateway: IpAddr::V4(gw),
        dev: encapsulation(state, opts, addr).map(String::from),
    }
}

/// `bird.conf` for `host` (None without an IPv4).
pub(crate) fn bird_conf(state: &ClusterState, host: &str, opts: &RenderOptions) -> Option<String> {
    let me = state.hosts.get(host)?;
    let ip = me.ipv4()?;
    let bgp = state.bgp_config();
    let as_of = |rec: &crate::state::HostRecord| rec.as_number.unwrap_or(bgp.as_number);
    let peers = if bgp.node_mesh {
        state
            .hosts
            .iter()
            .filter(|(n, _)| n.as_str() != host)
            .filter_map(|(_, rec)| {
                Some(MeshPeer {
                    ip: rec.ipv4()?,
                    as_number: as_of(rec),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let blocks = state
        .affinities
        .iter()
        .filter(|(b, o)| o.as_str() == host && b.is_ipv4())
        .map(|(b, _)| *b)
        .collect();
    let pools = state
        .pools
        .values()
        .filter(|p| p.cidr.is_ipv4())
        .map(|p| (p.clone(), encapsulation(state, opts, p.cidr.ip())))
        .collect();
    Some(bird::render(&BirdInput {
        host,
        ip,
        as_number: as_of(me),
        peers,
        blocks,
        pools,
    }))
}

#[cfg(test)]
mod tests;
