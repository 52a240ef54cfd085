//! The wire protocol of Docker's remote network driver and remote IPAM driver
//! (libnetwork `drivers/remote/api`, `ipams/remote/api`; spec/libnetwork.md §1–§4).
//!
//! Every call is `POST /<Interface>.<Method>` carrying a JSON object (or nothing) and is
//! answered with HTTP 200 and a JSON object. This module owns the shapes of those objects
//! and nothing else: [`Call::parse`] turns a method name and a body into a typed request,
//! and [`Reply`] is every typed answer. The HTTP framing lives in `server`, the behaviour
//! in `driver`.
//!
//! # Wire format
//!
//! * Field names are Docker's Go field names, case and all (`NetworkID`, `IPv4Data`,
//!   `PoolID`, ...). Unknown fields are ignored, so newer Docker versions that add fields
//!   keep working.
//! * Go encodes a nil map or slice as `null`: every map and list field here accepts
//!   `null` (and absence) as empty.
//! * The no-argument calls (`Plugin.Activate`, both `GetCapabilities`,
//!   `IpamDriver.GetDefaultAddressSpaces`) arrive with an empty body (Docker 1.10+),
//!   `null` (Docker 1.9) or `{}`; all three are accepted and anything else is ignored.
//! * Docker sends no `Content-Type`; the body is parsed as JSON regardless.
//! * Success bodies: `{}` when there is nothing to say. Failure bodies: `{"Err": "..."}`
//!   with a non-200 status (see [`ErrorBody`]), which Docker reads for both interfaces.
//! * Addresses travel as strings: CIDRs with a prefix (`"192.168.0.10/24"`) in
//!   `IPv4Data`, `Interface.Address` and `RequestAddress` answers; bare addresses
//!   (`"192.168.0.10"`) in `RequestAddress`/`ReleaseAddress` requests and in `Gateway`.
//!   They are kept as strings here and validated by the driver, which can then name the
//!   offending field in its error.
//!
//! Caveat: `Options` objects are free-form (`com.docker.network.generic` nests another
//! object of strings) and are kept as JSON values.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The `Accept` media type Docker 1.10+ sends, and the `Content-Type` we answer with.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Interface name listed by `Plugin.Activate` for the network driver role.
pub const NETWORK_DRIVER: &str = "NetworkDriver";
/// Interface name listed by `Plugin.Activate` for the IPAM driver role.
pub const IPAM_DRIVER: &str = "IpamDriver";

/// Option key of the per-network generic options map (`--opt k=v`).
pub const OPTION_GENERIC: &str = "com.docker.network.generic";
/// `Data` key through which `RequestPool` hands Docker the network gateway.
pub const DATA_GATEWAY: &str = "com.docker.network.gateway";
/// Option key Docker puts on the gateway's `RequestAddress`.
pub const OPTION_REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";

/// Deserializes `null` (Go's nil map/slice) as the type's default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// One entry of `IPv4Data` / `IPv6Data` in `CreateNetwork` (libnetwork `IPAMData`):
/// `{"AddressSpace": "...", "Pool": "192.168.0.0/24", "Gateway": "192.168.0.1/24",
/// "AuxAddresses": {"name": "192.168.0.5/24"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamData {
    /// The IPAM driver's address space.
    #[serde(rename = "AddressSpace", default, deserialize_with = "null_as_default")]
    pub address_space: String,
    /// The pool CIDR (`0.0.0.0/0` when Calico IPAM allocates).
    #[serde(rename = "Pool", default, deserialize_with = "null_as_default")]
    pub pool: String,
    /// The gateway as an address with the pool's prefix (`0.0.0.0/0` under Calico IPAM).
    #[serde(rename = "Gateway", default, deserialize_with = "null_as_default")]
    pub gateway: String,
    /// `--aux-address` entries, name to CIDR.
    #[serde(rename = "AuxAddresses", default, deserialize_with = "null_as_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateNetworkRequest {
    /// Docker's 64-hex network id.
    #[serde(rename = "NetworkID", default, deserialize_with = "null_as_default")]
    pub network_id: String,
    /// `com.docker.network.enable_ipv6`, `com.docker.network.generic` (`--opt`), ...
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
    /// IPv4 pools (one entry in practice).
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_as_default")]
    pub ipv4_data: Vec<IpamData>,
    /// IPv6 pools (empty unless `--ipv6`).
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_as_default")]
    pub ipv6_data: Vec<IpamData>,
}

