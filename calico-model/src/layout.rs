//! The `/calico` key layout of Calico 0.22 (spec/calico.md §3), as functions that build
//! keys and one that classifies them.
//!
//! | key | value |
//! |---|---|
//! | `/calico/v1/Ready` | `true` |
//! | `/calico/v1/config/<Param>` | global felix parameter |
//! | `/calico/v1/host/<h>/bird_ip` | host IPv4 |
//! | `/calico/v1/host/<h>/config/<Param>` | per-host felix parameter |
//! | `/calico/v1/host/<h>/workload/<orch>/<workload>/endpoint/<ep>` | endpoint JSON |
//! | `/calico/v1/ipam/v4/pool/<a.b.c.d-nn>` (and `v6`) | pool JSON |
//! | `/calico/v1/policy/profile/<p>/tags`, `/rules`, `/labels` | profile parts |
//! | `/calico/bgp/v1/global/as_num`, `/node_mesh`, `/peer_v4/<ip>` | BGP globals |
//! | `/calico/bgp/v1/host/<h>/ip_addr_v4`, `/ip_addr_v6`, `/as_num` | BGP per host |
//! | `/calico/ipam/v2/config` | IPAM config JSON |
//! | `/calico/ipam/v2/assignment/ipv4/block/<cidr>` | allocation block JSON |
//! | `/calico/ipam/v2/host/<h>/ipv4/block/<cidr>` | `""`: host affinity |
//! | `/calico/ipam/v2/handle/<id>` | handle JSON |
//!
//! A CIDR inside a key has its `/` replaced by `-` (`10.20.10.0/24` → `10.20.10.0-24`).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::model::EndpointKey;

/// Root of everything Calico stores.
pub const CALICO_ROOT: &str = "/calico";
/// Felix's subtree: one recursive read of it is felix's snapshot.
pub const V1_ROOT: &str = "/calico/v1";
/// Felix waits for this to be `true`.
pub const READY: &str = "/calico/v1/Ready";
/// Global felix parameters.
pub const GLOBAL_CONFIG_DIR: &str = "/calico/v1/config";
/// All hosts.
pub const HOSTS_DIR: &str = "/calico/v1/host";
/// All profiles.
pub const PROFILES_DIR: &str = "/calico/v1/policy/profile";
/// BGP global AS number.
pub const BGP_GLOBAL_AS: &str = "/calico/bgp/v1/global/as_num";
/// BGP node-to-node mesh switch.
pub const BGP_NODE_MESH: &str = "/calico/bgp/v1/global/node_mesh";
/// BGP per-host data.
pub const BGP_HOSTS_DIR: &str = "/calico/bgp/v1/host";
/// IPAM configuration.
pub const IPAM_CONFIG: &str = "/calico/ipam/v2/config";
/// IPAM per-host affinity index.
pub const IPAM_HOSTS_DIR: &str = "/calico/ipam/v2/host";
/// IPAM handles.
pub const IPAM_HANDLES_DIR: &str = "/calico/ipam/v2/handle";

/// `10.20.10.0/24` → `10.20.10.0-24`.
pub fn cidr_segment(cidr: &IpNetwork) -> String {
    format!("{}-{}", cidr.ip(), cidr.prefix())
}

/// `10.20.10.0-24` → `10.20.10.0/24`.
pub fn parse_cidr_segment(segment: &str) -> Result<IpNetwork> {
    let bad = || {
        Error::invalid(
            "CIDR key segment",
            segment,
            "expected <address>-<prefix length>",
        )
    };
    let (addr, prefix) = segment.rsplit_once('-').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    IpNetwork::new(addr, prefix).map_err(|_| bad())
}

fn family(cidr: &IpNetwork) -> u8 {
    if cidr.is_ipv4() {
        4
    } else {
        6
    }
}

/// `/calico/v1/config/<param>`.
pub fn global_config(param: &str) -> String {
    format!("{GLOBAL_CONFIG_DIR}/{param}")
}

/// `/calico/v1/host/<host>`.
pub fn host_dir(host: &str) -> String {
    format!("{HOSTS_DIR}/{host}")
}

