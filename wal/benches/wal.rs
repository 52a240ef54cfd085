//! WAL benchmarks (one criterion entry point, three suites), plus the raw rate of the disk
//! measured in the same run so the figures can be compared as ratios.
//!
//! * `raw_disk`: a 4 KiB `pwrite` + `fdatasync` loop, into a fully written file
//!   (`overwrite`, what a preallocated segment sees) and into a growing file (`append`).
//!   `/work/shared/bench/fsync_limit.py` measures the same two loops.
//! * `append/{64,1024,65536}B/appenders/{1,8,64}`: records per second with
//!   `SyncPolicy::Always` (every append durable before it returns), each appender appending
//!   one record at a time, so with 1 appender every record pays one fdatasync and with many
//!   the group commit shares it.
//! * `rollover/{inline,background}`: one appender, 64 KiB records, `SyncPolicy::Always`, on
//!   segments of `WAL_BENCH_ROLLOVER_MIB` (default 16) so that a rollover comes every 256
//!   appends: the mean per append, and (printed) p50 / p99 / p99.9 / max append latency and
//!   the slowest rollover, with segments zero-filled on the append path
//!   (`Preallocation::Inline`) or prepared by the helper thread (`Background`, the default).
//! * `replay`: `Wal::open` of an existing log (checks every CRC, builds the index), and open
//!   plus a full read, from the page cache; throughput in bytes of log.
//!
//! Environment: `WAL_BENCH_DIR` (where logs go; default the system temp dir, which must be
//! on the disk under test), `WAL_BENCH_REPLAY_MIB` (replay log size; default 1024, or 8 under
//! `--test`), `WAL_BENCH_SECS` (measurement time per benchmark; default 5),
//! `WAL_BENCH_SEGMENT_MIB` (segment size; default 64, or 1 under `--test`).
//! With `cargo bench -- --test` every benchmark runs once on small data.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use wal::{Preallocation, RecordRef, SyncPolicy, Wal, WalOptions};

fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_root() -> PathBuf {
    std::env::var_os("WAL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wal-bench-")
        .tempdir_in(bench_root())
        .expect("create bench dir")
}

fn segment_size() -> u64 {
    env_u64("WAL_BENCH_SEGMENT_MIB", if test_mode() { 1 } else { 64 }) << 20
}

fn configure() -> Criterion {
    let secs = env_u64("WAL_BENCH_SECS", 5);
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(secs))
}

