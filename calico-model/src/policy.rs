//! Policy: whether a packet from one workload endpoint to another is allowed — the
//! reference semantics the rendered dataplane must agree with.
//!
//! The rules (spec/calico.md §4.3, felix 1.4):
//!
//! 1. A packet leaving a workload endpoint is checked against that endpoint's profiles'
//!    **outbound** rules; a packet arriving at one against the receiver's **inbound**
//!    rules. Endpoint-to-endpoint traffic passes both checks (on one host or two).
//! 2. An endpoint's profiles are tried in `profile_ids` order. Within a profile, rules
//!    are tried in order: the first matching `allow` accepts (for this direction), a
//!    matching `deny` drops, a matching `log` carries on; a profile with no match passes
//!    the packet on to the next profile. No profile accepting → drop. **No profiles →
//!    nothing allowed.**
//! 3. A profile that is listed but missing (or whose rules are invalid) drops
//!    everything at its position (felix's stub chain), so later profiles are not reached.
//! 4. A rule with `icmp_type` 255 is an unconditional drop (felix's replacement).
//! 5. A tag in a rule matches the peer's address when the address belongs to any
//!    endpoint, on any host, in any state, whose profiles carry the tag.
//! 6. An inactive endpoint is not programmed: everything to or from it drops.
//! 7. Replies to allowed traffic are allowed (conntrack); these functions judge the
//!    packet that opens the flow.
//!
//! [`allowed`] / [`decide`] are the reference, a direct reading of those rules over a
//! [`ClusterState`]. [`Policy`] is the same decision compiled for speed (tens of
//! millions of decisions per second); a property test keeps the two equal.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::model::{EndpointKey, WorkloadEndpoint};
use crate::rule::{Action, Protocol, Rule};
use crate::state::ClusterState;

/// The source port [`allowed`] assumes for TCP/UDP (an ephemeral port).
pub const EPHEMERAL_PORT: u16 = 40000;

/// The packet opening a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub protocol: Protocol,
    /// Source port (TCP/UDP).
    pub src_port: Option<u16>,
    /// Destination port (TCP/UDP).
    pub dst_port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

impl Packet {
    /// A packet of `protocol` from `src` to `dst`: TCP/UDP from [`EPHEMERAL_PORT`] to
    /// `port`; ICMP/ICMPv6 an echo request (type 8 / 128, code 0).
    pub fn new(src: IpAddr, dst: IpAddr, protocol: Protocol, port: Option<u16>) -> Packet {
        let (src_port, dst_port, icmp) = match protocol.number() {
            6 | 17 | 132 | 136 => (Some(EPHEMERAL_PORT), port, None),
            1 => (None, None, Some((8, 0))),
            58 => (None, None, Some((128, 0))),
            _ => (None, None, None),
        };
        Packet {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
            icmp,
        }
    }
}

/// Traffic direction relative to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Leaving the endpoint (outbound rules, `felix-from-*`).
    Outbound,
    /// Arriving at the endpoint (inbound rules, `felix-to-*`).
    Inbound,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The endpoints share no IP family.
    NoCommonFamily,
    /// The endpoint is inactive (not programmed).
    Inactive {
        /// The endpoint.
        endpoint: EndpointKey,
    },
    /// A profile listed by the endpoint does not exist or has invalid rules.
    MissingProfile {
        /// The endpoint.
        endpoint: EndpointKey,
        /// The profile.
        profile: String,
    },
    /// A rule denied it.
    DenyRule {
        /// The endpoint.
        endpoint: EndpointKey,
        /// The direction checked.
        direction: Direction,
        /// The profile holding the rule.
        profile: String,
        /// The rule's position (0-based).
        rule: usize,
    },
    /// No profile accepted it (includes "no profiles").
    NoMatch {
        /// The endpoint.
        endpoint: EndpointKey,
        /// The direction checked.
        direction: Direction,
    },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = |d: &Direction| match d {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        match self {
            Denial::NoCommonFamily => f.write_str("the endpoints share no IP family"),
            Denial::Inactive { endpoint } => write!(f, "endpoint {endpoint} is inactive"),
            Denial::MissingProfile { endpoint, profile } => {
                write!(
                    f,
                    "endpoint {endpoint} uses profile {profile:?}, which is missing or invalid"
                )
            }
            Denial::DenyRule {
                endpoint,
                direction,
                profile,
                rule,
            } => write!(
                f,
                "{} rule {} of profile {profile:?} denies it at endpoint {endpoint}",
                dir(direction),
                rule + 1
            ),
            Denial::NoMatch {
                endpoint,
                direction,
            } => {
                write!(
                    f,
                    "no profile of endpoint {endpoint} allows it ({})",
                    dir(direction)
                )
            }
        }
    }
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The packet is delivered.
    Allow,
    /// The packet is dropped, and why.
    Deny(Denial),
}

