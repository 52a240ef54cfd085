//! The peer port: raft messages between members over TCP, plus the one question a joining
//! member asks (who is in the cluster?).
//!
//! Every peer connection starts with a [`Handshake`] and gets a one-byte [`Verdict`]
//! back. After `Verdict::Accepted` on a raft stream, the caller sends length-prefixed
//! frames (each an encoded raft `eraftpb::Message`) for as long as the connection lives;
//! the receiver hands each frame to its [`PeerHandler`]. A members query gets a single
//! frame (JSON) and the connection closes.
//!
//! Sending ([`PeerSender`]) keeps one outbound task per peer; the task connects (trying
//! each of the peer's URLs in turn) and reconnects with exponential backoff (50 ms doubling
//! to 1 s). While the connection is up, the raft loop writes its frames straight into the
//! socket (non-blocking, all frames for one peer in one `writev`), so sending a message
//! wakes no other thread; what does not fit in the socket buffer is left to the task, which
//! writes it once the socket is writable (frames sent meanwhile queue behind it, in order,
//! up to 64 MiB). While it is down, frames wait in a bounded queue for the
//! next connection. Raft tolerates lost messages, so a full queue or a broken connection
//! drops frames (counted as failures) rather than blocking the raft loop. Snapshot messages,
//! which may be large, travel on a connection of their own so they never hold up
//! heartbeats, and their outcome is reported back ([`PeerHandler::snapshot_sent`]) so
//! raft can retry.
//!
//! A member that was removed from the cluster gets `Verdict::Removed` when it connects;
//! its sender reports that to the handler, and the member stops itself, as etcd does.
//!
//! Caveats: plain TCP, no TLS (`https://` peer URLs are accepted as etcd accepts them but
//! are spoken to in the clear); no rate limiting beyond the queue bound.

use std::collections::HashMap;
use std::io::{IoSlice, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::url::MemberUrl;

/// Largest frame accepted (a snapshot of a big store fits; anything larger is corrupt).
pub const MAX_FRAME: usize = 1 << 30;

/// Most bytes of a frame buffered ahead of their arrival.
const FRAME_READ_CHUNK: usize = 64 * 1024;

/// Frames queued per peer before new ones are dropped.
const QUEUE_DEPTH: usize = 8192;

/// Bytes waiting for a connected peer's socket to drain before new frames are dropped.
const MAX_PENDING: usize = 64 << 20;

/// Frames the raft loop gives one `writev`.
const MAX_IOV: usize = 64;

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionKind {
    /// A stream of raft message frames.
    Raft = 1,
    /// One members query; the answer is one frame of JSON.
    Members = 2,
}

/// The first 29 bytes of every peer connection.
///
/// Wire format (all integers big-endian):
///
/// | offset | width | field |
/// |---|---|---|
/// | 0 | 4 | magic `TBPR` |
/// | 4 | 1 | version, 1 |
/// | 5 | 1 | kind: 1 raft stream, 2 members query |
/// | 6 | 8 | cluster id (0 = unknown, for a joining member's query) |
/// | 14 | 8 | sender member id (0 = unknown) |
/// | 22 | 8 | receiver member id (0 = unknown) |
///
/// (30 bytes in all.) The receiver answers one byte, a [`Verdict`]. Then frames follow,
/// each `u32 length` + that many bytes (length ≤ [`MAX_FRAME`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// What the connection is for.
    pub kind: ConnectionKind,
    /// The sender's cluster id.
    pub cluster_id: u64,
    /// The sender's member id.
    pub from: u64,
    /// The intended receiver's member id.
    pub to: u64,
}

const MAGIC: &[u8; 4] = b"TBPR";
const VERSION: u8 = 1;
const HANDSHAKE_LEN: usize = 30;

impl Handshake {
    /// Encodes the handshake (see the table above).
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = self.kind as u8;
        out[6..14].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[14..22].copy_from_slice(&self.from.to_be_bytes());
        out[22..30].copy_from_slice(&self.to.to_be_bytes());
        out
    }

    /// Decodes a handshake; `None` for a foreign or unsupported connection.
    pub fn decode(bytes: &[u8; HANDSHAKE_LEN]) -> Option<Handshake> {
        if &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return None;
        }
        let kind = match bytes[5] {
            1 => ConnectionKind::Raft,
            2 => ConnectionKind::Members,
            _ => return None,
        };
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Some(Handshake {
            kind,
            cluster_id: word(6),
            from: word(14),
            to: word(22),
        })
    }
}

/// The receiver's one-byte answer to a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Accepted = 0,
    /// The sender belongs to another cluster (ids differ); the connection closes.
    ClusterMismatch = 1,
    /// The sender was removed from the cluster; it must stop.
    Removed = 2,
    /// The receiver is not the member the sender meant (`to` differs); try later.
    WrongMember = 3,
}

impl Verdict {
    fn from_byte(byte: u8) -> Option<Verdict> {
        match byte {
            0 => Some(Verdict::Accepted),
            1 => Some(Verdict::ClusterMismatch),
            2 => Some(Verdict::Removed),
            3 => Some(Verdict::WrongMember),
            _ => None,
        }
    }
}

/// What the peer port needs from the member.
pub trait PeerHandler: Send + Sync + 'static {
    /// This member's id (0 while a joining member does not know it yet).
    fn local_id(&self) -> u64;
    /// The cluster id (0 while unknown).
    fn cluster_id(&self) -> u64;
    /// Whether `id` was removed from the cluster.
    fn is_removed(&self, id: u64) -> bool;
    /// A raft message frame arrived from `from`.
    fn on_raft_frame(&self, from: u64, frame: Bytes);
    /// The JSON answer to a members query.
    fn members_json(&self) -> Bytes;
    /// A peer told us we were removed from the cluster.
    fn on_removed(&self);
    /// A snapshot message to `to` was delivered (`true`) or failed (`false`).
    fn snapshot_sent(&self, to: u64, delivered: bool);
    /// Offers an accepted raft stream from `from` (handshake done, socket non-blocking) to
    /// be read elsewhere, e.g. by the raft thread through a [`FrameReader`]. Gives it
    /// back if not taken, and the peer port reads its frames itself. The default takes
    /// none.
    fn adopt_raft_stream(
        &self,
        from: u64,
        stream: std::net::TcpStream,
    ) -> Result<(), std::net::TcpStream> {
        let _ = from;
        Err(stream)
    }
}