/// `/calico/v1/host/<host>/bird_ip`.
pub fn host_bird_ip(host: &str) -> String {
    format!("{HOSTS_DIR}/{host}/bird_ip")
}

/// `/calico/v1/host/<host>/config/<param>`.
pub fn host_config(host: &str, param: &str) -> String {
    format!("{HOSTS_DIR}/{host}/config/{param}")
}

/// `/calico/v1/host/<host>/workload`.
pub fn host_workload_dir(host: &str) -> String {
    format!("{HOSTS_DIR}/{host}/workload")
}

/// `/calico/v1/host/<h>/workload/<orch>/<workload>`.
pub fn workload_dir(host: &str, orchestrator: &str, workload: &str) -> String {
    format!("{HOSTS_DIR}/{host}/workload/{orchestrator}/{workload}")
}

/// `/calico/v1/host/<h>/workload/<orch>/<workload>/endpoint/<ep>`.
pub fn endpoint(key: &EndpointKey) -> String {
    format!(
        "{HOSTS_DIR}/{}/workload/{}/{}/endpoint/{}",
        key.host, key.orchestrator, key.workload, key.endpoint
    )
}

/// `/calico/v1/ipam/v<N>/pool`.
pub fn pools_dir(v4: bool) -> String {
    format!("/calico/v1/ipam/v{}/pool", if v4 { 4 } else { 6 })
}

/// `/calico/v1/ipam/v<N>/pool/<cidr>`.
pub fn pool(cidr: &IpNetwork) -> String {
    format!(
        "/calico/v1/ipam/v{}/pool/{}",
        family(cidr),
        cidr_segment(cidr)
    )
}

/// `/calico/v1/policy/profile/<name>`.
pub fn profile_dir(name: &str) -> String {
    format!("{PROFILES_DIR}/{name}")
}

/// `/calico/v1/policy/profile/<name>/tags`.
pub fn profile_tags(name: &str) -> String {
    format!("{PROFILES_DIR}/{name}/tags")
}

/// `/calico/v1/policy/profile/<name>/rules`.
pub fn profile_rules(name: &str) -> String {
    format!("{PROFILES_DIR}/{name}/rules")
}

/// `/calico/v1/policy/profile/<name>/labels`.
pub fn profile_labels(name: &str) -> String {
    format!("{PROFILES_DIR}/{name}/labels")
}

/// `/calico/bgp/v1/host/<host>/ip_addr_v4`.
pub fn bgp_host_ipv4(host: &str) -> String {
    format!("{BGP_HOSTS_DIR}/{host}/ip_addr_v4")
}

/// `/calico/bgp/v1/host/<host>/ip_addr_v6`.
pub fn bgp_host_ipv6(host: &str) -> String {
    format!("{BGP_HOSTS_DIR}/{host}/ip_addr_v6")
}

/// `/calico/bgp/v1/host/<host>/as_num`.
pub fn bgp_host_as(host: &str) -> String {
    format!("{BGP_HOSTS_DIR}/{host}/as_num")
}

/// `/calico/bgp/v1/host/<host>`.
pub fn bgp_host_dir(host: &str) -> String {
    format!("{BGP_HOSTS_DIR}/{host}")
}

/// `/calico/ipam/v2/assignment/ipv<N>/block/<cidr>`.
pub fn ipam_block(cidr: &IpNetwork) -> String {
    format!(
        "/calico/ipam/v2/assignment/ipv{}/block/{}",
        family(cidr),
        cidr_segment(cidr)
    )
}

/// `/calico/ipam/v2/assignment/ipv<N>/block`.
pub fn ipam_blocks_dir(v4: bool) -> String {
    format!(
        "/calico/ipam/v2/assignment/ipv{}/block",
        if v4 { 4 } else { 6 }
    )
}

/// `/calico/ipam/v2/host/<host>/ipv<N>/block`.
pub fn ipam_host_blocks_dir(host: &str, v4: bool) -> String {
    format!(
        "{IPAM_HOSTS_DIR}/{host}/ipv{}/block",
        if v4 { 4 } else { 6 }
    )
}

