//! [`NodeHandle`]: a [`RaftNode`] running on its own thread.
//!
//! The thread owns the node. Requests, peer messages and transport feedback arrive over a
//! channel; peer connections handed over with [`NodeHandle::adopt_inbound`] are read by the
//! thread itself, so a message from a peer wakes this one thread and nothing else. The loop
//! waits (epoll, through `mio`) for a request, a readable peer connection or the next
//! tick, then **drains the channel and the readable connections** (so every proposal and
//! message that arrived while the previous `Ready` was being persisted joins the next one:
//! group commit without a timer), ticks if due, and handles the `Ready`. After each
//! iteration it publishes the member's status, so [`NodeHandle::status`] never waits for
//! the thread.
//!
//! Waking: a sender wakes the thread (an eventfd write) only when the thread has said it
//! is about to sleep; while it is busy, requests just queue. The thread announces sleep,
//! then checks the channel once more before waiting, and senders queue before they check
//! the announcement, with a full fence on both sides, so no request is left waiting for
//! the next tick.
//!
//! The thread ends when the member is removed or fails, on [`NodeHandle::shutdown`], or
//! when every handle is dropped. Requests still pending then resolve to
//! [`NodeError::Stopped`].

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::Message;
use raft::SnapshotStatus;

use super::completion::{completion_pair, Completer, Completion};
use super::error::NodeError;
use super::requests::ReadFn;
use super::{
    Applied, Member, MemberChange, MemberInfo, MemberPatch, NodeEvent, NodeStatus, RaftNode,
    ReadConsistency, StateMachine,
};
use crate::storage::Disk;
use crate::transport::{LocalPeer, Transport};

/// Settings of the node thread.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Wall-clock length of one raft tick (etcd's `--heartbeat-interval`; default 100 ms).
    pub tick_interval: Duration,
    /// At most this many requests are drained before a `Ready` is handled.
    pub max_batch: usize,
    /// At most about this many bytes are read from one peer connection before a `Ready`
    /// is handled (a large snapshot arriving does not hold up the loop).
    pub read_budget: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick_interval: Duration::from_millis(100),
            max_batch: 8192,
            read_budget: 1 << 20,
        }
    }
}

/// What [`InboundStream::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundRead {
    /// Everything that had arrived was read (the socket would block).
    Drained,
    /// The byte budget ran out with more to read: the thread comes back to it.
    More,
    /// The connection ended (closed, failed, or no longer wanted): the thread drops it.
    Closed,
}

/// A peer connection whose raft messages the node thread reads itself
/// ([`NodeHandle::adopt_inbound`]): the server's TCP peer port hands each accepted stream
/// over after its handshake. The socket must be non-blocking.
pub trait InboundStream: Send {
    /// The socket to wait on (it stays owned by the stream).
    fn fd(&self) -> RawFd;
    /// Reads what has arrived, about `budget` bytes at most, and appends every complete
    /// message to `out`. Must read until the socket would block (or the budget runs
    /// out): the thread is woken again only by new bytes.
    fn read(&mut self, budget: usize, out: &mut Vec<Message>) -> InboundRead;
}

type Listener = Box<dyn FnMut(&NodeEvent) + Send>;

enum Request<S: StateMachine> {
    Propose(Vec<u8>, Completer<Applied<S::Response>>),
    Read(ReadConsistency, ReadFn<S>),
    Membership(MemberChange, Completer<Applied<Vec<Member>>>),
    Step(Message),
    ReportSnapshot(u64, SnapshotStatus),
    ReportUnreachable(u64),
    NotifyRemoved,
    Campaign,
    TransferLeadership(u64),
    Listen(Listener),
    Inbound(Box<dyn InboundStream>),
    Shutdown,
}

/// How senders wake the node thread.
struct Wake {
    /// The thread is about to wait (or waits) in `poll`.
    sleeping: AtomicBool,
    waker: Waker,
}

const WAKER: Token = Token(0);

