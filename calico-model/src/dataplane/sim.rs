//! A small interpreter of `iptables-restore` and `ipset restore` text: it checks the
//! text the way the kernel tools would (unknown options, jumps to missing chains,
//! missing sets are errors) and evaluates packets through the chains, so tests can
//! prove the rendered dataplane agrees with [`crate::policy`] without a kernel, and the
//! embedded walkthrough can decide packets with the very rules it would install.
//!
//! Supported, because the renderer uses it: tables/chains/policies, `-A`, `-I`, `-D`,
//! `-F`, `-X`, `-N`, chain declarations (which flush, as with `--noflush`), `COMMIT`;
//! matches `-i/-o` (with `+` wildcards), `-p`, `-s/-d`, `-m set --match-set`, `-m mark
//! --mark`, `-m conntrack --ctstate`, `-m mac --mac-source`, `-m multiport
//! --sports/--dports`, `-m tcp/udp --sport/--dport`, `-m icmp --icmp-type`, `-m icmp6
//! --icmpv6-type`, `-m addrtype`, `-m comment`, each negatable with `!`; targets ACCEPT,
//! DROP, RETURN, MARK (`--set-xmark`/`--set-mark`), LOG, MASQUERADE, `-j <chain>`, `-g
//! <chain>`. ipset: `create`, `add`, `del`, `flush`, `swap`, `destroy` (`-exist`).
//!
//! Evaluation semantics: `-j` calls a chain and continues on RETURN (or on falling off
//! its end); `-g` continues in the target and, when it returns, returns from the calling
//! chain too; a built-in chain that falls off applies its policy. Every packet is
//! conntrack state `NEW` (the first packet of a flow). Call depth is capped at 64.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::{Error, Result};
use crate::model::MacAddr;

/// A packet as the interpreter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPacket {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// Incoming interface.
    pub in_iface: Option<String>,
    /// Outgoing interface.
    pub out_iface: Option<String>,
    /// Source MAC (for `-m mac`).
    pub src_mac: Option<MacAddr>,
    /// Whether the source address is local to the host (for `-m addrtype`).
    pub src_is_local: bool,
    /// The packet mark.
    pub mark: u32,
}

impl SimPacket {
    /// A packet from a [`crate::policy::Packet`] with interfaces.
    pub fn from_policy(
        p: &crate::policy::Packet,
        in_iface: Option<&str>,
        out_iface: Option<&str>,
        src_mac: Option<MacAddr>,
    ) -> SimPacket {
        SimPacket {
            src: p.src,
            dst: p.dst,
            protocol: p.protocol.number(),
            src_port: p.src_port,
            dst_port: p.dst_port,
            icmp: p.icmp,
            in_iface: in_iface.map(String::from),
            out_iface: out_iface.map(String::from),
            src_mac,
            src_is_local: false,
            mark: 0,
        }
    }
}

/// The outcome of traversing a built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (by a rule or the chain policy).
    Accept,
    /// Dropped.
    Drop,
    /// Masqueraded (nat).
    Masquerade,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    InIface(String),
    OutIface(String),
    Proto(u8),
    Src(IpNetwork),
    Dst(IpNetwork),
    Set { name: String, src: bool },
    Mark { value: u32, mask: u32 },
    CtState(Vec<String>),
    Mac(MacAddr),
    Ports { src: bool, ranges: Vec<(u16, u16)> },
    Icmp { icmp_type: u8, code: Option<u8> },
    SrcTypeLocal,
    LimitIfaceOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    None,
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    Mark { value: u32, mask: u32, xor: bool },
    Log,
    Masquerade,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SimRule {
    matches: Vec<(bool, Match)>,
    target: Target,
    text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SimTable {
    chains: BTreeMap<String, Vec<SimRule>>,
    policies: BTreeMap<String, Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SimSet {
    v4: bool,
    members: Vec<IpNetwork>,
}

/// Parsed tables and ipsets of one network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netfilter {
    tables: BTreeMap<String, SimTable>,
    sets: BTreeMap<String, SimSet>,
}

fn tokenize(line: &str, lineno: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if in_quotes {
        return Err(Error::invalid(
            "iptables-restore line",
            format!("{lineno}: {line}"),
            "unterminated quote",
        ));
    }
    if started {
        out.push(cur);
    }
    Ok(out)
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_value_mask(s: &str) -> Option<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse_u32(v)?, parse_u32(m)?)),
        None => Some((parse_u32(s)?, u32::MAX)),
    }
}

