//! Criterion suites for the allocator on the in-memory store.
//!
//! * `auto_assign_release`: one host, a /8 pool, auto-assign one address and release it
//!   (with and without a handle), and a churn variant with 1000 live addresses.
//! * `claim_blocks`: hosts claiming fresh blocks until 10k blocks exist.
//! * `memory_1m`: heap bytes per allocated address with 1M addresses allocated (measured
//!   with a counting global allocator; printed, not timed).
//! * `threads8`: 8 threads, 8 hosts, one shared store, assign + release.
//!
//! `cargo bench -- --test` (CI) runs every suite once on shrunk sizes; so does
//! `IPAM_BENCH_SMALL=1`. Figures are reported in ops/s where an op is one auto_assign or
//! one release.
//!
//! `IPAM_BENCH_OPS=N` first runs N auto_assign + release pairs (no handle) in a plain loop
//! and prints both the wall-clock rate and the rate per second of CPU time of this thread
//! (from `/proc/thread-self/schedstat`): on a shared, loaded machine the CPU-time rate is
//! the one that does not depend on what else runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ipam::{Attrs, Ipam, MemStore, Pool, PoolChoice};

/// Counts live heap bytes, to report memory per address.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)] // reason: a counting global allocator must implement the unsafe GlobalAlloc trait; it only forwards to System
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn small() -> bool {
    std::env::var_os("IPAM_BENCH_SMALL").is_some() || std::env::args().any(|a| a == "--test")
}

fn scaled(full: usize, test: usize) -> usize {
    if small() {
        test
    } else {
        full
    }
}

fn ipam_with_pool(cidr: &str) -> Ipam<Arc<MemStore>> {
    let ipam = Ipam::new(Arc::new(MemStore::new()));
    ipam.add_pool(Pool::new(cidr.parse().expect("bench CIDR")))
        .expect("add pool");
    ipam
}

fn auto_assign_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("auto_assign_release");
    group.throughput(Throughput::Elements(2));
    let attrs = Attrs::empty();
    let any = PoolChoice::v4();
    for (name, handle) in [("no_handle", None), ("with_handle", Some("container-1"))] {
        let ipam = ipam_with_pool("10.0.0.0/8");
        group.bench_function(name, |b| {
            b.iter(|| {
                let got = ipam
                    .auto_assign("host-1", 1, handle, &attrs, &any)
                    .expect("assign");
                let not = ipam.release_ips(&got).expect("release");
                black_box(not);
            })
        });
    }
    let ipam = ipam_with_pool("10.0.0.0/8");
    let mut live = std::collections::VecDeque::new();
    for _ in 0..1000 {
        live.extend(
            ipam.auto_assign("host-1", 1, None, &attrs, &any)
                .expect("assign"),
        );
    }
    group.bench_function("churn_1000_live", |b| {
        b.iter(|| {
            live.extend(
                ipam.auto_assign("host-1", 1, None, &attrs, &any)
                    .expect("assign"),
            );
            if let Some(oldest) = live.pop_front() {
                black_box(ipam.release_ips(&[oldest]).expect("release"));
            }
        })
    });
    group.finish();
}

/// Nanoseconds this thread has spent on a CPU (Linux), if readable.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// `IPAM_BENCH_OPS=N`: a fixed loop of N assign + release pairs, wall and CPU-time rates.
fn fixed_loop() {
    let Some(n) = std::env::var("IPAM_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let attrs = Attrs::empty();
    let any = PoolChoice::v4();
    for (name, handle) in [("no_handle", None), ("with_handle", Some("container-1"))] {
        let ipam = ipam_with_pool("10.0.0.0/8");
        // Warm up: claim the block, fill the caches.
        for _ in 0..10_000 {
            let got = ipam
                .auto_assign("host-1", 1, handle, &attrs, &any)
                .expect("assign");
            ipam.release_ips(&got).expect("release");
        }
        let cpu0 = thread_cpu_ns();
        let start = Instant::now();
        for _ in 0..n {
            let got = ipam
                .auto_assign("host-1", 1, handle, &attrs, &any)
                .expect("assign");
            black_box(ipam.release_ips(&got).expect("release"));
        }
        let wall = start.elapsed().as_secs_f64();
        let ops = 2.0 * n as f64;
        match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => println!(
                "fixed_loop {name}: {n} assign+release pairs: {:.2}M ops/s wall, {:.2}M ops/s per CPU-second ({:.0} ns CPU per op)",
                ops / wall / 1e6,
                ops / ((b - a) as f64 / 1e9) / 1e6,
                (b - a) as f64 / ops
            ),
            _ => println!("fixed_loop {name}: {n} pairs: {:.2}M ops/s wall", ops / wall / 1e6),
        }
    }
}

