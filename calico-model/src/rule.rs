//! Profile rules: the 0.22 rule fields, their JSON, and their validation.
//!
//! A rule is a JSON object whose fields are all optional and AND-ed together:
//!
//! | field | JSON | meaning |
//! |---|---|---|
//! | `action` | `"allow"` (default when missing), `"deny"`, `"log"` | what a match does |
//! | `protocol` | `"tcp"`, `"udp"`, `"icmp"`, `"icmpv6"`, `"sctp"`, `"udplite"` or an integer 1..=255 | IP protocol |
//! | `src_tag`, `dst_tag` | tag name | the peer's address is in the tag's set |
//! | `src_net`, `dst_net` | CIDR string | the peer's address is in the CIDR |
//! | `src_ports`, `dst_ports` | list of integers and `"lo:hi"` strings | only with `tcp`/`udp` |
//! | `icmp_type`, `icmp_code` | integers 0..=255 | only with `icmp`/`icmpv6`; code needs type |
//!
//! Invariants (checked by [`Rule::validate`], which every parse runs):
//! * ports only with tcp or udp; each range has `lo <= hi`;
//! * ICMP type/code only with `icmp`/`icmpv6`, code only with a type;
//! * `src_net` and `dst_net` are of one IP family, and that family agrees with `icmp`
//!   (IPv4) or `icmpv6` (IPv6).
//!
//! Unknown keys make the whole rule (and so, in felix, the whole profile) invalid; that
//! includes felix-only extensions (`!`-negations, selectors, `ip_version`, `log_prefix`)
//! and the `next-tier` action, which calicoctl 0.22 never writes.
//!
//! Caveat kept from felix: `icmp_type` 255 cannot be expressed to the kernel, and felix
//! replaces such a rule by an unconditional DROP. [`Rule::is_unconditional_drop`] says so,
//! and both [`crate::policy`] and [`crate::dataplane`] honour it.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::names::validate_profile_name;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Action {
    /// Accept (set the accept mark and return from the profile chain).
    #[default]
    Allow,
    /// Drop the packet immediately.
    Deny,
    /// Log the packet and carry on with the next rule.
    Log,
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Action {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Log => "log",
        }
    }
}

/// An IP protocol as a rule names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `tcp` (6).
    Tcp,
    /// `udp` (17).
    Udp,
    /// `icmp` (1), IPv4 only.
    Icmp,
    /// `icmpv6` (58), IPv6 only.
    Icmpv6,
    /// `sctp` (132).
    Sctp,
    /// `udplite` (136).
    Udplite,
    /// Any protocol by number, 1..=255.
    Number(u8),
}

impl Protocol {
    /// The IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
            Protocol::Sctp => 132,
            Protocol::Udplite => 136,
            Protocol::Number(n) => n,
        }
    }

    /// The protocol for a number, using the name when there is one.
    pub fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            132 => Protocol::Sctp,
            136 => Protocol::Udplite,
            n => Protocol::Number(n),
        }
    }

    /// Parses `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `udplite` or a number 1..=255.
    pub fn parse(s: &str) -> Result<Protocol> {
        Ok(match s {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            "icmpv6" => Protocol::Icmpv6,
            "sctp" => Protocol::Sctp,
            "udplite" => Protocol::Udplite,
            other => match other.parse::<u8>() {
                Ok(n) if n >= 1 => Protocol::Number(n),
                _ => {
                    return Err(Error::invalid(
                        "rule field protocol",
                        s,
                        "must be tcp, udp, icmp, icmpv6, sctp, udplite or a number 1..=255",
                    ))
                }
            },
        })
    }

    /// Whether port matches are allowed with this protocol (tcp and udp, as calicoctl).
    pub fn has_ports(self) -> bool {
        matches!(self.number(), 6 | 17)
    }

    /// Whether this is ICMP (v4) or ICMPv6.
    pub fn is_icmp(self) -> bool {
        matches!(self.number(), 1 | 58)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Icmp => f.write_str("icmp"),
            Protocol::Icmpv6 => f.write_str("icmpv6"),
            Protocol::Sctp => f.write_str("sctp"),
            Protocol::Udplite => f.write_str("udplite"),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            named => s.serialize_str(&named.to_string()),
        }
    }
}