fn parse_proto(s: &str) -> Option<u8> {
    Some(match s {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        n => n.parse().ok()?,
    })
}

fn parse_ports(s: &str) -> Option<Vec<(u16, u16)>> {
    s.split(',')
        .map(|p| match p.split_once(':') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let n = p.parse().ok()?;
                Some((n, n))
            }
        })
        .collect()
}

fn parse_net(s: &str) -> Option<IpNetwork> {
    s.parse().ok()
}

fn iface_matches(pattern: &str, iface: Option<&str>) -> bool {
    let Some(iface) = iface else { return false };
    match pattern.strip_suffix('+') {
        Some(prefix) => iface.starts_with(prefix),
        None => iface == pattern,
    }
}

impl SimRule {
    fn parse(tokens: &[String], line: &str, lineno: usize) -> Result<SimRule> {
        let bad = |reason: String| {
            Error::invalid("iptables-restore rule", format!("{lineno}: {line}"), reason)
        };
        let mut matches = Vec::new();
        let mut target = Target::None;
        let mut modules: Vec<&str> = Vec::new();
        let mut proto: Option<u8> = None;
        let mut negate = false;
        let mut i = 0;
        let arg = |i: usize| {
            tokens.get(i + 1).map(String::as_str).ok_or_else(|| {
                bad(format!(
                    "{} needs an argument",
                    tokens.get(i).map_or("", |s| s)
                ))
            })
        };
        fn has(modules: &[&str], m: &str) -> bool {
            modules.contains(&m)
        }
        let push = |matches: &mut Vec<(bool, Match)>, m: Match, negate: &mut bool| {
            matches.push((std::mem::take(negate), m));
        };
        while let Some(tok) = tokens.get(i) {
            let tok = tok.as_str();
            match tok {
                "!" => {
                    negate = true;
                    i += 1;
                    continue;
                }
                "-i" | "--in-interface" => {
                    push(&mut matches, Match::InIface(arg(i)?.into()), &mut negate)
                }
                "-o" | "--out-interface" => {
                    push(&mut matches, Match::OutIface(arg(i)?.into()), &mut negate)
                }
                "-p" | "--protocol" => {
                    let p = parse_proto(arg(i)?)
                        .ok_or_else(|| bad(format!("unknown protocol {}", arg(i).unwrap_or(""))))?;
                    proto = Some(p);
                    push(&mut matches, Match::Proto(p), &mut negate)
                }
                "-s" | "--source" => push(
                    &mut matches,
                    Match::Src(parse_net(arg(i)?).ok_or_else(|| bad("bad source".into()))?),
                    &mut negate,
                ),
                "-d" | "--destination" => push(
                    &mut matches,
                    Match::Dst(parse_net(arg(i)?).ok_or_else(|| bad("bad destination".into()))?),
                    &mut negate,
                ),
                "-m" | "--match" => {
                    let m = arg(i)?;
                    match m {
                        "set" | "mark" | "conntrack" | "mac" | "multiport" | "tcp" | "udp"
                        | "icmp" | "icmp6" | "comment" | "addrtype" => {
                            modules.push(tokens.get(i + 1).map_or("", String::as_str))
                        }
                        other => return Err(bad(format!("unknown match module {other}"))),
                    }
                }
                "--match-set" if has(&modules, "set") => {
                    let name = arg(i)?.to_string();
                    let dir = tokens
                        .get(i + 2)
                        .map(String::as_str)
                        .ok_or_else(|| bad("--match-set needs src|dst".into()))?;
                    let src = match dir {
                        "src" => true,
                        "dst" => false,
                        other => return Err(bad(format!("unsupported --match-set flags {other}"))),
                    };
                    push(&mut matches, Match::Set { name, src }, &mut negate);
                    i += 3;
                    continue;
                }
                "--mark" if has(&modules, "mark") => {
                    let (value, mask) =
                        parse_value_mask(arg(i)?).ok_or_else(|| bad("bad --mark".into()))?;
                    push(&mut matches, Match::Mark { value, mask }, &mut negate)
                }
                "--ctstate" if has(&modules, "conntrack") => push(
                    &mut matches,
                    Match::CtState(arg(i)?.split(',').map(String::from).collect()),
                    &mut negate,
                ),
                "--mac-source" if has(&modules, "mac") => push(
                    &mut matches,
                    Match::Mac(
                        arg(i)?
                            .parse()
                            .map_err(|_| bad("bad --mac-source".into()))?,
                    ),
                    &mut negate,
                ),
                "--sports" | "--source-ports" | "--dports" | "--destination-ports"
                    if has(&modules, "multiport") =>
                {
                    let src = tok.starts_with("--s");
                    let ranges = parse_ports(arg(i)?).ok_or_else(|| bad("bad port list".into()))?;
                    let slots: usize = ranges.iter().map(|(a, b)| if a == b { 1 } else { 2 }).sum();
                    if slots > 15 {
                        return Err(bad("too many ports specified (multiport allows 15)".into()));
                    }
                    if !matches!(proto, Some(6 | 17 | 132 | 136)) {
                        return Err(bad("multiport needs -p tcp, udp, sctp or udplite".into()));
                    }
                    push(&mut matches, Match::Ports { src, ranges }, &mut negate)
                }
                "--sport" | "--source-port" | "--dport" | "--destination-port" => {
                    if !(has(&modules, "tcp")
                        || has(&modules, "udp")
                        || matches!(proto, Some(6 | 17)))
                    {
                        return Err(bad(format!("{tok} needs -p tcp or udp")));
                    }
                    let src = tok.starts_with("--s");
                    let ranges = parse_ports(arg(i)?)
                        .filter(|r| r.len() == 1)
                        .ok_or_else(|| bad("bad port".into()))?;
                    push(&mut matches, Match::Ports { src, ranges }, &mut negate)
                }
                "--icmp-type" | "--icmpv6-type"
                    if has(&modules, "icmp") || has(&modules, "icmp6") =>
                {
                    let spec = arg(i)?;
                    let (t, c) = match spec.split_once('/') {
                        Some((t, c)) => (
                            t.parse().ok(),
                            Some(c.parse().map_err(|_| bad("bad icmp code".into()))?),
                        ),
                        None => (spec.parse().ok(), None),
                    };
                    let icmp_type =
                        t.ok_or_else(|| bad("icmp types must be numeric here".into()))?;
                    push(
                        &mut matches,
                        Match::Icmp { icmp_type, code: c },
                        &mut negate,
                    )
                }
                "--comment" if has(&modules, "comment") => {}
                "--src-type" if has(&modules, "addrtype") => {
                    if arg(i)? != "LOCAL" {
                        return Err(bad("only --src-type LOCAL is modelled".into()));
                    }
                    push(&mut matches, Match::SrcTypeLocal, &mut negate)
                }
                "--limit-iface-out" if has(&modules, "addrtype") => {
                    push(&mut matches, Match::LimitIfaceOut, &mut negate);
                    i += 1;
                    continue;
                }
                "-j" | "--jump" => {
                    let t = arg(i)?;
                    target = match t {
                        "ACCEPT" => Target::Accept,
                        "DROP" => Target::Drop,
                        "RETURN" => Target::Return,
                        "LOG" => Target::Log,
                        "MASQUERADE" => Target::Masquerade,
                        "MARK" => Target::Mark {
                            value: 0,
                            mask: 0,
                            xor: true,
                        },
                        chain => Target::Jump(chain.into()),
                    };
                }
                "-g" | "--goto" => target = Target::Goto(arg(i)?.into()),
                "--set-xmark" | "--set-mark" if matches!(target, Target::Mark { .. }) => {
                    let (value, mask) =
                        parse_value_mask(arg(i)?).ok_or_else(|| bad("bad mark".into()))?;
                    target = Target::Mark {
                        value,
                        mask,
                        xor: tok == "--set-xmark",
                    };
                }
                "--log-prefix" | "--log-level" if target == Target::Log => {}
                "--random-fully" if target == Target::Masquerade => {
                    i += 1;
                    continue;
                }
                other => return Err(bad(format!("unknown option {other:?}"))),
            }
            if negate {
                return Err(bad(format!("'!' before {tok} is not supported")));
            }
            i += 2;
        }
        if negate {
            return Err(bad("dangling '!'".into()));
        }
        if let Target::Mark { mask: 0, .. } = target {
            return Err(bad("MARK needs --set-xmark or --set-mark".into()));
        }
        Ok(SimRule {
            matches,
            target,
            text: line.to_string(),
        })
    }

