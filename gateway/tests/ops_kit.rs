//! The operator's kit in docs/ops: the Prometheus alert rules pass `promtool check rules`
//! (Debian's `prometheus` package), the Grafana dashboard's queries are valid PromQL (checked
//! by promtool as recording rules), and every metric either reads is documented in
//! docs/operations.md, so that neither drifts from what the gateway serves.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool_check_rules(path: &Path) {
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .expect("promtool (Debian: prometheus) checks the alert rules");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `kizo_*` metric names in `text`, without histogram suffixes.
fn metrics_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("kizo_") {
        let name: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[start + name.len()..];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}

#[test]
fn alert_rules_pass_promtool_and_read_documented_metrics() {
    let rules = repository().join("docs/ops/prometheus-rules.yml");
    promtool_check_rules(&rules);
    let documented =
        metrics_in(&std::fs::read_to_string(repository().join("docs/operations.md")).unwrap());
    let read = metrics_in(&std::fs::read_to_string(&rules).unwrap());
    assert!(read.len() >= 8, "{read:?}");
    let undocumented: Vec<_> = read.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/operations.md: {undocumented:?}"
    );
}

#[test]
fn the_dashboards_queries_are_valid_and_read_documented_metrics() {
    let text =
        std::fs::read_to_string(repository().join("docs/ops/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    // Each query as a recording rule, the dashboard's variable replaced, for promtool.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, rules).unwrap();
    promtool_check_rules(&path);
    let documented =
        metrics_in(&std::fs::read_to_string(repository().join("docs/operations.md")).unwrap());
    let read = metrics_in(&exprs.join("\n"));
    let undocumented: Vec<_> = read.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/operations.md: {undocumented:?}"
    );
}
