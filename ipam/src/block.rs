//! Allocation blocks: the unit of affinity, of storage and of compare-and-swap.
//!
//! A block is a power-of-two range of addresses (a /26 of 64 addresses for IPv4 and a /122
//! for IPv6 by default) inside a pool. Its whole allocation state lives in one datastore
//! key, so every allocation or release in it is a single compare-and-swap, and hosts that
//! allocate from different blocks never contend.
//!
//! # Stored format (Calico's, `/calico/ipam/v2/assignment/ipv<N>/block/<a.b.c.d-26>`)
//!
//! ```json
//! {"cidr": "10.20.10.0/26", "affinity": "host:dockera", "strict_affinity": false,
//!  "allocations": [null, 0, null, ...],
//!  "attributes": [{"handle_id": null, "secondary": {}}],
//!  "unallocated": [0, 2, 3, ..., 63]}
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `cidr` | the block, host bits clear |
//! | `affinity` | `"host:<name>"`, or `""` (missing or `null` also read as none) |
//! | `strict_affinity` | when true only the affine host may allocate here (missing = false) |
//! | `allocations` | one entry per address of the block: `null` = free, `k` = index into `attributes` |
//! | `attributes` | distinct `{"handle_id", "secondary"}` entries, each referenced at least once |
//! | `unallocated` | the free ordinals in preference order (missing = ascending) |
//!
//! # Invariants (checked when decoding; kept by every operation)
//!
//! * `allocations` has exactly `2^(address bits - prefix)` entries;
//! * attribute indexes are dense: every index is `< attributes.len()` and every attribute
//!   is referenced by at least one allocation (an empty block has no attributes);
//! * `unallocated` holds each free ordinal exactly once and nothing else.
//!
//! # Order of addresses
//!
//! Auto-assignment takes ordinals from the *front* of the preference order and releases
//! append to the *end*, so the lowest never-used address goes first and a freed address is
//! reused last (Calico's choice: a just-released address may still be in some cache or
//! conntrack entry). In memory the order is kept as two parts: the ascending run of
//! ordinals at the front (a bitmap, scanned with `trailing_zeros`) followed by a FIFO of the
//! rest. Every order that Calico can produce, and any order read from JSON, is represented
//! exactly: the bitmap takes the longest strictly ascending prefix of the list.
//!
//! All ordinals are allocatable, including the block's first and last address: workloads
//! get /32 (or /128) routes, so there is no network or broadcast address to reserve.

use std::cell::OnceCell;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::attrs::Attribute;
use crate::bits;
use crate::error::{IpamError, Result};
use crate::net::{
    addr_bits, addr_from_bits, network_base, normalized, parse_network_strict, HandleId, HostName,
    IpFamily,
};

/// The largest block this crate supports has `2^MAX_BLOCK_HOST_BITS` (4096) addresses
/// (Calico 3 allows /20 to /32 for IPv4 and /116 to /128 for IPv6: the same range).
pub const MAX_BLOCK_HOST_BITS: u8 = 12;

/// A block's distinct attribute entries behind one thin, shared pointer (`None` when
/// there are none). Blocks filled by one call share the call's list, so a block whose
/// allocations all carry the same attributes (the common case) owns nothing for them;
/// a block that needs a different list gets its own copy on write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AttrList(Option<Arc<Vec<Attribute>>>);

impl AttrList {
    fn from_vec(v: Vec<Attribute>) -> AttrList {
        AttrList((!v.is_empty()).then(|| Arc::new(v)))
    }

    fn as_slice(&self) -> &[Attribute] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn get(&self, i: usize) -> Option<&Attribute> {
        self.as_slice().get(i)
    }

    /// Appends `a`; an empty list takes the caller's shared one-entry list instead.
    fn push(&mut self, a: &NewAttribute) {
        match &mut self.0 {
            None => self.0 = Some(a.shared()),
            Some(list) => Arc::make_mut(list).push(a.attribute().clone()),
        }
    }

    fn clear(&mut self) {
        self.0 = None;
    }

