//! The spare segment: a helper thread keeps one segment-sized file zero-filled and durable
//! ahead of need, so that a rollover on the append path costs one write, one `fdatasync`,
//! one rename and one directory fsync instead of writing a whole segment of zeros (64 MiB:
//! about half a second on the project's VM). etcd's WAL does the same with its "file
//! pipeline".
//!
//! Protocol (the WAL's side is in `Wal::enqueue` and `Wal::write_chunks`):
//! 1. When the active segment is half full, the WAL asks for a spare (so a short-lived
//!    process, or a test, that never gets near a rollover never writes one). The helper
//!    creates `<dir>/<unique>.spare`, writes zeros over its full capacity and
//!    `fsync`s it (data and size durable), then offers it. Its name is never a segment name,
//!    so recovery cannot mistake it for one; [`Wal::open`](crate::Wal::open) deletes any
//!    `*.spare` it finds (a spare is only trusted by the process that synced it).
//! 2. At rollover the leader takes the spare (if one of the right size is ready), writes
//!    the segment header and the first records into it, `fdatasync`s it, renames it to the
//!    segment's name and fsyncs the directory; only then are those records acknowledged,
//!    exactly as with a segment created inline.
//! 3. If no spare is ready (the helper is still writing it, or failed), the leader creates
//!    the segment inline as before. A spare that fails before its rename is abandoned and
//!    the segment is created inline; nothing acknowledged depends on it.
//!
//! The helper thread starts on the first request (a WAL that never gets near a rollover
//! never runs it), stops (between 1 MiB writes) when the WAL is dropped, and the WAL then
//! removes its unused spare.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::fs::{FileHandle, FileSystem};

/// Suffix of spare file names.
pub(crate) const SPARE_SUFFIX: &str = ".spare";

const ZERO_CHUNK: usize = 1 << 20;

/// The helper flushes its zeros every this many bytes, so that each flush is short and the
/// appenders' own `fdatasync`s are not stuck behind one flush of a whole segment.
const FLUSH_EVERY: u64 = 4 << 20;

/// A prepared spare file: `capacity` bytes of zeros, durable.
#[derive(Debug)]
pub(crate) struct Spare {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn FileHandle>,
    pub(crate) capacity: u64,
}

#[derive(Debug, Default)]
struct SlotState {
    ready: Option<Spare>,
    /// The WAL wants a (next) spare.
    wanted: bool,
    /// The helper is writing one.
    busy: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<SlotState>,
    cond: Condvar,
    stop: AtomicBool,
}

/// The helper thread and the spare it prepared; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct SparePool {
    shared: Arc<Shared>,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    capacity: u64,
    /// Started on the first request, so a WAL that never nears a rollover (a short-lived
    /// process, a test, a fuzz case) never runs it.
    thread: Mutex<Helper>,
}

#[derive(Debug)]
enum Helper {
    NotStarted,
    Running(JoinHandle<()>),
    /// Could not be started, or stopped: rollovers create segments inline.
    Gone,
}

/// A name no other spare (of this or another process) has.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-{n:08x}{SPARE_SUFFIX}", std::process::id())
}

