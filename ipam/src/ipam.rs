//! [`Ipam`]: the allocator, one client of a shared [`BlockStore`].
//!
//! Every public operation is a sequence of reads and conditional writes on the store, each
//! conditional write retried from a fresh read at most [`IpamOptions::max_retries`] times.
//! Any number of `Ipam` values (threads, processes, hosts) may share one store; an `Ipam`
//! is itself `Sync` and may be shared by threads. The crate docs describe the allocation
//! model; this module implements it.
//!
//! # Client-side caches (hints, never the truth)
//!
//! * Per host and family: the host's affine blocks and, for each, whether it may have
//!   room. Auto-assignment tries the blocks marked "may have room" first; only when they
//!   cannot satisfy the request does it re-list the host's affinity index and re-read
//!   every affine block, so a hint can reorder allocations but never makes a host claim a
//!   new block while one of its blocks has room. A block found no longer affine is dropped.
//! * Per host and family: the position in the host's block order (see `order`), so a host
//!   claiming its thousandth block does not re-walk 999 used ones; the walk restarts (with
//!   a fresh listing) only when it runs out.
//! * Per family: the set of existing blocks, from one listing, to skip used candidates
//!   without a read each (libcalico issue #72: 1284 reads, 74 s). A stale entry only
//!   skips a candidate; a missing one costs one failed create.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use parking_lot::{Mutex, RwLock};

use crate::attrs::{Attribute, Attrs};
use crate::block::{Block, MAX_BLOCK_HOST_BITS};
use crate::block::{BlockRelease, NewAttribute};
use crate::error::{IpamError, Result};
use crate::handle::Handle;
use crate::mem::FastBuild;
use crate::net::{
    make_network, network_contains, networks_overlap, normalized, HandleId, HostName, IpFamily,
};
use crate::order::{block_rank, host_seed, BlockOrder};
use crate::pool::{IpamConfig, Pool};
use crate::store::{BlockStore, CasOutcome, Change, Key, Prefix, UpdateOutcome, Value, Version};

/// Tunables of an [`Ipam`] client. Every client of one datastore must use the same block
/// prefixes (blocks of another size are reported as corrupt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpamOptions {
    /// IPv4 block prefix (default 26: 64 addresses; 20..=32 allowed).
    pub block_prefix_v4: u8,
    /// IPv6 block prefix (default 122: 64 addresses; 116..=128 allowed).
    pub block_prefix_v6: u8,
    /// Attempts per compare-and-swap loop before [`IpamError::RetriesExhausted`] (Calico: 100).
    pub max_retries: u32,
    /// How often auto-assignment re-queues an affine block whose key is missing (its
    /// claimer may be between writing the index and the block; Calico: 3).
    pub missing_block_requeues: u32,
    /// Passes over the affinity index when releasing a pool's affinities (Calico: 3).
    pub pool_release_passes: u32,
}

impl Default for IpamOptions {
    fn default() -> IpamOptions {
        IpamOptions {
            block_prefix_v4: 26,
            block_prefix_v6: 122,
            max_retries: 100,
            missing_block_requeues: 3,
            pool_release_passes: 3,
        }
    }
}

impl IpamOptions {
    /// The block prefix of `family`.
    pub fn block_prefix(&self, family: IpFamily) -> u8 {
        match family {
            IpFamily::V4 => self.block_prefix_v4,
            IpFamily::V6 => self.block_prefix_v6,
        }
    }

    /// Checks the block sizes (at most 2^12 addresses) and that retries are allowed.
    pub fn validate(&self) -> Result<()> {
        for family in IpFamily::ALL {
            let prefix = self.block_prefix(family);
            if prefix > family.bits() || family.bits() - prefix > MAX_BLOCK_HOST_BITS {
                return Err(IpamError::InvalidBlockSize {
                    family,
                    prefix,
                    reason:
                        "blocks hold 1 to 4096 addresses (/20../32 for IPv4, /116../128 for IPv6)",
                });
            }
        }
        if self.max_retries == 0 {
            return Err(IpamError::InvalidConfig {
                reason: "max_retries must be at least 1",
            });
        }
        Ok(())
    }
}

/// Which pools an auto-assignment may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolChoice {
    /// Every usable pool of the family.
    Any(IpFamily),
    /// Only these pools (all of one family, each configured and usable).
    Only(Vec<IpNetwork>),
}

impl PoolChoice {
    /// Any usable IPv4 pool.
    pub fn v4() -> PoolChoice {
        PoolChoice::Any(IpFamily::V4)
    }

    /// Any usable IPv6 pool.
    pub fn v6() -> PoolChoice {
        PoolChoice::Any(IpFamily::V6)
    }

    /// Exactly one pool.
    pub fn only(cidr: IpNetwork) -> PoolChoice {
        PoolChoice::Only(vec![cidr])
    }

    fn family(&self) -> Result<IpFamily> {
        match self {
            PoolChoice::Any(f) => Ok(*f),
            PoolChoice::Only(pools) => {
                let Some(first) = pools.first() else {
                    return Err(IpamError::InvalidCidr {
                        input: String::new(),
                        reason: "no pool given".to_string(),
                    });
                };
                let family = IpFamily::of_network(first);
                for p in pools {
                    let got = IpFamily::of_network(p);
                    if got != family {
                        return Err(IpamError::FamilyMismatch {
                            context: format!("pool {p}"),
                            expected: family,
                            got,
                        });
                    }
                }
                Ok(family)
            }
        }
    }
}

/// What [`Ipam::release_block_affinity`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityRelease {
    /// The block lost its affinity and was kept (it still has allocations).
    Released,
    /// The block was empty and was deleted.
    Deleted,
    /// The index entry was stale (block missing or owned by someone else) and was removed.
    Stale,
}

/// What [`Ipam::claim_affinity`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AffinityClaim {
    /// Blocks now affine to the host (including ones that already were).
    pub claimed: Vec<IpNetwork>,
    /// Blocks not claimed: from the first block owned by someone else onwards.
    pub unclaimed: Vec<IpNetwork>,
}

/// One allocation, as reported by [`Ipam::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The allocated address.
    pub addr: IpAddr,
    /// Its block.
    pub block: IpNetwork,
    /// Its handle.
    pub handle: Option<HandleId>,
    /// Its free-form attributes.
    pub secondary: Attrs,
}

/// A handle record that disagrees with the blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleMismatch {
    /// The handle.
    pub handle: HandleId,
    /// The block.
    pub block: IpNetwork,
    /// The count in the handle record.
    pub recorded: u64,
    /// The allocations with that handle actually in the block.
    pub actual: u64,
}

/// The result of [`Ipam::check`] (what Calico 3's `calicoctl ipam check` reports).
///
/// The check reads keys one listing at a time, not atomically: operations running
/// concurrently can show up as transient mismatches. Re-run before acting on a finding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Blocks read.
    pub blocks: usize,
    /// Allocated addresses found.
    pub allocated: usize,
    /// Allocations whose handle is not in the live set: leaked.
    pub leaked: Vec<Allocation>,
    /// Allocations without a handle: they cannot be judged (calicoctl 0.22 and the Docker
    /// plugin allocate this way).
    pub without_handle: Vec<Allocation>,
    /// Handle records whose count for a block differs from the block's contents.
    pub handle_mismatches: Vec<HandleMismatch>,
    /// Affinity index entries whose block is missing or not affine to that host.
    pub stale_affinities: Vec<(HostName, IpNetwork)>,
    /// Blocks affine to a host that has no index entry for them.
    pub unindexed_affinities: Vec<(HostName, IpNetwork)>,
    /// Blocks inside no configured pool (left over from a removed pool).
    pub blocks_outside_pools: Vec<IpNetwork>,
}

