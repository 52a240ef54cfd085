//! iptables tables as data, and their `iptables-restore` text.
//!
//! A [`Table`] holds the chains this crate owns (all named `felix-*`) with their rules,
//! plus the one jump from each kernel chain into them (the *hooks*). It renders two
//! ways:
//!
//! * [`Table::to_restore`]: a complete table, as `iptables-restore` (without
//!   `--noflush`) replaces it. Kernel chains are declared with policy ACCEPT, so this
//!   form also removes rules owned by others — it is what tests, `--test` checks and the
//!   interpreter read.
//! * [`Table::to_restore_noflush`]: what [`crate::linux`] feeds `iptables-restore
//!   --noflush`: declaring a chain flushes (or creates) it, then its rules are appended,
//!   missing hooks are inserted at position 1, and chains we no longer own are flushed
//!   and deleted — one atomic commit that leaves other owners' rules alone.
//!
//! Restore text format (both forms):
//!
//! ```text
//! *filter
//! :INPUT ACCEPT [0:0]                (full form only: kernel chains)
//! :felix-FORWARD - [0:0]             (every owned chain: create or flush)
//! -A FORWARD -j felix-FORWARD        (full form; noflush: -I FORWARD 1 ... when missing)
//! -A felix-FORWARD -i cali+ ...      (rules in chain order)
//! -X felix-old                       (noflush only: chains to delete)
//! COMMIT
//! ```
//!
//! Chain names are at most 28 characters (the kernel's limit); felix's names fit because
//! ids are shortened with [`crate::names::uniquely_shorten`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Longest chain name the kernel accepts.
pub const MAX_CHAIN_NAME: usize = 28;

/// The kernel's built-in chains of a table.
pub fn kernel_chains(table: &str) -> &'static [&'static str] {
    match table {
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

/// One table's owned chains and hooks. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// `filter` or `nat`.
    pub name: String,
    /// Jumps from kernel chains: (kernel chain, rule spec without `-A <chain>`).
    pub hooks: Vec<(String, String)>,
    /// Owned chains by name; each rule is a spec without the leading `-A <chain> `.
    pub chains: BTreeMap<String, Vec<String>>,
}

/// What changed between two versions of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDelta {
    /// The table name.
    pub name: String,
    /// Chains to (re)write with these rules.
    pub set: BTreeMap<String, Vec<String>>,
    /// Chains to delete.
    pub removed: Vec<String>,
}

impl TableDelta {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty()
    }

    /// `iptables-restore --noflush` input applying this delta (hooks are assumed
    /// present: the first apply of a plan installs them).
    pub fn to_restore_noflush(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "*{}", self.name);
        for chain in self.set.keys().chain(self.removed.iter()) {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for (chain, rules) in &self.set {
            for r in rules {
                let _ = writeln!(out, "-A {chain} {r}");
            }
        }
        for chain in &self.removed {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
        out
    }
}

impl Table {
    /// An empty table.
    pub fn new(name: &str) -> Table {
        Table {
            name: name.into(),
            hooks: Vec::new(),
            chains: BTreeMap::new(),
        }
    }