/// Creates, zero-fills and syncs one spare file; gives up (removing it) if `stop` is set.
fn prepare(
    fs: &dyn FileSystem,
    dir: &Path,
    capacity: u64,
    stop: &AtomicBool,
) -> std::io::Result<Option<Spare>> {
    let path = dir.join(unique_name());
    let file = fs.create(&path)?;
    let result = (|| {
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut at = 0u64;
        while at < capacity {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let n = (capacity - at).min(ZERO_CHUNK as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
            if at % FLUSH_EVERY == 0 && at < capacity {
                file.sync_data()?;
            }
        }
        file.sync_all()?;
        Ok(true)
    })();
    match result {
        Ok(true) => Ok(Some(Spare {
            path,
            file,
            capacity,
        })),
        Ok(false) => {
            let _ = fs.remove_file(&path);
            Ok(None)
        }
        Err(e) => {
            // Best effort: the next open removes leftover spares anyway.
            let _ = fs.remove_file(&path);
            Err(e)
        }
    }
}

impl SparePool {
    /// A pool whose helper will prepare spares of `capacity` bytes in `dir` when asked.
    pub(crate) fn new(fs: Arc<dyn FileSystem>, dir: PathBuf, capacity: u64) -> SparePool {
        SparePool {
            shared: Arc::new(Shared {
                state: Mutex::new(SlotState::default()),
                cond: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
            fs,
            dir,
            capacity,
            thread: Mutex::new(Helper::NotStarted),
        }
    }

    /// Asks the helper for a spare unless one is ready or being prepared (starting the
    /// helper on first use).
    pub(crate) fn request(&self) {
        {
            let mut thread = self.thread.lock();
            if matches!(*thread, Helper::NotStarted) {
                let shared = Arc::clone(&self.shared);
                let fs = Arc::clone(&self.fs);
                let (dir, capacity) = (self.dir.clone(), self.capacity);
                *thread = match std::thread::Builder::new()
                    .name("wal-spare".to_string())
                    .spawn(move || helper(&shared, fs.as_ref(), &dir, capacity))
                {
                    Ok(handle) => Helper::Running(handle),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not start the spare segment thread; segments will be created inline");
                        Helper::Gone
                    }
                };
            }
            if !matches!(*thread, Helper::Running(_)) {
                return;
            }
        }
        let mut st = self.shared.state.lock();
        if st.ready.is_none() && !st.busy && !st.wanted {
            st.wanted = true;
            self.shared.cond.notify_all();
        }
    }

    /// Takes the ready spare if it has exactly `capacity` bytes.
    pub(crate) fn take(&self, capacity: u64) -> Option<Spare> {
        let mut st = self.shared.state.lock();
        match &st.ready {
            Some(s) if s.capacity == capacity => st.ready.take(),
            _ => None,
        }
    }

    /// Asks for a spare and waits until one is ready or the helper gave up; returns whether
    /// one is ready. For tests and benchmarks that want a deterministic starting point.
    pub(crate) fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        self.request();
        let deadline = std::time::Instant::now() + timeout;
        let mut st = self.shared.state.lock();
        while st.ready.is_none() && (st.busy || st.wanted) {
            if self.shared.cond.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.ready.is_some()
    }

    /// Stops the helper (it abandons a spare in progress), waits for it, and removes the
    /// unused spare, if any.
    pub(crate) fn shutdown(&self) {
        {
            // Under the helper's lock: it checks `stop` and starts waiting atomically with
            // respect to this, so the wakeup cannot fall between the two and be lost.
            let _st = self.shared.state.lock();
            self.shared.stop.store(true, Ordering::Relaxed);
            self.shared.cond.notify_all();
        }
        let helper = std::mem::replace(&mut *self.thread.lock(), Helper::Gone);
        if let Helper::Running(thread) = helper {
            let _ = thread.join();
        }
        if let Some(spare) = self.shared.state.lock().ready.take() {
            let _ = self.fs.remove_file(&spare.path);
        }
    }
}

fn helper(shared: &Shared, fs: &dyn FileSystem, dir: &Path, capacity: u64) {
    loop {
        {
            let mut st = shared.state.lock();
            loop {
                let asked = st.wanted && st.ready.is_none();
                if asked || shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                shared.cond.wait(&mut st);
            }
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            st.wanted = false;
            st.busy = true;
        }
        let result = prepare(fs, dir, capacity, &shared.stop);
        let mut st = shared.state.lock();
        st.busy = false;
        match result {
            Ok(Some(spare)) => st.ready = Some(spare),
            Ok(None) => {}
            Err(e) => {
                // The append path creates segments inline until the next rollover asks
                // again.
                tracing::warn!(error = %e, dir = %dir.display(), "could not prepare a spare WAL segment");
            }
        }
        shared.cond.notify_all();
    }
}