impl CheckReport {
    /// No leaks and no inconsistencies (allocations without handle do not count).
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty()
            && self.handle_mismatches.is_empty()
            && self.stale_affinities.is_empty()
            && self.unindexed_affinities.is_empty()
    }

    /// The distinct handles of leaked allocations: release them with
    /// [`Ipam::release_by_handle`] (safer than releasing the addresses, which a new
    /// workload may have received since the check).
    pub fn leaked_handles(&self) -> BTreeSet<HandleId> {
        self.leaked
            .iter()
            .filter_map(|a| a.handle.clone())
            .collect()
    }
}

/// The outcome of one allocation attempt in one block.
enum InBlock {
    /// The block key does not exist.
    Missing,
    /// The host may not allocate here (affinity changed, or strict block of another host).
    NotAffine,
    /// Allocated `taken` addresses (possibly 0: the block is full); `free_after` remain.
    Done { taken: usize, free_after: usize },
}

/// The outcome of claiming one block.
enum Claim {
    /// The block is (now) affine to the host.
    Claimed,
    /// The block exists and belongs to someone else (or no one).
    Taken,
}

#[derive(Debug, Clone, Copy)]
struct AffineBlock {
    cidr: IpNetwork,
    maybe_free: bool,
    /// The usable pool containing the block, when last checked.
    pool: Option<IpNetwork>,
}

/// A host's affine blocks of one family, sorted by CIDR; a hint (see module docs).
#[derive(Debug, Default)]
struct AffineBlocks {
    loaded: bool,
    blocks: Vec<AffineBlock>,
    /// The last pool found usable or not, under which [`BlockStore::pools_generation`]
    /// (only for stores that report one).
    pool_checked: Option<(u64, IpNetwork, bool)>,
}

impl AffineBlocks {
    fn replace(&mut self, cidrs: impl IntoIterator<Item = IpNetwork>) {
        self.blocks = cidrs
            .into_iter()
            .map(|cidr| AffineBlock {
                cidr,
                maybe_free: true,
                pool: None,
            })
            .collect();
        self.blocks.sort_by_key(|b| b.cidr);
        self.blocks.dedup_by_key(|b| b.cidr);
        self.loaded = true;
    }

    fn position(&self, cidr: &IpNetwork) -> std::result::Result<usize, usize> {
        self.blocks.binary_search_by_key(cidr, |b| b.cidr)
    }

    fn set_free(&mut self, cidr: IpNetwork, maybe_free: bool) {
        if let Ok(i) = self.position(&cidr) {
            if let Some(b) = self.blocks.get_mut(i) {
                b.maybe_free = maybe_free;
            }
        }
    }

    fn insert(&mut self, cidr: IpNetwork, pool: Option<IpNetwork>) {
        match self.position(&cidr) {
            Ok(i) => {
                if let Some(b) = self.blocks.get_mut(i) {
                    b.maybe_free = true;
                    b.pool = pool.or(b.pool);
                }
            }
            Err(i) => self.blocks.insert(
                i,
                AffineBlock {
                    cidr,
                    maybe_free: true,
                    pool,
                },
            ),
        }
    }

    fn set_pool(&mut self, cidr: IpNetwork, pool: Option<IpNetwork>) {
        if let Ok(i) = self.position(&cidr) {
            if let Some(b) = self.blocks.get_mut(i) {
                b.pool = pool;
            }
        }
    }

    /// Records, for every block, which of `usable` pools contains it.
    fn assign_pools(&mut self, usable: &[IpNetwork]) {
        for b in &mut self.blocks {
            b.pool = usable
                .iter()
                .find(|p| network_contains(p, &b.cidr))
                .copied();
        }
    }

    /// The first block at or after `*cursor` that may have room and whose recorded pool
    /// the choice allows.
    fn next_hinted(
        &self,
        cursor: &mut usize,
        choice: &PoolChoice,
    ) -> Option<(IpNetwork, IpNetwork)> {
        while let Some(b) = self.blocks.get(*cursor) {
            *cursor += 1;
            let Some(pool) = b.pool else { continue };
            let allowed = match choice {
                PoolChoice::Any(f) => IpFamily::of_network(&pool) == *f,
                PoolChoice::Only(list) => list.contains(&pool),
            };
            if b.maybe_free && allowed {
                return Some((b.cidr, pool));
            }
        }
        None
    }

    fn remove(&mut self, cidr: IpNetwork) {
        if let Ok(i) = self.position(&cidr) {
            self.blocks.remove(i);
        }
    }
}

struct HostCache {
    name: HostName,
    families: [Mutex<AffineBlocks>; 2],
}

struct SearchState {
    pools: Vec<IpNetwork>,
    order: BlockOrder,
}

#[derive(Default)]
struct ExistingBlocks {
    loaded: bool,
    blocks: HashSet<IpNetwork, FastBuild>,
}

