//! The Calico 0.22 objects: hosts, pools, workload endpoints, profiles and configuration,
//! with their stored JSON and their validation.
//!
//! Every type here is plain data with public fields plus a `validate` method; the typed
//! store ([`crate::store`]) validates before every write and after every read, so values
//! that come out of a store, or go into one, always satisfy the invariants documented on
//! each type. JSON encodings are written out on each type and match what libcalico 0.17
//! (calicoctl 0.22) writes, so Calico's own tools read our data and we read theirs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::names::{validate_interface_name, validate_key_segment, validate_profile_name};
use crate::rule::Rules;

/// The default BGP AS number (`/calico/bgp/v1/global/as_num`).
pub const DEFAULT_AS_NUMBER: u32 = 64511;

/// The IPAM block prefix length for IPv4 pools; a pool must be at least this big.
pub const BLOCK_PREFIX_V4: u8 = 26;

/// The IPAM block prefix length for IPv6 pools.
pub const BLOCK_PREFIX_V6: u8 = 122;

/// Parses a BGP AS number: plain (`64511`) or dotted (`1.10` = 65536 * 1 + 10).
pub fn parse_as_number(s: &str) -> Result<u32> {
    let bad = || {
        Error::invalid(
            "AS number",
            s,
            "must be 0..=4294967295 or dotted a.b with a, b in 0..=65535",
        )
    };
    match s.split_once('.') {
        Some((a, b)) => {
            let a: u16 = a.parse().map_err(|_| bad())?;
            let b: u16 = b.parse().map_err(|_| bad())?;
            Ok(65536 * u32::from(a) + u32::from(b))
        }
        None => s.parse::<u32>().map_err(|_| bad()),
    }
}

/// Parses a CIDR (or a bare address, as a host route) and clears host bits, as
/// `calicoctl pool add` normalises pools.
pub fn parse_cidr_normalised(what: &str, s: &str) -> Result<IpNetwork> {
    let net: IpNetwork = s
        .parse()
        .map_err(|e| Error::invalid(what, s, format!("not a valid CIDR: {e}")))?;
    IpNetwork::new(net.network(), net.prefix()).map_err(|e| Error::invalid(what, s, e.to_string()))
}

/// A registered compute host (`calicoctl node` / calico-node's `startup.py`).
///
/// Stored across several keys (all written by [`crate::store::CalicoStore::register_host`]):
/// `/calico/v1/host/<name>/bird_ip` = IPv4, `/calico/bgp/v1/host/<name>/ip_addr_v4` =
/// IPv4, `.../ip_addr_v6` = IPv6 or `""`, `.../as_num` = AS (absent = global default),
/// `/calico/v1/host/<name>/config/DefaultEndpointToHostAction` = `RETURN`,
/// `.../config/marker` = `created` and the directory `/calico/v1/host/<name>/workload`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host {
    /// The Calico host id (`HOSTNAME`), one etcd key segment.
    pub name: String,
    /// The host's IPv4 address: BGP router id and next hop for its workloads.
    pub ipv4: Ipv4Addr,
    /// The host's IPv6 address, if any.
    pub ipv6: Option<Ipv6Addr>,
    /// The host's own AS number; `None` inherits the global one.
    pub as_number: Option<u32>,
}

impl Host {
    /// Checks the name.
    pub fn validate(&self) -> Result<()> {
        validate_key_segment("host name", &self.name)
    }
}

/// An IP pool, `/calico/v1/ipam/v<4|6>/pool/<cidr with / as ->`.
///
/// JSON (keys written only when they differ from the reader's default):
/// `{"cidr": "10.20.10.0/24", "ipip": "tunl0", "masquerade": true}`, plus `"ipam": false`
/// for Docker-plugin pools outside Calico IPAM, `"disabled": true` while a pool is being
/// removed, and (extension, ignored by Calico 0.22) `"vxlan": "vxlan.calico"`.
///
/// Invariants: `cidr` has no host bits set; IPv4 pools are /26 or bigger, IPv6 /122 or
/// bigger; `ipip` only on IPv4 pools; `ipip` and `vxlan` not both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pool {
    /// The pool's network.
    pub cidr: IpNetwork,
    /// Cross-host traffic to this pool goes through IP-in-IP (`tunl0`).
    pub ipip: bool,
    /// Cross-host traffic to this pool goes through VXLAN (`vxlan.calico`); an extension
    /// for kernels without IP-in-IP.
    pub vxlan: bool,
    /// Traffic from this pool to outside all pools is masqueraded (`nat-outgoing`).
    pub masquerade: bool,
    /// Calico IPAM allocates from it (false for Docker default-IPAM pools).
    pub ipam: bool,
    /// Being removed: no new blocks.
    pub disabled: bool,
}

