//! The node tree: compact nodes, path walks, and rendering nodes as [`NodeExtern`].
//!
//! A directory owns its children in an ordered map keyed by the child's *name* (one path
//! segment), so a lookup is one map search per segment, listings come out in byte order
//! (etcd's `sorted=true` order, which we always use), and removing a subtree is removing
//! one map entry. A node stores no path: keys are rebuilt while walking.
//!
//! The map is persistent (`imbl::OrdMap`, a B-tree of shared nodes) and values are shared
//! strings, so cloning a whole tree costs O(1): a snapshot freezes the store by cloning it
//! on the raft loop and serializes the clone on another thread, while writes go on and copy
//! only the B-tree nodes they touch (etcd v2 deep-copies its tree under its lock instead).
//!
//! Invariants (checked by [`Tree::check_invariants`] in tests):
//! - names are non-empty, contain no `/`, and are neither `.` nor `..`;
//! - the tree is at most [`MAX_KEY_DEPTH`] segments deep;
//! - `created_index <= modified_index` for every node except where etcd's dir-update quirk
//!   applies (a directory's stored `modified_index` never moves; it equals its
//!   `created_index`);
//! - every node with an expiration appears in the TTL index with that expiration and its
//!   key, and nothing else does (kept by the store, see `state.rs`).

use std::num::NonZeroU64;
use std::sync::Arc;

use super::event::{NodeExtern, UnixNanos};
use super::name::Name;
use super::path::{self, MAX_KEY_DEPTH};

/// Children of a directory, by name.
pub(crate) type Children = imbl::OrdMap<Name, Node>;

/// What a node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A file and its value (shared: cloning a node does not copy it).
    File(Arc<str>),
    /// A directory and its children.
    Dir(Children),
}

/// One file or directory (48 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    /// Index of the write that created the node.
    pub created_index: u64,
    /// Index of the last write to the node.
    pub modified_index: u64,
    /// Absolute expiry time in nanoseconds since the epoch; `None` = permanent. Stored
    /// as non-zero (an expiration computed as 0 is stored as 1 ns) to keep the niche.
    pub expiration: Option<NonZeroU64>,
    /// File value or directory children.
    pub kind: Kind,
}

impl Node {
    /// A new empty directory.
    pub fn new_dir(index: u64, expiration: Option<UnixNanos>) -> Node {
        Node {
            created_index: index,
            modified_index: index,
            expiration: expiration.map(to_stored),
            kind: Kind::Dir(Children::new()),
        }
    }

    /// A new file.
    pub fn new_file(index: u64, value: &str, expiration: Option<UnixNanos>) -> Node {
        Node {
            created_index: index,
            modified_index: index,
            expiration: expiration.map(to_stored),
            kind: Kind::File(value.into()),
        }
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    /// The children of a directory (`None` for a file).
    pub fn children(&self) -> Option<&Children> {
        match &self.kind {
            Kind::Dir(children) => Some(children),
            Kind::File(_) => None,
        }
    }

    /// The value of a file (`""` for a directory, as etcd's `node.Value`).
    pub fn value(&self) -> &str {
        match &self.kind {
            Kind::File(v) => v,
            Kind::Dir(_) => "",
        }
    }

    /// The expiration as an instant.
    pub fn expiration(&self) -> Option<UnixNanos> {
        self.expiration.map(|e| UnixNanos(e.get()))
    }

    /// Sets or clears the expiration.
    pub fn set_expiration(&mut self, expiration: Option<UnixNanos>) {
        self.expiration = expiration.map(to_stored);
    }

    /// The node as the API shows it, without children.
    pub fn to_extern(&self, key: &str, now: UnixNanos) -> NodeExtern {
        let expiration = self.expiration();
        NodeExtern {
            key: key.to_owned(),
            value: match &self.kind {
                Kind::File(v) => Some(v.to_string()),
                Kind::Dir(_) => None,
            },
            dir: self.is_dir(),
            expiration,
            ttl: expiration.map_or(0, |e| e.ttl_from(now).max(0)),
            nodes: Vec::new(),
            modified_index: self.modified_index,
            created_index: self.created_index,
        }
    }

    /// The node with its visible children listed (all levels with `recursive`), as a
    /// GET shows it. `key` is `""` for the root. The walk keeps its own stack, so even
    /// the deepest tree ([`MAX_KEY_DEPTH`]) costs no call-stack depth.
    pub fn to_listing(&self, key: &str, recursive: bool, now: UnixNanos) -> NodeExtern {
        let mut out = self.to_extern(key, now);
        let Kind::Dir(children) = &self.kind else {
            return out;
        };
        if !recursive {
            out.nodes = children
                .iter()
                .filter(|(name, _)| !path::is_hidden_name(name.as_str()))
                .map(|(name, child)| {
                    child.to_extern(&path::join(parent_key(key), name.as_str()), now)
                })
                .collect();
            return out;
        }
        // Depth-first: each frame is a directory being listed and its remaining children.
        let mut stack = vec![(out, children.iter())];
        loop {
            let Some((dir, iter)) = stack.last_mut() else {
                // Unreachable: the root frame is only popped to be returned.
                return NodeExtern::default();
            };
            match iter.next() {
                Some((name, child)) if !path::is_hidden_name(name.as_str()) => {
                    let child_key = path::join(parent_key(&dir.key), name.as_str());
                    let listed = child.to_extern(&child_key, now);
                    match &child.kind {
                        Kind::Dir(grandchildren) => stack.push((listed, grandchildren.iter())),
                        Kind::File(_) => dir.nodes.push(listed),
                    }
                }
                Some(_) => {}
                None => {
                    let Some((done, _)) = stack.pop() else {
                        return NodeExtern::default();
                    };
                    match stack.last_mut() {
                        Some((parent, _)) => parent.nodes.push(done),
                        None => return done,
                    }
                }
            }
        }
    }
}

/// The prefix a child's key is joined to: `/` for the root (whose key is `""`).
fn parent_key(key: &str) -> &str {
    if key.is_empty() {
        "/"
    } else {
        key
    }
}

/// An expiration as stored: never zero.
fn to_stored(t: UnixNanos) -> NonZeroU64 {
    NonZeroU64::new(t.0).unwrap_or(NonZeroU64::MIN)
}

/// Why a walk to a key stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// This path (the first missing component) does not exist.
    NotFound(String),
    /// This path is a file used as a directory.
    NotDir(String),
}

