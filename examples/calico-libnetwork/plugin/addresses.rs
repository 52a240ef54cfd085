//! The IPAM seam: what `IpamDriver.RequestAddress` / `ReleaseAddress` need from Calico
//! IPAM (spec/ipam.md §6, "Docker plugin" rows), behind a trait so the driver reads as
//! the protocol. [`CalicoIpam`] is the real thing (the `ipam` crate over the shared
//! datastore); [`MemoryAllocator`] is a test double with the same contract.
//!
//! # Handles
//!
//! Calico 0.22's plugin passed no handle, so a lost endpoint meant an address nobody
//! could find again (spec/ipam.md §9). Here every allocation gets its own handle,
//!
//! ```text
//! libnetwork.<unix-ms>-<counter>.<host>
//! ```
//!
//! minted per `RequestAddress` by [`HandleMinter`] (the endpoint id is not known yet at
//! that point, and Docker never tells us which endpoint an address is for). That buys:
//!
//! * **safe releases**: `ReleaseAddress` frees an address only through the handle it is
//!   allocated under, and only if that handle is one of this host's plugin handles; a
//!   stale, repeated release of an address that has since gone to another request (or to
//!   calicoctl) finds a different handle and frees nothing;
//! * **ownership without ambiguity**: the host comes last, after the first `.` following
//!   the dot-free `<unix-ms>-<counter>`, so host `a` never mistakes host `a.b`'s handles
//!   for its own (a plain prefix match would);
//! * **leak checks**: `ipam::Ipam::check` reports allocations whose handle is not live;
//!   the live handles are those of addresses that endpoints (or network gateways) use;
//! * **garbage collection**: [`handle_owner`] finds every allocation of this host's plugin, and
//!   the timestamp tells an old orphan from an allocation whose `CreateEndpoint` is still
//!   on its way.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ipam::{Attrs, BlockStore, IpFamily, Ipam, IpamError, PoolChoice};
use ipnetwork::IpNetwork;
use parking_lot::Mutex;

use super::error::{PluginError, Result};

/// What releasing an address came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// It was ours and is free now.
    Freed,
    /// It was not allocated (a repeated release).
    NotAllocated,
    /// It is allocated under a handle that is not one of ours (calicoctl's, another
    /// host's plugin, no handle): left alone.
    OtherOwner(Option<String>),
}

/// What a request for one specific address came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignOutcome {
    /// The address is now allocated to the caller.
    Allocated,
    /// Someone holds it already.
    InUse,
    /// No (enabled, IPAM) pool contains it.
    NotInPool,
}

/// One allocation, as [`Allocator::allocations`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldAddress {
    /// The address.
    pub address: IpAddr,
    /// Its handle.
    pub handle: String,
}

/// Calico IPAM as the driver uses it. Implementations are shared between request threads.
pub trait Allocator: Send + Sync {
    /// Allocates exactly `address` for `host` under `handle` (Calico's attrs `{}`).
    fn assign(&self, address: IpAddr, host: &str, handle: &str) -> Result<AssignOutcome>;

    /// Allocates one address of the family (`v6`) for `host` under `handle`, from `pool`
    /// if given (else from any enabled IPAM pool); `None` when every pool is full.
    fn auto_assign(
        &self,
        v6: bool,
        pool: Option<IpNetwork>,
        host: &str,
        handle: &str,
    ) -> Result<Option<IpAddr>>;

    /// Releases `address` if it is allocated under a handle `host`'s plugin minted,
    /// through that handle.
    fn release(&self, address: IpAddr, host: &str) -> Result<ReleaseOutcome>;

    /// Every allocation under a handle `host`'s plugin minted.
    fn allocations(&self, host: &str) -> Result<Vec<HeldAddress>>;
}

const HANDLE_PREFIX: &str = "libnetwork.";

/// Splits a plugin handle into (minted-at milliseconds, counter, host); `None` for any
/// other handle.
fn parse_handle(handle: &str) -> Option<(u64, u64, &str)> {
    let rest = handle.strip_prefix(HANDLE_PREFIX)?;
    let (stamp, host) = rest.split_once('.')?;
    let (ms, n) = stamp.split_once('-')?;
    if host.is_empty() {
        return None;
    }
    Some((ms.parse().ok()?, n.parse().ok()?, host))
}

/// The host whose plugin minted `handle`, if a plugin did.
pub fn handle_owner(handle: &str) -> Option<&str> {
    parse_handle(handle).map(|(_, _, host)| host)
}