impl Pool {
    /// A plain enabled Calico-IPAM pool (host bits cleared).
    pub fn new(cidr: IpNetwork) -> Pool {
        let cidr = IpNetwork::new(cidr.network(), cidr.prefix()).unwrap_or(cidr);
        Pool {
            cidr,
            ipip: false,
            vxlan: false,
            masquerade: false,
            ipam: true,
            disabled: false,
        }
    }

    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<()> {
        let s = self.cidr.to_string();
        if self.cidr.network() != self.cidr.ip() {
            return Err(Error::invalid("pool CIDR", s, "host bits are set"));
        }
        let (max, fam) = if self.cidr.is_ipv4() {
            (BLOCK_PREFIX_V4, "IPv4")
        } else {
            (BLOCK_PREFIX_V6, "IPv6")
        };
        if self.cidr.prefix() > max {
            return Err(Error::invalid(
                "pool CIDR",
                s,
                format!("an {fam} pool must have a prefix length of {max} or lower"),
            ));
        }
        if self.ipip && self.cidr.is_ipv6() {
            return Err(Error::invalid(
                "pool",
                s,
                "IP in IP not supported for IPv6 pools",
            ));
        }
        if self.ipip && self.vxlan {
            return Err(Error::invalid("pool", s, "ipip and vxlan are exclusive"));
        }
        Ok(())
    }

    /// The stored JSON.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Stored<'a> {
            cidr: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            ipip: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            vxlan: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            masquerade: Option<bool>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ipam: Option<bool>,
            #[serde(skip_serializing_if = "Option::is_none")]
            disabled: Option<bool>,
        }
        let stored = Stored {
            cidr: self.cidr.to_string(),
            ipip: self.ipip.then_some("tunl0"),
            vxlan: self.vxlan.then_some("vxlan.calico"),
            masquerade: self.masquerade.then_some(true),
            ipam: (!self.ipam).then_some(false),
            disabled: self.disabled.then_some(true),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Parses the stored JSON (Python truthiness for `ipip`/`vxlan`/flags).
    pub fn from_json(s: &str) -> Result<Pool> {
        let bad = |reason: String| Error::invalid("pool JSON", s, reason);
        let v: Value = serde_json::from_str(s).map_err(|e| bad(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| bad("not an object".into()))?;
        let cidr = obj
            .get("cidr")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing \"cidr\"".into()))?;
        let mut pool = Pool::new(parse_cidr_normalised("pool CIDR", cidr)?);
        pool.ipip = obj.get("ipip").is_some_and(truthy);
        pool.vxlan = obj.get("vxlan").is_some_and(truthy);
        pool.masquerade = obj.get("masquerade").is_some_and(truthy);
        pool.ipam = obj.get("ipam").is_none_or(truthy);
        pool.disabled = obj.get("disabled").is_some_and(truthy);
        pool.validate()?;
        Ok(pool)
    }
}

/// Python's truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The four ids in an endpoint's key:
/// `/calico/v1/host/<host>/workload/<orchestrator>/<workload>/endpoint/<endpoint>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    /// Host the workload runs on.
    pub host: String,
    /// Orchestrator id: `docker`, `libnetwork`, `namespace`, `cni`...
    pub orchestrator: String,
    /// Workload id, e.g. a 64-hex container id.
    pub workload: String,
    /// Endpoint id, e.g. 32-hex (calicoctl) or 64-hex (libnetwork).
    pub endpoint: String,
}

impl EndpointKey {
    /// Builds and validates a key.
    pub fn new(
        host: &str,
        orchestrator: &str,
        workload: &str,
        endpoint: &str,
    ) -> Result<EndpointKey> {
        let key = EndpointKey {
            host: host.into(),
            orchestrator: orchestrator.into(),
            workload: workload.into(),
            endpoint: endpoint.into(),
        };
        key.validate()?;
        Ok(key)
    }