impl CreateNetworkRequest {
    /// The `--opt k=v` strings (`Options["com.docker.network.generic"]`); non-string
    /// values are skipped.
    pub fn generic_options(&self) -> BTreeMap<String, String> {
        match self.options.get(OPTION_GENERIC) {
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// Requests that name only a network: `DeleteNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    /// Docker's network id.
    #[serde(rename = "NetworkID", default, deserialize_with = "null_as_default")]
    pub network_id: String,
}

/// The interface addresses of `CreateEndpoint`, in both directions
/// (`{"Address": "a.b.c.d/len", "AddressIPv6": "...", "MacAddress": "..."}`).
/// Empty strings mean "not set"; a reply omits them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInterface {
    /// IPv4 address with prefix.
    #[serde(
        rename = "Address",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub address: String,
    /// IPv6 address with prefix.
    #[serde(
        rename = "AddressIPv6",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    /// MAC address.
    #[serde(
        rename = "MacAddress",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

impl EndpointInterface {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.address.is_empty() && self.address_ipv6.is_empty() && self.mac_address.is_empty()
    }
}

/// `NetworkDriver.CreateEndpoint` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateEndpointRequest {
    /// Docker's network id.
    #[serde(rename = "NetworkID", default, deserialize_with = "null_as_default")]
    pub network_id: String,
    /// Docker's 64-hex endpoint id.
    #[serde(rename = "EndpointID", default, deserialize_with = "null_as_default")]
    pub endpoint_id: String,
    /// What Docker already decided (addresses from IPAM, maybe a MAC).
    #[serde(rename = "Interface", default, deserialize_with = "null_as_default")]
    pub interface: EndpointInterface,
    /// Exposed ports, port map, ...
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

/// `NetworkDriver.CreateEndpoint` answer: only fields Docker did not set itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateEndpointResponse {
    /// Fields to add; omitted entirely when there is nothing to add.
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none", default)]
    pub interface: Option<EndpointInterface>,
}

/// Requests that name an endpoint: `EndpointOperInfo`, `DeleteEndpoint`, `Leave`,
/// `RevokeExternalConnectivity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRequest {
    /// Docker's network id.
    #[serde(rename = "NetworkID", default, deserialize_with = "null_as_default")]
    pub network_id: String,
    /// Docker's endpoint id.
    #[serde(rename = "EndpointID", default, deserialize_with = "null_as_default")]
    pub endpoint_id: String,
}

/// `NetworkDriver.EndpointOperInfo` answer: a free-form map shown by `docker inspect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfoResponse {
    /// Free-form operational data.
    #[serde(rename = "Value")]
    pub value: Map<String, Value>,
}

/// `NetworkDriver.Join` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Docker's network id.
    #[serde(rename = "NetworkID", default, deserialize_with = "null_as_default")]
    pub network_id: String,
    /// Docker's endpoint id.
    #[serde(rename = "EndpointID", default, deserialize_with = "null_as_default")]
    pub endpoint_id: String,
    /// The sandbox's network namespace path (`/var/run/docker/netns/<id>`).
    #[serde(rename = "SandboxKey", default, deserialize_with = "null_as_default")]
    pub sandbox_key: String,
    /// Join options.
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

/// Which host interface Docker moves into the sandbox, and how it names it there:
/// `DstPrefix` + the sandbox's next interface index (`eth0`, `eth1`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceName {
    /// Interface created by the driver in the host namespace.
    #[serde(rename = "SrcName")]
    pub src_name: String,
    /// Name prefix inside the sandbox (no index).
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

/// `RouteType` 1: a connected route bound to the joined interface (no next hop).
pub const ROUTE_TYPE_CONNECTED: u8 = 1;
/// `RouteType` 0: a route via `NextHop`.
pub const ROUTE_TYPE_NEXT_HOP: u8 = 0;

/// A route Docker installs in the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    /// Destination CIDR.
    #[serde(rename = "Destination")]
    pub destination: String,
    /// [`ROUTE_TYPE_CONNECTED`] or [`ROUTE_TYPE_NEXT_HOP`].
    #[serde(rename = "RouteType")]
    pub route_type: u8,
    /// Next hop address; empty for connected routes.
    #[serde(rename = "NextHop", default)]
    pub next_hop: String,
}