/// Whether `handle` was minted by `host`'s plugin.
pub fn is_own_handle(handle: &str, host: &str) -> bool {
    handle_owner(handle) == Some(host)
}

/// The time a plugin handle was minted at, in milliseconds since the epoch.
pub fn handle_minted_ms(handle: &str) -> Option<u64> {
    parse_handle(handle).map(|(ms, _, _)| ms)
}

/// Mints `libnetwork.<unix-ms>-<counter>.<host>` handles, unique within the process (the
/// counter) and across restarts (the clock).
#[derive(Debug)]
pub struct HandleMinter {
    host: String,
    counter: AtomicU64,
}

impl HandleMinter {
    /// A minter for `host`.
    pub fn new(host: &str) -> HandleMinter {
        HandleMinter {
            host: host.to_string(),
            counter: AtomicU64::new(0),
        }
    }

    /// A fresh handle.
    pub fn mint(&self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{HANDLE_PREFIX}{ms}-{n}.{}", self.host)
    }
}

/// Calico IPAM: the `ipam` crate's allocator over a block store (in the plugin,
/// calico-model's `DatastoreBlockStore` over the shared datastore).
pub struct CalicoIpam<S> {
    ipam: Ipam<S>,
}

impl<S: BlockStore> CalicoIpam<S> {
    /// Wraps an allocator.
    pub fn new(ipam: Ipam<S>) -> CalicoIpam<S> {
        CalicoIpam { ipam }
    }

    /// The wrapped allocator (for leak checks).
    pub fn ipam(&self) -> &Ipam<S> {
        &self.ipam
    }
}

fn ipam_error(context: impl Into<String>, e: IpamError) -> PluginError {
    PluginError::datastore(context, e)
}

impl<S: BlockStore> Allocator for CalicoIpam<S> {
    fn assign(&self, address: IpAddr, host: &str, handle: &str) -> Result<AssignOutcome> {
        match self
            .ipam
            .assign_ip(address, Some(handle), &Attrs::empty(), host)
        {
            Ok(()) => Ok(AssignOutcome::Allocated),
            Err(IpamError::AlreadyAssigned { .. }) => Ok(AssignOutcome::InUse),
            Err(IpamError::NotInPool { .. } | IpamError::PoolNotUsable { .. }) => {
                Ok(AssignOutcome::NotInPool)
            }
            Err(e) => Err(ipam_error(format!("assign {address}"), e)),
        }
    }

    fn auto_assign(
        &self,
        v6: bool,
        pool: Option<IpNetwork>,
        host: &str,
        handle: &str,
    ) -> Result<Option<IpAddr>> {
        let choice = match pool {
            Some(cidr) => PoolChoice::only(cidr),
            None if v6 => PoolChoice::v6(),
            None => PoolChoice::v4(),
        };
        match self
            .ipam
            .auto_assign(host, 1, Some(handle), &Attrs::null(), &choice)
        {
            Ok(addresses) => Ok(addresses.first().copied()),
            Err(IpamError::PoolNotFound { .. }) => Ok(None),
            Err(e) => Err(ipam_error("auto-assign an address", e)),
        }
    }

    fn release(&self, address: IpAddr, host: &str) -> Result<ReleaseOutcome> {
        let context = || format!("release {address}");
        let Some(attribute) = self
            .ipam
            .assignment(address)
            .map_err(|e| ipam_error(context(), e))?
        else {
            return Ok(ReleaseOutcome::NotAllocated);
        };
        let handle = attribute.handle.as_ref().map(|h| h.as_str().to_string());
        match handle {
            Some(h) if is_own_handle(&h, host) => {
                // Through the handle: if the address changed hands since we looked, the
                // new allocation has another handle and stays.
                let n = self
                    .ipam
                    .release_by_handle(&h)
                    .map_err(|e| ipam_error(context(), e))?;
                Ok(if n > 0 {
                    ReleaseOutcome::Freed
                } else {
                    ReleaseOutcome::NotAllocated
                })
            }
            other => Ok(ReleaseOutcome::OtherOwner(other)),
        }
    }

