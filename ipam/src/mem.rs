//! [`MemStore`]: the in-memory [`BlockStore`], thread-safe and shareable, with a hook to
//! inject conflicts and failures.
//!
//! Values are kept typed (no JSON), per kind, in maps sharded by key hash so that hosts
//! allocating in different blocks rarely meet on a lock. Versions come from one global
//! counter, like etcd's index: every successful write takes the next number, so a key's
//! version strictly increases and a re-created key never reuses an old version.
//!
//! # Fault injection
//!
//! [`MemStore::set_write_hook`] installs a function consulted before every write; it may
//! let the write proceed, turn a conditional write into a [`CasOutcome::Conflict`] (as if
//! another client had written first), or fail it with [`IpamError::Store`] (as if etcd were
//! unreachable). [`MemStore::inject_random_conflicts`] is a seeded shortcut for the common
//! case. Unconditional writes (`put`, `delete`) cannot conflict; only a failure applies.
//!
//! Counters ([`MemStore::stats`]) let tests check *how* the allocator used the store (for
//! example, that finding a free block does not read every used block), without timing.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ipnetwork::IpNetwork;
use parking_lot::{Mutex, RwLock};

use crate::block::Block;
use crate::error::{IpamError, Result};
use crate::handle::Handle;
use crate::net::{HandleId, HostName, IpFamily};
use crate::pool::{IpamConfig, Pool};
use crate::store::{
    update_block_with_cas, update_handle_with_cas, BlockStore, CasOutcome, Change, Key, Prefix,
    UpdateOutcome, Value, Version, Versioned,
};

/// The kind of write a [`MemStore`] write hook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// [`BlockStore::create`].
    Create,
    /// [`BlockStore::compare_and_swap`].
    CompareAndSwap,
    /// [`BlockStore::compare_and_delete`].
    CompareAndDelete,
    /// [`BlockStore::put`].
    Put,
    /// [`BlockStore::delete`].
    Delete,
}

/// A write hook's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Perform the write normally.
    Proceed,
    /// Report a conflict without writing (conditional writes only; others proceed).
    Conflict,
    /// Fail the call with [`IpamError::Store`] without writing.
    Fail,
}

type WriteHook = Arc<dyn Fn(&Key, WriteKind) -> Injected + Send + Sync>;

/// How a [`MemStore`] has been used since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// `get` calls.
    pub gets: u64,
    /// `list` calls.
    pub lists: u64,
    /// Write calls (any kind, including failed and conflicting ones).
    pub writes: u64,
    /// Conditional writes that reported a conflict (real or injected).
    pub conflicts: u64,
    /// Conflicts that the hook injected.
    pub injected_conflicts: u64,
    /// Failures that the hook injected.
    pub injected_failures: u64,
}

/// A small, fast, non-cryptographic hasher for in-memory keys (FxHash's mixing step).
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

#[derive(Default, Clone, Copy)]
pub(crate) struct FastBuild;

impl BuildHasher for FastBuild {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

const SHARDS: usize = 16;

/// A block CIDR as a map key, hashed in one step.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NetKey(IpNetwork);

impl Hash for NetKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let base = crate::net::network_base(&self.0);
        state.write_u64(
            (base as u64)
                ^ ((base >> 64) as u64).rotate_left(29)
                ^ (u64::from(self.0.prefix()) << 56),
        );
    }
}

/// What a [`Table`] shard needs from its map.
trait ShardMap<K, V>: Default {
    fn get(&self, key: &K) -> Option<&Versioned<V>>;
    fn get_mut(&mut self, key: &K) -> Option<&mut Versioned<V>>;
    fn insert(&mut self, key: K, value: Versioned<V>);
    fn remove(&mut self, key: &K) -> Option<Versioned<V>>;
    fn len(&self) -> usize;
    fn for_each(&self, f: &mut dyn FnMut(&K, &Versioned<V>));
    fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }
}

type FastMap<K, V> = HashMap<K, Versioned<V>, FastBuild>;

impl<K: Hash + Eq, V> ShardMap<K, V> for FastMap<K, V> {
    fn get(&self, key: &K) -> Option<&Versioned<V>> {
        HashMap::get(self, key)
    }
    fn get_mut(&mut self, key: &K) -> Option<&mut Versioned<V>> {
        HashMap::get_mut(self, key)
    }
    fn insert(&mut self, key: K, value: Versioned<V>) {
        HashMap::insert(self, key, value);
    }
    fn remove(&mut self, key: &K) -> Option<Versioned<V>> {
        HashMap::remove(self, key)
    }
    fn len(&self) -> usize {
        HashMap::len(self)
    }
    fn for_each(&self, f: &mut dyn FnMut(&K, &Versioned<V>)) {
        for (k, v) in self {
            f(k, v);
        }
    }
}

/// Slots per [`BlockMap`] chunk.
const CHUNK: usize = 64;

type Slot = Option<Versioned<Block>>;

/// Blocks keyed by their own CIDR, compactly: the blocks sit in a slab grown in chunks of
/// [`CHUNK`] slots (no doubling, so at most one partly used chunk), and the hash index
/// holds only 4-byte slot numbers (1 control byte each besides). A hash map of
/// `(key, version, block)` entries would cost twice the entry size per block right after
/// it grows; this costs about `size_of::<Slot>()` plus 10 bytes.
#[derive(Default)]
struct BlockMap {
    index: hashbrown::HashTable<u32>,
    chunks: Vec<Box<[Slot]>>,
    /// Slots freed by removals, reused first.
    free: Vec<u32>,
    /// Slots ever handed out (the slab's high-water mark).
    used: u32,
}