    /// Checks every segment.
    pub fn validate(&self) -> Result<()> {
        validate_key_segment("host name", &self.host)?;
        validate_key_segment("orchestrator id", &self.orchestrator)?;
        validate_key_segment("workload id", &self.workload)?;
        validate_key_segment("endpoint id", &self.endpoint)
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.host, self.orchestrator, self.workload, self.endpoint
        )
    }
}

/// A MAC address, written lower-case `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<MacAddr> {
        let bad = || {
            Error::invalid(
                "MAC address",
                s,
                "expected six hex octets separated by ':' or '-'",
            )
        };
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Whether felix programs an endpoint.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// Programmed (also the reading of a missing `state`).
    #[default]
    Active,
    /// Not programmed: no routes, no chains, its interface falls to the dispatch DROP.
    Inactive,
}

/// A workload endpoint: one container interface.
///
/// JSON (libcalico `Endpoint.to_json`):
/// `{"state": "active", "name": "cali1e5a4c3f0b8", "mac": "5e:2a:9c:11:04:7d",
/// "profile_ids": ["myprofile1"], "labels": {}, "ipv4_nets": ["10.20.10.1/32"],
/// "ipv6_nets": []}`; optional `ipv4_gateway` / `ipv6_gateway`; the legacy single
/// `profile_id` is read as a one-element `profile_ids`; any other keys (e.g. `ipv4_nat`)
/// are kept verbatim in [`WorkloadEndpoint::extra`] so rewrites do not lose them.
///
/// Invariants: `name` is a valid interface name; profile ids are valid names and listed
/// once; nets are sorted (as written) and of their field's family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    /// `active` or `inactive`.
    pub state: EndpointState,
    /// Host-side interface name (`cali` + 11 characters of the endpoint id).
    pub name: String,
    /// MAC of the container-side interface, if known.
    pub mac: Option<MacAddr>,
    /// Profiles, in evaluation order.
    pub profile_ids: Vec<String>,
    /// Labels (`{}` in this era).
    pub labels: BTreeMap<String, String>,
    /// IPv4 networks (normally /32).
    pub ipv4_nets: Vec<Ipv4Network>,
    /// IPv6 networks (normally /128).
    pub ipv6_nets: Vec<Ipv6Network>,
    /// Optional IPv4 gateway (read by felix, not written by calicoctl).
    pub ipv4_gateway: Option<Ipv4Addr>,
    /// Optional IPv6 gateway.
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// Keys this model does not interpret, kept verbatim.
    pub extra: Map<String, Value>,
}

impl WorkloadEndpoint {
    /// An active endpoint with no profiles (what `calicoctl container add` writes).
    pub fn new(
        name: &str,
        mac: Option<MacAddr>,
        ipv4_nets: Vec<Ipv4Network>,
        ipv6_nets: Vec<Ipv6Network>,
    ) -> Self {
        let mut ep = WorkloadEndpoint {
            state: EndpointState::Active,
            name: name.into(),
            mac,
            profile_ids: Vec::new(),
            labels: BTreeMap::new(),
            ipv4_nets,
            ipv6_nets,
            ipv4_gateway: None,
            ipv6_gateway: None,
            extra: Map::new(),
        };
        ep.ipv4_nets.sort();
        ep.ipv6_nets.sort();
        ep
    }

    /// The interface name calicoctl derives from an endpoint id: `cali` + its first 11
    /// characters.
    pub fn interface_name_for(endpoint_id: &str) -> String {
        let prefix: String = endpoint_id.chars().take(11).collect();
        format!("cali{prefix}")
    }

    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<()> {
        validate_interface_name(&self.name)?;
        for (i, p) in self.profile_ids.iter().enumerate() {
            validate_profile_name("profile id", p)?;
            if self
                .profile_ids
                .get(..i)
                .is_some_and(|before| before.contains(p))
            {
                return Err(Error::invalid(
                    "endpoint profile_ids",
                    p.clone(),
                    "profile listed more than once",
                ));
            }
        }
        Ok(())
    }

