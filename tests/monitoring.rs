//! deploy/monitoring stays true to the binary and to Prometheus:
//! the PrometheusRule's rules pass `promtool check rules` and the unit tests
//! in tests.yaml (`promtool test rules`), every alert has a firing and a
//! not-firing test, every metric the rules and the Grafana dashboard query
//! is one the agent or the controller exports, the dashboard's queries
//! parse as PromQL, and the kustomization renders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dashboard() -> Json {
    let text = std::fs::read_to_string(repo("deploy/monitoring/grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

fn run(dir: &Path, cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The PrometheusRule's `spec` as a plain rules file: the one source of the
/// rules, in the form promtool reads.
fn rules_file() -> (Yaml, String) {
    let rule = yaml("deploy/monitoring/prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let spec = rule["spec"].clone();
    let text = serde_yaml::to_string(&spec).unwrap();
    (spec, text)
}

fn alerts(spec: &Yaml) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in spec["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            if let Some(name) = rule["alert"].as_str() {
                out.push((name.to_string(), rule["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    require_tools!("promtool");
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = rules_file();
    std::fs::write(dir.path().join("rules.yaml"), text).unwrap();
    std::fs::copy(
        repo("deploy/monitoring/tests.yaml"),
        dir.path().join("tests.yaml"),
    )
    .unwrap();
    run(dir.path(), "promtool", &["check", "rules", "rules.yaml"]);
    run(dir.path(), "promtool", &["test", "rules", "tests.yaml"]);
}

/// A new alert without its tests fails here, not in production.
#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let (spec, _) = rules_file();
    let names = alerts(&spec);
    assert!(names.len() >= 9, "{names:?}");
    let tests = yaml("deploy/monitoring/tests.yaml");
    assert_eq!(tests["rule_files"][0], "rules.yaml");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_string();
            match a["exp_alerts"].as_sequence() {
                Some(v) if !v.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for (name, _) in &names {
        assert!(firing.contains(name), "no test where {name} fires");
        assert!(quiet.contains(name), "no test where {name} stays quiet");
    }
    let known: BTreeSet<_> = names.iter().map(|(n, _)| n.clone()).collect();
    for tested in firing.union(&quiet) {
        assert!(
            known.contains(tested),
            "tests.yaml tests unknown alert {tested}"
        );
    }
}

/// Metric names a PromQL expression reads: identifiers that are not a
/// function or aggregation (followed by `(`), not a keyword, and not inside
/// a label matcher, a range, a string or a `by (...)` list.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 9] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "unless",
    ];
    // Aggregations may put `by (...)` between their name and `(`.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut flat = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    let mut in_string = false;
    let mut escaped = false;
    for c in expr.chars() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => flat.push(c),
        }
    }
    let chars: Vec<char> = flat.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let call = j < chars.len() && chars[j] == '(';
            if KEYWORDS.contains(&word.as_str()) || ["and", "or"].contains(&word.as_str()) {
                // `by (a, b)`: the list holds labels, not metrics.
                skip_list = call;
            } else if !call && !skip_list && !AGGREGATIONS.contains(&word.as_str()) {
                out.insert(word);
            }
            continue;
        }
        if c == ')' {
            skip_list = false;
        }
        if c.is_ascii_digit() {
            // A number (or duration): skip it whole.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    out
}

#[test]
fn the_name_extractor_finds_metrics_only() {
    let names = metric_names(
        r#"sum by (node, type) (increase(tapio_anomalies_total{job="x",type=~"a|b"}[$__rate_interval])) > 0 or absent(up{job="y"}) and on (node) tapio_x / tapio_y{a="{"} unless 2e3 < bool foo_total offset 5m"#,
    );
    let expect: BTreeSet<String> = [
        "tapio_anomalies_total",
        "up",
        "tapio_x",
        "tapio_y",
        "foo_total",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, expect);
}

/// Every series name the agent (controller mode, one sink, one map) and
/// the controller expose, from their real encoders.
fn exported_names() -> BTreeSet<String> {
    use tapio::agent::metrics::{Metrics, ObserverMap};
    let m = Metrics::new();
    m.watch(tapio::agent::pipeline::Shared::new(), true);
    m.init_sink("file", 16);
    let map = ObserverMap {
        observer: "network".into(),
        map: "conn_owners".into(),
    };
    m.bpf_map_entries.get_or_create(&map).set(0);
    m.bpf_map_capacity.get_or_create(&map).set(16384);
    // Per-program series exist once the drain exports the programs' counters.
    let program = tapio::agent::metrics::ProgramLabel {
        observer: "network".into(),
        program: "handle_net__tcp_retransmit_skb".into(),
    };
    m.bpf_missed_runs.get_or_create(&program).inc_by(0);
    let agent = m.encode();
    let controller = tapio::controller::metrics::Snapshot::default().encode();
    let mut names: BTreeSet<String> = agent
        .lines()
        .chain(controller.lines())
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    // Prometheus itself writes `up` for every target.
    names.insert("up".into());
    names
}

fn dashboard_exprs(d: &Json) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<&Json> = d["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    out
}

#[test]
fn rules_and_dashboard_query_only_exported_metrics() {
    let exported = exported_names();
    for must in [
        "tapio_build_info",
        "process_cpu_seconds_total",
        "tapio_observer_state",
        "tapio_controller_connected",
        "tapio_sink_queue_depth",
        "tapio_controller_agents_unconfigured",
    ] {
        assert!(exported.contains(must), "{must} not exported: {exported:?}");
    }
    let (spec, _) = rules_file();
    let d = dashboard();
    let exprs = dashboard_exprs(&d);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut queried = BTreeSet::new();
    for (name, expr) in alerts(&spec) {
        for m in metric_names(&expr) {
            assert!(
                exported.contains(&m),
                "alert {name} queries {m}, which nothing exports"
            );
            queried.insert(m);
        }
    }
    for expr in &exprs {
        for m in metric_names(expr) {
            assert!(
                exported.contains(&m),
                "the dashboard queries {m}, which nothing exports: {expr}"
            );
            queried.insert(m);
        }
    }
    // The node variable lists nodes from a metric every agent exports.
    let var = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "node")
        .expect("a node variable");
    let q = var["query"]["query"].as_str().unwrap();
    let metric = q
        .strip_prefix("label_values(")
        .and_then(|r| r.split(['{', ',']).next())
        .unwrap();
    assert!(exported.contains(metric), "{q}");
    // What the issue asks the dashboard to show.
    for shown in [
        "tapio_anomalies_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "tapio_lost_events_total",
        "tapio_sink_drops_total",
        "tapio_observer_state",
    ] {
        assert!(
            exprs.iter().any(|e| metric_names(e).contains(shown)),
            "the dashboard does not show {shown}"
        );
    }
}

/// The dashboard's queries parse: promtool checks them as recording rules,
/// with Grafana's variables replaced by what Grafana would put there.
#[test]
fn dashboard_queries_are_valid_promql() {
    require_tools!("promtool");
    let exprs = dashboard_exprs(&dashboard());
    let rules: Vec<Yaml> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "2m")
                .replace("$__range", "6h")
                .replace("$node", ".*");
            let mut r = serde_yaml::Mapping::new();
            r.insert("record".into(), format!("dashboard:query_{i}").into());
            r.insert("expr".into(), e.into());
            Yaml::Mapping(r)
        })
        .collect();
    let file = serde_yaml::to_string(&serde_json::json!({
        "groups": [{"name": "dashboard", "rules": rules}]
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yaml"), file).unwrap();
    run(
        dir.path(),
        "promtool",
        &["check", "rules", "dashboard.yaml"],
    );
}

#[test]
fn monitors_select_the_agent_and_controller_pods() {
    let text = std::fs::read_to_string(repo("deploy/monitoring/podmonitor.yaml")).unwrap();
    let docs: Vec<Yaml> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let find = |name: &str| {
        docs.iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no monitor {name}"))
    };
    for (name, port) in [("tapio-agent", "metrics"), ("tapio-controller", "http")] {
        let m = find(name);
        assert_eq!(m["kind"], "PodMonitor");
        assert_eq!(
            m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
            name
        );
        assert_eq!(m["spec"]["jobLabel"], "app.kubernetes.io/name");
        let ep = &m["spec"]["podMetricsEndpoints"][0];
        assert_eq!(ep["port"], port);
        assert_eq!(ep["path"], "/metrics");
    }
    // Alerts and panels group by `node`: the agent monitor must set it.
    let relabel = &find("tapio-agent")["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
    assert_eq!(
        relabel["sourceLabels"][0],
        "__meta_kubernetes_pod_node_name"
    );
    assert_eq!(relabel["targetLabel"], "node");
}

#[test]
fn the_monitoring_kustomization_renders() {
    require_tools!("kubectl");
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(repo("deploy/monitoring"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Yaml> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let expect: BTreeSet<String> = [
        "ConfigMap/tapio-grafana-dashboard",
        "PodMonitor/tapio-agent",
        "PodMonitor/tapio-controller",
        "PrometheusRule/tapio",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds, expect);
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "tapio"));
    let embedded: Json =
        serde_json::from_str(cm["data"]["grafana-dashboard.json"].as_str().unwrap()).unwrap();
    assert_eq!(embedded, dashboard());
}