fn claim_blocks(c: &mut Criterion) {
    let n_blocks = scaled(10_000, 200);
    let mut group = c.benchmark_group("claim_blocks");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n_blocks as u64));
    let attrs = Attrs::empty();
    let any = PoolChoice::v4();
    group.bench_function(format!("{n_blocks}_blocks_100_hosts"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let ipam = ipam_with_pool("10.0.0.0/8");
                let start = Instant::now();
                for i in 0..n_blocks {
                    // A full block per call: every call claims one new block.
                    let got = ipam
                        .auto_assign(&format!("host-{}", i % 100), 64, None, &attrs, &any)
                        .expect("assign");
                    assert_eq!(got.len(), 64);
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn memory_1m(c: &mut Criterion) {
    let n_addrs = scaled(1 << 20, 1 << 12);
    let attrs = Attrs::empty();
    let any = PoolChoice::v4();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let store = Arc::new(MemStore::new());
    let ipam = Ipam::new(Arc::clone(&store));
    ipam.add_pool(Pool::new("10.0.0.0/8".parse().expect("bench CIDR")))
        .expect("pool");
    let start = Instant::now();
    let mut done = 0;
    let mut i = 0;
    while done < n_addrs {
        let got = ipam
            .auto_assign(&format!("host-{}", i % 100), 4096, None, &attrs, &any)
            .expect("assign");
        done += got.len();
        i += 1;
    }
    let fill = start.elapsed();
    // Drop the client's caches; keep only the store.
    drop(ipam);
    let bytes = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    println!(
        "memory_1m: {done} addresses in {} blocks: {bytes} heap bytes = {:.2} bytes/address (store incl. map overhead, uniform attributes); fill {:.0} addresses/s",
        done / 64,
        bytes as f64 / done as f64,
        done as f64 / fill.as_secs_f64()
    );
    let block_bytes = std::mem::size_of::<ipam::Block>();
    println!(
        "memory_1m: block state {block_bytes} bytes per 64-address block = {:.2} bytes/address; the rest is the store's slab slot (+8 bytes of version) and hash index (~10 bytes per block), the affinity index (16-byte B-tree entries), host names and shared attribute lists",
        block_bytes as f64 / 64.0
    );
    // A timed companion so the suite shows up in criterion's output.
    let mut group = c.benchmark_group("memory_1m");
    group.sample_size(10);
    group.bench_function("list_all_blocks", |b| {
        b.iter(|| {
            black_box(
                ipam::BlockStore::list(&*store, &ipam::Prefix::Blocks(ipam::IpFamily::V4))
                    .expect("list")
                    .len(),
            )
        })
    });
    group.finish();
}

fn threads8(c: &mut Criterion) {
    let per_thread = scaled(200_000, 500);
    let threads = 8;
    let mut group = c.benchmark_group("threads8");
    group.sample_size(10);
    group.throughput(Throughput::Elements((threads * per_thread * 2) as u64));
    group.bench_function("assign_release_8_hosts", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = Arc::new(MemStore::new());
                let setup = Ipam::new(Arc::clone(&store));
                setup
                    .add_pool(Pool::new("10.0.0.0/8".parse().expect("bench CIDR")))
                    .expect("pool");
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let store = Arc::clone(&store);
                        s.spawn(move || {
                            let ipam = Ipam::new(store);
                            let attrs = Attrs::empty();
                            let any = PoolChoice::v4();
                            let host = format!("host-{t}");
                            for _ in 0..per_thread {
                                let got = ipam
                                    .auto_assign(&host, 1, None, &attrs, &any)
                                    .expect("assign");
                                black_box(ipam.release_ips(&got).expect("release"));
                            }
                        });
                    }
                });
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// The suites as one criterion group (a private module: the generated function needs no
/// public docs).
mod suites {
    use super::{auto_assign_release, claim_blocks, memory_1m, threads8};
    criterion::criterion_group!(
        benches,
        auto_assign_release,
        claim_blocks,
        memory_1m,
        threads8
    );
}

fn main() {
    fixed_loop();
    suites::benches();
    Criterion::default().configure_from_args().final_summary();
}