    /// All addresses (prefixes stripped, as felix does), IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4_nets
            .iter()
            .map(|n| IpAddr::V4(n.ip()))
            .chain(self.ipv6_nets.iter().map(|n| IpAddr::V6(n.ip())))
    }

    /// Whether felix programs it.
    pub fn is_active(&self) -> bool {
        self.state == EndpointState::Active
    }

    /// The stored JSON (nets sorted, MAC lower-case, `null` when unknown), fields in
    /// libcalico's order, unknown fields from [`WorkloadEndpoint::extra`] last.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Stored<'a> {
            state: EndpointState,
            name: &'a str,
            mac: Option<String>,
            profile_ids: &'a [String],
            labels: &'a BTreeMap<String, String>,
            ipv4_nets: Vec<String>,
            ipv6_nets: Vec<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ipv4_gateway: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            ipv6_gateway: Option<String>,
            #[serde(flatten)]
            extra: &'a Map<String, Value>,
        }
        let mut ipv4_nets: Vec<String> = self.ipv4_nets.iter().map(ToString::to_string).collect();
        ipv4_nets.sort();
        let mut ipv6_nets: Vec<String> = self.ipv6_nets.iter().map(ToString::to_string).collect();
        ipv6_nets.sort();
        let stored = Stored {
            state: self.state,
            name: &self.name,
            mac: self.mac.map(|m| m.to_string()),
            profile_ids: &self.profile_ids,
            labels: &self.labels,
            ipv4_nets,
            ipv6_nets,
            ipv4_gateway: self.ipv4_gateway.map(|g| g.to_string()),
            ipv6_gateway: self.ipv6_gateway.map(|g| g.to_string()),
            extra: &self.extra,
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Parses the stored JSON, with errors naming the bad field.
    pub fn from_json(s: &str) -> Result<WorkloadEndpoint> {
        let bad = |field: &str, reason: &str| {
            Error::invalid(format!("endpoint field {field}"), s, reason)
        };
        let v: Value = serde_json::from_str(s)
            .map_err(|e| Error::invalid("endpoint JSON", s, e.to_string()))?;
        let Value::Object(mut obj) = v else {
            return Err(Error::invalid("endpoint JSON", s, "not an object"));
        };
        let state = match obj.remove("state") {
            None | Some(Value::Null) => EndpointState::Active,
            Some(Value::String(st)) if st == "active" => EndpointState::Active,
            Some(Value::String(st)) if st == "inactive" => EndpointState::Inactive,
            Some(_) => return Err(bad("state", "must be \"active\" or \"inactive\"")),
        };
        let name = match obj.remove("name") {
            Some(Value::String(n)) => n,
            _ => return Err(bad("name", "missing or not a string")),
        };
        let mac = match obj.remove("mac") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(m.parse()?),
            Some(_) => return Err(bad("mac", "must be a string or null")),
        };
        let strings = |field: &str, v: Option<Value>| -> Result<Vec<String>> {
            match v {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s),
                        _ => Err(bad(field, "must be a list of strings")),
                    })
                    .collect(),
                Some(_) => Err(bad(field, "must be a list of strings")),
            }
        };
        let mut profile_ids = strings("profile_ids", obj.remove("profile_ids"))?;
        match obj.remove("profile_id") {
            Some(Value::String(p)) if profile_ids.is_empty() => profile_ids.push(p),
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(_) => return Err(bad("profile_id", "must be a string")),
        }
        let labels = match obj.remove("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(l)) => l
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(bad("labels", "label values must be strings")),
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad("labels", "must be an object")),
        };
        let mut ipv4_nets = Vec::new();
        for n in strings("ipv4_nets", obj.remove("ipv4_nets"))? {
            ipv4_nets.push(
                n.parse::<Ipv4Network>()
                    .map_err(|_| bad("ipv4_nets", "not a list of IPv4 CIDRs"))?,
            );
        }
        let mut ipv6_nets = Vec::new();
        for n in strings("ipv6_nets", obj.remove("ipv6_nets"))? {
            ipv6_nets.push(
                n.parse::<Ipv6Network>()
                    .map_err(|_| bad("ipv6_nets", "not a list of IPv6 CIDRs"))?,
            );
        }
        let ipv4_gateway = match obj.remove("ipv4_gateway") {
            None | Some(Value::Null) => None,
            Some(Value::String(g)) => Some(
                g.parse()
                    .map_err(|_| bad("ipv4_gateway", "not an IPv4 address"))?,
            ),
            Some(_) => return Err(bad("ipv4_gateway", "must be a string")),
        };
        let ipv6_gateway = match obj.remove("ipv6_gateway") {
            None | Some(Value::Null) => None,
            Some(Value::String(g)) => Some(
                g.parse()
                    .map_err(|_| bad("ipv6_gateway", "not an IPv6 address"))?,
            ),
            Some(_) => return Err(bad("ipv6_gateway", "must be a string")),
        };
        let mut ep = WorkloadEndpoint::new(&name, mac, ipv4_nets, ipv6_nets);
        ep.state = state;
        ep.profile_ids = profile_ids;
        ep.labels = labels;
        ep.ipv4_gateway = ipv4_gateway;
        ep.ipv6_gateway = ipv6_gateway;
        ep.extra = obj;
        ep.validate()?;
        Ok(ep)
    }
}