fn slot_in(chunks: &[Box<[Slot]>], i: u32) -> Option<&Versioned<Block>> {
    let i = i as usize;
    chunks.get(i / CHUNK)?.get(i % CHUNK)?.as_ref()
}

fn hash_net(key: &NetKey) -> u64 {
    FastBuild.hash_one(key)
}

impl BlockMap {
    fn find(&self, key: &NetKey) -> Option<u32> {
        let chunks = &self.chunks;
        self.index
            .find(hash_net(key), |&i| {
                slot_in(chunks, i).is_some_and(|v| v.value.cidr() == key.0)
            })
            .copied()
    }

    fn slot_mut(&mut self, i: u32) -> Option<&mut Slot> {
        let i = i as usize;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }
}

impl ShardMap<NetKey, Block> for BlockMap {
    fn get(&self, key: &NetKey) -> Option<&Versioned<Block>> {
        slot_in(&self.chunks, self.find(key)?)
    }

    fn get_mut(&mut self, key: &NetKey) -> Option<&mut Versioned<Block>> {
        let i = self.find(key)?;
        self.slot_mut(i)?.as_mut()
    }

    /// `key` must be `value`'s CIDR (the store checks it before every write).
    fn insert(&mut self, key: NetKey, value: Versioned<Block>) {
        if let Some(slot) = self.get_mut(&key) {
            *slot = value;
            return;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.used as usize >= self.chunks.len() * CHUNK {
                    self.chunks.push(
                        (0..CHUNK)
                            .map(|_| None)
                            .collect::<Vec<Slot>>()
                            .into_boxed_slice(),
                    );
                }
                // Slot numbers fit in u32: 4 billion blocks would not fit in memory anyway.
                self.used += 1;
                self.used - 1
            }
        };
        if let Some(slot) = self.slot_mut(i) {
            *slot = Some(value);
        }
        let chunks = &self.chunks;
        self.index.insert_unique(hash_net(&key), i, |&j| {
            slot_in(chunks, j).map_or(0, |v| hash_net(&NetKey(v.value.cidr())))
        });
    }

    fn remove(&mut self, key: &NetKey) -> Option<Versioned<Block>> {
        let chunks = &self.chunks;
        let entry = self
            .index
            .find_entry(hash_net(key), |&i| {
                slot_in(chunks, i).is_some_and(|v| v.value.cidr() == key.0)
            })
            .ok()?;
        let (i, _) = entry.remove();
        let taken = self.slot_mut(i)?.take();
        self.free.push(i);
        taken
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn for_each(&self, f: &mut dyn FnMut(&NetKey, &Versioned<Block>)) {
        for v in self.chunks.iter().flat_map(|c| c.iter()).flatten() {
            f(&NetKey(v.value.cidr()), v);
        }
    }
}

/// One shard of a [`Table`]: its map, and the reads and writes that the in-place update
/// paths count under the shard lock (no shared atomic counter on the hot path).
struct ShardData<M> {
    map: M,
    gets: u64,
    writes: u64,
}

type Shard<M> = Mutex<ShardData<M>>;

/// One kind of value: `SHARDS` maps (or one), keyed by `K`.
struct Table<K, V, M = FastMap<K, V>> {
    shards: Box<[Shard<M>]>,
    _kind: std::marker::PhantomData<fn(K) -> V>,
}

impl<K: Hash + Eq + Clone, V: Clone, M: ShardMap<K, V>> Table<K, V, M> {
    fn new(shards: usize) -> Self {
        Table {
            // A power of two, so that the shard index is a mask.
            shards: (0..shards.max(1).next_power_of_two())
                .map(|_| {
                    Mutex::new(ShardData {
                        map: M::default(),
                        gets: 0,
                        writes: 0,
                    })
                })
                .collect(),
            _kind: std::marker::PhantomData,
        }
    }

    fn shard(&self, key: &K) -> &Shard<M> {
        let hash = FastBuild.hash_one(key);
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        // `index < len` by construction; fall back to the first shard rather than panic.
        self.shards.get(index).unwrap_or(&self.shards[0])
    }

    fn get(&self, key: &K) -> Option<Versioned<V>> {
        self.shard(key).lock().map.get(key).cloned()
    }

    fn collect(&self, mut keep: impl FnMut(&K) -> bool) -> Vec<(K, Versioned<V>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            shard.lock().map.for_each(&mut |k, v| {
                if keep(k) {
                    out.push((k.clone(), v.clone()));
                }
            });
        }
        out
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// (gets, writes) counted under the shard locks.
    fn counted(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(g, w), s| {
            let s = s.lock();
            (g + s.gets, w + s.writes)
        })
    }

    fn create(&self, key: &K, value: V, next: &AtomicU64) -> CasOutcome {
        let map = &mut self.shard(key).lock().map;
        if map.contains_key(key) {
            return CasOutcome::Conflict;
        }
        let version = next.fetch_add(1, Ordering::Relaxed);
        map.insert(key.clone(), Versioned { value, version });
        CasOutcome::Written(version)
    }

    fn compare_and_swap(&self, key: &K, value: V, prev: Version, next: &AtomicU64) -> CasOutcome {
        let map = &mut self.shard(key).lock().map;
        match map.get_mut(key) {
            Some(slot) if slot.version == prev => {
                let version = next.fetch_add(1, Ordering::Relaxed);
                *slot = Versioned { value, version };
                CasOutcome::Written(version)
            }
            _ => CasOutcome::Conflict,
        }
    }

    fn compare_and_delete(&self, key: &K, prev: Version, next: &AtomicU64) -> CasOutcome {
        let map = &mut self.shard(key).lock().map;
        match map.get(key) {
            Some(slot) if slot.version == prev => {
                map.remove(key);
                CasOutcome::Written(next.fetch_add(1, Ordering::Relaxed))
            }
            _ => CasOutcome::Conflict,
        }
    }

    fn put(&self, key: &K, value: V, next: &AtomicU64) -> Version {
        let version = next.fetch_add(1, Ordering::Relaxed);
        self.shard(key)
            .lock()
            .map
            .insert(key.clone(), Versioned { value, version });
        version
    }

    fn delete(&self, key: &K) -> bool {
        self.shard(key).lock().map.remove(key).is_some()
    }
}

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    lists: AtomicU64,
    writes: AtomicU64,
    conflicts: AtomicU64,
    injected_conflicts: AtomicU64,
    injected_failures: AtomicU64,
}

