//! The store seam: versioned keys with create-only, compare-and-swap and delete.
//!
//! The allocator keeps all its state in a key/value store with optimistic concurrency, the
//! way Calico keeps it in etcd v2. [`BlockStore`] is that store, reduced to what the
//! algorithm needs, with typed keys ([`Key`]) and typed values ([`Value`]) so that the
//! in-memory store ([`MemStore`](crate::MemStore)) never touches JSON, while an etcd-backed
//! store maps every call onto one etcd v2 request:
//!
//! | trait call | etcd v2 request | outcome mapping |
//! |---|---|---|
//! | [`get`](BlockStore::get) | `GET <path>?quorum=true` | 404 (errorCode 100) → `Ok(None)`; `node.modifiedIndex` → [`Version`] |
//! | [`list`](BlockStore::list) | `GET <prefix path>?recursive=true&quorum=true` | 404 → empty; children parsed with [`Key::parse`], unknown keys skipped |
//! | [`create`](BlockStore::create) | `PUT <path>?prevExist=false` | errorCode 105 → [`CasOutcome::Conflict`] |
//! | [`compare_and_swap`](BlockStore::compare_and_swap) | `PUT <path>?prevIndex=<version>` | errorCode 101 or 100 → `Conflict` |
//! | [`compare_and_delete`](BlockStore::compare_and_delete) | `DELETE <path>?prevIndex=<version>` | errorCode 101 or 100 → `Conflict` |
//! | [`put`](BlockStore::put) | `PUT <path>` (unconditional) | — |
//! | [`delete`](BlockStore::delete) | `DELETE <path>` (unconditional) | 404 → `Ok(false)` |
//! | [`update_block`](BlockStore::update_block), [`update_handle`](BlockStore::update_handle) (provided) | `GET`, then `PUT ?prevExist=false`, `PUT ?prevIndex` or `DELETE ?prevIndex` | as the calls above |
//!
//! The allocator changes blocks through [`BlockStore::update_block`], a read-modify-write
//! whose default is exactly one `get` and one conditional write; an etcd-backed store
//! implements the seven primitive methods and inherits it. The in-memory store overrides
//! it to apply the change in place under its lock (no copy of the block), which is what a
//! compare-and-swap that no other writer raced would have done.
//!
//! Values travel as [`Value::to_json`] / [`Value::from_json`]: Calico's own JSON, so
//! Calico's tools can read what this crate writes and the other way round. Every other
//! failure (connection refused, timeout, 5xx) is an [`IpamError::Store`] naming the key.
//!
//! # Contract (to ensure correctness)
//!
//! * A successful write returns the key's new version; versions of one key strictly
//!   increase (etcd's `modifiedIndex` is global and monotonic, which is more than needed).
//! * `compare_and_swap` and `compare_and_delete` succeed only when the key exists with
//!   exactly `prev` as its version; `create` only when the key does not exist.
//! * Reads are linearizable (etcd: `quorum=true`). A stale read is not unsafe (the
//!   following compare-and-swap fails) but costs retries, and a stale "missing" makes the
//!   allocator skip a block (libcalico issue #47).
//! * The store never interprets values beyond checking that a key and its value agree.

use std::fmt;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use crate::block::Block;
use crate::error::{IpamError, Result};
use crate::handle::Handle;
use crate::net::{cidr_key_segment, parse_cidr_key_segment, HandleId, HostName, IpFamily};
use crate::pool::{IpamConfig, Pool};

/// A key's version: etcd's `modifiedIndex` of the key's last write.
pub type Version = u64;

/// A value with the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// The version to pass to compare-and-swap.
    pub version: Version,
}

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum CasOutcome {
    /// Written; the key's new version (for a delete, the version of the deletion).
    Written(Version),
    /// The condition failed: the key exists (create), or is missing or has another
    /// version (compare-and-swap, compare-and-delete). Re-read and retry.
    Conflict,
}

/// A datastore key. [`Key::path`] gives its etcd path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// An allocation block: `/calico/ipam/v2/assignment/ipv<N>/block/<cidr>`.
    Block(IpNetwork),
    /// A host's affinity index entry: `/calico/ipam/v2/host/<host>/ipv<N>/block/<cidr>`.
    Affinity {
        /// The host.
        host: HostName,
        /// The block.
        block: IpNetwork,
    },
    /// A handle record: `/calico/ipam/v2/handle/<id>`.
    Handle(HandleId),
    /// A pool: `/calico/v1/ipam/v<N>/pool/<cidr>`.
    Pool(IpNetwork),
    /// The IPAM configuration: `/calico/ipam/v2/config`.
    Config,
}