impl Verdict {
    /// True for [`Verdict::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// Whether `src` may open a flow of `protocol` to `dst` on `port` (see [`Packet::new`]
/// for the packet assumed). Uses the first address of the family both endpoints have
/// (IPv4 preferred). Unknown endpoints are treated as absent: nothing allowed.
/// Traffic from an endpoint to itself never leaves the container: allowed.
pub fn allowed(
    state: &ClusterState,
    src: &EndpointKey,
    dst: &EndpointKey,
    protocol: Protocol,
    port: Option<u16>,
) -> bool {
    let (Some(s), Some(d)) = (state.endpoints.get(src), state.endpoints.get(dst)) else {
        return false;
    };
    if src == dst {
        return true;
    }
    match pick_addresses(s, d) {
        Some((sa, da)) => decide(
            state,
            Some((src, s)),
            Some((dst, d)),
            &Packet::new(sa, da, protocol, port),
        )
        .is_allowed(),
        None => false,
    }
}

/// The first (source, destination) address pair of a shared family, IPv4 first.
pub fn pick_addresses(src: &WorkloadEndpoint, dst: &WorkloadEndpoint) -> Option<(IpAddr, IpAddr)> {
    for want_v4 in [true, false] {
        let s = src.addresses().find(|a| a.is_ipv4() == want_v4);
        let d = dst.addresses().find(|a| a.is_ipv4() == want_v4);
        if let (Some(s), Some(d)) = (s, d) {
            return Some((s, d));
        }
    }
    None
}

/// The reference decision for `packet` leaving `src` (a workload endpoint, or `None`
/// for a non-workload sender) towards `dst` (likewise).
pub fn decide(
    state: &ClusterState,
    src: Option<(&EndpointKey, &WorkloadEndpoint)>,
    dst: Option<(&EndpointKey, &WorkloadEndpoint)>,
    packet: &Packet,
) -> Verdict {
    if let Some((key, ep)) = src {
        if let Some(d) = check(state, key, ep, Direction::Outbound, packet) {
            return Verdict::Deny(d);
        }
    }
    if let Some((key, ep)) = dst {
        if let Some(d) = check(state, key, ep, Direction::Inbound, packet) {
            return Verdict::Deny(d);
        }
    }
    Verdict::Allow
}

/// `None` when the endpoint's profiles accept the packet in `dir`, else why not.
fn check(
    state: &ClusterState,
    key: &EndpointKey,
    ep: &WorkloadEndpoint,
    dir: Direction,
    packet: &Packet,
) -> Option<Denial> {
    if !ep.is_active() {
        return Some(Denial::Inactive {
            endpoint: key.clone(),
        });
    }
    let in_tag = |tag: &str, addr: IpAddr| state.tag_members(tag).contains(&addr);
    for profile in &ep.profile_ids {
        let Some(rules) = state.profiles.get(profile).and_then(|p| p.rules.as_ref()) else {
            return Some(Denial::MissingProfile {
                endpoint: key.clone(),
                profile: profile.clone(),
            });
        };
        let list = match dir {
            Direction::Outbound => &rules.outbound_rules,
            Direction::Inbound => &rules.inbound_rules,
        };
        for (i, rule) in list.iter().enumerate() {
            let deny = || Denial::DenyRule {
                endpoint: key.clone(),
                direction: dir,
                profile: profile.clone(),
                rule: i,
            };
            if rule.is_unconditional_drop() {
                return Some(deny());
            }
            if rule.matches(packet, in_tag) {
                match rule.action {
                    Action::Allow => return None,
                    Action::Deny => return Some(deny()),
                    Action::Log => {}
                }
            }
        }
    }
    Some(Denial::NoMatch {
        endpoint: key.clone(),
        direction: dir,
    })
}

/// Index of an endpoint inside a [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointId(u32);

/// A rule with tags interned and ports flattened.
#[derive(Debug, Clone)]
struct CompiledRule {
    action: Action,
    drop_all: bool,
    v4: Option<bool>,
    protocol: Option<u8>,
    src_tag: Option<u32>,
    dst_tag: Option<u32>,
    src_net: Option<IpNetwork>,
    dst_net: Option<IpNetwork>,
    src_ports: Option<Box<[(u16, u16)]>>,
    dst_ports: Option<Box<[(u16, u16)]>>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
}

impl CompiledRule {
    fn new(rule: &Rule, intern: &mut impl FnMut(&str) -> u32) -> CompiledRule {
        let ports = |p: &Option<Vec<crate::rule::PortRange>>| {
            p.as_ref()
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(|r| (r.lo(), r.hi())).collect::<Box<[_]>>())
        };
        CompiledRule {
            action: rule.action,
            drop_all: rule.is_unconditional_drop(),
            v4: rule.ip_version(),
            protocol: rule.protocol.map(Protocol::number),
            src_tag: rule.src_tag.as_deref().map(&mut *intern),
            dst_tag: rule.dst_tag.as_deref().map(&mut *intern),
            src_net: rule.src_net,
            dst_net: rule.dst_net,
            src_ports: ports(&rule.src_ports),
            dst_ports: ports(&rule.dst_ports),
            icmp_type: rule.icmp_type,
            icmp_code: rule.icmp_code,
        }
    }

