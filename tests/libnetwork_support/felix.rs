//! A calico-node stand-in for tests that run in the machine's root network namespace
//! (where Docker's containers are): it renders this host's felix plan with calico-model
//! (`dataplane::render_host`) from the datastore and programs its **policy** part —
//! ipsets and the filter table — under names no one else uses.
//!
//! Root-namespace discipline (the namespace is shared with Docker and with every other
//! test on the machine):
//!
//! * every chain and set is renamed from `felix-…` to `<tag>…`, where the tag is
//!   `t` + 4 hex digits + `-`: six characters like `felix-`, so felix's 28/31-character
//!   name limits still hold, and unique to the test run (checked against what exists);
//! * the plan's own hooks (`-A FORWARD -j felix-FORWARD` for *every* `cali+` interface)
//!   are not installed; instead one hook per direction per interface of this host's
//!   endpoints — `-I FORWARD 1 -i <if> -m comment --comment <tag>hook -j <tag>FORWARD` —
//!   so only traffic to or from interfaces the test created enters the chains;
//! * the nat table, IPv6, routes and sysctls are left alone (the plugin programs the
//!   routes and proxy ARP the test needs);
//! * [`ScopedFelix::remove`] (also run on drop) deletes exactly the hooks, chains and sets
//!   it made.
//!
//! Each [`ScopedFelix::sync`] re-renders from a fresh read, rewrites every owned chain in
//! one `iptables-restore --noflush` commit, deletes chains the plan no longer has, and
//! replaces the set of hooks to match the current interfaces.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use calico_model::dataplane::{render_host, RenderOptions};
use calico_model::datastore::Datastore;
use calico_model::state::ClusterState;

/// Runs a command, feeding `stdin`; `Err` carries the command line and stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{line}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{line}: writing stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{line}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{line}: {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
        ))
    }
}

/// The policy part of felix for one host, scoped to its own names. See the module docs.
pub struct ScopedFelix {
    tag: String,
    host: String,
    chains: BTreeSet<String>,
    sets: BTreeSet<String>,
    /// Hook rule specs currently installed in FORWARD (without `-I FORWARD 1`).
    hooks: BTreeSet<String>,
}

impl ScopedFelix {
    /// A stand-in for `host`, naming everything with `tag` (`t` + 4 hex + `-`).
    pub fn new(tag: &str, host: &str) -> Result<ScopedFelix, String> {
        if tag.len() != "felix-".len() || !tag.ends_with('-') {
            return Err(format!("tag {tag:?} must be 5 characters and a '-'"));
        }
        let rules = run("iptables-save", &["-t", "filter"], None)?;
        let sets = run("ipset", &["list", "-n"], None)?;
        if rules.contains(tag) || sets.lines().any(|s| s.starts_with(tag)) {
            return Err(format!("tag {tag} is already in use on this host"));
        }
        Ok(ScopedFelix {
            tag: tag.to_string(),
            host: host.to_string(),
            chains: BTreeSet::new(),
            sets: BTreeSet::new(),
            hooks: BTreeSet::new(),
        })
    }

    fn rename(&self, text: &str) -> String {
        text.replace("felix-", &self.tag)
    }

