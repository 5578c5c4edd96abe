//! deploy/monitoring: the shipped Prometheus alert rules and Grafana
//! dashboard name only metrics the service exports. `check_against` is
//! called with a real scrape of `bridge run` (tests/service.rs).

use std::collections::BTreeSet;

use bridge_runtime::toolchain::ProjectDirs;

fn read(rel: &str) -> String {
    let root = ProjectDirs::locate().expect("project folder").root;
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `bridge_*` metric name in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("bridge_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL expression of the alert rules and of the dashboard.
fn expressions() -> Vec<(String, String)> {
    let mut all = Vec::new();
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/monitoring/prometheus-alerts.yml")).expect("rules YAML");
    let groups = rules["groups"].as_sequence().expect("groups");
    for group in groups {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name").to_string();
            let expr = rule["expr"].as_str().expect("expr").to_string();
            assert!(
                rule["annotations"]["action"].as_str().is_some(),
                "{name}: says what to do"
            );
            all.push((format!("alert {name}"), expr));
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json"))
            .expect("dashboard JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            all.push((
                format!("panel {}", panel["title"]),
                target["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    all
}

/// The metric families of a scrape: `# TYPE <name> <kind>` (counters are
/// sampled as `<name>_total`, histograms as `_bucket`, `_sum`, `_count`).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        names.insert(name.to_string());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {}
        }
    }
    names
}

/// Panics naming each rule or panel that uses a metric the scrape lacks.
pub fn check_against(scrape: &str) {
    let exported = exported(scrape);
    assert!(
        exported.len() > 10,
        "not a scrape of the service:\n{scrape}"
    );
    let mut missing = Vec::new();
    let all = expressions();
    assert!(all.len() >= 10, "rules and panels found: {}", all.len());
    for (at, expr) in &all {
        for name in names_in(expr) {
            if !exported.contains(&name) {
                missing.push(format!("{at}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics the service does not export:\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_metric_the_service_does_not_export_is_caught() {
    // The checker itself: a scrape without the dead-letter family fails it.
    let scrape = "# TYPE bridge_records counter\n# TYPE bridge_runs counter\n";
    let caught = std::panic::catch_unwind(|| check_against(scrape));
    assert!(caught.is_err());
    assert_eq!(
        names_in("time() - max by (flow) (bridge_last_delivered_timestamp_seconds) > 6"),
        ["bridge_last_delivered_timestamp_seconds"]
    );
}