const IPAM_ROOT: &str = "/calico/ipam/v2";
const POOL_ROOT: &str = "/calico/v1/ipam";

impl Key {
    /// The etcd path of the key (host names and handle ids are written verbatim: an HTTP
    /// client must percent-encode the path).
    pub fn path(&self) -> String {
        match self {
            Key::Block(cidr) => format!(
                "{IPAM_ROOT}/assignment/{}/block/{}",
                IpFamily::of_network(cidr).ipam_segment(),
                cidr_key_segment(cidr)
            ),
            Key::Affinity { host, block } => format!(
                "{IPAM_ROOT}/host/{host}/{}/block/{}",
                IpFamily::of_network(block).ipam_segment(),
                cidr_key_segment(block)
            ),
            Key::Handle(id) => format!("{IPAM_ROOT}/handle/{id}"),
            Key::Pool(cidr) => format!(
                "{POOL_ROOT}/{}/pool/{}",
                IpFamily::of_network(cidr).pool_segment(),
                cidr_key_segment(cidr)
            ),
            Key::Config => format!("{IPAM_ROOT}/config"),
        }
    }

    /// Parses an etcd path back into a key; `None` for paths that are not IPAM keys
    /// (directories, foreign keys), which listings skip.
    pub fn parse(path: &str) -> Option<Key> {
        let family_of = |seg: &str| match seg {
            "ipv4" => Some(IpFamily::V4),
            "ipv6" => Some(IpFamily::V6),
            _ => None,
        };
        let block_of = |family: IpFamily, seg: &str| {
            parse_cidr_key_segment(seg)
                .ok()
                .filter(|n| IpFamily::of_network(n) == family)
        };
        if let Some(rest) = path.strip_prefix(IPAM_ROOT) {
            let parts: Vec<&str> = rest.split('/').collect();
            return match parts.as_slice() {
                ["", "config"] => Some(Key::Config),
                ["", "handle", id] => HandleId::new(id).ok().map(Key::Handle),
                ["", "assignment", fam, "block", cidr] => {
                    block_of(family_of(fam)?, cidr).map(Key::Block)
                }
                ["", "host", host, fam, "block", cidr] => Some(Key::Affinity {
                    host: HostName::new(host).ok()?,
                    block: block_of(family_of(fam)?, cidr)?,
                }),
                _ => None,
            };
        }
        if let Some(rest) = path.strip_prefix(POOL_ROOT) {
            let parts: Vec<&str> = rest.split('/').collect();
            return match parts.as_slice() {
                ["", fam, "pool", cidr] => {
                    let family = match *fam {
                        "v4" => IpFamily::V4,
                        "v6" => IpFamily::V6,
                        _ => return None,
                    };
                    block_of(family, cidr).map(Key::Pool)
                }
                _ => None,
            };
        }
        None
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// A set of keys that [`BlockStore::list`] returns together (one recursive etcd read).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// Every block of a family.
    Blocks(IpFamily),
    /// One host's affinity index for a family.
    HostAffinities {
        /// The host.
        host: HostName,
        /// The family.
        family: IpFamily,
    },
    /// Every host's affinity index entries of a family.
    AllAffinities(IpFamily),
    /// Every handle record.
    Handles,
    /// Every pool of a family.
    Pools(IpFamily),
}

impl Prefix {
    /// The etcd directory to read recursively. For [`Prefix::AllAffinities`] it holds both
    /// families: keep only the keys that [`Prefix::matches`].
    pub fn path(&self) -> String {
        match self {
            Prefix::Blocks(f) => format!("{IPAM_ROOT}/assignment/{}/block", f.ipam_segment()),
            Prefix::HostAffinities { host, family } => {
                format!("{IPAM_ROOT}/host/{host}/{}/block", family.ipam_segment())
            }
            Prefix::AllAffinities(_) => format!("{IPAM_ROOT}/host"),
            Prefix::Handles => format!("{IPAM_ROOT}/handle"),
            Prefix::Pools(f) => format!("{POOL_ROOT}/{}/pool", f.pool_segment()),
        }
    }

