//! [`Name`]: one path segment, stored inline when short.
//!
//! Directory children live in a `BTreeMap` keyed by name. With `Box<str>` keys every
//! comparison during a lookup follows a pointer to the heap, which in a large directory
//! means a cache miss per comparison. Names of up to [`INLINE_CAPACITY`] bytes (almost
//! all real names: `00000000000000000042`, `calico`, `v1`) are kept inside the B-tree node
//! itself, so a lookup touches only the tree's own nodes; longer names fall back to the
//! heap. The map is searched by bytes (`Borrow<[u8]>`): byte order is `str` order.
//!
//! Invariant: the bytes are always valid UTF-8 (a `Name` is only built from a `&str`).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;

/// Bytes a name can hold without a heap allocation.
pub const INLINE_CAPACITY: usize = 22;

/// A path segment (24 bytes).
#[derive(Clone)]
pub(crate) struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; INLINE_CAPACITY],
    },
    Heap(Box<str>),
}

impl Name {
    /// The name's bytes (UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(&[]),
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Built from a `&str` (see the invariant), so this never falls back.
            Repr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or(""),
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        if s.len() <= INLINE_CAPACITY {
            let mut bytes = [0u8; INLINE_CAPACITY];
            if let Some(dst) = bytes.get_mut(..s.len()) {
                dst.copy_from_slice(s.as_bytes());
            }
            // `s.len() <= 22` fits in a u8.
            Name(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Name(Repr::Heap(s.into()))
        }
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_heap_names_order_like_strings() {
        let short = Name::from("abc");
        let exact = Name::from("0123456789012345678901");
        let long = Name::from("01234567890123456789012");
        let unicode = Name::from("中文");
        assert!(matches!(short.0, Repr::Inline { .. }));
        assert!(matches!(exact.0, Repr::Inline { .. }));
        assert!(matches!(long.0, Repr::Heap(_)));
        assert_eq!(long.as_str(), "01234567890123456789012");
        assert_eq!(unicode.as_str(), "中文");
        let mut names = [
            unicode.clone(),
            long.clone(),
            short.clone(),
            exact.clone(),
            Name::from(""),
        ];
        names.sort();
        let strs: Vec<&str> = names.iter().map(Name::as_str).collect();
        let mut expected = [
            "中文",
            "01234567890123456789012",
            "abc",
            "0123456789012345678901",
            "",
        ];
        expected.sort();
        assert_eq!(strs, expected);
        assert_eq!(std::mem::size_of::<Name>(), 24);
    }

    #[test]
    fn map_lookup_by_bytes() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(Name::from("b"), 2);
        m.insert(Name::from("a-very-long-name-that-is-on-the-heap"), 1);
        assert_eq!(m.get("b".as_bytes()), Some(&2));
        assert_eq!(
            m.get("a-very-long-name-that-is-on-the-heap".as_bytes()),
            Some(&1)
        );
        assert_eq!(m.get("c".as_bytes()), None);
    }
}