/// A profile: tags, rules and labels, stored as three keys under
/// `/calico/v1/policy/profile/<name>/`: `tags` = JSON list (`["myprofile1"]`), `rules` =
/// [`Rules`] JSON, `labels` = JSON object (`{}`).
///
/// Invariants: `name` and every tag are valid profile names; tags are a set (kept
/// sorted here; Calico stores a Python set, so its order carries no meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profile id.
    pub name: String,
    /// Tags: each names a cluster-wide address set (every endpoint using the profile).
    pub tags: Vec<String>,
    /// Inbound and outbound rules.
    pub rules: Rules,
    /// Labels (`{}` in this era).
    pub labels: BTreeMap<String, String>,
}

impl Profile {
    /// What `calicoctl profile add <name>` creates: tag = its own name, inbound allow from
    /// that tag, outbound allow all.
    pub fn with_defaults(name: &str) -> Profile {
        Profile {
            name: name.into(),
            tags: vec![name.into()],
            rules: Rules::profile_default(name),
            labels: BTreeMap::new(),
        }
    }

    /// Checks the invariants listed on the type.
    pub fn validate(&self) -> Result<()> {
        validate_profile_name("profile name", &self.name)?;
        for t in &self.tags {
            validate_profile_name("tag", t)?;
        }
        for r in self
            .rules
            .inbound_rules
            .iter()
            .chain(&self.rules.outbound_rules)
        {
            r.validate()?;
        }
        Ok(())
    }

    /// Parses a stored `tags` value.
    pub fn tags_from_json(s: &str) -> Result<Vec<String>> {
        let tags: Vec<String> = serde_json::from_str(s)
            .map_err(|e| Error::invalid("profile tags JSON", s, e.to_string()))?;
        for t in &tags {
            validate_profile_name("tag", t)?;
        }
        let mut tags = tags;
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// The stored `tags` value (sorted).
    pub fn tags_to_json(tags: &[String]) -> String {
        let mut tags = tags.to_vec();
        tags.sort();
        tags.dedup();
        serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into())
    }

    /// Parses a stored `labels` value.
    pub fn labels_from_json(s: &str) -> Result<BTreeMap<String, String>> {
        serde_json::from_str(s).map_err(|e| Error::invalid("profile labels JSON", s, e.to_string()))
    }

    /// The stored `labels` value.
    pub fn labels_to_json(labels: &BTreeMap<String, String>) -> String {
        serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
    }
}

/// What felix does with traffic from a workload to its own host (`DefaultEndpointToHostAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EndpointToHostAction {
    /// Drop it (felix's default when unset).
    #[default]
    Drop,
    /// Accept it after the workload's outbound policy.
    Accept,
    /// Apply the workload's outbound policy, then fall back to the host's own INPUT rules
    /// (what calico-node sets per host).
    Return,
}

/// The felix configuration one host sees: global `/calico/v1/config/<Param>` overridden
/// by `/calico/v1/host/<host>/config/<Param>`. Unknown parameters are kept in `raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixConfig {
    /// `InterfacePrefix` (default `cali`).
    pub interface_prefix: String,
    /// `IpInIpEnabled` (default false).
    pub ipip_enabled: bool,
    /// `IpInIpMtu` (default 1440).
    pub ipip_mtu: u32,
    /// `IpInIpTunnelAddr` (per host; none by default).
    pub ipip_tunnel_addr: Option<Ipv4Addr>,
    /// `DefaultEndpointToHostAction` (default DROP; calico-node sets RETURN per host).
    pub endpoint_to_host_action: EndpointToHostAction,
    /// `IptablesMarkMask` (default `0xff000000`); the accept mark is its lowest set bit.
    pub mark_mask: u32,
    /// `MaxIpsetSize` (default 2^20).
    pub max_ipset_size: u32,
    /// Every parameter as stored (global, then per-host override).
    pub raw: BTreeMap<String, String>,
}