/// The tree rooted at an unnamed directory (indexes 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tree {
    /// The root directory; its indexes stay 0 and it never expires.
    pub root: Node,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            root: Node::new_dir(0, None),
        }
    }
}

/// Byte offsets just past each segment of a cleaned key: `/ab/c` → 3, 5.
fn segment_ends(clean: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut pos = 0usize;
    path::segments(clean).map(move |seg| {
        pos += 1 + seg.len();
        (pos, seg)
    })
}

impl Tree {
    /// The node at a cleaned key, or where the walk stopped (etcd's `internalGet`).
    pub fn get(&self, clean: &str) -> Result<&Node, WalkError> {
        let mut cur = &self.root;
        let mut parent_end = 0usize;
        for (end, seg) in segment_ends(clean) {
            let children = match &cur.kind {
                Kind::Dir(children) => children,
                Kind::File(_) => return Err(WalkError::NotDir(clean[..parent_end].to_owned())),
            };
            cur = match children.get(seg.as_bytes()) {
                Some(child) => child,
                None => return Err(WalkError::NotFound(clean[..end].to_owned())),
            };
            parent_end = end;
        }
        Ok(cur)
    }

    /// Mutable access to the node at a cleaned key.
    pub fn get_mut(&mut self, clean: &str) -> Result<&mut Node, WalkError> {
        let mut cur = &mut self.root;
        let mut parent_end = 0usize;
        for (end, seg) in segment_ends(clean) {
            let children = match &mut cur.kind {
                Kind::Dir(children) => children,
                Kind::File(_) => return Err(WalkError::NotDir(clean[..parent_end].to_owned())),
            };
            cur = match children.get_mut(seg.as_bytes()) {
                Some(child) => child,
                None => return Err(WalkError::NotFound(clean[..end].to_owned())),
            };
            parent_end = end;
        }
        Ok(cur)
    }

    /// Checks that the parent directories of `clean` could be created: no file on the
    /// way. Returns the file's key otherwise. Does not modify anything.
    pub fn check_parents(&self, clean: &str) -> Result<(), String> {
        let mut cur = &self.root;
        let parent = parent_of(clean);
        for (end, seg) in segment_ends(parent) {
            let Kind::Dir(children) = &cur.kind else {
                return Err(clean[..end - 1 - seg.len()].to_owned());
            };
            match children.get(seg.as_bytes()) {
                Some(child) => cur = child,
                None => return Ok(()),
            }
        }
        match &cur.kind {
            Kind::Dir(_) => Ok(()),
            Kind::File(_) => Err(parent.to_owned()),
        }
    }

    /// The children map of the parent directory of `clean` (not the root itself),
    /// creating missing directories with `index`. Returns the key of a file found on the
    /// way instead. Call [`Tree::check_parents`] first when nothing may be created on error.
    pub fn parent_children_mut(
        &mut self,
        clean: &str,
        index: u64,
    ) -> Result<&mut Children, String> {
        let parent = parent_of(clean);
        let mut cur = &mut self.root;
        for (end, seg) in segment_ends(parent) {
            let Kind::Dir(children) = &mut cur.kind else {
                return Err(clean[..end - 1 - seg.len()].to_owned());
            };
            if !children.contains_key(seg.as_bytes()) {
                children.insert(seg.into(), Node::new_dir(index, None));
            }
            cur = match children.get_mut(seg.as_bytes()) {
                Some(child) => child,
                None => return Err(clean[..end].to_owned()),
            };
        }
        match &mut cur.kind {
            Kind::Dir(children) => Ok(children),
            Kind::File(_) => Err(parent.to_owned()),
        }
    }

