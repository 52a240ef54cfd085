//! [`FaultFs`]: an in-memory [`FileSystem`] that remembers what is durable and what is not,
//! for crash and fault-injection tests (this crate's, and any other crate's: it is public).
//!
//! Model of durability (Linux-like, deliberately pessimistic):
//! * Every file has *durable* contents and a list of *pending* operations (writes and length
//!   changes) made since its last successful `sync_data`/`sync_all`. Reads see the pending
//!   operations.
//! * Every name operation (create, rename, remove) is pending until `sync_dir` of its
//!   directory. Directories themselves are durable as soon as they are created.
//! * [`FaultFs::crash`] simulates power loss: each file keeps its durable contents plus a
//!   prefix of its pending operations, the last of which may be torn at any byte; the
//!   namespace keeps a prefix of its pending name operations. [`Crash`] chooses the prefix:
//!   none, all, or a seeded random one. Handles opened before the crash fail afterwards.
//!
//! Injected faults:
//! * [`FaultFs::fail_syncs_after`]: after `n` more successful syncs (file or directory), every
//!   sync fails with `EIO` and makes nothing durable (as Linux may drop the dirty pages).
//! * [`FaultFs::tear_writes_after`]: after `n` more bytes, a write stores only the bytes within
//!   budget and fails with `EIO`; later writes fail outright.
//! * [`FaultFs::set_capacity`]: a total size for all files; growing past it stores what fits and
//!   fails with `ENOSPC`.
//!
//! Caveat: real disks may persist unsynced sectors out of order; this model keeps prefixes
//! only (the contract the WAL's torn-tail detection is specified against).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{FileHandle, FileSystem, LockGuard};

/// How much unsynced state survives a [`FaultFs::crash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Every unsynced write and name operation is lost.
    DropAll,
    /// Every unsynced write and name operation survives (as after a process crash).
    KeepAll,
    /// A pseudo-random prefix (derived from the seed) survives, torn at any byte.
    Seeded(u64),
}

type NodeId = u64;

#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Node {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<DataOp>,
}

#[derive(Debug, Clone)]
enum NameOp {
    Link {
        path: PathBuf,
        node: NodeId,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        node: NodeId,
    },
    Unlink {
        path: PathBuf,
    },
}

impl NameOp {
    fn touches(&self, dir: &Path) -> bool {
        match self {
            NameOp::Link { path, .. } | NameOp::Unlink { path } => path.parent() == Some(dir),
            NameOp::Rename { from, to, .. } => {
                from.parent() == Some(dir) || to.parent() == Some(dir)
            }
        }
    }
    fn apply(&self, names: &mut BTreeMap<PathBuf, NodeId>) {
        match self {
            NameOp::Link { path, node } => {
                names.insert(path.clone(), *node);
            }
            NameOp::Rename { from, to, node } => {
                names.remove(from);
                names.insert(to.clone(), *node);
            }
            NameOp::Unlink { path } => {
                names.remove(path);
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    generation: u64,
    dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, NodeId>,
    durable_names: BTreeMap<PathBuf, NodeId>,
    pending_names: Vec<NameOp>,
    nodes: HashMap<NodeId, Node>,
    next_node: NodeId,
    syncs_left: Option<u64>,
    write_budget: Option<u64>,
    capacity: Option<u64>,
    sync_count: u64,
    /// Paths locked with `lock_exclusive`; a crash releases them all.
    locks: BTreeSet<PathBuf>,
}

fn eio(msg: &str) -> io::Error {
    io::Error::other(format!("injected EIO: {msg}"))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

fn apply_op(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, bytes } => write_into(data, *offset, bytes),
        DataOp::SetLen(len) => data.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(bytes.len());
    if data.len() < end {
        data.resize(end, 0);
    }
    if let Some(dst) = data.get_mut(start..end) {
        dst.copy_from_slice(bytes);
    }
}

/// SplitMix64: a tiny deterministic generator for crash choices.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform-ish in `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            self.next()
        } else {
            self.next() % (max + 1)
        }
    }
}

impl State {
    fn total_size(&self) -> u64 {
        let live: BTreeSet<NodeId> = self.names.values().copied().collect();
        live.iter()
            .filter_map(|id| self.nodes.get(id))
            .map(|n| n.current.len() as u64)
            .sum()
    }

    fn sync_allowed(&mut self) -> io::Result<()> {
        match self.syncs_left {
            Some(0) => Err(eio("fsync failure")),
            Some(ref mut n) => {
                *n -= 1;
                self.sync_count += 1;
                Ok(())
            }
            None => {
                self.sync_count += 1;
                Ok(())
            }
        }
    }

