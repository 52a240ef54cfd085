//! `raft_kv::store` benchmarks: the state machine alone (no HTTP, no Raft).
//!
//! * Memory report (printed first): bytes allocated per key for a store of `N` keys with
//!   64-byte values, measured with a counting global allocator, against the data size
//!   (64 + key bytes). etcd v2's documentation reports 22–72× the data size; our target
//!   is ≤ 4×. Also printed: snapshot size and the time to snapshot, restore and hash.
//! * `store/set`, `store/get`, `store/get_json` (get plus rendering the response body),
//!   `store/cas` (a compare-and-swap that succeeds): one operation on a random key of the
//!   `N`-key store.
//! * `store/watch_fan_out_1000`: applying one write that 1000 pending watchers of the key
//!   (half on the key, half recursive on its directory) receive.
//!
//! Environment: `STORE_BENCH_KEYS` (default 1,000,000, or 10,000 under `--test`).
//! With `cargo bench -- --test` every benchmark runs once.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use raft_kv::store::{Command, Store, TryNext, UnixNanos};

/// Counts live heap bytes and allocations.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);

#[allow(unsafe_code)] // reason: a global allocator is `unsafe impl` by definition; it only forwards to System and counts
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NOW: UnixNanos = UnixNanos(1_767_225_600 * 1_000_000_000);

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn n_keys() -> usize {
    std::env::var("STORE_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if test_mode() { 10_000 } else { 1_000_000 })
}

fn key(i: usize) -> String {
    format!("/bench/{i:08}")
}

fn value() -> String {
    "v".repeat(64)
}

/// A cheap deterministic scatter over `0..n`.
fn scatter(i: usize, n: usize) -> usize {
    (i.wrapping_mul(2_654_435_761)) % n
}

/// Builds the `n`-key store and prints the memory and snapshot report.
fn build_and_report(n: usize) -> Store {
    let value = value();
    let key_bytes = key(0).len();
    let data_per_key = (value.len() + key_bytes) as f64;

    let bytes_before = LIVE_BYTES.load(Ordering::Relaxed);
    let allocs_before = LIVE_ALLOCS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut store = Store::new();
    for i in 0..n {
        let cmd = Command::set(key(i), value.as_str(), NOW);
        black_box(store.apply(&cmd).ok());
    }
    let build = started.elapsed();
    let bytes = (LIVE_BYTES.load(Ordering::Relaxed) - bytes_before) as f64;
    let allocs = (LIVE_ALLOCS.load(Ordering::Relaxed) - allocs_before) as f64;
    let per_key = bytes / n as f64;
    // glibc malloc adds about 8 bytes of header per chunk and rounds to 16.
    let per_key_malloc = (bytes + allocs * 12.0) / n as f64;

    println!("store memory: {n} keys of {key_bytes} bytes with 64-byte values (data {data_per_key} B/key)");
    println!(
        "  requested heap {per_key:.1} B/key = {:.2}x data; with ~12 B malloc overhead per allocation {per_key_malloc:.1} B/key = {:.2}x; {:.2} allocations/key",
        per_key / data_per_key,
        per_key_malloc / data_per_key,
        allocs / n as f64
    );
    println!("  reference: etcd v2 docs report 22-72x the data size; target <= 4x");
    println!(
        "  built by {n} sets in {build:?} ({:.0} sets/s)",
        n as f64 / build.as_secs_f64()
    );

    let t = Instant::now();
    let snap = store.snapshot();
    let snap_time = t.elapsed();
    let t = Instant::now();
    let restored = Store::restore(&snap).map(|s| s.node_count()).unwrap_or(0);
    let restore_time = t.elapsed();
    let t = Instant::now();
    let hash = store.hash();
    let hash_time = t.elapsed();
    println!(
        "  snapshot {} bytes ({:.1} B/key) in {snap_time:?}; restore ({restored} nodes) in {restore_time:?}; hash {hash:016x} in {hash_time:?}",
        snap.len(),
        snap.len() as f64 / n as f64
    );
    store
}

/// Applies a ring of prepared commands, one per iteration.
fn apply_ring(store: &mut Store, ring: &[Command], next: &mut usize) {
    let cmd = &ring[*next % ring.len()];
    *next += 1;
    black_box(store.apply(cmd).ok());
}

fn bench_ops(c: &mut Criterion, store: &mut Store, n: usize) {
    let value = value();
    let mut group = c.benchmark_group("store");
    if test_mode() {
        group
            .sample_size(10)
            .measurement_time(Duration::from_millis(100));
    }

    let sets: Vec<Command> = (0..4096)
        .map(|i| Command::set(key(scatter(i, n)), value.as_str(), NOW))
        .collect();
    let mut next = 0;
    group.bench_function("set", |b| b.iter(|| apply_ring(store, &sets, &mut next)));

    let keys: Vec<String> = (0..4096).map(|i| key(scatter(i + 17, n))).collect();
    let mut i = 0;
    group.bench_function("get", |b| {
        b.iter(|| {
            i += 1;
            black_box(store.get_at(&keys[i % keys.len()], false, false, NOW).ok())
        })
    });
    group.bench_function("get_json", |b| {
        b.iter(|| {
            i += 1;
            let ev = store.get_at(&keys[i % keys.len()], false, false, NOW);
            black_box(ev.map(|e| e.to_json_line()).ok())
        })
    });

    let cas: Vec<Command> = (0..4096)
        .map(|i| Command::CompareAndSwap {
            key: key(scatter(i + 31, n)),
            value: value.clone(),
            prev_value: Some(value.clone()),
            prev_index: None,
            ttl: None,
            refresh: false,
            now: NOW,
        })
        .collect();
    let mut next = 0;
    group.bench_function("cas", |b| b.iter(|| apply_ring(store, &cas, &mut next)));

    let fan_key = key(n / 2);
    let event = Command::set(fan_key.as_str(), value.as_str(), NOW);
    group.bench_function("watch_fan_out_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut watchers: Vec<_> = (0..1000)
                    .filter_map(|w| {
                        let (k, recursive) = if w % 2 == 0 {
                            (fan_key.as_str(), false)
                        } else {
                            ("/bench", true)
                        };
                        store.watch(k, recursive, false, None).ok()
                    })
                    .collect();
                let t = Instant::now();
                black_box(store.apply(&event).ok());
                total += t.elapsed();
                let delivered = watchers
                    .iter_mut()
                    .map(|w| w.try_next())
                    .filter(|t| matches!(t, TryNext::Event(_)))
                    .count();
                assert_eq!(delivered, 1000, "every watcher got the event");
            }
            total
        })
    });
    group.finish();
}

fn main() {
    let n = n_keys();
    let mut store = build_and_report(n);
    let mut c = Criterion::default().configure_from_args();
    bench_ops(&mut c, &mut store, n);
    c.final_summary();
}