    fn matches(&self, p: &SimPacket, sets: &BTreeMap<String, SimSet>) -> bool {
        self.matches.iter().all(|(neg, m)| {
            let hit = match m {
                Match::InIface(pat) => iface_matches(pat, p.in_iface.as_deref()),
                Match::OutIface(pat) => iface_matches(pat, p.out_iface.as_deref()),
                Match::Proto(n) => p.protocol == *n,
                Match::Src(net) => net.contains(p.src),
                Match::Dst(net) => net.contains(p.dst),
                Match::Set { name, src } => {
                    let addr = if *src { p.src } else { p.dst };
                    sets.get(name).is_some_and(|s| {
                        s.v4 == addr.is_ipv4() && s.members.iter().any(|n| n.contains(addr))
                    })
                }
                Match::Mark { value, mask } => p.mark & mask == *value,
                Match::CtState(states) => states.iter().any(|s| s == "NEW"),
                Match::Mac(mac) => p.src_mac == Some(*mac),
                Match::Ports { src, ranges } => {
                    let port = if *src { p.src_port } else { p.dst_port };
                    port.is_some_and(|port| ranges.iter().any(|(a, b)| *a <= port && port <= *b))
                }
                Match::Icmp { icmp_type, code } => p
                    .icmp
                    .is_some_and(|(t, c)| t == *icmp_type && code.is_none_or(|code| code == c)),
                Match::SrcTypeLocal => p.src_is_local,
                Match::LimitIfaceOut => true,
            };
            hit != *neg
        })
    }
}