/// Per-peer counters for `/v2/stats/leader` and `/v2/stats/self`.
#[derive(Default, Debug)]
pub struct PeerCounters {
    /// Frames written successfully.
    pub sent: AtomicU64,
    /// Frames dropped (queue full, connection failure).
    pub failed: AtomicU64,
    /// Whether an outbound connection is up right now.
    pub connected: std::sync::atomic::AtomicBool,
}

struct Peer {
    urls: Vec<MemberUrl>,
    queue: mpsc::Sender<Bytes>,
    counters: Arc<PeerCounters>,
    urls_changed: watch::Sender<Vec<MemberUrl>>,
    direct: Arc<Direct>,
}

/// A peer's connection as the raft loop writes to it (see the module documentation).
#[derive(Default)]
struct Direct {
    state: Mutex<DirectState>,
    /// Wakes the peer's task: bytes are pending, or the connection broke.
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct DirectState {
    /// The connection (non-blocking) while it is up.
    stream: Option<std::net::TcpStream>,
    /// Bytes the socket did not take yet; the task writes them, and new frames go behind.
    pending: Pending,
}

/// Bytes waiting to be written, in order: the unwritten ones are `buf[start..]`. Written
/// bytes are dropped from the front in bulk, so a long backlog costs linear time.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    start: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.start >= self.buf.len()
    }

    fn len(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }

    /// `n` more bytes were written.
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.clear();
        } else if self.start >= 1 << 20 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

/// Appends frames (each a `u32` length and its bytes) to `out`.
fn append_frames(out: &mut Vec<u8>, frames: &[Bytes]) {
    for frame in frames {
        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        out.extend_from_slice(frame);
    }
}

