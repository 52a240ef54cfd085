//! Routes, neighbours, FDB entries and tunnel devices of a host plan, as data with the
//! `ip` / `bridge` arguments that install and remove them.
//!
//! Every install is a `replace`, so applying the same plan twice changes nothing;
//! removal targets exactly the object installed (same destination / address / MAC and
//! device).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;

use crate::model::MacAddr;
use crate::names::sha256;

/// The IP-in-IP device felix manages.
pub const IPIP_DEVICE: &str = "tunl0";
/// The VXLAN device (Calico 3's name; an extension over 0.22).
pub const VXLAN_DEVICE: &str = "vxlan.calico";
/// VXLAN network identifier (Calico 3's default).
pub const VXLAN_VNI: u32 = 4096;
/// VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN device MTU (1500 - 50 bytes of encapsulation).
pub const VXLAN_MTU: u32 = 1450;
/// The link-local gateway every Calico workload routes through.
pub const WORKLOAD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    /// `<dst> dev <dev> scope link`: a local workload (or the gateway via `lo`).
    Local {
        /// Destination.
        dst: IpNetwork,
        /// Device.
        dev: String,
    },
    /// `<dst> via <gateway> [dev <dev> onlink]`: another host's workloads.
    Via {
        /// Destination.
        dst: IpNetwork,
        /// Next hop (the other host's address).
        gateway: IpAddr,
        /// Tunnel device, when encapsulated.
        dev: Option<String>,
    },
    /// `blackhole <dst>`: a block this host owns (more specific routes win).
    Blackhole {
        /// Destination.
        dst: IpNetwork,
    },
}

impl Route {
    /// The destination (a route's identity in the main table).
    pub fn dst(&self) -> IpNetwork {
        match self {
            Route::Local { dst, .. } | Route::Via { dst, .. } | Route::Blackhole { dst } => *dst,
        }
    }

    /// Arguments after `ip [-6] route replace`.
    pub fn args(&self) -> Vec<String> {
        match self {
            Route::Local { dst, dev } => vec![
                dst.to_string(),
                "dev".into(),
                dev.clone(),
                "scope".into(),
                "link".into(),
            ],
            Route::Via {
                dst,
                gateway,
                dev: None,
            } => vec![dst.to_string(), "via".into(), gateway.to_string()],
            Route::Via {
                dst,
                gateway,
                dev: Some(dev),
            } => {
                vec![
                    dst.to_string(),
                    "via".into(),
                    gateway.to_string(),
                    "dev".into(),
                    dev.clone(),
                    "onlink".into(),
                ]
            }
            Route::Blackhole { dst } => vec!["blackhole".into(), dst.to_string()],
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args().join(" "))
    }
}

/// A permanent neighbour entry: `ip neigh replace <ip> lladdr <mac> dev <dev> nud permanent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbor {
    /// Address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: MacAddr,
    /// Device.
    pub dev: String,
}

impl Neighbor {
    /// Arguments after `ip neigh replace`.
    pub fn args(&self) -> Vec<String> {
        vec![
            self.ip.to_string(),
            "lladdr".into(),
            self.mac.to_string(),
            "dev".into(),
            self.dev.clone(),
            "nud".into(),
            "permanent".into(),
        ]
    }
}

/// A VXLAN forwarding entry: `bridge fdb replace <mac> dev <dev> dst <ip> self permanent`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbEntry {
    /// Remote VTEP MAC.
    pub mac: MacAddr,
    /// VXLAN device.
    pub dev: String,
    /// Remote VTEP (host) address.
    pub dst: IpAddr,
}

impl FdbEntry {
    /// Arguments after `bridge fdb replace`.
    pub fn args(&self) -> Vec<String> {
        vec![
            self.mac.to_string(),
            "dev".into(),
            self.dev.clone(),
            "dst".into(),
            self.dst.to_string(),
            "self".into(),
            "permanent".into(),
        ]
    }
}

/// The tunnel device a host needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tunnel {
    /// `tunl0` (IP-in-IP), as felix creates it when `IpInIpEnabled`.
    IpIp {
        /// `IpInIpMtu`.
        mtu: u32,
        /// `IpInIpTunnelAddr`, as the device's only address (/32).
        address: Option<Ipv4Addr>,
    },
    /// `vxlan.calico`: VNI 4096, UDP 4789, this host's address as the VTEP.
    Vxlan {
        /// This host's address (the `local` of the device).
        local: Ipv4Addr,
        /// The device MAC ([`vtep_mac`] of the host name).
        mac: MacAddr,
        /// Device MTU.
        mtu: u32,
    },
}

impl Tunnel {
    /// The device name.
    pub fn device(&self) -> &'static str {
        match self {
            Tunnel::IpIp { .. } => IPIP_DEVICE,
            Tunnel::Vxlan { .. } => VXLAN_DEVICE,
        }
    }
}

/// The VXLAN VTEP MAC of a host: locally administered unicast, `66` followed by the
/// first five bytes of SHA-256 of the host name — stable, so every host computes every
/// other host's MAC without storing it.
pub fn vtep_mac(host: &str) -> MacAddr {
    let h = sha256(host.as_bytes());
    MacAddr([0x66, h[0], h[1], h[2], h[3], h[4]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_arguments() {
        let r = Route::Local {
            dst: "10.20.10.1/32".parse().unwrap(),
            dev: "cali1".into(),
        };
        assert_eq!(r.to_string(), "10.20.10.1/32 dev cali1 scope link");
        let r = Route::Via {
            dst: "10.20.10.64/26".parse().unwrap(),
            gateway: "192.168.1.24".parse().unwrap(),
            dev: Some("tunl0".into()),
        };
        assert_eq!(
            r.to_string(),
            "10.20.10.64/26 via 192.168.1.24 dev tunl0 onlink"
        );
        assert_eq!(
            Route::Blackhole {
                dst: "10.20.10.0/26".parse().unwrap()
            }
            .to_string(),
            "blackhole 10.20.10.0/26"
        );
    }

    #[test]
    fn vtep_macs_are_stable_local_unicast() {
        let m = vtep_mac("hostA");
        assert_eq!(m, vtep_mac("hostA"));
        assert_ne!(m, vtep_mac("hostB"));
        assert_eq!(m.0[0] & 0b11, 0b10, "locally administered, unicast");
    }
}