/// The in-memory [`BlockStore`]; see the [module docs](self).
pub struct MemStore {
    next_version: AtomicU64,
    blocks: Table<NetKey, Block, BlockMap>,
    handles: Table<HandleId, Handle>,
    /// Affinity index entries per host.
    affinities: Mutex<BTreeMap<HostName, HostAffinities>>,
    pools: RwLock<PoolMap>,
    /// Bumped (under the pools lock, after the change) by every pool write; see
    /// [`BlockStore::pools_generation`].
    pools_generation: AtomicU64,
    config: Mutex<Option<Versioned<IpamConfig>>>,
    has_hook: AtomicBool,
    hook: RwLock<Option<WriteHook>>,
    counters: Counters,
    /// Apply [`BlockStore::update_block`] in place under the shard lock (default) rather
    /// than as a get and a compare-and-swap.
    in_place: AtomicBool,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("blocks", &self.blocks.len())
            .field("handles", &self.handles.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore {
            next_version: AtomicU64::new(1),
            blocks: Table::new(SHARDS),
            handles: Table::new(SHARDS),
            affinities: Mutex::new(BTreeMap::new()),
            pools: RwLock::new(BTreeMap::new()),
            pools_generation: AtomicU64::new(0),
            config: Mutex::new(None),
            has_hook: AtomicBool::new(false),
            hook: RwLock::new(None),
            counters: Counters::default(),
            in_place: AtomicBool::new(true),
        }
    }

    /// Chooses how [`BlockStore::update_block`] runs: in place under the shard lock (the
    /// default: no copy, cannot lose a race), or as a get and a compare-and-swap like any
    /// remote store (copies the block, and concurrent writers really conflict: what tests
    /// of the retry paths want).
    pub fn set_in_place_updates(&self, in_place: bool) {
        self.in_place.store(in_place, Ordering::Relaxed);
    }

    /// Installs a hook consulted before every write (replacing any previous one).
    pub fn set_write_hook(
        &self,
        hook: impl Fn(&Key, WriteKind) -> Injected + Send + Sync + 'static,
    ) {
        *self.hook.write() = Some(Arc::new(hook));
        self.has_hook.store(true, Ordering::Release);
    }

    /// Removes the write hook.
    pub fn clear_write_hook(&self) {
        self.has_hook.store(false, Ordering::Release);
        *self.hook.write() = None;
    }

    /// Makes each conditional write conflict with probability `per_million / 1e6`,
    /// deterministically from `seed` (the sequence of decisions is fixed; which write
    /// gets which decision depends on thread interleaving).
    pub fn inject_random_conflicts(&self, seed: u64, per_million: u32) {
        let state = Mutex::new(seed | 1);
        self.set_write_hook(move |_key, kind| {
            if matches!(kind, WriteKind::Put | WriteKind::Delete) {
                return Injected::Proceed;
            }
            let mut s = state.lock();
            // xorshift64*
            *s ^= *s >> 12;
            *s ^= *s << 25;
            *s ^= *s >> 27;
            let r = s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
            if r % 1_000_000 < u64::from(per_million) {
                Injected::Conflict
            } else {
                Injected::Proceed
            }
        });
    }