/// Writes frames to a non-blocking socket with one `writev`; returns the bytes written
/// (maybe fewer than all, 0 when the socket is full).
fn write_frames(mut stream: &std::net::TcpStream, frames: &[Bytes]) -> std::io::Result<usize> {
    let headers: Vec<[u8; 4]> = frames
        .iter()
        .map(|f| (f.len() as u32).to_be_bytes())
        .collect();
    let mut slices = Vec::with_capacity(frames.len() * 2);
    for (header, frame) in headers.iter().zip(frames) {
        slices.push(IoSlice::new(header));
        slices.push(IoSlice::new(frame));
    }
    match stream.write_vectored(&slices) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Appends what `write_frames` left unwritten (`written` bytes went out) to `out`.
fn append_unwritten(out: &mut Vec<u8>, frames: &[Bytes], mut written: usize) {
    for frame in frames {
        let header = (frame.len() as u32).to_be_bytes();
        for part in [&header[..], &frame[..]] {
            if written >= part.len() {
                written -= part.len();
            } else {
                out.extend_from_slice(&part[written..]);
                written = 0;
            }
        }
    }
}

/// Sends frames to peers; one task and one queue per peer.
pub struct PeerSender<H: PeerHandler> {
    handler: Arc<H>,
    peers: Mutex<HashMap<u64, Peer>>,
    shutdown: watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
    /// Total frames sent to any peer.
    pub sent_total: AtomicU64,
}

impl<H: PeerHandler> PeerSender<H> {
    /// A sender with no peers yet; its tasks run on the current tokio runtime (so it must
    /// be created inside one), and its methods may then be called from any thread.
    pub fn new(handler: Arc<H>, shutdown: watch::Receiver<bool>) -> Arc<PeerSender<H>> {
        Arc::new(PeerSender {
            handler,
            peers: Mutex::new(HashMap::new()),
            shutdown,
            runtime: tokio::runtime::Handle::current(),
            sent_total: AtomicU64::new(0),
        })
    }

    /// Adds a peer or updates its URLs.
    pub fn upsert_peer(self: &Arc<Self>, id: u64, urls: Vec<MemberUrl>) {
        let mut peers = self.peers.lock();
        if let Some(peer) = peers.get_mut(&id) {
            if peer.urls != urls {
                peer.urls = urls.clone();
                let _ = peer.urls_changed.send(urls);
            }
            return;
        }
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let counters = Arc::new(PeerCounters::default());
        let (urls_changed, urls_watch) = watch::channel(urls.clone());
        let direct = Arc::new(Direct::default());
        peers.insert(
            id,
            Peer {
                urls,
                queue,
                counters: counters.clone(),
                urls_changed,
                direct: direct.clone(),
            },
        );
        let this = self.clone();
        self.runtime.spawn(async move {
            this.run_peer(id, urls_watch, receiver, counters, direct)
                .await
        });
    }

    /// Forgets a peer (its task ends when its queue closes).
    pub fn remove_peer(&self, id: u64) {
        self.peers.lock().remove(&id);
    }

    /// Ids of the known peers.
    pub fn peer_ids(&self) -> Vec<u64> {
        self.peers.lock().keys().copied().collect()
    }

    /// Whether an outbound connection to `id` is up.
    pub fn is_connected(&self, id: u64) -> bool {
        self.peers
            .lock()
            .get(&id)
            .is_some_and(|p| p.counters.connected.load(Ordering::Relaxed))
    }

    /// The peers' URLs, by id.
    pub fn peer_urls(&self, id: u64) -> Option<Vec<MemberUrl>> {
        self.peers.lock().get(&id).map(|p| p.urls.clone())
    }

    /// Counters of one peer.
    pub fn counters(&self, id: u64) -> Option<Arc<PeerCounters>> {
        self.peers.lock().get(&id).map(|p| p.counters.clone())
    }

    /// Sends a raft frame to `to` (see [`PeerSender::send_many`]).
    pub fn send(&self, to: u64, frame: Bytes) -> bool {
        self.send_many(to, vec![frame])
    }

    /// Sends raft frames to `to`, in order: written straight into the socket while the
    /// connection is up (what does not fit is left to the peer's task), else queued for
    /// the next connection. Dropped (and counted) when the peer is unknown, the queue or
    /// the pending bytes are full, or the connection just broke. Returns whether they were
    /// taken.
    pub fn send_many(&self, to: u64, frames: Vec<Bytes>) -> bool {
        let peers = self.peers.lock();
        let Some(peer) = peers.get(&to) else {
            return false;
        };
        let n = frames.len() as u64;
        // Held throughout, also while queueing: the task moves the queue into `pending` and
        // publishes a new connection under this lock, so frames keep their order.
        let mut state = peer.direct.state.lock();
        let state = &mut *state;
        let Some(stream) = &state.stream else {
            for frame in frames {
                if peer.queue.try_send(frame).is_err() {
                    peer.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            return true;
        };
        if !state.pending.is_empty() {
            // The task is writing (it was woken when the bytes became pending).
            if state.pending.len() > MAX_PENDING {
                peer.counters.failed.fetch_add(n, Ordering::Relaxed);
                return false;
            }
            append_frames(&mut state.pending.buf, &frames);
        } else {
            let mut written_all = true;
            for chunk in frames.chunks(MAX_IOV) {
                if !written_all {
                    append_frames(&mut state.pending.buf, chunk);
                    continue;
                }
                let total: usize = chunk.iter().map(|f| f.len() + 4).sum();
                match write_frames(stream, chunk) {
                    Ok(written) if written == total => {}
                    Ok(written) => {
                        append_unwritten(&mut state.pending.buf, chunk, written);
                        written_all = false;
                    }
                    Err(_) => {
                        // Broken: the task reconnects; raft resends what was lost.
                        state.stream = None;
                        state.pending.clear();
                        peer.direct.wake.notify_one();
                        peer.counters.failed.fetch_add(n, Ordering::Relaxed);
                        return false;
                    }
                }
            }
            if !written_all {
                peer.direct.wake.notify_one();
            }
        }
        peer.counters.sent.fetch_add(n, Ordering::Relaxed);
        self.sent_total.fetch_add(n, Ordering::Relaxed);
        true
    }

    /// Sends a (large) snapshot frame on a connection of its own and reports the outcome
    /// through [`PeerHandler::snapshot_sent`].
    pub fn send_snapshot(self: &Arc<Self>, to: u64, frame: Bytes) {
        let Some(urls) = self.peer_urls(to) else {
            self.handler.snapshot_sent(to, false);
            return;
        };
        let this = self.clone();
        self.runtime.spawn(async move {
            let mut delivered = false;
            for url in &urls {
                if let Ok(mut stream) = this.connect(url, to, ConnectionKind::Raft).await {
                    let mut header = [0u8; 4];
                    header.copy_from_slice(&(frame.len() as u32).to_be_bytes());
                    if stream.write_all(&header).await.is_ok()
                        && stream.write_all(&frame).await.is_ok()
                        && stream.flush().await.is_ok()
                    {
                        let _ = stream.shutdown().await;
                        delivered = true;
                        break;
                    }
                }
            }
            this.handler.snapshot_sent(to, delivered);
        });
    }

    async fn connect(
        &self,
        url: &MemberUrl,
        to: u64,
        kind: ConnectionKind,
    ) -> std::io::Result<TcpStream> {
        let mut stream =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(url.host_port()))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
        stream.set_nodelay(true)?;
        let handshake = Handshake {
            kind,
            cluster_id: self.handler.cluster_id(),
            from: self.handler.local_id(),
            to,
        };
        stream.write_all(&handshake.encode()).await?;
        let mut verdict = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut verdict))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no verdict"))??;
        match Verdict::from_byte(verdict[0]) {
            Some(Verdict::Accepted) => Ok(stream),
            Some(Verdict::Removed) => {
                self.handler.on_removed();
                Err(std::io::Error::other(
                    "this member was removed from the cluster",
                ))
            }
            other => Err(std::io::Error::other(format!(
                "peer refused the connection: {other:?}"
            ))),
        }
    }

    async fn run_peer(
        self: Arc<Self>,
        id: u64,
        urls: watch::Receiver<Vec<MemberUrl>>,
        queue: mpsc::Receiver<Bytes>,
        counters: Arc<PeerCounters>,
        direct: Arc<Direct>,
    ) {
        self.run_peer_connections(id, urls, queue, &counters, &direct)
            .await;
        // The peer is gone or the member stops: nothing writes to it any more.
        let mut state = direct.state.lock();
        state.stream = None;
        state.pending.clear();
        counters.connected.store(false, Ordering::Relaxed);
    }

    async fn run_peer_connections(
        &self,
        id: u64,
        mut urls: watch::Receiver<Vec<MemberUrl>>,
        mut queue: mpsc::Receiver<Bytes>,
        counters: &PeerCounters,
        direct: &Direct,
    ) {
        let mut shutdown = self.shutdown.clone();
        let mut backoff = Duration::from_millis(50);
        let mut next_url = 0usize;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let candidates = urls.borrow_and_update().clone();
            let Some(url) = candidates.get(next_url % candidates.len().max(1)).cloned() else {
                // No URL to reach it at (yet): wait for one, dropping what queues meanwhile
                // (raft resends). Ending here would leave the peer unreachable for good.
                if !drop_queued(&mut queue, counters) {
                    return;
                }
                tokio::select! {
                    _ = shutdown.changed() => return,
                    changed = urls.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    frame = queue.recv() => {
                        let Some(_stale) = frame else { return };
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            };
            next_url = next_url.wrapping_add(1);
            let stream = match self.connect(&url, id, ConnectionKind::Raft).await {
                Ok(stream) => stream,
                Err(_) => {
                    // Drop what queued up while the peer was unreachable: raft resends.
                    if !drop_queued(&mut queue, counters) {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                        changed = urls.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            // The raft loop writes through `raw` (a second handle on the same socket); this
            // task waits for writability on `stream` and writes what is pending through it.
            let stream = match stream
                .into_std()
                .and_then(|s| s.try_clone().map(|c| (s, c)))
                .and_then(|(s, c)| TcpStream::from_std(s).map(|s| (s, c)))
            {
                Ok((stream, raw)) => {
                    // What queued while the connection was down goes first, then the raft
                    // loop may write (both under the lock `send_many` holds).
                    let mut state = direct.state.lock();
                    let mut queued = Vec::new();
                    while let Ok(frame) = queue.try_recv() {
                        queued.push(frame);
                    }
                    append_frames(&mut state.pending.buf, &queued);
                    counters
                        .sent
                        .fetch_add(queued.len() as u64, Ordering::Relaxed);
                    self.sent_total
                        .fetch_add(queued.len() as u64, Ordering::Relaxed);
                    state.stream = Some(raw);
                    if !state.pending.is_empty() {
                        direct.wake.notify_one();
                    }
                    stream
                }
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            counters.connected.store(true, Ordering::Relaxed);
            let broken = 'connected: loop {
                tokio::select! {
                    frame = queue.recv() => {
                        // Queued while the connection was down: it goes behind what is
                        // pending.
                        let Some(frame) = frame else { return };
                        let mut frames = vec![frame];
                        while let Ok(frame) = queue.try_recv() {
                            frames.push(frame);
                        }
                        let mut state = direct.state.lock();
                        append_frames(&mut state.pending.buf, &frames);
                        counters.sent.fetch_add(frames.len() as u64, Ordering::Relaxed);
                        self.sent_total.fetch_add(frames.len() as u64, Ordering::Relaxed);
                    }
                    _ = direct.wake.notified() => {}
                    _ = shutdown.changed() => return,
                    changed = urls.changed() => {
                        if changed.is_err() {
                            // The peer was removed.
                            return;
                        }
                        break 'connected false;
                    }
                }
                // Write what is pending, waiting for the socket to drain as needed.
                loop {
                    {
                        let mut state = direct.state.lock();
                        if state.stream.is_none() {
                            break 'connected true;
                        }
                        if state.pending.is_empty() {
                            break;
                        }
                        match stream.try_write(state.pending.bytes()) {
                            Ok(n) => {
                                state.pending.consume(n);
                                continue;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => {
                                state.stream = None;
                                state.pending.clear();
                                break 'connected true;
                            }
                        }
                    }
                    tokio::select! {
                        ready = stream.writable() => {
                            if ready.is_err() {
                                break 'connected true;
                            }
                        }
                        _ = shutdown.changed() => return,
                    }
                }
            };
            {
                let mut state = direct.state.lock();
                state.stream = None;
                if broken {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
                state.pending.clear();
            }
            counters.connected.store(false, Ordering::Relaxed);
        }
    }
}

/// Drops (and counts as failed) the frames queued for a peer that cannot be reached now;
/// raft resends. False if the queue is closed: the peer was removed.
fn drop_queued(queue: &mut mpsc::Receiver<Bytes>, counters: &PeerCounters) -> bool {
    loop {
        match queue.try_recv() {
            Ok(_stale) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
            Err(mpsc::error::TryRecvError::Empty) => return true,
        }
    }
}

/// Asks the members at `urls` for the cluster's member list (a joining member's first
/// step). Returns the first answer.
pub async fn query_members(urls: &[MemberUrl]) -> Result<Bytes, String> {
    let mut last_error = String::from("no peer URLs to ask");
    for url in urls {
        let attempt = async {
            let mut stream = TcpStream::connect(url.host_port()).await?;
            let handshake = Handshake {
                kind: ConnectionKind::Members,
                cluster_id: 0,
                from: 0,
                to: 0,
            };
            stream.write_all(&handshake.encode()).await?;
            let mut verdict = [0u8; 1];
            stream.read_exact(&mut verdict).await?;
            if verdict[0] != Verdict::Accepted as u8 {
                return Err(std::io::Error::other("members query refused"));
            }
            read_frame(&mut stream)
                .await?
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no answer"))
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(error)) => last_error = format!("{url}: {error}"),
            Err(_) => last_error = format!("{url}: timed out"),
        }
    }
    Err(last_error)
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<Bytes>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME} byte limit"),
        ));
    }
    // Grow with the bytes that actually arrive: a peer that sends only a header claiming
    // `MAX_FRAME` bytes must not make us allocate them (found by fuzz/peer_decode).
    let mut frame = Vec::with_capacity(len.min(FRAME_READ_CHUNK));
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut frame)
        .await?;
    if frame.len() < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("frame cut short: {} of {len} bytes", frame.len()),
        ));
    }
    Ok(Some(Bytes::from(frame)))
}