    /// Does `key` belong to this set?
    pub fn matches(&self, key: &Key) -> bool {
        match (self, key) {
            (Prefix::Blocks(f), Key::Block(b)) => IpFamily::of_network(b) == *f,
            (Prefix::HostAffinities { host, family }, Key::Affinity { host: h, block }) => {
                h == host && IpFamily::of_network(block) == *family
            }
            (Prefix::AllAffinities(f), Key::Affinity { block, .. }) => {
                IpFamily::of_network(block) == *f
            }
            (Prefix::Handles, Key::Handle(_)) => true,
            (Prefix::Pools(f), Key::Pool(p)) => IpFamily::of_network(p) == *f,
            _ => false,
        }
    }
}

/// A datastore value; its variant always matches its key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An allocation block.
    Block(Block),
    /// An affinity index entry (stored as the empty string).
    Affinity,
    /// A handle record.
    Handle(Handle),
    /// A pool.
    Pool(Pool),
    /// The IPAM configuration.
    Config(IpamConfig),
}

impl Value {
    /// The stored text: Calico's JSON (the empty string for an affinity entry).
    pub fn to_json(&self) -> String {
        match self {
            Value::Block(b) => b.to_json(),
            Value::Affinity => String::new(),
            Value::Handle(h) => h.to_json(),
            Value::Pool(p) => p.to_json(),
            // Serializing plain data into a String cannot fail.
            Value::Config(c) => serde_json::to_string(c).unwrap_or_default(),
        }
    }

    /// Decodes the stored text of `key`; a malformed value or one that disagrees with its
    /// key (another CIDR or id) is [`IpamError::Corrupt`].
    pub fn from_json(key: &Key, text: &str) -> Result<Value> {
        let corrupt = |reason: String| IpamError::Corrupt {
            key: key.path(),
            reason,
        };
        let value = match key {
            Key::Block(_) => Value::Block(
                serde_json::from_str::<Block>(text).map_err(|e| corrupt(e.to_string()))?,
            ),
            Key::Affinity { .. } => Value::Affinity,
            Key::Handle(_) => Value::Handle(
                serde_json::from_str::<Handle>(text).map_err(|e| corrupt(e.to_string()))?,
            ),
            Key::Pool(_) => {
                Value::Pool(serde_json::from_str::<Pool>(text).map_err(|e| corrupt(e.to_string()))?)
            }
            Key::Config => Value::Config(
                serde_json::from_str::<IpamConfig>(text).map_err(|e| corrupt(e.to_string()))?,
            ),
        };
        value.check_key(key)?;
        Ok(value)
    }

    /// Checks that the value belongs under `key` (variant and CIDR/id agree).
    pub fn check_key(&self, key: &Key) -> Result<()> {
        let ok = match (key, self) {
            (Key::Block(c), Value::Block(b)) => b.cidr() == *c,
            (Key::Affinity { .. }, Value::Affinity) => true,
            (Key::Handle(id), Value::Handle(h)) => h.id() == id,
            (Key::Pool(c), Value::Pool(p)) => p.cidr == *c,
            (Key::Config, Value::Config(_)) => true,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(IpamError::Corrupt {
                key: key.path(),
                reason: format!("value does not belong under this key: {}", self.to_json()),
            })
        }
    }
}

/// What an update function decided (see [`BlockStore::update_block`] and
/// [`BlockStore::update_handle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing to write; the function left the value untouched.
    Keep,
    /// Write the changed value (for a handle that did not exist: create it).
    Write,
    /// Delete the value.
    Delete,
}

/// The result of [`BlockStore::update_block`] and [`BlockStore::update_handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum UpdateOutcome {
    /// The block does not exist; the function was not called (blocks only: a handle
    /// update sees a missing record as `None`).
    Missing,
    /// The function chose [`Change::Keep`].
    Kept,
    /// The changed block was written.
    Written,
    /// The block was deleted.
    Deleted,
    /// Another writer changed the block in between: nothing was written; call again.
    Conflict,
}

/// [`BlockStore::update_block`] as one read and one compare-and-swap (or
/// compare-and-delete): the default, and what any store without an atomic in-place
/// update does.
pub fn update_block_with_cas<S: BlockStore + ?Sized>(
    store: &S,
    cidr: IpNetwork,
    update: &mut dyn FnMut(&mut Block) -> Change,
) -> Result<UpdateOutcome> {
    let key = Key::Block(cidr);
    let Some(read) = store.get(&key)? else {
        return Ok(UpdateOutcome::Missing);
    };
    let Value::Block(mut block) = read.value else {
        return Err(IpamError::Corrupt {
            key: key.path(),
            reason: format!("expected a block, found {}", read.value.to_json()),
        });
    };
    let written = match update(&mut block) {
        Change::Keep => return Ok(UpdateOutcome::Kept),
        Change::Write => (
            store.compare_and_swap(&key, Value::Block(block), read.version)?,
            UpdateOutcome::Written,
        ),
        Change::Delete => (
            store.compare_and_delete(&key, read.version)?,
            UpdateOutcome::Deleted,
        ),
    };
    Ok(match written {
        (CasOutcome::Written(_), outcome) => outcome,
        (CasOutcome::Conflict, _) => UpdateOutcome::Conflict,
    })
}

