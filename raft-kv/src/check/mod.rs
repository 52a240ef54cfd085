//! History checkers for robustness tests: is what clients saw possible at all?
//!
//! A test records every operation its clients made against a cluster — when it was
//! invoked, when (and whether) it completed, what it answered — and these checkers decide
//! whether some single, real-time-respecting order of those operations explains every
//! answer (linearizability), and whether watch streams were complete and in order.
//!
//! - [`check_linearizable`] is a generic Wing & Gong / Lowe ("WGL") search, as in
//!   porcupine and Knossos: a depth-first search over which pending operation to
//!   linearize next, with memoization over (set of linearized operations as a bitmap,
//!   model state), and backtracking when an operation's completion is reached before it
//!   could be linearized. A [`Model`] is a sequential specification whose steps may be
//!   nondeterministic (several possible next states), which is how operations with an
//!   unknown outcome are modelled: they either took effect or did not.
//! - [`etcd`] is the etcd v2 key model (set, get, compare-and-swap by `prevValue`,
//!   create, delete; timed-out writes are open-ended "maybe happened"), partitioned by key
//!   (linearizability is local, so each key is checked alone), plus checks of etcd's
//!   global `modifiedIndex` (one index per written value, distinct indexes, indexes that
//!   grow in real time) and of serializable (non-quorum) reads.
//! - [`watch`] checks watch streams against the history of modifications: no gaps, no
//!   duplicates, no misordering, and every watcher agrees on what happened at each index.
//!
//! # Invariants the caller must provide
//!
//! - Times are from one monotonic clock (nanoseconds since the start of the test is the
//!   usual choice); `call <= ret`.
//! - An operation whose outcome is unknown (timeout, connection reset after sending,
//!   an error that does not say "not applied") is recorded with `ret: None`; it may take
//!   effect at any time after its invocation, or never.
//! - Writes write unique values, so values identify writes (the [`etcd`] index checks and
//!   the pruning of unobserved unknown writes rely on that).
//!
//! # Caveats
//!
//! The search is exponential in the worst case (the problem is NP-complete); memoization
//! makes typical histories of thousands of operations per key with a handful of concurrent
//! clients take milliseconds. Each check has a step budget; a history that exhausts it is
//! reported as [`Verdict::Inconclusive`], never as linearizable.

pub mod etcd;
#[cfg(test)]
mod tests;
pub mod watch;

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification: the states an object can be in and what each operation
/// (its input and its observed output together) does to a state.
pub trait Model {
    /// The object's state (memoized: keep it small).
    type State: Clone + Eq + Hash + Debug;
    /// One operation: what was asked and what was answered.
    type Op: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The states `op` may leave the object in when applied to `state`, in the order the
    /// search should try them; empty if `op` with its answer is impossible in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Vec<Self::State>;
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<O> {
    /// Who issued it (for reports).
    pub client: u64,
    /// When it was invoked.
    pub call: u64,
    /// When it completed; `None` if its outcome is unknown (it may take effect at any
    /// time after `call`, or never).
    pub ret: Option<u64>,
    /// What it asked and answered.
    pub op: O,
}

/// The answer of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations respects real time and explains every answer.
    Linearizable,
    /// No such order exists.
    NotLinearizable(Counterexample),
    /// The search used up its step budget.
    Inconclusive {
        /// Steps taken.
        steps: u64,
    },
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// What the search found when it gave up: the longest order of operations it could
/// build, the state it led to, and the operation that could not follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counterexample {
    /// Indexes (into the checked slice) of the longest linearizable prefix found.
    pub longest_prefix: Vec<usize>,
    /// The model state after that prefix, rendered with `{:?}`.
    pub state: String,
    /// The operation that had to be linearized next (its completion came first) but could
    /// not be, from that state.
    pub stuck_on: Option<usize>,
}

/// The default step budget of [`check_linearizable`] callers in this module.
pub const DEFAULT_BUDGET: u64 = 20_000_000;

