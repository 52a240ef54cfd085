//! `calicoctl profile ...` (spec/calico.md §2.4): profiles with calicoctl's defaults
//! (tag = own name, inbound allow from that tag, outbound allow), tags, and ordered
//! inbound/outbound rules edited by position or by exact match.
//!
//! Quirks kept from 0.22: `profile add` of an existing profile and `profile remove` of an
//! unknown or in-use profile print why and exit 0; `rule add --at=N` out of range says so
//! and still inserts (at the end). Not kept: editing the profile of a Docker network by
//! the network's name (name → id translation needs the Docker API of that era).

use std::collections::BTreeMap;
use std::io::Read;

use calico_model::datastore::Datastore;
use calico_model::rule::{Rule, Rules};
use calico_model::store::RuleDirection;

use super::args::Args;
use super::rule_args::{parse_rule, RuleError};
use super::table::Table;
use super::{Ctx, Exit};

/// `calicoctl profile --help`.
pub const USAGE: &str = "\
Usage:
  calicoctl profile show [--detailed]
  calicoctl profile (add|remove) <PROFILE> [--no-check]
  calicoctl profile <PROFILE> tag show
  calicoctl profile <PROFILE> tag (add|remove) <TAG>
  calicoctl profile <PROFILE> rule add (inbound|outbound) [--at=<POSITION>]
    (allow|deny) [(
      (tcp|udp) [(from [(ports <SRCPORTS>)] [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
                [(to   [(ports <DSTPORTS>)] [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      icmp [(type <ICMPTYPE> [(code <ICMPCODE>)])]
           [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
           [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
      [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])]
    )]
  calicoctl profile <PROFILE> rule remove (inbound|outbound) (--at=<POSITION>|
    (allow|deny) [(
      (tcp|udp) [(from [(ports <SRCPORTS>)] [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
                [(to   [(ports <DSTPORTS>)] [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      icmp [(type <ICMPTYPE> [(code <ICMPCODE>)])]
           [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
           [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])] |
      [(from [(tag <SRCTAG>)] [(cidr <SRCCIDR>)])]
      [(to   [(tag <DSTTAG>)] [(cidr <DSTCIDR>)])]
    )])
  calicoctl profile <PROFILE> rule show
  calicoctl profile <PROFILE> rule json
  calicoctl profile <PROFILE> rule update

Description:
  Modify available profiles and configure rules or tags.

Options:
  --detailed        Show additional information.
  --no-check        Remove a profile without checking if there are endpoints
                    associated with the profile.
  --at=<POSITION>   Specify the position in the chain where the rule should
                    be placed. Default: append at end.

Examples:
  Add and set up a rule to prevent all inbound traffic except pings from the 192.168/16 subnet
  $ calicoctl profile add only-local-pings
  $ calicoctl profile only-local-pings rule add inbound deny icmp
  $ calicoctl profile only-local-pings rule add inbound --at=0 allow from 192.168.0.0/16
";

const BAD_PROFILE_NAME: &str = "Profile names must be < 40 character long and can only contain numbers, letters, dots, dashes and underscores.";
const BAD_TAG_NAME: &str = "Tag names must be < 40 character long and can only contain numbers, letters, dots, dashes and underscores.";

/// Dispatches `profile ...`.
pub fn run(ctx: &mut Ctx<'_>, args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        ctx.print(USAGE);
        return Ok(());
    }
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["profile", "show"] if args.unexpected(&["detailed"]).is_none() => {
            show(ctx, args.has("detailed"))
        }
        ["profile", "add", name] if args.unexpected(&[]).is_none() => add(ctx, name),
        ["profile", "remove", name] if args.unexpected(&["no-check"]).is_none() => {
            remove(ctx, name, args.has("no-check"))
        }
        ["profile", name, "tag", "show"] if args.unexpected(&[]).is_none() => tag_show(ctx, name),
        ["profile", name, "tag", verb @ ("add" | "remove"), tag]
            if args.unexpected(&[]).is_none() =>
        {
            tag_edit(ctx, name, *verb == "add", tag)
        }
        ["profile", name, "rule", "show"] if args.unexpected(&[]).is_none() => rule_show(ctx, name),
        ["profile", name, "rule", "json"] if args.unexpected(&[]).is_none() => rule_json(ctx, name),
        ["profile", name, "rule", "update"] if args.unexpected(&[]).is_none() => {
            rule_update(ctx, name)
        }
        ["profile", name, "rule", verb @ ("add" | "remove"), dir @ ("inbound" | "outbound"), rest @ ..]
            if args.unexpected(&["at"]).is_none() =>
        {
            let dir = if *dir == "inbound" {
                RuleDirection::Inbound
            } else {
                RuleDirection::Outbound
            };
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            let at = match args.value("at") {
                None => None,
                Some(text) => match text.parse::<i64>() {
                    Ok(n) => Some(n),
                    Err(_) => return Err(ctx.usage(USAGE)),
                },
            };
            if *verb == "add" {
                rule_add(ctx, name, dir, at, &rest)
            } else {
                rule_remove(ctx, name, dir, at, &rest)
            }
        }
        _ => Err(ctx.usage(USAGE)),
    }
}

fn valid_name(name: &str) -> bool {
    calico_model::names::validate_profile_name("profile", name).is_ok()
}

fn require_profile(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<()> {
    if !valid_name(name) {
        return Err(ctx.fail(1, BAD_PROFILE_NAME));
    }
    if !ctx.store()?.profile_exists(name)? {
        return Err(ctx.fail(1, format!("Profile {name} not found.")));
    }
    Ok(())
}

fn show(ctx: &mut Ctx<'_>, detailed: bool) -> anyhow::Result<()> {
    let state = ctx.store()?.snapshot()?;
    if !detailed {
        let mut table = Table::new(&["Name"]);
        for name in state.profiles.keys() {
            table.row(vec![name.clone()]);
        }
        table.sort_by_column(0);
        ctx.print(table.render());
        return Ok(());
    }
    let mut table = Table::new(&[
        "Name",
        "Host",
        "Orchestrator ID",
        "Workload ID",
        "Endpoint ID",
        "State",
    ]);
    for name in state.profiles.keys() {
        let members: Vec<_> = state
            .endpoints
            .iter()
            .filter(|(_, ep)| ep.profile_ids.iter().any(|p| p == name))
            .collect();
        if members.is_empty() {
            table.row(vec![name.clone()]);
        }
        for (key, ep) in members {
            table.row(vec![
                name.clone(),
                key.host.clone(),
                key.orchestrator.clone(),
                key.workload.clone(),
                key.endpoint.clone(),
                if ep.is_active() { "active" } else { "inactive" }.to_string(),
            ]);
        }
    }
    ctx.print(table.render());
    Ok(())
}

fn add(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<()> {
    if !valid_name(name) {
        return Err(ctx.fail(1, BAD_PROFILE_NAME));
    }
    if ctx.store()?.add_profile(name)? {
        ctx.say(format!("Created profile {name}"));
    } else {
        ctx.say(format!("Profile {name} already exists."));
    }
    Ok(())
}

fn remove(ctx: &mut Ctx<'_>, name: &str, no_check: bool) -> anyhow::Result<()> {
    if !valid_name(name) {
        return Err(ctx.fail(1, BAD_PROFILE_NAME));
    }
    let store = ctx.store()?;
    match store.remove_profile(name, no_check) {
        Ok(()) => ctx.say(format!("Deleted profile {name}")),
        Err(calico_model::Error::NotFound { .. }) => ctx.say(format!("Profile {name} not found.")),
        Err(calico_model::Error::Invalid { .. }) => {
            ctx.say("Cannot remove profile - profile in use by endpoint(s).")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn tag_show(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<()> {
    require_profile(ctx, name)?;
    let profile = ctx.store()?.profile(name)?;
    for tag in profile.tags {
        ctx.say(tag);
    }
    Ok(())
}

fn tag_edit(ctx: &mut Ctx<'_>, name: &str, add: bool, tag: &str) -> anyhow::Result<()> {
    require_profile(ctx, name)?;
    if calico_model::names::validate_profile_name("tag", tag).is_err() {
        return Err(ctx.fail(1, BAD_TAG_NAME));
    }
    let store = ctx.store()?;
    let has = store.profile(name)?.tags.iter().any(|t| t == tag);
    if add {
        if has {
            ctx.say(format!("Tag {tag} already exists on profile {name}"));
            return Ok(());
        }
        store.update_tags(name, Some(tag), None)?;
        ctx.say(format!("Tag {tag} added to profile {name}"));
    } else {
        match store.update_tags(name, None, Some(tag)) {
            Ok(()) => ctx.say(format!("Tag {tag} removed from profile {name}")),
            Err(calico_model::Error::NotFound { .. }) => {
                return Err(ctx.fail(1, format!("Tag {tag} is not on profile {name}")))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn rules_of(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<Rules> {
    Ok(ctx.store()?.profile(name)?.rules)
}

fn rule_show(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<()> {
    require_profile(ctx, name)?;
    let rules = rules_of(ctx, name)?;
    ctx.say("Inbound rules:");
    for (i, r) in rules.inbound_rules.iter().enumerate() {
        ctx.say(format!(" {:>3} {r}", i + 1));
    }
    ctx.say("Outbound rules:");
    for (i, r) in rules.outbound_rules.iter().enumerate() {
        ctx.say(format!(" {:>3} {r}", i + 1));
    }
    Ok(())
}

fn rule_json(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<()> {
    require_profile(ctx, name)?;
    let rules = rules_of(ctx, name)?;
    let mut map = BTreeMap::new();
    map.insert("inbound_rules", &rules.inbound_rules);
    map.insert("outbound_rules", &rules.outbound_rules);
    let text = serde_json::to_string_pretty(&map)?;
    ctx.say(text);
    Ok(())
}

fn rule_update(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<()> {
    require_profile(ctx, name)?;
    let mut text = String::new();
    ctx.io.stdin.read_to_string(&mut text)?;
    let rules = match Rules::from_json(text.trim()) {
        Ok(r) => r,
        Err(calico_model::Error::Invalid { reason, .. }) => {
            return Err(ctx.fail(1, format!("Invalid rules JSON: {reason}")))
        }
        Err(e) => return Err(ctx.fail(1, format!("Invalid rules JSON: {e}"))),
    };
    for rule in rules.inbound_rules.iter().chain(&rules.outbound_rules) {
        if let Err(e) = rule.validate() {
            return Err(ctx.fail(1, format!("Invalid rule {rule}: {e}")));
        }
    }
    ctx.store()?.set_rules(name, &rules)?;
    ctx.say(format!("Successfully updated rules on profile {name}"));
    Ok(())
}

fn parse_or_fail(ctx: &mut Ctx<'_>, words: &[String]) -> anyhow::Result<Rule> {
    match parse_rule(words) {
        Ok(r) => Ok(r),
        Err(RuleError::Usage(_)) => Err(ctx.usage(USAGE)),
        Err(RuleError::Invalid(m)) => Err(ctx.fail(1, m)),
    }
}

fn rule_add(
    ctx: &mut Ctx<'_>,
    name: &str,
    dir: RuleDirection,
    at: Option<i64>,
    words: &[String],
) -> anyhow::Result<()> {
    let rule = parse_or_fail(ctx, words)?;
    require_profile(ctx, name)?;
    let current = rules_of(ctx, name)?;
    let len = match dir {
        RuleDirection::Inbound => current.inbound_rules.len(),
        RuleDirection::Outbound => current.outbound_rules.len(),
    };
    let position = match at {
        None => None,
        Some(n) => {
            if n < 1 || n as usize > len + 1 {
                ctx.say(format!("Position {n} is out-of-range."));
            }
            Some(if n < 1 { 1 } else { n as usize })
        }
    };
    if !ctx.store()?.add_rule(name, dir, &rule, position)? {
        ctx.say("Rule already present, skipping.");
    }
    Ok(())
}

fn rule_remove(
    ctx: &mut Ctx<'_>,
    name: &str,
    dir: RuleDirection,
    at: Option<i64>,
    words: &[String],
) -> anyhow::Result<()> {
    let by_match = if at.is_none() {
        Some(parse_or_fail(ctx, words)?)
    } else if !words.is_empty() {
        return Err(ctx.usage(USAGE));
    } else {
        None
    };
    require_profile(ctx, name)?;
    // Read-modify-write of the rules key, compare-and-swap on its index (another
    // calicoctl editing the same profile makes this re-read, never lose its edit).
    let ds = ctx.ds()?;
    let key = calico_model::layout::profile_rules(name);
    for _ in 0..calico_model::store::CAS_RETRIES {
        let (mut rules, index) = match ds.get_value(&key)? {
            Some((json, index)) => (Rules::from_json(&json)?, Some(index)),
            None => (Rules::default(), None),
        };
        let list = match dir {
            RuleDirection::Inbound => &mut rules.inbound_rules,
            RuleDirection::Outbound => &mut rules.outbound_rules,
        };
        match (at, &by_match) {
            (Some(n), _) => {
                if n < 1 || n as usize > list.len() {
                    return Err(ctx.fail(1, "Rule position out-of-range."));
                }
                list.remove(n as usize - 1);
            }
            (None, Some(rule)) => match list.iter().position(|r| r == rule) {
                Some(i) => {
                    list.remove(i);
                }
                None => return Err(ctx.fail(1, "Rule not found.")),
            },
            (None, None) => return Err(Exit(1).into()),
        }
        let written = match index {
            Some(i) => ds.compare_and_swap(&key, &rules.to_json(), i),
            None => ds.create(&key, &rules.to_json()),
        };
        match written {
            Ok(_) => return Ok(()),
            Err(
                calico_model::Error::CompareFailed { .. }
                | calico_model::Error::AlreadyExists { .. }
                | calico_model::Error::KeyNotFound { .. },
            ) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ctx.fail(1, "Error updating datastore. Aborting."))
}