    /// Keeps the entries whose `keep` flag is set, in order.
    fn retain_indices(&mut self, keep: &[bool]) {
        let kept = self
            .as_slice()
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(a, _)| a.clone())
            .collect();
        *self = AttrList::from_vec(kept);
    }
}

impl std::ops::Deref for NewAttribute {
    type Target = Attribute;
    fn deref(&self) -> &Attribute {
        &self.attr
    }
}

/// The attribute entry of one allocation request, and (made on first use) a one-entry
/// attribute list that every block this request touches can share.
#[derive(Debug)]
pub(crate) struct NewAttribute {
    attr: Attribute,
    shared: OnceCell<Arc<Vec<Attribute>>>,
}

impl NewAttribute {
    pub(crate) fn new(attr: Attribute) -> NewAttribute {
        NewAttribute {
            attr,
            shared: OnceCell::new(),
        }
    }

    pub(crate) fn attribute(&self) -> &Attribute {
        &self.attr
    }

    fn shared(&self) -> Arc<Vec<Attribute>> {
        // The list is made from `attr`, so it always equals what this request asks for.
        Arc::clone(
            self.shared
                .get_or_init(|| Arc::new(vec![self.attr.clone()])),
        )
    }
}

/// What [`Block::release`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockRelease {
    /// How many addresses were freed.
    pub released: usize,
    /// Requested addresses that were not allocated (or not in this block).
    pub not_allocated: Vec<IpAddr>,
    /// Per handle, how many of the freed addresses carried it.
    pub handles: Vec<(HandleId, usize)>,
}

/// Per-ordinal state that only churned or mixed blocks need, in one allocation:
/// `[head, len, ring[size], attr[size]]` (all `u16`).
///
/// `ring[head..head+len]` (wrapping) is the FIFO of free ordinals after the ascending
/// run; `attr[o]` is the attribute index of allocated ordinal `o`, meaningful only while
/// the block has two or more attribute entries.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cold(Box<[u16]>);

impl Cold {
    fn new(size: usize) -> Cold {
        Cold(vec![0u16; 2 + 2 * size].into_boxed_slice())
    }

    fn size(&self) -> usize {
        self.0.len().saturating_sub(2) / 2
    }

    fn head(&self) -> usize {
        usize::from(self.0.first().copied().unwrap_or(0))
    }

    fn len(&self) -> usize {
        usize::from(self.0.get(1).copied().unwrap_or(0))
    }

    fn set_head_len(&mut self, head: usize, len: usize) {
        // Both are < size <= 4096.
        if let [h, l, ..] = &mut *self.0 {
            *h = head as u16;
            *l = len as u16;
        }
    }

    fn ring(&self) -> &[u16] {
        let size = self.size();
        self.0.get(2..2 + size).unwrap_or(&[])
    }

    fn ring_mut(&mut self) -> &mut [u16] {
        let size = self.size();
        self.0.get_mut(2..2 + size).unwrap_or(&mut [])
    }

    fn attrs(&self) -> &[u16] {
        let size = self.size();
        self.0.get(2 + size..).unwrap_or(&[])
    }

    fn attrs_mut(&mut self) -> &mut [u16] {
        let size = self.size();
        self.0.get_mut(2 + size..).unwrap_or(&mut [])
    }

    /// The ring's size is the block's, a power of two: wrap with a mask.
    fn wrap(&self, i: usize) -> usize {
        i & self.size().wrapping_sub(1)
    }

    fn ring_at(&self, k: usize) -> Option<usize> {
        self.ring()
            .get(self.wrap(self.head() + k))
            .map(|&o| usize::from(o))
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter_map(move |k| self.ring_at(k))
    }

    fn push(&mut self, ordinal: usize) {
        let (head, len, size) = (self.head(), self.len(), self.size());
        if size == 0 || len >= size {
            return;
        }
        let at = self.wrap(head + len);
        if let Some(slot) = self.ring_mut().get_mut(at) {
            *slot = ordinal as u16;
        }
        self.set_head_len(head, len + 1);
    }

    fn pop(&mut self) -> Option<usize> {
        let (head, len, size) = (self.head(), self.len(), self.size());
        if len == 0 || size == 0 {
            return None;
        }
        let ordinal = self.ring_at(0)?;
        self.set_head_len(self.wrap(head + 1), len - 1);
        Some(ordinal)
    }

