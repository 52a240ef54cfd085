//! The `<match>` words of `calicoctl profile <P> rule add|remove`, as calicoctl 0.22's
//! docopt grammar gives them:
//!
//! ```text
//! (tcp|udp) [from [ports P] [tag T] [cidr C]] [to [ports P] [tag T] [cidr C]]
//! icmp [type N [code M]] [from [tag T] [cidr C]] [to [tag T] [cidr C]]
//! icmpv6 [type N [code M]] [from [tag T] [cidr C]] [to [tag T] [cidr C]]
//! [from [tag T] [cidr C]] [to [tag T] [cidr C]]
//! ```
//!
//! Ports are a comma list of `N`, `N:M` or `N-M` (stored as `N:M`). A match that does not
//! fit the grammar is a usage error; a value that does not validate gets calicoctl's
//! message (see [`RuleError`]).

use ipnetwork::IpNetwork;

use calico_model::rule::{Action, PortRange, Protocol, Rule};

/// Why the words did not make a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// The words do not fit the grammar: print the usage.
    Usage(String),
    /// A value is invalid: print this message (calicoctl's wording) and exit 1.
    Invalid(String),
}

/// Parses `(allow|deny) [<match>]` into a rule.
pub fn parse_rule(words: &[String]) -> Result<Rule, RuleError> {
    let mut it = words.iter().map(String::as_str).peekable();
    let action = match it.next() {
        Some("allow") => Action::Allow,
        Some("deny") => Action::Deny,
        other => {
            return Err(RuleError::Usage(format!(
                "expected allow or deny, got {}",
                other.unwrap_or("nothing")
            )))
        }
    };
    let mut rule = Rule::new(action);
    let protocol = match it.peek().copied() {
        Some(p @ ("tcp" | "udp" | "icmp" | "icmpv6")) => {
            it.next();
            Some(Protocol::parse(p).map_err(|e| RuleError::Invalid(e.to_string()))?)
        }
        _ => None,
    };
    rule.protocol = protocol;
    let ports_allowed = protocol.is_some_and(Protocol::has_ports);
    if protocol.is_some_and(Protocol::is_icmp) && it.peek() == Some(&"type") {
        it.next();
        rule.icmp_type = Some(icmp_number(it.next(), "type")?);
        if it.peek() == Some(&"code") {
            it.next();
            rule.icmp_code = Some(icmp_number(it.next(), "code")?);
        }
    }
    for side in ["from", "to"] {
        if it.peek() != Some(&side) {
            continue;
        }
        it.next();
        let src = side == "from";
        let mut any = false;
        if it.peek() == Some(&"ports") {
            if !ports_allowed {
                return Err(RuleError::Usage(
                    "ports are only valid with tcp or udp".into(),
                ));
            }
            it.next();
            let list = it
                .next()
                .ok_or_else(|| RuleError::Usage("ports needs a value".into()))?;
            let ports = parse_ports(list)?;
            if src {
                rule.src_ports = Some(ports);
            } else {
                rule.dst_ports = Some(ports);
            }
            any = true;
        }
        if it.peek() == Some(&"tag") {
            it.next();
            let tag = it
                .next()
                .ok_or_else(|| RuleError::Usage("tag needs a value".into()))?;
            if calico_model::names::validate_profile_name("tag", tag).is_err() {
                return Err(RuleError::Invalid(
                    "Tag names must be < 40 character long and can only contain numbers, letters, dots, dashes and underscores.".into(),
                ));
            }
            if src {
                rule.src_tag = Some(tag.to_string());
            } else {
                rule.dst_tag = Some(tag.to_string());
            }
            any = true;
        }
        if it.peek() == Some(&"cidr") {
            it.next();
            let text = it
                .next()
                .ok_or_else(|| RuleError::Usage("cidr needs a value".into()))?;
            let net: IpNetwork = text
                .parse()
                .map_err(|_| RuleError::Invalid(format!("Invalid CIDR specified {text}")))?;
            if src {
                rule.src_net = Some(net);
            } else {
                rule.dst_net = Some(net);
            }
            any = true;
        }
        if !any {
            return Err(RuleError::Usage(format!("{side} needs ports, tag or cidr")));
        }
    }
    if let Some(extra) = it.next() {
        return Err(RuleError::Usage(format!("unexpected word {extra:?}")));
    }
    // One IP family across the CIDRs, and the one ICMP/ICMPv6 forces.
    let forced = match protocol {
        Some(Protocol::Icmp) => Some(true),
        Some(Protocol::Icmpv6) => Some(false),
        _ => None,
    };
    let families: Vec<bool> = [rule.src_net, rule.dst_net]
        .iter()
        .flatten()
        .map(IpNetwork::is_ipv4)
        .chain(forced)
        .collect();
    if families.windows(2).any(|w| w[0] != w[1]) {
        return Err(RuleError::Invalid(
            "Invalid or unmatching IP versions for SRCCIDR/DSTCIDR.".into(),
        ));
    }
    rule.validate()
        .map_err(|e| RuleError::Invalid(e.to_string()))?;
    Ok(rule)
}

fn icmp_number(word: Option<&str>, what: &str) -> Result<u8, RuleError> {
    let w = word.ok_or_else(|| RuleError::Usage(format!("{what} needs a value")))?;
    w.parse::<u8>().map_err(|_| {
        RuleError::Invalid(format!(
            "ICMP {what} must be an integer in the range 0-255, not {w}."
        ))
    })
}

fn parse_ports(list: &str) -> Result<Vec<PortRange>, RuleError> {
    list.split(',')
        .map(|p| {
            PortRange::parse(p).map_err(|_| {
                RuleError::Invalid(format!(
                    "Invalid port specification {list}: ports are integers 0-65535 or ranges N:M with N <= M."
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn grammar_round_trips_through_the_pretty_form() {
        for text in [
            "allow",
            "deny tcp to ports 22,80:90",
            "allow udp from ports 53 tag dns cidr 10.0.0.0/8 to tag web",
            "allow icmp type 8 code 0 from cidr 10.1.0.0/16",
            "deny icmpv6 to cidr fd00::/64",
            "allow from tag myprofile1",
        ] {
            let rule = parse_rule(&words(text)).unwrap();
            assert_eq!(rule.to_string(), text);
        }
        let r = parse_rule(&words("allow tcp to ports 1-2")).unwrap();
        assert_eq!(r.to_string(), "allow tcp to ports 1:2");
    }

    #[test]
    fn bad_matches_are_usage_or_invalid() {
        assert!(matches!(
            parse_rule(&words("allow icmp to ports 80")),
            Err(RuleError::Usage(_))
        ));
        assert!(matches!(
            parse_rule(&words("permit")),
            Err(RuleError::Usage(_))
        ));
        assert_eq!(
            parse_rule(&words("allow icmp from cidr fd00::/64")),
            Err(RuleError::Invalid(
                "Invalid or unmatching IP versions for SRCCIDR/DSTCIDR.".into()
            ))
        );
        assert_eq!(
            parse_rule(&words("allow from cidr 10.0.0.0/33")),
            Err(RuleError::Invalid(
                "Invalid CIDR specified 10.0.0.0/33".into()
            ))
        );
        assert!(matches!(
            parse_rule(&words("allow tcp to ports 90:80")),
            Err(RuleError::Invalid(_))
        ));
        assert!(matches!(
            parse_rule(&words("allow icmp type 256")),
            Err(RuleError::Invalid(_))
        ));
    }
}