fn raw_disk(c: &mut Criterion) {
    let mut group = c.benchmark_group("raw_disk");
    group.throughput(Throughput::Elements(1));
    let dir = scratch();
    let block = vec![0x5Au8; 4096];

    // Overwrite: the file is fully written and synced first, like a preallocated segment.
    let prealloc: u64 = if test_mode() { 1 << 20 } else { 64 << 20 };
    let path = dir.path().join("overwrite.dat");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("open");
    let zeros = vec![0u8; 1 << 20];
    for off in (0..prealloc).step_by(zeros.len()) {
        file.write_all_at(&zeros, off).expect("prewrite");
    }
    file.sync_all().expect("sync");
    let mut offset = 0u64;
    group.bench_function("write4k_fdatasync_overwrite", |b| {
        b.iter(|| {
            file.write_all_at(&block, offset).expect("write");
            file.sync_data().expect("fdatasync");
            offset = (offset + 4096) % prealloc;
        })
    });

    // Append: the file grows with every write, so each fdatasync also commits its size.
    let path = dir.path().join("append.dat");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("open");
    let mut end = 0u64;
    group.bench_function("write4k_fdatasync_append", |b| {
        b.iter(|| {
            file.write_all_at(&block, end).expect("write");
            file.sync_data().expect("fdatasync");
            end += 4096;
        })
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    for size in [64usize, 1024, 65536] {
        let mut group = c.benchmark_group(format!("append/{size}B"));
        group.throughput(Throughput::Elements(1));
        for appenders in [1u64, 8, 64] {
            let dir = scratch();
            let options = WalOptions {
                segment_size: segment_size(),
                sync: SyncPolicy::Always,
                ..WalOptions::default()
            };
            let (log, _) = Wal::open(dir.path(), options).expect("open");
            let log = Arc::new(log);
            let payload = vec![0xA5u8; size];
            group.bench_with_input(
                BenchmarkId::new("appenders", appenders),
                &appenders,
                |b, &appenders| {
                    b.iter_custom(|iters| {
                        // Keep the disk footprint bounded between samples.
                        log.compact_prefix(log.next_index()).expect("compact");
                        let per_thread = iters.div_ceil(appenders).max(1);
                        let start = Instant::now();
                        std::thread::scope(|s| {
                            for _ in 0..appenders {
                                let log = &log;
                                let payload = &payload;
                                s.spawn(move || {
                                    for _ in 0..per_thread {
                                        log.append(&[RecordRef::new(1, payload)]).expect("append");
                                    }
                                });
                            }
                        });
                        let elapsed = start.elapsed();
                        // Report the time for exactly `iters` records.
                        elapsed.mul_f64(iters as f64 / (per_thread * appenders) as f64)
                    })
                },
            );
        }
        group.finish();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rollover(c: &mut Criterion) {
    if !suite_selected("rollover") {
        return;
    }
    let segment = env_u64("WAL_BENCH_ROLLOVER_MIB", if test_mode() { 1 } else { 16 }) << 20;
    // A 64 KiB frame: 256 appends per 16 MiB segment.
    let payload = vec![0x42u8; 65536 - 64];
    let mut group = c.benchmark_group("rollover");
    group.throughput(Throughput::Elements(1));
    let mut reports = Vec::new();
    for (name, mode) in [
        ("inline", Preallocation::Inline),
        ("background", Preallocation::Background),
    ] {
        let dir = scratch();
        let options = WalOptions {
            segment_size: segment,
            sync: SyncPolicy::Always,
            preallocation: mode,
            ..WalOptions::default()
        };
        let (log, _) = Wal::open(dir.path(), options).expect("open");
        let mut latencies: Vec<Duration> = Vec::new();
        let mut rollovers: Vec<Duration> = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // Keep the disk footprint bounded between samples.
                log.compact_prefix(log.next_index()).expect("compact");
                let start = Instant::now();
                for _ in 0..iters {
                    let segments = log.segments().last().map(|s| s.seq);
                    let t = Instant::now();
                    log.append(&[RecordRef::new(1, &payload)]).expect("append");
                    let took = t.elapsed();
                    latencies.push(took);
                    if log.segments().last().map(|s| s.seq) != segments {
                        rollovers.push(took);
                    }
                }
                start.elapsed()
            })
        });
        latencies.sort();
        rollovers.sort();
        reports.push(format!(
            "rollover {name}: {} appends, {} rollovers ({} MiB segments): p50 {:.2?}, p99 {:.2?}, p99.9 {:.2?}, max {:.2?}; rollover appends: median {:.2?}, max {:.2?}",
            latencies.len(),
            rollovers.len(),
            segment >> 20,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 0.999),
            latencies.last().copied().unwrap_or_default(),
            percentile(&rollovers, 0.5),
            rollovers.last().copied().unwrap_or_default(),
        ));
    }
    group.finish();
    for line in reports {
        println!("{line}");
    }
}

/// True unless a positional criterion filter is given that cannot match `suite`
/// (lets `cargo bench -p wal -- append` skip building the replay log).
fn suite_selected(suite: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| suite.contains(f.as_str()) || f.contains(suite))
}