    /// Reads the datastore and programs the current plan.
    pub fn sync(&mut self, store: &dyn Datastore) -> Result<(), String> {
        let read = store
            .get("/calico", true)
            .map_err(|e| format!("reading /calico: {e}"))?;
        let state = ClusterState::from_read(&read);
        let plan = render_host(&state, &self.host, RenderOptions::default())
            .map_err(|e| format!("rendering {}: {e}", self.host))?;

        // 1. ipsets first: the rules below name them.
        let mut sets = BTreeSet::new();
        let mut restore = String::new();
        for set in plan.ipsets.values().filter(|s| s.v4) {
            let name = self.rename(&set.name);
            let tmp = format!("{}tmp-{}", self.tag, &name[self.tag.len()..]);
            let tmp: String = tmp.chars().take(31).collect();
            let create = |n: &str| {
                format!(
                    "create {n} {} family inet maxelem {} -exist\n",
                    set.set_type.as_str(),
                    set.max_elements
                )
            };
            restore.push_str(&create(&name));
            restore.push_str(&create(&tmp));
            restore.push_str(&format!("flush {tmp}\n"));
            for m in &set.members {
                restore.push_str(&format!("add {tmp} {m}\n"));
            }
            restore.push_str(&format!("swap {tmp} {name}\ndestroy {tmp}\n"));
            sets.insert(name);
        }
        if !restore.is_empty() {
            run("ipset", &["restore"], Some(&restore))?;
        }

        // 2. chains, in one atomic commit; chains no longer planned are deleted.
        let chains: BTreeMap<String, Vec<String>> = plan
            .filter
            .chains
            .iter()
            .map(|(name, rules)| {
                (
                    self.rename(name),
                    rules.iter().map(|r| self.rename(r)).collect(),
                )
            })
            .collect();
        let stale: Vec<String> = self
            .chains
            .iter()
            .filter(|c| !chains.contains_key(*c))
            .cloned()
            .collect();
        let mut text = String::from("*filter\n");
        for chain in chains.keys().chain(stale.iter()) {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for (chain, rules) in &chains {
            for rule in rules {
                text.push_str(&format!("-A {chain} {rule}\n"));
            }
        }
        // 3. hooks for exactly this host's interfaces.
        let forward = format!("{}FORWARD", self.tag);
        let wanted: BTreeSet<String> = if chains.contains_key(&forward) {
            plan.interfaces
                .keys()
                .flat_map(|iface| {
                    ["-i", "-o"].map(|dir| {
                        format!(
                            "{dir} {iface} -m comment --comment {}hook -j {forward}",
                            self.tag
                        )
                    })
                })
                .collect()
        } else {
            BTreeSet::new()
        };
        for old in self.hooks.difference(&wanted) {
            text.push_str(&format!("-D FORWARD {old}\n"));
        }
        for new in wanted.difference(&self.hooks) {
            text.push_str(&format!("-I FORWARD 1 {new}\n"));
        }
        for chain in &stale {
            text.push_str(&format!("-X {chain}\n"));
        }
        text.push_str("COMMIT\n");
        run("iptables-restore", &["--noflush"], Some(&text))?;
        self.chains = chains.into_keys().collect();
        self.hooks = wanted;

        // 4. sets no longer referenced.
        for stale_set in self.sets.difference(&sets) {
            let _ = run("ipset", &["destroy", stale_set], None);
        }
        self.sets = sets;
        Ok(())
    }

    /// The chains currently programmed.
    pub fn chains(&self) -> &BTreeSet<String> {
        &self.chains
    }

    /// The chain felix names `felix-to-<suffix>` for a workload interface (its inbound
    /// policy), under this stand-in's tag.
    pub fn to_endpoint_chain(&self, interface: &str) -> String {
        use calico_model::dataplane::chain_names;
        let suffix = chain_names::endpoint_suffix(interface, "cali");
        self.rename(&chain_names::to_endpoint(&suffix))
    }

    /// Packets counted by the last rule of `chain` (felix ends endpoint chains with the
    /// DROP of "no profile accepted it").
    pub fn last_rule_packets(&self, chain: &str) -> Result<u64, String> {
        let out = run(
            "iptables",
            &["-t", "filter", "-L", chain, "-v", "-x", "-n"],
            None,
        )?;
        let last = out
            .lines()
            .rev()
            .find(|l| {
                l.trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
            .ok_or_else(|| format!("{chain} has no rules:\n{out}"))?;
        let first = last.split_whitespace().next().unwrap_or_default();
        first
            .parse()
            .map_err(|_| format!("unreadable counter line {last:?}"))
    }

    /// Deletes every hook, chain and set this stand-in made; safe to call twice.
    pub fn remove(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for hook in std::mem::take(&mut self.hooks) {
            let args: Vec<&str> = std::iter::once("-D")
                .chain(std::iter::once("FORWARD"))
                .chain(hook.split_whitespace())
                .collect();
            if let Err(e) = run("iptables", &args, None) {
                errors.push(e);
            }
        }
        let chains = std::mem::take(&mut self.chains);
        for chain in &chains {
            if let Err(e) = run("iptables", &["-F", chain], None) {
                errors.push(e);
            }
        }
        for chain in &chains {
            if let Err(e) = run("iptables", &["-X", chain], None) {
                errors.push(e);
            }
        }
        for set in std::mem::take(&mut self.sets) {
            if let Err(e) = run("ipset", &["destroy", &set], None) {
                errors.push(e);
            }
        }
        errors
    }
}

impl Drop for ScopedFelix {
    fn drop(&mut self) {
        for e in self.remove() {
            eprintln!("felix stand-in cleanup: {e}");
        }
    }
}
