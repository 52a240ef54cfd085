//! What each call does: Docker networks as Calico profiles, Docker endpoints as Calico
//! workload endpoints, addresses from Calico IPAM, veths as Calico made them
//! (spec/libnetwork.md §6, spec/calico.md §3.3, §3.8).
//!
//! # Mapping
//!
//! | Docker | Calico datastore |
//! |---|---|
//! | network `<NetworkID>` | profile `<NetworkID>` (or `--opt profile=<name>`), tags `[<profile>]`, inbound allow from that tag, outbound allow all; record `/calico/libnetwork/v1/<NetworkID>` |
//! | default-IPAM network `--subnet S` | pool `S` with `"ipam": false` (ipip / nat-outgoing from `--opt`), unless a pool `S` exists already |
//! | endpoint `<EndpointID>` | `/calico/v1/host/<host>/workload/libnetwork/libnetwork/endpoint/<EndpointID>`, interface `cali<EndpointID[..11]>`, MAC `ee:ee:ee:ee:ee:ee`, nets as `/32` / `/128` |
//! | `RequestAddress` | Calico IPAM `assign_ip` (`--ip`) or `auto_assign`, one handle per request: `libnetwork.<unix-ms>-<n>.<host>` |
//!
//! Containers on one network share the profile and so may talk; containers on different
//! networks are isolated (the receiving profile's inbound rule admits only its own tag).
//! The policy itself is programmed by calico-node from the datastore, not here.
//!
//! # Idempotence (Docker retries cleanup after crashes, and its calls can repeat)
//!
//! * `CreateNetwork` / `CreateEndpoint` rewrite the same keys; a profile that exists is
//!   left as it is (a shared `--opt profile=` may carry an operator's rules).
//! * `DeleteNetwork`, `DeleteEndpoint`, `Leave`, `ReleaseAddress`, `ReleasePool` succeed
//!   when there is nothing (left) to delete.
//! * `ReleaseAddress` frees an address only when it is allocated under a handle this
//!   host's plugin minted and no endpoint of this host still lists it: a stale, repeated
//!   release never frees calicoctl's address, nor one that has since gone to another
//!   container.
//! * `Join` rebuilds a veth left by an interrupted earlier `Join`; `DeleteEndpoint` also
//!   removes the veth, in case `Leave` never came.
//! * Pools the plugin writes are recorded in the network record and deleted with the
//!   network only while they still hold exactly what the plugin wrote.
//! * What Docker never cleans up — an allocation whose `CreateEndpoint` never came, or
//!   whose `ReleaseAddress` was lost while the plugin was down — is released by
//!   [`Driver::collect_garbage`] once it is old enough to be surely orphaned (the
//!   binary runs it at start and then periodically).
//!
//! # Deliberate differences from Calico's plugin v0.9.0
//!
//! * Scope `local` by default: Docker 20.10+ has no `--cluster-store`, and a `global`
//!   driver needs swarm. The datastore is still shared through etcd.
//! * `Join` always answers gateway `169.254.1.1` with the connected route to it (as the Go
//!   plugin v1.0 did), also on default-IPAM networks, so Docker never adds
//!   `docker_gwbridge` and no container traffic bypasses Calico policy.
//! * Endpoint nets are stored as host routes (`/32`, `/128`) even when Docker's IPAM gave
//!   the container a `/24`.
//! * `--opt` booleans are parsed (`true/false/1/0/yes/no/on/off`); Calico took any
//!   non-empty string, even `false`, as true.
//! * `ProgramExternalConnectivity`, `RevokeExternalConnectivity` and
//!   `IpamDriver.GetCapabilities` are implemented (no-ops / no capabilities).
//!
//! Caveat: interface names use 11 characters of the endpoint id (44 bits of a random
//! id), as Calico did; a collision between two live endpoints of one host is not detected.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calico_model::datastore::{Datastore, DeleteOptions};
use calico_model::layout;
use calico_model::model::{EndpointKey, MacAddr, Pool, Profile, WorkloadEndpoint};
use calico_model::names::validate_profile_name;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde_json::{json, Map, Value};

use super::addresses::{handle_minted_ms, Allocator, AssignOutcome, HandleMinter, ReleaseOutcome};
use super::error::{PluginError, Result};
use super::links::{HostLinks, VethSpec};
use super::protocol::{
    ActivateResponse, AddressSpaces, Call, CreateEndpointRequest, CreateEndpointResponse,
    CreateNetworkRequest, EndpointInfoResponse, EndpointInterface, EndpointRequest, InterfaceName,
    IpamCapabilities, IpamData, JoinRequest, JoinResponse, NetworkCapabilities, Reply,
    RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
    StaticRoute, DATA_GATEWAY, IPAM_DRIVER, NETWORK_DRIVER, ROUTE_TYPE_CONNECTED,
};
use super::server::Handler;