fn replay(c: &mut Criterion) {
    if !suite_selected("replay") {
        return;
    }
    let mib = env_u64("WAL_BENCH_REPLAY_MIB", if test_mode() { 8 } else { 1024 });
    let record = 1024usize;
    let dir = scratch();
    let options = WalOptions {
        segment_size: segment_size(),
        sync: SyncPolicy::Never,
        ..WalOptions::default()
    };
    let bytes = {
        let (log, _) = Wal::open(dir.path(), options.clone()).expect("open");
        let payload = vec![0x3Cu8; record];
        let batch: Vec<RecordRef<'_>> = (0..1024).map(|_| RecordRef::new(2, &payload)).collect();
        let target = mib << 20;
        let per_batch = (wal::format::frame_len(record) * batch.len()) as u64;
        let mut written = 0u64;
        while written < target {
            log.append(&batch).expect("append");
            written += per_batch;
        }
        log.sync().expect("sync");
        written
    };
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function(BenchmarkId::new("open_1KiB_records_MiB", mib), |b| {
        b.iter(|| {
            let (log, rec) = Wal::open(dir.path(), options.clone()).expect("open");
            assert!(rec.next_index > 1);
            log
        })
    });
    group.bench_function(BenchmarkId::new("open_and_read_all_MiB", mib), |b| {
        b.iter(|| {
            let (log, rec) = Wal::open(dir.path(), options.clone()).expect("open");
            let mut total = 0usize;
            log.read_with(rec.first_index..rec.next_index, |_, r| {
                total += r.payload.len()
            })
            .expect("read");
            total
        })
    });
    group.finish();
}

/// The mean time per iteration (ns) of a finished benchmark, from criterion's estimates.
fn mean_ns(id: &str) -> Option<f64> {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("criterion"))
        })
        // `cargo bench` runs this binary in the package directory; criterion writes under
        // the workspace's target directory.
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"));
    let text = std::fs::read_to_string(root.join(id).join("new/estimates.json")).ok()?;
    let mean = text.split("\"mean\"").nth(1)?;
    let pe = mean.split("\"point_estimate\":").nth(1)?;
    pe.split([',', '}']).next()?.trim().parse().ok()
}

fn summary() {
    if test_mode() {
        return;
    }
    let rate = |id: &str| mean_ns(id).map(|ns| 1e9 / ns);
    println!("\n== wal bench summary (rates from this run)");
    let raw = rate("raw_disk/write4k_fdatasync_overwrite");
    let raw_append = rate("raw_disk/write4k_fdatasync_append");
    if let (Some(raw), Some(raw_append)) = (raw, raw_append) {
        println!("raw disk: 4 KiB write+fdatasync {raw:.0}/s overwrite, {raw_append:.0}/s append");
    }
    for size in ["64B", "1024B", "65536B"] {
        let one = rate(&format!("append_{size}/appenders/1"));
        let eight = rate(&format!("append_{size}/appenders/8"));
        let many = rate(&format!("append_{size}/appenders/64"));
        if let (Some(one), Some(eight), Some(many)) = (one, eight, many) {
            print!("append {size}: 1 appender {one:.0} rec/s, 8: {eight:.0}, 64: {many:.0} (64 vs 1: {:.1}x)", many / one);
            if let Some(raw) = raw {
                print!("; 1 appender vs raw overwrite: {:.2}x", one / raw);
            }
            println!();
        }
    }
    let mib = env_u64("WAL_BENCH_REPLAY_MIB", 1024);
    for id in ["open_1KiB_records_MiB", "open_and_read_all_MiB"] {
        if let Some(ns) = mean_ns(&format!("replay/{id}/{mib}")) {
            let bytes = (mib << 20) as f64;
            println!(
                "replay {id}: {:.2} GiB/s",
                bytes / ns * 1e9 / (1u64 << 30) as f64
            );
        }
    }
}

fn main() {
    let mut criterion = configure().configure_from_args();
    raw_disk(&mut criterion);
    if suite_selected("append") {
        append(&mut criterion);
    }
    rollover(&mut criterion);
    replay(&mut criterion);
    criterion.final_summary();
    summary();
}
