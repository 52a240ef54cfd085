//! Bookkeeping of requests in flight: proposals waiting for their entry to apply, and
//! linearizable reads waiting for a ReadIndex round and for the state machine to catch up.
//!
//! Proposals are matched by the request id carried in the entry's context (never by queue
//! position). A proposal's log index becomes known when its entry reaches this member's log
//! (at once on the leader, when replicated on a follower). From then on its outcome is
//! exact: the entry at that index applies with our id (success) or with another (dropped).
//! Before that, a change of leadership makes the outcome unknowable, and the proposer is
//! told so.

use std::collections::{BTreeMap, VecDeque};

use super::completion::Completer;
use super::error::NodeError;
use super::{Applied, Member};

/// The 25-byte header the node puts in every entry's `context` (and read round contexts):
///
/// | offset | width | field |
/// |---|---|---|
/// | 0 | 1 | kind: 1 state machine command, 2 member update (whole metadata, written by earlier versions), 3 conf change, 4 read round, 5 member patch |
/// | 1 | 8 | origin member id, little-endian |
/// | 9 | 8 | origin boot id (random per process start), little-endian |
/// | 17 | 8 | request sequence number within that boot, little-endian |
///
/// Entries with an empty context are raft's own (the leader's empty entry) or carry no
/// proposer (nobody waits for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHeader {
    pub kind: HeaderKind,
    pub origin: u64,
    pub boot: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum HeaderKind {
    Command = 1,
    MemberUpdate = 2,
    ConfChange = 3,
    ReadRound = 4,
    MemberPatch = 5,
}

pub(crate) const HEADER_LEN: usize = 25;

impl RequestHeader {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.origin.to_le_bytes());
        out.extend_from_slice(&self.boot.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<RequestHeader> {
        if bytes.len() != HEADER_LEN {
            return None;
        }
        let kind = match bytes.first()? {
            1 => HeaderKind::Command,
            2 => HeaderKind::MemberUpdate,
            3 => HeaderKind::ConfChange,
            4 => HeaderKind::ReadRound,
            5 => HeaderKind::MemberPatch,
            _ => return None,
        };
        let word = |at: usize| -> Option<u64> {
            let slice = bytes.get(at..at + 8)?;
            let array: [u8; 8] = slice.try_into().ok()?;
            Some(u64::from_le_bytes(array))
        };
        Some(RequestHeader {
            kind,
            origin: word(1)?,
            boot: word(9)?,
            seq: word(17)?,
        })
    }
}

/// Who waits for a proposal.
pub(crate) enum Waiter<R> {
    Command(Completer<Applied<R>>),
    Membership(Completer<Applied<Vec<Member>>>),
}

impl<R> Waiter<R> {
    pub fn fail(self, error: NodeError) {
        match self {
            Waiter::Command(c) => {
                c.complete(Err(error));
            }
            Waiter::Membership(c) => {
                c.complete(Err(error));
            }
        }
    }

    fn is_abandoned(&self) -> bool {
        match self {
            Waiter::Command(c) => c.is_abandoned(),
            Waiter::Membership(c) => c.is_abandoned(),
        }
    }
}

pub(crate) struct Pending<R> {
    pub waiter: Waiter<R>,
    index: Option<u64>,
    deadline: u64,
}

/// Proposals in flight, by sequence number and (once known) by log index.
pub(crate) struct Proposals<R> {
    by_seq: BTreeMap<u64, Pending<R>>,
    by_index: BTreeMap<u64, u64>,
}

impl<R> Default for Proposals<R> {
    fn default() -> Self {
        Proposals {
            by_seq: BTreeMap::new(),
            by_index: BTreeMap::new(),
        }
    }
}