#[derive(Clone, Copy, Debug)]
struct Node {
    op: usize,
    is_call: bool,
    /// For a call, the node of its return.
    matching: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// A doubly linked list of call and return entries (node 0 is the head sentinel), from
/// which operations are lifted as they are linearized and put back on backtracking.
struct Entries {
    nodes: Vec<Node>,
}

impl Entries {
    fn new<O>(ops: &[Operation<O>]) -> Entries {
        // (time, is_return, op): calls sort before returns at the same time, so operations
        // that touch in time count as concurrent (the permissive reading).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            let ret = op.ret.unwrap_or(u64::MAX).max(op.call);
            events.push((op.call, false, i));
            events.push((ret, true, i));
        }
        events.sort();
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            op: usize::MAX,
            is_call: false,
            matching: NIL,
            prev: NIL,
            next: NIL,
        });
        let mut return_node = vec![NIL; ops.len()];
        for &(_, is_return, op) in &events {
            let at = nodes.len();
            if is_return {
                return_node[op] = at;
            }
            nodes.push(Node {
                op,
                is_call: !is_return,
                matching: NIL,
                prev: at - 1,
                next: NIL,
            });
            nodes[at - 1].next = at;
        }
        for node in nodes.iter_mut().skip(1) {
            if node.is_call {
                node.matching = return_node[node.op];
            }
        }
        Entries { nodes }
    }

    fn first(&self) -> usize {
        self.nodes[0].next
    }

    /// Removes a call and its return from the list.
    fn lift(&mut self, call: usize) {
        let ret = self.nodes[call].matching;
        for at in [call, ret] {
            let Node { prev, next, .. } = self.nodes[at];
            self.nodes[prev].next = next;
            if next != NIL {
                self.nodes[next].prev = prev;
            }
        }
    }

    /// Puts back what [`Entries::lift`] removed (in reverse order of lifting).
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].matching;
        for at in [ret, call] {
            let Node { prev, next, .. } = self.nodes[at];
            self.nodes[prev].next = at;
            if next != NIL {
                self.nodes[next].prev = at;
            }
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Bitset {
        Bitset(vec![0; n.div_ceil(64)])
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
}

/// Checks that `ops` are linearizable with respect to `model`, taking at most `budget`
/// search steps.
pub fn check_linearizable<M: Model>(model: &M, ops: &[Operation<M::Op>], budget: u64) -> Verdict {
    if ops.is_empty() {
        return Verdict::Linearizable;
    }
    let mut entries = Entries::new(ops);
    let mut cache: HashSet<(Bitset, M::State)> = HashSet::new();
    let mut linearized = Bitset::new(ops.len());
    let mut state = model.init();
    // (call node, state before it, which alternative of its step was taken)
    let mut stack: Vec<(usize, M::State, usize)> = Vec::new();
    let mut best: (Vec<usize>, String, Option<usize>) = (Vec::new(), format!("{state:?}"), None);
    let mut entry = entries.first();
    let mut first_alternative = 0usize;
    let mut steps = 0u64;
    while entries.first() != NIL {
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive { steps };
        }
        let node = entries.nodes[entry];
        if node.is_call {
            let mut lifted = false;
            let nexts = model.step(&state, &ops[node.op].op);
            for (k, next_state) in nexts.into_iter().enumerate().skip(first_alternative) {
                linearized.flip(node.op);
                if cache.insert((linearized.clone(), next_state.clone())) {
                    let before = std::mem::replace(&mut state, next_state);
                    stack.push((entry, before, k));
                    entries.lift(entry);
                    entry = entries.first();
                    lifted = true;
                    break;
                }
                linearized.flip(node.op);
            }
            first_alternative = 0;
            if !lifted {
                entry = node.next;
            }
        } else {
            // An operation completed before it could be linearized: backtrack.
            if stack.len() >= best.0.len() {
                best = (
                    stack.iter().map(|(n, _, _)| entries.nodes[*n].op).collect(),
                    format!("{state:?}"),
                    Some(node.op),
                );
            }
            let Some((call, before, k)) = stack.pop() else {
                return Verdict::NotLinearizable(Counterexample {
                    longest_prefix: best.0,
                    state: best.1,
                    stuck_on: best.2,
                });
            };
            entries.unlift(call);
            linearized.flip(entries.nodes[call].op);
            state = before;
            entry = call;
            first_alternative = k + 1;
        }
    }
    Verdict::Linearizable
}