    /// Whether the rule matches; `src_tags`/`dst_tags` are the tag bitsets of the
    /// packet's addresses.
    #[inline]
    fn matches(&self, p: &Packet, src_tags: &[u64], dst_tags: &[u64]) -> bool {
        let has = |bits: &[u64], t: u32| {
            bits.get((t / 64) as usize)
                .is_some_and(|w| w & (1u64 << (t % 64)) != 0)
        };
        let in_ports = |ranges: &[(u16, u16)], port: Option<u16>| {
            port.is_some_and(|port| ranges.iter().any(|(a, b)| *a <= port && port <= *b))
        };
        self.v4.is_none_or(|v4| p.src.is_ipv4() == v4)
            && self.protocol.is_none_or(|n| n == p.protocol.number())
            && self.src_tag.is_none_or(|t| has(src_tags, t))
            && self.dst_tag.is_none_or(|t| has(dst_tags, t))
            && self.src_net.is_none_or(|n| n.contains(p.src))
            && self.dst_net.is_none_or(|n| n.contains(p.dst))
            && self
                .src_ports
                .as_deref()
                .is_none_or(|r| in_ports(r, p.src_port))
            && self
                .dst_ports
                .as_deref()
                .is_none_or(|r| in_ports(r, p.dst_port))
            && self.icmp_type.is_none_or(|t| {
                p.icmp
                    .is_some_and(|(pt, pc)| pt == t && self.icmp_code.is_none_or(|c| c == pc))
            })
    }
}

#[derive(Debug, Clone)]
struct CompiledProfile {
    inbound: Box<[CompiledRule]>,
    outbound: Box<[CompiledRule]>,
}

/// One address of an endpoint with the tags it belongs to (a bitset by tag id).
#[derive(Debug, Clone)]
struct TaggedAddr {
    addr: IpAddr,
    tags: Box<[u64]>,
}

