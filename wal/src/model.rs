//! A reference model of the WAL and a driver that runs the same operations against a real
//! [`Wal`] on a [`FaultFs`], checking after every step that the two agree. The property
//! tests (`tests/model.rs`) and the `wal_model` fuzz target both use it, so a failure found
//! by either is replayable as a plain list of [`Op`]s (keep it as a named regression test).
//!
//! The model is a `Vec` of records plus two facts: the index of its first record, and how
//! many of its records are known to be durable (a prefix). The rule checked after a
//! [`Op::Crash`] is the durability contract: the recovered log is the durable prefix,
//! possibly followed by a prefix of the records that were not yet durable — never a gap, a
//! reordering or a record that was not appended.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::fault::{Crash, FaultFs};
use crate::wal::{RecordRef, SyncPolicy, Wal, WalOptions};

/// One step of a model run. Numeric fields are reduced modulo what is valid at that point,
/// so every value of every field is a meaningful operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Append one batch; each size is one record's payload length.
    Append {
        /// Payload sizes, one per record.
        sizes: Vec<u16>,
        /// Record type of the batch's records.
        kind: u8,
    },
    /// `sync()`.
    Sync,
    /// `truncate_suffix(from)`, with `from = first + keep % (len + 1)`.
    Truncate {
        /// Number of records to keep (reduced modulo `len + 1`).
        keep: u64,
    },
    /// `compact_prefix(upto)`, with `upto = first + upto % (len + 2)`.
    Compact {
        /// Offset of `upto` from the first index (reduced modulo `len + 2`).
        upto: u64,
    },
    /// `reset(next + skip)`.
    Reset {
        /// How far past the current next index the fresh log starts.
        skip: u8,
    },
    /// Power loss (keeping a seeded prefix of unsynced bytes), then reopen.
    Crash {
        /// Chooses what survives.
        seed: u64,
    },
    /// Clean close and reopen: nothing may be lost.
    Reopen,
    /// `sync()`, then `truncate_suffix(first + keep % (len + 1))` with every fsync failing,
    /// then power loss: the truncation may be partly applied, so the log must come back as a
    /// prefix of the old one that still holds every record below the truncation point.
    TruncateThenCrash {
        /// Number of records to keep (reduced modulo `len + 1`).
        keep: u64,
        /// Chooses what survives the crash.
        seed: u64,
    },
    /// Append a batch while a fault is armed, then power loss.
    FaultyAppendThenCrash {
        /// Payload sizes, one per record.
        sizes: Vec<u16>,
        /// `false`: the write is torn after `budget` bytes; `true`: fsync fails after
        /// `budget % 4` more successful syncs.
        fail_sync: bool,
        /// Bytes (or syncs) allowed before the fault.
        budget: u16,
        /// Chooses what survives the crash.
        seed: u64,
    },
    /// Read a sub-range and compare, with `start = first + start % (len + 1)` and a length
    /// reduced to what remains.
    Read {
        /// Start offset from the first index.
        start: u64,
        /// Number of records.
        len: u64,
    },
}

/// A record as the model holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRecord {
    kind: u8,
    payload: Vec<u8>,
}

/// The reference: a vector of records, the first index, and the durable prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    first: u64,
    records: Vec<ModelRecord>,
    durable: usize,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

/// Why a model run failed: the step number, the operation and what disagreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the failing operation in the run.
    pub step: usize,
    /// The failing operation.
    pub op: Op,
    /// What the WAL did that the model forbids.
    pub detail: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({:?}): {}", self.step, self.op, self.detail)
    }
}

/// Runs [`Op`]s against a [`Wal`] on a [`FaultFs`] and against the [`Model`].
#[derive(Debug)]
pub struct Harness {
    fs: FaultFs,
    dir: PathBuf,
    options: WalOptions,
    wal: Option<Wal>,
    model: Model,
    serial: u64,
    step: usize,
}

/// Payload bytes for the `serial`-th record appended in a run: unique and self-describing.
fn payload(serial: u64, size: usize) -> Vec<u8> {
    let mut p: Vec<u8> = serial
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect();
    for (i, b) in p.iter_mut().enumerate().skip(8) {
        *b = (i as u8).wrapping_mul(31) ^ (serial as u8);
    }
    p
}