/// An inclusive port range; a single port has `lo == hi`.
///
/// JSON: a single port is an integer (`80`), a range the string `"lo:hi"`; `"lo-hi"` and
/// `"80"` are accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// A range; `lo` must not exceed `hi`.
    pub fn new(lo: u16, hi: u16) -> Result<PortRange> {
        if lo > hi {
            return Err(Error::invalid(
                "port range",
                format!("{lo}:{hi}"),
                "start is above end",
            ));
        }
        Ok(PortRange { lo, hi })
    }

    /// One port.
    pub fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    /// First port.
    pub fn lo(self) -> u16 {
        self.lo
    }

    /// Last port (inclusive).
    pub fn hi(self) -> u16 {
        self.hi
    }

    /// Whether `port` is inside.
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    /// Parses `"80"`, `"80:90"` or `"80-90"`.
    pub fn parse(s: &str) -> Result<PortRange> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| Error::invalid("port", s, "ports are integers 0..=65535"))
        };
        match s.split_once([':', '-']) {
            Some((lo, hi)) => PortRange::new(port(lo)?, port(hi)?),
            None => Ok(PortRange::single(port(s)?)),
        }
    }

    fn from_json(field: &str, v: &Value) -> Result<PortRange> {
        match v {
            Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(p) => Ok(PortRange::single(p)),
                None => Err(Error::invalid(
                    format!("rule field {field}"),
                    n.to_string(),
                    "ports are 0..=65535",
                )),
            },
            Value::String(s) => PortRange::parse(s).map_err(|e| {
                Error::invalid(format!("rule field {field}"), s.clone(), e.to_string())
            }),
            other => Err(Error::invalid(
                format!("rule field {field}"),
                other.to_string(),
                "a port is an integer or a \"lo:hi\" string",
            )),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}:{}", self.lo, self.hi)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.lo == self.hi {
            s.serialize_u16(self.lo)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

/// One profile rule. Field order is the JSON order written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct Rule {
    /// What a match does.
    pub action: Action,
    /// IP protocol, any when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Source address must be in this tag's set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_tag: Option<String>,
    /// Source address must be in this CIDR.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_net")]
    pub src_net: Option<IpNetwork>,
    /// Source port must be in one of these ranges (tcp/udp only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ports: Option<Vec<PortRange>>,
    /// Destination address must be in this tag's set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_tag: Option<String>,
    /// Destination address must be in this CIDR.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_net")]
    pub dst_net: Option<IpNetwork>,
    /// Destination port must be in one of these ranges (tcp/udp only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_ports: Option<Vec<PortRange>>,
    /// ICMP type (icmp/icmpv6 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code (needs `icmp_type`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

fn ser_net<S: Serializer>(net: &Option<IpNetwork>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match net {
        Some(n) => s.serialize_str(&n.to_string()),
        None => s.serialize_none(),
    }
}

impl Rule {
    /// A rule with only an action (matches everything).
    pub fn new(action: Action) -> Rule {
        Rule {
            action,
            ..Rule::default()
        }
    }

    /// Checks the invariants listed in the module docs.
    pub fn validate(&self) -> Result<()> {
        for tag in [&self.src_tag, &self.dst_tag].into_iter().flatten() {
            validate_profile_name("rule tag", tag)?;
        }
        let has_ports = [&self.src_ports, &self.dst_ports]
            .iter()
            .any(|p| p.as_ref().is_some_and(|p| !p.is_empty()));
        if has_ports && !self.protocol.is_some_and(Protocol::has_ports) {
            let p = self
                .protocol
                .map_or_else(|| "any".to_string(), |p| p.to_string());
            return Err(Error::invalid(
                "rule",
                self.to_string(),
                format!("ports are not valid with protocol {p}"),
            ));
        }
        if self.icmp_type.is_some() && !self.protocol.is_some_and(Protocol::is_icmp) {
            return Err(Error::invalid(
                "rule",
                self.to_string(),
                "icmp_type needs protocol icmp or icmpv6",
            ));
        }
        if self.icmp_code.is_some() && self.icmp_type.is_none() {
            return Err(Error::invalid(
                "rule",
                self.to_string(),
                "icmp_code needs icmp_type",
            ));
        }
        let forced_v4 = match self.protocol.map(Protocol::number) {
            Some(1) => Some(true),
            Some(58) => Some(false),
            _ => None,
        };
        let families: Vec<bool> = [self.src_net, self.dst_net]
            .iter()
            .flatten()
            .map(IpNetwork::is_ipv4)
            .collect();
        let mut want = forced_v4;
        for v4 in families {
            match want {
                Some(w) if w != v4 => {
                    return Err(Error::invalid(
                        "rule",
                        self.to_string(),
                        "invalid or unmatching IP versions for src_net/dst_net",
                    ))
                }
                _ => want = Some(v4),
            }
        }
        Ok(())
    }