impl<R> Proposals<R> {
    pub fn insert(&mut self, seq: u64, waiter: Waiter<R>, index: Option<u64>, deadline: u64) {
        self.by_seq.insert(
            seq,
            Pending {
                waiter,
                index: None,
                deadline,
            },
        );
        if let Some(index) = index {
            self.set_index(seq, index);
        }
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Records that our entry `seq` sits at log position `index`.
    pub fn set_index(&mut self, seq: u64, index: u64) {
        let Some(pending) = self.by_seq.get_mut(&seq) else {
            return;
        };
        if pending.index == Some(index) && self.by_index.get(&index) == Some(&seq) {
            return;
        }
        if let Some(old) = pending.index.replace(index) {
            if self.by_index.get(&old) == Some(&seq) {
                self.by_index.remove(&old);
            }
        }
        // Another of our proposals recorded at this index was overwritten by this one.
        if let Some(other) = self.by_index.insert(index, seq) {
            if other != seq {
                if let Some(p) = self.by_seq.get_mut(&other) {
                    p.index = None;
                }
            }
        }
    }

    /// Removes and returns proposal `seq` (its entry applied).
    pub fn take(&mut self, seq: u64) -> Option<Pending<R>> {
        let pending = self.by_seq.remove(&seq)?;
        if let Some(index) = pending.index {
            if self.by_index.get(&index) == Some(&seq) {
                self.by_index.remove(&index);
            }
        }
        Some(pending)
    }

    /// An entry that is not proposal `except` applied at `index`: a proposal we recorded
    /// there lost its slot and was dropped.
    pub fn displaced_at(&mut self, index: u64, except: Option<u64>) -> Option<Pending<R>> {
        let seq = *self.by_index.get(&index)?;
        if Some(seq) == except {
            return None;
        }
        self.by_index.remove(&index);
        let mut pending = self.by_seq.remove(&seq)?;
        pending.index = None;
        Some(pending)
    }

    /// Fails every proposal whose index is not known yet (leadership changed).
    pub fn fail_unindexed(&mut self, reason: &str) {
        let seqs: Vec<u64> = self
            .by_seq
            .iter()
            .filter(|(_, p)| p.index.is_none())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in seqs {
            if let Some(p) = self.by_seq.remove(&seq) {
                p.waiter.fail(NodeError::unknown(reason));
            }
        }
    }

    /// Fails every proposal at or below `index` (a snapshot replaced that part of the log,
    /// so whether it made it cannot be told).
    pub fn fail_upto(&mut self, index: u64, reason: &str) {
        let seqs: Vec<u64> = self.by_index.range(..=index).map(|(_, s)| *s).collect();
        for seq in seqs {
            if let Some(p) = self.take(seq) {
                p.waiter.fail(NodeError::unknown(reason));
            }
        }
    }

    /// Fails proposals past their deadline, and forgets those whose caller left.
    pub fn expire(&mut self, now: u64) {
        let seqs: Vec<u64> = self
            .by_seq
            .iter()
            .filter(|(_, p)| p.deadline <= now || p.waiter.is_abandoned())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in seqs {
            if let Some(p) = self.take(seq) {
                p.waiter.fail(NodeError::TimedOut {
                    what: "the proposal to be applied (it may still be applied)".into(),
                });
            }
        }
    }

    pub fn fail_all(&mut self, error: &NodeError) {
        self.by_index.clear();
        for (_, p) in std::mem::take(&mut self.by_seq) {
            p.waiter.fail(error.clone());
        }
    }
}

/// A linearizable read: runs against the state machine once it is safe.
pub(crate) type ReadFn<S> = Box<dyn FnOnce(Result<&S, NodeError>) + Send>;

pub(crate) struct ReadWaiter<S> {
    pub run: ReadFn<S>,
    pub deadline: u64,
}

pub(crate) struct ReadRound<S> {
    pub seq: u64,
    pub started: u64,
    pub waiters: Vec<ReadWaiter<S>>,
}

/// Linearizable reads: queued (not yet in a round), in one ReadIndex round in flight, or
/// confirmed (waiting for `applied >= read index`).
pub(crate) struct Reads<S> {
    pub queued: Vec<ReadWaiter<S>>,
    pub in_flight: Option<ReadRound<S>>,
    pub confirmed: VecDeque<(u64, Vec<ReadWaiter<S>>)>,
}

impl<S> Default for Reads<S> {
    fn default() -> Self {
        Reads {
            queued: Vec::new(),
            in_flight: None,
            confirmed: VecDeque::new(),
        }
    }
}

impl<S> Reads<S> {
    /// Puts the in-flight round's readers back in the queue (the round was lost).
    pub fn requeue_in_flight(&mut self) {
        if let Some(round) = self.in_flight.take() {
            let mut waiters = round.waiters;
            waiters.append(&mut self.queued);
            self.queued = waiters;
        }
    }

    /// The round with sequence `seq` came back with read index `index`.
    pub fn confirm(&mut self, seq: u64, index: u64) -> bool {
        match &self.in_flight {
            Some(round) if round.seq == seq => {}
            _ => return false,
        }
        if let Some(round) = self.in_flight.take() {
            // Keep the queue ordered by index (indexes only grow, but be safe).
            let position = self.confirmed.iter().position(|(i, _)| *i > index);
            match position {
                Some(at) => self.confirmed.insert(at, (index, round.waiters)),
                None => self.confirmed.push_back((index, round.waiters)),
            }
        }
        true
    }

    /// Takes the readers whose read index is applied.
    #[cfg(test)]
    pub fn take_servable(&mut self, applied: u64) -> Vec<ReadWaiter<S>> {
        self.take_servable_rounds(applied)
            .into_iter()
            .flat_map(|(_, waiters)| waiters)
            .collect()
    }