#[derive(Debug, Clone)]
struct CompiledEndpoint {
    active: bool,
    /// `None` entries are missing profiles.
    profiles: Box<[Option<u32>]>,
    v4: Option<TaggedAddr>,
    v6: Option<TaggedAddr>,
}

/// [`decide`] compiled: profiles, tags and endpoints interned; each endpoint address
/// carries the bitset of tags whose sets contain it, so a decision does no hashing.
/// Build once per state ([`Policy::new`]); rebuild after changes.
#[derive(Debug, Clone)]
pub struct Policy {
    ids: HashMap<EndpointKey, EndpointId>,
    endpoints: Vec<CompiledEndpoint>,
    profiles: Vec<CompiledProfile>,
}

impl Policy {
    /// Compiles `state`.
    pub fn new(state: &ClusterState) -> Policy {
        let mut tag_ids: HashMap<String, u32> = HashMap::new();
        let mut intern = |t: &str| {
            let n = u32::try_from(tag_ids.len()).unwrap_or(u32::MAX);
            *tag_ids.entry(t.to_string()).or_insert(n)
        };
        let mut profile_ids: HashMap<&str, u32> = HashMap::new();
        let mut profiles = Vec::new();
        for (name, rec) in &state.profiles {
            let Some(rules) = &rec.rules else { continue };
            let inbound = rules
                .inbound_rules
                .iter()
                .map(|r| CompiledRule::new(r, &mut intern))
                .collect();
            let outbound = rules
                .outbound_rules
                .iter()
                .map(|r| CompiledRule::new(r, &mut intern))
                .collect();
            profile_ids.insert(name, u32::try_from(profiles.len()).unwrap_or(u32::MAX));
            profiles.push(CompiledProfile { inbound, outbound });
        }
        let words = tag_ids.len().div_ceil(64).max(1);
        // Address -> tags containing it (only tags some rule uses).
        let mut addr_tags: HashMap<IpAddr, Vec<u64>> = HashMap::new();
        for ep in state.endpoints.values() {
            for p in &ep.profile_ids {
                let Some(rec) = state.profiles.get(p) else {
                    continue;
                };
                for t in &rec.tags {
                    let Some(&id) = tag_ids.get(t) else { continue };
                    for a in ep.addresses() {
                        let bits = addr_tags.entry(a).or_insert_with(|| vec![0; words]);
                        if let Some(w) = bits.get_mut((id / 64) as usize) {
                            *w |= 1u64 << (id % 64);
                        }
                    }
                }
            }
        }
        let tagged = |a: Option<IpAddr>| {
            a.map(|addr| TaggedAddr {
                addr,
                tags: addr_tags
                    .get(&addr)
                    .cloned()
                    .unwrap_or_else(|| vec![0; words])
                    .into_boxed_slice(),
            })
        };
        let mut ids = HashMap::new();
        let mut endpoints = Vec::new();
        for (key, ep) in &state.endpoints {
            ids.insert(
                key.clone(),
                EndpointId(u32::try_from(endpoints.len()).unwrap_or(u32::MAX)),
            );
            endpoints.push(CompiledEndpoint {
                active: ep.is_active(),
                profiles: ep
                    .profile_ids
                    .iter()
                    .map(|p| profile_ids.get(p.as_str()).copied())
                    .collect(),
                v4: tagged(ep.addresses().find(IpAddr::is_ipv4)),
                v6: tagged(ep.addresses().find(IpAddr::is_ipv6)),
            });
        }
        Policy {
            ids,
            endpoints,
            profiles,
        }
    }

    /// The id of an endpoint, if it is in the compiled state.
    pub fn endpoint_id(&self, key: &EndpointKey) -> Option<EndpointId> {
        self.ids.get(key).copied()
    }