impl Default for FelixConfig {
    fn default() -> Self {
        FelixConfig {
            interface_prefix: "cali".into(),
            ipip_enabled: false,
            ipip_mtu: 1440,
            ipip_tunnel_addr: None,
            endpoint_to_host_action: EndpointToHostAction::Drop,
            mark_mask: 0xff00_0000,
            max_ipset_size: 1 << 20,
            raw: BTreeMap::new(),
        }
    }
}

impl FelixConfig {
    /// Builds the effective configuration from raw global and per-host parameters.
    /// Values felix would reject are reported (with the parameter named) rather than
    /// silently defaulted.
    pub fn from_params(
        global: &BTreeMap<String, String>,
        host: &BTreeMap<String, String>,
    ) -> Result<FelixConfig> {
        let mut raw = global.clone();
        raw.extend(host.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut c = FelixConfig {
            raw: raw.clone(),
            ..FelixConfig::default()
        };
        let bad = |k: &str, v: &str, why: &str| Error::invalid(format!("felix config {k}"), v, why);
        for (k, v) in &raw {
            match k.as_str() {
                "InterfacePrefix" => {
                    if v.is_empty() || v.len() > 10 || !v.chars().all(|c| c.is_ascii_alphanumeric())
                    {
                        return Err(bad(k, v, "must be 1..=10 letters or digits"));
                    }
                    c.interface_prefix = v.clone();
                }
                "IpInIpEnabled" => {
                    c.ipip_enabled = match v.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "y" | "t" => true,
                        "false" | "0" | "no" | "n" | "f" | "" => false,
                        _ => return Err(bad(k, v, "must be true or false")),
                    }
                }
                "IpInIpMtu" => {
                    c.ipip_mtu = v.parse().map_err(|_| bad(k, v, "must be an integer"))?
                }
                "IpInIpTunnelAddr" => {
                    c.ipip_tunnel_addr = if v.is_empty() || v == "None" {
                        None
                    } else {
                        Some(
                            v.parse()
                                .map_err(|_| bad(k, v, "must be an IPv4 address"))?,
                        )
                    }
                }
                "DefaultEndpointToHostAction" => {
                    c.endpoint_to_host_action = match v.to_ascii_uppercase().as_str() {
                        "DROP" => EndpointToHostAction::Drop,
                        "ACCEPT" => EndpointToHostAction::Accept,
                        "RETURN" => EndpointToHostAction::Return,
                        _ => return Err(bad(k, v, "must be DROP, ACCEPT or RETURN")),
                    }
                }
                "IptablesMarkMask" => {
                    let digits = v.trim_start_matches("0x").trim_start_matches("0X");
                    let radix = if digits.len() == v.len() { 10 } else { 16 };
                    let m = u32::from_str_radix(digits, radix)
                        .map_err(|_| bad(k, v, "must be a 32-bit mask"))?;
                    if m.count_ones() < 2 {
                        return Err(bad(
                            k,
                            v,
                            "needs at least two bits (accept and next-tier marks)",
                        ));
                    }
                    c.mark_mask = m;
                }
                "MaxIpsetSize" => {
                    c.max_ipset_size = v.parse().map_err(|_| bad(k, v, "must be an integer"))?;
                    if c.max_ipset_size == 0 {
                        return Err(bad(k, v, "must be positive"));
                    }
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// The accept mark: the lowest set bit of the mark mask (`0x1000000` by default).
    pub fn accept_mark(&self) -> u32 {
        self.mark_mask & self.mark_mask.wrapping_neg()
    }
}

/// BGP settings: `/calico/bgp/v1/global/as_num` and `.../node_mesh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// Default AS (64511).
    pub as_number: u32,
    /// Full iBGP mesh between all hosts (`{"enabled": true}`).
    pub node_mesh: bool,
}

impl Default for BgpConfig {
    fn default() -> Self {
        BgpConfig {
            as_number: DEFAULT_AS_NUMBER,
            node_mesh: true,
        }
    }
}

/// The stored `node_mesh` value.
pub fn node_mesh_json(enabled: bool) -> String {
    serde_json::json!({ "enabled": enabled }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_json_matches_the_tutorial_example() {
        let mut p = Pool::new("10.20.10.0/24".parse().unwrap());
        p.ipip = true;
        p.masquerade = true;
        assert_eq!(
            p.to_json(),
            r#"{"cidr":"10.20.10.0/24","ipip":"tunl0","masquerade":true}"#
        );
        assert_eq!(Pool::from_json(&p.to_json()).unwrap(), p);
        let py = r#"{"cidr": "10.20.10.0/24", "ipip": "tunl0", "masquerade": true}"#;
        assert_eq!(Pool::from_json(py).unwrap(), p);
        let plain = Pool::from_json(r#"{"cidr": "192.168.0.0/16"}"#).unwrap();
        assert!(plain.ipam && !plain.disabled && !plain.ipip && !plain.masquerade);
        let docker = Pool::from_json(r#"{"cidr": "192.168.0.0/24", "ipam": false}"#).unwrap();
        assert!(!docker.ipam);
        assert_eq!(
            docker.to_json(),
            r#"{"cidr":"192.168.0.0/24","ipam":false}"#
        );
        assert!(
            !Pool::from_json(r#"{"cidr":"10.0.0.0/8","ipip":""}"#)
                .unwrap()
                .ipip
        );
    }

    #[test]
    fn pool_validation() {
        assert!(Pool::from_json(r#"{"cidr":"10.0.0.0/27"}"#)
            .unwrap_err()
            .to_string()
            .contains("26 or lower"));
        assert!(Pool::from_json(r#"{"cidr":"fd00::/123"}"#)
            .unwrap_err()
            .to_string()
            .contains("122 or lower"));
        assert!(Pool::from_json(r#"{"cidr":"fd00::/64","ipip":"tunl0"}"#)
            .unwrap_err()
            .to_string()
            .contains("IPv6"));
        assert!(Pool::from_json(r#"{"cidr":"bogus"}"#)
            .unwrap_err()
            .to_string()
            .contains("not a valid CIDR"));
        assert!(Pool::from_json(r#"{"ipip":"tunl0"}"#).is_err());
        assert!(Pool::from_json("[]").is_err());
        // Host bits are cleared on read, as calicoctl normalises.
        assert_eq!(
            Pool::from_json(r#"{"cidr":"10.20.10.7/24"}"#)
                .unwrap()
                .cidr
                .to_string(),
            "10.20.10.0/24"
        );
    }

    #[test]
    fn endpoint_json_matches_calicoctl() {
        let js = r#"{"state": "active", "name": "cali1e5a4c3f0b8", "mac": "5e:2a:9c:11:04:7d", "profile_ids": ["myprofile1"], "labels": {}, "ipv4_nets": ["10.20.10.1/32"], "ipv6_nets": []}"#;
        let ep = WorkloadEndpoint::from_json(js).unwrap();
        assert_eq!(ep.name, "cali1e5a4c3f0b8");
        assert_eq!(ep.profile_ids, vec!["myprofile1"]);
        assert_eq!(
            ep.to_json(),
            r#"{"state":"active","name":"cali1e5a4c3f0b8","mac":"5e:2a:9c:11:04:7d","profile_ids":["myprofile1"],"labels":{},"ipv4_nets":["10.20.10.1/32"],"ipv6_nets":[]}"#
        );
        assert_eq!(WorkloadEndpoint::from_json(&ep.to_json()).unwrap(), ep);
    }

    #[test]
    fn endpoint_reading_quirks() {
        // Legacy profile_id, missing state, upper-case MAC (libnetwork), extra keys kept.
        let js = r#"{"name":"cali6f0c2d9b7a1","mac":"EE:EE:EE:EE:EE:EE","profile_id":"p","ipv4_nets":["192.168.0.10/24"],"ipv4_nat":[{"int_ip":"1.2.3.4","ext_ip":"5.6.7.8"}]}"#;
        let ep = WorkloadEndpoint::from_json(js).unwrap();
        assert!(ep.is_active());
        assert_eq!(ep.profile_ids, vec!["p"]);
        assert_eq!(ep.mac.unwrap().to_string(), "ee:ee:ee:ee:ee:ee");
        assert_eq!(
            ep.addresses().collect::<Vec<_>>(),
            vec!["192.168.0.10".parse::<IpAddr>().unwrap()]
        );
        assert!(ep
            .to_json()
            .contains(r#""ipv4_nat":[{"ext_ip":"5.6.7.8","int_ip":"1.2.3.4"}]"#));
    }

    #[test]
    fn endpoint_validation_names_the_field() {
        let cases = [
            (r#"{"name":"cali-too-long-name"}"#, "interface name"),
            (r#"{"name":"cali1","state":"sleeping"}"#, "state"),
            (r#"{"name":"cali1","mac":"zz:00:00:00:00:00"}"#, "MAC"),
            (
                r#"{"name":"cali1","ipv4_nets":["fd00::1/128"]}"#,
                "ipv4_nets",
            ),
            (
                r#"{"name":"cali1","profile_ids":["a","a"]}"#,
                "more than once",
            ),
            (
                r#"{"name":"cali1","profile_ids":["bad name"]}"#,
                "profile id",
            ),
            (r#"{"name":"cali1","profile_ids":"a"}"#, "profile_ids"),
            (r#"{"state":"active"}"#, "name"),
        ];
        for (js, needle) in cases {
            let e = WorkloadEndpoint::from_json(js).expect_err(js).to_string();
            assert!(e.contains(needle), "{js}: {e}");
        }
    }

    #[test]
    fn interface_name_is_cali_plus_11() {
        assert_eq!(
            WorkloadEndpoint::interface_name_for("1e5a4c3f0b8f11e6a2d40242ac110002"),
            "cali1e5a4c3f0b8"
        );
    }

    #[test]
    fn as_numbers() {
        assert_eq!(parse_as_number("64511").unwrap(), 64511);
        assert_eq!(parse_as_number("1.10").unwrap(), 65546);
        assert_eq!(parse_as_number("4294967295").unwrap(), u32::MAX);
        assert!(parse_as_number("4294967296").is_err());
        assert!(parse_as_number("1.65536").is_err());
        assert!(parse_as_number("x").is_err());
    }

    #[test]
    fn felix_config_overrides_and_validates() {
        let mut g = BTreeMap::new();
        g.insert("IpInIpEnabled".to_string(), "true".to_string());
        g.insert("InterfacePrefix".to_string(), "cali".to_string());
        let mut h = BTreeMap::new();
        h.insert(
            "DefaultEndpointToHostAction".to_string(),
            "RETURN".to_string(),
        );
        h.insert("IpInIpTunnelAddr".to_string(), "10.20.10.0".to_string());
        let c = FelixConfig::from_params(&g, &h).unwrap();
        assert!(c.ipip_enabled);
        assert_eq!(c.endpoint_to_host_action, EndpointToHostAction::Return);
        assert_eq!(c.ipip_tunnel_addr, Some("10.20.10.0".parse().unwrap()));
        assert_eq!(c.accept_mark(), 0x0100_0000);
        h.insert("IptablesMarkMask".to_string(), "0x1".to_string());
        assert!(FelixConfig::from_params(&g, &h)
            .unwrap_err()
            .to_string()
            .contains("IptablesMarkMask"));
    }

    #[test]
    fn profile_defaults_and_tags() {
        let p = Profile::with_defaults("myprofile1");
        assert!(p.validate().is_ok());
        assert_eq!(Profile::tags_to_json(&p.tags), r#"["myprofile1"]"#);
        assert_eq!(
            Profile::tags_from_json(r#"["b","a","b"]"#).unwrap(),
            vec!["a", "b"]
        );
        assert!(Profile::tags_from_json(r#"["bad tag"]"#).is_err());
        assert_eq!(Profile::labels_to_json(&p.labels), "{}");
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            "5e:2a:9c:11:04:7d".parse::<MacAddr>().unwrap().0,
            [0x5e, 0x2a, 0x9c, 0x11, 0x04, 0x7d]
        );
        assert!("5e:2a:9c:11:04".parse::<MacAddr>().is_err());
        assert!("5e:2a:9c:11:04:7d:00".parse::<MacAddr>().is_err());
        assert!("5e:2a:9c:11:04:7dd".parse::<MacAddr>().is_err());
    }
}