    fn new_node(&mut self) -> NodeId {
        let id = self.next_node;
        self.next_node += 1;
        self.nodes.insert(id, Node::default());
        id
    }

    fn gc(&mut self) {
        let live: BTreeSet<NodeId> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .chain(self.pending_names.iter().filter_map(|op| match op {
                NameOp::Link { node, .. } | NameOp::Rename { node, .. } => Some(*node),
                NameOp::Unlink { .. } => None,
            }))
            .collect();
        self.nodes.retain(|id, _| live.contains(id));
    }
}

/// In-memory fault-injecting filesystem. Cloning shares the same state; use
/// [`FaultFs::fork`] for an independent copy. See the [module docs](crate::fault).
#[derive(Debug, Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct FaultFile {
    state: Arc<Mutex<State>>,
    node: NodeId,
    generation: u64,
    writable: bool,
}

impl FaultFs {
    /// An empty filesystem with no faults armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// An independent deep copy of the whole state (files, pending operations, faults).
    pub fn fork(&self) -> Self {
        let mut state = self.state.lock().clone();
        // A copy of the disk, not of the processes using it: no locks are held on it.
        state.locks.clear();
        FaultFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Simulates power loss; see [`Crash`] for what survives. Open handles become invalid.
    pub fn crash(&self, mode: Crash) {
        let mut st = self.state.lock();
        let mut rng = SplitMix(match mode {
            Crash::Seeded(seed) => seed,
            _ => 0,
        });
        // Names: a prefix of the pending operations survives.
        let n_ops = st.pending_names.len() as u64;
        let keep = match mode {
            Crash::DropAll => 0,
            Crash::KeepAll => n_ops,
            Crash::Seeded(_) => rng.upto(n_ops),
        };
        let ops: Vec<NameOp> = st.pending_names.drain(..).collect();
        let mut durable_names = std::mem::take(&mut st.durable_names);
        for op in ops.iter().take(usize::try_from(keep).unwrap_or(usize::MAX)) {
            op.apply(&mut durable_names);
        }
        st.names = durable_names.clone();
        st.durable_names = durable_names;
        // Data: per file, a prefix of the pending operations, the last one possibly torn.
        let mut ids: Vec<NodeId> = st.nodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(node) = st.nodes.get_mut(&id) else {
                continue;
            };
            let pending = std::mem::take(&mut node.pending);
            let n = pending.len() as u64;
            let (full, torn) = match mode {
                Crash::DropAll => (0, false),
                Crash::KeepAll => (n, false),
                Crash::Seeded(_) => {
                    let full = rng.upto(n);
                    (full, full < n && rng.next() % 2 == 0)
                }
            };
            let full = usize::try_from(full).unwrap_or(usize::MAX);
            for op in pending.iter().take(full) {
                apply_op(&mut node.durable, op);
            }
            if torn {
                if let Some(DataOp::Write { offset, bytes }) = pending.get(full) {
                    let cut = usize::try_from(rng.upto(bytes.len() as u64)).unwrap_or(0);
                    write_into(&mut node.durable, *offset, bytes.get(..cut).unwrap_or(&[]));
                }
            }
            node.current = node.durable.clone();
        }
        st.gc();
        st.generation += 1;
        // Power loss ends every process, and with it every lock.
        st.locks.clear();
    }

    /// After `n` more successful syncs, every `sync_data`/`sync_all`/`sync_dir` fails with
    /// `EIO` (and makes nothing durable). `None` disarms.
    pub fn fail_syncs_after(&self, n: Option<u64>) {
        self.state.lock().syncs_left = n;
    }

    /// After `n` more bytes written, a write is torn (the bytes within budget are kept) and
    /// fails with `EIO`; later writes fail. `None` disarms.
    pub fn tear_writes_after(&self, n: Option<u64>) {
        self.state.lock().write_budget = n;
    }