/// The result of restoring text.
impl Netfilter {
    /// An empty namespace: no tables, no sets.
    pub fn new() -> Netfilter {
        Netfilter::default()
    }

    fn table_mut(&mut self, name: &str) -> &mut SimTable {
        self.tables.entry(name.to_string()).or_insert_with(|| {
            let mut t = SimTable::default();
            for k in super::iptables::kernel_chains(name) {
                t.chains.insert((*k).to_string(), Vec::new());
                t.policies.insert((*k).to_string(), Outcome::Accept);
            }
            t
        })
    }

    /// Applies `iptables-restore` input. With `noflush == false`, each table named in
    /// the text is replaced, as `iptables-restore` does; with `true`, chains are only
    /// flushed when declared. All or nothing per table (a failing table is not
    /// committed), like the real tool.
    pub fn restore(&mut self, text: &str, noflush: bool) -> Result<()> {
        let mut current: Option<(String, SimTable)> = None;
        for (n, raw) in text.lines().enumerate() {
            let lineno = n + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| {
                Error::invalid("iptables-restore line", format!("{lineno}: {line}"), reason)
            };
            if let Some(table) = line.strip_prefix('*') {
                if current.is_some() {
                    return Err(bad("table started before COMMIT"));
                }
                let mut t = if noflush {
                    self.table_mut(table).clone()
                } else {
                    SimTable::default()
                };
                if !noflush {
                    for k in super::iptables::kernel_chains(table) {
                        t.chains.insert((*k).to_string(), Vec::new());
                        t.policies.insert((*k).to_string(), Outcome::Accept);
                    }
                }
                current = Some((table.to_string(), t));
                continue;
            }
            let Some((tname, table)) = current.as_mut() else {
                return Err(bad("rule outside a table"));
            };
            if line == "COMMIT" {
                // Legacy iptables-restore rejects jumps to chains that do not exist.
                for rules in table.chains.values() {
                    for r in rules {
                        if let Target::Jump(c) | Target::Goto(c) = &r.target {
                            if !table.chains.contains_key(c) {
                                return Err(Error::invalid(
                                    "iptables-restore rule",
                                    r.text.clone(),
                                    format!("jump to missing chain {c}"),
                                ));
                            }
                        }
                        for (_, m) in &r.matches {
                            if let Match::Set { name, .. } = m {
                                if !self.sets.contains_key(name) {
                                    return Err(Error::invalid(
                                        "iptables-restore rule",
                                        r.text.clone(),
                                        format!("set {name} does not exist"),
                                    ));
                                }
                            }
                        }
                    }
                }
                let (tname, table) = match current.take() {
                    Some(t) => t,
                    None => return Err(bad("COMMIT without table")),
                };
                self.tables.insert(tname, table);
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let mut parts = decl.split_whitespace();
                let chain = parts
                    .next()
                    .ok_or_else(|| bad("chain declaration without a name"))?;
                let policy = parts.next().unwrap_or("-");
                if chain.len() > super::iptables::MAX_CHAIN_NAME {
                    return Err(bad("chain name longer than 28 characters"));
                }
                table.chains.insert(chain.to_string(), Vec::new());
                match policy {
                    "-" => {}
                    "ACCEPT" => {
                        table.policies.insert(chain.to_string(), Outcome::Accept);
                    }
                    "DROP" => {
                        table.policies.insert(chain.to_string(), Outcome::Drop);
                    }
                    _ => return Err(bad("unknown chain policy")),
                }
                continue;
            }
            let tokens = tokenize(line, lineno)?;
            let (cmd, rest) = tokens.split_first().ok_or_else(|| bad("empty command"))?;
            let _ = tname;
            match cmd.as_str() {
                "-A" | "-I" | "-D" => {
                    let (chain, mut spec) =
                        rest.split_first().ok_or_else(|| bad("missing chain"))?;
                    let mut position = 1usize;
                    if cmd == "-I" {
                        if let Some(n) = spec.first().and_then(|s| s.parse::<usize>().ok()) {
                            position = n;
                            spec = spec.get(1..).unwrap_or_default();
                        }
                    }
                    let rule = SimRule::parse(spec, line, lineno)?;
                    let rules = table
                        .chains
                        .get_mut(chain)
                        .ok_or_else(|| bad("no such chain"))?;
                    match cmd.as_str() {
                        "-A" => rules.push(rule),
                        "-I" => {
                            let at = position.saturating_sub(1).min(rules.len());
                            rules.insert(at, rule);
                        }
                        _ => {
                            let found = rules
                                .iter()
                                .position(|r| r.matches == rule.matches && r.target == rule.target);
                            match found {
                                Some(at) => {
                                    rules.remove(at);
                                }
                                None => return Err(bad("rule to delete does not exist")),
                            }
                        }
                    }
                }
                "-F" => match rest.first() {
                    Some(chain) => table
                        .chains
                        .get_mut(chain)
                        .ok_or_else(|| bad("no such chain"))?
                        .clear(),
                    None => table.chains.values_mut().for_each(Vec::clear),
                },
                "-N" => {
                    let chain = rest.first().ok_or_else(|| bad("missing chain"))?;
                    table.chains.insert(chain.clone(), Vec::new());
                }
                "-X" => {
                    let chain = rest.first().ok_or_else(|| bad("missing chain"))?;
                    if table.policies.contains_key(chain) {
                        return Err(bad("cannot delete a built-in chain"));
                    }
                    let referenced = table.chains.iter().any(|(name, rules)| {
                        name != chain && rules.iter().any(|r| matches!(&r.target, Target::Jump(c) | Target::Goto(c) if c == chain))
                    });
                    if referenced {
                        return Err(bad("chain is still referenced"));
                    }
                    table
                        .chains
                        .remove(chain.as_str())
                        .ok_or_else(|| bad("no such chain"))?;
                }
                _ => return Err(bad("unknown command")),
            }
        }
        if current.is_some() {
            return Err(Error::invalid(
                "iptables-restore input",
                "<end>",
                "missing COMMIT",
            ));
        }
        Ok(())
    }

