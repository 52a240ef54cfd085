//! [`ClusterState`]: the typed view of everything under `/calico` that policy and the
//! dataplane need, built from one recursive read and kept current by applying watch
//! events — what felix (and confd, for routes) keeps in memory.
//!
//! Invariants:
//! * every typed entry came from a key that parsed and validated; a value that does not
//!   is recorded in [`ClusterState::problems`] (key → reason) and treated as absent,
//!   exactly as felix ignores (and logs) invalid data — so one bad key never hides the
//!   rest of the cluster;
//! * applying the events of a watch, in order, to the state read at index `i` gives the
//!   state a fresh read at the last event's index would give (directory deletes remove
//!   everything below them).
//!
//! Caveat: a profile's parts are independent, as in felix: a missing or invalid `rules`
//! key makes the profile "missing" for endpoints that use it (they drop everything at
//! that profile), while its `tags` still count for tag sets if they parse.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::datastore::{Event, Index, Node, Read};
use crate::error::Result;
use crate::layout::{self, KeyKind};
use crate::model::{
    parse_as_number, BgpConfig, EndpointKey, FelixConfig, Host, Pool, Profile, WorkloadEndpoint,
    DEFAULT_AS_NUMBER,
};
use crate::rule::Rules;

/// What the cluster knows about one host, gathered from its several keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRecord {
    /// `/calico/v1/host/<h>/bird_ip`.
    pub bird_ip: Option<Ipv4Addr>,
    /// `/calico/bgp/v1/host/<h>/ip_addr_v4`.
    pub bgp_ipv4: Option<Ipv4Addr>,
    /// `/calico/bgp/v1/host/<h>/ip_addr_v6` (empty string = none).
    pub bgp_ipv6: Option<Ipv6Addr>,
    /// `/calico/bgp/v1/host/<h>/as_num`.
    pub as_number: Option<u32>,
    /// `/calico/v1/host/<h>/config/<Param>`.
    pub config: BTreeMap<String, String>,
}

impl HostRecord {
    /// The host's IPv4: `bird_ip`, else the BGP address.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.bird_ip.or(self.bgp_ipv4)
    }
}

/// A profile as its three keys left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileRecord {
    /// From `tags` (empty when missing or invalid).
    pub tags: Vec<String>,
    /// From `rules`; `None` when missing or invalid: endpoints using the profile then
    /// drop everything at it (felix's stub chain).
    pub rules: Option<Rules>,
    /// From `labels`.
    pub labels: BTreeMap<String, String>,
}

/// Which part of the state an applied key touched (for incremental consumers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing the model reads.
    None,
    /// An endpoint was added, changed or removed.
    Endpoint(EndpointKey),
    /// A profile's tags, rules or labels changed.
    Profile(String),
    /// A pool changed.
    Pool(IpNetwork),
    /// A host's address, AS or per-host config changed.
    Host(String),
    /// A block affinity changed.
    Affinity(IpNetwork),
    /// Global felix config, BGP globals or readiness changed.
    Global,
}

/// Everything under `/calico` the model reads. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Hosts by name.
    pub hosts: BTreeMap<String, HostRecord>,
    /// Endpoints of every host.
    pub endpoints: BTreeMap<EndpointKey, WorkloadEndpoint>,
    /// Profiles by name.
    pub profiles: BTreeMap<String, ProfileRecord>,
    /// Pools by CIDR.
    pub pools: BTreeMap<IpNetwork, Pool>,
    /// Block affinities: block CIDR → host. Derived: the block's own `affinity` field
    /// when the block exists (it is the truth), else the host affinity index when exactly
    /// one host claims the block, else the first claiming host by name (a race in
    /// progress; reported in `problems`).
    pub affinities: BTreeMap<IpNetwork, String>,
    /// Host affinity index entries: block → hosts with a key for it.
    affinity_claims: BTreeMap<IpNetwork, BTreeSet<String>>,
    /// Affinity field of existing blocks (`None`: the block exists without affinity).
    block_affinity: BTreeMap<IpNetwork, Option<String>>,
    /// `/calico/v1/config/<Param>`.
    pub global_config: BTreeMap<String, String>,
    /// BGP AS (`None` = default) and mesh switch.
    pub bgp_as: Option<u32>,
    /// `/calico/bgp/v1/global/node_mesh` enabled (default true).
    pub node_mesh: Option<bool>,
    /// `/calico/v1/Ready` is `true`.
    pub ready: bool,
    /// Keys whose values were rejected, with the reason.
    pub problems: BTreeMap<String, String>,
    /// The datastore index this state reflects.
    pub index: Index,
    /// Raw values of every key the model interprets (so directory deletes can be undone
    /// key by key).
    raw: BTreeMap<String, String>,
}