/// Orchestrator id of every endpoint this plugin writes.
pub const ORCHESTRATOR: &str = "libnetwork";
/// Workload id of every endpoint this plugin writes.
pub const WORKLOAD: &str = "libnetwork";
/// MAC of every container interface (unless Docker chose one): felix installs a static
/// ARP entry for it, so it must be known before the container exists.
pub const CONTAINER_MAC: MacAddr = MacAddr([0xee; 6]);
/// The container's IPv4 gateway: answered by proxy ARP on the host end of the veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// `PoolID` of "any Calico IPv4 pool".
pub const POOL_ID_V4: &str = "CalicoPoolIPv4";
/// `PoolID` of "any Calico IPv6 pool".
pub const POOL_ID_V6: &str = "CalicoPoolIPv6";
/// Our local address space.
pub const LOCAL_ADDRESS_SPACE: &str = "CalicoLocalAddressSpace";
/// Our global address space.
pub const GLOBAL_ADDRESS_SPACE: &str = "CalicoGlobalAddressSpace";
/// Where network records live (spec/calico.md §3.8).
pub const NETWORKS_DIR: &str = "/calico/libnetwork/v1";
/// Host-side interface prefix (felix's `InterfacePrefix`).
pub const HOST_PREFIX: &str = "cali";
/// Container-side interface prefix before Docker renames it.
pub const PEER_PREFIX: &str = "tmp";
/// Docker names the container interface this prefix + an index (`eth0`).
pub const CONTAINER_PREFIX: &str = "eth";
/// `--opt` naming the profile (shared across hosts, since local-scope network ids differ
/// per host).
pub const OPT_PROFILE: &str = "profile";
/// `--opt ipip=true`: the default-IPAM pool gets IP-in-IP.
pub const OPT_IPIP: &str = "ipip";
/// `--opt nat-outgoing=true`: the default-IPAM pool masquerades.
pub const OPT_NAT_OUTGOING: &str = "nat-outgoing";

const SUB_POOL_UNSUPPORTED: &str = "Calico IPAM does not support sub pool configuration on 'docker create network'. \
     Calico IP Pools should be configured first and IP assignment is from those pre-configured pools.";
const POOL_MUST_MATCH: &str =
    "The requested subnet must match the CIDR of a configured Calico IP Pool.";
const POOL_DELETED: &str = "The network references a Calico pool which has been deleted.  \
     Please re-instate the Calico pool before using the network.";
const NO_ADDRESSES: &str = "There are no available IP addresses in the configured Calico IP pools";

/// The scope reported by `NetworkDriver.GetCapabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Networks live in this daemon only (works without swarm).
    #[default]
    Local,
    /// Networks live in the cluster store (needs swarm on Docker 20.10+).
    Global,
}

impl Scope {
    /// `"local"` / `"global"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Scope, String> {
        match s {
            "local" => Ok(Scope::Local),
            "global" => Ok(Scope::Global),
            other => Err(format!(
                "scope must be \"local\" or \"global\", not {other:?}"
            )),
        }
    }
}

/// What the driver needs to know about where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// The Calico host id (`HOSTNAME`), used in endpoint keys and for IPAM affinity.
    pub host: String,
    /// Reported scope.
    pub scope: Scope,
}

/// The network and IPAM driver. Stateless between calls: everything it knows is in the
/// datastore, so a restarted plugin carries on where the last one stopped.
pub struct Driver {
    config: DriverConfig,
    store: Arc<dyn Datastore>,
    ipam: Arc<dyn Allocator>,
    links: Arc<dyn HostLinks>,
    handles: HandleMinter,
}

/// Maps a datastore error to the plugin's, naming what was being done.
fn ds(context: impl Into<String>) -> impl FnOnce(calico_model::Error) -> PluginError {
    let context = context.into();
    move |e| PluginError::datastore(context, e)
}

/// `0.0.0.0/0` or `::/0`: Calico IPAM's "no gateway, no pool" marker.
fn is_zero_cidr(s: &str) -> bool {
    IpNetwork::from_str(s).is_ok_and(|n| n.prefix() == 0 && n.ip().is_unspecified())
}

fn zero_cidr(v6: bool) -> &'static str {
    if v6 {
        "::/0"
    } else {
        "0.0.0.0/0"
    }
}

/// The host route for an address: `/32` or `/128`.
fn host_net(ip: IpAddr) -> IpNetwork {
    match ip {
        IpAddr::V4(a) => IpNetwork::V4(Ipv4Network::from(a)),
        IpAddr::V6(a) => IpNetwork::V6(Ipv6Network::from(a)),
    }
}

/// Parses an `--opt` boolean.
fn parse_bool_option(name: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(PluginError::Invalid {
            what: "network option",
            value: format!("{name}={value}"),
            reason: "expected true/false, 1/0, yes/no or on/off".into(),
        }),
    }
}

/// Checks a Docker id used in a key and, for endpoints, in interface names.
fn check_id(what: &'static str, id: &str, min_len: usize) -> Result<()> {
    if id.len() < min_len || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(PluginError::invalid(
            what,
            id,
            format!("expected at least {min_len} ASCII letters or digits (Docker ids are 64 hex digits)"),
        ));
    }
    Ok(())
}

/// `cali<11>` and `tmp<11>` for an endpoint id already checked by [`check_id`].
pub fn interface_names(endpoint_id: &str) -> (String, String) {
    let suffix = endpoint_id.get(..11).unwrap_or(endpoint_id);
    (
        format!("{HOST_PREFIX}{suffix}"),
        format!("{PEER_PREFIX}{suffix}"),
    )
}

/// `/calico/libnetwork/v1/<NetworkID>`.
pub fn network_record_key(network_id: &str) -> String {
    format!("{NETWORKS_DIR}/{network_id}")
}