    /// Detaches and returns the node at `clean` (not the root).
    pub fn remove(&mut self, clean: &str) -> Option<Node> {
        let name = last_segment(clean)?;
        let parent = parent_of(clean);
        let parent_node = self.get_mut(parent).ok()?;
        match &mut parent_node.kind {
            Kind::Dir(children) => children.remove(name.as_bytes()),
            Kind::File(_) => None,
        }
    }

    /// Visits every node below and including `node` (keyed `key`) in pre-order without
    /// recursion; `f` gets the key, the node and its depth below the root of the walk.
    pub fn walk<'a>(key: &str, node: &'a Node, mut f: impl FnMut(&str, &'a Node, usize)) {
        let mut stack: Vec<(String, &'a Node, usize)> = vec![(key.to_owned(), node, 0)];
        while let Some((k, n, depth)) = stack.pop() {
            f(&k, n, depth);
            if let Kind::Dir(children) = &n.kind {
                for (name, child) in children.iter().rev() {
                    stack.push((
                        path::join(if k.is_empty() { "/" } else { &k }, name.as_str()),
                        child,
                        depth + 1,
                    ));
                }
            }
        }
    }

    /// Counts the nodes of the tree, root excluded.
    pub fn count_nodes(&self) -> u64 {
        let mut n = 0u64;
        let mut stack: Vec<&Node> = vec![&self.root];
        while let Some(node) = stack.pop() {
            if let Kind::Dir(children) = &node.kind {
                n += children.len() as u64;
                stack.extend(children.values());
            }
        }
        n
    }

    /// Checks the structural invariants listed in the module documentation; returns a
    /// description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut problem = None;
        Tree::walk("", &self.root, |key, node, depth| {
            if problem.is_some() {
                return;
            }
            if depth > MAX_KEY_DEPTH {
                problem = Some(format!("{key}: deeper than {MAX_KEY_DEPTH}"));
            }
            if depth > 0 && node.created_index > node.modified_index {
                problem = Some(format!("{key}: createdIndex > modifiedIndex"));
            }
            if let Kind::Dir(children) = &node.kind {
                for name in children.keys().map(Name::as_str) {
                    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                        problem = Some(format!("{key}: bad child name {name:?}"));
                    }
                }
            }
        });
        problem.map_or(Ok(()), Err)
    }
}

/// The cleaned parent of a cleaned key (`/a/b` → `/a`, `/a` → `/`, `/` → `/`).
pub(crate) fn parent_of(clean: &str) -> &str {
    match clean.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &clean[..i],
    }
}

/// The last segment of a cleaned key (`None` for the root).
pub(crate) fn last_segment(clean: &str) -> Option<&str> {
    clean.rsplit('/').next().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_stays_small() {
        assert!(
            std::mem::size_of::<Node>() <= 48,
            "{}",
            std::mem::size_of::<Node>()
        );
    }

    #[test]
    fn walk_errors_name_the_right_component() {
        let mut t = Tree::default();
        let c = t.parent_children_mut("/a/f", 1).unwrap();
        c.insert("f".into(), Node::new_file(1, "v", None));
        assert_eq!(t.get("/x/y"), Err(WalkError::NotFound("/x".into())));
        assert_eq!(t.get("/a/x"), Err(WalkError::NotFound("/a/x".into())));
        assert_eq!(t.get("/a/f/x/y"), Err(WalkError::NotDir("/a/f".into())));
        assert_eq!(t.check_parents("/a/f/x/y"), Err("/a/f".into()));
        assert_eq!(t.check_parents("/a/f/x"), Err("/a/f".into()));
        assert_eq!(t.check_parents("/a/g/x"), Ok(()));
        assert_eq!(
            t.parent_children_mut("/a/f/x", 2).err(),
            Some("/a/f".into())
        );
        assert!(t.get("/").unwrap().is_dir());
        assert_eq!(t.count_nodes(), 2);
        assert!(t.check_invariants().is_ok());
    }

    #[test]
    fn helpers() {
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("/"), "/");
        assert_eq!(last_segment("/a/b"), Some("b"));
        assert_eq!(last_segment("/"), None);
        assert_eq!(
            segment_ends("/ab/c").collect::<Vec<_>>(),
            vec![(3, "ab"), (5, "c")]
        );
    }
}