impl ClusterState {
    /// An empty state.
    pub fn new() -> ClusterState {
        ClusterState::default()
    }

    /// Builds the state from a recursive read of `/calico` (or any subtree of it).
    pub fn from_read(read: &Read) -> ClusterState {
        let mut state = ClusterState::new();
        state.load_node(&read.node);
        state.index = read.index;
        state
    }

    fn load_node(&mut self, node: &Node) {
        for leaf in node.leaves() {
            self.apply_key(&leaf.key, leaf.value.as_deref());
        }
    }

    /// Applies one watch event (sets, deletes, directory deletes).
    pub fn apply_event(&mut self, event: &Event) -> Vec<Change> {
        self.index = self.index.max(event.index());
        if event.action.is_delete() {
            if event.node.dir {
                let prefix = format!("{}/", event.node.key);
                let doomed: Vec<String> = self
                    .raw
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut changes = Vec::new();
                for k in doomed {
                    let c = self.apply_key(&k, None);
                    if c != Change::None && !changes.contains(&c) {
                        changes.push(c);
                    }
                }
                let stale: Vec<String> = self
                    .problems
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    self.problems.remove(&k);
                }
                changes
            } else {
                vec![self.apply_key(&event.node.key, None)]
            }
        } else if event.node.dir {
            vec![Change::None]
        } else {
            vec![self.apply_key(&event.node.key, event.node.value.as_deref())]
        }
    }

    /// Sets (`Some`) or deletes (`None`) one key's value.
    pub fn apply_key(&mut self, key: &str, value: Option<&str>) -> Change {
        let kind = layout::classify(key);
        if kind == KeyKind::Other {
            return Change::None;
        }
        match value {
            Some(v) => {
                self.raw.insert(key.to_string(), v.to_string());
            }
            None => {
                self.raw.remove(key);
            }
        }
        self.problems.remove(key);
        let outcome = self.apply_kind(kind, value);
        match outcome {
            Ok(change) => change,
            Err((change, reason)) => {
                tracing::warn!(key, %reason, "ignoring invalid value");
                self.problems.insert(key.to_string(), reason);
                change
            }
        }
    }

    fn apply_kind(
        &mut self,
        kind: KeyKind,
        value: Option<&str>,
    ) -> Result<Change, (Change, String)> {
        match kind {
            KeyKind::Ready => {
                self.ready = value == Some("true");
                Ok(Change::Global)
            }
            KeyKind::GlobalConfig(param) => {
                set_or_remove(&mut self.global_config, param, value);
                Ok(Change::Global)
            }
            KeyKind::HostConfig { host, param } => {
                let rec = self.hosts.entry(host.clone()).or_default();
                set_or_remove(&mut rec.config, param, value);
                self.prune_host(&host);
                Ok(Change::Host(host))
            }
            KeyKind::HostBirdIp(host) => {
                let change = Change::Host(host.clone());
                let parsed = parse_opt::<Ipv4Addr>(value).map_err(|e| (change.clone(), e));
                let rec = self.hosts.entry(host.clone()).or_default();
                rec.bird_ip = parsed.clone().ok().flatten();
                self.prune_host(&host);
                parsed.map(|_| change)
            }
            KeyKind::BgpHostIpv4(host) => {
                let change = Change::Host(host.clone());
                let parsed = parse_opt::<Ipv4Addr>(value).map_err(|e| (change.clone(), e));
                let rec = self.hosts.entry(host.clone()).or_default();
                rec.bgp_ipv4 = parsed.clone().ok().flatten();
                self.prune_host(&host);
                parsed.map(|_| change)
            }
            KeyKind::BgpHostIpv6(host) => {
                let change = Change::Host(host.clone());
                let parsed = parse_opt::<Ipv6Addr>(value).map_err(|e| (change.clone(), e));
                let rec = self.hosts.entry(host.clone()).or_default();
                rec.bgp_ipv6 = parsed.clone().ok().flatten();
                self.prune_host(&host);
                parsed.map(|_| change)
            }
            KeyKind::BgpHostAs(host) => {
                let change = Change::Host(host.clone());
                let parsed = match value {
                    None | Some("") => Ok(None),
                    Some(v) => parse_as_number(v)
                        .map(Some)
                        .map_err(|e| (change.clone(), e.to_string())),
                };
                let rec = self.hosts.entry(host.clone()).or_default();
                rec.as_number = parsed.clone().ok().flatten();
                self.prune_host(&host);
                parsed.map(|_| change)
            }
            KeyKind::BgpGlobalAs => {
                let parsed = match value {
                    None => Ok(None),
                    Some(v) => parse_as_number(v)
                        .map(Some)
                        .map_err(|e| (Change::Global, e.to_string())),
                };
                self.bgp_as = parsed.clone().ok().flatten();
                parsed.map(|_| Change::Global)
            }
            KeyKind::BgpNodeMesh => {
                let parsed = match value {
                    None => Ok(None),
                    Some(v) => serde_json::from_str::<serde_json::Value>(v)
                        .ok()
                        .and_then(|j| j.get("enabled").and_then(serde_json::Value::as_bool))
                        .map(Some)
                        .ok_or_else(|| {
                            (
                                Change::Global,
                                format!("node_mesh {v:?} is not {{\"enabled\": bool}}"),
                            )
                        }),
                };
                self.node_mesh = parsed.clone().ok().flatten();
                parsed.map(|_| Change::Global)
            }
            KeyKind::Endpoint(ep_key) => {
                let change = Change::Endpoint(ep_key.clone());
                match value {
                    None => {
                        self.endpoints.remove(&ep_key);
                        Ok(change)
                    }
                    Some(v) => match ep_key
                        .validate()
                        .and_then(|_| WorkloadEndpoint::from_json(v))
                    {
                        Ok(ep) => {
                            self.endpoints.insert(ep_key, ep);
                            Ok(change)
                        }
                        Err(e) => {
                            self.endpoints.remove(&ep_key);
                            Err((change, e.to_string()))
                        }
                    },
                }
            }
            KeyKind::Pool(cidr) => {
                let change = Change::Pool(cidr);
                match value {
                    None => {
                        self.pools.remove(&cidr);
                        Ok(change)
                    }
                    Some(v) => match Pool::from_json(v) {
                        Ok(pool) if pool.cidr == cidr => {
                            self.pools.insert(cidr, pool);
                            Ok(change)
                        }
                        Ok(pool) => {
                            self.pools.remove(&cidr);
                            Err((
                                change,
                                format!("pool JSON names {} but its key names {cidr}", pool.cidr),
                            ))
                        }
                        Err(e) => {
                            self.pools.remove(&cidr);
                            Err((change, e.to_string()))
                        }
                    },
                }
            }
            KeyKind::ProfileTags(name) => {
                let change = Change::Profile(name.clone());
                let parsed = value.map(Profile::tags_from_json).transpose();
                let rec = self.profiles.entry(name.clone()).or_default();
                rec.tags = parsed.clone().ok().flatten().unwrap_or_default();
                self.prune_profile(&name);
                parsed
                    .map(|_| change.clone())
                    .map_err(|e| (change, e.to_string()))
            }
            KeyKind::ProfileRules(name) => {
                let change = Change::Profile(name.clone());
                let parsed = value.map(Rules::from_json).transpose();
                let rec = self.profiles.entry(name.clone()).or_default();
                rec.rules = parsed.clone().ok().flatten();
                self.prune_profile(&name);
                parsed
                    .map(|_| change.clone())
                    .map_err(|e| (change, e.to_string()))
            }
            KeyKind::ProfileLabels(name) => {
                let change = Change::Profile(name.clone());
                let parsed = value.map(Profile::labels_from_json).transpose();
                let rec = self.profiles.entry(name.clone()).or_default();
                rec.labels = parsed.clone().ok().flatten().unwrap_or_default();
                self.prune_profile(&name);
                parsed
                    .map(|_| change.clone())
                    .map_err(|e| (change, e.to_string()))
            }
            KeyKind::Affinity { host, block } => {
                let claims = self.affinity_claims.entry(block).or_default();
                match value {
                    Some(_) => {
                        claims.insert(host);
                    }
                    None => {
                        claims.remove(&host);
                    }
                }
                if claims.is_empty() {
                    self.affinity_claims.remove(&block);
                }
                Ok(self.derive_affinity(block))
            }
            KeyKind::Block(block) => {
                let parsed = match value {
                    None => Ok(None),
                    Some(v) => block_affinity_of(v).map(Some),
                };
                match &parsed {
                    Ok(Some(aff)) => {
                        self.block_affinity.insert(block, aff.clone());
                    }
                    _ => {
                        self.block_affinity.remove(&block);
                    }
                }
                let change = self.derive_affinity(block);
                parsed.map(|_| change.clone()).map_err(|e| (change, e))
            }
            KeyKind::Other => Ok(Change::None),
        }
    }

    /// Recomputes the owner of `block`; `Change::None` when it did not change.
    fn derive_affinity(&mut self, block: IpNetwork) -> Change {
        let claims = self.affinity_claims.get(&block);
        let owner = match self.block_affinity.get(&block) {
            Some(aff) => aff.clone(),
            None => claims.and_then(|c| c.iter().next().cloned()),
        };
        let problem_key = format!("{} (affinity index)", layout::ipam_block(&block));
        if !self.block_affinity.contains_key(&block) && claims.is_some_and(|c| c.len() > 1) {
            let hosts: Vec<&str> = claims.into_iter().flatten().map(String::as_str).collect();
            self.problems.insert(
                problem_key,
                format!(
                    "block {block} claimed by several hosts: {}",
                    hosts.join(", ")
                ),
            );
        } else {
            self.problems.remove(&problem_key);
        }
        let before = self.affinities.get(&block).cloned();
        match &owner {
            Some(h) => {
                self.affinities.insert(block, h.clone());
            }
            None => {
                self.affinities.remove(&block);
            }
        }
        if before == owner {
            Change::None
        } else {
            Change::Affinity(block)
        }
    }

    /// Forgets a host entry once none of its keys remain.
    fn prune_host(&mut self, host: &str) {
        if self
            .hosts
            .get(host)
            .is_some_and(|h| *h == HostRecord::default())
        {
            self.hosts.remove(host);
        }
    }

    /// Forgets a profile entry once none of its keys remain.
    fn prune_profile(&mut self, name: &str) {
        let prefix = format!("{}/", layout::profile_dir(name));
        let any_key = self
            .raw
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix));
        if !any_key {
            self.profiles.remove(name);
        }
    }

    /// The effective felix configuration for `host` (global overridden by per-host).
    pub fn felix_config(&self, host: &str) -> Result<FelixConfig> {
        let empty = BTreeMap::new();
        let host_cfg = self.hosts.get(host).map_or(&empty, |h| &h.config);
        FelixConfig::from_params(&self.global_config, host_cfg)
    }

    /// BGP globals with defaults applied.
    pub fn bgp_config(&self) -> BgpConfig {
        BgpConfig {
            as_number: self.bgp_as.unwrap_or(DEFAULT_AS_NUMBER),
            node_mesh: self.node_mesh.unwrap_or(true),
        }
    }

    /// Registered hosts with a usable IPv4, as model [`Host`]s.
    pub fn host_list(&self) -> Vec<Host> {
        self.hosts
            .iter()
            .filter_map(|(name, rec)| {
                Some(Host {
                    name: name.clone(),
                    ipv4: rec.ipv4()?,
                    ipv6: rec.bgp_ipv6,
                    as_number: rec.as_number,
                })
            })
            .collect()
    }

    /// The addresses in `tag`'s set: every address of every endpoint (any host, any
    /// state) whose profiles include one carrying the tag.
    pub fn tag_members(&self, tag: &str) -> BTreeSet<IpAddr> {
        let profiles: BTreeSet<&str> = self
            .profiles
            .iter()
            .filter(|(_, p)| p.tags.iter().any(|t| t == tag))
            .map(|(n, _)| n.as_str())
            .collect();
        self.endpoints
            .values()
            .filter(|ep| ep.profile_ids.iter().any(|p| profiles.contains(p.as_str())))
            .flat_map(WorkloadEndpoint::addresses)
            .collect()
    }

    /// The pool containing `addr`, if any (the most specific one).
    pub fn pool_for(&self, addr: IpAddr) -> Option<&Pool> {
        self.pools
            .values()
            .filter(|p| p.cidr.contains(addr))
            .max_by_key(|p| p.cidr.prefix())
    }

    /// Endpoints of one host.
    pub fn host_endpoints<'a>(
        &'a self,
        host: &'a str,
    ) -> impl Iterator<Item = (&'a EndpointKey, &'a WorkloadEndpoint)> + 'a {
        self.endpoints.iter().filter(move |(k, _)| k.host == host)
    }

    /// The raw value of a key the model interprets, as last applied.
    pub fn raw_value(&self, key: &str) -> Option<&str> {
        self.raw.get(key).map(String::as_str)
    }
}

