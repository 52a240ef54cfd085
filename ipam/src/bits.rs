//! Bitmaps as slices of 64-bit words, and the pair of bitmaps a block keeps.
//!
//! Out-of-range indexes read as clear and writes to them are ignored: callers check
//! ordinals against the block size first, and nothing here panics on input.

/// Is bit `i` set?
pub(crate) fn get(words: &[u64], i: usize) -> bool {
    words
        .get(i / 64)
        .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
}

/// Sets bit `i`.
pub(crate) fn set(words: &mut [u64], i: usize) {
    if let Some(w) = words.get_mut(i / 64) {
        *w |= 1u64 << (i % 64);
    }
}

/// Clears bit `i`.
pub(crate) fn clear(words: &mut [u64], i: usize) {
    if let Some(w) = words.get_mut(i / 64) {
        *w &= !(1u64 << (i % 64));
    }
}

/// The lowest set bit.
pub(crate) fn first(words: &[u64]) -> Option<usize> {
    words
        .iter()
        .enumerate()
        .find(|(_, w)| **w != 0)
        .map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
}

/// Number of set bits.
pub(crate) fn count(words: &[u64]) -> usize {
    words.iter().map(|w| w.count_ones() as usize).sum()
}

/// Set bits in ascending order.
pub(crate) fn iter(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(i, &w)| {
        let mut rest = w;
        std::iter::from_fn(move || {
            if rest == 0 {
                None
            } else {
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(i * 64 + bit)
            }
        })
    })
}

/// Sets bits `0..len`, clears the rest.
fn fill(words: &mut [u64], len: usize) {
    for (i, w) in words.iter_mut().enumerate() {
        let lo = i * 64;
        *w = if len >= lo + 64 {
            u64::MAX
        } else if len > lo {
            (1u64 << (len - lo)) - 1
        } else {
            0
        };
    }
}

/// A block's two bitmaps for `len` ordinals, as `allocated` words then `fresh` words:
/// nothing allocated, every ordinal fresh.
pub(crate) fn empty_bitmaps(len: usize) -> Vec<u64> {
    let words = len.div_ceil(64).max(1);
    let mut all = vec![0u64; 2 * words];
    let (_, fresh) = all.split_at_mut(words);
    fill(fresh, len);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large() {
        for len in [1usize, 5, 63, 64, 65, 128, 200, 4096] {
            let mut b = empty_bitmaps(len);
            let half = b.len() / 2;
            let (alloc, fresh) = b.split_at_mut(half);
            assert_eq!(count(fresh), len);
            assert_eq!(count(alloc), 0);
            assert_eq!(first(fresh), Some(0));
            clear(fresh, 0);
            set(alloc, 0);
            set(alloc, len + 100); // ignored
            assert_eq!(first(fresh), Some(1).filter(|_| len > 1));
            assert!(!get(fresh, len), "out of range reads clear");
            assert_eq!(count(fresh), len - 1);
            assert_eq!(iter(alloc).collect::<Vec<_>>(), vec![0]);
            let fresh_again = empty_bitmaps(len);
            let collected: Vec<usize> = iter(&fresh_again[fresh_again.len() / 2..]).collect();
            assert_eq!(collected, (0..len).collect::<Vec<_>>());
        }
    }
}