    /// Applies `ipset restore` input.
    pub fn ipset_restore(&mut self, text: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| {
                Error::invalid("ipset restore line", format!("{}: {line}", n + 1), reason)
            };
            let t: Vec<&str> = line.split_whitespace().collect();
            let exist = t.contains(&"-exist");
            match t.as_slice() {
                ["create", name, ty, rest @ ..] => {
                    if name.len() > super::ipset::MAX_SET_NAME {
                        return Err(bad("set name longer than 31 characters"));
                    }
                    if !matches!(*ty, "hash:ip" | "hash:net") {
                        return Err(bad("unsupported set type"));
                    }
                    let v4 = !rest.windows(2).any(|w| w == ["family", "inet6"]);
                    if self.sets.contains_key(*name) {
                        if !exist {
                            return Err(bad("set already exists"));
                        }
                    } else {
                        self.sets.insert(
                            (*name).to_string(),
                            SimSet {
                                v4,
                                members: Vec::new(),
                            },
                        );
                    }
                }
                ["add" | "del", name, member, ..] => {
                    let set = self.sets.get_mut(*name).ok_or_else(|| bad("no such set"))?;
                    let net: IpNetwork = member.parse().map_err(|_| bad("bad member"))?;
                    if net.is_ipv4() != set.v4 {
                        return Err(bad("member of the wrong family"));
                    }
                    let present = set.members.contains(&net);
                    if t.first() == Some(&"add") {
                        if present && !exist {
                            return Err(bad("element already added"));
                        }
                        if !present {
                            set.members.push(net);
                        }
                    } else {
                        if !present && !exist {
                            return Err(bad("element not in set"));
                        }
                        set.members.retain(|m| *m != net);
                    }
                }
                ["flush", name] => self
                    .sets
                    .get_mut(*name)
                    .ok_or_else(|| bad("no such set"))?
                    .members
                    .clear(),
                ["swap", a, b] => {
                    let sa = self.sets.remove(*a).ok_or_else(|| bad("no such set"))?;
                    let Some(sb) = self.sets.remove(*b) else {
                        self.sets.insert((*a).to_string(), sa);
                        return Err(bad("no such set"));
                    };
                    self.sets.insert((*a).to_string(), sb);
                    self.sets.insert((*b).to_string(), sa);
                }
                ["destroy", name] => {
                    let referenced = self
                        .tables
                        .values()
                        .flat_map(|t| t.chains.values())
                        .flatten()
                        .any(|r| {
                            r.matches
                                .iter()
                                .any(|(_, m)| matches!(m, Match::Set { name: n, .. } if n == name))
                        });
                    if referenced {
                        return Err(bad("set is in use by a rule"));
                    }
                    self.sets.remove(*name).ok_or_else(|| bad("no such set"))?;
                }
                _ => return Err(bad("unknown ipset command")),
            }
        }
        Ok(())
    }

    /// Whether a chain exists in a table.
    pub fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.tables
            .get(table)
            .is_some_and(|t| t.chains.contains_key(chain))
    }

    /// Members of a set, as text.
    pub fn set_members(&self, name: &str) -> Option<Vec<String>> {
        self.sets.get(name).map(|s| {
            s.members
                .iter()
                .map(|n| {
                    if n.prefix() == if s.v4 { 32 } else { 128 } {
                        n.ip().to_string()
                    } else {
                        n.to_string()
                    }
                })
                .collect()
        })
    }

    /// Traverses built-in `chain` of `table` with `packet` (its mark is updated).
    pub fn traverse(&self, table: &str, chain: &str, packet: &mut SimPacket) -> Result<Outcome> {
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| Error::invalid("table", table, "not loaded"))?;
        let policy = *t
            .policies
            .get(chain)
            .ok_or_else(|| Error::invalid("built-in chain", chain, "unknown"))?;
        Ok(match self.eval(t, chain, packet, 0)? {
            Flow::Verdict(o) => o,
            Flow::Return => policy,
        })
    }

    fn eval(&self, t: &SimTable, chain: &str, p: &mut SimPacket, depth: usize) -> Result<Flow> {
        if depth > 64 {
            return Err(Error::invalid(
                "chain",
                chain,
                "call depth above 64 (a loop?)",
            ));
        }
        let rules = t
            .chains
            .get(chain)
            .ok_or_else(|| Error::invalid("chain", chain, "does not exist"))?;
        for r in rules {
            if !r.matches(p, &self.sets) {
                continue;
            }
            match &r.target {
                Target::None | Target::Log => {}
                Target::Accept => return Ok(Flow::Verdict(Outcome::Accept)),
                Target::Drop => return Ok(Flow::Verdict(Outcome::Drop)),
                Target::Masquerade => return Ok(Flow::Verdict(Outcome::Masquerade)),
                Target::Return => return Ok(Flow::Return),
                Target::Mark { value, mask, xor } => {
                    p.mark = if *xor {
                        (p.mark & !mask) ^ value
                    } else {
                        (p.mark & !mask) | value
                    };
                }
                Target::Jump(c) => match self.eval(t, c, p, depth + 1)? {
                    Flow::Return => {}
                    v => return Ok(v),
                },
                Target::Goto(c) => return self.eval(t, c, p, depth + 1),
            }
        }
        Ok(Flow::Return)
    }
}