impl Harness {
    /// A fresh WAL with the given policy and segment size (clamped to at least 64 bytes) on
    /// an empty [`FaultFs`].
    pub fn new(sync: SyncPolicy, segment_size: u64) -> Result<Harness, String> {
        let fs = FaultFs::new();
        let options = WalOptions {
            segment_size: segment_size.max(crate::wal::MIN_SEGMENT_SIZE),
            sync,
            fs: Arc::new(fs.clone()),
            // Deterministic: no helper thread writing spares behind the operations, so a
            // seed always replays the same way (tests/spare.rs covers the background mode).
            preallocation: crate::wal::Preallocation::Inline,
            ..WalOptions::default()
        };
        let dir = PathBuf::from("/model/wal");
        let (wal, _) =
            Wal::open(&dir, options.clone()).map_err(|e| format!("initial open: {e}"))?;
        Ok(Harness {
            fs,
            dir,
            options,
            wal: Some(wal),
            model: Model {
                first: 1,
                records: Vec::new(),
                durable: 0,
            },
            serial: 0,
            step: 0,
        })
    }

    /// Runs every op in order; stops at the first divergence.
    pub fn run(sync: SyncPolicy, segment_size: u64, ops: &[Op]) -> Result<(), Divergence> {
        let mut h = Harness::new(sync, segment_size).map_err(|detail| Divergence {
            step: 0,
            op: Op::Reopen,
            detail,
        })?;
        for op in ops {
            h.apply(op)?;
        }
        Ok(())
    }

    /// The model's current state.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Applies one op to both sides and checks that they agree.
    pub fn apply(&mut self, op: &Op) -> Result<(), Divergence> {
        let step = self.step;
        self.step += 1;
        self.apply_inner(op).map_err(|detail| Divergence {
            step,
            op: op.clone(),
            detail,
        })
    }

    fn wal(&self) -> Result<&Wal, String> {
        self.wal.as_ref().ok_or_else(|| "no open WAL".to_owned())
    }