    /// Limits the total size of all files; growing past it fails with `ENOSPC` after storing
    /// what fits. `None` removes the limit.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// How many syncs (file and directory) have succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.state.lock().sync_count
    }

    /// Paths of all files in the current namespace, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.lock().names.keys().cloned().collect()
    }

    /// Current contents of `path` (including unsynced writes), if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let id = st.names.get(path)?;
        st.nodes.get(id).map(|n| n.current.clone())
    }

    /// Replaces the contents of `path` durably (creating it durably if needed), as if the disk
    /// itself changed: for corruption tests.
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
        let mut st = self.state.lock();
        if let Some(dir) = path.parent() {
            st.dirs.insert(dir.to_path_buf());
        }
        let id = match st.names.get(path) {
            Some(id) => *id,
            None => {
                let id = st.new_node();
                st.names.insert(path.to_path_buf(), id);
                st.durable_names.insert(path.to_path_buf(), id);
                id
            }
        };
        if let Some(node) = st.nodes.get_mut(&id) {
            node.current = bytes.clone();
            node.durable = bytes;
            node.pending.clear();
        }
    }
}

impl FaultFile {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.state.lock();
        if st.generation != self.generation {
            return Err(eio(
                "stale handle: the filesystem crashed since this file was opened",
            ));
        }
        f(&mut st)
    }
}