    /// [`allowed`], compiled.
    pub fn allowed(
        &self,
        src: EndpointId,
        dst: EndpointId,
        protocol: Protocol,
        port: Option<u16>,
    ) -> bool {
        if src == dst {
            return true;
        }
        let (Some(s), Some(d)) = (
            self.endpoints.get(src.0 as usize),
            self.endpoints.get(dst.0 as usize),
        ) else {
            return false;
        };
        let (sa, da) = match (&s.v4, &d.v4, &s.v6, &d.v6) {
            (Some(a), Some(b), _, _) | (_, _, Some(a), Some(b)) => (a, b),
            _ => return false,
        };
        let packet = Packet::new(sa.addr, da.addr, protocol, port);
        self.passes(s, Direction::Outbound, &packet, sa, da)
            && self.passes(d, Direction::Inbound, &packet, sa, da)
    }

    #[inline]
    fn passes(
        &self,
        ep: &CompiledEndpoint,
        dir: Direction,
        packet: &Packet,
        src: &TaggedAddr,
        dst: &TaggedAddr,
    ) -> bool {
        if !ep.active {
            return false;
        }
        for p in ep.profiles.iter() {
            let Some(profile) = p.and_then(|p| self.profiles.get(p as usize)) else {
                return false;
            };
            let rules = match dir {
                Direction::Outbound => &profile.outbound,
                Direction::Inbound => &profile.inbound,
            };
            for r in rules.iter() {
                if r.drop_all {
                    return false;
                }
                if r.matches(packet, &src.tags, &dst.tags) {
                    match r.action {
                        Action::Allow => return true,
                        Action::Deny => return false,
                        Action::Log => {}
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use crate::rule::Rules;

    fn state_with(eps: &[(&str, &str, &str, &[&str])], profiles: &[(&str, Rules)]) -> ClusterState {
        let mut s = ClusterState::new();
        for (host, id, ip, profs) in eps {
            let key = EndpointKey::new(host, "docker", id, id).unwrap();
            let mut ep = WorkloadEndpoint::new(
                &format!("cali{id}"),
                None,
                vec![ip.parse().unwrap()],
                vec![],
            );
            ep.profile_ids = profs.iter().map(|p| p.to_string()).collect();
            s.apply_key(&layout::endpoint(&key), Some(&ep.to_json()));
        }
        for (name, rules) in profiles {
            s.apply_key(&layout::profile_tags(name), Some(&format!(r#"["{name}"]"#)));
            s.apply_key(&layout::profile_rules(name), Some(&rules.to_json()));
        }
        s
    }

    fn key(host: &str, id: &str) -> EndpointKey {
        EndpointKey::new(host, "docker", id, id).unwrap()
    }

    /// The tutorial: same profile talks (across hosts too), different profiles do not,
    /// no profile talks to nothing.
    #[test]
    fn tutorial_semantics() {
        let s = state_with(
            &[
                ("a", "c1", "10.20.10.1/32", &["myprofile1"]),
                ("a", "c2", "10.20.10.2/32", &["myprofile2"]),
                ("b", "c3", "10.20.10.3/32", &["myprofile1"]),
                ("b", "c4", "10.20.10.4/32", &[]),
            ],
            &[
                ("myprofile1", Rules::profile_default("myprofile1")),
                ("myprofile2", Rules::profile_default("myprofile2")),
            ],
        );
        let icmp = Protocol::Icmp;
        let (c1, c2, c3, c4) = (
            key("a", "c1"),
            key("a", "c2"),
            key("b", "c3"),
            key("b", "c4"),
        );
        let table = [
            (&c1, &c3, true),
            (&c3, &c1, true),
            (&c1, &c2, false),
            (&c2, &c1, false),
            (&c3, &c2, false),
            (&c4, &c1, false),
            (&c1, &c4, false),
            (&c1, &c1, true),
        ];
        let compiled = Policy::new(&s);
        for (src, dst, want) in table {
            assert_eq!(allowed(&s, src, dst, icmp, None), want, "{src} -> {dst}");
            let (si, di) = (
                compiled.endpoint_id(src).unwrap(),
                compiled.endpoint_id(dst).unwrap(),
            );
            assert_eq!(
                compiled.allowed(si, di, icmp, None),
                want,
                "compiled {src} -> {dst}"
            );
        }
        let s1 = s.endpoints.get(&c2).unwrap();
        let d1 = s.endpoints.get(&c1).unwrap();
        let p = Packet::new(
            "10.20.10.2".parse().unwrap(),
            "10.20.10.1".parse().unwrap(),
            icmp,
            None,
        );
        let v = decide(&s, Some((&c2, s1)), Some((&c1, d1)), &p);
        assert_eq!(
            v,
            Verdict::Deny(Denial::NoMatch {
                endpoint: c1,
                direction: Direction::Inbound
            })
        );
    }

    #[test]
    fn profile_order_missing_profiles_and_deny() {
        let web = Rules {
            inbound_rules: vec![
                Rule {
                    protocol: Some(Protocol::Tcp),
                    dst_ports: Some(vec![crate::rule::PortRange::single(22)]),
                    ..Rule::new(Action::Deny)
                },
                Rule {
                    protocol: Some(Protocol::Tcp),
                    ..Rule::new(Action::Allow)
                },
            ],
            outbound_rules: vec![Rule::new(Action::Allow)],
        };
        let s = state_with(
            &[
                ("a", "c1", "10.0.0.1/32", &["open"]),
                ("a", "c2", "10.0.0.2/32", &["web", "open"]),
                ("a", "c3", "10.0.0.3/32", &["ghost", "open"]),
            ],
            &[
                ("web", web),
                (
                    "open",
                    Rules {
                        inbound_rules: vec![Rule::new(Action::Allow)],
                        outbound_rules: vec![Rule::new(Action::Allow)],
                    },
                ),
            ],
        );
        let (c1, c2, c3) = (key("a", "c1"), key("a", "c2"), key("a", "c3"));
        assert!(allowed(&s, &c1, &c2, Protocol::Tcp, Some(80)));
        assert!(
            !allowed(&s, &c1, &c2, Protocol::Tcp, Some(22)),
            "deny in the first profile is final"
        );
        assert!(
            allowed(&s, &c1, &c2, Protocol::Udp, Some(53)),
            "no match in web falls through to open"
        );
        assert!(
            !allowed(&s, &c1, &c3, Protocol::Tcp, Some(80)),
            "missing profile drops everything"
        );
        assert!(!allowed(&s, &c3, &c1, Protocol::Tcp, Some(80)));
    }

    #[test]
    fn inactive_and_icmp_255() {
        let mut s = state_with(
            &[
                ("a", "c1", "10.0.0.1/32", &["p"]),
                ("a", "c2", "10.0.0.2/32", &["p"]),
            ],
            &[("p", Rules::profile_default("p"))],
        );
        assert!(allowed(
            &s,
            &key("a", "c1"),
            &key("a", "c2"),
            Protocol::Udp,
            Some(1)
        ));
        let mut ep = s.endpoints.get(&key("a", "c2")).unwrap().clone();
        ep.state = crate::model::EndpointState::Inactive;
        s.apply_key(&layout::endpoint(&key("a", "c2")), Some(&ep.to_json()));
        assert!(!allowed(
            &s,
            &key("a", "c1"),
            &key("a", "c2"),
            Protocol::Udp,
            Some(1)
        ));
        // The inactive endpoint's address still counts for its tag (felix's tag index).
        assert!(s
            .tag_members("p")
            .contains(&"10.0.0.2".parse::<IpAddr>().unwrap()));
        let rules = Rules {
            inbound_rules: vec![
                Rule {
                    protocol: Some(Protocol::Icmp),
                    icmp_type: Some(255),
                    ..Rule::new(Action::Allow)
                },
                Rule::new(Action::Allow),
            ],
            outbound_rules: vec![Rule::new(Action::Allow)],
        };
        s.apply_key(&layout::profile_rules("p"), Some(&rules.to_json()));
        ep.state = crate::model::EndpointState::Active;
        s.apply_key(&layout::endpoint(&key("a", "c2")), Some(&ep.to_json()));
        assert!(!allowed(
            &s,
            &key("a", "c1"),
            &key("a", "c2"),
            Protocol::Tcp,
            Some(1)
        ));
    }
}