    /// The IP family this rule is restricted to (`Some(true)` = IPv4), if any: from
    /// `icmp`/`icmpv6` or from its CIDRs.
    pub fn ip_version(&self) -> Option<bool> {
        match self.protocol.map(Protocol::number) {
            Some(1) => return Some(true),
            Some(58) => return Some(false),
            _ => {}
        }
        self.src_net.or(self.dst_net).map(|n| n.is_ipv4())
    }

    /// Felix replaces a rule it cannot express (ICMP type 255) by an unconditional DROP.
    pub fn is_unconditional_drop(&self) -> bool {
        self.icmp_type == Some(255)
    }

    /// Tags this rule refers to.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.src_tag
            .iter()
            .chain(self.dst_tag.iter())
            .map(String::as_str)
    }

    /// Parses one rule object with field-named errors.
    pub fn from_json_object(obj: &Map<String, Value>) -> Result<Rule> {
        let mut rule = Rule::default();
        for (field, value) in obj {
            let bad = |reason: &str| {
                Error::invalid(format!("rule field {field}"), value.to_string(), reason)
            };
            let string = || value.as_str().ok_or_else(|| bad("must be a string"));
            match field.as_str() {
                "action" => {
                    rule.action =
                        match string()? {
                            "allow" => Action::Allow,
                            "deny" => Action::Deny,
                            "log" => Action::Log,
                            "next-tier" => return Err(bad(
                                "next-tier is only meaningful in tiered policy, not in profiles",
                            )),
                            _ => return Err(bad("must be allow, deny or log")),
                        }
                }
                "protocol" => {
                    rule.protocol = Some(match value {
                        Value::String(s) => Protocol::parse(s)?,
                        Value::Number(n) => match n.as_u64().and_then(|n| u8::try_from(n).ok()) {
                            Some(p) if p >= 1 => Protocol::from_number(p),
                            _ => return Err(bad("protocol numbers are 1..=255")),
                        },
                        _ => return Err(bad("must be a protocol name or number")),
                    })
                }
                "src_tag" | "dst_tag" => {
                    let tag = string()?.to_string();
                    validate_profile_name(&format!("rule field {field}"), &tag)?;
                    if field == "src_tag" {
                        rule.src_tag = Some(tag);
                    } else {
                        rule.dst_tag = Some(tag);
                    }
                }
                "src_net" | "dst_net" => {
                    let s = string()?;
                    let net: IpNetwork = s.parse().map_err(|_| bad("not a valid CIDR"))?;
                    if field == "src_net" {
                        rule.src_net = Some(net);
                    } else {
                        rule.dst_net = Some(net);
                    }
                }
                "src_ports" | "dst_ports" => {
                    let list = value
                        .as_array()
                        .ok_or_else(|| bad("must be a list of ports"))?;
                    let ports = list
                        .iter()
                        .map(|p| PortRange::from_json(field, p))
                        .collect::<Result<Vec<_>>>()?;
                    // felix reads an empty list as "no constraint" (Python truthiness).
                    let ports = Some(ports).filter(|p| !p.is_empty());
                    if field == "src_ports" {
                        rule.src_ports = ports;
                    } else {
                        rule.dst_ports = ports;
                    }
                }
                "icmp_type" | "icmp_code" => {
                    let n = value
                        .as_u64()
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| bad("out of range: must be an integer 0..=255"))?;
                    if field == "icmp_type" {
                        rule.icmp_type = Some(n);
                    } else {
                        rule.icmp_code = Some(n);
                    }
                }
                _ => {
                    return Err(Error::invalid(
                        "rule field",
                        field.clone(),
                        "unknown rule field",
                    ))
                }
            }
        }
        rule.validate()?;
        Ok(rule)
    }

    /// Whether the rule's address/port/protocol match fields accept a packet. Tags are
    /// resolved by `in_tag(tag, address)`. (Action is not considered.)
    pub fn matches(
        &self,
        packet: &crate::policy::Packet,
        in_tag: impl Fn(&str, IpAddr) -> bool,
    ) -> bool {
        if let Some(v4) = self.ip_version() {
            if packet.src.is_ipv4() != v4 {
                return false;
            }
        }
        if let Some(p) = self.protocol {
            if p.number() != packet.protocol.number() {
                return false;
            }
        }
        if let Some(tag) = &self.src_tag {
            if !in_tag(tag, packet.src) {
                return false;
            }
        }
        if let Some(tag) = &self.dst_tag {
            if !in_tag(tag, packet.dst) {
                return false;
            }
        }
        if let Some(net) = &self.src_net {
            if !net.contains(packet.src) {
                return false;
            }
        }
        if let Some(net) = &self.dst_net {
            if !net.contains(packet.dst) {
                return false;
            }
        }
        if let Some(ports) = self.src_ports.as_ref().filter(|p| !p.is_empty()) {
            if !packet
                .src_port
                .is_some_and(|p| ports.iter().any(|r| r.contains(p)))
            {
                return false;
            }
        }
        if let Some(ports) = self.dst_ports.as_ref().filter(|p| !p.is_empty()) {
            if !packet
                .dst_port
                .is_some_and(|p| ports.iter().any(|r| r.contains(p)))
            {
                return false;
            }
        }
        if let Some(t) = self.icmp_type {
            match packet.icmp {
                Some((pt, pc)) => {
                    if pt != t || self.icmp_code.is_some_and(|c| c != pc) {
                        return false;
                    }
                }
                None => return false,
            }
        }
        true
    }
}

