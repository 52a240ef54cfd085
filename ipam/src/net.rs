//! IP families, addresses as integers, CIDR parsing, and the validated names that become
//! datastore key segments.
//!
//! All address arithmetic in the crate is done on `u128`: an IPv4 address is its 32-bit
//! value zero-extended, an IPv6 address its 128-bit value. A network is then a base (the
//! address with every bit below the prefix cleared) plus a prefix length, and "the
//! ordinal of an address in a block" is a subtraction.
//!
//! Host names and handle ids end up inside etcd keys (`/calico/ipam/v2/host/<host>/...`,
//! `/calico/ipam/v2/handle/<id>`), so they are validated once, at the API boundary, into
//! [`HostName`] and [`HandleId`]: non-empty, no `/`, no control characters, not `.` or
//! `..`. Both are one pointer wide and cheap to clone (a shared `Arc<String>`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{IpamError, Result};

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4 (32-bit addresses).
    V4,
    /// IPv6 (128-bit addresses).
    V6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of an address.
    pub fn of_addr(addr: IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a network.
    pub fn of_network(net: &IpNetwork) -> IpFamily {
        match net {
            IpNetwork::V4(_) => IpFamily::V4,
            IpNetwork::V6(_) => IpFamily::V6,
        }
    }

    /// Address width in bits (32 or 128).
    pub const fn bits(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }

    /// 4 or 6.
    pub const fn version(self) -> u8 {
        match self {
            IpFamily::V4 => 4,
            IpFamily::V6 => 6,
        }
    }

    /// The family's segment in IPAM keys: `ipv4` or `ipv6`.
    pub const fn ipam_segment(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }

    /// The family's segment in pool keys: `v4` or `v6`.
    pub const fn pool_segment(self) -> &'static str {
        match self {
            IpFamily::V4 => "v4",
            IpFamily::V6 => "v6",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// An address as an integer (IPv4 zero-extended).
pub(crate) fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` whose integer value is `bits` (truncated to 32 bits for IPv4).
pub(crate) fn addr_from_bits(family: IpFamily, bits: u128) -> IpAddr {
    match family {
        // Truncation is intended: IPv4 values always fit in the low 32 bits.
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// The mask selecting the top `prefix` bits of a `family` address, as an integer.
pub(crate) fn prefix_mask(family: IpFamily, prefix: u8) -> u128 {
    let width = u32::from(family.bits());
    let prefix = u32::from(prefix).min(width);
    let host_bits = width - prefix;
    let all: u128 = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    // `checked_shl` covers host_bits == 128 (prefix 0 in IPv6): then nothing is masked in.
    let low = 1u128.checked_shl(host_bits).map_or(u128::MAX, |v| v - 1);
    all & !low
}

/// The integer base (network address) of a network.
pub(crate) fn network_base(net: &IpNetwork) -> u128 {
    let family = IpFamily::of_network(net);
    addr_bits(net.ip()) & prefix_mask(family, net.prefix())
}

/// Builds the network `base/prefix` of `family`; host bits of `base` are cleared.
pub(crate) fn make_network(family: IpFamily, base: u128, prefix: u8) -> Result<IpNetwork> {
    let base = base & prefix_mask(family, prefix);
    let built = match addr_from_bits(family, base) {
        IpAddr::V4(a) => Ipv4Network::new(a, prefix).map(IpNetwork::V4),
        IpAddr::V6(a) => Ipv6Network::new(a, prefix).map(IpNetwork::V6),
    };
    built.map_err(|e| IpamError::InvalidCidr {
        input: format!("{}/{prefix}", addr_from_bits(family, base)),
        reason: e.to_string(),
    })
}

/// `net` with its host bits cleared.
pub(crate) fn normalized(net: &IpNetwork) -> Result<IpNetwork> {
    make_network(IpFamily::of_network(net), network_base(net), net.prefix())
}

/// True when `inner` lies entirely inside `outer` (same family, longer-or-equal prefix).
pub(crate) fn network_contains(outer: &IpNetwork, inner: &IpNetwork) -> bool {
    IpFamily::of_network(outer) == IpFamily::of_network(inner)
        && outer.prefix() <= inner.prefix()
        && outer.contains(inner.network())
}

/// True when two networks share at least one address.
pub(crate) fn networks_overlap(a: &IpNetwork, b: &IpNetwork) -> bool {
    network_contains(a, b) || network_contains(b, a)
}

/// Parses `a.b.c.d/n` or `x::y/n` (a bare address is a /32 or /128); the result may have
/// host bits set: see [`parse_network_strict`].
pub fn parse_network(text: &str) -> Result<IpNetwork> {
    IpNetwork::from_str(text.trim()).map_err(|e| IpamError::InvalidCidr {
        input: text.to_string(),
        reason: e.to_string(),
    })
}

/// Parses a CIDR and rejects host bits below the prefix ([`IpamError::HostBitsSet`]
/// names the intended network).
pub fn parse_network_strict(text: &str) -> Result<IpNetwork> {
    let given = parse_network(text)?;
    let network = normalized(&given)?;
    if network != given {
        return Err(IpamError::HostBitsSet { given, network });
    }
    Ok(network)
}

/// The `<address>-<prefix>` form of a CIDR used inside etcd keys (`10.0.0.0-26`).
pub fn cidr_key_segment(net: &IpNetwork) -> String {
    format!("{}-{}", net.ip(), net.prefix())
}

/// Parses the `<address>-<prefix>` key form back into a network (host bits rejected).
pub fn parse_cidr_key_segment(segment: &str) -> Result<IpNetwork> {
    let Some((addr, prefix)) = segment.rsplit_once('-') else {
        return Err(IpamError::InvalidCidr {
            input: segment.to_string(),
            reason: "expected <address>-<prefix>".to_string(),
        });
    };
    parse_network_strict(&format!("{addr}/{prefix}"))
}

/// Checks a string that will become one etcd key segment.
fn validate_segment(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.contains('/') {
        Some("must not contain '/'")
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else if value == "." || value == ".." {
        Some("must not be '.' or '..'")
    } else if value.len() > 1024 {
        Some("must be at most 1024 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(IpamError::InvalidName {
            what,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

macro_rules! key_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<String>);

        impl $name {
            /// Validates `value` (non-empty, no `/`, no control characters, not `.`/`..`).
            pub fn new(value: &str) -> Result<Self> {
                validate_segment($what, value)?;
                Ok(Self(Arc::new(value.to_string())))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0.as_str()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::new(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

key_name!(
    /// A validated host name: the owner of block affinities (`host:<name>` in block JSON).
    HostName,
    "host name"
);
key_name!(
    /// A validated handle id: groups allocations (e.g. one per container) so that they can
    /// be found, released and leak-checked together.
    HandleId,
    "handle id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(prefix_mask(IpFamily::V4, 26), 0xffff_ffc0);
        assert_eq!(prefix_mask(IpFamily::V4, 0), 0);
        assert_eq!(prefix_mask(IpFamily::V4, 32), 0xffff_ffff);
        assert_eq!(prefix_mask(IpFamily::V6, 0), 0);
        assert_eq!(prefix_mask(IpFamily::V6, 128), u128::MAX);
        assert_eq!(prefix_mask(IpFamily::V6, 122), u128::MAX << 6);
    }

    #[test]
    fn strict_parse_rejects_host_bits_and_names_the_network() {
        let err = parse_network_strict("10.0.0.1/24").unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
        );
        assert!(parse_network_strict("10.0.0.0/24").is_ok());
        assert!(matches!(
            parse_network("bogus"),
            Err(IpamError::InvalidCidr { .. })
        ));
        assert!(parse_network("10.0.0.0/33").is_err());
    }

    #[test]
    fn key_segments_round_trip() {
        for text in ["10.20.10.0/26", "2001:db8::/122", "::/0", "0.0.0.0/0"] {
            let net = parse_network_strict(text).unwrap();
            let seg = cidr_key_segment(&net);
            assert_eq!(parse_cidr_key_segment(&seg).unwrap(), net, "{seg}");
        }
        assert_eq!(
            cidr_key_segment(&parse_network("10.20.10.0/26").unwrap()),
            "10.20.10.0-26"
        );
        assert!(parse_cidr_key_segment("10.20.10.0").is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(HostName::new("Sammy Davis, Jr.").is_ok());
        for bad in ["", "a/b", ".", "..", "a\nb"] {
            assert!(
                matches!(HostName::new(bad), Err(IpamError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(HandleId::new("k8s-pod-network.abc").is_ok());
    }

    #[test]
    fn containment_and_overlap() {
        let a = parse_network("10.0.0.0/16").unwrap();
        let b = parse_network("10.0.1.0/24").unwrap();
        let c = parse_network("10.1.0.0/16").unwrap();
        let v6 = parse_network("::/0").unwrap();
        assert!(network_contains(&a, &b));
        assert!(!network_contains(&b, &a));
        assert!(networks_overlap(&a, &b) && networks_overlap(&b, &a));
        assert!(!networks_overlap(&a, &c));
        assert!(!networks_overlap(&a, &v6));
    }
}