/// `NetworkDriver.Join` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The interface to move into the sandbox.
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    /// IPv4 default gateway, or empty.
    #[serde(rename = "Gateway", default)]
    pub gateway: String,
    /// IPv6 default gateway, or empty.
    #[serde(rename = "GatewayIPv6", default)]
    pub gateway_ipv6: String,
    /// Extra routes, installed before the gateways.
    #[serde(rename = "StaticRoutes", default)]
    pub static_routes: Vec<StaticRoute>,
    /// Asks Docker not to attach the `docker_gwbridge` network.
    #[serde(rename = "DisableGatewayService", default)]
    pub disable_gateway_service: bool,
}

/// `NetworkDriver.DiscoverNew` / `DiscoverDelete` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryNotification {
    /// 1 = node discovery.
    #[serde(rename = "DiscoveryType", default)]
    pub discovery_type: i64,
    /// For nodes: `{"Address": "...", "self": bool}`.
    #[serde(rename = "DiscoveryData", default)]
    pub discovery_data: Value,
}

/// `NetworkDriver.ProgramExternalConnectivity` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgramExternalConnectivityRequest {
    /// Docker's network id.
    #[serde(rename = "NetworkID", default, deserialize_with = "null_as_default")]
    pub network_id: String,
    /// Docker's endpoint id.
    #[serde(rename = "EndpointID", default, deserialize_with = "null_as_default")]
    pub endpoint_id: String,
    /// Port bindings and the like.
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

/// `NetworkDriver.GetCapabilities` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCapabilities {
    /// `"local"` or `"global"`; Docker rejects anything else.
    #[serde(rename = "Scope")]
    pub scope: String,
}

/// `Plugin.Activate` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    /// The interfaces served: [`NETWORK_DRIVER`], [`IPAM_DRIVER`].
    #[serde(rename = "Implements")]
    pub implements: Vec<String>,
}

/// `IpamDriver.GetCapabilities` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamCapabilities {
    /// Docker generates a MAC before `RequestAddress` and passes it in the options.
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    /// Docker replays pool and gateway requests of local networks at daemon start.
    #[serde(rename = "RequiresRequestReplay")]
    pub requires_request_replay: bool,
}

/// `IpamDriver.GetDefaultAddressSpaces` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSpaces {
    /// Used for local-scope networks.
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub local: String,
    /// Used for global-scope networks.
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub global: String,
}

/// `IpamDriver.RequestPool` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPoolRequest {
    /// The address space (one of ours).
    #[serde(rename = "AddressSpace", default, deserialize_with = "null_as_default")]
    pub address_space: String,
    /// `--subnet`, or empty.
    #[serde(rename = "Pool", default, deserialize_with = "null_as_default")]
    pub pool: String,
    /// `--ip-range`, or empty.
    #[serde(rename = "SubPool", default, deserialize_with = "null_as_default")]
    pub sub_pool: String,
    /// `--ipam-opt`.
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    /// True for the IPv6 pool.
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

/// `IpamDriver.RequestPool` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPoolResponse {
    /// Our handle for the pool, echoed in later calls.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The pool CIDR Docker records.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// [`DATA_GATEWAY`] and friends.
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleasePool` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePoolRequest {
    /// What `RequestPool` answered.
    #[serde(rename = "PoolID", default, deserialize_with = "null_as_default")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAddressRequest {
    /// What `RequestPool` answered.
    #[serde(rename = "PoolID", default, deserialize_with = "null_as_default")]
    pub pool_id: String,
    /// `--ip` (bare address), or empty for auto-assignment.
    #[serde(rename = "Address", default, deserialize_with = "null_as_default")]
    pub address: String,
    /// [`OPTION_REQUEST_ADDRESS_TYPE`] for the gateway, the MAC if asked for, ...
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
}

/// `IpamDriver.RequestAddress` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAddressResponse {
    /// The address with its prefix (`"192.168.0.10/32"`).
    #[serde(rename = "Address")]
    pub address: String,
    /// Free-form data.
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleaseAddress` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseAddressRequest {
    /// What `RequestPool` answered.
    #[serde(rename = "PoolID", default, deserialize_with = "null_as_default")]
    pub pool_id: String,
    /// The bare address.
    #[serde(rename = "Address", default, deserialize_with = "null_as_default")]
    pub address: String,
}