impl TryFrom<Map<String, Value>> for Rule {
    type Error = Error;
    fn try_from(obj: Map<String, Value>) -> Result<Rule> {
        Rule::from_json_object(&obj)
    }
}

/// `calicoctl profile <P> rule show`'s pretty form, e.g. `allow from tag myprofile1`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action.as_str())?;
        if let Some(p) = self.protocol {
            write!(f, " {p}")?;
        }
        if let Some(t) = self.icmp_type {
            write!(f, " type {t}")?;
        }
        if let Some(c) = self.icmp_code {
            write!(f, " code {c}")?;
        }
        let side = |f: &mut fmt::Formatter<'_>,
                    word: &str,
                    ports: &Option<Vec<PortRange>>,
                    tag: &Option<String>,
                    net: &Option<IpNetwork>| {
            if ports.is_none() && tag.is_none() && net.is_none() {
                return Ok(());
            }
            write!(f, " {word}")?;
            if let Some(ports) = ports {
                let list: Vec<String> = ports.iter().map(PortRange::to_string).collect();
                write!(f, " ports {}", list.join(","))?;
            }
            if let Some(tag) = tag {
                write!(f, " tag {tag}")?;
            }
            if let Some(net) = net {
                write!(f, " cidr {net}")?;
            }
            Ok(())
        };
        side(f, "from", &self.src_ports, &self.src_tag, &self.src_net)?;
        side(f, "to", &self.dst_ports, &self.dst_tag, &self.dst_net)
    }
}

/// A profile's rules: the value of `/calico/v1/policy/profile/<name>/rules`,
/// `{"inbound_rules": [...], "outbound_rules": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Evaluated for traffic arriving at the endpoint, in order.
    #[serde(default)]
    pub inbound_rules: Vec<Rule>,
    /// Evaluated for traffic leaving the endpoint, in order.
    #[serde(default)]
    pub outbound_rules: Vec<Rule>,
}

impl Rules {
    /// The rules `calicoctl profile add <name>` creates: inbound allow from the profile's
    /// own tag, outbound allow everything.
    pub fn profile_default(name: &str) -> Rules {
        Rules {
            inbound_rules: vec![Rule {
                src_tag: Some(name.to_string()),
                ..Rule::new(Action::Allow)
            }],
            outbound_rules: vec![Rule::new(Action::Allow)],
        }
    }

    /// Parses the stored JSON, with errors naming the bad field.
    pub fn from_json(s: &str) -> Result<Rules> {
        serde_json::from_str(s).map_err(|e| Error::invalid("rules JSON", s, e.to_string()))
    }

    /// Compact JSON as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every tag referenced by any rule.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.inbound_rules
            .iter()
            .chain(self.outbound_rules.iter())
            .flat_map(Rule::tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Result<Rule> {
        let v: Value =
            serde_json::from_str(json).map_err(|e| Error::invalid("json", json, e.to_string()))?;
        match v {
            Value::Object(m) => Rule::from_json_object(&m),
            _ => Err(Error::invalid("json", json, "not an object")),
        }
    }

    #[test]
    fn default_profile_rules_json_is_calicoctls() {
        let r = Rules::profile_default("myprofile1");
        assert_eq!(
            r.to_json(),
            r#"{"inbound_rules":[{"action":"allow","src_tag":"myprofile1"}],"outbound_rules":[{"action":"allow"}]}"#
        );
        assert_eq!(Rules::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn rule_json_round_trips_every_field() {
        let json = r#"{"action":"deny","protocol":"tcp","src_tag":"a","src_net":"10.0.0.0/8","src_ports":[80,"1000:2000"],"dst_tag":"b","dst_net":"10.1.0.0/16","dst_ports":[443]}"#;
        let r = rule(json).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), json);
        let icmp = r#"{"action":"allow","protocol":"icmp","icmp_type":8,"icmp_code":0}"#;
        assert_eq!(serde_json::to_string(&rule(icmp).unwrap()).unwrap(), icmp);
        let num = r#"{"action":"allow","protocol":47}"#;
        assert_eq!(serde_json::to_string(&rule(num).unwrap()).unwrap(), num);
    }

    #[test]
    fn empty_port_lists_mean_no_constraint() {
        let r = rule(r#"{"dst_ports":[]}"#).unwrap();
        assert_eq!(r.dst_ports, None);
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"action":"allow"}"#);
    }

    #[test]
    fn missing_action_means_allow_and_dash_ranges_normalise() {
        let r = rule(r#"{"protocol":"udp","dst_ports":["53-54"]}"#).unwrap();
        assert_eq!(r.action, Action::Allow);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"action":"allow","protocol":"udp","dst_ports":["53:54"]}"#
        );
    }