/// The host named by an allocation block's `affinity` field (`"host:<name>"`, or `""`).
fn block_affinity_of(json: &str) -> Result<Option<String>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("block JSON: {e}"))?;
    match v.get("affinity") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(a)) if a.is_empty() => Ok(None),
        Some(serde_json::Value::String(a)) => match a.strip_prefix("host:") {
            Some(h) if !h.is_empty() => Ok(Some(h.to_string())),
            _ => Err(format!("block affinity {a:?} is not \"host:<name>\"")),
        },
        Some(other) => Err(format!("block affinity {other} is not a string")),
    }
}

fn set_or_remove(map: &mut BTreeMap<String, String>, key: String, value: Option<&str>) {
    match value {
        Some(v) => {
            map.insert(key, v.to_string());
        }
        None => {
            map.remove(&key);
        }
    }
}

fn parse_opt<T: std::str::FromStr>(value: Option<&str>) -> Result<Option<T>, String> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{v:?} is not a valid address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{Datastore, DeleteOptions, MemoryDatastore};

    fn ep(name: &str, ip: &str, profiles: &[&str]) -> WorkloadEndpoint {
        let mut e = WorkloadEndpoint::new(name, None, vec![ip.parse().unwrap()], vec![]);
        e.profile_ids = profiles.iter().map(|p| p.to_string()).collect();
        e
    }

    #[test]
    fn snapshot_and_events_agree() {
        let ds = MemoryDatastore::new();
        ds.put("/calico/v1/Ready", "true").unwrap();
        ds.put(&layout::host_bird_ip("a"), "10.0.0.1").unwrap();
        let k1 = EndpointKey::new("a", "docker", "w1", "e1").unwrap();
        ds.put(
            &layout::endpoint(&k1),
            &ep("cali1", "10.20.10.1/32", &["p"]).to_json(),
        )
        .unwrap();
        ds.put(&layout::profile_tags("p"), r#"["p"]"#).unwrap();
        ds.put(
            &layout::profile_rules("p"),
            &Rules::profile_default("p").to_json(),
        )
        .unwrap();
        let start = ds.get("/calico", true).unwrap();
        let mut state = ClusterState::from_read(&start);
        assert!(state.ready);
        assert_eq!(state.tag_members("p").len(), 1);
        // Later changes, applied as events, equal a fresh snapshot.
        let k2 = EndpointKey::new("a", "docker", "w2", "e2").unwrap();
        ds.put(
            &layout::endpoint(&k2),
            &ep("cali2", "10.20.10.2/32", &["p"]).to_json(),
        )
        .unwrap();
        ds.put(&layout::profile_rules("q"), "not json").unwrap();
        ds.delete(
            "/calico/v1/host/a/workload/docker/w1",
            &DeleteOptions {
                recursive: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut idx = start.index + 1;
        while let Some(ev) = ds
            .watch("/calico", true, idx, std::time::Duration::ZERO)
            .unwrap()
        {
            state.apply_event(&ev);
            idx = ev.index() + 1;
        }
        let fresh = ClusterState::from_read(&ds.get("/calico", true).unwrap());
        assert_eq!(state, fresh);
        assert_eq!(state.endpoints.len(), 1);
        assert!(state.problems.contains_key(&layout::profile_rules("q")));
        assert_eq!(
            state.profiles.get("q").map(|p| p.rules.is_none()),
            Some(true)
        );
    }

    #[test]
    fn invalid_values_are_problems_not_failures() {
        let mut s = ClusterState::new();
        let k = EndpointKey::new("a", "docker", "w", "e").unwrap();
        s.apply_key(&layout::endpoint(&k), Some("{}"));
        assert!(s.endpoints.is_empty());
        assert_eq!(s.problems.len(), 1);
        s.apply_key(
            &layout::endpoint(&k),
            Some(&ep("cali1", "10.0.0.1/32", &[]).to_json()),
        );
        assert_eq!(s.endpoints.len(), 1);
        assert!(s.problems.is_empty());
        s.apply_key(
            "/calico/v1/ipam/v4/pool/10.0.0.0-8",
            Some(r#"{"cidr":"11.0.0.0/8"}"#),
        );
        assert!(s.pools.is_empty());
        s.apply_key(&layout::host_bird_ip("h"), Some("nope"));
        assert!(s.hosts.get("h").is_none_or(|h| h.bird_ip.is_none()));
        assert!(s.problems.contains_key(&layout::host_bird_ip("h")));
        s.apply_key(&layout::host_bird_ip("h"), None);
        assert!(!s.hosts.contains_key("h"));
    }

    #[test]
    fn block_affinity_field_beats_the_index_and_order_does_not_matter() {
        let block: IpNetwork = "10.20.10.0/26".parse().unwrap();
        let keys = [
            (layout::ipam_host_affinity("b", &block), "".to_string()),
            (layout::ipam_host_affinity("a", &block), "".to_string()),
        ];
        let mut one = ClusterState::new();
        let mut two = ClusterState::new();
        for (k, v) in &keys {
            one.apply_key(k, Some(v));
        }
        for (k, v) in keys.iter().rev() {
            two.apply_key(k, Some(v));
        }
        assert_eq!(one.affinities, two.affinities);
        assert_eq!(one.affinities[&block], "a");
        assert!(!one.problems.is_empty(), "the race is reported");
        let block_json = r#"{"cidr":"10.20.10.0/26","affinity":"host:b","allocations":[]}"#;
        one.apply_key(&layout::ipam_block(&block), Some(block_json));
        assert_eq!(one.affinities[&block], "b");
        one.apply_key(
            &layout::ipam_block(&block),
            Some(r#"{"cidr":"10.20.10.0/26","affinity":""}"#),
        );
        assert!(
            !one.affinities.contains_key(&block),
            "a non-affine block has no owner"
        );
        one.apply_key(&layout::ipam_block(&block), None);
        assert_eq!(one.affinities[&block], "a");
    }

    #[test]
    fn affinity_delete_of_another_host_does_not_steal() {
        let mut s = ClusterState::new();
        let block: IpNetwork = "10.20.10.0/26".parse().unwrap();
        s.apply_key(&layout::ipam_host_affinity("a", &block), Some(""));
        s.apply_key(&layout::ipam_host_affinity("b", &block), None);
        assert_eq!(s.affinities.get(&block).map(String::as_str), Some("a"));
        s.apply_key(&layout::ipam_host_affinity("a", &block), None);
        assert!(s.affinities.is_empty());
    }
}