impl FileHandle for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|st| {
            let node = st
                .nodes
                .get(&self.node)
                .ok_or_else(|| eio("file vanished"))?;
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let Some(src) = node.current.get(start..) else {
                return Ok(0);
            };
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "opened read-only",
            ));
        }
        self.with(|st| {
            let mut allowed = buf.len() as u64;
            let mut error = None;
            if let Some(budget) = st.write_budget {
                if budget < allowed {
                    allowed = budget;
                    error = Some(eio("torn write"));
                }
                st.write_budget = Some(budget - allowed);
            }
            if let Some(cap) = st.capacity {
                let total = st.total_size();
                let cur_len = st
                    .nodes
                    .get(&self.node)
                    .map_or(0, |n| n.current.len() as u64);
                let end = offset.saturating_add(allowed);
                let growth = end.saturating_sub(cur_len);
                let room = cap.saturating_sub(total);
                if growth > room {
                    allowed = allowed.saturating_sub(growth - room);
                    error = Some(io::Error::from_raw_os_error(libc::ENOSPC));
                }
            }
            let allowed = usize::try_from(allowed).unwrap_or(0).min(buf.len());
            let node = st
                .nodes
                .get_mut(&self.node)
                .ok_or_else(|| eio("file vanished"))?;
            if allowed > 0 {
                let op = DataOp::Write {
                    offset,
                    bytes: buf[..allowed].to_vec(),
                };
                apply_op(&mut node.current, &op);
                node.pending.push(op);
            }
            match error {
                Some(e) => Err(e),
                None => Ok(allowed),
            }
        })
    }

    fn file_len(&self) -> io::Result<u64> {
        self.with(|st| {
            let node = st
                .nodes
                .get(&self.node)
                .ok_or_else(|| eio("file vanished"))?;
            Ok(node.current.len() as u64)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "opened read-only",
            ));
        }
        self.with(|st| {
            if let Some(cap) = st.capacity {
                let cur_len = st
                    .nodes
                    .get(&self.node)
                    .map_or(0, |n| n.current.len() as u64);
                if len > cur_len && len - cur_len > cap.saturating_sub(st.total_size()) {
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
            }
            let node = st
                .nodes
                .get_mut(&self.node)
                .ok_or_else(|| eio("file vanished"))?;
            let op = DataOp::SetLen(len);
            apply_op(&mut node.current, &op);
            node.pending.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|st| {
            st.sync_allowed()?;
            let node = st
                .nodes
                .get_mut(&self.node)
                .ok_or_else(|| eio("file vanished"))?;
            node.durable = node.current.clone();
            node.pending.clear();
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl FileSystem for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() {
                break;
            }
            st.dirs.insert(d.to_path_buf());
            cur = d.parent();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let mut st = self.state.lock();
        let dir = path.parent().unwrap_or(Path::new(""));
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let node = st.new_node();
        st.names.insert(path.to_path_buf(), node);
        st.pending_names.push(NameOp::Link {
            path: path.to_path_buf(),
            node,
        });
        Ok(Arc::new(FaultFile {
            state: self.state.clone(),
            node,
            generation: st.generation,
            writable: true,
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let st = self.state.lock();
        let node = *st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(FaultFile {
            state: self.state.clone(),
            node,
            generation: st.generation,
            writable: true,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let st = self.state.lock();
        let node = *st.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(Arc::new(FaultFile {
            state: self.state.clone(),
            node,
            generation: st.generation,
            writable: false,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        let node = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), node);
        st.pending_names.push(NameOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            node,
        });
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        st.pending_names.push(NameOp::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        st.sync_allowed()?;
        let ops: Vec<NameOp> = st.pending_names.drain(..).collect();
        let mut durable = std::mem::take(&mut st.durable_names);
        let mut rest = Vec::new();
        for op in ops {
            if op.touches(dir) {
                op.apply(&mut durable);
            } else {
                rest.push(op);
            }
        }
        st.durable_names = durable;
        st.pending_names = rest;
        // Removed files stay readable through open handles (as on Unix): their nodes are
        // only collected at a crash, which invalidates every handle.
        Ok(())
    }

    /// An in-memory lock table (no file is created): a second lock of the same path fails
    /// with `WouldBlock` until the guard is dropped or the filesystem crashes.
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut st = self.state.lock();
        if !st.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked", path.display()),
            ));
        }
        Ok(Box::new(FaultLock {
            state: self.state.clone(),
            path: path.to_path_buf(),
            generation: st.generation,
        }))
    }
}

/// A [`FaultFs`] lock; dropping it releases the lock unless a crash already did.
#[derive(Debug)]
struct FaultLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl LockGuard for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        // After a crash the path may be locked again by a new owner: leave that alone.
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (FaultFs, PathBuf) {
        let fs = FaultFs::new();
        let dir = PathBuf::from("/d");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    #[test]
    fn unsynced_name_and_data_vanish_on_drop_all_crash() {
        let (fs, dir) = setup();
        let f = fs.create(&dir.join("a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        fs.crash(Crash::DropAll);
        assert!(fs.paths().is_empty());
        assert!(
            f.file_len().is_err(),
            "stale handle must fail after a crash"
        );
    }

    #[test]
    fn synced_data_and_dir_survive_any_crash() {
        let (fs, dir) = setup();
        let f = fs.create(&dir.join("a")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        f.write_all_at(b"world", 5).unwrap();
        fs.crash(Crash::DropAll);
        assert_eq!(fs.contents(&dir.join("a")).unwrap(), b"hello");
    }

    #[test]
    fn seeded_crash_keeps_a_prefix_of_unsynced_bytes() {
        for seed in 0..200 {
            let (fs, dir) = setup();
            let f = fs.create(&dir.join("a")).unwrap();
            f.sync_data().unwrap();
            fs.sync_dir(&dir).unwrap();
            f.write_all_at(b"abcdef", 0).unwrap();
            f.write_all_at(b"ghij", 6).unwrap();
            fs.crash(Crash::Seeded(seed));
            let got = fs.contents(&dir.join("a")).unwrap();
            assert!(b"abcdefghij".starts_with(&got), "seed {seed}: {got:?}");
        }
    }

    #[test]
    fn failed_sync_makes_nothing_durable() {
        let (fs, dir) = setup();
        let f = fs.create(&dir.join("a")).unwrap();
        fs.sync_dir(&dir).unwrap();
        fs.fail_syncs_after(Some(0));
        f.write_all_at(b"x", 0).unwrap();
        assert!(f.sync_data().is_err());
        fs.crash(Crash::DropAll);
        assert_eq!(fs.contents(&dir.join("a")).unwrap(), b"");
    }

    #[test]
    fn torn_write_keeps_budgeted_prefix_and_fails() {
        let (fs, dir) = setup();
        let f = fs.create(&dir.join("a")).unwrap();
        fs.tear_writes_after(Some(3));
        assert!(f.write_all_at(b"abcdef", 0).is_err());
        assert_eq!(fs.contents(&dir.join("a")).unwrap(), b"abc");
    }

    #[test]
    fn capacity_limit_reports_enospc() {
        let (fs, dir) = setup();
        let f = fs.create(&dir.join("a")).unwrap();
        fs.set_capacity(Some(4));
        let err = f.write_all_at(b"abcdef", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!(f.set_len(100).is_err());
        assert_eq!(fs.contents(&dir.join("a")).unwrap(), b"abcd");
    }

    #[test]
    fn rename_is_pending_until_dir_sync() {
        let (fs, dir) = setup();
        let f = fs.create(&dir.join("a.tmp")).unwrap();
        f.write_all_at(b"v", 0).unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(&dir).unwrap();
        fs.rename(&dir.join("a.tmp"), &dir.join("a")).unwrap();
        let forked = fs.fork();
        forked.crash(Crash::DropAll);
        assert_eq!(forked.paths(), vec![dir.join("a.tmp")]);
        fs.sync_dir(&dir).unwrap();
        fs.crash(Crash::DropAll);
        assert_eq!(fs.paths(), vec![dir.join("a")]);
    }
}
