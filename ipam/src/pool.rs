//! IP pools and the global IPAM configuration.
//!
//! # Pool format (`/calico/v1/ipam/v<4|6>/pool/<a.b.c.d-nn>`, calico.md §3.4)
//!
//! ```json
//! {"cidr": "10.20.10.0/24", "ipip": "tunl0", "masquerade": true}
//! ```
//!
//! `ipip` (the tunnel device, present only when enabled), `masquerade` (present only when
//! true), `ipam` (present only when false: a pool Docker's default IPAM manages, never used
//! by this allocator), `disabled` (present only when true: set while the pool is removed).
//! Readers default missing `ipam` to true and `disabled` to false; an empty `ipip` string
//! means disabled.
//!
//! A pool is *usable* for IPAM ([`Pool::is_usable`]) when `ipam` is true and `disabled`
//! false: only usable pools receive new blocks, auto-assigned addresses or specific
//! assignments.
//!
//! # Config format (`/calico/ipam/v2/config`)
//!
//! `{"auto_allocate_blocks": true, "strict_affinity": false}`; a missing key means these
//! defaults.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{IpamError, Result};
use crate::net::{normalized, parse_network_strict, IpFamily};

/// One IP pool; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The pool's CIDR (host bits clear).
    pub cidr: IpNetwork,
    /// IP-in-IP tunnel device (`"tunl0"`) when the pool's traffic is encapsulated.
    pub ipip: Option<String>,
    /// Masquerade (NAT) traffic leaving the pools.
    pub masquerade: bool,
    /// False for pools this allocator must not use (Docker default-IPAM networks).
    pub ipam: bool,
    /// True while the pool is being removed: no new allocations.
    pub disabled: bool,
}

impl Pool {
    /// A usable pool with no IP-in-IP and no masquerade.
    pub fn new(cidr: IpNetwork) -> Pool {
        Pool {
            cidr,
            ipip: None,
            masquerade: false,
            ipam: true,
            disabled: false,
        }
    }

    /// The pool's family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of_network(&self.cidr)
    }

    /// True when IPAM may allocate in this pool (`ipam` and not `disabled`).
    pub fn is_usable(&self) -> bool {
        self.ipam && !self.disabled
    }

    /// Checks the pool on its own: host bits clear, at least one block of
    /// `block_prefix`, no IP-in-IP on IPv6. (Overlap needs the other pools:
    /// [`Ipam::add_pool`](crate::Ipam::add_pool) checks it.)
    pub fn validate(&self, block_prefix: u8) -> Result<()> {
        let network = normalized(&self.cidr)?;
        if network != self.cidr {
            return Err(IpamError::HostBitsSet {
                given: self.cidr,
                network,
            });
        }
        if self.cidr.prefix() > block_prefix {
            return Err(IpamError::PoolTooSmall {
                cidr: self.cidr,
                block_prefix,
                family: self.family(),
            });
        }
        if self.ipip.is_some() && self.family() == IpFamily::V6 {
            return Err(IpamError::IpipOnIpv6 { cidr: self.cidr });
        }
        Ok(())
    }

    /// The pool as JSON (see the [module docs](self)).
    pub fn to_json(&self) -> String {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes a pool.
    pub fn from_json(text: &str) -> Result<Pool> {
        serde_json::from_str(text).map_err(|e| IpamError::Corrupt {
            key: "pool JSON".to_string(),
            reason: e.to_string(),
        })
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Serialize)]
struct PoolWireOut<'a> {
    cidr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipip: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    masquerade: bool,
    #[serde(skip_serializing_if = "is_true")]
    ipam: bool,
    #[serde(skip_serializing_if = "is_false")]
    disabled: bool,
}

#[derive(Deserialize)]
struct PoolWire {
    cidr: String,
    #[serde(default)]
    ipip: Option<serde_json::Value>,
    #[serde(default)]
    masquerade: Option<bool>,
    #[serde(default)]
    ipam: Option<bool>,
    #[serde(default)]
    disabled: Option<bool>,
}

