//! Operation counters for `GET /v2/stats/store`.
//!
//! Counters are atomics so reads (`&Store`) can count. Writes are counted where they are
//! applied (on every member), reads where they are served, watchers on the member holding
//! them; only monotonic growth is meaningful. Stats are not part of snapshots or hashes.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of the counters, serialized with etcd's field names and order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    /// Successful GETs.
    pub gets_success: u64,
    /// Failed GETs.
    pub gets_fail: u64,
    /// Successful sets.
    pub sets_success: u64,
    /// Failed sets.
    pub sets_fail: u64,
    /// Successful deletes.
    pub delete_success: u64,
    /// Failed deletes.
    pub delete_fail: u64,
    /// Successful updates.
    pub update_success: u64,
    /// Failed updates.
    pub update_fail: u64,
    /// Successful creates (including in-order creates).
    pub create_success: u64,
    /// Failed creates.
    pub create_fail: u64,
    /// Successful compare-and-swaps.
    pub compare_and_swap_success: u64,
    /// Failed compare-and-swaps.
    pub compare_and_swap_fail: u64,
    /// Successful compare-and-deletes.
    pub compare_and_delete_success: u64,
    /// Failed compare-and-deletes.
    pub compare_and_delete_fail: u64,
    /// Expired nodes.
    pub expire_count: u64,
    /// Pending watchers on this member.
    pub watchers: u64,
}

/// Which counter an operation bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    Get,
    Set,
    Delete,
    Update,
    Create,
    CompareAndSwap,
    CompareAndDelete,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    ok: [AtomicU64; 7],
    fail: [AtomicU64; 7],
    expire: AtomicU64,
}

impl Stats {
    fn slot(c: Counter) -> usize {
        c as usize
    }

    /// Counts one operation.
    pub fn count(&self, c: Counter, success: bool) {
        let table = if success { &self.ok } else { &self.fail };
        if let Some(a) = table.get(Self::slot(c)) {
            a.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one expired node.
    pub fn count_expire(&self) {
        self.expire.fetch_add(1, Ordering::Relaxed);
    }

    fn ok(&self, c: Counter) -> u64 {
        self.ok
            .get(Self::slot(c))
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    fn fail(&self, c: Counter) -> u64 {
        self.fail
            .get(Self::slot(c))
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Reads all counters; `watchers` is supplied by the hub.
    pub fn snapshot(&self, watchers: u64) -> StoreStats {
        StoreStats {
            gets_success: self.ok(Counter::Get),
            gets_fail: self.fail(Counter::Get),
            sets_success: self.ok(Counter::Set),
            sets_fail: self.fail(Counter::Set),
            delete_success: self.ok(Counter::Delete),
            delete_fail: self.fail(Counter::Delete),
            update_success: self.ok(Counter::Update),
            update_fail: self.fail(Counter::Update),
            create_success: self.ok(Counter::Create),
            create_fail: self.fail(Counter::Create),
            compare_and_swap_success: self.ok(Counter::CompareAndSwap),
            compare_and_swap_fail: self.fail(Counter::CompareAndSwap),
            compare_and_delete_success: self.ok(Counter::CompareAndDelete),
            compare_and_delete_fail: self.fail(Counter::CompareAndDelete),
            expire_count: self.expire.load(Ordering::Relaxed),
            watchers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_names_and_order() {
        let s = Stats::default();
        s.count(Counter::Get, true);
        s.count(Counter::CompareAndDelete, false);
        s.count_expire();
        let json = serde_json::to_string(&s.snapshot(2)).unwrap();
        assert_eq!(
            json,
            "{\"getsSuccess\":1,\"getsFail\":0,\"setsSuccess\":0,\"setsFail\":0,\"deleteSuccess\":0,\
             \"deleteFail\":0,\"updateSuccess\":0,\"updateFail\":0,\"createSuccess\":0,\"createFail\":0,\
             \"compareAndSwapSuccess\":0,\"compareAndSwapFail\":0,\"compareAndDeleteSuccess\":0,\
             \"compareAndDeleteFail\":1,\"expireCount\":1,\"watchers\":2}"
        );
    }
}
