//! A one-shot completion: the handle a caller holds while the node works on its request.
//!
//! [`Completion`] is the receiving half; the node keeps the sending half ([`Completer`]).
//! The caller can block ([`Completion::wait`], [`Completion::wait_timeout`]), poll
//! ([`Completion::try_take`]) or `.await` it (it implements [`Future`], so it works from
//! tokio or any other executor without depending on one).
//!
//! Invariants: a completion resolves at most once. If the node drops the [`Completer`]
//! without resolving it (the node stopped, the thread exited), the completion resolves to
//! [`NodeError::Stopped`], so no caller waits forever on a dead node.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::error::NodeError;

enum Slot<T> {
    Waiting(Option<Waker>),
    Ready(Result<T, NodeError>),
    Taken,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// The caller's half of a one-shot result: resolves to `Ok(T)` or a [`NodeError`].
#[must_use = "a completion does nothing unless waited on, polled or awaited"]
pub struct Completion<T> {
    shared: Arc<Shared<T>>,
}

/// The node's half: resolves the matching [`Completion`] exactly once.
pub struct Completer<T> {
    shared: Option<Arc<Shared<T>>>,
    member_id: u64,
}

/// Creates a connected completion pair. `member_id` names the member in the
/// [`NodeError::Stopped`] produced if the completer is dropped unresolved.
pub fn completion_pair<T>(member_id: u64) -> (Completion<T>, Completer<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot::Waiting(None)),
        ready: Condvar::new(),
    });
    (
        Completion {
            shared: Arc::clone(&shared),
        },
        Completer {
            shared: Some(shared),
            member_id,
        },
    )
}

impl<T> Completion<T> {
    /// A completion that is already resolved.
    pub fn ready(result: Result<T, NodeError>) -> Self {
        Completion {
            shared: Arc::new(Shared {
                slot: Mutex::new(Slot::Ready(result)),
                ready: Condvar::new(),
            }),
        }
    }

    /// Blocks until the result is available.
    pub fn wait(self) -> Result<T, NodeError> {
        let mut slot = self.shared.slot.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Ready(result) => return result,
                Slot::Taken => return Err(taken_error()),
                waiting @ Slot::Waiting(_) => {
                    *slot = waiting;
                    self.shared.ready.wait(&mut slot);
                }
            }
        }
    }

    /// Blocks until the result is available or `timeout` passes; on timeout returns
    /// [`NodeError::TimedOut`] (a proposal may still be applied later).
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, NodeError> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.shared.slot.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Ready(result) => return result,
                Slot::Taken => return Err(taken_error()),
                waiting @ Slot::Waiting(_) => {
                    *slot = waiting;
                    if self
                        .shared
                        .ready
                        .wait_until(&mut slot, deadline)
                        .timed_out()
                    {
                        if let Slot::Ready(_) = &*slot {
                            continue;
                        }
                        return Err(NodeError::TimedOut {
                            what: format!("a raft request ({timeout:?})"),
                        });
                    }
                }
            }
        }
    }

    /// Takes the result if it is available, without blocking.
    pub fn try_take(&mut self) -> Option<Result<T, NodeError>> {
        let mut slot = self.shared.slot.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Ready(result) => Some(result),
            Slot::Taken => Some(Err(taken_error())),
            waiting @ Slot::Waiting(_) => {
                *slot = waiting;
                None
            }
        }
    }

    /// True once the result is available (and not yet taken).
    pub fn is_ready(&self) -> bool {
        matches!(&*self.shared.slot.lock(), Slot::Ready(_))
    }
}

fn taken_error() -> NodeError {
    NodeError::invalid("the completion's result was already taken")
}

impl<T> Future for Completion<T> {
    type Output = Result<T, NodeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared.slot.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Ready(result) => Poll::Ready(result),
            Slot::Taken => Poll::Ready(Err(taken_error())),
            Slot::Waiting(_) => {
                *slot = Slot::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

impl<T> std::fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl<T> Completer<T> {
    /// Resolves the completion. Returns false when the caller already gave up (dropped its
    /// [`Completion`]).
    pub fn complete(mut self, result: Result<T, NodeError>) -> bool {
        self.resolve(result)
    }

    /// True when the caller dropped its [`Completion`]: nobody will read the result.
    pub fn is_abandoned(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|shared| Arc::strong_count(shared) == 1)
    }

    fn resolve(&mut self, result: Result<T, NodeError>) -> bool {
        let Some(shared) = self.shared.take() else {
            return false;
        };
        let abandoned = Arc::strong_count(&shared) == 1;
        let waker = {
            let mut slot = shared.slot.lock();
            match std::mem::replace(&mut *slot, Slot::Ready(result)) {
                Slot::Waiting(waker) => waker,
                Slot::Ready(_) | Slot::Taken => None,
            }
        };
        shared.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
        !abandoned
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if self.shared.is_some() {
            let id = self.member_id;
            self.resolve(Err(NodeError::Stopped {
                id,
                reason: "the node stopped before answering".into(),
            }));
        }
    }
}

impl<T> std::fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer")
            .field("abandoned", &self.is_abandoned())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_once_and_wait_returns_value() {
        let (done, completer) = completion_pair::<u32>(1);
        assert!(completer.complete(Ok(7)));
        assert_eq!(done.wait().ok(), Some(7));
    }

    #[test]
    fn dropped_completer_reports_stopped() {
        let (done, completer) = completion_pair::<u32>(9);
        drop(completer);
        assert!(matches!(done.wait(), Err(NodeError::Stopped { id: 9, .. })));
    }

    #[test]
    fn wait_timeout_times_out_without_result() {
        let (done, _completer) = completion_pair::<u32>(1);
        let result = done.wait_timeout(Duration::from_millis(5));
        assert!(matches!(result, Err(NodeError::TimedOut { .. })));
    }

    #[test]
    fn try_take_polls() {
        let (mut done, completer) = completion_pair::<u32>(1);
        assert!(done.try_take().is_none());
        assert!(!done.is_ready());
        assert!(completer.complete(Ok(3)));
        assert!(done.is_ready());
        assert_eq!(done.try_take().and_then(Result::ok), Some(3));
    }

    #[test]
    fn completer_sees_abandoned_caller() {
        let (done, completer) = completion_pair::<u32>(1);
        assert!(!completer.is_abandoned());
        drop(done);
        assert!(completer.is_abandoned());
        assert!(!completer.complete(Ok(1)));
    }

    #[test]
    fn wakes_a_blocked_thread() {
        let (done, completer) = completion_pair::<u32>(1);
        let waiter = std::thread::spawn(move || done.wait());
        std::thread::sleep(Duration::from_millis(5));
        completer.complete(Ok(11));
        assert_eq!(waiter.join().ok().and_then(Result::ok), Some(11));
    }

    #[test]
    fn works_as_a_future() {
        struct FlagWaker(std::sync::atomic::AtomicBool);
        impl std::task::Wake for FlagWaker {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Arc::new(FlagWaker(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let (mut done, completer) = completion_pair::<u32>(1);
        assert!(Pin::new(&mut done).poll(&mut cx).is_pending());
        completer.complete(Ok(5));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        match Pin::new(&mut done).poll(&mut cx) {
            Poll::Ready(Ok(5)) => {}
            other => panic!("unexpected poll result: {other:?}"),
        }
    }
}
