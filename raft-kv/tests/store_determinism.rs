//! Determinism and snapshots: members fed the same log end byte-identical; a member
//! restored from a snapshot mid-log converges; corrupt snapshots and commands are refused
//! without panicking.

use raft_kv::store::{Command, DeleteRequest, PutRequest, Store, UnixNanos};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const T0: u64 = 1_767_225_600 * 1_000_000_000;

/// A seeded random command log over a small key space, with clock ticks and syncs.
fn command_log(seed: u64, len: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut now = T0;
    let segs = ["a", "b", "c", "_h", "queue"];
    let key = |rng: &mut StdRng| {
        let depth = rng.gen_range(1..4);
        (0..depth)
            .map(|_| format!("/{}", segs[rng.gen_range(0..segs.len())]))
            .collect::<String>()
    };
    let mut log = Vec::with_capacity(len);
    for _ in 0..len {
        now += rng.gen_range(0..400) * 1_000_000;
        let t = UnixNanos(now);
        let ttl = if rng.gen_bool(0.3) {
            Some(rng.gen_range(0..4))
        } else {
            None
        };
        let cmd = match rng.gen_range(0..10) {
            0..=3 => PutRequest {
                key: key(&mut rng),
                value: format!("v{}", rng.gen_range(0..5)),
                dir: rng.gen_bool(0.1),
                ttl,
                prev_exist: [None, Some(true), Some(false)][rng.gen_range(0..3)],
                prev_value: rng
                    .gen_bool(0.1)
                    .then(|| format!("v{}", rng.gen_range(0..5))),
                prev_index: rng.gen_bool(0.1).then(|| rng.gen_range(0..50)),
                refresh: false,
            }
            .into_command(t),
            4 => Command::CreateInOrder {
                dir_key: "/queue".into(),
                value: "job".into(),
                dir: false,
                ttl,
                now: t,
            },
            5 | 6 => DeleteRequest {
                key: key(&mut rng),
                dir: rng.gen_bool(0.5),
                recursive: rng.gen_bool(0.5),
                prev_value: rng
                    .gen_bool(0.1)
                    .then(|| format!("v{}", rng.gen_range(0..5))),
                prev_index: None,
            }
            .into_command(t),
            7 => Command::Update {
                key: key(&mut rng),
                value: String::new(),
                ttl: Some(2),
                refresh: true,
                now: t,
            },
            _ => Command::Sync { now: t },
        };
        log.push(cmd.encode());
    }
    log
}

#[test]
fn two_members_fed_the_same_log_have_identical_snapshots() {
    for seed in 0..8 {
        let log = command_log(seed, 1_500);
        let mut a = Store::new();
        let mut b = Store::new();
        let mut answers_a = Vec::new();
        for (i, entry) in log.iter().enumerate() {
            let ra = a.apply_bytes(entry);
            let rb = b.apply_bytes(entry);
            assert_eq!(ra, rb, "seed {seed} entry {i}: answers differ");
            answers_a.push(ra);
            if i % 100 == 0 {
                assert_eq!(a.snapshot(), b.snapshot(), "seed {seed} entry {i}");
                assert_eq!(a.hash(), b.hash());
            }
        }
        assert_eq!(
            a.snapshot(),
            b.snapshot(),
            "seed {seed}: final snapshots differ"
        );
        assert_eq!(a.hash(), b.hash());
        a.check_invariants().unwrap();
        assert!(
            answers_a.iter().filter(|r| r.is_ok()).count() > 100,
            "the log does real work"
        );
    }
}