struct Shared {
    status: RwLock<NodeStatus>,
    members: RwLock<Vec<Member>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A cloneable handle to a member running on its own thread (see the module
/// documentation). All methods return at once; results come back as [`Completion`]s.
pub struct NodeHandle<S: StateMachine> {
    id: u64,
    sender: mpsc::Sender<Request<S>>,
    wake: Arc<Wake>,
    shared: Arc<Shared>,
}

impl<S: StateMachine> Clone for NodeHandle<S> {
    fn clone(&self) -> Self {
        NodeHandle {
            id: self.id,
            sender: self.sender.clone(),
            wake: Arc::clone(&self.wake),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: StateMachine> NodeHandle<S> {
    /// Starts `node` on a new thread, sending through `transport`.
    pub fn spawn<D, T>(
        node: RaftNode<S, D>,
        transport: T,
        config: DriverConfig,
    ) -> Result<Self, NodeError>
    where
        D: Disk + 'static,
        T: Transport + Send + 'static,
    {
        let id = node.id();
        let (sender, receiver) = mpsc::channel();
        let poll =
            Poll::new().map_err(|e| NodeError::storage("creating the raft thread's poll", e))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| NodeError::storage("creating the raft thread's waker", e))?;
        let wake = Arc::new(Wake {
            sleeping: AtomicBool::new(false),
            waker,
        });
        let shared = Arc::new(Shared {
            status: RwLock::new(node.status()),
            members: RwLock::new(node.membership().members().cloned().collect()),
            thread: Mutex::new(None),
        });
        let thread_shared = Arc::clone(&shared);
        let thread_wake = Arc::clone(&wake);
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id:x}"))
            .spawn(move || {
                let inbox = Inbox {
                    receiver,
                    poll,
                    events: Events::with_capacity(64),
                    wake: thread_wake,
                    streams: HashMap::new(),
                    next_token: 1,
                    readable: Vec::new(),
                    messages: Vec::new(),
                };
                run(node, transport, inbox, config, thread_shared)
            })
            .map_err(|e| NodeError::storage("spawning the raft thread", e))?;
        *shared.thread.lock() = Some(thread);
        Ok(NodeHandle {
            id,
            sender,
            wake,
            shared,
        })
    }

    /// The member id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn send(&self, request: Request<S>) -> bool {
        let sent = self.sender.send(request).is_ok();
        // Pairs with the fence in `Inbox::wait`: either the thread sees this request
        // before it sleeps, or this sees that it sleeps and wakes it.
        fence(Ordering::SeqCst);
        if self.wake.sleeping.load(Ordering::Relaxed)
            && self.wake.sleeping.swap(false, Ordering::AcqRel)
        {
            let _ = self.wake.waker.wake();
        }
        sent
    }

    /// Proposes a state machine command.
    pub fn propose(&self, command: Vec<u8>) -> Completion<Applied<S::Response>> {
        let (done, completer) = completion_pair(self.id);
        // If the thread is gone, the request (and its completer) is dropped: Stopped.
        self.send(Request::Propose(command, completer));
        done
    }

    /// Reads the state machine (`read` runs on the node thread once it is safe).
    pub fn read<R, F>(&self, consistency: ReadConsistency, read: F) -> Completion<R>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        let (done, completer) = completion_pair(self.id);
        let run: ReadFn<S> = Box::new(move |sm: Result<&S, NodeError>| {
            completer.complete(sm.map(read));
        });
        self.send(Request::Read(consistency, run));
        done
    }

    /// Proposes a membership change.
    pub fn change_membership(&self, change: MemberChange) -> Completion<Applied<Vec<Member>>> {
        let (done, completer) = completion_pair(self.id);
        self.send(Request::Membership(change, completer));
        done
    }

    /// Proposes adding a voting member.
    pub fn add_member(&self, id: u64, info: MemberInfo) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::AddMember { id, info })
    }

    /// Proposes adding a learner.
    pub fn add_learner(&self, id: u64, info: MemberInfo) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::AddLearner { id, info })
    }

    /// Proposes promoting a learner.
    pub fn promote_learner(&self, id: u64) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::PromoteLearner { id })
    }

    /// Proposes removing a member.
    pub fn remove_member(&self, id: u64) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::Remove { id })
    }

    /// Proposes a change to a member's metadata (see [`RaftNode::update_member`]).
    pub fn update_member(&self, id: u64, patch: MemberPatch) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::Update { id, patch })
    }

    /// Hands a raft message from a peer to the member.
    pub fn step(&self, message: Message) -> bool {
        self.send(Request::Step(message))
    }

    /// Reports the outcome of a snapshot this member sent.
    pub fn report_snapshot(&self, to: u64, status: SnapshotStatus) {
        self.send(Request::ReportSnapshot(to, status));
    }

    /// Reports that `to` was unreachable.
    pub fn report_unreachable(&self, to: u64) {
        self.send(Request::ReportUnreachable(to));
    }

    /// A peer said this member was removed: it stops.
    pub fn notify_removed(&self) {
        self.send(Request::NotifyRemoved);
    }

    /// Starts an election now.
    pub fn campaign(&self) {
        self.send(Request::Campaign);
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leadership(&self, to: u64) {
        self.send(Request::TransferLeadership(to));
    }

    /// Hands a peer connection to the node thread, which reads its messages from then on
    /// (see [`InboundStream`]) and drops it when it ends or the node stops.
    pub fn adopt_inbound(&self, stream: Box<dyn InboundStream>) {
        self.send(Request::Inbound(stream));
    }

    /// Registers an event listener (runs on the node thread: keep it short, e.g. forward
    /// into a channel).
    pub fn on_event(&self, listener: impl FnMut(&NodeEvent) + Send + 'static) {
        self.send(Request::Listen(Box::new(listener)));
    }

    /// The member's status as of its last loop iteration.
    pub fn status(&self) -> NodeStatus {
        self.shared.status.read().clone()
    }

    /// The members as of the last applied membership change.
    pub fn members(&self) -> Vec<Member> {
        self.shared.members.read().clone()
    }

    /// True while the node thread runs.
    pub fn is_running(&self) -> bool {
        self.shared
            .thread
            .lock()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Stops the node thread and waits for it.
    pub fn shutdown(&self) {
        self.send(Request::Shutdown);
        let thread = self.shared.thread.lock().take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl<S: StateMachine> LocalPeer for NodeHandle<S> {
    fn deliver(&self, message: Message) -> bool {
        self.step(message)
    }

    fn report_snapshot(&self, to: u64, status: SnapshotStatus) {
        NodeHandle::report_snapshot(self, to, status);
    }

    fn report_unreachable(&self, to: u64) {
        NodeHandle::report_unreachable(self, to);
    }

    fn notify_removed(&self) {
        NodeHandle::notify_removed(self);
    }
}

/// What the node thread waits on: the request channel and the adopted peer connections.
struct Inbox<S: StateMachine> {
    receiver: mpsc::Receiver<Request<S>>,
    poll: Poll,
    events: Events,
    wake: Arc<Wake>,
    streams: HashMap<Token, Box<dyn InboundStream>>,
    next_token: usize,
    /// Connections signalled readable and not yet read to the end.
    readable: Vec<Token>,
    /// Messages read from connections, to be stepped.
    messages: Vec<Message>,
}

/// Every handle is gone: the thread ends.
struct Disconnected;

impl<S: StateMachine> Inbox<S> {
    /// Waits up to `timeout` for a request or a readable connection. Returns a request
    /// found by the last check before sleeping.
    fn wait(&mut self, timeout: Duration) -> Result<Option<Request<S>>, Disconnected> {
        if !timeout.is_zero() {
            self.wake.sleeping.store(true, Ordering::Relaxed);
            // Pairs with the fence in `NodeHandle::send` (see the module documentation).
            fence(Ordering::SeqCst);
            match self.receiver.try_recv() {
                Ok(request) => {
                    self.wake.sleeping.store(false, Ordering::Relaxed);
                    return Ok(Some(request));
                }
                Err(TryRecvError::Disconnected) => return Err(Disconnected),
                Err(TryRecvError::Empty) => {}
            }
        }
        let polled = self.poll.poll(&mut self.events, Some(timeout));
        self.wake.sleeping.store(false, Ordering::Relaxed);
        if let Err(error) = polled {
            if error.kind() != std::io::ErrorKind::Interrupted {
                // Not expected from epoll_wait; do not spin on it.
                tracing::warn!(%error, "raft thread: waiting failed");
                std::thread::sleep(timeout.min(Duration::from_millis(10)));
            }
            return Ok(None);
        }
        for event in self.events.iter() {
            let token = event.token();
            if token != WAKER && !self.readable.contains(&token) {
                self.readable.push(token);
            }
        }
        Ok(None)
    }

    /// Starts reading a connection.
    fn adopt(&mut self, stream: Box<dyn InboundStream>) {
        let token = Token(self.next_token);
        self.next_token += 1;
        let fd = stream.fd();
        match self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
        {
            Ok(()) => {
                self.streams.insert(token, stream);
                // Bytes that came before the registration raise no event: read now.
                self.readable.push(token);
            }
            Err(error) => tracing::warn!(%error, "raft thread: cannot watch a peer connection"),
        }
    }

    /// Reads every readable connection (up to `budget` bytes each) into `self.messages`.
    fn read_streams(&mut self, budget: usize) {
        for token in std::mem::take(&mut self.readable) {
            let Some(stream) = self.streams.get_mut(&token) else {
                continue;
            };
            match stream.read(budget, &mut self.messages) {
                InboundRead::Drained => {}
                InboundRead::More => self.readable.push(token),
                InboundRead::Closed => {
                    if let Some(stream) = self.streams.remove(&token) {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&stream.fd()));
                    }
                }
            }
        }
    }
}

fn run<S, D, T>(
    mut node: RaftNode<S, D>,
    mut transport: T,
    mut inbox: Inbox<S>,
    config: DriverConfig,
    shared: Arc<Shared>,
) where
    S: StateMachine,
    D: Disk,
    T: Transport,
{
    let members_shared = Arc::clone(&shared);
    node.on_event(move |event| {
        if let NodeEvent::MembershipChanged { members } = event {
            *members_shared.members.write() = members.clone();
        }
    });
    let mut next_tick = Instant::now() + config.tick_interval;
    let mut shutting_down = false;
    while !shutting_down && node.lifecycle().is_running() {
        let timeout = if node.has_ready() || !inbox.readable.is_empty() {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(Instant::now())
        };
        let mut handled = 0usize;
        match inbox.wait(timeout) {
            Ok(Some(request)) => {
                shutting_down |= handle(&mut node, &mut transport, &mut inbox, request);
                handled += 1;
            }
            Ok(None) => {}
            Err(Disconnected) => break,
        }
        while handled < config.max_batch && !shutting_down {
            match inbox.receiver.try_recv() {
                Ok(request) => {
                    shutting_down |= handle(&mut node, &mut transport, &mut inbox, request);
                    handled += 1;
                }
                Err(_) => break,
            }
        }
        if !shutting_down {
            inbox.read_streams(config.read_budget);
            for message in std::mem::take(&mut inbox.messages) {
                step(&mut node, &mut transport, message);
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            node.tick();
            next_tick += config.tick_interval;
            if next_tick < now {
                // Fell behind (a long fsync): do not fire a burst of catch-up ticks.
                next_tick = now + config.tick_interval;
            }
        }
        if let Err(e) = node.process_ready(&mut transport) {
            tracing::error!(member = node.id(), error = %e, "raft member stopped");
        }
        *shared.status.write() = node.status();
    }
    *shared.status.write() = node.status();
    // Dropping the node (and the receiver with queued requests) resolves every pending
    // completion with `Stopped`; dropping the inbox closes the adopted connections.
}

/// Steps a message from a peer.
fn step<S, D, T>(node: &mut RaftNode<S, D>, transport: &mut T, message: Message)
where
    S: StateMachine,
    D: Disk,
    T: Transport,
{
    if let Err(NodeError::PeerRemoved { from }) = node.step(message) {
        transport.notify_removed(from);
    }
}

/// Handles one request; returns true on shutdown.
fn handle<S, D, T>(
    node: &mut RaftNode<S, D>,
    transport: &mut T,
    inbox: &mut Inbox<S>,
    request: Request<S>,
) -> bool
where
    S: StateMachine,
    D: Disk,
    T: Transport,
{
    match request {
        Request::Propose(command, completer) => node.propose_with(command, completer),
        Request::Read(consistency, run) => node.read_boxed(consistency, run),
        Request::Membership(change, completer) => node.change_membership_with(change, completer),
        Request::Step(message) => step(node, transport, message),
        Request::Inbound(stream) => inbox.adopt(stream),
        Request::ReportSnapshot(to, status) => node.report_snapshot(to, status),
        Request::ReportUnreachable(to) => node.report_unreachable(to),
        Request::NotifyRemoved => node.notify_removed(),
        Request::Campaign => {
            let _ = node.campaign();
        }
        Request::TransferLeadership(to) => node.transfer_leadership(to),
        Request::Listen(listener) => node.on_event(listener),
        Request::Shutdown => return true,
    }
    false
}
