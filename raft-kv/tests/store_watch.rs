//! Watchers as the HTTP server uses them: awaited without blocking a thread, cancelled by
//! dropping, woken from another thread by `apply`, closed when their store goes away or
//! their buffer overflows, kept across an in-place restore.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use raft_kv::store::{Action, Command, Store, TryNext, UnixNanos, STREAM_BUFFER};

const NOW: UnixNanos = UnixNanos(1_767_225_600 * 1_000_000_000);

/// A waker that counts wake-ups and unparks the polling thread.
struct CountingWaker {
    wakes: AtomicUsize,
    thread: thread::Thread,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// A minimal executor: polls `fut` on this thread, parking between wake-ups.
fn block_on<F: Future>(fut: F) -> (F::Output, usize) {
    let waker_state = Arc::new(CountingWaker {
        wakes: AtomicUsize::new(0),
        thread: thread::current(),
    });
    let waker = Waker::from(Arc::clone(&waker_state));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return (out, waker_state.wakes.load(Ordering::SeqCst));
        }
        thread::park_timeout(Duration::from_secs(5));
    }
}

#[test]
fn async_next_is_woken_by_apply_on_another_thread() {
    let store = Arc::new(Mutex::new(Store::new()));
    let mut w = store
        .lock()
        .unwrap()
        .watch("/k", false, false, None)
        .unwrap();
    let writer = {
        let store = Arc::clone(&store);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            store
                .lock()
                .unwrap()
                .apply(&Command::set("/k", "v", NOW))
                .unwrap();
        })
    };
    let (event, wakes) = block_on(w.next());
    writer.join().unwrap();
    let event = event.expect("an event");
    assert_eq!(event.action, Action::Set);
    assert_eq!(event.node.value.as_deref(), Some("v"));
    assert!(wakes >= 1, "the future was woken, not busy-polled");
    assert_eq!(
        block_on(w.next()).0,
        None,
        "a one-shot watcher ends after its event"
    );
}

#[test]
fn a_pending_future_registers_its_waker_and_can_be_cancelled() {
    let mut store = Store::new();
    let mut w = store.watch("/k", false, false, None).unwrap();
    {
        let woke = Arc::new(CountingWaker {
            wakes: AtomicUsize::new(0),
            thread: thread::current(),
        });
        let waker = Waker::from(Arc::clone(&woke));
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(w.next());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        // The client goes away: the future is dropped while pending.
    }
    assert_eq!(
        store.watcher_count(),
        1,
        "dropping the future keeps the watcher"
    );
    drop(w);
    assert_eq!(
        store.watcher_count(),
        0,
        "dropping the watcher unregisters it"
    );
    store.apply(&Command::set("/k", "v", NOW)).unwrap();
}

#[test]
fn blocking_next_is_woken_by_apply_on_another_thread() {
    let store = Arc::new(Mutex::new(Store::new()));
    let mut w = store.lock().unwrap().watch("/d", true, true, None).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut keys = Vec::new();
            while keys.len() < 3 {
                match w.next_blocking() {
                    Some(e) => keys.push(e.node.key),
                    None => break,
                }
            }
            done.store(true, Ordering::SeqCst);
            keys
        })
    };
    for k in ["/d/a", "/d/b", "/d/c"] {
        thread::sleep(Duration::from_millis(10));
        store
            .lock()
            .unwrap()
            .apply(&Command::set(k, "v", NOW))
            .unwrap();
    }
    let keys = reader.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(keys, vec!["/d/a", "/d/b", "/d/c"]);
}

#[test]
fn next_timeout_gives_up_and_try_next_does_not_wait() {
    let store = Store::new();
    let mut w = store.watch("/k", false, false, None).unwrap();
    assert_eq!(w.next_timeout(Duration::from_millis(20)), TryNext::Pending);
    assert_eq!(w.try_next(), TryNext::Pending);
}

#[test]
fn dropping_the_store_closes_its_watchers() {
    let store = Store::new();
    let mut w = store.watch("/k", true, true, None).unwrap();
    drop(store);
    assert_eq!(w.next_blocking(), None);
    assert_eq!(block_on(w.next()).0, None);
}

#[test]
fn slow_stream_consumer_is_closed_at_the_buffer_limit() {
    let mut store = Store::new();
    let mut w = store.watch("/k", false, true, None).unwrap();
    for i in 0..STREAM_BUFFER + 10 {
        store
            .apply(&Command::set("/k", i.to_string(), NOW))
            .unwrap();
    }
    assert_eq!(
        store.watcher_count(),
        0,
        "the overflowing watcher was dropped by the hub"
    );
    assert!(w.overflowed());
    let mut n = 0;
    while let Some(e) = w.next_blocking() {
        n += 1;
        assert_eq!(e.node.value.as_deref(), Some((n - 1).to_string().as_str()));
    }
    assert_eq!(
        n, STREAM_BUFFER,
        "buffered events are still delivered, then the end"
    );
}