enum Flow {
    Verdict(Outcome),
    Return,
}

/// Every host of a cluster rendered and loaded into the interpreter: decides
/// endpoint-to-endpoint packets with the very rules [`crate::linux`] would install (an
/// embedded dataplane, no kernel needed).
#[derive(Debug, Clone)]
pub struct ClusterSim {
    hosts: BTreeMap<String, Netfilter>,
}

impl ClusterSim {
    /// Renders and loads every registered host (and every host that has endpoints).
    pub fn new(
        state: &crate::state::ClusterState,
        opts: super::RenderOptions,
    ) -> Result<ClusterSim> {
        let mut names: Vec<&str> = state.hosts.keys().map(String::as_str).collect();
        names.extend(state.endpoints.keys().map(|k| k.host.as_str()));
        names.sort_unstable();
        names.dedup();
        let mut hosts = BTreeMap::new();
        for host in names {
            let plan = super::render_host(state, host, opts)?;
            let mut nf = Netfilter::new();
            nf.ipset_restore(&plan.ipset_restore())?;
            nf.restore(&plan.filter.to_restore(), false)?;
            nf.restore(&plan.nat.to_restore(), false)?;
            hosts.insert(host.to_string(), nf);
        }
        Ok(ClusterSim { hosts })
    }

    /// The loaded rules of one host.
    pub fn host(&self, name: &str) -> Option<&Netfilter> {
        self.hosts.get(name)
    }