    /// Table of invalid rules and the words their error must contain.
    #[test]
    fn invalid_rules_are_rejected_with_the_field_named() {
        let cases = [
            (r#"{"icmp_type":300,"protocol":"icmp"}"#, "icmp_type"),
            (r#"{"icmp_type":-1,"protocol":"icmp"}"#, "out of range"),
            (
                r#"{"protocol":"icmp","icmp_code":3}"#,
                "icmp_code needs icmp_type",
            ),
            (r#"{"icmp_type":3}"#, "icmp_type needs protocol"),
            (
                r#"{"protocol":"icmp","dst_ports":[80]}"#,
                "ports are not valid with protocol icmp",
            ),
            (
                r#"{"dst_ports":[80]}"#,
                "ports are not valid with protocol any",
            ),
            (r#"{"protocol":"tcp","dst_ports":[70000]}"#, "dst_ports"),
            (
                r#"{"protocol":"tcp","dst_ports":["90:80"]}"#,
                "start is above end",
            ),
            (r#"{"protocol":"tcp","src_ports":"80"}"#, "list of ports"),
            (r#"{"protocol":"bogus"}"#, "protocol"),
            (r#"{"protocol":0}"#, "1..=255"),
            (r#"{"src_net":"10.0.0.0/33"}"#, "not a valid CIDR"),
            (
                r#"{"src_net":"10.0.0.0/8","dst_net":"fd00::/64"}"#,
                "unmatching IP versions",
            ),
            (
                r#"{"protocol":"icmpv6","src_net":"10.0.0.0/8"}"#,
                "unmatching IP versions",
            ),
            (r#"{"src_tag":"bad tag"}"#, "src_tag"),
            (r#"{"action":"next-tier"}"#, "next-tier"),
            (r#"{"action":"accept"}"#, "allow, deny or log"),
            (r#"{"!src_tag":"a"}"#, "unknown rule field"),
            (r#"{"ip_version":4}"#, "unknown rule field"),
        ];
        for (json, needle) in cases {
            let err = rule(json).expect_err(json).to_string();
            assert!(err.contains(needle), "{json}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn rules_json_rejects_unknown_top_level_keys() {
        assert!(Rules::from_json(r#"{"inbound_rules":[],"outbound_rules":[],"extra":1}"#).is_err());
        assert!(Rules::from_json(r#"{"inbound_rules":[{"icmp_type":999}]}"#).is_err());
        assert_eq!(Rules::from_json("{}").unwrap(), Rules::default());
    }

    #[test]
    fn pretty_form_matches_calicoctl_rule_show() {
        let r = Rules::profile_default("myprofile1");
        assert_eq!(r.inbound_rules[0].to_string(), "allow from tag myprofile1");
        assert_eq!(r.outbound_rules[0].to_string(), "allow");
        let r = rule(
            r#"{"action":"deny","protocol":"tcp","src_ports":[1,"5:6"],"dst_net":"10.0.0.0/8"}"#,
        )
        .unwrap();
        assert_eq!(
            r.to_string(),
            "deny tcp from ports 1,5:6 to cidr 10.0.0.0/8"
        );
    }

    #[test]
    fn protocol_numbers_and_names_agree() {
        for n in 1..=255u8 {
            let p = Protocol::from_number(n);
            assert_eq!(p.number(), n);
            assert_eq!(Protocol::parse(&p.to_string()).unwrap(), p);
        }
        assert!(Protocol::parse("0").is_err());
        assert!(Protocol::parse("256").is_err());
    }
}
