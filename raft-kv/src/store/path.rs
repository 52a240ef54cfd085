//! Key paths: how etcd cleans them and what "hidden" means.
//!
//! Every key entering the store is cleaned the way etcd v2 cleans it
//! (`path.Clean(path.Join("/", key))` in Go): made absolute, `//` collapsed, `.` dropped,
//! `..` resolved (never above the root), trailing `/` dropped. The cleaned form of the
//! root is `/`; every other cleaned key starts with `/` and has no empty, `.` or `..`
//! segment, so its segments are exactly its `/`-separated parts after the first.
//!
//! A segment starting with `_` is *hidden*: left out of listings and of recursive watches
//! on an ancestor, but readable, writable and watchable by its exact key.

/// The most segments a key may have when it is created (`/a/b` has 2).
///
/// Deeper trees are refused with errorCode 209 so that no operation (listing, JSON
/// rendering, dropping a subtree) can exhaust a thread's stack. etcd limits keys indirectly
/// through its ~4 KiB request line (at most ~2,000 segments); 1,024 is far beyond any real
/// key space.
pub const MAX_KEY_DEPTH: usize = 1024;

/// [`clean_key`] without allocating when the key is already clean (the common case).
pub fn clean_key_cow(key: &str) -> std::borrow::Cow<'_, str> {
    if is_clean(key) {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Owned(clean_key(key))
    }
}

/// Cleans a key as etcd does: `a//b/./c/../d/` → `/a/b/d`, `` → `/`.
pub fn clean_key(key: &str) -> String {
    // Fast path: already clean (absolute, no empty/./.. segments, no trailing slash).
    if is_clean(key) {
        return key.to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in key.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(key.len() + 1);
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    out
}

/// True if `key` is already in cleaned form.
///
/// A byte scan (every write checks its key): `/` is ASCII, so it never occurs inside a
/// multi-byte UTF-8 character.
pub fn is_clean(key: &str) -> bool {
    if key == "/" {
        return true;
    }
    let Some(rest) = key.strip_prefix('/') else {
        return false;
    };
    rest.as_bytes()
        .split(|&b| b == b'/')
        .all(|s| !s.is_empty() && s != b"." && s != b"..")
}

/// The segments of a cleaned key (`/a/b` → `a`, `b`; `/` → nothing).
pub fn segments(clean: &str) -> impl Iterator<Item = &str> {
    clean.split('/').filter(|s| !s.is_empty())
}

/// Number of segments of a cleaned key.
pub fn depth(clean: &str) -> usize {
    // The non-empty `/`-separated parts, counted by their first bytes (a byte scan: `/` is
    // ASCII, so it never occurs inside a multi-byte UTF-8 character).
    let bytes = clean.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b != b'/' && (i == 0 || bytes[i - 1] == b'/'))
        .count()
}

/// Joins a cleaned directory key and a child name.
pub fn join(dir: &str, name: &str) -> String {
    let mut out = String::with_capacity(dir.len() + 1 + name.len());
    out.push_str(dir);
    if !dir.ends_with('/') {
        out.push('/');
    }
    out.push_str(name);
    out
}

/// True if a segment name is hidden (starts with `_`).
pub fn is_hidden_name(name: &str) -> bool {
    name.starts_with('_')
}

/// etcd's `isHidden(watchPath, keyPath)`: true if the part of `key` below `watch` has a
/// hidden segment. `watch` is `key` itself or one of its ancestors (both cleaned); a
/// `watch` deeper than `key` (a watcher below a deleted directory) is never hidden.
pub fn hidden_below(watch: &str, key: &str) -> bool {
    if watch.len() > key.len() {
        return false;
    }
    let rest = key.get(watch.len()..).unwrap_or("");
    // With watch = "/", rest lacks its leading slash; treat the first segment the same.
    rest.starts_with('_') || rest.contains("/_")
}

/// True if `key` is `ancestor` or lies below it (component-wise, both cleaned).
pub fn is_self_or_descendant(key: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return true;
    }
    match key.strip_prefix(ancestor) {
        Some("") => true,
        Some(rest) => rest.starts_with('/'),
        None => false,
    }
}

/// The cleaned ancestors of a cleaned key from the root down, ending with the key itself:
/// `/a/b` → `/`, `/a`, `/a/b`.
pub fn ancestors_and_self(clean: &str) -> impl Iterator<Item = &str> {
    let root = std::iter::once("/");
    let rest = clean
        .match_indices('/')
        .skip(1)
        .map(move |(i, _)| &clean[..i])
        .chain(std::iter::once(clean).filter(|k| *k != "/"));
    root.chain(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go_path_clean() {
        let table = [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("a", "/a"),
            ("/a/", "/a"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../a", "/a"),
            ("/a/b/../../..", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/ключ 中文", "/ключ 中文"),
            ("/_h/x", "/_h/x"),
        ];
        for (raw, want) in table {
            assert_eq!(clean_key(raw), want, "clean({raw:?})");
            assert!(is_clean(want));
        }
    }

    /// Every string of up to 7 characters over `/`, `.`, `a` and `é`: the byte scans agree
    /// with the plain segment definitions.
    #[test]
    fn byte_scans_match_the_segment_definitions() {
        let alphabet = ['/', '.', 'a', 'é'];
        let mut strings = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..7 {
            let mut next = Vec::new();
            for s in &frontier {
                for c in alphabet {
                    let mut t = s.clone();
                    t.push(c);
                    next.push(t);
                }
            }
            strings.extend(next.iter().cloned());
            frontier = next;
        }
        for s in &strings {
            let clean_by_segments = s == "/"
                || (s.starts_with('/')
                    && s[1..]
                        .split('/')
                        .all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
            assert_eq!(is_clean(s), clean_by_segments, "is_clean({s:?})");
            assert_eq!(depth(s), segments(s).count(), "depth({s:?})");
            assert!(is_clean(&clean_key(s)), "clean_key({s:?}) is clean");
        }
    }

    #[test]
    fn hidden_matches_etcd() {
        assert!(hidden_below("/", "/_a"));
        assert!(hidden_below("/d", "/d/_h"));
        assert!(hidden_below("/d", "/d/_h/x"));
        assert!(!hidden_below("/d", "/d/x"));
        assert!(!hidden_below("/d/_h", "/d/_h"));
        assert!(!hidden_below("/d/_h", "/d/_h/x"));
        assert!(!hidden_below("/d/x/y", "/d"));
    }

    #[test]
    fn ancestors() {
        assert_eq!(ancestors_and_self("/").collect::<Vec<_>>(), vec!["/"]);
        assert_eq!(
            ancestors_and_self("/a/b/c").collect::<Vec<_>>(),
            vec!["/", "/a", "/a/b", "/a/b/c"]
        );
    }

    #[test]
    fn descendants() {
        assert!(is_self_or_descendant("/a", "/a"));
        assert!(is_self_or_descendant("/a/b", "/a"));
        assert!(!is_self_or_descendant("/ab", "/a"));
        assert!(is_self_or_descendant("/ab", "/"));
    }
}