/// The failure body: `{"Err": "message"}`, sent with a non-200 status. Docker's plugin
/// client reads `Err` from any non-200 JSON body, for both interfaces; libnetwork then
/// reports `remote: <message>` (network) or the message itself (IPAM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human-readable reason.
    #[serde(rename = "Err")]
    pub err: String,
}

/// Every call of both interfaces, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `Plugin.Activate`.
    Activate,
    /// `NetworkDriver.GetCapabilities`.
    NetworkCapabilities,
    /// `NetworkDriver.CreateNetwork`.
    CreateNetwork(CreateNetworkRequest),
    /// `NetworkDriver.DeleteNetwork`.
    DeleteNetwork(NetworkRequest),
    /// `NetworkDriver.CreateEndpoint`.
    CreateEndpoint(CreateEndpointRequest),
    /// `NetworkDriver.EndpointOperInfo`.
    EndpointOperInfo(EndpointRequest),
    /// `NetworkDriver.DeleteEndpoint`.
    DeleteEndpoint(EndpointRequest),
    /// `NetworkDriver.Join`.
    Join(JoinRequest),
    /// `NetworkDriver.Leave`.
    Leave(EndpointRequest),
    /// `NetworkDriver.DiscoverNew`.
    DiscoverNew(DiscoveryNotification),
    /// `NetworkDriver.DiscoverDelete`.
    DiscoverDelete(DiscoveryNotification),
    /// `NetworkDriver.ProgramExternalConnectivity`.
    ProgramExternalConnectivity(ProgramExternalConnectivityRequest),
    /// `NetworkDriver.RevokeExternalConnectivity`.
    RevokeExternalConnectivity(EndpointRequest),
    /// `IpamDriver.GetCapabilities`.
    IpamCapabilities,
    /// `IpamDriver.GetDefaultAddressSpaces`.
    DefaultAddressSpaces,
    /// `IpamDriver.RequestPool`.
    RequestPool(RequestPoolRequest),
    /// `IpamDriver.ReleasePool`.
    ReleasePool(ReleasePoolRequest),
    /// `IpamDriver.RequestAddress`.
    RequestAddress(RequestAddressRequest),
    /// `IpamDriver.ReleaseAddress`.
    ReleaseAddress(ReleaseAddressRequest),
}

/// Why a request could not even be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// No such `<Interface>.<Method>`: answered with 404, which Docker reads as "not
    /// implemented".
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The body is not the JSON object the method takes.
    #[error("malformed {method} request: {reason}")]
    Malformed {
        /// The method called.
        method: String,
        /// serde's description, with line and column.
        reason: String,
    },
}

/// Every method name this plugin serves, in the order of the spec's tables.
pub const METHODS: [&str; 19] = [
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.DiscoverNew",
    "NetworkDriver.DiscoverDelete",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "IpamDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
];

