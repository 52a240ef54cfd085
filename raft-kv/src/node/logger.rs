//! raft-rs logs through `slog`; this drain forwards its records to `tracing` (target
//! `raft`), so one subscriber sees the whole crate's logs. Records below the subscriber's
//! level are not even formatted.

use std::fmt::Write as _;

use slog::{Drain, Level, OwnedKVList, Record, KV};

/// A `slog` drain that emits `tracing` events.
pub struct TracingDrain;

struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let enabled = match record.level() {
            Level::Critical | Level::Error => {
                tracing::enabled!(target: "raft", tracing::Level::ERROR)
            }
            Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
            Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
            Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
            Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let message = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{message}{}", kv.0),
            Level::Warning => tracing::warn!(target: "raft", "{message}{}", kv.0),
            Level::Info => tracing::info!(target: "raft", "{message}{}", kv.0),
            Level::Debug => tracing::debug!(target: "raft", "{message}{}", kv.0),
            Level::Trace => tracing::trace!(target: "raft", "{message}{}", kv.0),
        }
        Ok(())
    }
}

/// A logger for one member's raft instance.
pub fn raft_logger(member_id: u64) -> slog::Logger {
    slog::Logger::root(
        TracingDrain.fuse(),
        slog::o!("member" => format!("{member_id:x}")),
    )
}