/// What the plugin remembers about a network: the verbatim `CreateNetwork` request (as
/// Calico stored it, so Calico's tools can read it) plus, under `"Calico"`, what the
/// plugin made for it:
///
/// ```json
/// {"NetworkID": "...", "Options": {...}, "IPv4Data": [...], "IPv6Data": [...],
///  "Calico": {"Profile": "<name>", "OwnsProfile": true,
///             "OwnedPools": [{"Key": "/calico/v1/ipam/v4/pool/192.168.0.0-24",
///                             "Value": "{\"cidr\": ...}"}]}}
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRecord {
    /// The request as Docker sent it.
    pub request: CreateNetworkRequest,
    /// The profile the network's endpoints get.
    pub profile: String,
    /// Whether the profile is the network's own (deleted with it) or shared (`--opt
    /// profile=`, kept).
    pub owns_profile: bool,
    /// Pools written for this network: key and the exact value written.
    pub owned_pools: Vec<(String, String)>,
}

impl NetworkRecord {
    /// The stored JSON.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.request).unwrap_or_else(|_| json!({}));
        let pools: Vec<Value> = self
            .owned_pools
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        if let Value::Object(map) = &mut value {
            map.insert(
                "Calico".into(),
                json!({"Profile": self.profile, "OwnsProfile": self.owns_profile, "OwnedPools": pools}),
            );
        }
        value.to_string()
    }

    /// Parses the stored JSON; a record written by Calico's own plugin (no `"Calico"`
    /// part) reads as owning profile `<NetworkID>` and no pools.
    pub fn from_json(key: &str, text: &str) -> Result<NetworkRecord> {
        let corrupt = |reason: String| {
            PluginError::datastore(format!("read {key}"), format!("corrupt record: {reason}"))
        };
        let value: Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        if !value.is_object() {
            return Err(corrupt("not a JSON object".into()));
        }
        let request: CreateNetworkRequest =
            serde_json::from_value(value.clone()).map_err(|e| corrupt(e.to_string()))?;
        if request.network_id.is_empty() {
            return Err(corrupt("no NetworkID".into()));
        }
        let calico = value.get("Calico");
        let profile = calico
            .and_then(|c| c.get("Profile"))
            .and_then(Value::as_str)
            .map_or_else(|| request.network_id.clone(), str::to_string);
        let owns_profile = calico
            .and_then(|c| c.get("OwnsProfile"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let owned_pools = calico
            .and_then(|c| c.get("OwnedPools"))
            .and_then(Value::as_array)
            .map(|pools| {
                pools
                    .iter()
                    .filter_map(|p| {
                        let k = p.get("Key")?.as_str()?;
                        let v = p.get("Value")?.as_str()?;
                        Some((k.to_string(), v.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(NetworkRecord {
            request,
            profile,
            owns_profile,
            owned_pools,
        })
    }
}

impl Driver {
    /// A driver for `config.host` over the given datastore, allocator and host.
    pub fn new(
        config: DriverConfig,
        store: Arc<dyn Datastore>,
        ipam: Arc<dyn Allocator>,
        links: Arc<dyn HostLinks>,
    ) -> Driver {
        let handles = HandleMinter::new(&config.host);
        Driver {
            config,
            store,
            ipam,
            links,
            handles,
        }
    }

    /// The Calico host id this driver serves.
    pub fn host(&self) -> &str {
        &self.config.host
    }

    /// The endpoint key of a Docker endpoint on this host.
    pub fn endpoint_key(&self, endpoint_id: &str) -> Result<EndpointKey> {
        EndpointKey::new(&self.config.host, ORCHESTRATOR, WORKLOAD, endpoint_id)
            .map_err(|e| PluginError::invalid("EndpointID", endpoint_id, e.to_string()))
    }

    // ----------------------------------------------------------------- IPAM driver

    fn request_pool(&self, req: &RequestPoolRequest) -> Result<Reply> {
        if !req.sub_pool.is_empty() {
            return Err(PluginError::Unsupported(SUB_POOL_UNSUPPORTED.into()));
        }
        let pool_id = if req.pool.is_empty() {
            if req.v6 { POOL_ID_V6 } else { POOL_ID_V4 }.to_string()
        } else {
            let cidr = IpNetwork::from_str(&req.pool).map_err(|e| {
                PluginError::invalid("RequestPool.Pool", req.pool.clone(), e.to_string())
            })?;
            if cidr.is_ipv6() != req.v6 {
                return Err(PluginError::invalid(
                    "RequestPool.Pool",
                    req.pool.clone(),
                    format!("family does not match V6={}", req.v6),
                ));
            }
            match self.read_pool(&cidr)? {
                // Exactly a configured Calico IPAM pool (disabled ones still match, as in
                // Calico: the network outlives a pool being drained).
                Some(pool) if pool.ipam && pool.cidr.to_string() == req.pool => {
                    pool.cidr.to_string()
                }
                _ => return Err(PluginError::Missing(POOL_MUST_MATCH.into())),
            }
        };
        let zero = zero_cidr(req.v6).to_string();
        Ok(Reply::RequestPool(RequestPoolResponse {
            pool_id,
            pool: zero.clone(),
            data: [(DATA_GATEWAY.to_string(), zero)].into_iter().collect(),
        }))
    }

    fn read_pool(&self, cidr: &IpNetwork) -> Result<Option<Pool>> {
        let key = layout::pool(cidr);
        match self
            .store
            .get_value(&key)
            .map_err(ds(format!("read {key}")))?
        {
            None => Ok(None),
            Some((text, _)) => Pool::from_json(&text)
                .map(Some)
                .map_err(|e| PluginError::datastore(format!("read {key}"), e)),
        }
    }

    /// The family and (optional) pool a `PoolID` stands for.
    fn pool_of(&self, pool_id: &str) -> Result<(bool, Option<IpNetwork>)> {
        match pool_id {
            POOL_ID_V4 => Ok((false, None)),
            POOL_ID_V6 => Ok((true, None)),
            cidr => {
                let net = IpNetwork::from_str(cidr).map_err(|_| {
                    PluginError::invalid(
                        "PoolID",
                        cidr,
                        format!("expected {POOL_ID_V4}, {POOL_ID_V6} or a pool CIDR"),
                    )
                })?;
                match self.read_pool(&net)? {
                    Some(pool) if pool.ipam => Ok((net.is_ipv6(), Some(net))),
                    _ => Err(PluginError::Missing(POOL_DELETED.into())),
                }
            }
        }
    }

    fn request_address(&self, req: &RequestAddressRequest) -> Result<Reply> {
        let (v6, pool) = self.pool_of(&req.pool_id)?;
        let handle = self.handles.mint();
        let address = if req.address.is_empty() {
            self.ipam
                .auto_assign(v6, pool, &self.config.host, &handle)?
                .ok_or_else(|| PluginError::Exhausted(NO_ADDRESSES.into()))?
        } else {
            let address = IpAddr::from_str(&req.address).map_err(|e| {
                PluginError::invalid("RequestAddress.Address", req.address.clone(), e.to_string())
            })?;
            if address.is_ipv6() != v6 {
                return Err(PluginError::invalid(
                    "RequestAddress.Address",
                    req.address.clone(),
                    format!("not of the family of pool {}", req.pool_id),
                ));
            }
            if let Some(pool) = pool.filter(|p| !p.contains(address)) {
                return Err(PluginError::invalid(
                    "RequestAddress.Address",
                    req.address.clone(),
                    format!("not inside the network's pool {pool}"),
                ));
            }
            match self.ipam.assign(address, &self.config.host, &handle)? {
                AssignOutcome::Allocated => address,
                AssignOutcome::InUse => {
                    return Err(PluginError::Conflict(format!(
                        "The address {address} is already in use"
                    )))
                }
                AssignOutcome::NotInPool => {
                    return Err(PluginError::Missing(format!(
                        "The address {address} is not in one of the configured Calico IP pools"
                    )))
                }
            }
        };
        Ok(Reply::RequestAddress(RequestAddressResponse {
            address: host_net(address).to_string(),
            data: Default::default(),
        }))
    }

    fn release_address(&self, pool_id: &str, address: &str) -> Result<Reply> {
        // A bare address, as Docker sends it; a CIDR is tolerated.
        let ip = match address.split_once('/') {
            Some(_) => IpNetwork::from_str(address)
                .map(|n| n.ip())
                .map_err(|e| e.to_string()),
            None => IpAddr::from_str(address).map_err(|e| e.to_string()),
        }
        .map_err(|e| PluginError::invalid("ReleaseAddress.Address", address, e))?;
        if ip.is_unspecified() {
            // The zero gateway of a Calico-IPAM network, which Docker "releases" on
            // network removal: nothing was allocated for it.
            return Ok(Reply::empty());
        }
        if let Some(user) = self.local_endpoint_using(ip)? {
            tracing::warn!(%ip, pool_id, endpoint = %user, "not releasing an address a live endpoint still lists");
            return Ok(Reply::empty());
        }
        match self.ipam.release(ip, &self.config.host)? {
            ReleaseOutcome::Freed => tracing::debug!(%ip, "released"),
            ReleaseOutcome::NotAllocated => {
                tracing::info!(%ip, "release of an address that was not allocated")
            }
            ReleaseOutcome::OtherOwner(owner) => {
                tracing::warn!(%ip, ?owner, "not releasing an address allocated under another handle")
            }
        }
        Ok(Reply::empty())
    }

    /// The id of an endpoint of this host's plugin that lists `ip`, if any.
    fn local_endpoint_using(&self, ip: IpAddr) -> Result<Option<String>> {
        for (id, ep) in self.local_endpoints()? {
            if ep.addresses().any(|a| a == ip) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Every endpoint this host's plugin wrote, by endpoint id.
    pub fn local_endpoints(&self) -> Result<Vec<(String, WorkloadEndpoint)>> {
        let dir = format!(
            "{}/endpoint",
            layout::workload_dir(&self.config.host, ORCHESTRATOR, WORKLOAD)
        );
        let read = match self.store.get(&dir, true) {
            Ok(read) => read,
            Err(calico_model::Error::KeyNotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(PluginError::datastore(format!("list {dir}"), e)),
        };
        let mut out = Vec::new();
        for node in read.node.leaves() {
            let Some(id) = node.key.rsplit('/').next() else {
                continue;
            };
            match node.value.as_deref().map(WorkloadEndpoint::from_json) {
                Some(Ok(ep)) => out.push((id.to_string(), ep)),
                Some(Err(e)) => {
                    tracing::warn!(key = %node.key, error = %e, "skipping unreadable endpoint")
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Every address a network record of this datastore names as a gateway or an
    /// auxiliary address (they are allocated through `RequestAddress` too, but no
    /// endpoint lists them).
    fn network_addresses(&self) -> Result<BTreeSet<IpAddr>> {
        let read = match self.store.get(NETWORKS_DIR, true) {
            Ok(read) => read,
            Err(calico_model::Error::KeyNotFound { .. }) => return Ok(BTreeSet::new()),
            Err(e) => return Err(PluginError::datastore(format!("list {NETWORKS_DIR}"), e)),
        };
        let mut out = BTreeSet::new();
        for node in read.node.leaves() {
            let Some(text) = node.value.as_deref() else {
                continue;
            };
            let record = match NetworkRecord::from_json(&node.key, text) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(key = %node.key, error = %e, "skipping unreadable network record");
                    continue;
                }
            };
            let data = record
                .request
                .ipv4_data
                .iter()
                .chain(&record.request.ipv6_data);
            for entry in data {
                let named = std::iter::once(&entry.gateway).chain(entry.aux_addresses.values());
                for cidr in named {
                    if let Ok(net) = IpNetwork::from_str(cidr) {
                        out.insert(net.ip());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Releases the allocations of this host's plugin that nothing uses — no endpoint of
    /// this host lists the address, no network record names it — and that are older
    /// than `min_age` (younger ones may be waiting for their `CreateEndpoint`). These are
    /// what a crash between `RequestAddress` and `CreateEndpoint`, or a `ReleaseAddress`
    /// lost while the plugin was down, leaves behind. Returns the addresses released.
    pub fn collect_garbage(&self, min_age: Duration) -> Result<Vec<IpAddr>> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let cutoff = u64::try_from(now_ms.saturating_sub(min_age.as_millis())).unwrap_or(0);
        let mut in_use: BTreeSet<IpAddr> = self.network_addresses()?;
        for (_, ep) in self.local_endpoints()? {
            in_use.extend(ep.addresses());
        }
        let mut released = Vec::new();
        for held in self.ipam.allocations(&self.config.host)? {
            let old_enough = handle_minted_ms(&held.handle).is_some_and(|ms| ms <= cutoff);
            if in_use.contains(&held.address) || !old_enough {
                continue;
            }
            if self.ipam.release(held.address, &self.config.host)? == ReleaseOutcome::Freed {
                tracing::warn!(address = %held.address, handle = %held.handle, "released an orphaned allocation");
                released.push(held.address);
            }
        }
        Ok(released)
    }

    // -------------------------------------------------------------- network driver

    fn create_network(&self, req: &CreateNetworkRequest) -> Result<Reply> {
        check_id("NetworkID", &req.network_id, 1)?;
        let options = req.generic_options();
        let (profile, owns_profile) = match options.get(OPT_PROFILE) {
            Some(name) => {
                validate_profile_name("profile", name).map_err(|e| {
                    PluginError::invalid("network option", format!("profile={name}"), e.to_string())
                })?;
                (name.clone(), *name == req.network_id)
            }
            None => (req.network_id.clone(), true),
        };
        let ipip = options
            .get(OPT_IPIP)
            .map(|v| parse_bool_option(OPT_IPIP, v))
            .transpose()?
            .unwrap_or(false);
        let masquerade = options
            .get(OPT_NAT_OUTGOING)
            .map(|v| parse_bool_option(OPT_NAT_OUTGOING, v))
            .transpose()?
            .unwrap_or(false);

        // A repeated CreateNetwork must keep owning the pools the first one wrote.
        let previously_owned: Vec<String> = self
            .read_network(&req.network_id)?
            .map(|r| r.owned_pools.into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default();
        let mut owned_pools = Vec::new();
        for (family, data) in [("IPv4", &req.ipv4_data), ("IPv6", &req.ipv6_data)] {
            if data.len() > 1 {
                return Err(PluginError::Unsupported(format!(
                    "Unsupported: multiple Gateways defined for {family}"
                )));
            }
            let Some(entry) = data.first() else { continue };
            let ipip = ipip && family == "IPv4";
            if let Some(pool) =
                self.default_ipam_pool(entry, ipip, masquerade, &previously_owned)?
            {
                owned_pools.push((layout::pool(&pool.cidr), pool.to_json()));
            }
        }

        // Record first: whatever happens next, DeleteNetwork knows what to clean up.
        let record = NetworkRecord {
            request: req.clone(),
            profile: profile.clone(),
            owns_profile,
            owned_pools,
        };
        let key = network_record_key(&req.network_id);
        self.store
            .put(&key, &record.to_json())
            .map_err(ds(format!("write {key}")))?;
        for (pool_key, value) in &record.owned_pools {
            self.store
                .put(pool_key, value)
                .map_err(ds(format!("write {pool_key}")))?;
        }
        self.ensure_profile(&profile)?;
        Ok(Reply::empty())
    }

    /// The `ipam: false` pool to write for a default-IPAM network entry, if one is due.
    fn default_ipam_pool(
        &self,
        entry: &IpamData,
        ipip: bool,
        masquerade: bool,
        previously_owned: &[String],
    ) -> Result<Option<Pool>> {
        let ours = entry.address_space == LOCAL_ADDRESS_SPACE
            || entry.address_space == GLOBAL_ADDRESS_SPACE;
        if entry.pool.is_empty() || entry.gateway.is_empty() || ours || is_zero_cidr(&entry.gateway)
        {
            return Ok(None);
        }
        let cidr = IpNetwork::from_str(&entry.pool).map_err(|e| {
            PluginError::invalid(
                "CreateNetwork.IPvXData.Pool",
                entry.pool.clone(),
                e.to_string(),
            )
        })?;
        let cidr = IpNetwork::new(cidr.network(), cidr.prefix()).unwrap_or(cidr);
        let ours_already = previously_owned.contains(&layout::pool(&cidr));
        if !ours_already && self.read_pool(&cidr)?.is_some() {
            // An operator's pool (calicoctl pool add) with this exact CIDR: never clobber it.
            return Ok(None);
        }
        let mut pool = Pool::new(cidr);
        pool.ipam = false;
        pool.ipip = ipip;
        pool.masquerade = masquerade;
        if let Err(e) = pool.validate() {
            // Smaller than an IPAM block: Calico's readers would reject the pool, and the
            // network works without it (routes are per address, policy per profile).
            tracing::warn!(%cidr, error = %e, "not writing a Calico pool for this network");
            return Ok(None);
        }
        Ok(Some(pool))
    }

    /// Writes the default profile unless it exists already.
    fn ensure_profile(&self, name: &str) -> Result<()> {
        let rules_key = layout::profile_rules(name);
        if self
            .store
            .get_value(&rules_key)
            .map_err(ds(format!("read {rules_key}")))?
            .is_some()
        {
            return Ok(());
        }
        let profile = Profile::with_defaults(name);
        let writes = [
            (
                layout::profile_labels(name),
                Profile::labels_to_json(&profile.labels),
            ),
            (
                layout::profile_tags(name),
                Profile::tags_to_json(&profile.tags),
            ),
            (rules_key, profile.rules.to_json()),
        ];
        for (key, value) in writes {
            self.store
                .put(&key, &value)
                .map_err(ds(format!("write {key}")))?;
        }
        Ok(())
    }

    fn read_network(&self, network_id: &str) -> Result<Option<NetworkRecord>> {
        let key = network_record_key(network_id);
        match self
            .store
            .get_value(&key)
            .map_err(ds(format!("read {key}")))?
        {
            None => Ok(None),
            Some((text, _)) => NetworkRecord::from_json(&key, &text).map(Some),
        }
    }

    fn delete_network(&self, network_id: &str) -> Result<Reply> {
        check_id("NetworkID", network_id, 1)?;
        let Some(record) = self.read_network(network_id)? else {
            tracing::info!(
                network_id,
                "DeleteNetwork of an unknown network (already deleted?)"
            );
            return Ok(Reply::empty());
        };
        if record.owns_profile {
            let dir = layout::profile_dir(&record.profile);
            let recursive = DeleteOptions {
                dir: true,
                recursive: true,
                ..DeleteOptions::default()
            };
            match self.store.delete(&dir, &recursive) {
                Ok(_) | Err(calico_model::Error::KeyNotFound { .. }) => {}
                Err(e) => return Err(PluginError::datastore(format!("delete {dir}"), e)),
            }
        }
        for (key, value) in &record.owned_pools {
            let only_ours = DeleteOptions {
                prev_value: Some(value.clone()),
                ..DeleteOptions::default()
            };
            match self.store.delete(key, &only_ours) {
                Ok(_) | Err(calico_model::Error::KeyNotFound { .. }) => {}
                Err(calico_model::Error::CompareFailed { .. }) => {
                    tracing::info!(%key, "pool changed since the network created it; leaving it")
                }
                Err(e) => return Err(PluginError::datastore(format!("delete {key}"), e)),
            }
        }
        let key = network_record_key(network_id);
        match self.store.delete(&key, &DeleteOptions::default()) {
            Ok(_) | Err(calico_model::Error::KeyNotFound { .. }) => Ok(Reply::empty()),
            Err(e) => Err(PluginError::datastore(format!("delete {key}"), e)),
        }
    }

    fn create_endpoint(&self, req: &CreateEndpointRequest) -> Result<Reply> {
        check_id("EndpointID", &req.endpoint_id, 11)?;
        check_id("NetworkID", &req.network_id, 1)?;
        let iface = &req.interface;
        if iface.address.is_empty() && iface.address_ipv6.is_empty() {
            return Err(PluginError::invalid(
                "CreateEndpoint.Interface",
                serde_json::to_string(iface).unwrap_or_default(),
                "an IPv4 or IPv6 address is required (Docker gives one from the network's IPAM driver)",
            ));
        }
        let mut ipv4_nets = Vec::new();
        if !iface.address.is_empty() {
            let net = Ipv4Network::from_str(&iface.address).map_err(|e| {
                PluginError::invalid("Interface.Address", iface.address.clone(), e.to_string())
            })?;
            ipv4_nets.push(Ipv4Network::from(net.ip()));
        }
        let mut ipv6_nets = Vec::new();
        if !iface.address_ipv6.is_empty() {
            let net = Ipv6Network::from_str(&iface.address_ipv6).map_err(|e| {
                PluginError::invalid(
                    "Interface.AddressIPv6",
                    iface.address_ipv6.clone(),
                    e.to_string(),
                )
            })?;
            ipv6_nets.push(Ipv6Network::from(net.ip()));
        }
        let mac = if iface.mac_address.is_empty() {
            CONTAINER_MAC
        } else {
            MacAddr::from_str(&iface.mac_address).map_err(|e| {
                PluginError::invalid(
                    "Interface.MacAddress",
                    iface.mac_address.clone(),
                    e.to_string(),
                )
            })?
        };
        let record = self.read_network(&req.network_id)?.ok_or_else(|| {
            PluginError::Missing(format!(
                "Network {} does not exist (it was not created by this plugin)",
                req.network_id
            ))
        })?;
        let (host_if, _) = interface_names(&req.endpoint_id);
        let mut endpoint = WorkloadEndpoint::new(&host_if, Some(mac), ipv4_nets, ipv6_nets);
        endpoint.profile_ids = vec![record.profile];
        endpoint.validate().map_err(|e| {
            PluginError::invalid("endpoint", req.endpoint_id.clone(), e.to_string())
        })?;
        let key = layout::endpoint(&self.endpoint_key(&req.endpoint_id)?);
        self.store
            .put(&key, &endpoint.to_json())
            .map_err(ds(format!("write {key}")))?;
        // Answer only what Docker did not set: echoing its own MAC back is an error there.
        let interface = iface.mac_address.is_empty().then(|| EndpointInterface {
            mac_address: CONTAINER_MAC.to_string().to_ascii_uppercase(),
            ..EndpointInterface::default()
        });
        Ok(Reply::CreateEndpoint(CreateEndpointResponse { interface }))
    }

    fn read_endpoint(&self, endpoint_id: &str) -> Result<Option<WorkloadEndpoint>> {
        let key = layout::endpoint(&self.endpoint_key(endpoint_id)?);
        match self
            .store
            .get_value(&key)
            .map_err(ds(format!("read {key}")))?
        {
            None => Ok(None),
            Some((text, _)) => WorkloadEndpoint::from_json(&text)
                .map(Some)
                .map_err(|e| PluginError::datastore(format!("read {key}"), e)),
        }
    }

    fn endpoint_oper_info(&self, req: &EndpointRequest) -> Result<Reply> {
        check_id("EndpointID", &req.endpoint_id, 11)?;
        let mut value = Map::new();
        if let Some(ep) = self.read_endpoint(&req.endpoint_id)? {
            value.insert("hostInterface".into(), json!(ep.name));
            value.insert("profiles".into(), json!(ep.profile_ids));
            let nets: Vec<String> = ep.addresses().map(|a| host_net(a).to_string()).collect();
            value.insert("addresses".into(), json!(nets));
            value.insert("calicoHost".into(), json!(self.config.host));
        }
        Ok(Reply::EndpointInfo(EndpointInfoResponse { value }))
    }

    fn delete_endpoint(&self, req: &EndpointRequest) -> Result<Reply> {
        check_id("EndpointID", &req.endpoint_id, 11)?;
        // Leave normally removed the veth; after a crash it may not have come.
        let (host_if, _) = interface_names(&req.endpoint_id);
        if self.links.delete_veth(&host_if)? {
            tracing::info!(%host_if, "removed a veth that Leave did not");
        }
        let key = layout::endpoint(&self.endpoint_key(&req.endpoint_id)?);
        match self.store.delete(&key, &DeleteOptions::default()) {
            Ok(_) => Ok(Reply::empty()),
            Err(calico_model::Error::KeyNotFound { .. }) => {
                tracing::info!(endpoint_id = %req.endpoint_id, "DeleteEndpoint of an unknown endpoint (already deleted?)");
                Ok(Reply::empty())
            }
            Err(e) => Err(PluginError::datastore(format!("delete {key}"), e)),
        }
    }

    fn join(&self, req: &JoinRequest) -> Result<Reply> {
        check_id("EndpointID", &req.endpoint_id, 11)?;
        let endpoint = self.read_endpoint(&req.endpoint_id)?.ok_or_else(|| {
            PluginError::Missing(format!(
                "Endpoint {} does not exist (CreateEndpoint did not reach this plugin)",
                req.endpoint_id
            ))
        })?;
        let (host_if, peer_if) = interface_names(&req.endpoint_id);
        let addresses: Vec<IpNetwork> = endpoint.addresses().map(host_net).collect();
        let has_v4 = !endpoint.ipv4_nets.is_empty();
        let has_v6 = !endpoint.ipv6_nets.is_empty();
        let spec = VethSpec {
            host: host_if,
            peer: peer_if.clone(),
            peer_mac: endpoint.mac.unwrap_or(CONTAINER_MAC).to_string(),
            addresses,
            want_ipv6_link_local: has_v6,
        };
        let link_local = self.links.create_veth(&spec)?;
        let mut static_routes = Vec::new();
        let mut gateway = String::new();
        if has_v4 {
            gateway = GATEWAY_V4.to_string();
            static_routes.push(StaticRoute {
                destination: format!("{GATEWAY_V4}/32"),
                route_type: ROUTE_TYPE_CONNECTED,
                next_hop: String::new(),
            });
        }
        let mut gateway_ipv6 = String::new();
        if let Some(ll) = link_local.filter(|_| has_v6) {
            gateway_ipv6 = ll.to_string();
            static_routes.push(StaticRoute {
                destination: format!("{ll}/128"),
                route_type: ROUTE_TYPE_CONNECTED,
                next_hop: String::new(),
            });
        }
        Ok(Reply::Join(JoinResponse {
            interface_name: InterfaceName {
                src_name: peer_if,
                dst_prefix: CONTAINER_PREFIX.into(),
            },
            gateway,
            gateway_ipv6,
            static_routes,
            disable_gateway_service: true,
        }))
    }

    fn leave(&self, req: &EndpointRequest) -> Result<Reply> {
        check_id("EndpointID", &req.endpoint_id, 11)?;
        let (host_if, _) = interface_names(&req.endpoint_id);
        if !self.links.delete_veth(&host_if)? {
            tracing::info!(%host_if, "Leave: no such interface (already gone)");
        }
        Ok(Reply::empty())
    }
}

impl Handler for Driver {
    fn handle(&self, call: Call) -> Result<Reply> {
        match call {
            Call::Activate => Ok(Reply::Activate(ActivateResponse {
                implements: vec![NETWORK_DRIVER.into(), IPAM_DRIVER.into()],
            })),
            Call::NetworkCapabilities => Ok(Reply::NetworkCapabilities(NetworkCapabilities {
                scope: self.config.scope.as_str().into(),
            })),
            Call::CreateNetwork(req) => self.create_network(&req),
            Call::DeleteNetwork(req) => self.delete_network(&req.network_id),
            Call::CreateEndpoint(req) => self.create_endpoint(&req),
            Call::EndpointOperInfo(req) => self.endpoint_oper_info(&req),
            Call::DeleteEndpoint(req) => self.delete_endpoint(&req),
            Call::Join(req) => self.join(&req),
            Call::Leave(req) => self.leave(&req),
            Call::DiscoverNew(_) | Call::DiscoverDelete(_) => Ok(Reply::empty()),
            // No port mapping: Calico endpoints are routed, not NATed behind the host.
            Call::ProgramExternalConnectivity(_) | Call::RevokeExternalConnectivity(_) => {
                Ok(Reply::empty())
            }
            Call::IpamCapabilities => Ok(Reply::IpamCapabilities(IpamCapabilities {
                requires_mac_address: false,
                requires_request_replay: false,
            })),
            Call::DefaultAddressSpaces => Ok(Reply::AddressSpaces(AddressSpaces {
                local: LOCAL_ADDRESS_SPACE.into(),
                global: GLOBAL_ADDRESS_SPACE.into(),
            })),
            Call::RequestPool(req) => self.request_pool(&req),
            Call::ReleasePool(_) => Ok(Reply::empty()),
            Call::RequestAddress(req) => self.request_address(&req),
            Call::ReleaseAddress(req) => self.release_address(&req.pool_id, &req.address),
        }
    }
}

/// The IPAM role alone, for a second socket such as `calico-ipam.sock` (Calico's Go
/// plugin served `--ipam-driver calico-ipam` apart from `--driver calico`): `Activate`
/// lists only `IpamDriver`, network-driver calls are unknown methods (404), and IPAM
/// calls go to the same driver, so both names share one datastore and one allocator.
pub struct IpamOnly(pub Arc<Driver>);

impl Handler for IpamOnly {
    fn handle(&self, call: Call) -> Result<Reply> {
        match call {
            Call::Activate => Ok(Reply::Activate(ActivateResponse {
                implements: vec![IPAM_DRIVER.into()],
            })),
            Call::IpamCapabilities
            | Call::DefaultAddressSpaces
            | Call::RequestPool(_)
            | Call::ReleasePool(_)
            | Call::RequestAddress(_)
            | Call::ReleaseAddress(_) => self.0.handle(call),
            network => Err(PluginError::Protocol(
                super::protocol::ProtocolError::UnknownMethod(network.method().to_string()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::addresses::MemoryAllocator;
    use super::super::links::FakeLinks;
    use super::*;
    use calico_model::datastore::MemoryDatastore;

    fn driver() -> Arc<Driver> {
        let pools = vec!["10.1.0.0/26".parse().expect("pool")];
        Arc::new(Driver::new(
            DriverConfig {
                host: "h".into(),
                scope: Scope::Local,
            },
            Arc::new(MemoryDatastore::new()),
            Arc::new(MemoryAllocator::new(pools)),
            Arc::new(FakeLinks::new()),
        ))
    }

    #[test]
    fn the_ipam_only_role_serves_ipam_and_nothing_else() {
        let ipam = IpamOnly(driver());
        let Ok(Reply::Activate(activate)) = ipam.handle(Call::Activate) else {
            panic!("Activate failed")
        };
        assert_eq!(activate.implements, vec![IPAM_DRIVER.to_string()]);
        assert!(matches!(
            ipam.handle(Call::DefaultAddressSpaces),
            Ok(Reply::AddressSpaces(_))
        ));
        let err = ipam
            .handle(Call::NetworkCapabilities)
            .expect_err("not a network driver");
        assert_eq!(err.status(), hyper::StatusCode::NOT_FOUND);
    }

    #[test]
    fn scopes_parse_and_print() {
        assert_eq!("local".parse::<Scope>(), Ok(Scope::Local));
        assert_eq!("global".parse::<Scope>().map(Scope::as_str), Ok("global"));
        assert!("swarm".parse::<Scope>().is_err());
    }

    #[test]
    fn network_records_written_by_calicos_own_plugin_are_read() {
        // Calico v0.9.0 stored the bare request: the profile is the network id.
        let text = r#"{"NetworkID":"abc","Options":{},"IPv4Data":[],"IPv6Data":[]}"#;
        let record = NetworkRecord::from_json("/calico/libnetwork/v1/abc", text).expect("record");
        assert_eq!(record.profile, "abc");
        assert!(record.owns_profile);
        assert!(record.owned_pools.is_empty());
        let again = NetworkRecord::from_json("k", &record.to_json()).expect("round trip");
        assert_eq!(again, record);
        for corrupt in ["[]", "{}", "nonsense", r#"{"NetworkID": 5}"#] {
            assert!(NetworkRecord::from_json("k", corrupt).is_err(), "{corrupt}");
        }
    }

    #[test]
    fn option_booleans_are_strict() {
        for yes in ["true", "TRUE", "1", "yes", "on"] {
            assert_eq!(parse_bool_option("ipip", yes).ok(), Some(true), "{yes}");
        }
        for no in ["false", "0", "no", "off", ""] {
            assert_eq!(parse_bool_option("ipip", no).ok(), Some(false), "{no}");
        }
        assert!(parse_bool_option("ipip", "maybe").is_err());
    }
}