    /// Removes `ordinal` from the FIFO, keeping the order of the rest.
    fn remove(&mut self, ordinal: usize) -> bool {
        let (head, len) = (self.head(), self.len());
        let Some(k) = (0..len).find(|&k| self.ring_at(k) == Some(ordinal)) else {
            return false;
        };
        let mask = self.size().wrapping_sub(1);
        let ring = self.ring_mut();
        for j in k..len - 1 {
            let next = ring.get((head + j + 1) & mask).copied().unwrap_or(0);
            if let Some(slot) = ring.get_mut((head + j) & mask) {
                *slot = next;
            }
        }
        self.set_head_len(head, len - 1);
        true
    }
}

/// Blocks of more than 64 addresses keep their two bitmaps here.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Extra {
    /// `allocated` words, then `fresh` words (empty for blocks of up to 64 addresses).
    large: Box<[u64]>,
    /// See [`Cold`].
    cold: Option<Cold>,
}

/// One allocation block and its whole allocation state; see the [module docs](self).
///
/// In memory a block of up to 64 addresses whose allocations share one attribute entry and
/// that has no freed addresses waiting is 64 bytes with nothing of its own on the heap: the
/// two bitmaps are inline, the host name and the attribute list are shared pointers, and
/// the per-ordinal state that only churned or mixed blocks need (and the bitmaps of larger
/// blocks) lives in one optional allocation.
#[derive(Clone)]
pub struct Block {
    cidr: IpNetwork,
    /// `log2(size)`, derived from `cidr` (kept to make `size` one shift).
    host_bits: u8,
    strict_affinity: bool,
    affinity: Option<HostName>,
    /// `[allocated, fresh]` for blocks of up to 64 addresses: the allocated ordinals, and
    /// the free ordinals at the front of the preference order (ascending).
    small: [u64; 2],
    /// Distinct attribute entries; each referenced by at least one allocated ordinal.
    attributes: AttrList,
    /// The bitmaps of larger blocks; the other free ordinals in preference order, after
    /// every fresh one, and the attribute index per ordinal while there are two or more
    /// entries. `None` when none of it is needed.
    extra: Option<Box<Extra>>,
}

// The size the module docs and the memory figures promise (x86-64 and other 64-bit targets).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Block>() <= 64);

impl Block {
    /// An empty block: every ordinal free, in ascending order.
    ///
    /// `cidr` must have its host bits clear and hold at most 2^[`MAX_BLOCK_HOST_BITS`]
    /// addresses.
    pub fn new(
        cidr: IpNetwork,
        affinity: Option<HostName>,
        strict_affinity: bool,
    ) -> Result<Block> {
        let network = normalized(&cidr)?;
        if network != cidr {
            return Err(IpamError::HostBitsSet {
                given: cidr,
                network,
            });
        }
        let family = IpFamily::of_network(&cidr);
        let host_bits = family.bits() - cidr.prefix().min(family.bits());
        if host_bits > MAX_BLOCK_HOST_BITS {
            return Err(IpamError::InvalidBlockSize {
                family,
                prefix: cidr.prefix(),
                reason: "a block holds at most 4096 addresses",
            });
        }
        let size = 1usize << host_bits;
        let words = bits::empty_bitmaps(size);
        let (small, extra) = if size <= 64 {
            (
                [
                    words.first().copied().unwrap_or(0),
                    words.get(1).copied().unwrap_or(0),
                ],
                None,
            )
        } else {
            (
                [0, 0],
                Some(Box::new(Extra {
                    large: words.into_boxed_slice(),
                    cold: None,
                })),
            )
        };
        Ok(Block {
            cidr,
            host_bits,
            strict_affinity,
            affinity,
            small,
            attributes: AttrList::default(),
            extra,
        })
    }

    /// The block's CIDR.
    pub fn cidr(&self) -> IpNetwork {
        self.cidr
    }