impl Call {
    /// Parses `body` as the request of `method` (`"NetworkDriver.Join"`, no slash).
    pub fn parse(method: &str, body: &[u8]) -> Result<Call, ProtocolError> {
        fn args<T: for<'de> Deserialize<'de>>(
            method: &str,
            body: &[u8],
        ) -> Result<T, ProtocolError> {
            let malformed = |reason: String| ProtocolError::Malformed {
                method: method.to_string(),
                reason,
            };
            let trimmed = body.trim_ascii();
            if trimmed.is_empty() {
                return Err(malformed("empty body; a JSON object is required".into()));
            }
            let value: Value =
                serde_json::from_slice(trimmed).map_err(|e| malformed(e.to_string()))?;
            if !value.is_object() {
                return Err(malformed(format!("expected a JSON object, got {value}")));
            }
            serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
        }
        Ok(match method {
            // No-argument calls: the body is ignored (empty, `null` or `{}` in practice).
            "Plugin.Activate" => Call::Activate,
            "NetworkDriver.GetCapabilities" => Call::NetworkCapabilities,
            "IpamDriver.GetCapabilities" => Call::IpamCapabilities,
            "IpamDriver.GetDefaultAddressSpaces" => Call::DefaultAddressSpaces,
            "NetworkDriver.CreateNetwork" => Call::CreateNetwork(args(method, body)?),
            "NetworkDriver.DeleteNetwork" => Call::DeleteNetwork(args(method, body)?),
            "NetworkDriver.CreateEndpoint" => Call::CreateEndpoint(args(method, body)?),
            "NetworkDriver.EndpointOperInfo" => Call::EndpointOperInfo(args(method, body)?),
            "NetworkDriver.DeleteEndpoint" => Call::DeleteEndpoint(args(method, body)?),
            "NetworkDriver.Join" => Call::Join(args(method, body)?),
            "NetworkDriver.Leave" => Call::Leave(args(method, body)?),
            "NetworkDriver.DiscoverNew" => Call::DiscoverNew(args(method, body)?),
            "NetworkDriver.DiscoverDelete" => Call::DiscoverDelete(args(method, body)?),
            "NetworkDriver.ProgramExternalConnectivity" => {
                Call::ProgramExternalConnectivity(args(method, body)?)
            }
            "NetworkDriver.RevokeExternalConnectivity" => {
                Call::RevokeExternalConnectivity(args(method, body)?)
            }
            "IpamDriver.RequestPool" => Call::RequestPool(args(method, body)?),
            "IpamDriver.ReleasePool" => Call::ReleasePool(args(method, body)?),
            "IpamDriver.RequestAddress" => Call::RequestAddress(args(method, body)?),
            "IpamDriver.ReleaseAddress" => Call::ReleaseAddress(args(method, body)?),
            other => return Err(ProtocolError::UnknownMethod(other.to_string())),
        })
    }

    /// The method name, as in the URL path without its slash.
    pub fn method(&self) -> &'static str {
        match self {
            Call::Activate => "Plugin.Activate",
            Call::NetworkCapabilities => "NetworkDriver.GetCapabilities",
            Call::CreateNetwork(_) => "NetworkDriver.CreateNetwork",
            Call::DeleteNetwork(_) => "NetworkDriver.DeleteNetwork",
            Call::CreateEndpoint(_) => "NetworkDriver.CreateEndpoint",
            Call::EndpointOperInfo(_) => "NetworkDriver.EndpointOperInfo",
            Call::DeleteEndpoint(_) => "NetworkDriver.DeleteEndpoint",
            Call::Join(_) => "NetworkDriver.Join",
            Call::Leave(_) => "NetworkDriver.Leave",
            Call::DiscoverNew(_) => "NetworkDriver.DiscoverNew",
            Call::DiscoverDelete(_) => "NetworkDriver.DiscoverDelete",
            Call::ProgramExternalConnectivity(_) => "NetworkDriver.ProgramExternalConnectivity",
            Call::RevokeExternalConnectivity(_) => "NetworkDriver.RevokeExternalConnectivity",
            Call::IpamCapabilities => "IpamDriver.GetCapabilities",
            Call::DefaultAddressSpaces => "IpamDriver.GetDefaultAddressSpaces",
            Call::RequestPool(_) => "IpamDriver.RequestPool",
            Call::ReleasePool(_) => "IpamDriver.ReleasePool",
            Call::RequestAddress(_) => "IpamDriver.RequestAddress",
            Call::ReleaseAddress(_) => "IpamDriver.ReleaseAddress",
        }
    }
}

/// Every successful answer. Serializes to the bare JSON object Docker expects.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `{}`.
    Empty(Map<String, Value>),
    /// `Plugin.Activate`.
    Activate(ActivateResponse),
    /// `NetworkDriver.GetCapabilities`.
    NetworkCapabilities(NetworkCapabilities),
    /// `NetworkDriver.CreateEndpoint`.
    CreateEndpoint(CreateEndpointResponse),
    /// `NetworkDriver.EndpointOperInfo`.
    EndpointInfo(EndpointInfoResponse),
    /// `NetworkDriver.Join`.
    Join(JoinResponse),
    /// `IpamDriver.GetCapabilities`.
    IpamCapabilities(IpamCapabilities),
    /// `IpamDriver.GetDefaultAddressSpaces`.
    AddressSpaces(AddressSpaces),
    /// `IpamDriver.RequestPool`.
    RequestPool(RequestPoolResponse),
    /// `IpamDriver.RequestAddress`.
    RequestAddress(RequestAddressResponse),
}

