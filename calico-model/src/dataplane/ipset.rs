//! ipsets as data and their `ipset restore` text.
//!
//! Felix keeps one `hash:ip` set per tag and family (`felix-v4-<tag16>`,
//! `felix-v6-<tag16>`) and, for nat-outgoing, two `hash:net` sets of pool CIDRs.
//! Restore text format written by [`IpSet::to_restore`]:
//!
//! ```text
//! create felix-v4-myprofile1 hash:ip family inet maxelem 1048576 -exist
//! create felix-tmp-v4-myprofile1 hash:ip family inet maxelem 1048576 -exist
//! flush felix-tmp-v4-myprofile1
//! add felix-tmp-v4-myprofile1 10.20.10.1
//! swap felix-tmp-v4-myprofile1 felix-v4-myprofile1
//! destroy felix-tmp-v4-myprofile1
//! ```
//!
//! The temporary set is filled and swapped in, so readers of the set never see it half
//! written (felix's scheme); `-exist` makes re-creation idempotent. A set's type or
//! family cannot change under the same name: [`crate::linux`] destroys and recreates it
//! if it must.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Longest ipset name the kernel accepts.
pub const MAX_SET_NAME: usize = 31;

/// The kind of set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetType {
    /// Addresses (`hash:ip`): tag sets, host sets.
    HashIp,
    /// Networks (`hash:net`): pool sets.
    HashNet,
}

impl SetType {
    /// ipset's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashNet => "hash:net",
        }
    }
}

/// One ipset and its members (canonical text: addresses or CIDRs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Set name (at most 31 characters).
    pub name: String,
    /// Type.
    pub set_type: SetType,
    /// IPv4 (`inet`) or IPv6 (`inet6`).
    pub v4: bool,
    /// `maxelem`.
    pub max_elements: u32,
    /// Members.
    pub members: BTreeSet<String>,
}

impl IpSet {
    /// The name of the temporary set used for swapping.
    pub fn temp_name(&self) -> String {
        match self.name.strip_prefix("felix-") {
            Some(rest) => format!("felix-tmp-{rest}"),
            None => format!("tmp-{}", self.name),
        }
        .chars()
        .take(MAX_SET_NAME)
        .collect()
    }

    fn create_line(&self, name: &str) -> String {
        format!(
            "create {name} {} family {} maxelem {} -exist\n",
            self.set_type.as_str(),
            if self.v4 { "inet" } else { "inet6" },
            self.max_elements
        )
    }

    /// Full rewrite via a temporary set and swap (see module docs).
    pub fn to_restore(&self) -> String {
        let tmp = self.temp_name();
        let mut out = self.create_line(&self.name);
        out.push_str(&self.create_line(&tmp));
        let _ = writeln!(out, "flush {tmp}");
        for m in &self.members {
            let _ = writeln!(out, "add {tmp} {m}");
        }
        let _ = writeln!(out, "swap {tmp} {}", self.name);
        let _ = writeln!(out, "destroy {tmp}");
        out
    }

    /// Incremental membership change (`-exist` makes adds/deletes idempotent).
    pub fn delta_restore(
        name: &str,
        added: &BTreeSet<String>,
        removed: &BTreeSet<String>,
    ) -> String {
        let mut out = String::new();
        for m in removed {
            let _ = writeln!(out, "del {name} {m} -exist");
        }
        for m in added {
            let _ = writeln!(out, "add {name} {m} -exist");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_text_swaps_a_temporary_set() {
        let set = IpSet {
            name: "felix-v4-myprofile1".into(),
            set_type: SetType::HashIp,
            v4: true,
            max_elements: 1 << 20,
            members: ["10.20.10.1".to_string(), "10.20.10.3".to_string()]
                .into_iter()
                .collect(),
        };
        assert_eq!(
            set.to_restore(),
            "create felix-v4-myprofile1 hash:ip family inet maxelem 1048576 -exist\n\
             create felix-tmp-v4-myprofile1 hash:ip family inet maxelem 1048576 -exist\n\
             flush felix-tmp-v4-myprofile1\n\
             add felix-tmp-v4-myprofile1 10.20.10.1\n\
             add felix-tmp-v4-myprofile1 10.20.10.3\n\
             swap felix-tmp-v4-myprofile1 felix-v4-myprofile1\n\
             destroy felix-tmp-v4-myprofile1\n"
        );
        assert!(set.temp_name().len() <= MAX_SET_NAME);
    }

    #[test]
    fn delta_text() {
        let add: BTreeSet<String> = ["1.1.1.1".to_string()].into_iter().collect();
        let del: BTreeSet<String> = ["2.2.2.2".to_string()].into_iter().collect();
        assert_eq!(
            IpSet::delta_restore("s", &add, &del),
            "del s 2.2.2.2 -exist\nadd s 1.1.1.1 -exist\n"
        );
    }
}