    /// Takes the confirmed rounds whose read index is applied, with their indexes.
    pub fn take_servable_rounds(&mut self, applied: u64) -> Vec<(u64, Vec<ReadWaiter<S>>)> {
        let mut out = Vec::new();
        while self
            .confirmed
            .front()
            .is_some_and(|(index, _)| *index <= applied)
        {
            if let Some(round) = self.confirmed.pop_front() {
                out.push(round);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.queued.len()
            + self.in_flight.as_ref().map_or(0, |r| r.waiters.len())
            + self.confirmed.iter().map(|(_, w)| w.len()).sum::<usize>()
    }

    /// Fails readers past their deadline.
    pub fn expire(&mut self, now: u64) {
        let expired = |w: &ReadWaiter<S>| w.deadline <= now;
        let mut dead = Vec::new();
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queued)
            .into_iter()
            .partition(|w| !expired(w));
        self.queued = keep;
        dead.extend(gone);
        if let Some(round) = &mut self.in_flight {
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut round.waiters)
                .into_iter()
                .partition(|w| !expired(w));
            round.waiters = keep;
            dead.extend(gone);
        }
        for (_, waiters) in self.confirmed.iter_mut() {
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(waiters)
                .into_iter()
                .partition(|w| !expired(w));
            *waiters = keep;
            dead.extend(gone);
        }
        self.confirmed.retain(|(_, w)| !w.is_empty());
        for waiter in dead {
            (waiter.run)(Err(NodeError::TimedOut {
                what: "a linearizable read (no quorum confirmed this member's view)".into(),
            }));
        }
    }

    pub fn fail_all(&mut self, error: &NodeError) {
        let mut all = std::mem::take(&mut self.queued);
        if let Some(round) = self.in_flight.take() {
            all.extend(round.waiters);
        }
        for (_, waiters) in std::mem::take(&mut self.confirmed) {
            all.extend(waiters);
        }
        for waiter in all {
            (waiter.run)(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::completion::completion_pair;

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let header = RequestHeader {
            kind: HeaderKind::MemberUpdate,
            origin: 7,
            boot: u64::MAX,
            seq: 42,
        };
        let bytes = header.encode();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(RequestHeader::decode(&bytes), Some(header));
        assert_eq!(RequestHeader::decode(&bytes[..24]), None);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert_eq!(RequestHeader::decode(&bad), None);
        assert_eq!(RequestHeader::decode(&[]), None);
    }

    /// The entry context layout is a wire and on-disk format: it must never change.
    #[test]
    fn header_layout_is_stable() {
        let header = RequestHeader {
            kind: HeaderKind::Command,
            origin: 0x0102_0304_0506_0708,
            boot: 0x1112_1314_1516_1718,
            seq: 0x2122_2324_2526_2728,
        };
        let golden: [u8; HEADER_LEN] = [
            1, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13,
            0x12, 0x11, 0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21,
        ];
        assert_eq!(header.encode(), golden);
        for (kind, byte) in [
            (HeaderKind::Command, 1u8),
            (HeaderKind::MemberUpdate, 2),
            (HeaderKind::ConfChange, 3),
            (HeaderKind::ReadRound, 4),
            (HeaderKind::MemberPatch, 5),
        ] {
            assert_eq!(kind as u8, byte);
        }
    }

    #[test]
    fn displaced_proposal_is_reported_once() {
        let mut proposals: Proposals<u32> = Proposals::default();
        let (done, completer) = completion_pair(1);
        proposals.insert(5, Waiter::Command(completer), Some(10), 100);
        assert!(proposals.displaced_at(10, Some(5)).is_none());
        let displaced = proposals.displaced_at(10, Some(6));
        assert!(displaced.is_some());
        if let Some(p) = displaced {
            p.waiter.fail(NodeError::dropped("test"));
        }
        assert!(proposals.displaced_at(10, None).is_none());
        assert_eq!(proposals.len(), 0);
        assert!(matches!(done.wait(), Err(NodeError::Dropped { .. })));
    }

    #[test]
    fn unindexed_fail_on_leader_change_indexed_stay() {
        let mut proposals: Proposals<u32> = Proposals::default();
        let (a, ca) = completion_pair(1);
        let (mut b, cb) = completion_pair(1);
        proposals.insert(1, Waiter::Command(ca), None, 100);
        proposals.insert(2, Waiter::Command(cb), Some(3), 100);
        proposals.fail_unindexed("leader changed");
        assert!(matches!(a.wait(), Err(NodeError::OutcomeUnknown { .. })));
        assert!(b.try_take().is_none());
        assert_eq!(proposals.len(), 1);
        proposals.expire(100);
        assert!(matches!(b.wait(), Err(NodeError::TimedOut { .. })));
    }

    #[test]
    fn reads_confirm_only_the_current_round() {
        let mut reads: Reads<u32> = Reads::default();
        let (done, completer) = completion_pair::<u32>(1);
        reads.queued.push(ReadWaiter {
            run: Box::new(move |sm: Result<&u32, NodeError>| {
                completer.complete(sm.copied());
            }),
            deadline: 10,
        });
        let waiters = std::mem::take(&mut reads.queued);
        reads.in_flight = Some(ReadRound {
            seq: 3,
            started: 0,
            waiters,
        });
        assert!(!reads.confirm(2, 5));
        assert!(reads.confirm(3, 5));
        assert!(reads.take_servable(4).is_empty());
        let servable = reads.take_servable(5);
        assert_eq!(servable.len(), 1);
        for w in servable {
            (w.run)(Ok(&9));
        }
        assert_eq!(done.wait().ok(), Some(9));
    }
}