    /// The block's family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of_network(&self.cidr)
    }

    /// The affine host, if any.
    pub fn affinity(&self) -> Option<&HostName> {
        self.affinity.as_ref()
    }

    /// True when only the affine host may allocate in this block.
    pub fn strict_affinity(&self) -> bool {
        self.strict_affinity
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> usize {
        1usize << self.host_bits
    }

    /// Number of free addresses.
    pub fn free_count(&self) -> usize {
        self.size() - self.allocated_count()
    }

    /// Number of allocated addresses.
    pub fn allocated_count(&self) -> usize {
        if self.host_bits <= 6 {
            self.small[0].count_ones() as usize
        } else {
            bits::count(self.words().0)
        }
    }

    /// True when nothing is allocated.
    pub fn is_empty(&self) -> bool {
        self.words().0.iter().all(|w| *w == 0)
    }

    /// (allocated, fresh) bitmaps.
    fn words(&self) -> (&[u64], &[u64]) {
        if self.host_bits <= 6 {
            let [allocated, fresh] = &self.small;
            (std::slice::from_ref(allocated), std::slice::from_ref(fresh))
        } else {
            match &self.extra {
                Some(e) => e.large.split_at(e.large.len() / 2),
                None => (&[], &[]),
            }
        }
    }

    /// (allocated, fresh) bitmaps, mutable.
    fn words_mut(&mut self) -> (&mut [u64], &mut [u64]) {
        if self.host_bits <= 6 {
            let [allocated, fresh] = &mut self.small;
            (std::slice::from_mut(allocated), std::slice::from_mut(fresh))
        } else {
            match &mut self.extra {
                Some(e) => {
                    let half = e.large.len() / 2;
                    e.large.split_at_mut(half)
                }
                None => (&mut [], &mut []),
            }
        }
    }

    fn cold(&self) -> Option<&Cold> {
        self.extra.as_ref().and_then(|e| e.cold.as_ref())
    }

    fn cold_opt_mut(&mut self) -> Option<&mut Cold> {
        self.extra.as_mut().and_then(|e| e.cold.as_mut())
    }

    /// The ordinal of `addr` in this block, if it lies inside it.
    pub fn ordinal(&self, addr: IpAddr) -> Option<usize> {
        if IpFamily::of_addr(addr) != self.family() || !self.cidr.contains(addr) {
            return None;
        }
        usize::try_from(addr_bits(addr) - network_base(&self.cidr)).ok()
    }

    /// The address at `ordinal`, if it is inside the block.
    pub fn address(&self, ordinal: usize) -> Option<IpAddr> {
        (ordinal < self.size())
            .then(|| addr_from_bits(self.family(), network_base(&self.cidr) + ordinal as u128))
    }

    fn address_unchecked(&self, base: u128, ordinal: usize) -> IpAddr {
        addr_from_bits(self.family(), base + ordinal as u128)
    }

    fn is_allocated_ordinal(&self, ordinal: usize) -> bool {
        bits::get(self.words().0, ordinal)
    }

    /// Is the address allocated?
    pub fn is_allocated(&self, addr: IpAddr) -> bool {
        self.ordinal(addr)
            .is_some_and(|o| self.is_allocated_ordinal(o))
    }

    /// The free ordinals in preference order (Calico's `unallocated`).
    pub fn unallocated(&self) -> impl Iterator<Item = usize> + '_ {
        bits::iter(self.words().1).chain(self.cold().into_iter().flat_map(Cold::iter))
    }

    /// The distinct attribute entries (Calico's `attributes`).
    pub fn attributes(&self) -> &[Attribute] {
        // An empty block may keep its last one-entry list for reuse; it has no attributes.
        if self.is_empty() {
            return &[];
        }
        self.attributes.as_slice()
    }

    fn attr_of(&self, ordinal: usize) -> usize {
        if self.attributes.len() <= 1 {
            return 0;
        }
        self.cold()
            .and_then(|c| c.attrs().get(ordinal))
            .map_or(0, |&i| usize::from(i))
    }

    /// The attribute entry of an allocated address.
    pub fn attribute(&self, addr: IpAddr) -> Option<&Attribute> {
        let ordinal = self.ordinal(addr)?;
        if !self.is_allocated_ordinal(ordinal) {
            return None;
        }
        self.attributes.get(self.attr_of(ordinal))
    }

    /// Every allocated address with its attribute entry, in ascending address order.
    pub fn allocations(&self) -> impl Iterator<Item = (IpAddr, &Attribute)> + '_ {
        let base = network_base(&self.cidr);
        bits::iter(self.words().0).filter_map(move |o| {
            self.attributes
                .get(self.attr_of(o))
                .map(|a| (self.address_unchecked(base, o), a))
        })
    }

    /// Allocated addresses whose handle is `handle` (`None`: allocations without a handle).
    pub fn addresses_with_handle(&self, handle: Option<&HandleId>) -> Vec<IpAddr> {
        self.allocations()
            .filter(|(_, a)| a.handle.as_ref() == handle)
            .map(|(addr, _)| addr)
            .collect()
    }

    /// Fails with [`IpamError::NoHostAffinity`] when `host` may not allocate here: the
    /// block is strict, or `affinity_check` is asked for, and `host` is not its owner.
    pub fn check_affinity(&self, host: &HostName, affinity_check: bool) -> Result<()> {
        if (affinity_check || self.strict_affinity) && self.affinity.as_ref() != Some(host) {
            return Err(IpamError::NoHostAffinity {
                block: self.cidr,
                host: host.to_string(),
                owner: self.affinity.as_ref().map(ToString::to_string),
            });
        }
        Ok(())
    }

    /// Allocates up to `n` addresses from the front of the preference order, all with
    /// attribute `attr`; returns fewer (possibly none) when the block runs out.
    /// See [`Block::check_affinity`] for `affinity_check`.
    pub fn auto_assign(
        &mut self,
        n: usize,
        attr: &Attribute,
        host: &HostName,
        affinity_check: bool,
    ) -> Result<Vec<IpAddr>> {
        self.check_affinity(host, affinity_check)?;
        let mut out = Vec::new();
        self.auto_assign_into(n, &NewAttribute::new(attr.clone()), &mut out);
        Ok(out)
    }

    /// Takes the next free ordinal in preference order.
    fn take_next_free(&mut self) -> Option<usize> {
        let (_, fresh) = self.words_mut();
        if let Some(o) = bits::first(fresh) {
            bits::clear(fresh, o);
            return Some(o);
        }
        self.cold_opt_mut().and_then(Cold::pop)
    }

    /// [`Block::auto_assign`] without the affinity check, appending to `out`; returns how
    /// many addresses were taken.
    pub(crate) fn auto_assign_into(
        &mut self,
        n: usize,
        attr: &NewAttribute,
        out: &mut Vec<IpAddr>,
    ) -> usize {
        let base = network_base(&self.cidr);
        let mut slot = None;
        let mut taken = 0;
        while taken < n {
            let Some(ordinal) = self.take_next_free() else {
                break;
            };
            let index = match slot {
                Some(i) => i,
                None => {
                    let i = self.attribute_slot(attr);
                    slot = Some(i);
                    i
                }
            };
            bits::set(self.words_mut().0, ordinal);
            self.set_attr(ordinal, index);
            out.push(self.address_unchecked(base, ordinal));
            taken += 1;
        }
        self.drop_unneeded_cold();
        taken
    }

    /// Allocates the specific address `addr`.
    ///
    /// Errors: [`IpamError::AddressNotInBlock`], [`IpamError::NoHostAffinity`] (strict
    /// block of another host), [`IpamError::AlreadyAssigned`].
    pub fn assign(&mut self, addr: IpAddr, attr: &Attribute, host: &HostName) -> Result<()> {
        self.assign_new(addr, &NewAttribute::new(attr.clone()), host)
    }

    /// [`Block::assign`] with a request's shareable attribute entry.
    pub(crate) fn assign_new(
        &mut self,
        addr: IpAddr,
        attr: &NewAttribute,
        host: &HostName,
    ) -> Result<()> {
        let Some(ordinal) = self.ordinal(addr) else {
            return Err(IpamError::AddressNotInBlock {
                addr,
                block: self.cidr,
            });
        };
        self.check_affinity(host, false)?;
        if self.is_allocated_ordinal(ordinal) {
            return Err(IpamError::AlreadyAssigned {
                addr,
                block: self.cidr,
            });
        }
        let (_, fresh) = self.words_mut();
        if bits::get(fresh, ordinal) {
            bits::clear(fresh, ordinal);
        } else if let Some(cold) = self.cold_opt_mut() {
            cold.remove(ordinal);
        }
        let index = self.attribute_slot(attr);
        bits::set(self.words_mut().0, ordinal);
        self.set_attr(ordinal, index);
        self.drop_unneeded_cold();
        Ok(())
    }

    /// Frees the given addresses. Addresses that are free, outside the block, or repeated
    /// are reported in [`BlockRelease::not_allocated`] (repeats only once) and change
    /// nothing. Freed ordinals go to the end of the preference order, in ascending order.
    pub fn release(&mut self, addrs: &[IpAddr]) -> BlockRelease {
        let mut result = BlockRelease::default();
        if let [addr] = addrs {
            // The common case, without the sort below.
            match self.ordinal(*addr) {
                Some(o) if self.is_allocated_ordinal(o) => self.free_ordinals(&[o], &mut result),
                _ => result.not_allocated.push(*addr),
            }
            return result;
        }
        let mut ordinals: Vec<usize> = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            match self.ordinal(addr) {
                Some(o) if self.is_allocated_ordinal(o) => ordinals.push(o),
                _ => {
                    if !result.not_allocated.contains(&addr) {
                        result.not_allocated.push(addr);
                    }
                }
            }
        }
        ordinals.sort_unstable();
        ordinals.dedup();
        self.free_ordinals(&ordinals, &mut result);
        result
    }

    /// Frees every address whose handle is `handle`; returns how many.
    pub fn release_by_handle(&mut self, handle: &HandleId) -> usize {
        let ordinals: Vec<usize> = bits::iter(self.words().0)
            .filter(|&o| {
                self.attributes
                    .get(self.attr_of(o))
                    .is_some_and(|a| a.handle.as_ref() == Some(handle))
            })
            .collect();
        let mut result = BlockRelease::default();
        self.free_ordinals(&ordinals, &mut result);
        result.released
    }

    /// Drops the block's affinity (the block stays, owned by nobody).
    pub fn clear_affinity(&mut self) {
        self.affinity = None;
    }

    fn cold_mut(&mut self) -> &mut Cold {
        let size = self.size();
        self.extra
            .get_or_insert_with(|| {
                Box::new(Extra {
                    large: Box::default(),
                    cold: None,
                })
            })
            .cold
            .get_or_insert_with(|| Cold::new(size))
    }

    /// Frees the per-ordinal state once nothing needs it.
    fn drop_unneeded_cold(&mut self) {
        if self.attributes.len() <= 1 {
            if let Some(extra) = self.extra.as_mut() {
                if extra.cold.as_ref().is_some_and(|c| c.len() == 0) {
                    extra.cold = None;
                }
                if extra.cold.is_none() && extra.large.is_empty() {
                    self.extra = None;
                }
            }
        }
    }

    fn free_ordinals(&mut self, ordinals: &[usize], result: &mut BlockRelease) {
        for &o in ordinals {
            if let Some(handle) = self
                .attributes
                .get(self.attr_of(o))
                .and_then(|a| a.handle.as_ref())
            {
                match result.handles.iter_mut().find(|(h, _)| h == handle) {
                    Some((_, n)) => *n += 1,
                    None => result.handles.push((handle.clone(), 1)),
                }
            }
            bits::clear(self.words_mut().0, o);
            self.cold_mut().push(o);
            result.released += 1;
        }
        if result.released > 0 {
            self.compact_attributes();
        }
        self.drop_unneeded_cold();
    }

    /// Index of `attr` in `attributes`, appending it if new.
    fn attribute_slot(&mut self, attr: &NewAttribute) -> usize {
        let wanted = attr.attribute();
        if self.is_empty() {
            // The list left by the last release is stale: reuse it if it is exactly what
            // this request wants (a block churned with the same attributes allocates
            // nothing), or share the request's.
            if !(self.attributes.len() == 1 && self.attributes.get(0) == Some(wanted)) {
                self.attributes.clear();
                self.attributes.push(attr);
            }
            return 0;
        }
        if let Some(i) = self.attributes.as_slice().iter().position(|a| a == wanted) {
            return i;
        }
        self.attributes.push(attr);
        if self.attributes.len() == 2 {
            // Leaving the uniform representation: every allocated ordinal refers to 0.
            self.cold_mut().attrs_mut().fill(0);
        }
        self.attributes.len() - 1
    }

    fn set_attr(&mut self, ordinal: usize, index: usize) {
        if self.attributes.len() <= 1 {
            return;
        }
        if let Some(slot) = self.cold_mut().attrs_mut().get_mut(ordinal) {
            // Attribute indexes are < size <= 4096, so they fit in u16.
            *slot = index as u16;
        }
    }

    /// Removes attribute entries no allocation refers to, renumbering the rest in order.
    fn compact_attributes(&mut self) {
        match self.attributes.len() {
            0 => {}
            // Kept while the block is empty, for reuse (see `attribute_slot`); hidden by
            // `attributes()`.
            1 => {}
            len => {
                let mut used = vec![false; len];
                for o in bits::iter(self.words().0) {
                    if let Some(u) = used.get_mut(self.attr_of(o)) {
                        *u = true;
                    }
                }
                if used.iter().all(|&u| u) {
                    return;
                }
                let mut remap = vec![0u16; len];
                let mut next = 0u16;
                for (i, &u) in used.iter().enumerate() {
                    if u {
                        if let Some(r) = remap.get_mut(i) {
                            *r = next;
                        }
                        next += 1;
                    }
                }
                if usize::from(next) > 1 {
                    let allocated: Vec<usize> = bits::iter(self.words().0).collect();
                    let attrs = self.cold_mut().attrs_mut();
                    for o in allocated {
                        if let Some(slot) = attrs.get_mut(o) {
                            *slot = remap.get(usize::from(*slot)).copied().unwrap_or(0);
                        }
                    }
                }
                self.attributes.retain_indices(&used);
            }
        }
    }

    /// The block as Calico's JSON (see the [module docs](self)).
    pub fn to_json(&self) -> String {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes Calico's block JSON, checking every invariant of the [module docs](self).
    pub fn from_json(text: &str) -> Result<Block> {
        serde_json::from_str(text).map_err(|e| IpamError::Corrupt {
            key: "block JSON".to_string(),
            reason: e.to_string(),
        })
    }

    fn from_wire(wire: BlockWire) -> std::result::Result<Block, String> {
        let cidr = parse_network_strict(&wire.cidr).map_err(|e| e.to_string())?;
        let affinity = match wire.affinity.as_deref() {
            None | Some("") => None,
            Some(text) => match text.strip_prefix("host:") {
                Some(name) => Some(HostName::new(name).map_err(|e| e.to_string())?),
                None => return Err(format!("unsupported affinity {text:?}")),
            },
        };
        let mut block = Block::new(cidr, affinity, wire.strict_affinity.unwrap_or(false))
            .map_err(|e| e.to_string())?;
        let size = block.size();
        if wire.allocations.len() != size {
            return Err(format!(
                "allocations has {} entries; block {cidr} has {size} addresses",
                wire.allocations.len()
            ));
        }
        let n_attrs = wire.attributes.len();
        let mut referenced = vec![false; n_attrs];
        block.attributes = AttrList::from_vec(wire.attributes);
        {
            let (allocated, fresh) = block.words_mut();
            fresh.fill(0);
            for (ordinal, entry) in wire.allocations.iter().enumerate() {
                if entry.is_some() {
                    bits::set(allocated, ordinal);
                }
            }
        }
        for (ordinal, entry) in wire.allocations.iter().enumerate() {
            let Some(index) = *entry else { continue };
            let index = usize::try_from(index)
                .ok()
                .filter(|&i| i < n_attrs)
                .ok_or_else(|| {
                    format!(
                        "allocation {ordinal} refers to attribute {index}, but there are {n_attrs}"
                    )
                })?;
            if let Some(r) = referenced.get_mut(index) {
                *r = true;
            }
            block.set_attr(ordinal, index);
        }
        if let Some(unused) = referenced.iter().position(|r| !r) {
            return Err(format!(
                "attribute {unused} is not referenced by any allocation"
            ));
        }
        let free = size - block.allocated_count();
        match wire.unallocated {
            None => {
                let (allocated, fresh) = block.words_mut();
                for (f, a) in fresh.iter_mut().zip(allocated.iter()) {
                    *f = !*a;
                }
                // Clear the bits past the end of a block smaller than a word.
                if size < 64 {
                    if let Some(f) = fresh.first_mut() {
                        *f &= (1u64 << size) - 1;
                    }
                }
            }
            Some(list) => {
                if list.len() != free {
                    return Err(format!(
                        "unallocated has {} entries but {free} addresses are free",
                        list.len()
                    ));
                }
                let mut seen = vec![false; size];
                let mut ascending = true;
                let mut last: Option<usize> = None;
                for value in list {
                    let ordinal = usize::try_from(value)
                        .ok()
                        .filter(|&o| o < size)
                        .ok_or_else(|| format!("unallocated entry {value} is out of range"))?;
                    if block.is_allocated_ordinal(ordinal) {
                        return Err(format!("unallocated entry {ordinal} is allocated"));
                    }
                    if seen.get(ordinal).copied().unwrap_or(true) {
                        return Err(format!("unallocated entry {ordinal} is repeated"));
                    }
                    if let Some(s) = seen.get_mut(ordinal) {
                        *s = true;
                    }
                    ascending = ascending && last.is_none_or(|l| ordinal > l);
                    if ascending {
                        bits::set(block.words_mut().1, ordinal);
                    } else {
                        block.cold_mut().push(ordinal);
                    }
                    last = Some(ordinal);
                }
            }
        }
        block.drop_unneeded_cold();
        Ok(block)
    }
}

