//! The filesystem seam: every byte the WAL and the snapshot store read or write goes through
//! [`FileSystem`] and [`FileHandle`], so tests can swap the real filesystem ([`StdFs`]) for
//! [`FaultFs`](crate::FaultFs), which tears writes, fails fsync, runs out of space and
//! crashes (dropping whatever was not synced).
//!
//! The trait is deliberately small and positional: files are read and written at explicit
//! offsets (`pread`/`pwrite`), so readers never disturb a writer's file position and many
//! threads can share one handle.
//!
//! Durability vocabulary, as on Linux:
//! * [`FileHandle::sync_data`] (`fdatasync`) makes the file's data, and the metadata needed to
//!   read it back (its length), durable.
//! * [`FileHandle::sync_all`] (`fsync`) also makes the rest of its metadata durable.
//! * [`FileSystem::sync_dir`] makes the *names* in a directory durable: a file that was
//!   created, renamed or removed may revert after a crash until its directory was synced.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A directory tree the WAL can create files in. Implementations must be thread-safe.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files directly inside `dir`, in any order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `path` (truncating it if it exists) for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Opens the existing file `path` for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Opens the existing file `path` for reading only.
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive, advisory lock named by `path` (creating the file if needed),
    /// held until the returned guard is dropped. Fails with
    /// [`io::ErrorKind::WouldBlock`] at once, without waiting, when someone else holds it
    /// (another process, or another guard in this one).
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// Holds a lock taken with [`FileSystem::lock_exclusive`]; dropping it releases the lock.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// An open file, addressed by offset. Implementations must be thread-safe.
pub trait FileHandle: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes up to `buf.len()` bytes at `offset`; returns how many were written.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// The file's current length in bytes.
    fn file_len(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fdatasync`: data and the metadata needed to read it become durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and all metadata become durable.
    fn sync_all(&self) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` if the file
    /// is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than expected",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes")),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The real filesystem, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(File);

impl FileHandle for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.0.write_at(buf, offset)
    }
    fn file_len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(StdFile(file)))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(StdFile(File::open(path)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    /// `flock(LOCK_EX | LOCK_NB)` on `path`: the kernel releases it when the descriptor is
    /// closed (the guard dropped, or the process gone, however it ended). Every `open`
    /// makes a new open file description, so two guards in one process exclude each other
    /// too. The file itself is left in place (removing lock files races with lockers).
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        try_flock_exclusive(&file)?;
        Ok(Box::new(StdLock(file)))
    }
}

/// A file locked with `flock`; closing it releases the lock.
#[derive(Debug)]
struct StdLock(#[allow(dead_code)] File); // reason: held only for its descriptor's lifetime

impl LockGuard for StdLock {}

#[allow(unsafe_code)] // reason: flock(2) has no safe wrapper in std before Rust 1.89 (the workspace MSRV is 1.85); the call only uses a descriptor that `file` keeps open
fn try_flock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is open for the duration of the call; flock has no memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        // EWOULDBLOCK maps to io::ErrorKind::WouldBlock.
        Err(io::Error::last_os_error())
    }
}