fn family_index(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

/// The allocator; see the [module docs](self) and the crate docs.
pub struct Ipam<S> {
    store: S,
    options: IpamOptions,
    hosts: RwLock<HashMap<String, Arc<HostCache>, FastBuild>>,
    search: Mutex<HashMap<(HostName, IpFamily), SearchState, FastBuild>>,
    existing: [Mutex<ExistingBlocks>; 2],
}

impl<S: BlockStore> std::fmt::Debug for Ipam<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: BlockStore> Ipam<S> {
    /// A client with the default options (Calico's: /26 and /122 blocks, 100 retries).
    pub fn new(store: S) -> Ipam<S> {
        Ipam::build(store, IpamOptions::default())
    }

    /// A client with explicit options.
    pub fn with_options(store: S, options: IpamOptions) -> Result<Ipam<S>> {
        options.validate()?;
        Ok(Ipam::build(store, options))
    }

    fn build(store: S, options: IpamOptions) -> Ipam<S> {
        Ipam {
            store,
            options,
            hosts: RwLock::new(HashMap::with_hasher(FastBuild)),
            search: Mutex::new(HashMap::with_hasher(FastBuild)),
            existing: Default::default(),
        }
    }

    /// The store this client works on.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The client's options.
    pub fn options(&self) -> &IpamOptions {
        &self.options
    }

    /// The block that contains (or would contain) `addr`.
    pub fn block_cidr(&self, addr: IpAddr) -> IpNetwork {
        let family = IpFamily::of_addr(addr);
        let prefix = self.options.block_prefix(family);
        // The prefix is validated, so this cannot fail; fall back to the address itself.
        make_network(family, crate::net::addr_bits(addr), prefix)
            .unwrap_or_else(|_| IpNetwork::from(addr))
    }

    // ----- internal helpers -------------------------------------------------------------

    fn retries_exhausted(&self, op: &'static str, key: &Key) -> IpamError {
        IpamError::RetriesExhausted {
            op,
            key: key.path(),
            attempts: self.options.max_retries,
        }
    }

    fn host_cache(&self, host: &str) -> Result<Arc<HostCache>> {
        if let Some(hc) = self.hosts.read().get(host) {
            return Ok(Arc::clone(hc));
        }
        let name = HostName::new(host)?;
        let mut hosts = self.hosts.write();
        let hc = hosts.entry(host.to_string()).or_insert_with(|| {
            Arc::new(HostCache {
                name,
                families: Default::default(),
            })
        });
        Ok(Arc::clone(hc))
    }

    /// Marks `block` as possibly having room in `owner`'s cache, if cached.
    fn hint_free(&self, owner: &HostName, block: IpNetwork) {
        let hosts = self.hosts.read();
        if let Some(slot) = hosts
            .get(owner.as_str())
            .and_then(|hc| hc.families.get(family_index(IpFamily::of_network(&block))))
        {
            slot.lock().set_free(block, true);
        }
    }

    /// Drops `block` from `owner`'s cache, if cached.
    fn forget_affinity(&self, owner: &HostName, block: IpNetwork) {
        let hc = self.hosts.read().get(owner.as_str()).cloned();
        if let Some(hc) = hc {
            if let Some(slot) = hc.families.get(family_index(IpFamily::of_network(&block))) {
                slot.lock().remove(block);
            }
        }
    }

    fn note_block_exists(&self, block: IpNetwork, exists: bool) {
        if let Some(slot) = self
            .existing
            .get(family_index(IpFamily::of_network(&block)))
        {
            let mut e = slot.lock();
            if exists {
                e.blocks.insert(block);
            } else {
                e.blocks.remove(&block);
            }
        }
    }

    fn read_block(&self, cidr: IpNetwork) -> Result<Option<(Block, Version)>> {
        let key = Key::Block(cidr);
        match self.store.get(&key)? {
            None => Ok(None),
            Some(v) => match v.value {
                Value::Block(b) => {
                    self.check_block_shape(&key, &b)?;
                    Ok(Some((b, v.version)))
                }
                other => Err(IpamError::Corrupt {
                    key: key.path(),
                    reason: format!("expected a block, found {}", other.to_json()),
                }),
            },
        }
    }

    fn check_block_shape(&self, key: &Key, b: &Block) -> Result<()> {
        let expected = self.options.block_prefix(b.family());
        if b.cidr().prefix() != expected {
            return Err(IpamError::Corrupt {
                key: key.path(),
                reason: format!(
                    "block {} has prefix /{}, but this client uses /{expected} blocks",
                    b.cidr(),
                    b.cidr().prefix()
                ),
            });
        }
        Ok(())
    }

    fn read_handle(&self, id: &HandleId) -> Result<Option<(Handle, Version)>> {
        let key = Key::Handle(id.clone());
        match self.store.get(&key)? {
            None => Ok(None),
            Some(v) => match v.value {
                Value::Handle(h) => Ok(Some((h, v.version))),
                other => Err(IpamError::Corrupt {
                    key: key.path(),
                    reason: format!("expected a handle, found {}", other.to_json()),
                }),
            },
        }
    }

    fn list_pools(&self, family: IpFamily) -> Result<Vec<(Pool, Version)>> {
        let mut pools = Vec::new();
        for (key, v) in self.store.list(&Prefix::Pools(family))? {
            match v.value {
                Value::Pool(p) if IpFamily::of_network(&p.cidr) == family => {
                    pools.push((p, v.version))
                }
                other => {
                    return Err(IpamError::Corrupt {
                        key: key.path(),
                        reason: format!("expected an {family} pool, found {}", other.to_json()),
                    })
                }
            }
        }
        pools.sort_by_key(|(p, _)| p.cidr);
        Ok(pools)
    }

    fn list_host_blocks(&self, host: &HostName, family: IpFamily) -> Result<Vec<IpNetwork>> {
        let listed = self.store.list(&Prefix::HostAffinities {
            host: host.clone(),
            family,
        })?;
        Ok(listed
            .into_iter()
            .filter_map(|(k, _)| match k {
                Key::Affinity { block, .. } if IpFamily::of_network(&block) == family => {
                    Some(block)
                }
                _ => None,
            })
            .collect())
    }

    /// Adds `delta` to the handle's count for `block` (creating or deleting the record).
    fn adjust_handle(&self, id: &HandleId, block: IpNetwork, delta: i64) -> Result<()> {
        if delta == 0 {
            return Ok(());
        }
        for _ in 0..self.options.max_retries {
            let outcome = self.store.update_handle(id, &mut |record| match record {
                None if delta > 0 => {
                    let mut h = Handle::new(id.clone());
                    h.increment(block, delta.unsigned_abs());
                    *record = Some(h);
                    Change::Write
                }
                None => Change::Keep,
                Some(h) => {
                    if delta > 0 {
                        h.increment(block, delta.unsigned_abs());
                        Change::Write
                    } else if h.decrement(block, delta.unsigned_abs()) == 0 {
                        Change::Keep
                    } else if h.is_empty() {
                        Change::Delete
                    } else {
                        Change::Write
                    }
                }
            })?;
            if outcome != UpdateOutcome::Conflict {
                return Ok(());
            }
        }
        Err(self.retries_exhausted("update handle", &Key::Handle(id.clone())))
    }

    /// Calico's allocate-in-block: read, take up to `want` addresses, bump the handle,
    /// compare-and-swap; on conflict undo the handle bump and retry.
    fn allocate_in_block(
        &self,
        cidr: IpNetwork,
        want: usize,
        attr: &NewAttribute,
        host: &HostName,
        affinity_check: bool,
        out: &mut Vec<IpAddr>,
    ) -> Result<InBlock> {
        // Handle first (Calico's order: a handle may over-count, never under-count), for
        // as many addresses as asked; what the block could not give is taken back after.
        if let Some(h) = &attr.handle {
            self.adjust_handle(h, cidr, want as i64)?;
        }
        let result = self.allocate_in_block_once(cidr, want, attr, host, affinity_check, out);
        if let Some(h) = &attr.handle {
            let taken = match &result {
                Ok(InBlock::Done { taken, .. }) => *taken,
                Ok(_) => 0,
                // The block write may have happened: keep the over-count.
                Err(IpamError::Store { .. }) => return result,
                Err(_) => 0,
            };
            if taken < want {
                self.adjust_handle(h, cidr, -((want - taken) as i64))?;
            }
        }
        result
    }

    fn allocate_in_block_once(
        &self,
        cidr: IpNetwork,
        want: usize,
        attr: &NewAttribute,
        host: &HostName,
        affinity_check: bool,
        out: &mut Vec<IpAddr>,
    ) -> Result<InBlock> {
        let key = Key::Block(cidr);
        let start = out.len();
        for _ in 0..self.options.max_retries {
            let mut verdict = InBlock::Missing;
            let mut bad_shape = None;
            let outcome = self.store.update_block(cidr, &mut |block| {
                out.truncate(start);
                if let Err(e) = self.check_block_shape(&key, block) {
                    bad_shape = Some(e);
                    return Change::Keep;
                }
                if block.check_affinity(host, affinity_check).is_err() {
                    verdict = InBlock::NotAffine;
                    return Change::Keep;
                }
                let taken = block.auto_assign_into(want, attr, out);
                verdict = InBlock::Done {
                    taken,
                    free_after: block.free_count(),
                };
                if taken == 0 {
                    Change::Keep
                } else {
                    Change::Write
                }
            });
            if let Some(e) = bad_shape {
                out.truncate(start);
                return Err(e);
            }
            match outcome {
                Ok(UpdateOutcome::Missing) => return Ok(InBlock::Missing),
                Ok(UpdateOutcome::Kept | UpdateOutcome::Written | UpdateOutcome::Deleted) => {
                    return Ok(verdict)
                }
                Ok(UpdateOutcome::Conflict) => out.truncate(start),
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            }
        }
        Err(self.retries_exhausted("allocate in block", &key))
    }

    /// Calico's claim: index entry first, then create the block; clean up on a lost race.
    fn claim_block(&self, host: &HostName, cidr: IpNetwork, strict: bool) -> Result<Claim> {
        let index = Key::Affinity {
            host: host.clone(),
            block: cidr,
        };
        let key = Key::Block(cidr);
        for _ in 0..self.options.max_retries {
            self.store.put(&index, Value::Affinity)?;
            let block = Block::new(cidr, Some(host.clone()), strict)?;
            let created = match self.store.create(&key, Value::Block(block)) {
                Ok(outcome) => outcome,
                Err(e) => {
                    // Best effort: an index entry without its block would cost this host
                    // a read on every later search (it is skipped, never trusted).
                    let _ = self.store.delete(&index);
                    return Err(e);
                }
            };
            match created {
                CasOutcome::Written(_) => {
                    self.note_block_exists(cidr, true);
                    return Ok(Claim::Claimed);
                }
                CasOutcome::Conflict => {
                    // When the block is gone again (deleted, or the conflict was
                    // spurious), try again.
                    if let Some((b, _)) = self.read_block(cidr)? {
                        self.note_block_exists(cidr, true);
                        if b.affinity() == Some(host) {
                            // Another process of the same host won the race: share it.
                            return Ok(Claim::Claimed);
                        }
                        self.store.delete(&index)?;
                        return Ok(Claim::Taken);
                    }
                }
            }
        }
        // Best effort: do not leave an index entry for a block we never got.
        let _ = self.store.delete(&index);
        Err(self.retries_exhausted("claim block", &key))
    }

    /// Every usable pool of the family, sorted (one listing).
    fn usable_pools(&self, family: IpFamily) -> Result<Vec<IpNetwork>> {
        {
            let mut usable = Vec::new();
            for (key, v) in self.store.list(&Prefix::Pools(family))? {
                match v.value {
                    Value::Pool(p) if IpFamily::of_network(&p.cidr) == family => {
                        if p.is_usable() {
                            usable.push(p.cidr);
                        }
                    }
                    other => {
                        return Err(IpamError::Corrupt {
                            key: key.path(),
                            reason: format!("expected an {family} pool, found {}", other.to_json()),
                        })
                    }
                }
            }
            usable.sort();
            Ok(usable)
        }
    }

    /// Is `cidr` a configured, usable pool? (One point read.)
    fn pool_is_usable(&self, cidr: IpNetwork) -> Result<bool> {
        let key = Key::Pool(cidr);
        match self.store.get(&key)? {
            None => Ok(false),
            Some(v) => match v.value {
                Value::Pool(p) => Ok(p.cidr == cidr && p.is_usable()),
                other => Err(IpamError::Corrupt {
                    key: key.path(),
                    reason: format!("expected a pool, found {}", other.to_json()),
                }),
            },
        }
    }

    // ----- auto-assignment --------------------------------------------------------------

    /// Allocates up to `n` addresses for `host`, Calico's way: from the host's affine
    /// blocks first, then from newly claimed blocks, then (unless strict affinity is
    /// configured) borrowed from other hosts' blocks. Only blocks inside the chosen,
    /// usable pools are used.
    ///
    /// Returns the addresses in allocation order; *fewer than `n`* (possibly none) means
    /// the pools are exhausted for this host: the caller decides whether that is an error.
    /// On an error, addresses already taken by this call are released again (best
    /// effort), so a failed call leaves nothing allocated.
    pub fn auto_assign(
        &self,
        host: &str,
        n: usize,
        handle: Option<&str>,
        attrs: &Attrs,
        pools: &PoolChoice,
    ) -> Result<Vec<IpAddr>> {
        let hc = self.host_cache(host)?;
        let handle = handle.map(HandleId::new).transpose()?;
        let family = pools.family()?;
        if let PoolChoice::Only(list) = pools {
            for cidr in list {
                if !self.pool_is_usable(*cidr)? {
                    return Err(IpamError::PoolNotFound { cidr: *cidr });
                }
            }
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let attr = NewAttribute::new(Attribute::new(handle, attrs.clone()));
        let mut out = Vec::with_capacity(n.min(4096));
        match self.auto_assign_stages(&hc, family, pools, &attr, n, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                if !out.is_empty() {
                    let _ = self.release_ips(&out);
                }
                Err(e)
            }
        }
    }

    fn auto_assign_stages(
        &self,
        hc: &HostCache,
        family: IpFamily,
        choice: &PoolChoice,
        attr: &NewAttribute,
        n: usize,
        out: &mut Vec<IpAddr>,
    ) -> Result<()> {
        self.assign_from_hinted_blocks(hc, family, choice, attr, n, out)?;
        if out.len() >= n {
            return Ok(());
        }
        let usable = self.usable_pools(family)?;
        let eligible: Vec<IpNetwork> = match choice {
            PoolChoice::Any(_) => usable.clone(),
            PoolChoice::Only(list) => usable
                .iter()
                .filter(|p| list.contains(p))
                .copied()
                .collect(),
        };
        let eligible = &eligible[..];
        self.assign_from_affine_blocks(hc, family, &usable, eligible, attr, n, out)?;
        if out.len() >= n {
            return Ok(());
        }
        let config = self.config()?;
        if config.auto_allocate_blocks {
            self.assign_from_new_blocks(
                hc,
                family,
                eligible,
                attr,
                n,
                config.strict_affinity,
                out,
            )?;
        }
        if out.len() < n && !config.strict_affinity {
            self.assign_borrowed(hc, family, eligible, attr, n, out)?;
        }
        Ok(())
    }

    fn record_in_block(&self, slot: &Mutex<AffineBlocks>, cidr: IpNetwork, result: &InBlock) {
        let mut cache = slot.lock();
        match result {
            InBlock::Missing => cache.set_free(cidr, false),
            InBlock::NotAffine => cache.remove(cidr),
            InBlock::Done { free_after, .. } => cache.set_free(cidr, *free_after > 0),
        }
    }

    /// Stage 1a: the host's cached affine blocks that may have room, each checked
    /// against its pool with one point read (no listing: the hot path).
    fn assign_from_hinted_blocks(
        &self,
        hc: &HostCache,
        family: IpFamily,
        choice: &PoolChoice,
        attr: &NewAttribute,
        n: usize,
        out: &mut Vec<IpAddr>,
    ) -> Result<()> {
        let Some(slot) = hc.families.get(family_index(family)) else {
            return Ok(());
        };
        let mut cursor = 0;
        let mut checked: Option<(IpNetwork, bool)> = None;
        let generation = self.store.pools_generation();
        while out.len() < n {
            let (cidr, pool, cached) = {
                let cache = slot.lock();
                let Some((cidr, pool)) = cache.next_hinted(&mut cursor, choice) else {
                    break;
                };
                let cached = match (generation, cache.pool_checked) {
                    (Some(g), Some((cg, cp, usable))) if cg == g && cp == pool => Some(usable),
                    _ => None,
                };
                (cidr, pool, cached)
            };
            let usable = match (cached, checked) {
                (Some(usable), _) => usable,
                (None, Some((p, usable))) if p == pool => usable,
                _ => {
                    let usable = self.pool_is_usable(pool)?;
                    checked = Some((pool, usable));
                    if let Some(g) = generation {
                        slot.lock().pool_checked = Some((g, pool, usable));
                    }
                    usable
                }
            };
            if !usable {
                slot.lock().set_pool(cidr, None);
                continue;
            }
            let result = self.allocate_in_block(cidr, n - out.len(), attr, &hc.name, true, out)?;
            // `next_hinted` only returns blocks marked as maybe having room: a block that
            // still has room needs no update.
            if !matches!(result, InBlock::Done { free_after, .. } if free_after > 0) {
                self.record_in_block(slot, cidr, &result);
            }
        }
        Ok(())
    }

    /// Stage 1b: re-list the host's affinity index and read every affine block inside an
    /// eligible pool (another process of this host may have claimed blocks or freed room).
    #[allow(clippy::too_many_arguments)] // reason: internal stage; the pool lists are computed once by the caller
    fn assign_from_affine_blocks(
        &self,
        hc: &HostCache,
        family: IpFamily,
        usable: &[IpNetwork],
        eligible: &[IpNetwork],
        attr: &NewAttribute,
        n: usize,
        out: &mut Vec<IpAddr>,
    ) -> Result<()> {
        let Some(slot) = hc.families.get(family_index(family)) else {
            return Ok(());
        };
        let listed = self.list_host_blocks(&hc.name, family)?;
        let mut queue: VecDeque<IpNetwork> = {
            let mut cache = slot.lock();
            cache.replace(listed);
            cache.assign_pools(usable);
            cache
                .blocks
                .iter()
                .filter(|b| eligible.iter().any(|p| network_contains(p, &b.cidr)))
                .map(|b| b.cidr)
                .collect()
        };
        let mut requeues = 0;
        while out.len() < n {
            let Some(cidr) = queue.pop_front() else { break };
            let result = self.allocate_in_block(cidr, n - out.len(), attr, &hc.name, true, out)?;
            if matches!(result, InBlock::Missing) && requeues < self.options.missing_block_requeues
            {
                requeues += 1;
                queue.push_back(cidr);
                continue;
            }
            self.record_in_block(slot, cidr, &result);
        }
        Ok(())
    }

    /// Stage 3: claim new blocks for the host and allocate in them.
    #[allow(clippy::too_many_arguments)] // reason: internal stage with the same inputs as its siblings plus the strict flag
    fn assign_from_new_blocks(
        &self,
        hc: &HostCache,
        family: IpFamily,
        eligible: &[IpNetwork],
        attr: &NewAttribute,
        n: usize,
        strict: bool,
        out: &mut Vec<IpAddr>,
    ) -> Result<()> {
        let Some(slot) = hc.families.get(family_index(family)) else {
            return Ok(());
        };
        let block_size = 1usize << (family.bits() - self.options.block_prefix(family));
        let bound = self.options.max_retries as usize + n.div_ceil(block_size);
        for _ in 0..bound {
            if out.len() >= n {
                break;
            }
            let Some(cidr) = self.claim_new_block(&hc.name, family, eligible, strict)? else {
                break;
            };
            let pool = eligible
                .iter()
                .find(|p| network_contains(p, &cidr))
                .copied();
            slot.lock().insert(cidr, pool);
            let result = self.allocate_in_block(cidr, n - out.len(), attr, &hc.name, true, out)?;
            self.record_in_block(slot, cidr, &result);
        }
        Ok(())
    }

    /// Finds a block that does not exist yet, in the host's order, and claims it.
    fn claim_new_block(
        &self,
        host: &HostName,
        family: IpFamily,
        eligible: &[IpNetwork],
        strict: bool,
    ) -> Result<Option<IpNetwork>> {
        if eligible.is_empty() {
            return Ok(None);
        }
        let key = (host.clone(), family);
        let prefix = self.options.block_prefix(family);
        let mut rebuilt = false;
        loop {
            let fresh_needed =
                !matches!(self.search.lock().get(&key), Some(s) if s.pools == eligible);
            if fresh_needed {
                self.refresh_existing(family)?;
                self.search.lock().insert(
                    key.clone(),
                    SearchState {
                        pools: eligible.to_vec(),
                        order: BlockOrder::new(host.as_str(), eligible, prefix),
                    },
                );
                rebuilt = true;
            }
            let next = self
                .search
                .lock()
                .get_mut(&key)
                .and_then(|s| s.order.next());
            let Some(cidr) = next else {
                if rebuilt {
                    return Ok(None);
                }
                // The walk ran out: blocks may have been freed since; start over once.
                self.search.lock().remove(&key);
                continue;
            };
            let known = self
                .existing
                .get(family_index(family))
                .is_some_and(|e| e.lock().blocks.contains(&cidr));
            if known {
                continue;
            }
            if let Claim::Claimed = self.claim_block(host, cidr, strict)? {
                return Ok(Some(cidr));
            }
        }
    }

    fn refresh_existing(&self, family: IpFamily) -> Result<()> {
        let listed = self.store.list(&Prefix::Blocks(family))?;
        if let Some(slot) = self.existing.get(family_index(family)) {
            let mut e = slot.lock();
            e.blocks.clear();
            e.blocks
                .extend(listed.into_iter().filter_map(|(k, _)| match k {
                    Key::Block(b) => Some(b),
                    _ => None,
                }));
            e.loaded = true;
        }
        Ok(())
    }

    /// Stage 4: borrow from existing blocks with room, in a host-specific order, using one
    /// listing (no read per full block).
    fn assign_borrowed(
        &self,
        hc: &HostCache,
        family: IpFamily,
        eligible: &[IpNetwork],
        attr: &NewAttribute,
        n: usize,
        out: &mut Vec<IpAddr>,
    ) -> Result<()> {
        if eligible.is_empty() {
            return Ok(());
        }
        let seed = host_seed(hc.name.as_str());
        let mut candidates: Vec<(u64, IpNetwork)> = self
            .store
            .list(&Prefix::Blocks(family))?
            .into_iter()
            .filter_map(|(_, v)| match v.value {
                Value::Block(b) => Some(b),
                _ => None,
            })
            .filter(|b| {
                b.free_count() > 0
                    && (!b.strict_affinity() || b.affinity() == Some(&hc.name))
                    && eligible.iter().any(|p| network_contains(p, &b.cidr()))
            })
            .map(|b| (block_rank(seed, &b.cidr()), b.cidr()))
            .collect();
        candidates.sort_unstable();
        for (_, cidr) in candidates {
            if out.len() >= n {
                break;
            }
            self.allocate_in_block(cidr, n - out.len(), attr, &hc.name, false, out)?;
        }
        Ok(())
    }

    // ----- specific assignment ----------------------------------------------------------

    /// Allocates the specific address `addr` for `host`.
    ///
    /// The address must lie in a configured, usable pool ([`IpamError::NotInPool`],
    /// [`IpamError::PoolNotUsable`]) and be free ([`IpamError::AlreadyAssigned`]); a
    /// strict block of another host refuses it ([`IpamError::NoHostAffinity`]). If its
    /// block does not exist yet, the host claims it (Calico's behaviour: the block becomes
    /// affine to the host asking).
    pub fn assign_ip(
        &self,
        addr: IpAddr,
        handle: Option<&str>,
        attrs: &Attrs,
        host: &str,
    ) -> Result<()> {
        let hc = self.host_cache(host)?;
        let handle = handle.map(HandleId::new).transpose()?;
        let family = IpFamily::of_addr(addr);
        let pools = self.list_pools(family)?;
        let pool_cidr = match pools.iter().find(|(p, _)| p.cidr.contains(addr)) {
            None => return Err(IpamError::NotInPool { addr }),
            Some((p, _)) if !p.ipam => {
                return Err(IpamError::PoolNotUsable {
                    addr,
                    pool: p.cidr,
                    state: "not an IPAM pool",
                })
            }
            Some((p, _)) if p.disabled => {
                return Err(IpamError::PoolNotUsable {
                    addr,
                    pool: p.cidr,
                    state: "disabled",
                })
            }
            Some((p, _)) => p.cidr,
        };
        let cidr = self.block_cidr(addr);
        let key = Key::Block(cidr);
        let attr = Attribute::new(handle, attrs.clone());
        let slot = hc.families.get(family_index(family));
        let mut strict: Option<bool> = None;
        if let Some(h) = &attr.handle {
            self.adjust_handle(h, cidr, 1)?;
        }
        let undo_handle = |result: Result<()>| -> Result<()> {
            match (&attr.handle, &result) {
                // A failed store call may have written the block: keep the over-count.
                (Some(h), Err(e)) if !matches!(e, IpamError::Store { .. }) => {
                    self.adjust_handle(h, cidr, -1)?;
                    result
                }
                _ => result,
            }
        };
        for _ in 0..self.options.max_retries {
            let mut refused = None;
            let mut free_after = 0;
            let mut ours = false;
            let outcome = self.store.update_block(cidr, &mut |block| {
                if let Err(e) = self.check_block_shape(&key, block) {
                    refused = Some(e);
                    return Change::Keep;
                }
                match block.assign(addr, &attr, &hc.name) {
                    Ok(()) => {
                        free_after = block.free_count();
                        ours = block.affinity() == Some(&hc.name);
                        Change::Write
                    }
                    Err(e) => {
                        refused = Some(e);
                        Change::Keep
                    }
                }
            });
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => return undo_handle(Err(e)),
            };
            match outcome {
                UpdateOutcome::Missing => {
                    let strict = match strict {
                        Some(s) => s,
                        None => match self.config() {
                            Ok(c) => *strict.insert(c.strict_affinity),
                            Err(e) => return undo_handle(Err(e)),
                        },
                    };
                    match self.claim_block(&hc.name, cidr, strict) {
                        Ok(Claim::Claimed) => {
                            if let Some(slot) = slot {
                                slot.lock().insert(cidr, Some(pool_cidr));
                            }
                        }
                        Ok(Claim::Taken) => {}
                        Err(e) => return undo_handle(Err(e)),
                    }
                }
                UpdateOutcome::Conflict => {}
                UpdateOutcome::Kept => {
                    let e = refused.unwrap_or(IpamError::AlreadyAssigned { addr, block: cidr });
                    return undo_handle(Err(e));
                }
                UpdateOutcome::Written | UpdateOutcome::Deleted => {
                    if let (true, Some(slot)) = (ours, slot) {
                        slot.lock().set_free(cidr, free_after > 0);
                    }
                    return Ok(());
                }
            }
        }
        undo_handle(Err(self.retries_exhausted("assign address", &key)))
    }

    // ----- release ----------------------------------------------------------------------

    /// Releases addresses (any mix of families and blocks); returns those that were not
    /// allocated. Idempotent: releasing again reports them as not allocated and changes
    /// nothing. A block left empty is deleted only if it has no affinity (an affine host
    /// keeps its empty block, and with it its route aggregate).
    pub fn release_ips(&self, addrs: &[IpAddr]) -> Result<Vec<IpAddr>> {
        let mut not_allocated = Vec::new();
        if let [addr] = addrs {
            self.release_in_block(self.block_cidr(*addr), addrs, &mut not_allocated)?;
            return Ok(not_allocated);
        }
        let mut groups: BTreeMap<IpNetwork, Vec<IpAddr>> = BTreeMap::new();
        for &addr in addrs {
            groups.entry(self.block_cidr(addr)).or_default().push(addr);
        }
        for (cidr, group) in groups {
            self.release_in_block(cidr, &group, &mut not_allocated)?;
        }
        Ok(not_allocated)
    }

    fn release_in_block(
        &self,
        cidr: IpNetwork,
        addrs: &[IpAddr],
        not_allocated: &mut Vec<IpAddr>,
    ) -> Result<()> {
        let key = Key::Block(cidr);
        for _ in 0..self.options.max_retries {
            let mut released = BlockRelease::default();
            let mut owner = None;
            let mut was_full = false;
            let mut bad_shape = None;
            let outcome = self.store.update_block(cidr, &mut |block| {
                if let Err(e) = self.check_block_shape(&key, block) {
                    bad_shape = Some(e);
                    return Change::Keep;
                }
                was_full = block.free_count() == 0;
                released = block.release(addrs);
                // Only a block that was full needs its owner's hint flipped (below).
                owner = if was_full {
                    block.affinity().cloned()
                } else {
                    None
                };
                if released.released == 0 {
                    Change::Keep
                } else if block.is_empty() && block.affinity().is_none() {
                    Change::Delete
                } else {
                    Change::Write
                }
            })?;
            if let Some(e) = bad_shape {
                return Err(e);
            }
            match outcome {
                UpdateOutcome::Conflict => continue,
                UpdateOutcome::Missing => {
                    for a in addrs {
                        if !not_allocated.contains(a) {
                            not_allocated.push(*a);
                        }
                    }
                }
                UpdateOutcome::Kept => not_allocated.extend(released.not_allocated),
                UpdateOutcome::Written | UpdateOutcome::Deleted => {
                    not_allocated.extend(released.not_allocated);
                    if outcome == UpdateOutcome::Deleted {
                        self.note_block_exists(cidr, false);
                    }
                    // A block that had room was not marked full by this client's release
                    // path; only a block that was full needs its hint flipped.
                    if let (Some(owner), true) = (owner, was_full) {
                        self.hint_free(&owner, cidr);
                    }
                    for (handle, count) in released.handles {
                        self.adjust_handle(&handle, cidr, -(count as i64))?;
                    }
                }
            }
            return Ok(());
        }
        Err(self.retries_exhausted("release addresses", &key))
    }

    /// Releases every address allocated with `handle`; returns how many. Idempotent (an
    /// unknown handle releases nothing).
    pub fn release_by_handle(&self, handle: &str) -> Result<usize> {
        let id = HandleId::new(handle)?;
        let Some((record, _)) = self.read_handle(&id)? else {
            return Ok(0);
        };
        let mut total = 0;
        for (cidr, _) in record.blocks() {
            let key = Key::Block(cidr);
            let mut done = false;
            for _ in 0..self.options.max_retries {
                let mut released = 0;
                let mut owner = None;
                let mut bad_shape = None;
                let outcome = self.store.update_block(cidr, &mut |block| {
                    if let Err(e) = self.check_block_shape(&key, block) {
                        bad_shape = Some(e);
                        return Change::Keep;
                    }
                    released = block.release_by_handle(&id);
                    owner = block.affinity().cloned();
                    if released == 0 {
                        Change::Keep
                    } else if block.is_empty() && owner.is_none() {
                        Change::Delete
                    } else {
                        Change::Write
                    }
                })?;
                if let Some(e) = bad_shape {
                    return Err(e);
                }
                match outcome {
                    UpdateOutcome::Conflict => continue,
                    UpdateOutcome::Missing | UpdateOutcome::Kept => {}
                    UpdateOutcome::Written | UpdateOutcome::Deleted => {
                        if outcome == UpdateOutcome::Deleted {
                            self.note_block_exists(cidr, false);
                        }
                        if let Some(owner) = owner {
                            self.hint_free(&owner, cidr);
                        }
                        self.adjust_handle(&id, cidr, -(released as i64))?;
                        total += released;
                    }
                }
                done = true;
                break;
            }
            if !done {
                return Err(self.retries_exhausted("release by handle", &key));
            }
        }
        Ok(total)
    }

    // ----- queries ----------------------------------------------------------------------

    /// The attribute entry (handle and `secondary`) of an allocated address; `None` when
    /// the address is free or its block does not exist.
    pub fn assignment(&self, addr: IpAddr) -> Result<Option<Attribute>> {
        Ok(self
            .read_block(self.block_cidr(addr))?
            .and_then(|(b, _)| b.attribute(addr).cloned()))
    }

    /// Every address allocated with `handle`, found through its handle record.
    pub fn ips_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        let id = HandleId::new(handle)?;
        let Some((record, _)) = self.read_handle(&id)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (cidr, _) in record.blocks() {
            if let Some((b, _)) = self.read_block(cidr)? {
                out.extend(b.addresses_with_handle(Some(&id)));
            }
        }
        Ok(out)
    }

    /// One block.
    pub fn block(&self, cidr: IpNetwork) -> Result<Option<Block>> {
        Ok(self.read_block(cidr)?.map(|(b, _)| b))
    }

    /// Every block of a family, sorted by CIDR.
    pub fn blocks(&self, family: IpFamily) -> Result<Vec<Block>> {
        let mut out = Vec::new();
        for (key, v) in self.store.list(&Prefix::Blocks(family))? {
            match v.value {
                Value::Block(b) => {
                    self.check_block_shape(&key, &b)?;
                    out.push(b);
                }
                other => {
                    return Err(IpamError::Corrupt {
                        key: key.path(),
                        reason: format!("expected a block, found {}", other.to_json()),
                    })
                }
            }
        }
        out.sort_by_key(Block::cidr);
        Ok(out)
    }

    /// One handle record.
    pub fn handle(&self, handle: &str) -> Result<Option<Handle>> {
        Ok(self.read_handle(&HandleId::new(handle)?)?.map(|(h, _)| h))
    }

    /// The blocks in `host`'s affinity index for `family`, sorted.
    pub fn host_blocks(&self, host: &str, family: IpFamily) -> Result<Vec<IpNetwork>> {
        let mut blocks = self.list_host_blocks(&HostName::new(host)?, family)?;
        blocks.sort();
        Ok(blocks)
    }

    // ----- pools ------------------------------------------------------------------------

    /// Every pool of a family, sorted by CIDR.
    pub fn pools(&self, family: IpFamily) -> Result<Vec<Pool>> {
        Ok(self
            .list_pools(family)?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// One pool.
    pub fn pool(&self, cidr: IpNetwork) -> Result<Option<Pool>> {
        Ok(self
            .list_pools(IpFamily::of_network(&cidr))?
            .into_iter()
            .map(|(p, _)| p)
            .find(|p| p.cidr == cidr))
    }

    /// Adds a pool, or updates the pool with exactly this CIDR (calicoctl's `pool add`).
    ///
    /// Errors: [`IpamError::HostBitsSet`], [`IpamError::PoolTooSmall`] (smaller than a
    /// block: it could never hold one, calicoctl issue #505), [`IpamError::IpipOnIpv6`],
    /// [`IpamError::PoolOverlap`]. Two clients adding overlapping pools at the same moment
    /// can both succeed (etcd v2 has no multi-key transaction; Calico has the same window).
    pub fn add_pool(&self, pool: Pool) -> Result<()> {
        pool.validate(self.options.block_prefix(pool.family()))?;
        let key = Key::Pool(pool.cidr);
        for _ in 0..self.options.max_retries {
            let existing = self.list_pools(pool.family())?;
            let mut same = None;
            for (p, version) in &existing {
                if p.cidr == pool.cidr {
                    same = Some(*version);
                } else if networks_overlap(&p.cidr, &pool.cidr) {
                    return Err(IpamError::PoolOverlap {
                        cidr: pool.cidr,
                        existing: p.cidr,
                    });
                }
            }
            let outcome = match same {
                Some(version) => {
                    self.store
                        .compare_and_swap(&key, Value::Pool(pool.clone()), version)?
                }
                None => self.store.create(&key, Value::Pool(pool.clone()))?,
            };
            if let CasOutcome::Written(_) = outcome {
                return Ok(());
            }
        }
        Err(self.retries_exhausted("add pool", &key))
    }

    fn configured_pool(&self, cidr: IpNetwork) -> Result<(Pool, Version)> {
        let network = normalized(&cidr)?;
        if network != cidr {
            return Err(IpamError::HostBitsSet {
                given: cidr,
                network,
            });
        }
        self.list_pools(IpFamily::of_network(&cidr))?
            .into_iter()
            .find(|(p, _)| p.cidr == cidr)
            .ok_or(IpamError::PoolNotFound { cidr })
    }

    /// Marks a pool disabled: no new block, auto-assignment or specific assignment in it
    /// from now on (first step of removal).
    pub fn disable_pool(&self, cidr: IpNetwork) -> Result<()> {
        let key = Key::Pool(cidr);
        for _ in 0..self.options.max_retries {
            let (mut pool, version) = self.configured_pool(cidr)?;
            if pool.disabled {
                return Ok(());
            }
            pool.disabled = true;
            if let CasOutcome::Written(_) =
                self.store
                    .compare_and_swap(&key, Value::Pool(pool), version)?
            {
                return Ok(());
            }
        }
        Err(self.retries_exhausted("disable pool", &key))
    }

    /// Releases the affinity of every block inside `cidr` (empty blocks are deleted,
    /// others become non-affine, index entries are removed); returns how many index
    /// entries were processed. Does not release any address.
    pub fn release_pool_affinities(&self, cidr: IpNetwork) -> Result<usize> {
        let family = IpFamily::of_network(&cidr);
        let mut last_error = None;
        for _ in 0..self.options.pool_release_passes.max(1) {
            let entries: Vec<(HostName, IpNetwork)> = self
                .store
                .list(&Prefix::AllAffinities(family))?
                .into_iter()
                .filter_map(|(k, _)| match k {
                    Key::Affinity { host, block } if network_contains(&cidr, &block) => {
                        Some((host, block))
                    }
                    _ => None,
                })
                .collect();
            let mut failed = None;
            let count = entries.len();
            for (host, block) in entries {
                match self.release_block_affinity_named(&host, block) {
                    Ok(_) => {}
                    Err(e @ IpamError::RetriesExhausted { .. }) => failed = Some(e),
                    Err(e) => return Err(e),
                }
            }
            match failed {
                None => return Ok(count),
                Some(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| self.retries_exhausted("release pool affinities", &Key::Pool(cidr))))
    }

    /// Deletes a pool's key (its blocks and addresses are left alone).
    pub fn delete_pool(&self, cidr: IpNetwork) -> Result<()> {
        let key = Key::Pool(cidr);
        for _ in 0..self.options.max_retries {
            let (_, version) = self.configured_pool(cidr)?;
            if let CasOutcome::Written(_) = self.store.compare_and_delete(&key, version)? {
                return Ok(());
            }
        }
        Err(self.retries_exhausted("delete pool", &key))
    }

    /// calicoctl's `pool remove` without the sleep: disable, release affinities, delete.
    ///
    /// Auto-assignment skips disabled pools immediately, but a call that listed the pools
    /// just before the disable may still claim a block in it; callers that can should wait
    /// a moment between [`Ipam::disable_pool`] and the other two steps (calicoctl sleeps
    /// 3 s). Addresses still allocated in the pool stay allocated (release them, or find
    /// them with [`Ipam::check`]); their blocks are deleted when they empty.
    pub fn remove_pool(&self, cidr: IpNetwork) -> Result<usize> {
        self.disable_pool(cidr)?;
        let released = self.release_pool_affinities(cidr)?;
        self.delete_pool(cidr)?;
        Ok(released)
    }

    // ----- affinities -------------------------------------------------------------------

    /// Makes `block` non-affine to `host`: an empty block is deleted, a non-empty one kept
    /// without affinity; the index entry is removed. A stale index entry (block missing or
    /// owned by someone else) is just removed.
    pub fn release_block_affinity(&self, host: &str, block: IpNetwork) -> Result<AffinityRelease> {
        self.release_block_affinity_named(&HostName::new(host)?, block)
    }

    fn release_block_affinity_named(
        &self,
        host: &HostName,
        cidr: IpNetwork,
    ) -> Result<AffinityRelease> {
        let index = Key::Affinity {
            host: host.clone(),
            block: cidr,
        };
        let key = Key::Block(cidr);
        for _ in 0..self.options.max_retries {
            let (block, version) = match self.read_block(cidr)? {
                Some((b, v)) if b.affinity() == Some(host) => (b, v),
                _ => {
                    self.store.delete(&index)?;
                    self.forget_affinity(host, cidr);
                    return Ok(AffinityRelease::Stale);
                }
            };
            let (outcome, result) = if block.is_empty() {
                (
                    self.store.compare_and_delete(&key, version)?,
                    AffinityRelease::Deleted,
                )
            } else {
                let mut block = block;
                block.clear_affinity();
                (
                    self.store
                        .compare_and_swap(&key, Value::Block(block), version)?,
                    AffinityRelease::Released,
                )
            };
            if let CasOutcome::Written(_) = outcome {
                if result == AffinityRelease::Deleted {
                    self.note_block_exists(cidr, false);
                }
                self.store.delete(&index)?;
                self.forget_affinity(host, cidr);
                return Ok(result);
            }
        }
        Err(self.retries_exhausted("release block affinity", &key))
    }

    /// Releases every block affinity of `host` (both families); returns how many index
    /// entries were processed.
    pub fn release_host_affinities(&self, host: &str) -> Result<usize> {
        let name = HostName::new(host)?;
        let mut count = 0;
        for family in IpFamily::ALL {
            for block in self.list_host_blocks(&name, family)? {
                self.release_block_affinity_named(&name, block)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Forgets a host (calicoctl `node remove`): releases its affinities and drops this
    /// client's caches for it. Its addresses are not released: release them first.
    pub fn remove_host(&self, host: &str) -> Result<usize> {
        let count = self.release_host_affinities(host)?;
        self.hosts.write().remove(host);
        self.search.lock().retain(|(h, _), _| h.as_str() != host);
        Ok(count)
    }

    /// Claims every block of `cidr` (at least one block, at most 65536 blocks, inside a
    /// usable pool) for `host`, in ascending order, stopping at the first block owned by
    /// someone else. Used to pre-assign blocks when automatic block allocation is off.
    pub fn claim_affinity(&self, cidr: IpNetwork, host: &str) -> Result<AffinityClaim> {
        let name = HostName::new(host)?;
        let blocks = self.blocks_of(cidr)?;
        let family = IpFamily::of_network(&cidr);
        let inside = self
            .list_pools(family)?
            .into_iter()
            .any(|(p, _)| p.is_usable() && network_contains(&p.cidr, &cidr));
        if !inside {
            return Err(IpamError::PoolNotFound { cidr });
        }
        let strict = self.config()?.strict_affinity;
        let mut result = AffinityClaim::default();
        let mut iter = blocks.into_iter();
        for block in iter.by_ref() {
            match self.claim_block(&name, block, strict)? {
                Claim::Claimed => result.claimed.push(block),
                Claim::Taken => {
                    result.unclaimed.push(block);
                    break;
                }
            }
        }
        result.unclaimed.extend(iter);
        if let Ok(hc) = self.host_cache(host) {
            if let Some(slot) = hc.families.get(family_index(family)) {
                let mut cache = slot.lock();
                for b in &result.claimed {
                    cache.insert(*b, None);
                }
            }
        }
        Ok(result)
    }

    fn blocks_of(&self, cidr: IpNetwork) -> Result<Vec<IpNetwork>> {
        let network = normalized(&cidr)?;
        if network != cidr {
            return Err(IpamError::HostBitsSet {
                given: cidr,
                network,
            });
        }
        let family = IpFamily::of_network(&cidr);
        let prefix = self.options.block_prefix(family);
        if cidr.prefix() > prefix {
            return Err(IpamError::InvalidBlockSize {
                family,
                prefix: cidr.prefix(),
                reason: "the range must hold at least one whole block",
            });
        }
        let exp = u32::from(prefix - cidr.prefix());
        if exp > 16 {
            return Err(IpamError::InvalidBlockSize {
                family,
                prefix: cidr.prefix(),
                reason: "at most 65536 blocks per call",
            });
        }
        let host_bits = u32::from(family.bits() - prefix);
        let base = crate::net::network_base(&cidr);
        (0..(1u128 << exp))
            .map(|i| make_network(family, base + (i << host_bits), prefix))
            .collect()
    }

    // ----- configuration ----------------------------------------------------------------

    /// The global IPAM configuration (defaults when unset).
    pub fn config(&self) -> Result<IpamConfig> {
        match self.store.get(&Key::Config)? {
            None => Ok(IpamConfig::default()),
            Some(v) => match v.value {
                Value::Config(c) => Ok(c),
                other => Err(IpamError::Corrupt {
                    key: Key::Config.path(),
                    reason: format!("expected the IPAM config, found {}", other.to_json()),
                }),
            },
        }
    }

    /// Changes the global configuration. Writing the current value is a no-op; any change
    /// while blocks exist is refused ([`IpamError::ConfigLocked`]), because existing
    /// blocks carry the old strictness.
    pub fn set_config(&self, config: IpamConfig) -> Result<()> {
        config.validate()?;
        for _ in 0..self.options.max_retries {
            let current = self.store.get(&Key::Config)?;
            let current_value = match &current {
                Some(v) => match &v.value {
                    Value::Config(c) => *c,
                    other => {
                        return Err(IpamError::Corrupt {
                            key: Key::Config.path(),
                            reason: format!("expected the IPAM config, found {}", other.to_json()),
                        })
                    }
                },
                None => IpamConfig::default(),
            };
            if current_value == config {
                return Ok(());
            }
            let blocks: usize = IpFamily::ALL
                .iter()
                .map(|f| self.store.list(&Prefix::Blocks(*f)).map(|l| l.len()))
                .sum::<Result<usize>>()?;
            if blocks > 0 {
                return Err(IpamError::ConfigLocked { blocks });
            }
            let outcome = match current {
                Some(v) => {
                    self.store
                        .compare_and_swap(&Key::Config, Value::Config(config), v.version)?
                }
                None => self.store.create(&Key::Config, Value::Config(config))?,
            };
            if let CasOutcome::Written(_) = outcome {
                return Ok(());
            }
        }
        Err(self.retries_exhausted("set config", &Key::Config))
    }

    // ----- consistency check ------------------------------------------------------------

    /// Reads every block, handle, affinity entry and pool and reports leaks and
    /// inconsistencies; see [`CheckReport`]. `live_handles` are the handles of workloads
    /// that exist (e.g. the container ids the orchestrator knows).
    pub fn check<H: Borrow<str> + Hash + Eq>(
        &self,
        live_handles: &HashSet<H>,
    ) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let mut actual: BTreeMap<(HandleId, IpNetwork), u64> = BTreeMap::new();
        let mut owners: BTreeSet<(HostName, IpNetwork)> = BTreeSet::new();
        let mut indexed: BTreeSet<(HostName, IpNetwork)> = BTreeSet::new();
        let mut existing: HashMap<IpNetwork, Option<HostName>> = HashMap::new();
        for family in IpFamily::ALL {
            let pools = self.pools(family)?;
            for block in self.blocks(family)? {
                report.blocks += 1;
                let cidr = block.cidr();
                if !pools.iter().any(|p| network_contains(&p.cidr, &cidr)) {
                    report.blocks_outside_pools.push(cidr);
                }
                if let Some(owner) = block.affinity() {
                    owners.insert((owner.clone(), cidr));
                }
                existing.insert(cidr, block.affinity().cloned());
                for (addr, attr) in block.allocations() {
                    report.allocated += 1;
                    let allocation = Allocation {
                        addr,
                        block: cidr,
                        handle: attr.handle.clone(),
                        secondary: attr.secondary.clone(),
                    };
                    match &attr.handle {
                        None => report.without_handle.push(allocation),
                        Some(h) => {
                            *actual.entry((h.clone(), cidr)).or_insert(0) += 1;
                            if !live_handles.contains(h.as_str()) {
                                report.leaked.push(allocation);
                            }
                        }
                    }
                }
            }
            for (key, _) in self.store.list(&Prefix::AllAffinities(family))? {
                if let Key::Affinity { host, block } = key {
                    let matches = existing
                        .get(&block)
                        .is_some_and(|o| o.as_ref() == Some(&host));
                    if !matches {
                        report.stale_affinities.push((host.clone(), block));
                    }
                    indexed.insert((host, block));
                }
            }
        }
        report.unindexed_affinities = owners.difference(&indexed).cloned().collect();
        let mut recorded: BTreeMap<(HandleId, IpNetwork), u64> = BTreeMap::new();
        for (key, v) in self.store.list(&Prefix::Handles)? {
            match v.value {
                Value::Handle(h) => {
                    for (block, n) in h.blocks() {
                        recorded.insert((h.id().clone(), block), n);
                    }
                }
                other => {
                    return Err(IpamError::Corrupt {
                        key: key.path(),
                        reason: format!("expected a handle, found {}", other.to_json()),
                    })
                }
            }
        }
        let keys: BTreeSet<&(HandleId, IpNetwork)> = actual.keys().chain(recorded.keys()).collect();
        for k in keys {
            let a = actual.get(k).copied().unwrap_or(0);
            let r = recorded.get(k).copied().unwrap_or(0);
            if a != r {
                report.handle_mismatches.push(HandleMismatch {
                    handle: k.0.clone(),
                    block: k.1,
                    recorded: r,
                    actual: a,
                });
            }
        }
        Ok(report)
    }
}
