//! Handle records: for one handle id, how many of its addresses sit in each block.
//!
//! # Stored format (`/calico/ipam/v2/handle/<handle id>`)
//!
//! ```json
//! {"id": "c1", "block": {"10.20.10.0/26": 2, "10.20.10.64/26": 1}}
//! ```
//!
//! The record lets [`release_by_handle`](crate::Ipam::release_by_handle) visit only the
//! blocks that hold the handle's addresses instead of every block. It is an index, kept
//! next to the blocks (which stay the source of truth): the allocator increments it
//! *before* writing the block and decrements it after a failed block write or a release,
//! so a crash in between can only leave it over-counting, never under-counting: a handle
//! never loses track of an address. A record whose counts all reach zero is deleted.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{IpamError, Result};
use crate::net::{parse_network_strict, HandleId};

/// One handle record; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    id: HandleId,
    blocks: BTreeMap<IpNetwork, u64>,
}

impl Handle {
    /// An empty record.
    pub fn new(id: HandleId) -> Handle {
        Handle {
            id,
            blocks: BTreeMap::new(),
        }
    }

    /// The handle id.
    pub fn id(&self) -> &HandleId {
        &self.id
    }

    /// The recorded count of the handle's addresses in `block`.
    pub fn count(&self, block: &IpNetwork) -> u64 {
        self.blocks.get(block).copied().unwrap_or(0)
    }

    /// Total recorded addresses.
    pub fn total(&self) -> u64 {
        self.blocks.values().sum()
    }

    /// Blocks with a non-zero count, in ascending order.
    pub fn blocks(&self) -> impl Iterator<Item = (IpNetwork, u64)> + '_ {
        self.blocks.iter().map(|(b, n)| (*b, *n))
    }

    /// True when no block has a count.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Adds `n` to the count of `block`.
    pub fn increment(&mut self, block: IpNetwork, n: u64) {
        if n > 0 {
            let count = self.blocks.entry(block).or_insert(0);
            *count = count.saturating_add(n);
        }
    }

    /// Subtracts up to `n` from the count of `block` (never below zero; a zero count is
    /// removed); returns how much was subtracted.
    pub fn decrement(&mut self, block: IpNetwork, n: u64) -> u64 {
        let Some(count) = self.blocks.get_mut(&block) else {
            return 0;
        };
        let taken = n.min(*count);
        *count -= taken;
        if *count == 0 {
            self.blocks.remove(&block);
        }
        taken
    }

    /// The record as JSON (see the [module docs](self)).
    pub fn to_json(&self) -> String {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes a record.
    pub fn from_json(text: &str) -> Result<Handle> {
        serde_json::from_str(text).map_err(|e| IpamError::Corrupt {
            key: "handle JSON".to_string(),
            reason: e.to_string(),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct HandleWire {
    id: HandleId,
    #[serde(default)]
    block: BTreeMap<String, u64>,
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        HandleWire {
            id: self.id.clone(),
            block: self
                .blocks
                .iter()
                .map(|(b, n)| (b.to_string(), *n))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Handle, D::Error> {
        let wire = HandleWire::deserialize(d)?;
        let mut handle = Handle::new(wire.id);
        for (cidr, n) in wire.block {
            let net = parse_network_strict(&cidr).map_err(serde::de::Error::custom)?;
            handle.increment(net, n);
        }
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_json() {
        let b1: IpNetwork = "10.20.10.0/26".parse().unwrap();
        let b2: IpNetwork = "10.20.10.64/26".parse().unwrap();
        let mut h = Handle::new(HandleId::new("c1").unwrap());
        h.increment(b1, 2);
        h.increment(b2, 1);
        assert_eq!(
            h.to_json(),
            r#"{"id":"c1","block":{"10.20.10.0/26":2,"10.20.10.64/26":1}}"#
        );
        assert_eq!(Handle::from_json(&h.to_json()).unwrap(), h);
        assert_eq!(h.decrement(b2, 5), 1);
        assert_eq!(h.count(&b2), 0);
        assert_eq!(h.total(), 2);
        assert_eq!(h.decrement(b1, 2), 2);
        assert!(h.is_empty());
        assert!(Handle::from_json(r#"{"id":"x","block":{"10.0.0.1/26":1}}"#).is_err());
        assert!(Handle::from_json(r#"{"id":"a/b","block":{}}"#).is_err());
    }
}
