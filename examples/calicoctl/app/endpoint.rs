//! `calicoctl endpoint show` and `calicoctl endpoint <ENDPOINT_ID> profile ...`
//! (spec/calico.md §2.5), and the profile-list update that `container <C> profile ...`
//! shares: every named profile must exist and be named once; append refuses a profile
//! already present, remove one that is absent (both exit 0 without a change, as 0.22);
//! the write is a compare-and-swap on the endpoint read.

use std::collections::{BTreeMap, BTreeSet};

use calico_model::model::{EndpointKey, WorkloadEndpoint};
use calico_model::store::ProfileUpdate;

use super::args::Args;
use super::table::Table;
use super::Ctx;

/// `calicoctl endpoint --help`.
pub const USAGE: &str = "\
Usage:
  calicoctl endpoint show [--host=<HOSTNAME>] [--orchestrator=<ORCHESTRATOR_ID>]
                          [--workload=<WORKLOAD_ID>] [--endpoint=<ENDPOINT_ID>]
                          [--detailed]
  calicoctl endpoint <ENDPOINT_ID> profile (append|remove|set) [--host=<HOSTNAME>]
                          [--orchestrator=<ORCHESTRATOR_ID>] [--workload=<WORKLOAD_ID>]
                          [<PROFILES>...]
  calicoctl endpoint <ENDPOINT_ID> profile show [--host=<HOSTNAME>]
                          [--orchestrator=<ORCHESTRATOR_ID>] [--workload=<WORKLOAD_ID>]

Description:
  Configure or show endpoints assigned to existing containers

Options:
  --detailed                           Show additional information
  --host=<HOSTNAME>                    Filters endpoints on a specific host
  --orchestrator=<ORCHESTRATOR_ID>     Filters endpoints created on a specific orchestrator
  --workload=<WORKLOAD_ID>             Filters endpoints on a specific workload
  --endpoint=<ENDPOINT_ID>             Filters endpoints with a specific endpoint ID
";

/// Filters of an endpoint lookup.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Host.
    pub host: Option<String>,
    /// Orchestrator id.
    pub orchestrator: Option<String>,
    /// Workload id.
    pub workload: Option<String>,
    /// Endpoint id.
    pub endpoint: Option<String>,
}

impl Filter {
    fn matches(&self, key: &EndpointKey) -> bool {
        let eq = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
        eq(&self.host, &key.host)
            && eq(&self.orchestrator, &key.orchestrator)
            && eq(&self.workload, &key.workload)
            && eq(&self.endpoint, &key.endpoint)
    }
}

/// Endpoints matching a filter, in key order.
pub fn lookup(
    ctx: &mut Ctx<'_>,
    filter: &Filter,
) -> anyhow::Result<Vec<(EndpointKey, WorkloadEndpoint)>> {
    let state = ctx.store()?.snapshot()?;
    Ok(state
        .endpoints
        .into_iter()
        .filter(|(k, _)| filter.matches(k))
        .collect())
}

/// Dispatches `endpoint ...`.
pub fn run(ctx: &mut Ctx<'_>, args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        ctx.print(USAGE);
        return Ok(());
    }
    let filter = Filter {
        host: args.value("host").map(String::from),
        orchestrator: args.value("orchestrator").map(String::from),
        workload: args.value("workload").map(String::from),
        endpoint: args.value("endpoint").map(String::from),
    };
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["endpoint", "show"]
            if args
                .unexpected(&["host", "orchestrator", "workload", "endpoint", "detailed"])
                .is_none() =>
        {
            show(ctx, &filter, args.has("detailed"))
        }
        ["endpoint", id, "profile", verb @ ("append" | "remove" | "set" | "show"), names @ ..]
            if args
                .unexpected(&["host", "orchestrator", "workload"])
                .is_none()
                && (*verb != "show" || names.is_empty()) =>
        {
            let filter = Filter {
                endpoint: Some(id.to_string()),
                ..filter
            };
            let found = lookup(ctx, &filter)?;
            let (key, ep) = match found.as_slice() {
                [] => return Err(ctx.fail(1, format!("Endpoint {id} is unknown to Calico."))),
                [one] => one.clone(),
                _ => {
                    return Err(ctx.fail(
                        1,
                        "More than 1 endpoint matches the provided criteria.  Please provide additional parameters to refine the search.",
                    ))
                }
            };
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            if *verb == "show" {
                show_profiles(ctx, &ep);
                Ok(())
            } else {
                update_profiles(ctx, &key, verb, &names)
            }
        }
        _ => Err(ctx.usage(USAGE)),
    }
}