    /// Whether `packet` from `src` reaches `dst`: through the FORWARD chain of the
    /// source host (out of the uplink) and of the destination host (into the workload),
    /// or once when they share a host. Unknown hosts drop.
    pub fn forward(
        &self,
        (src_key, src): (&crate::model::EndpointKey, &crate::model::WorkloadEndpoint),
        (dst_key, dst): (&crate::model::EndpointKey, &crate::model::WorkloadEndpoint),
        packet: &crate::policy::Packet,
    ) -> Result<bool> {
        let run = |host: &str, in_if: &str, out_if: &str| -> Result<bool> {
            let Some(nf) = self.hosts.get(host) else {
                return Ok(false);
            };
            let mut p = SimPacket::from_policy(packet, Some(in_if), Some(out_if), src.mac);
            Ok(nf.traverse("filter", "FORWARD", &mut p)? == Outcome::Accept)
        };
        if src_key.host == dst_key.host {
            run(&src_key.host, &src.name, &dst.name)
        } else {
            Ok(run(&src_key.host, &src.name, "eth0")? && run(&dst_key.host, "eth0", &dst.name)?)
        }
    }
}

/// Counts how rules are spread (for diagnostics): chain → number of rules.
pub fn chain_sizes(nf: &Netfilter, table: &str) -> HashMap<String, usize> {
    nf.tables
        .get(table)
        .map(|t| t.chains.iter().map(|(k, v)| (k.clone(), v.len())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(src: &str, dst: &str, proto: u8, dport: Option<u16>) -> SimPacket {
        SimPacket {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: proto,
            src_port: dport.map(|_| 40000),
            dst_port: dport,
            icmp: None,
            in_iface: Some("cali1".into()),
            out_iface: Some("eth0".into()),
            src_mac: None,
            src_is_local: false,
            mark: 0,
        }
    }

    #[test]
    fn jumps_gotos_marks_and_sets() {
        let mut nf = Netfilter::new();
        nf.ipset_restore("create s hash:ip family inet maxelem 10 -exist\nadd s 10.0.0.1\n")
            .unwrap();
        nf.restore(
            "*filter\n:FORWARD DROP [0:0]\n:a - [0:0]\n:b - [0:0]\n\
             -A FORWARD -i cali+ -j a\n-A FORWARD -j ACCEPT\n\
             -A a -j MARK --set-xmark 0x0/0x1000000\n-A a -g b\n-A a -j DROP\n\
             -A b -m set --match-set s src -p tcp -m multiport --dports 80,8000:8080 -j MARK --set-xmark 0x1000000/0x1000000\n\
             -A b -m mark --mark 0x1000000/0x1000000 -j RETURN\n-A b -j DROP\nCOMMIT\n",
            false,
        )
        .unwrap();
        let verdict = |p: &mut SimPacket| nf.traverse("filter", "FORWARD", p).unwrap();
        // Goto b, which RETURNs: returns from a as well, back to FORWARD -> ACCEPT.
        assert_eq!(
            verdict(&mut pkt("10.0.0.1", "10.0.0.2", 6, Some(8001))),
            Outcome::Accept
        );
        assert_eq!(
            verdict(&mut pkt("10.0.0.1", "10.0.0.2", 6, Some(81))),
            Outcome::Drop
        );
        assert_eq!(
            verdict(&mut pkt("10.0.0.3", "10.0.0.2", 6, Some(80))),
            Outcome::Drop
        );
        let mut p = pkt("10.0.0.3", "10.0.0.2", 6, Some(80));
        p.in_iface = Some("eth1".into());
        assert_eq!(verdict(&mut p), Outcome::Accept);
    }

    #[test]
    fn errors_like_the_real_tools() {
        let mut nf = Netfilter::new();
        let missing = "*filter\n:x - [0:0]\n-A x -j nowhere\nCOMMIT\n";
        assert!(nf
            .restore(missing, false)
            .unwrap_err()
            .to_string()
            .contains("missing chain"));
        let noset = "*filter\n:x - [0:0]\n-A x -m set --match-set nope src -j DROP\nCOMMIT\n";
        assert!(nf
            .restore(noset, false)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        assert!(nf
            .restore("*filter\n-A INPUT --bogus -j DROP\nCOMMIT\n", false)
            .is_err());
        assert!(nf.restore("*filter\n", false).is_err());
        assert!(nf
            .restore(
                "*filter\n:x - [0:0]\n-A x -p icmp -m multiport --dports 1 -j DROP\nCOMMIT\n",
                false
            )
            .is_err());
        // Failed restores commit nothing.
        assert!(!nf.has_chain("filter", "x"));
        assert!(nf.ipset_restore("add nope 1.2.3.4\n").is_err());
        nf.ipset_restore("create s hash:ip family inet maxelem 1\n")
            .unwrap();
        assert!(nf.ipset_restore("add s fd00::1\n").is_err());
    }

    #[test]
    fn noflush_declarations_flush_and_x_deletes() {
        let mut nf = Netfilter::new();
        nf.restore(
            "*filter\n:a - [0:0]\n-A INPUT -j a\n-A a -j DROP\nCOMMIT\n",
            false,
        )
        .unwrap();
        nf.restore("*filter\n:a - [0:0]\n-A a -j ACCEPT\nCOMMIT\n", true)
            .unwrap();
        let mut p = pkt("1.1.1.1", "2.2.2.2", 1, None);
        assert_eq!(
            nf.traverse("filter", "INPUT", &mut p).unwrap(),
            Outcome::Accept
        );
        assert!(
            nf.restore("*filter\n-X a\nCOMMIT\n", true).is_err(),
            "still referenced"
        );
        nf.restore("*filter\n-D INPUT -j a\n-X a\nCOMMIT\n", true)
            .unwrap();
        assert!(!nf.has_chain("filter", "a"));
    }
}