/// `/calico/ipam/v2/host/<host>/ipv<N>/block/<cidr>`.
pub fn ipam_host_affinity(host: &str, cidr: &IpNetwork) -> String {
    format!(
        "{IPAM_HOSTS_DIR}/{host}/ipv{}/block/{}",
        family(cidr),
        cidr_segment(cidr)
    )
}

/// `/calico/ipam/v2/handle/<id>`.
pub fn ipam_handle(id: &str) -> String {
    format!("{IPAM_HANDLES_DIR}/{id}")
}

/// What a key under `/calico` is, as far as the model cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// `/calico/v1/Ready`.
    Ready,
    /// `/calico/v1/config/<param>`.
    GlobalConfig(String),
    /// `/calico/v1/host/<host>/bird_ip`.
    HostBirdIp(String),
    /// `/calico/v1/host/<host>/config/<param>`.
    HostConfig {
        /// Host.
        host: String,
        /// Parameter.
        param: String,
    },
    /// An endpoint.
    Endpoint(EndpointKey),
    /// `/calico/v1/ipam/v<N>/pool/<cidr>`.
    Pool(IpNetwork),
    /// `/calico/v1/policy/profile/<name>/tags`.
    ProfileTags(String),
    /// `/calico/v1/policy/profile/<name>/rules`.
    ProfileRules(String),
    /// `/calico/v1/policy/profile/<name>/labels`.
    ProfileLabels(String),
    /// `/calico/bgp/v1/global/as_num`.
    BgpGlobalAs,
    /// `/calico/bgp/v1/global/node_mesh`.
    BgpNodeMesh,
    /// `/calico/bgp/v1/host/<host>/ip_addr_v4`.
    BgpHostIpv4(String),
    /// `/calico/bgp/v1/host/<host>/ip_addr_v6`.
    BgpHostIpv6(String),
    /// `/calico/bgp/v1/host/<host>/as_num`.
    BgpHostAs(String),
    /// `/calico/ipam/v2/host/<host>/ipv<N>/block/<cidr>`.
    Affinity {
        /// Host.
        host: String,
        /// Block.
        block: IpNetwork,
    },
    /// `/calico/ipam/v2/assignment/ipv<N>/block/<cidr>`.
    Block(IpNetwork),
    /// Anything else (directories, handles, status, BGP peers, plugin data...).
    Other,
}