/// Prints an endpoint's profiles as a one-column table.
pub fn show_profiles(ctx: &mut Ctx<'_>, ep: &WorkloadEndpoint) {
    let mut table = Table::new(&["Name"]);
    for p in &ep.profile_ids {
        table.row(vec![p.clone()]);
    }
    ctx.print(table.render());
}

fn show(ctx: &mut Ctx<'_>, filter: &Filter, detailed: bool) -> anyhow::Result<()> {
    let found = lookup(ctx, filter)?;
    if detailed {
        ctx.print(detailed_table(&found));
        return Ok(());
    }
    let mut groups: BTreeMap<(String, String), (BTreeSet<String>, usize)> = BTreeMap::new();
    for (key, _) in &found {
        let g = groups
            .entry((key.host.clone(), key.orchestrator.clone()))
            .or_default();
        g.0.insert(key.workload.clone());
        g.1 += 1;
    }
    let mut table = Table::new(&[
        "Hostname",
        "Orchestrator ID",
        "Number of Workloads",
        "Number of Endpoints",
    ]);
    for ((host, orch), (workloads, endpoints)) in groups {
        table.row(vec![
            host,
            orch,
            workloads.len().to_string(),
            endpoints.to_string(),
        ]);
    }
    ctx.print(table.render());
    Ok(())
}

/// The `--detailed` endpoint table.
pub fn detailed_table(found: &[(EndpointKey, WorkloadEndpoint)]) -> String {
    let mut table = Table::new(&[
        "Hostname",
        "Orchestrator ID",
        "Workload ID",
        "Endpoint ID",
        "Addresses",
        "MAC",
        "Profiles",
        "State",
    ]);
    for (key, ep) in found {
        let addresses: Vec<String> = ep
            .ipv4_nets
            .iter()
            .map(ToString::to_string)
            .chain(ep.ipv6_nets.iter().map(ToString::to_string))
            .collect();
        table.row(vec![
            key.host.clone(),
            key.orchestrator.clone(),
            key.workload.clone(),
            key.endpoint.clone(),
            addresses.join(","),
            ep.mac.map(|m| m.to_string()).unwrap_or_default(),
            ep.profile_ids.join(","),
            if ep.is_active() { "active" } else { "inactive" }.to_string(),
        ]);
    }
    table.render()
}

/// `profile append|remove|set` on one endpoint, with calicoctl's checks and messages.
pub fn update_profiles(
    ctx: &mut Ctx<'_>,
    key: &EndpointKey,
    verb: &str,
    names: &[String],
) -> anyhow::Result<()> {
    if names.is_empty() && verb != "set" {
        return Err(ctx.usage(USAGE));
    }
    let store = ctx.store()?;
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(ctx.fail(1, format!("Profile {name} specified more than once.")));
        }
        if verb != "remove"
            && (calico_model::names::validate_profile_name("profile", name).is_err()
                || !store.profile_exists(name)?)
        {
            return Err(ctx.fail(1, format!("Profile with name {name} was not found.")));
        }
    }
    let current = store.endpoint(key)?;
    let update = match verb {
        "append" => {
            if let Some(p) = names.iter().find(|p| current.profile_ids.contains(p)) {
                ctx.say(format!("Profile {p} is already in endpoint profile list"));
                return Ok(());
            }
            ProfileUpdate::Append(names.to_vec())
        }
        "remove" => {
            if let Some(p) = names.iter().find(|p| !current.profile_ids.contains(p)) {
                ctx.say(format!("Profile {p} is not in endpoint profile list."));
                return Ok(());
            }
            ProfileUpdate::Remove(names.to_vec())
        }
        _ => ProfileUpdate::Set(names.to_vec()),
    };
    match store.update_endpoint_profiles(key, &update) {
        Ok(_) => {}
        Err(e @ (calico_model::Error::Invalid { .. } | calico_model::Error::NotFound { .. })) => {
            return Err(ctx.fail(1, format!("Error updating datastore: {e}. Aborting.")))
        }
        Err(e) => return Err(e.into()),
    }
    let list = names.join(", ");
    match verb {
        "append" => ctx.say(format!("Profile(s) {list} appended.")),
        "remove" => ctx.say(format!("Profile(s) {list} removed.")),
        _ if names.is_empty() => ctx.say("Removed all profiles from endpoint."),
        _ => ctx.say(format!("Profile(s) set to {list}.")),
    }
    Ok(())
}
