//! Golden files: the tutorial's rendered plan for hostA, byte for byte, so every change
//! to the rendered dataplane shows up in review. `UPDATE_GOLDEN=1 cargo test -p
//! calico-model --test golden` rewrites them after an intended change.

use calico_model::dataplane::{render_host, HostPlan, RenderOptions, Routing};
use calico_model::scenario::Scenario;

fn check(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"
    );
}

fn routes(plan: &HostPlan) -> String {
    plan.routes.values().map(|r| format!("{r}\n")).collect()
}

#[test]
fn walkthrough_host_a() {
    let state = Scenario::walkthrough().state();
    let plan = render_host(&state, "hostA", RenderOptions::default()).unwrap();
    check("walkthrough-hostA.filter", &plan.filter.to_restore());
    check("walkthrough-hostA.nat", &plan.nat.to_restore());
    check("walkthrough-hostA.ipset", &plan.ipset_restore());
    check("walkthrough-hostA.routes", &routes(&plan));
    let bird = render_host(
        &state,
        "hostA",
        RenderOptions {
            routing: Routing::Bird,
            ..RenderOptions::default()
        },
    )
    .unwrap();
    check(
        "walkthrough-hostA.bird.conf",
        bird.bird_conf.as_deref().unwrap_or_default(),
    );
}