/// Classifies a key (no leading-slash or trailing-slash variants: keys as a datastore
/// returns them).
pub fn classify(key: &str) -> KeyKind {
    let parts: Vec<&str> = key.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["calico", "v1", "Ready"] => KeyKind::Ready,
        ["calico", "v1", "config", p] => KeyKind::GlobalConfig((*p).into()),
        ["calico", "v1", "host", h, "bird_ip"] => KeyKind::HostBirdIp((*h).into()),
        ["calico", "v1", "host", h, "config", p] => KeyKind::HostConfig {
            host: (*h).into(),
            param: (*p).into(),
        },
        ["calico", "v1", "host", h, "workload", o, w, "endpoint", e] => {
            KeyKind::Endpoint(EndpointKey {
                host: (*h).into(),
                orchestrator: (*o).into(),
                workload: (*w).into(),
                endpoint: (*e).into(),
            })
        }
        ["calico", "v1", "ipam", "v4" | "v6", "pool", c] => match parse_cidr_segment(c) {
            Ok(cidr) => KeyKind::Pool(cidr),
            Err(_) => KeyKind::Other,
        },
        ["calico", "v1", "policy", "profile", p, "tags"] => KeyKind::ProfileTags((*p).into()),
        ["calico", "v1", "policy", "profile", p, "rules"] => KeyKind::ProfileRules((*p).into()),
        ["calico", "v1", "policy", "profile", p, "labels"] => KeyKind::ProfileLabels((*p).into()),
        ["calico", "bgp", "v1", "global", "as_num"] => KeyKind::BgpGlobalAs,
        ["calico", "bgp", "v1", "global", "node_mesh"] => KeyKind::BgpNodeMesh,
        ["calico", "bgp", "v1", "host", h, "ip_addr_v4"] => KeyKind::BgpHostIpv4((*h).into()),
        ["calico", "bgp", "v1", "host", h, "ip_addr_v6"] => KeyKind::BgpHostIpv6((*h).into()),
        ["calico", "bgp", "v1", "host", h, "as_num"] => KeyKind::BgpHostAs((*h).into()),
        ["calico", "ipam", "v2", "host", h, "ipv4" | "ipv6", "block", c] => {
            match parse_cidr_segment(c) {
                Ok(block) => KeyKind::Affinity {
                    host: (*h).into(),
                    block,
                },
                Err(_) => KeyKind::Other,
            }
        }
        ["calico", "ipam", "v2", "assignment", "ipv4" | "ipv6", "block", c] => {
            match parse_cidr_segment(c) {
                Ok(block) => KeyKind::Block(block),
                Err(_) => KeyKind::Other,
            }
        }
        _ => KeyKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_spec() {
        let cidr: IpNetwork = "10.20.10.0/24".parse().unwrap();
        assert_eq!(pool(&cidr), "/calico/v1/ipam/v4/pool/10.20.10.0-24");
        let v6: IpNetwork = "fd80:24e2:f998:72d6::/64".parse().unwrap();
        assert_eq!(
            pool(&v6),
            "/calico/v1/ipam/v6/pool/fd80:24e2:f998:72d6::-64"
        );
        let ep = EndpointKey::new("dockera", "docker", "abc", "1e5a").unwrap();
        assert_eq!(
            endpoint(&ep),
            "/calico/v1/host/dockera/workload/docker/abc/endpoint/1e5a"
        );
        assert_eq!(
            host_config("dockera", "marker"),
            "/calico/v1/host/dockera/config/marker"
        );
        assert_eq!(profile_rules("p"), "/calico/v1/policy/profile/p/rules");
        let block: IpNetwork = "10.20.10.0/26".parse().unwrap();
        assert_eq!(
            ipam_block(&block),
            "/calico/ipam/v2/assignment/ipv4/block/10.20.10.0-26"
        );
        assert_eq!(
            ipam_host_affinity("dockera", &block),
            "/calico/ipam/v2/host/dockera/ipv4/block/10.20.10.0-26"
        );
        assert_eq!(
            bgp_host_ipv4("dockera"),
            "/calico/bgp/v1/host/dockera/ip_addr_v4"
        );
    }

    #[test]
    fn classify_inverts_the_builders() {
        let cidr: IpNetwork = "10.20.10.0/24".parse().unwrap();
        assert_eq!(classify(&pool(&cidr)), KeyKind::Pool(cidr));
        let v6: IpNetwork = "fd80::/64".parse().unwrap();
        assert_eq!(classify(&pool(&v6)), KeyKind::Pool(v6));
        let ep = EndpointKey::new("h", "docker", "w", "e").unwrap();
        assert_eq!(classify(&endpoint(&ep)), KeyKind::Endpoint(ep));
        assert_eq!(
            classify(&profile_tags("p")),
            KeyKind::ProfileTags("p".into())
        );
        assert_eq!(classify(READY), KeyKind::Ready);
        let block: IpNetwork = "10.20.10.64/26".parse().unwrap();
        assert_eq!(
            classify(&ipam_host_affinity("h", &block)),
            KeyKind::Affinity {
                host: "h".into(),
                block
            }
        );
        assert_eq!(classify("/calico/v1/ipam/v4/pool/garbage"), KeyKind::Other);
        assert_eq!(classify("/calico/v1/host/h/workload"), KeyKind::Other);
    }

    #[test]
    fn cidr_segments_round_trip() {
        for s in [
            "10.20.10.0/24",
            "192.168.0.0/16",
            "fd80:24e2:f998:72d6::/64",
            "0.0.0.0/0",
        ] {
            let c: IpNetwork = s.parse().unwrap();
            assert_eq!(parse_cidr_segment(&cidr_segment(&c)).unwrap(), c);
        }
        assert!(parse_cidr_segment("10.0.0.0").is_err());
        assert!(parse_cidr_segment("10.0.0.0-40").is_err());
    }
}