    fn apply_inner(&mut self, op: &Op) -> Result<(), String> {
        let m_len = self.model.records.len() as u64;
        match op {
            Op::Append { sizes, kind } => {
                let payloads: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|&s| {
                        self.serial += 1;
                        payload(self.serial, usize::from(s))
                    })
                    .collect();
                let batch: Vec<RecordRef<'_>> =
                    payloads.iter().map(|p| RecordRef::new(*kind, p)).collect();
                let next = self.model.next();
                let range = self
                    .wal()?
                    .append(&batch)
                    .map_err(|e| format!("append: {e}"))?;
                if range != (next..next + batch.len() as u64) {
                    return Err(format!("append returned {range:?}, model expects {next}.."));
                }
                self.model
                    .records
                    .extend(payloads.into_iter().map(|payload| ModelRecord {
                        kind: *kind,
                        payload,
                    }));
                if self.options.sync == SyncPolicy::Always {
                    self.model.durable = self.model.records.len();
                }
            }
            Op::Sync => {
                self.wal()?.sync().map_err(|e| format!("sync: {e}"))?;
                self.model.durable = self.model.records.len();
            }
            Op::Truncate { keep } => {
                let keep = keep % (m_len + 1);
                let from = self.model.first + keep;
                self.wal()?
                    .truncate_suffix(from)
                    .map_err(|e| format!("truncate_suffix({from}): {e}"))?;
                self.model.records.truncate(keep as usize);
                self.model.durable = self.model.records.len();
            }
            Op::Compact { upto } => {
                let upto = self.model.first + upto % (m_len + 2);
                let new_first = self
                    .wal()?
                    .compact_prefix(upto)
                    .map_err(|e| format!("compact_prefix({upto}): {e}"))?;
                let old_first = self.model.first;
                if new_first < old_first
                    || new_first > upto.max(old_first)
                    || new_first > self.model.next()
                {
                    return Err(format!(
                        "compact_prefix({upto}) returned first index {new_first}; log was {old_first}..{}",
                        self.model.next()
                    ));
                }
                let dropped = (new_first - old_first) as usize;
                if dropped > self.model.durable {
                    return Err(format!(
                        "compaction dropped {dropped} records but only {} were durable",
                        self.model.durable
                    ));
                }
                self.model.records.drain(..dropped);
                self.model.durable -= dropped;
                self.model.first = new_first;
            }
            Op::Reset { skip } => {
                let next = self.model.next() + u64::from(*skip);
                self.wal()?
                    .reset(next)
                    .map_err(|e| format!("reset({next}): {e}"))?;
                self.model.records.clear();
                self.model.durable = 0;
                self.model.first = next;
            }
            Op::Crash { seed } => {
                self.wal = None;
                self.fs.crash(Crash::Seeded(*seed));
                self.reopen(false)?;
            }
            Op::Reopen => {
                self.wal = None;
                self.reopen(true)?;
            }
            Op::TruncateThenCrash { keep, seed } => {
                let keep = keep % (m_len + 1);
                let from = self.model.first + keep;
                self.wal()?.sync().map_err(|e| format!("sync: {e}"))?;
                self.fs.fail_syncs_after(Some(0));
                let result = self.wal()?.truncate_suffix(from);
                self.fs.fail_syncs_after(None);
                if keep < m_len {
                    if result.is_ok() {
                        return Err("truncate_suffix succeeded although every fsync failed".into());
                    }
                    self.model.durable = keep as usize;
                } else {
                    result.map_err(|e| format!("no-op truncate_suffix({from}): {e}"))?;
                    self.model.durable = self.model.records.len();
                }
                self.wal = None;
                self.fs.crash(Crash::Seeded(*seed));
                self.reopen(false)?;
            }
            Op::FaultyAppendThenCrash {
                sizes,
                fail_sync,
                budget,
                seed,
            } => {
                let payloads: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|&s| {
                        self.serial += 1;
                        payload(self.serial, usize::from(s))
                    })
                    .collect();
                let batch: Vec<RecordRef<'_>> =
                    payloads.iter().map(|p| RecordRef::new(7, p)).collect();
                if *fail_sync {
                    self.fs.fail_syncs_after(Some(u64::from(budget % 4)));
                } else {
                    self.fs.tear_writes_after(Some(u64::from(*budget)));
                }
                let result = self.wal()?.append(&batch);
                self.fs.fail_syncs_after(None);
                self.fs.tear_writes_after(None);
                let next = self.model.next();
                match result {
                    Ok(range) if range != (next..next + batch.len() as u64) => {
                        return Err(format!("append returned {range:?}, model expects {next}.."));
                    }
                    Ok(_) if self.options.sync == SyncPolicy::Always => {
                        self.model.records.extend(
                            payloads
                                .into_iter()
                                .map(|payload| ModelRecord { kind: 7, payload }),
                        );
                        self.model.durable = self.model.records.len();
                    }
                    // Not acknowledged as durable: any prefix may survive.
                    _ => self.model.records.extend(
                        payloads
                            .into_iter()
                            .map(|payload| ModelRecord { kind: 7, payload }),
                    ),
                }
                self.wal = None;
                self.fs.crash(Crash::Seeded(*seed));
                self.reopen(false)?;
            }
            Op::Read { start, len } => {
                let start = start % (m_len + 1);
                let len = len % (m_len - start + 1);
                let lo = self.model.first + start;
                self.check_range(lo, lo + len)?;
            }
        }
        let wal = self.wal()?;
        if (wal.first_index(), wal.next_index()) != (self.model.first, self.model.next()) {
            return Err(format!(
                "WAL holds {}..{}, model holds {}..{}",
                wal.first_index(),
                wal.next_index(),
                self.model.first,
                self.model.next()
            ));
        }
        Ok(())
    }

    fn reopen(&mut self, exact: bool) -> Result<(), String> {
        let (wal, recovery) =
            Wal::open(&self.dir, self.options.clone()).map_err(|e| format!("reopen: {e}"))?;
        let m = &self.model;
        if recovery.first_index != m.first {
            return Err(format!(
                "recovered first index {}, model {}",
                recovery.first_index, m.first
            ));
        }
        let kept = recovery
            .next_index
            .checked_sub(m.first)
            .ok_or("next index below first")?;
        let (min, max) = (m.durable as u64, m.records.len() as u64);
        if exact && (kept != max || recovery.torn_tail.is_some()) {
            return Err(format!(
                "clean reopen recovered {kept} of {max} records ({recovery:?})"
            ));
        }
        if kept < min || kept > max {
            return Err(format!(
                "recovered {kept} records; model has {min} durable and {max} in total"
            ));
        }
        self.wal = Some(wal);
        self.model.records.truncate(kept as usize);
        self.model.durable = kept as usize;
        let (first, next) = (self.model.first, self.model.next());
        self.check_range(first, next)
    }

    fn check_range(&self, lo: u64, hi: u64) -> Result<(), String> {
        let got = self
            .wal()?
            .read(lo..hi)
            .map_err(|e| format!("read {lo}..{hi}: {e}"))?;
        if got.len() as u64 != hi - lo {
            return Err(format!("read {lo}..{hi} returned {} records", got.len()));
        }
        for (rec, want_index) in got.iter().zip(lo..) {
            let Some(want) = self
                .model
                .records
                .get((want_index - self.model.first) as usize)
            else {
                return Err(format!(
                    "read returned record {want_index} beyond the model"
                ));
            };
            if rec.index != want_index || rec.kind != want.kind || rec.payload != want.payload {
                return Err(format!(
                    "record {want_index} differs: got index {} kind {} {} bytes, want kind {} {} bytes",
                    rec.index,
                    rec.kind,
                    rec.payload.len(),
                    want.kind,
                    want.payload.len()
                ));
            }
        }
        Ok(())
    }
}