#[test]
fn a_stream_consumer_that_keeps_up_never_overflows() {
    let mut store = Store::new();
    let mut w = store.watch("/k", false, true, None).unwrap();
    for i in 0..10 * STREAM_BUFFER {
        store
            .apply(&Command::set("/k", i.to_string(), NOW))
            .unwrap();
        assert!(matches!(w.try_next(), TryNext::Event(_)));
    }
    assert!(!w.overflowed());
    assert_eq!(store.watcher_count(), 1);
}

#[test]
fn in_place_restore_keeps_watchers_waiting() {
    let mut leader = Store::new();
    let mut follower = Store::new();
    let mut w = follower.watch("/k", false, false, Some(3)).unwrap();
    for v in ["1", "2"] {
        leader.apply(&Command::set("/k", v, NOW)).unwrap();
    }
    follower.restore_from(&leader.snapshot()).unwrap();
    assert_eq!(follower.index(), 2);
    assert_eq!(w.try_next(), TryNext::Pending);
    let cmd = Command::set("/k", "3", NOW);
    leader.apply(&cmd).unwrap();
    follower.apply(&cmd).unwrap();
    match w.try_next() {
        TryNext::Event(e) => assert_eq!(e.node.modified_index, 3),
        other => panic!("expected the event at index 3, got {other:?}"),
    }
}

#[test]
fn fan_out_reaches_every_watcher_once() {
    let mut store = Store::new();
    let mut watchers: Vec<_> = (0..1000)
        .map(|i| {
            store
                .watch(
                    if i % 2 == 0 { "/fan/k" } else { "/fan" },
                    i % 2 == 1,
                    false,
                    None,
                )
                .unwrap()
        })
        .collect();
    assert_eq!(store.watcher_count(), 1000);
    store.apply(&Command::set("/fan/k", "go", NOW)).unwrap();
    assert_eq!(store.watcher_count(), 0);
    for w in &mut watchers {
        assert!(matches!(w.try_next(), TryNext::Event(_)));
        assert_eq!(w.try_next(), TryNext::Closed);
    }
}

#[test]
fn deep_keys_do_not_exhaust_the_stack() {
    // The deepest allowed key, read recursively and rendered to JSON on a small stack.
    let deep: String = "/a".repeat(raft_kv::store::path::MAX_KEY_DEPTH);
    let handle = thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let mut store = Store::new();
            store.apply(&Command::set(deep.as_str(), "v", NOW)).unwrap();
            let ev = store.get("/", true, true).unwrap();
            let json = ev.to_json_line();
            let snapshot = store.snapshot();
            let restored = Store::restore(&snapshot).unwrap();
            assert_eq!(restored.hash(), store.hash());
            store
                .apply(&Command::Delete {
                    key: "/a".into(),
                    dir: true,
                    recursive: true,
                    now: NOW,
                })
                .unwrap();
            json.len()
        })
        .unwrap();
    assert!(handle.join().unwrap() > 2 * 1024 * 20);
}

/// A waker that drops another watcher of the same store when woken (as an executor that
/// polls inline might): waking happens after the hub's lock is released, so no deadlock.
struct DroppingWaker {
    victim: Mutex<Option<raft_kv::store::Watcher>>,
}

impl Wake for DroppingWaker {
    fn wake(self: Arc<Self>) {
        self.victim.lock().unwrap().take();
    }
}

#[test]
fn a_waker_may_drop_watchers_without_deadlocking() {
    let mut store = Store::new();
    let victim = store.watch("/other", false, false, None).unwrap();
    let mut w = store.watch("/k", false, false, None).unwrap();
    let waker_state = Arc::new(DroppingWaker {
        victim: Mutex::new(Some(victim)),
    });
    let waker = Waker::from(Arc::clone(&waker_state));
    let mut cx = Context::from_waker(&waker);
    {
        let mut fut = pin!(w.next());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    {
        // Register the waker, then apply: the wake drops `victim` (takes the hub lock).
        let mut fut = pin!(w.next());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        store.apply(&Command::set("/k", "v", NOW)).unwrap();
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Some(_))));
    }
    assert!(
        waker_state.victim.lock().unwrap().is_none(),
        "the waker ran"
    );
    assert_eq!(store.watcher_count(), 0);
}