impl PartialEq for Block {
    /// Logical equality: same fields and the same preference order, however represented.
    fn eq(&self, other: &Block) -> bool {
        self.cidr == other.cidr
            && self.affinity == other.affinity
            && self.strict_affinity == other.strict_affinity
            && self.words().0 == other.words().0
            && self.attributes() == other.attributes()
            && bits::iter(self.words().0).all(|o| self.attr_of(o) == other.attr_of(o))
            && self.unallocated().eq(other.unallocated())
    }
}

impl Eq for Block {}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("cidr", &self.cidr)
            .field("affinity", &self.affinity)
            .field("strict_affinity", &self.strict_affinity)
            .field("allocated", &self.allocated_count())
            .field("attributes", &self.attributes())
            .finish_non_exhaustive()
    }
}

/// The JSON shape read from the datastore; see the [module docs](self).
#[derive(Deserialize)]
struct BlockWire {
    cidr: String,
    #[serde(default)]
    affinity: Option<String>,
    #[serde(default)]
    strict_affinity: Option<bool>,
    allocations: Vec<Option<u64>>,
    #[serde(default)]
    attributes: Vec<Attribute>,
    #[serde(default)]
    unallocated: Option<Vec<u64>>,
}

/// The JSON shape written to the datastore.
#[derive(Serialize)]
struct BlockWireOut<'a> {
    cidr: String,
    affinity: String,
    strict_affinity: bool,
    allocations: Vec<Option<usize>>,
    attributes: &'a [Attribute],
    unallocated: Vec<usize>,
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let allocations = (0..self.size())
            .map(|o| self.is_allocated_ordinal(o).then(|| self.attr_of(o)))
            .collect();
        BlockWireOut {
            cidr: self.cidr.to_string(),
            affinity: self
                .affinity
                .as_ref()
                .map_or_else(String::new, |h| format!("host:{h}")),
            strict_affinity: self.strict_affinity,
            allocations,
            attributes: self.attributes(),
            unallocated: self.unallocated().collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Block, D::Error> {
        Block::from_wire(BlockWire::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