impl Reply {
    /// `{}`.
    pub fn empty() -> Reply {
        Reply::Empty(Map::new())
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        // Serializing these plain structs cannot fail; an empty object is the safe answer.
        serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Map::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn no_argument_calls_accept_empty_null_and_object_bodies() {
        for body in [&b""[..], b"null", b"{}", b"\n", b"null\n"] {
            assert_eq!(Call::parse("Plugin.Activate", body), Ok(Call::Activate));
            assert_eq!(
                Call::parse("IpamDriver.GetDefaultAddressSpaces", body),
                Ok(Call::DefaultAddressSpaces)
            );
            assert_eq!(
                Call::parse("NetworkDriver.GetCapabilities", body),
                Ok(Call::NetworkCapabilities)
            );
            assert_eq!(
                Call::parse("IpamDriver.GetCapabilities", body),
                Ok(Call::IpamCapabilities)
            );
        }
    }

    #[test]
    fn unknown_methods_are_reported_as_such() {
        assert_eq!(
            Call::parse("NetworkDriver.Frobnicate", b"{}"),
            Err(ProtocolError::UnknownMethod(
                "NetworkDriver.Frobnicate".into()
            ))
        );
        assert!(matches!(
            Call::parse("", b""),
            Err(ProtocolError::UnknownMethod(_))
        ));
    }

    #[test]
    fn every_method_round_trips_through_its_name() {
        for method in METHODS {
            let call = match Call::parse(method, b"{}") {
                Ok(call) => call,
                Err(e) => panic!("{method}: {e}"),
            };
            assert_eq!(call.method(), method);
        }
    }

    #[test]
    fn argument_calls_reject_missing_or_non_object_bodies() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"\"x\"",
            b"{",
            b"{\"NetworkID\": 5}",
        ] {
            let err = Call::parse("NetworkDriver.DeleteNetwork", body).unwrap_err();
            assert!(
                matches!(err, ProtocolError::Malformed { .. }),
                "{body:?}: {err}"
            );
        }
    }

    #[test]
    fn go_nil_maps_and_slices_read_as_empty() {
        let body = br#"{"NetworkID":"n","Options":null,"IPv4Data":null,"IPv6Data":null}"#;
        let Ok(Call::CreateNetwork(req)) = Call::parse("NetworkDriver.CreateNetwork", body) else {
            panic!("not parsed")
        };
        assert_eq!(req.network_id, "n");
        assert!(req.options.is_empty() && req.ipv4_data.is_empty() && req.ipv6_data.is_empty());
        let body = br#"{"NetworkID":"n","EndpointID":"e","Interface":null,"Options":null}"#;
        let Ok(Call::CreateEndpoint(req)) = Call::parse("NetworkDriver.CreateEndpoint", body)
        else {
            panic!("not parsed")
        };
        assert!(req.interface.is_empty());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = br#"{"PoolID":"p","Address":"10.0.0.1","FutureField":[1,2,3]}"#;
        let call = Call::parse("IpamDriver.ReleaseAddress", body).unwrap();
        assert_eq!(
            call,
            Call::ReleaseAddress(ReleaseAddressRequest {
                pool_id: "p".into(),
                address: "10.0.0.1".into()
            })
        );
    }

    #[test]
    fn generic_options_are_the_nested_string_map() {
        let req: CreateNetworkRequest = serde_json::from_value(json!({
            "NetworkID": "n",
            "Options": {"com.docker.network.generic": {"ipip": "true", "n": 5}, "other": 1}
        }))
        .unwrap();
        let opts = req.generic_options();
        assert_eq!(opts.len(), 1);
        assert_eq!(opts.get("ipip").map(String::as_str), Some("true"));
    }

    #[test]
    fn create_endpoint_reply_omits_what_is_not_set() {
        let reply = Reply::CreateEndpoint(CreateEndpointResponse {
            interface: Some(EndpointInterface {
                mac_address: "EE:EE:EE:EE:EE:EE".into(),
                ..Default::default()
            }),
        });
        assert_eq!(
            reply.to_json(),
            json!({"Interface": {"MacAddress": "EE:EE:EE:EE:EE:EE"}})
        );
        assert_eq!(
            Reply::CreateEndpoint(CreateEndpointResponse::default()).to_json(),
            json!({})
        );
        assert_eq!(Reply::empty().to_json(), json!({}));
    }
}