/// Accepts peer connections until `shutdown` turns true.
pub async fn serve_peers<H: PeerHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handler = handler.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_peer_connection(stream, handler) => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

async fn serve_peer_connection<H: PeerHandler>(
    mut stream: TcpStream,
    handler: Arc<H>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let Some(handshake) = accept_stream(&mut stream, &*handler).await? else {
        return Ok(());
    };
    // Nothing was read past the handshake, so whoever adopts the socket gets every frame.
    match handler.adopt_raft_stream(handshake.from, stream.into_std()?) {
        Ok(()) => Ok(()),
        Err(stream) => read_raft_frames(TcpStream::from_std(stream)?, handshake, handler).await,
    }
}

/// Serves one inbound peer connection on any byte stream: handshake, verdict, then
/// frames (or the members answer). Public for the fuzz target (`fuzz/`), not an API.
#[doc(hidden)]
pub async fn serve_peer_stream<S, H>(mut stream: S, handler: Arc<H>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: PeerHandler,
{
    match accept_stream(&mut stream, &*handler).await? {
        Some(handshake) => read_raft_frames(stream, handshake, handler).await,
        None => Ok(()),
    }
}

/// Reads the handshake (exactly its bytes, no more) and answers it. Returns the handshake
/// of an accepted raft stream; a members query is answered here, and anything else closed.
async fn accept_stream<S, H>(stream: &mut S, handler: &H) -> std::io::Result<Option<Handshake>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: PeerHandler,
{
    let mut raw = [0u8; HANDSHAKE_LEN];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no handshake"))??;
    let Some(handshake) = Handshake::decode(&raw) else {
        return Ok(None); // not one of ours: close
    };
    let verdict = if handshake.kind == ConnectionKind::Members {
        Verdict::Accepted
    } else if handler.cluster_id() != 0
        && handshake.cluster_id != 0
        && handshake.cluster_id != handler.cluster_id()
    {
        Verdict::ClusterMismatch
    } else if handler.is_removed(handshake.from) {
        Verdict::Removed
    } else if handler.local_id() != 0 && handshake.to != 0 && handshake.to != handler.local_id() {
        Verdict::WrongMember
    } else {
        Verdict::Accepted
    };
    stream.write_all(&[verdict as u8]).await?;
    if verdict != Verdict::Accepted {
        return Ok(None);
    }
    if handshake.kind == ConnectionKind::Members {
        let answer = handler.members_json();
        stream
            .write_all(&(answer.len() as u32).to_be_bytes())
            .await?;
        stream.write_all(&answer).await?;
        stream.flush().await?;
        return Ok(None);
    }
    Ok(Some(handshake))
}

/// Hands every frame of an accepted raft stream to the handler until it ends.
async fn read_raft_frames<S, H>(
    stream: S,
    handshake: Handshake,
    handler: Arc<H>,
) -> std::io::Result<()>
where
    S: AsyncRead + Unpin,
    H: PeerHandler,
{
    // Buffered: one read syscall brings in every frame the sender flushed together
    // (its batches), instead of two reads (length, body) per frame.
    let mut stream = BufReader::with_capacity(64 * 1024, stream);
    let started = Instant::now();
    while let Some(frame) = read_frame(&mut stream).await? {
        if handler.is_removed(handshake.from) {
            // Close; the sender's next connection gets the `Removed` verdict and stops.
            break;
        }
        handler.on_raft_frame(handshake.from, frame);
    }
    tracing::debug!(from = handshake.from, lived = ?started.elapsed(), "peer stream closed");
    Ok(())
}

/// Reads length-prefixed frames from a non-blocking socket as their bytes arrive: how
/// the raft thread reads a raft stream it adopted ([`PeerHandler::adopt_raft_stream`]).
///
/// One buffer per connection, 64 KiB to start; a frame larger than the buffer grows it
/// (at most doubling, and never past what that frame still needs, so a header claiming a
/// huge frame costs nothing until its bytes come), and it shrinks back once empty.
pub struct FrameReader {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    /// Reads `stream` (which must be non-blocking).
    pub fn new(stream: std::net::TcpStream) -> FrameReader {
        FrameReader {
            stream,
            buf: vec![0; FRAME_READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// The socket.
    pub fn stream(&self) -> &std::net::TcpStream {
        &self.stream
    }

    /// Bytes of the frame in progress (`None` while its length is incomplete).
    fn frame_in_progress(&self) -> Option<usize> {
        if self.end - self.start < 4 {
            return None;
        }
        let head = self.buf.get(self.start..self.start + 4)?;
        Some(u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize)
    }

    /// Reads what has arrived (about `budget` bytes at most) and calls `on_frame` with
    /// each complete frame, in order. `Closed` at the end of the stream, on an error, or
    /// on a frame over [`MAX_FRAME`].
    pub fn read(
        &mut self,
        budget: usize,
        mut on_frame: impl FnMut(&[u8]),
    ) -> crate::node::InboundRead {
        use crate::node::InboundRead;
        use std::io::Read as _;
        let mut taken = 0usize;
        loop {
            while let Some(len) = self.frame_in_progress() {
                if len > MAX_FRAME {
                    tracing::warn!(len, "peer frame over the size limit; connection closed");
                    return InboundRead::Closed;
                }
                if self.end - self.start < 4 + len {
                    break;
                }
                on_frame(&self.buf[self.start + 4..self.start + 4 + len]);
                self.start += 4 + len;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                if self.buf.len() > 4 * FRAME_READ_CHUNK {
                    self.buf = vec![0; FRAME_READ_CHUNK];
                }
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if taken >= budget {
                return InboundRead::More;
            }
            if self.end == self.buf.len() {
                // A frame bigger than the buffer is in progress (its length is known:
                // the buffer holds more than 4 bytes): grow with its arrival.
                let needed = 4 + self.frame_in_progress().unwrap_or(0);
                let grown = needed.min(self.buf.len().saturating_mul(2));
                self.buf.resize(grown.max(self.buf.len() + 1), 0);
            }
            match (&self.stream).read(&mut self.buf[self.end..]) {
                Ok(0) => return InboundRead::Closed,
                Ok(n) => {
                    self.end += n;
                    taken += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return InboundRead::Drained
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::debug!(%error, "peer stream failed");
                    return InboundRead::Closed;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn handshake_round_trip() {
        let handshake = Handshake {
            kind: ConnectionKind::Raft,
            cluster_id: 0xabc,
            from: 1,
            to: u64::MAX,
        };
        assert_eq!(Handshake::decode(&handshake.encode()), Some(handshake));
        let mut foreign = handshake.encode();
        foreign[0] = b'G';
        assert_eq!(Handshake::decode(&foreign), None);
        let mut future = handshake.encode();
        future[4] = 2;
        assert_eq!(Handshake::decode(&future), None);
    }

    struct Recorder {
        id: u64,
        cluster: u64,
        removed: Vec<u64>,
        frames: Mutex<Vec<(u64, Bytes)>>,
        told_removed: AtomicBool,
        snapshots: Mutex<Vec<(u64, bool)>>,
    }

    impl Recorder {
        fn new(id: u64, cluster: u64, removed: Vec<u64>) -> Arc<Recorder> {
            Arc::new(Recorder {
                id,
                cluster,
                removed,
                frames: Mutex::new(Vec::new()),
                told_removed: AtomicBool::new(false),
                snapshots: Mutex::new(Vec::new()),
            })
        }
    }

    impl PeerHandler for Recorder {
        fn local_id(&self) -> u64 {
            self.id
        }
        fn cluster_id(&self) -> u64 {
            self.cluster
        }
        fn is_removed(&self, id: u64) -> bool {
            self.removed.contains(&id)
        }
        fn on_raft_frame(&self, from: u64, frame: Bytes) {
            self.frames.lock().push((from, frame));
        }
        fn members_json(&self) -> Bytes {
            Bytes::from_static(b"{\"members\":[]}")
        }
        fn on_removed(&self) {
            self.told_removed.store(true, Ordering::SeqCst);
        }
        fn snapshot_sent(&self, to: u64, delivered: bool) {
            self.snapshots.lock().push((to, delivered));
        }
    }

    async fn wait_for(mut condition: impl FnMut() -> bool) {
        for _ in 0..200 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 2 s");
    }

    async fn listen(handler: Arc<Recorder>, shutdown: watch::Receiver<bool>) -> MemberUrl {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve_peers(listener, handler, shutdown));
        MemberUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_members_query_answers() {
        let (_stop, shutdown) = watch::channel(false);
        let receiver = Recorder::new(2, 7, vec![]);
        let url = listen(receiver.clone(), shutdown.clone()).await;
        let sender_handler = Recorder::new(1, 7, vec![]);
        let sender = PeerSender::new(sender_handler.clone(), shutdown.clone());
        sender.upsert_peer(2, vec![url.clone()]);
        for i in 0..100u32 {
            assert!(sender.send(2, Bytes::from(i.to_be_bytes().to_vec())));
        }
        wait_for(|| receiver.frames.lock().len() == 100).await;
        let frames = receiver.frames.lock().clone();
        for (i, (from, frame)) in frames.iter().enumerate() {
            assert_eq!(*from, 1);
            assert_eq!(frame.as_ref(), (i as u32).to_be_bytes());
        }
        sender.send_snapshot(2, Bytes::from(vec![7u8; 1 << 20]));
        wait_for(|| sender_handler.snapshots.lock().len() == 1).await;
        assert_eq!(sender_handler.snapshots.lock()[0], (2, true));
        wait_for(|| receiver.frames.lock().len() == 101).await;
        assert_eq!(receiver.frames.lock()[100].1.len(), 1 << 20);
        let answer = query_members(&[url]).await.unwrap();
        assert_eq!(answer.as_ref(), b"{\"members\":[]}");
    }

    /// A connected pair of loopback sockets; the second is non-blocking.
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        reader.set_nonblocking(true).unwrap();
        (writer, reader)
    }

    /// Reads until the socket would block; returns the frames seen and the last outcome.
    fn read_all(reader: &mut FrameReader, frames: &mut Vec<Vec<u8>>) -> crate::node::InboundRead {
        loop {
            let outcome = reader.read(usize::MAX, |f| frames.push(f.to_vec()));
            if outcome != crate::node::InboundRead::More {
                return outcome;
            }
        }
    }

    /// Frames of every size from empty to several buffers long, written in pieces cut at
    /// every offset pattern, come out whole and in order, and the buffer shrinks back.
    #[test]
    fn frame_reader_reassembles_frames_split_anywhere() {
        use crate::node::InboundRead;
        let sizes = [
            0usize, 1, 3, 4, 5, 100, 65_531, 65_532, 65_536, 200_000, 7, 0, 1_000_000,
        ];
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (0..*n).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            wire.extend_from_slice(frame);
        }
        for piece in [1usize, 2, 3, 5, 4096, 65_537, wire.len()] {
            let (mut writer, reader) = socket_pair();
            let mut reader = FrameReader::new(reader);
            let mut seen = Vec::new();
            // Small pieces: a few hundred bytes of each size and then the rest in bulk,
            // so the test stays quick while every header split is still covered.
            let mut offset = 0;
            let mut writes = 0;
            while offset < wire.len() {
                let step = if writes < 600 { piece } else { 256 * 1024 };
                let end = (offset + step).min(wire.len());
                writer.write_all(&wire[offset..end]).unwrap();
                offset = end;
                writes += 1;
                assert_eq!(read_all(&mut reader, &mut seen), InboundRead::Drained);
            }
            drop(writer);
            let deadline = Instant::now() + Duration::from_secs(20);
            while seen.len() < frames.len() {
                assert!(
                    Instant::now() < deadline,
                    "piece {piece}: {} frames",
                    seen.len()
                );
                match read_all(&mut reader, &mut seen) {
                    InboundRead::Drained => std::thread::sleep(Duration::from_millis(1)),
                    InboundRead::Closed => break,
                    InboundRead::More => unreachable!(),
                }
            }
            assert_eq!(seen.len(), frames.len(), "piece {piece}");
            assert!(seen == frames, "piece {piece}: frames differ");
            assert_eq!(read_all(&mut reader, &mut seen), InboundRead::Closed);
            assert!(
                reader.buf.len() <= 4 * FRAME_READ_CHUNK,
                "buffer shrank back"
            );
        }
    }

    /// Bytes past the last complete frame are old buffer contents, never a header: a big
    /// frame of 0xFF bytes, then a small one ending at a read boundary.
    #[test]
    fn frame_reader_never_reads_a_header_from_old_bytes() {
        use crate::node::InboundRead;
        let (mut writer, reader) = socket_pair();
        let mut reader = FrameReader::new(reader);
        let mut seen = Vec::new();
        for len in [60_000usize, 10, 3, 60_000, 0, 10] {
            writer.write_all(&(len as u32).to_be_bytes()).unwrap();
            writer.write_all(&vec![0xFF; len]).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let before = seen.len();
            while seen.len() == before {
                assert!(Instant::now() < deadline);
                assert_eq!(read_all(&mut reader, &mut seen), InboundRead::Drained);
            }
            assert_eq!(seen.last().map(Vec::len), Some(len));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Model: the frames written. Whatever the frame sizes, the cuts between writes
        /// and the read budgets, the reader hands out exactly those frames, in order.
        #[test]
        fn frame_reader_matches_the_frames_written(
            frames in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), 0..24),
            cuts in proptest::collection::vec(1usize..5000, 1..40),
            budget in 1usize..70_000,
        ) {
            use crate::node::InboundRead;
            let mut wire = Vec::new();
            for frame in &frames {
                wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                wire.extend_from_slice(frame);
            }
            let (mut writer, reader) = socket_pair();
            let mut reader = FrameReader::new(reader);
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut offset = 0;
            for cut in cuts.iter().cycle() {
                if offset >= wire.len() {
                    break;
                }
                let end = (offset + cut).min(wire.len());
                writer.write_all(&wire[offset..end]).unwrap();
                offset = end;
                while reader.read(budget, |f| seen.push(f.to_vec())) == InboundRead::More {}
            }
            drop(writer);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                proptest::prop_assert!(Instant::now() < deadline);
                match reader.read(budget, |f| seen.push(f.to_vec())) {
                    InboundRead::Closed => break,
                    InboundRead::Drained => std::thread::sleep(Duration::from_millis(1)),
                    InboundRead::More => {}
                }
            }
            proptest::prop_assert_eq!(seen, frames);
        }
    }

    /// The budget bounds the bytes one call reads: what is left comes with the next.
    #[test]
    fn frame_reader_stops_at_its_budget() {
        use crate::node::InboundRead;
        let (mut writer, reader) = socket_pair();
        let mut reader = FrameReader::new(reader);
        let mut wire = Vec::new();
        for i in 0..300u32 {
            wire.extend_from_slice(&1000u32.to_be_bytes());
            wire.extend_from_slice(&[i as u8; 1000]);
        }
        let writing = std::thread::spawn(move || writer.write_all(&wire).unwrap());
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut calls_with_more = 0;
        while seen.len() < 300 {
            assert!(Instant::now() < deadline);
            match reader.read(4000, |f| seen.push(f[0])) {
                InboundRead::More => calls_with_more += 1,
                InboundRead::Drained => std::thread::sleep(Duration::from_millis(1)),
                InboundRead::Closed => panic!("closed"),
            }
        }
        writing.join().unwrap();
        // Each call reads at most one buffer (64 KiB) once past its budget.
        assert!(
            calls_with_more >= 300_000 / FRAME_READ_CHUNK,
            "{calls_with_more}"
        );
        assert_eq!(seen, (0..300u32).map(|i| i as u8).collect::<Vec<u8>>());
    }

    /// A header claiming more than `MAX_FRAME` closes the connection, and one claiming a
    /// large frame allocates only as its bytes arrive.
    #[test]
    fn frame_reader_refuses_oversized_frames_and_grows_with_arrival() {
        use crate::node::InboundRead;
        let (mut writer, reader) = socket_pair();
        let mut reader = FrameReader::new(reader);
        writer.write_all(&(MAX_FRAME as u32).to_be_bytes()).unwrap();
        writer.write_all(&[1; 100]).unwrap();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while reader.end < 104 {
            assert!(Instant::now() < deadline);
            assert_eq!(read_all(&mut reader, &mut Vec::new()), InboundRead::Drained);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            reader.buf.len(),
            FRAME_READ_CHUNK,
            "nothing allocated ahead"
        );
        writer.write_all(&[1; FRAME_READ_CHUNK]).unwrap();
        while reader.end < 104 + FRAME_READ_CHUNK {
            assert!(Instant::now() < deadline);
            reader.read(usize::MAX, |_| seen += 1);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(seen, 0);
        assert!(
            reader.buf.len() <= 2 * FRAME_READ_CHUNK,
            "{}",
            reader.buf.len()
        );

        let (mut writer, reader) = socket_pair();
        let mut reader = FrameReader::new(reader);
        writer
            .write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .unwrap();
        loop {
            assert!(Instant::now() < deadline);
            match reader.read(usize::MAX, |_| seen += 1) {
                InboundRead::Closed => break,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(seen, 0);
    }

    /// Whatever prefix of a `writev` went out, the rest appended is exactly the remainder
    /// of the frames' encoding.
    #[test]
    fn unwritten_remainder_is_exact_at_every_split() {
        let frames = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from(vec![9u8; 300]),
        ];
        let mut whole = Vec::new();
        append_frames(&mut whole, &frames);
        assert_eq!(whole.len(), 3 * 4 + 303);
        for written in 0..=whole.len() {
            let mut rest = b"before".to_vec();
            append_unwritten(&mut rest, &frames, written);
            assert_eq!(&rest[..6], b"before");
            assert_eq!(&rest[6..], &whole[written..], "split at {written}");
        }
    }

    /// A receiver slower than the sender: what the socket does not take waits in the
    /// pending bytes, frames sent meanwhile queue behind it, and all arrive whole and in
    /// order; the raft side never blocks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_beyond_the_socket_buffer_arrive_in_order() {
        struct Slow(Arc<Recorder>);
        impl PeerHandler for Slow {
            fn local_id(&self) -> u64 {
                self.0.local_id()
            }
            fn cluster_id(&self) -> u64 {
                self.0.cluster_id()
            }
            fn is_removed(&self, id: u64) -> bool {
                self.0.is_removed(id)
            }
            fn on_raft_frame(&self, from: u64, frame: Bytes) {
                if self.0.frames.lock().is_empty() {
                    // The first frame stalls the reader: the sender's socket fills up.
                    std::thread::sleep(Duration::from_millis(300));
                }
                self.0.on_raft_frame(from, frame);
            }
            fn members_json(&self) -> Bytes {
                self.0.members_json()
            }
            fn on_removed(&self) {}
            fn snapshot_sent(&self, _: u64, _: bool) {}
        }
        let (_stop, shutdown) = watch::channel(false);
        let receiver = Recorder::new(2, 7, vec![]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve_peers(
            listener,
            Arc::new(Slow(receiver.clone())),
            shutdown.clone(),
        ));
        let url = MemberUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let sender = PeerSender::new(Recorder::new(1, 7, vec![]), shutdown.clone());
        sender.upsert_peer(2, vec![url]);
        wait_for(|| sender.is_connected(2)).await;
        let frame = |i: u32| {
            let mut bytes = vec![(i % 251) as u8; 16 * 1024];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            Bytes::from(bytes)
        };
        let sending = {
            let sender = sender.clone();
            tokio::task::spawn_blocking(move || {
                let mut saw_pending = false;
                for batch in 0..50u32 {
                    let frames: Vec<Bytes> = (batch * 60..(batch + 1) * 60).map(frame).collect();
                    assert!(sender.send_many(2, frames));
                    let peers = sender.peers.lock();
                    saw_pending |= !peers[&2].direct.state.lock().pending.is_empty();
                }
                saw_pending
            })
        };
        assert!(sending.await.unwrap(), "48 MB never filled the socket");
        for _ in 0..500 {
            if receiver.frames.lock().len() == 3000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let frames = receiver.frames.lock();
        assert_eq!(frames.len(), 3000);
        for (i, (_, f)) in frames.iter().enumerate() {
            assert_eq!(f.as_ref(), frame(i as u32).as_ref(), "frame {i}");
        }
    }

    /// A loopback address nothing listens on (a port reserved, then closed), and its URL.
    async fn closed_port_url() -> (std::net::SocketAddr, MemberUrl) {
        let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        (addr, MemberUrl::parse(&format!("http://{addr}")).unwrap())
    }

    /// A peer removed while unreachable: its task ends (it used to retry at once, forever,
    /// because the closed URL watch woke it every time).
    #[tokio::test]
    async fn removed_peer_task_ends_while_unreachable() {
        let (_stop, shutdown) = watch::channel(false);
        let (_, url) = closed_port_url().await;
        let sender = PeerSender::new(Recorder::new(1, 7, vec![]), shutdown);
        sender.upsert_peer(2, vec![url]);
        let direct = sender.peers.lock()[&2].direct.clone();
        sender.send(2, Bytes::from_static(b"lost"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        sender.remove_peer(2);
        wait_for(|| Arc::strong_count(&direct) == 1).await;
    }

    /// A peer whose URLs were emptied (and later set again) is reached again: its task
    /// waits for URLs instead of ending (it used to end, leaving the peer unreachable for
    /// good once a metadata update carried no peer URLs).
    #[tokio::test]
    async fn peer_without_urls_is_reached_once_it_has_some() {
        let (_stop, shutdown) = watch::channel(false);
        let receiver = Recorder::new(2, 7, vec![]);
        let url = listen(receiver.clone(), shutdown.clone()).await;
        let sender = PeerSender::new(Recorder::new(1, 7, vec![]), shutdown);
        sender.upsert_peer(2, vec![url.clone()]);
        sender.send(2, Bytes::from_static(b"first"));
        wait_for(|| receiver.frames.lock().len() == 1).await;
        sender.upsert_peer(2, vec![]);
        wait_for(|| !sender.is_connected(2)).await;
        sender.send(2, Bytes::from_static(b"dropped"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        sender.upsert_peer(2, vec![url]);
        wait_for(|| {
            sender.send(2, Bytes::from_static(b"again"));
            receiver
                .frames
                .lock()
                .iter()
                .any(|(_, f)| f.as_ref() == b"again")
        })
        .await;
        assert!(!receiver
            .frames
            .lock()
            .iter()
            .any(|(_, f)| f.as_ref() == b"dropped"));
    }

    #[tokio::test]
    async fn removed_member_is_told_and_other_clusters_refused() {
        let (_stop, shutdown) = watch::channel(false);
        let receiver = Recorder::new(2, 7, vec![1]);
        let url = listen(receiver.clone(), shutdown.clone()).await;
        let removed = Recorder::new(1, 7, vec![]);
        let sender = PeerSender::new(removed.clone(), shutdown.clone());
        sender.upsert_peer(2, vec![url.clone()]);
        sender.send(2, Bytes::from_static(b"x"));
        wait_for(|| removed.told_removed.load(Ordering::SeqCst)).await;
        let stranger = Recorder::new(3, 8, vec![]);
        let sender = PeerSender::new(stranger.clone(), shutdown.clone());
        sender.upsert_peer(2, vec![url]);
        sender.send(2, Bytes::from_static(b"y"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(receiver.frames.lock().is_empty());
    }

    #[tokio::test]
    async fn reconnects_after_the_peer_comes_back() {
        let (_stop, shutdown) = watch::channel(false);
        // Reserve a port, close it, start sending, then listen on it.
        let (addr, url) = closed_port_url().await;
        let sender_handler = Recorder::new(1, 7, vec![]);
        let sender = PeerSender::new(sender_handler, shutdown.clone());
        sender.upsert_peer(2, vec![url]);
        sender.send(2, Bytes::from_static(b"lost"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let receiver = Recorder::new(2, 7, vec![]);
        let listener = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(serve_peers(listener, receiver.clone(), shutdown.clone()));
        let mut delivered = false;
        for _ in 0..40 {
            sender.send(2, Bytes::from_static(b"again"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            if receiver
                .frames
                .lock()
                .iter()
                .any(|(_, f)| f.as_ref() == b"again")
            {
                delivered = true;
                break;
            }
        }
        assert!(delivered, "no frame after the peer came back");
    }

    /// Regression (fuzz/peer_decode, corpus file `regress-frame-length-1gib-alloc`): a
    /// header claiming a huge frame followed by a few bytes is a short frame, read as far
    /// as the bytes go, not an allocation of the claimed size; frames longer than the read
    /// chunk arrive whole.
    #[tokio::test]
    async fn frames_are_read_as_their_bytes_arrive() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let big: Vec<u8> = (0..3 * FRAME_READ_CHUNK + 5).map(|i| i as u8).collect();
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                client.write_all(&0u32.to_be_bytes()).await.unwrap();
                client
                    .write_all(&(big.len() as u32).to_be_bytes())
                    .await
                    .unwrap();
                client.write_all(&big).await.unwrap();
                client
                    .write_all(&0x3fff_0000u32.to_be_bytes())
                    .await
                    .unwrap();
                client.write_all(b"abc").await.unwrap();
            })
        };
        assert_eq!(read_frame(&mut server).await.unwrap(), Some(Bytes::new()));
        assert_eq!(
            read_frame(&mut server).await.unwrap(),
            Some(Bytes::from(big))
        );
        writer.await.unwrap();
        let short = read_frame(&mut server).await.unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(short.to_string().contains("3 of 1073676288"), "{short}");
        assert_eq!(read_frame(&mut server).await.unwrap(), None);

        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        let oversized = read_frame(&mut server).await.unwrap_err();
        assert_eq!(oversized.kind(), std::io::ErrorKind::InvalidData);
    }
}
