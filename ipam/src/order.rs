//! The host-seeded pseudo-random order in which a host looks for a free block.
//!
//! Calico walks candidate blocks in an order seeded by the host name (libcalico PR #102):
//! processes on the *same* host try the same blocks in the same order, so they converge
//! on one block instead of each claiming its own; *different* hosts start in different
//! places, so a cluster booting at once does not stampede on the first block.
//!
//! Per pool, block `index = (start + k * step) mod count` for k = 0, 1, ..., with `count`
//! the number of blocks in the pool (a power of two), `start` uniform in `[0, count)` and
//! `step` odd (from Calico's step set): an odd step is coprime with a power of two, so the
//! walk visits every block exactly once. Nothing is materialised, which matters for IPv6
//! pools of 2^58 blocks. Walks of several pools are interleaved round-robin, the rotation
//! reshuffled every round, so allocations spread across pools.
//!
//! The generator is a SplitMix64 seeded with the FNV-1a hash of the host name: stable
//! across runs and platforms (Calico's Python RNG is not reproduced bit for bit; the
//! properties above are what matter).

use ipnetwork::IpNetwork;

use crate::net::{make_network, network_base, IpFamily};

/// Calico's step set.
const STEPS: [u128; 17] = [
    1, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59,
];

/// SplitMix64.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }

    /// Uniform in `[0, n)` for `n >= 1` (slight modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % (n.max(1) as u64)) as usize
    }
}

/// FNV-1a 64 of the host name: the seed of its order.
pub(crate) fn host_seed(host: &str) -> u64 {
    host.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A host-specific rank for an existing block (used to order borrowing candidates the
/// same way on every call of one host, differently across hosts).
pub(crate) fn block_rank(seed: u64, block: &IpNetwork) -> u64 {
    let mut rng = Rng::new(
        seed ^ (network_base(block) as u64) ^ ((network_base(block) >> 64) as u64).rotate_left(17),
    );
    rng.next_u64()
}

/// The walk over one pool's blocks.
#[derive(Debug, Clone)]
struct PoolWalk {
    family: IpFamily,
    base: u128,
    block_prefix: u8,
    /// Number of blocks, a power of two (at most 2^122 for an IPv6 /0 of /122 blocks).
    count: u128,
    start: u128,
    step: u128,
    emitted: u128,
}

impl PoolWalk {
    fn next(&mut self) -> Option<IpNetwork> {
        if self.emitted >= self.count {
            return None;
        }
        let mask = self.count - 1;
        let index = self
            .start
            .wrapping_add(self.emitted.wrapping_mul(self.step))
            & mask;
        self.emitted += 1;
        let host_bits = u32::from(self.family.bits() - self.block_prefix);
        let offset = index.checked_shl(host_bits).unwrap_or(0);
        make_network(self.family, self.base + offset, self.block_prefix).ok()
    }

    fn exhausted(&self) -> bool {
        self.emitted >= self.count
    }
}

/// The interleaved walk over several pools' blocks; see the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct BlockOrder {
    rng: Rng,
    walks: Vec<PoolWalk>,
    rotation: Vec<usize>,
    position: usize,
}

impl BlockOrder {
    /// The order for `host` over `pools` (same family; each pool's prefix <=
    /// `block_prefix`, which pool validation guarantees; others are skipped).
    pub(crate) fn new(host: &str, pools: &[IpNetwork], block_prefix: u8) -> BlockOrder {
        let mut rng = Rng::new(host_seed(host));
        let walks: Vec<PoolWalk> = pools
            .iter()
            .filter(|p| p.prefix() <= block_prefix)
            .filter_map(|p| {
                let family = IpFamily::of_network(p);
                let exp = u32::from(block_prefix - p.prefix());
                let count = 1u128.checked_shl(exp).filter(|_| exp < 128)?;
                let start = rng.next_u128() & (count - 1);
                let step = STEPS.get(rng.below(STEPS.len())).copied().unwrap_or(1);
                Some(PoolWalk {
                    family,
                    base: network_base(p),
                    block_prefix,
                    count,
                    start,
                    step,
                    emitted: 0,
                })
            })
            .collect();
        BlockOrder {
            rng,
            rotation: Vec::new(),
            walks,
            position: 0,
        }
    }
}

impl Iterator for BlockOrder {
    type Item = IpNetwork;

    fn next(&mut self) -> Option<IpNetwork> {
        loop {
            if self.position >= self.rotation.len() {
                self.rotation = (0..self.walks.len())
                    .filter(|&i| self.walks.get(i).is_some_and(|w| !w.exhausted()))
                    .collect();
                if self.rotation.is_empty() {
                    return None;
                }
                for i in (1..self.rotation.len()).rev() {
                    let j = self.rng.below(i + 1);
                    self.rotation.swap(i, j);
                }
                self.position = 0;
            }
            let walk = self.rotation.get(self.position).copied();
            self.position += 1;
            if let Some(block) = walk
                .and_then(|w| self.walks.get_mut(w))
                .and_then(PoolWalk::next)
            {
                return Some(block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn covers_every_block_once_and_is_deterministic_per_host() {
        let pools = [net("10.0.0.0/22"), net("10.1.0.0/24"), net("10.2.0.0/26")];
        let a: Vec<IpNetwork> = BlockOrder::new("host-a", &pools, 26).collect();
        assert_eq!(a.len(), 16 + 4 + 1);
        let unique: HashSet<_> = a.iter().collect();
        assert_eq!(unique.len(), a.len());
        for b in &a {
            assert!(pools.iter().any(|p| crate::net::network_contains(p, b)));
            assert_eq!(b.prefix(), 26);
        }
        assert_eq!(a, BlockOrder::new("host-a", &pools, 26).collect::<Vec<_>>());
        let starts: HashSet<IpNetwork> = (0..20)
            .filter_map(|i| BlockOrder::new(&format!("host-{i}"), &pools, 26).next())
            .collect();
        assert!(
            starts.len() > 3,
            "different hosts start in different places"
        );
    }

    #[test]
    fn interleaves_pools() {
        let pools = [net("10.0.0.0/20"), net("10.1.0.0/20")];
        let first: Vec<IpNetwork> = BlockOrder::new("h", &pools, 26).take(8).collect();
        let in_first = first
            .iter()
            .filter(|b| crate::net::network_contains(&pools[0], b))
            .count();
        assert_eq!(in_first, 4, "{first:?}");
    }

    #[test]
    fn huge_ipv6_pools_are_not_materialised() {
        let pools = [net("fd00::/48")];
        let some: Vec<IpNetwork> = BlockOrder::new("h", &pools, 122).take(1000).collect();
        assert_eq!(some.iter().collect::<HashSet<_>>().len(), 1000);
        let all = [net("::/0")];
        assert!(BlockOrder::new("h", &all, 122).next().is_some());
    }
}