    /// The complete-table restore text (see module docs).
    pub fn to_restore(&self) -> String {
        let mut out =
            String::with_capacity(64 * self.chains.values().map(Vec::len).sum::<usize>() + 256);
        let _ = writeln!(out, "*{}", self.name);
        for k in kernel_chains(&self.name) {
            let _ = writeln!(out, ":{k} ACCEPT [0:0]");
        }
        for chain in self.chains.keys() {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for (k, rule) in &self.hooks {
            let _ = writeln!(out, "-A {k} {rule}");
        }
        for (chain, rules) in &self.chains {
            for r in rules {
                let _ = writeln!(out, "-A {chain} {r}");
            }
        }
        out.push_str("COMMIT\n");
        out
    }

    /// The `--noflush` restore text: rewrite every owned chain, insert the hooks not in
    /// `present_hooks`, delete `stale` chains.
    pub fn to_restore_noflush(
        &self,
        present_hooks: &[(String, String)],
        stale: &[String],
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "*{}", self.name);
        for chain in self
            .chains
            .keys()
            .chain(stale.iter().filter(|s| !self.chains.contains_key(*s)))
        {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for (chain, rules) in &self.chains {
            for r in rules {
                let _ = writeln!(out, "-A {chain} {r}");
            }
        }
        for hook in &self.hooks {
            if !present_hooks.contains(hook) {
                let _ = writeln!(out, "-I {} 1 {}", hook.0, hook.1);
            }
        }
        for chain in stale.iter().filter(|s| !self.chains.contains_key(*s)) {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Restore text that removes everything this table owns: unhook, flush, delete.
    pub fn to_restore_removal(&self, owned: &[String]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "*{}", self.name);
        for chain in owned {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for (k, rule) in &self.hooks {
            let _ = writeln!(out, "-D {k} {rule}");
        }
        for chain in owned {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
        out
    }

    /// The chains that differ from `old` (rewritten or new) and the chains gone.
    pub fn diff_from(&self, old: &Table) -> TableDelta {
        let mut delta = TableDelta {
            name: self.name.clone(),
            ..TableDelta::default()
        };
        for (chain, rules) in &self.chains {
            if old.chains.get(chain) != Some(rules) {
                delta.set.insert(chain.clone(), rules.clone());
            }
        }
        for chain in old.chains.keys() {
            if !self.chains.contains_key(chain) {
                delta.removed.push(chain.clone());
            }
        }
        delta
    }

    /// Applies a delta in place.
    pub fn apply(&mut self, delta: &TableDelta) {
        for (chain, rules) in &delta.set {
            self.chains.insert(chain.clone(), rules.clone());
        }
        for chain in &delta.removed {
            self.chains.remove(chain);
        }
    }
}

/// Quotes a comment for iptables-restore (double quotes; inner quotes removed).
pub fn comment(text: &str) -> String {
    if text.len() <= 250
        && !text
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return format!("-m comment --comment \"{text}\"");
    }
    let clean: String = text
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .take(250)
        .collect();
    format!("-m comment --comment \"{clean}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new("filter");
        t.hooks.push(("FORWARD".into(), "-j felix-FORWARD".into()));
        t.chains
            .insert("felix-FORWARD".into(), vec!["-i cali+ -j ACCEPT".into()]);
        t.chains.insert("felix-x".into(), vec![]);
        t
    }

    #[test]
    fn full_restore_text() {
        assert_eq!(
            table().to_restore(),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:felix-FORWARD - [0:0]\n:felix-x - [0:0]\n-A FORWARD -j felix-FORWARD\n-A felix-FORWARD -i cali+ -j ACCEPT\nCOMMIT\n"
        );
    }

    #[test]
    fn noflush_inserts_missing_hooks_and_deletes_stale_chains() {
        let t = table();
        let text = t.to_restore_noflush(&[], &["felix-old".into()]);
        assert!(text.contains("-I FORWARD 1 -j felix-FORWARD\n"));
        assert!(text.contains(":felix-old - [0:0]\n"));
        assert!(text.ends_with("-X felix-old\nCOMMIT\n"));
        let again = t.to_restore_noflush(&t.hooks, &[]);
        assert!(!again.contains("-I FORWARD"));
    }

    #[test]
    fn diff_and_apply_round_trip() {
        let old = table();
        let mut new = table();
        new.chains.remove("felix-x");
        new.chains.insert("felix-y".into(), vec!["-j DROP".into()]);
        let d = new.diff_from(&old);
        assert_eq!(d.removed, vec!["felix-x".to_string()]);
        assert_eq!(d.set.keys().collect::<Vec<_>>(), vec!["felix-y"]);
        let mut patched = old.clone();
        patched.apply(&d);
        assert_eq!(patched, new);
        assert!(d.to_restore_noflush().contains("-X felix-x"));
    }

    #[test]
    fn comments_are_sanitised() {
        assert_eq!(comment("a \"b\"\n"), "-m comment --comment \"a b\"");
    }
}