    fn allocations(&self, host: &str) -> Result<Vec<HeldAddress>> {
        let mut out = Vec::new();
        for family in [IpFamily::V4, IpFamily::V6] {
            let blocks = self
                .ipam
                .blocks(family)
                .map_err(|e| ipam_error("list IPAM blocks", e))?;
            for block in blocks {
                for (address, attribute) in block.allocations() {
                    if let Some(h) = attribute
                        .handle
                        .as_ref()
                        .filter(|h| is_own_handle(h.as_str(), host))
                    {
                        out.push(HeldAddress {
                            address,
                            handle: h.as_str().to_string(),
                        });
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A test double: an allocator over a fixed list of pools that hands out the lowest free
/// address. It keeps none of Calico IPAM's block structure — only the contract of
/// [`Allocator`] — so driver tests can check the protocol with predictable addresses.
#[derive(Debug, Default)]
pub struct MemoryAllocator {
    pools: Vec<IpNetwork>,
    allocated: Mutex<BTreeMap<IpAddr, String>>,
}

impl MemoryAllocator {
    /// An allocator over `pools`.
    pub fn new(pools: Vec<IpNetwork>) -> MemoryAllocator {
        MemoryAllocator {
            pools,
            allocated: Mutex::default(),
        }
    }

    /// Every allocation, address to handle.
    pub fn all(&self) -> BTreeMap<IpAddr, String> {
        self.allocated.lock().clone()
    }

    /// Allocates `address` under `handle` directly, as another client (calicoctl) would.
    pub fn hold(&self, address: IpAddr, handle: &str) {
        self.allocated.lock().insert(address, handle.to_string());
    }
}

impl Allocator for MemoryAllocator {
    fn assign(&self, address: IpAddr, _host: &str, handle: &str) -> Result<AssignOutcome> {
        if !self.pools.iter().any(|p| p.contains(address)) {
            return Ok(AssignOutcome::NotInPool);
        }
        let mut allocated = self.allocated.lock();
        if allocated.contains_key(&address) {
            return Ok(AssignOutcome::InUse);
        }
        allocated.insert(address, handle.to_string());
        Ok(AssignOutcome::Allocated)
    }

    fn auto_assign(
        &self,
        v6: bool,
        pool: Option<IpNetwork>,
        _host: &str,
        handle: &str,
    ) -> Result<Option<IpAddr>> {
        let mut allocated = self.allocated.lock();
        let candidates = self
            .pools
            .iter()
            .filter(|p| p.is_ipv6() == v6 && pool.is_none_or(|want| want == **p));
        for p in candidates {
            // Small test pools only: the walk is linear in the pool size.
            if let Some(free) = p.iter().find(|a| !allocated.contains_key(a)) {
                allocated.insert(free, handle.to_string());
                return Ok(Some(free));
            }
        }
        Ok(None)
    }

    fn release(&self, address: IpAddr, host: &str) -> Result<ReleaseOutcome> {
        let mut allocated = self.allocated.lock();
        match allocated.get(&address) {
            None => Ok(ReleaseOutcome::NotAllocated),
            Some(owner) if !is_own_handle(owner, host) => {
                Ok(ReleaseOutcome::OtherOwner(Some(owner.clone())))
            }
            Some(_) => {
                allocated.remove(&address);
                Ok(ReleaseOutcome::Freed)
            }
        }
    }

    fn allocations(&self, host: &str) -> Result<Vec<HeldAddress>> {
        Ok(self
            .allocated
            .lock()
            .iter()
            .filter(|(_, h)| is_own_handle(h, host))
            .map(|(a, h)| HeldAddress {
                address: *a,
                handle: h.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_handles_are_unique_prefixed_and_dated() {
        let minter = HandleMinter::new("dockera");
        let a = minter.mint();
        let b = minter.mint();
        assert_ne!(a, b);
        assert!(
            a.starts_with("libnetwork.") && a.ends_with(".dockera"),
            "{a}"
        );
        assert!(
            ipam::HandleId::new(&a).is_ok(),
            "{a} is a valid IPAM handle"
        );
        let ms = handle_minted_ms(&a).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(ms <= now && now - ms < 60_000);
    }

    #[test]
    fn ownership_is_exact_even_for_dotted_host_names() {
        let dotted = HandleMinter::new("a.b").mint();
        assert_eq!(handle_owner(&dotted), Some("a.b"));
        assert!(is_own_handle(&dotted, "a.b"));
        assert!(!is_own_handle(&dotted, "a"));
        let short = HandleMinter::new("a").mint();
        assert!(!is_own_handle(&short, "a.b"));
    }

    #[test]
    fn foreign_handles_belong_to_no_host() {
        for h in [
            "",
            "libnetwork.",
            "libnetwork.12-3",
            "libnetwork.12-3.",
            "libnetwork.x-3.h",
            "k8s-pod-network.abc",
        ] {
            assert_eq!(handle_owner(h), None, "{h:?}");
            assert_eq!(handle_minted_ms(h), None, "{h:?}");
        }
    }
}