/// [`BlockStore::update_handle`] as one read and one create, compare-and-swap or
/// compare-and-delete: the default.
pub fn update_handle_with_cas<S: BlockStore + ?Sized>(
    store: &S,
    id: &HandleId,
    update: &mut dyn FnMut(&mut Option<Handle>) -> Change,
) -> Result<UpdateOutcome> {
    let key = Key::Handle(id.clone());
    let (mut record, version) = match store.get(&key)? {
        None => (None, None),
        Some(read) => match read.value {
            Value::Handle(h) => (Some(h), Some(read.version)),
            other => {
                return Err(IpamError::Corrupt {
                    key: key.path(),
                    reason: format!("expected a handle, found {}", other.to_json()),
                })
            }
        },
    };
    let written = match (update(&mut record), record, version) {
        (Change::Keep, _, _) | (Change::Write, None, _) | (Change::Delete, _, None) => {
            return Ok(UpdateOutcome::Kept)
        }
        (Change::Write, Some(h), None) => (
            store.create(&key, Value::Handle(h))?,
            UpdateOutcome::Written,
        ),
        (Change::Write, Some(h), Some(v)) => (
            store.compare_and_swap(&key, Value::Handle(h), v)?,
            UpdateOutcome::Written,
        ),
        (Change::Delete, _, Some(v)) => {
            (store.compare_and_delete(&key, v)?, UpdateOutcome::Deleted)
        }
    };
    Ok(match written {
        (CasOutcome::Written(_), outcome) => outcome,
        (CasOutcome::Conflict, _) => UpdateOutcome::Conflict,
    })
}

/// A versioned key/value store; see the [module docs](self) for the etcd mapping and the
/// contract.
///
/// Implementations are shared between threads (and between [`Ipam`](crate::Ipam) clients
/// acting as different hosts), so every method takes `&self`.
pub trait BlockStore: Send + Sync {
    /// Reads one key.
    fn get(&self, key: &Key) -> Result<Option<Versioned<Value>>>;

    /// Reads every key under `prefix` (in any order).
    fn list(&self, prefix: &Prefix) -> Result<Vec<(Key, Versioned<Value>)>>;

    /// Writes `value` only if `key` does not exist.
    fn create(&self, key: &Key, value: Value) -> Result<CasOutcome>;

    /// Writes `value` only if `key` exists at version `prev`.
    fn compare_and_swap(&self, key: &Key, value: Value, prev: Version) -> Result<CasOutcome>;

    /// Deletes `key` only if it exists at version `prev`.
    fn compare_and_delete(&self, key: &Key, prev: Version) -> Result<CasOutcome>;

    /// Writes `value` unconditionally (used for affinity index entries only).
    fn put(&self, key: &Key, value: Value) -> Result<Version>;

    /// Deletes `key` unconditionally; returns whether it existed.
    fn delete(&self, key: &Key) -> Result<bool>;

    /// Read-modify-write of one block: reads it, lets `update` change it, and writes the
    /// result only if nobody wrote the block in between (else [`UpdateOutcome::Conflict`]:
    /// call again with a fresh `update`, which may have run on a copy that was thrown
    /// away). `update` must not change the block when it returns [`Change::Keep`].
    ///
    /// The default is [`update_block_with_cas`]: one `get` and one conditional write,
    /// exactly the allocator's compare-and-swap step. A store that can apply the change
    /// atomically in place (the in-memory store, under its lock) may override it; the
    /// result must be indistinguishable from a get and a compare-and-swap that no other
    /// writer raced.
    fn update_block(
        &self,
        cidr: IpNetwork,
        update: &mut dyn FnMut(&mut Block) -> Change,
    ) -> Result<UpdateOutcome> {
        update_block_with_cas(self, cidr, update)
    }

    /// Read-modify-write of one handle record, like [`BlockStore::update_block`]; the
    /// function sees `None` for a record that does not exist, and may create it
    /// ([`Change::Write`] with `Some`) or delete it ([`Change::Delete`]). The default is
    /// [`update_handle_with_cas`].
    fn update_handle(
        &self,
        id: &HandleId,
        update: &mut dyn FnMut(&mut Option<Handle>) -> Change,
    ) -> Result<UpdateOutcome> {
        update_handle_with_cas(self, id, update)
    }