    /// Usage counters.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let (block_gets, block_writes) = self.blocks.counted();
        let (handle_gets, handle_writes) = self.handles.counted();
        StoreStats {
            gets: c.gets.load(Ordering::Relaxed) + block_gets + handle_gets,
            lists: c.lists.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed) + block_writes + handle_writes,
            conflicts: c.conflicts.load(Ordering::Relaxed),
            injected_conflicts: c.injected_conflicts.load(Ordering::Relaxed),
            injected_failures: c.injected_failures.load(Ordering::Relaxed),
        }
    }

    /// Every key and value, sorted by key (for tests and debugging).
    pub fn dump(&self) -> Vec<(Key, Versioned<Value>)> {
        let mut out: Vec<(Key, Versioned<Value>)> = Vec::new();
        for (k, v) in self.blocks.collect(|_| true) {
            out.push((
                Key::Block(k.0),
                Versioned {
                    value: Value::Block(v.value),
                    version: v.version,
                },
            ));
        }
        for (k, v) in self.handles.collect(|_| true) {
            out.push((
                Key::Handle(k),
                Versioned {
                    value: Value::Handle(v.value),
                    version: v.version,
                },
            ));
        }
        for (host, block, version) in self
            .affinities
            .lock()
            .iter()
            .flat_map(|(h, m)| m.iter().map(move |(b, v)| (h, b, v)))
        {
            out.push((
                Key::Affinity {
                    host: host.clone(),
                    block,
                },
                Versioned {
                    value: Value::Affinity,
                    version,
                },
            ));
        }
        for (cidr, v) in self.pools.read().iter() {
            out.push((
                Key::Pool(*cidr),
                Versioned {
                    value: Value::Pool(v.value.clone()),
                    version: v.version,
                },
            ));
        }
        if let Some(v) = self.config.lock().as_ref() {
            out.push((
                Key::Config,
                Versioned {
                    value: Value::Config(v.value),
                    version: v.version,
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Consults the hook; `Err` for an injected failure, `Ok(true)` for an injected
    /// conflict.
    fn before_write(&self, key: &Key, kind: WriteKind) -> Result<bool> {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        if !self.has_hook.load(Ordering::Acquire) {
            return Ok(false);
        }
        let hook = self.hook.read().clone();
        let Some(hook) = hook else { return Ok(false) };
        match hook(key, kind) {
            Injected::Proceed => Ok(false),
            Injected::Conflict => Ok(!matches!(kind, WriteKind::Put | WriteKind::Delete)),
            Injected::Fail => {
                self.counters
                    .injected_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(IpamError::Store {
                    key: key.path(),
                    message: "injected failure".to_string(),
                })
            }
        }
    }

    fn conflict(&self, injected: bool) -> CasOutcome {
        self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        if injected {
            self.counters
                .injected_conflicts
                .fetch_add(1, Ordering::Relaxed);
        }
        CasOutcome::Conflict
    }

    fn count(&self, outcome: CasOutcome) -> CasOutcome {
        if outcome == CasOutcome::Conflict {
            self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    fn next(&self) -> Version {
        self.next_version.fetch_add(1, Ordering::Relaxed)
    }

    /// The pools map for writing; the generation moves when the guard is dropped (after
    /// the change, before the lock is released).
    fn pools_write(&self) -> PoolsWrite<'_> {
        PoolsWrite {
            map: self.pools.write(),
            generation: &self.pools_generation,
        }
    }
}

type PoolMap = BTreeMap<IpNetwork, Versioned<Pool>>;

/// Write access to [`MemStore`]'s pools that bumps the pools generation when dropped.
struct PoolsWrite<'a> {
    map: parking_lot::RwLockWriteGuard<'a, PoolMap>,
    generation: &'a AtomicU64,
}

impl Drop for PoolsWrite<'_> {
    fn drop(&mut self) {
        // Runs before `map` (the lock) is dropped.
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl std::ops::Deref for PoolsWrite<'_> {
    type Target = PoolMap;
    fn deref(&self) -> &PoolMap {
        &self.map
    }
}

impl std::ops::DerefMut for PoolsWrite<'_> {
    fn deref_mut(&mut self) -> &mut PoolMap {
        &mut self.map
    }
}

/// One host's affinity index entries (block CIDR to version), IPv4 ones keyed compactly
/// (`base << 8 | prefix` in a `u64`: 16 bytes per entry instead of 32).
#[derive(Default)]
struct HostAffinities {
    v4: BTreeMap<u64, Version>,
    v6: BTreeMap<IpNetwork, Version>,
}

fn v4_key(net: &ipnetwork::Ipv4Network) -> u64 {
    (u64::from(u32::from(net.network())) << 8) | u64::from(net.prefix())
}

fn v4_net(key: u64) -> Option<IpNetwork> {
    let base = std::net::Ipv4Addr::from((key >> 8) as u32);
    ipnetwork::Ipv4Network::new(base, (key & 0xff) as u8)
        .ok()
        .map(IpNetwork::V4)
}

impl HostAffinities {
    fn get(&self, block: &IpNetwork) -> Option<&Version> {
        match block {
            IpNetwork::V4(n) => self.v4.get(&v4_key(n)),
            IpNetwork::V6(_) => self.v6.get(block),
        }
    }

    fn get_mut(&mut self, block: &IpNetwork) -> Option<&mut Version> {
        match block {
            IpNetwork::V4(n) => self.v4.get_mut(&v4_key(n)),
            IpNetwork::V6(_) => self.v6.get_mut(block),
        }
    }

    fn contains_key(&self, block: &IpNetwork) -> bool {
        self.get(block).is_some()
    }

    fn insert(&mut self, block: IpNetwork, version: Version) {
        match block {
            IpNetwork::V4(n) => self.v4.insert(v4_key(&n), version),
            IpNetwork::V6(_) => self.v6.insert(block, version),
        };
    }

    fn remove(&mut self, block: &IpNetwork) -> Option<Version> {
        match block {
            IpNetwork::V4(n) => self.v4.remove(&v4_key(n)),
            IpNetwork::V6(_) => self.v6.remove(block),
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Every entry, IPv4 first (each family in ascending order).
    fn iter(&self) -> impl Iterator<Item = (IpNetwork, Version)> + '_ {
        self.v4
            .iter()
            .filter_map(|(k, v)| v4_net(*k).map(|n| (n, *v)))
            .chain(self.v6.iter().map(|(n, v)| (*n, *v)))
    }
}

/// Removes one affinity entry (and the host's map when it empties); returns whether it
/// existed.
fn remove_affinity(
    map: &mut BTreeMap<HostName, HostAffinities>,
    host: &HostName,
    block: &IpNetwork,
) -> bool {
    let Some(entries) = map.get_mut(host) else {
        return false;
    };
    let existed = entries.remove(block).is_some();
    if entries.is_empty() {
        map.remove(host);
    }
    existed
}

fn mismatch(key: &Key, value: &Value) -> IpamError {
    IpamError::Store {
        key: key.path(),
        message: format!(
            "refusing to store a value that does not belong under this key: {}",
            value.to_json()
        ),
    }
}

impl BlockStore for MemStore {
    fn get(&self, key: &Key) -> Result<Option<Versioned<Value>>> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        Ok(match key {
            Key::Block(cidr) => self.blocks.get(&NetKey(*cidr)).map(|v| Versioned {
                value: Value::Block(v.value),
                version: v.version,
            }),
            Key::Handle(id) => self.handles.get(id).map(|v| Versioned {
                value: Value::Handle(v.value),
                version: v.version,
            }),
            Key::Affinity { host, block } => self
                .affinities
                .lock()
                .get(host)
                .and_then(|m| m.get(block))
                .map(|&version| Versioned {
                    value: Value::Affinity,
                    version,
                }),
            Key::Pool(cidr) => self.pools.read().get(cidr).map(|v| Versioned {
                value: Value::Pool(v.value.clone()),
                version: v.version,
            }),
            Key::Config => self.config.lock().as_ref().map(|v| Versioned {
                value: Value::Config(v.value),
                version: v.version,
            }),
        })
    }

    fn list(&self, prefix: &Prefix) -> Result<Vec<(Key, Versioned<Value>)>> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        let affinity = |host: &HostName, block: &IpNetwork, version: Version| {
            (
                Key::Affinity {
                    host: host.clone(),
                    block: *block,
                },
                Versioned {
                    value: Value::Affinity,
                    version,
                },
            )
        };
        Ok(match prefix {
            Prefix::Blocks(family) => self
                .blocks
                .collect(|cidr| IpFamily::of_network(&cidr.0) == *family)
                .into_iter()
                .map(|(k, v)| {
                    (
                        Key::Block(k.0),
                        Versioned {
                            value: Value::Block(v.value),
                            version: v.version,
                        },
                    )
                })
                .collect(),
            Prefix::Handles => self
                .handles
                .collect(|_| true)
                .into_iter()
                .map(|(k, v)| {
                    (
                        Key::Handle(k),
                        Versioned {
                            value: Value::Handle(v.value),
                            version: v.version,
                        },
                    )
                })
                .collect(),
            Prefix::HostAffinities { host, family } => self
                .affinities
                .lock()
                .get(host)
                .map(|m| {
                    m.iter()
                        .filter(|(b, _)| IpFamily::of_network(b) == *family)
                        .map(|(b, v)| affinity(host, &b, v))
                        .collect()
                })
                .unwrap_or_default(),
            Prefix::AllAffinities(family) => self
                .affinities
                .lock()
                .iter()
                .flat_map(|(h, m)| m.iter().map(move |(b, v)| (h, b, v)))
                .filter(|(_, b, _)| IpFamily::of_network(b) == *family)
                .map(|(h, b, v)| affinity(h, &b, v))
                .collect(),
            Prefix::Pools(family) => self
                .pools
                .read()
                .iter()
                .filter(|(cidr, _)| IpFamily::of_network(cidr) == *family)
                .map(|(cidr, v)| {
                    (
                        Key::Pool(*cidr),
                        Versioned {
                            value: Value::Pool(v.value.clone()),
                            version: v.version,
                        },
                    )
                })
                .collect(),
        })
    }

    fn create(&self, key: &Key, value: Value) -> Result<CasOutcome> {
        if self.before_write(key, WriteKind::Create)? {
            return Ok(self.conflict(true));
        }
        let next = &self.next_version;
        Ok(self.count(match (key, value) {
            (Key::Block(cidr), Value::Block(b)) if b.cidr() == *cidr => {
                self.blocks.create(&NetKey(*cidr), b, next)
            }
            (Key::Handle(id), Value::Handle(h)) if h.id() == id => self.handles.create(id, h, next),
            (Key::Affinity { host, block }, Value::Affinity) => {
                let mut map = self.affinities.lock();
                let entries = map.entry(host.clone()).or_default();
                if entries.contains_key(block) {
                    CasOutcome::Conflict
                } else {
                    let v = self.next();
                    entries.insert(*block, v);
                    CasOutcome::Written(v)
                }
            }
            (Key::Pool(cidr), Value::Pool(p)) if p.cidr == *cidr => {
                let mut map = self.pools_write();
                if map.contains_key(cidr) {
                    CasOutcome::Conflict
                } else {
                    let version = self.next();
                    map.insert(*cidr, Versioned { value: p, version });
                    CasOutcome::Written(version)
                }
            }
            (Key::Config, Value::Config(c)) => {
                let mut slot = self.config.lock();
                if slot.is_some() {
                    CasOutcome::Conflict
                } else {
                    let version = self.next();
                    *slot = Some(Versioned { value: c, version });
                    CasOutcome::Written(version)
                }
            }
            (key, value) => return Err(mismatch(key, &value)),
        }))
    }

    fn compare_and_swap(&self, key: &Key, value: Value, prev: Version) -> Result<CasOutcome> {
        if self.before_write(key, WriteKind::CompareAndSwap)? {
            return Ok(self.conflict(true));
        }
        let next = &self.next_version;
        Ok(self.count(match (key, value) {
            (Key::Block(cidr), Value::Block(b)) if b.cidr() == *cidr => {
                self.blocks.compare_and_swap(&NetKey(*cidr), b, prev, next)
            }
            (Key::Handle(id), Value::Handle(h)) if h.id() == id => {
                self.handles.compare_and_swap(id, h, prev, next)
            }
            (Key::Affinity { host, block }, Value::Affinity) => {
                let mut map = self.affinities.lock();
                match map.get_mut(host).and_then(|m| m.get_mut(block)) {
                    Some(v) if *v == prev => {
                        *v = self.next();
                        CasOutcome::Written(*v)
                    }
                    _ => CasOutcome::Conflict,
                }
            }
            (Key::Pool(cidr), Value::Pool(p)) if p.cidr == *cidr => {
                let mut map = self.pools_write();
                match map.get_mut(cidr) {
                    Some(slot) if slot.version == prev => {
                        let version = self.next();
                        *slot = Versioned { value: p, version };
                        CasOutcome::Written(version)
                    }
                    _ => CasOutcome::Conflict,
                }
            }
            (Key::Config, Value::Config(c)) => {
                let mut slot = self.config.lock();
                match slot.as_mut() {
                    Some(s) if s.version == prev => {
                        let version = self.next();
                        *s = Versioned { value: c, version };
                        CasOutcome::Written(version)
                    }
                    _ => CasOutcome::Conflict,
                }
            }
            (key, value) => return Err(mismatch(key, &value)),
        }))
    }

    fn compare_and_delete(&self, key: &Key, prev: Version) -> Result<CasOutcome> {
        if self.before_write(key, WriteKind::CompareAndDelete)? {
            return Ok(self.conflict(true));
        }
        let next = &self.next_version;
        Ok(self.count(match key {
            Key::Block(cidr) => self.blocks.compare_and_delete(&NetKey(*cidr), prev, next),
            Key::Handle(id) => self.handles.compare_and_delete(id, prev, next),
            Key::Affinity { host, block } => {
                let mut map = self.affinities.lock();
                if map.get(host).and_then(|m| m.get(block)) == Some(&prev) {
                    remove_affinity(&mut map, host, block);
                    CasOutcome::Written(self.next())
                } else {
                    CasOutcome::Conflict
                }
            }
            Key::Pool(cidr) => {
                let mut map = self.pools_write();
                if map.get(cidr).map(|v| v.version) == Some(prev) {
                    map.remove(cidr);
                    CasOutcome::Written(self.next())
                } else {
                    CasOutcome::Conflict
                }
            }
            Key::Config => {
                let mut slot = self.config.lock();
                if slot.as_ref().map(|v| v.version) == Some(prev) {
                    *slot = None;
                    CasOutcome::Written(self.next())
                } else {
                    CasOutcome::Conflict
                }
            }
        }))
    }

    fn put(&self, key: &Key, value: Value) -> Result<Version> {
        self.before_write(key, WriteKind::Put)?;
        let next = &self.next_version;
        Ok(match (key, value) {
            (Key::Block(cidr), Value::Block(b)) if b.cidr() == *cidr => {
                self.blocks.put(&NetKey(*cidr), b, next)
            }
            (Key::Handle(id), Value::Handle(h)) if h.id() == id => self.handles.put(id, h, next),
            (Key::Affinity { host, block }, Value::Affinity) => {
                let v = self.next();
                self.affinities
                    .lock()
                    .entry(host.clone())
                    .or_default()
                    .insert(*block, v);
                v
            }
            (Key::Pool(cidr), Value::Pool(p)) if p.cidr == *cidr => {
                let version = self.next();
                self.pools_write()
                    .insert(*cidr, Versioned { value: p, version });
                version
            }
            (Key::Config, Value::Config(c)) => {
                let version = self.next();
                *self.config.lock() = Some(Versioned { value: c, version });
                version
            }
            (key, value) => return Err(mismatch(key, &value)),
        })
    }

    fn update_block(
        &self,
        cidr: IpNetwork,
        update: &mut dyn FnMut(&mut Block) -> Change,
    ) -> Result<UpdateOutcome> {
        if !self.in_place.load(Ordering::Relaxed) {
            return update_block_with_cas(self, cidr, update);
        }
        // One read and (as the hook sees it) one compare-and-swap, applied atomically.
        // Without a hook both are counted under the shard lock (no shared counter).
        let hooked = self.has_hook.load(Ordering::Acquire);
        if hooked {
            self.counters.gets.fetch_add(1, Ordering::Relaxed);
            if self.before_write(&Key::Block(cidr), WriteKind::CompareAndSwap)? {
                return Ok(self.conflict(true)).map(|_| UpdateOutcome::Conflict);
            }
        }
        let net = NetKey(cidr);
        let mut shard = self.blocks.shard(&net).lock();
        if !hooked {
            shard.gets += 1;
            shard.writes += 1;
        }
        let Some(slot) = shard.map.get_mut(&net) else {
            return Ok(UpdateOutcome::Missing);
        };
        Ok(match update(&mut slot.value) {
            Change::Keep => UpdateOutcome::Kept,
            Change::Write => {
                slot.version = self.next();
                UpdateOutcome::Written
            }
            Change::Delete => {
                shard.map.remove(&net);
                self.next();
                UpdateOutcome::Deleted
            }
        })
    }

    fn update_handle(
        &self,
        id: &HandleId,
        update: &mut dyn FnMut(&mut Option<Handle>) -> Change,
    ) -> Result<UpdateOutcome> {
        if !self.in_place.load(Ordering::Relaxed) {
            return update_handle_with_cas(self, id, update);
        }
        let hooked = self.has_hook.load(Ordering::Acquire);
        if hooked {
            self.counters.gets.fetch_add(1, Ordering::Relaxed);
            if self.before_write(&Key::Handle(id.clone()), WriteKind::CompareAndSwap)? {
                return Ok(self.conflict(true)).map(|_| UpdateOutcome::Conflict);
            }
        }
        let mut guard = self.handles.shard(id).lock();
        if !hooked {
            guard.gets += 1;
            guard.writes += 1;
        }
        let shard = &mut guard.map;
        let previous = shard.remove(id);
        let old_version = previous.as_ref().map(|v| v.version);
        let mut record = previous.map(|v| v.value);
        let change = update(&mut record);
        Ok(match (change, record, old_version) {
            (Change::Keep, Some(h), Some(version)) => {
                shard.insert(id.clone(), Versioned { value: h, version });
                UpdateOutcome::Kept
            }
            (Change::Keep, Some(_), None) | (Change::Keep | Change::Delete, None, None) => {
                UpdateOutcome::Kept
            }
            (Change::Delete, Some(_), None) => UpdateOutcome::Kept,
            (Change::Write, Some(h), _) if h.id() == id => {
                let version = self.next();
                shard.insert(id.clone(), Versioned { value: h, version });
                UpdateOutcome::Written
            }
            (Change::Write, Some(h), _) => {
                // A record of another id: keep its counts under this key's id (nothing is
                // lost) and report the misuse.
                let mut fixed = Handle::new(id.clone());
                for (block, n) in h.blocks() {
                    fixed.increment(block, n);
                }
                let version = self.next();
                shard.insert(
                    id.clone(),
                    Versioned {
                        value: fixed,
                        version,
                    },
                );
                return Err(IpamError::Store {
                    key: Key::Handle(id.clone()).path(),
                    message: format!(
                        "an update replaced the record with one of handle {}",
                        h.id()
                    ),
                });
            }
            (Change::Write | Change::Keep, None, Some(_)) | (Change::Delete, _, Some(_)) => {
                self.next();
                UpdateOutcome::Deleted
            }
            (Change::Write, None, None) => UpdateOutcome::Kept,
        })
    }

    fn pools_generation(&self) -> Option<u64> {
        Some(self.pools_generation.load(Ordering::Acquire))
    }

    fn delete(&self, key: &Key) -> Result<bool> {
        self.before_write(key, WriteKind::Delete)?;
        Ok(match key {
            Key::Block(cidr) => self.blocks.delete(&NetKey(*cidr)),
            Key::Handle(id) => self.handles.delete(id),
            Key::Affinity { host, block } => {
                remove_affinity(&mut self.affinities.lock(), host, block)
            }
            Key::Pool(cidr) => self.pools_write().remove(cidr).is_some(),
            Key::Config => self.config.lock().take().is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pool_write_moves_the_pools_generation() {
        let store = MemStore::new();
        let cidr: IpNetwork = "10.0.0.0/16".parse().unwrap();
        let key = Key::Pool(cidr);
        let mut last = store.pools_generation().unwrap();
        let mut moved = |what: &str| {
            let now = store.pools_generation().unwrap();
            assert!(now > last, "{what} did not move the generation");
            last = now;
        };
        let CasOutcome::Written(v1) = store.create(&key, Value::Pool(Pool::new(cidr))).unwrap()
        else {
            panic!("create failed")
        };
        moved("create");
        let mut disabled = Pool::new(cidr);
        disabled.disabled = true;
        let CasOutcome::Written(v2) = store
            .compare_and_swap(&key, Value::Pool(disabled.clone()), v1)
            .unwrap()
        else {
            panic!("cas failed")
        };
        moved("compare_and_swap");
        store.put(&key, Value::Pool(disabled)).unwrap();
        moved("put");
        assert_eq!(
            store.compare_and_delete(&key, v2).unwrap(),
            CasOutcome::Conflict
        );
        moved("a refused compare_and_delete (harmless: only invalidates caches)");
        store.delete(&key).unwrap();
        moved("delete");
        // Block writes leave it alone.
        let before = store.pools_generation();
        let created = store
            .create(
                &Key::Block("10.0.0.0/26".parse().unwrap()),
                Value::Block(block("10.0.0.0/26")),
            )
            .unwrap();
        assert!(matches!(created, CasOutcome::Written(_)));
        assert_eq!(store.pools_generation(), before);
    }

    fn block(s: &str) -> Block {
        Block::new(s.parse().unwrap(), None, false).unwrap()
    }

    #[test]
    fn create_cas_delete_follow_versions() {
        let store = MemStore::new();
        let key = Key::Block("10.0.0.0/26".parse().unwrap());
        let CasOutcome::Written(v1) = store
            .create(&key, Value::Block(block("10.0.0.0/26")))
            .unwrap()
        else {
            panic!("create failed")
        };
        assert_eq!(
            store
                .create(&key, Value::Block(block("10.0.0.0/26")))
                .unwrap(),
            CasOutcome::Conflict
        );
        let CasOutcome::Written(v2) = store
            .compare_and_swap(&key, Value::Block(block("10.0.0.0/26")), v1)
            .unwrap()
        else {
            panic!("cas failed")
        };
        assert!(v2 > v1);
        assert_eq!(
            store
                .compare_and_swap(&key, Value::Block(block("10.0.0.0/26")), v1)
                .unwrap(),
            CasOutcome::Conflict
        );
        assert_eq!(
            store.compare_and_delete(&key, v1).unwrap(),
            CasOutcome::Conflict
        );
        assert!(matches!(
            store.compare_and_delete(&key, v2).unwrap(),
            CasOutcome::Written(_)
        ));
        assert_eq!(store.get(&key).unwrap(), None);
        assert_eq!(
            store
                .compare_and_swap(&key, Value::Block(block("10.0.0.0/26")), v2)
                .unwrap(),
            CasOutcome::Conflict
        );
    }

    #[test]
    fn mismatched_values_are_refused() {
        let store = MemStore::new();
        let key = Key::Block("10.0.0.0/26".parse().unwrap());
        assert!(store
            .create(&key, Value::Block(block("10.0.0.64/26")))
            .is_err());
        assert!(store.create(&key, Value::Affinity).is_err());
        assert!(store.dump().is_empty());
    }

    #[test]
    fn host_affinity_listing_is_per_host_and_family() {
        let store = MemStore::new();
        let h = |s: &str| HostName::new(s).unwrap();
        for (host, cidr) in [
            ("a", "10.0.0.0/26"),
            ("a", "fd00::/122"),
            ("b", "10.0.0.64/26"),
            ("ab", "10.0.1.0/26"),
        ] {
            store
                .put(
                    &Key::Affinity {
                        host: h(host),
                        block: cidr.parse().unwrap(),
                    },
                    Value::Affinity,
                )
                .unwrap();
        }
        let listed = store
            .list(&Prefix::HostAffinities {
                host: h("a"),
                family: IpFamily::V4,
            })
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            store
                .list(&Prefix::AllAffinities(IpFamily::V4))
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn in_place_and_cas_updates_agree() {
        for in_place in [true, false] {
            let store = MemStore::new();
            store.set_in_place_updates(in_place);
            let cidr: IpNetwork = "10.0.0.0/26".parse().unwrap();
            let id = HandleId::new("h").unwrap();
            let host = HostName::new("a").unwrap();
            let attr = crate::Attribute::new(Some(id.clone()), crate::Attrs::empty());
            // Missing block: the function is not called.
            let outcome = store
                .update_block(cidr, &mut |_| panic!("called for a missing block"))
                .unwrap();
            assert_eq!(outcome, UpdateOutcome::Missing);
            let _ = store
                .create(&Key::Block(cidr), Value::Block(block("10.0.0.0/26")))
                .unwrap();
            let outcome = store
                .update_block(cidr, &mut |b| {
                    b.assign("10.0.0.7".parse().unwrap(), &attr, &host).unwrap();
                    Change::Write
                })
                .unwrap();
            assert_eq!(outcome, UpdateOutcome::Written);
            let outcome = store.update_block(cidr, &mut |_| Change::Keep).unwrap();
            assert_eq!(outcome, UpdateOutcome::Kept);
            let Some(Versioned {
                value: Value::Block(b),
                ..
            }) = store.get(&Key::Block(cidr)).unwrap()
            else {
                panic!("block gone")
            };
            assert!(b.is_allocated("10.0.0.7".parse().unwrap()));
            assert_eq!(
                store.update_block(cidr, &mut |_| Change::Delete).unwrap(),
                UpdateOutcome::Deleted
            );
            assert_eq!(store.get(&Key::Block(cidr)).unwrap(), None);

            // Handles: create, change, keep, delete.
            let bump = |n: u64| {
                move |r: &mut Option<Handle>| {
                    r.get_or_insert_with(|| Handle::new(HandleId::new("h").unwrap()))
                        .increment("10.0.0.0/26".parse().unwrap(), n);
                    Change::Write
                }
            };
            assert_eq!(
                store.update_handle(&id, &mut bump(2)).unwrap(),
                UpdateOutcome::Written
            );
            assert_eq!(
                store.update_handle(&id, &mut bump(1)).unwrap(),
                UpdateOutcome::Written
            );
            assert_eq!(
                store.update_handle(&id, &mut |_| Change::Keep).unwrap(),
                UpdateOutcome::Kept
            );
            let Some(Versioned {
                value: Value::Handle(h),
                ..
            }) = store.get(&Key::Handle(id.clone())).unwrap()
            else {
                panic!("handle gone")
            };
            assert_eq!(h.total(), 3);
            assert_eq!(
                store.update_handle(&id, &mut |_| Change::Delete).unwrap(),
                UpdateOutcome::Deleted
            );
            assert_eq!(store.get(&Key::Handle(id.clone())).unwrap(), None);
            assert_eq!(
                store.update_handle(&id, &mut |_| Change::Delete).unwrap(),
                UpdateOutcome::Kept
            );
            // Injected conflicts reach both paths.
            store.set_write_hook(|_, _| Injected::Conflict);
            assert_eq!(
                store.update_handle(&id, &mut bump(1)).unwrap(),
                UpdateOutcome::Conflict
            );
        }
    }

    #[test]
    fn hook_injects_conflicts_and_failures() {
        let store = MemStore::new();
        let key = Key::Block("10.0.0.0/26".parse().unwrap());
        store.set_write_hook(|_, kind| match kind {
            WriteKind::Create => Injected::Conflict,
            _ => Injected::Fail,
        });
        assert_eq!(
            store
                .create(&key, Value::Block(block("10.0.0.0/26")))
                .unwrap(),
            CasOutcome::Conflict
        );
        assert!(matches!(store.delete(&key), Err(IpamError::Store { .. })));
        store.clear_write_hook();
        assert!(matches!(
            store
                .create(&key, Value::Block(block("10.0.0.0/26")))
                .unwrap(),
            CasOutcome::Written(_)
        ));
        let stats = store.stats();
        assert_eq!(stats.injected_conflicts, 1);
        assert_eq!(stats.injected_failures, 1);
    }
}