#[test]
fn a_member_restored_mid_log_converges() {
    let log = command_log(42, 2_000);
    let mut full = Store::new();
    let mut late = Store::new();
    for (i, entry) in log.iter().enumerate() {
        let r = full.apply_bytes(entry);
        if i == 900 {
            late = Store::restore(&full.snapshot()).unwrap();
            continue;
        }
        if i > 900 {
            assert_eq!(late.apply_bytes(entry), r, "entry {i}");
        }
    }
    assert_eq!(late.snapshot(), full.snapshot());
    assert_eq!(late.hash(), full.hash());
    // History came along: a waitIndex watch gives the same answer on both.
    let since = full.index().saturating_sub(500);
    let mut w1 = full.watch("/", true, false, Some(since)).unwrap();
    let mut w2 = late.watch("/", true, false, Some(since)).unwrap();
    assert_eq!(w1.try_next(), w2.try_next());
}

#[test]
fn hash_changes_with_content() {
    let mut a = Store::new();
    let mut b = Store::new();
    let now = UnixNanos(T0);
    a.apply(&Command::set("/k", "1", now)).unwrap();
    b.apply(&Command::set("/k", "2", now)).unwrap();
    assert_ne!(a.hash(), b.hash(), "different values");
    let mut c = Store::new();
    c.apply(&Command::set("/k1", "", now)).unwrap();
    let mut d = Store::new();
    d.apply(&Command::set("/k", "1", now)).unwrap();
    assert_ne!(c.hash(), d.hash(), "field boundaries are unambiguous");
    assert_eq!(a.hash(), d.hash(), "equal content, equal hash");
}

#[test]
fn corrupt_snapshots_are_refused_without_panicking() {
    let log = command_log(7, 300);
    let mut s = Store::new();
    for e in &log {
        let _ = s.apply_bytes(e);
    }
    let good = s.snapshot();
    assert!(Store::restore(&good).is_ok());
    assert_eq!(Store::restore(&[]).unwrap_err().code, 300);
    assert!(Store::restore(b"TKVS\x02").is_err(), "unknown version");
    let mut extra = good.clone();
    extra.push(0);
    assert!(Store::restore(&extra).is_err(), "trailing bytes");
    // Every truncation fails; byte flips either fail or give a store that keeps its
    // invariants.
    for cut in (0..good.len()).step_by(7) {
        assert!(Store::restore(&good[..cut]).is_err(), "truncated at {cut}");
    }
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..2_000 {
        let mut bad = good.clone();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(5..bad.len());
            bad[i] = rng.gen();
        }
        if let Ok(restored) = Store::restore(&bad) {
            restored.check_invariants().unwrap();
        }
    }
    // A failed in-place restore leaves the store unchanged.
    let before = s.snapshot();
    assert!(s.restore_from(&good[..good.len() / 2]).is_err());
    assert_eq!(s.snapshot(), before);
}

#[test]
fn corrupt_commands_are_refused_without_panicking() {
    let log = command_log(3, 200);
    let mut rng = StdRng::seed_from_u64(2);
    let mut s = Store::new();
    for entry in &log {
        let mut bad = entry.clone();
        let i = rng.gen_range(0..bad.len());
        bad[i] = rng.gen();
        let index = s.index();
        if let Err(e) = s.apply_bytes(&bad) {
            if e.code == 300 {
                assert_eq!(s.index(), index, "an undecodable command changes nothing");
            }
        }
        s.check_invariants().unwrap();
    }
}

#[test]
fn snapshot_is_compact() {
    let mut s = Store::new();
    let now = UnixNanos(T0);
    let value = "x".repeat(64);
    for i in 0..10_000 {
        s.apply(&Command::set(format!("/keys/k{i:06}"), value.as_str(), now))
            .unwrap();
    }
    let bytes = s.snapshot();
    // Per key: 7-byte name + 64-byte value + a few bytes of framing and varint indexes,
    // plus the 1000 retained events (key + value each).
    let per_key = bytes.len() as f64 / 10_000.0;
    assert!(per_key < 100.0, "{per_key} bytes per key");
    let restored = Store::restore(&bytes).unwrap();
    assert_eq!(restored.node_count(), 10_001);
    assert_eq!(restored.hash(), s.hash());
}