    /// A number that changes whenever any pool key is written, for stores that can tell
    /// cheaply (the in-memory one); `None`, the default, means "unknown".
    ///
    /// The allocator checks, before every allocation in a cached affine block, that the
    /// block's pool is still usable (one point read). When this returns `Some(g)` and it
    /// already read the pool under generation `g`, it skips the read. A store returning
    /// `Some` must change the number after every pool write becomes visible to `get`.
    fn pools_generation(&self) -> Option<u64> {
        None
    }
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        impl<S: BlockStore + ?Sized> BlockStore for $ty {
            fn get(&self, key: &Key) -> Result<Option<Versioned<Value>>> {
                (**self).get(key)
            }
            fn list(&self, prefix: &Prefix) -> Result<Vec<(Key, Versioned<Value>)>> {
                (**self).list(prefix)
            }
            fn create(&self, key: &Key, value: Value) -> Result<CasOutcome> {
                (**self).create(key, value)
            }
            fn compare_and_swap(&self, key: &Key, value: Value, prev: Version) -> Result<CasOutcome> {
                (**self).compare_and_swap(key, value, prev)
            }
            fn compare_and_delete(&self, key: &Key, prev: Version) -> Result<CasOutcome> {
                (**self).compare_and_delete(key, prev)
            }
            fn put(&self, key: &Key, value: Value) -> Result<Version> {
                (**self).put(key, value)
            }
            fn delete(&self, key: &Key) -> Result<bool> {
                (**self).delete(key)
            }
            fn update_block(
                &self,
                cidr: IpNetwork,
                update: &mut dyn FnMut(&mut Block) -> Change,
            ) -> Result<UpdateOutcome> {
                (**self).update_block(cidr, update)
            }
            fn update_handle(
                &self,
                id: &HandleId,
                update: &mut dyn FnMut(&mut Option<Handle>) -> Change,
            ) -> Result<UpdateOutcome> {
                (**self).update_handle(id, update)
            }
            fn pools_generation(&self) -> Option<u64> {
                (**self).pools_generation()
            }
        }
    )*};
}

forward_store!(Arc<S>, &S, Box<S>);

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn paths_match_calico_layout_and_parse_back() {
        let host = HostName::new("dockera").unwrap();
        let cases = [
            (
                Key::Block(net("10.20.10.0/26")),
                "/calico/ipam/v2/assignment/ipv4/block/10.20.10.0-26",
            ),
            (
                Key::Block(net("fd80:24e2:f998:72d6::/122")),
                "/calico/ipam/v2/assignment/ipv6/block/fd80:24e2:f998:72d6::-122",
            ),
            (
                Key::Affinity {
                    host: host.clone(),
                    block: net("10.20.10.0/26"),
                },
                "/calico/ipam/v2/host/dockera/ipv4/block/10.20.10.0-26",
            ),
            (
                Key::Handle(HandleId::new("c1").unwrap()),
                "/calico/ipam/v2/handle/c1",
            ),
            (
                Key::Pool(net("10.20.10.0/24")),
                "/calico/v1/ipam/v4/pool/10.20.10.0-24",
            ),
            (Key::Config, "/calico/ipam/v2/config"),
        ];
        for (key, path) in cases {
            assert_eq!(key.path(), path);
            assert_eq!(Key::parse(path), Some(key));
        }
        for junk in [
            "/calico/ipam/v2/host/dockera",
            "/calico/ipam/v2/assignment/ipv4/block/10.20.10.1-26",
            "/calico/ipam/v2/assignment/ipv6/block/10.20.10.0-26",
            "/calico/v1/host/x",
            "",
        ] {
            assert_eq!(Key::parse(junk), None, "{junk}");
        }
        assert_eq!(
            Prefix::HostAffinities {
                host,
                family: IpFamily::V4
            }
            .path(),
            "/calico/ipam/v2/host/dockera/ipv4/block"
        );
    }

    #[test]
    fn values_must_match_their_keys() {
        let key = Key::Block(net("10.0.0.0/26"));
        let other = Block::new(net("10.0.0.64/26"), None, false).unwrap();
        assert!(matches!(
            Value::from_json(&key, &other.to_json()),
            Err(IpamError::Corrupt { .. })
        ));
        let good = Block::new(net("10.0.0.0/26"), None, false).unwrap();
        assert_eq!(
            Value::from_json(&key, &good.to_json()).unwrap(),
            Value::Block(good)
        );
        assert!(Value::from_json(&key, "{").is_err());
        assert_eq!(
            Value::from_json(&Key::Config, "{}").unwrap(),
            Value::Config(IpamConfig::default())
        );
    }
}