impl Serialize for Pool {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        PoolWireOut {
            cidr: self.cidr.to_string(),
            ipip: self.ipip.as_deref(),
            masquerade: self.masquerade,
            ipam: self.ipam,
            disabled: self.disabled,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Pool, D::Error> {
        let wire = PoolWire::deserialize(d)?;
        let cidr = parse_network_strict(&wire.cidr).map_err(serde::de::Error::custom)?;
        let ipip = match wire.ipip {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => None,
            Some(serde_json::Value::String(s)) if s.is_empty() => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Bool(true)) => Some("tunl0".to_string()),
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "ipip must be a device name, got {other}"
                )))
            }
        };
        Ok(Pool {
            cidr,
            ipip,
            masquerade: wire.masquerade.unwrap_or(false),
            ipam: wire.ipam.unwrap_or(true),
            disabled: wire.disabled.unwrap_or(false),
        })
    }
}

/// The global IPAM configuration; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// When true, no host may borrow addresses from a block affine to another host, and
    /// new blocks are created strict.
    #[serde(default)]
    pub strict_affinity: bool,
    /// When false, hosts never claim new blocks: auto-assignment only borrows.
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
}

fn default_true() -> bool {
    true
}

impl Default for IpamConfig {
    fn default() -> IpamConfig {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
        }
    }
}

impl IpamConfig {
    /// Rejects turning both flags off (no host could then get a new block *or* borrow).
    /// Strict affinity without automatic block allocation is allowed: hosts then use only
    /// blocks claimed for them in advance (see [`Ipam::claim_affinity`](crate::Ipam::claim_affinity)).
    pub fn validate(&self) -> Result<()> {
        if !self.strict_affinity && !self.auto_allocate_blocks {
            // Calico's wording, with the meaning of the flags.
            return Err(IpamError::InvalidConfig {
                reason:
                    "cannot disable 'strict_affinity' and 'auto_allocate_blocks' at the same time",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_json_matches_calico() {
        let mut p = Pool::new("10.20.10.0/24".parse().unwrap());
        assert_eq!(p.to_json(), r#"{"cidr":"10.20.10.0/24"}"#);
        p.ipip = Some("tunl0".into());
        p.masquerade = true;
        assert_eq!(
            p.to_json(),
            r#"{"cidr":"10.20.10.0/24","ipip":"tunl0","masquerade":true}"#
        );
        p.ipam = false;
        p.disabled = true;
        let back = Pool::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        let read = Pool::from_json(r#"{"cidr": "192.168.0.0/16", "ipip": ""}"#).unwrap();
        assert_eq!(read.ipip, None);
        assert!(read.is_usable());
        assert!(Pool::from_json(r#"{"cidr": "192.168.0.1/16"}"#).is_err());
    }

    #[test]
    fn pool_validation() {
        let p = |s: &str| Pool::new(s.parse().unwrap());
        assert!(p("10.0.0.0/26").validate(26).is_ok());
        assert!(matches!(
            p("10.0.0.0/27").validate(26),
            Err(IpamError::PoolTooSmall { .. })
        ));
        assert!(matches!(
            p("10.0.0.1/24").validate(26),
            Err(IpamError::HostBitsSet { .. })
        ));
        let mut v6 = p("fd00::/64");
        assert!(v6.validate(122).is_ok());
        v6.ipip = Some("tunl0".into());
        assert!(matches!(
            v6.validate(122),
            Err(IpamError::IpipOnIpv6 { .. })
        ));
    }

    #[test]
    fn config_json_and_validation() {
        let c: IpamConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, IpamConfig::default());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"strict_affinity":false,"auto_allocate_blocks":true}"#
        );
        assert!(IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: false
        }
        .validate()
        .is_err());
        assert!(IpamConfig {
            strict_affinity: true,
            auto_allocate_blocks: true
        }
        .validate()
        .is_ok());
    }
}
