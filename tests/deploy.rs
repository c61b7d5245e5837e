//! The Kubernetes base in deploy/ stays true to the binary and to SPEC §8:
//! every flag it passes exists on the subcommand it runs, the profile it
//! ships validates, `kubectl kustomize` renders it (and the old-kernel
//! overlay), `kubernetes-validate --strict` accepts the result, every
//! property a node agent needs is present in the *rendered* YAML, and
//! `scripts/image.sh smoke` runs the agent the way the DaemonSet does.
//!
//! kubectl and the kubernetes-validate venv (installed under target/ on
//! first use) are needed for the rendering tests; without them they skip
//! with one line, or fail under TAPIO_REQUIRE_EBPF=1 (CI allows no skips).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;

const CAPS: [&str; 3] = ["BPF", "PERFMON", "NET_ADMIN"];

fn parse_all(text: &str, what: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(common::repo_root().join(path)).unwrap();
    parse_all(&text, path)
}

fn containers(doc: &Value) -> Vec<Value> {
    doc["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn help(sub: &str) -> String {
    let out = Command::new(common::tapio_bin())
        .args([sub, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tapio {sub} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl kustomize <dir>` (relative to the repo), or None when kubectl
/// is missing.
fn kustomize(dir: &str) -> Option<String> {
    if Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_err()
    {
        return None;
    }
    let ran = common::output_within(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(common::repo_root().join(dir)),
        Duration::from_secs(60),
        false,
    );
    assert!(ran.ok(), "kubectl kustomize {dir}: {}", ran.stderr);
    Some(ran.stdout)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the rendered base"))
}

/// The value of `--flag=value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    args.iter()
        .find_map(|a| a.strip_prefix(prefix.as_str()))
        .or_else(|| args.iter().any(|a| a == name).then_some(""))
}

fn env_value<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_sequence()?.iter().find(|e| e["name"] == name)
}

fn mount<'a>(c: &'a Value, path: &str) -> &'a Value {
    c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == path)
        .unwrap_or_else(|| panic!("no volumeMount at {path}"))
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn port_named(c: &Value, name: &str) -> u64 {
    c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port named {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

fn addr_port(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn every_manifest_flag_exists_and_the_shipped_profile_validates() {
    let mut checked = 0;
    for file in [
        "deploy/base/agent-daemonset.yaml",
        "deploy/base/controller.yaml",
    ] {
        for doc in documents(file) {
            for c in containers(&doc) {
                let args = strs(&c["args"]);
                let sub = &args[0];
                let text = help(sub);
                for a in &args[1..] {
                    let flag = a.split('=').next().unwrap();
                    assert!(flag.starts_with("--"), "{file}: {a}");
                    assert!(
                        text.contains(&format!("{flag} ")) || text.contains(&format!("{flag}\n")),
                        "{file}: tapio {sub} has no {flag}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 13, "only {checked} flags checked");
    let out = Command::new(common::tapio_bin())
        .args(["profile", "validate"])
        .arg(common::repo_root().join("deploy/base/profile.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/base/profile.yaml: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn each_added_capability_says_why_on_its_line() {
    let text =
        std::fs::read_to_string(common::repo_root().join("deploy/base/agent-daemonset.yaml"))
            .unwrap();
    for cap in CAPS {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("- {cap} ")))
            .unwrap_or_else(|| panic!("no `- {cap}` line"));
        let why = line.split_once('#').map(|(_, w)| w.trim()).unwrap_or("");
        assert!(why.len() >= 10, "{cap} has no reason: {line:?}");
    }
}

#[test]
fn the_rendered_base_has_every_property_a_fleet_needs() {
    let Some(text) = kustomize("deploy") else {
        return common::skip(&test_name!(), "kubectl is not installed");
    };
    let docs = parse_all(&text, "kubectl kustomize deploy");
    let image = format!("localhost/tapio:{}", env!("CARGO_PKG_VERSION"));

    // Namespace: admits privileged pods; everything else lives in it.
    let ns = find(&docs, "Namespace", "tapio");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    for d in &docs {
        if d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], "tapio", "{:?}", d["metadata"]);
        }
    }

    // The agent DaemonSet.
    let ds = find(&docs, "DaemonSet", "tapio-agent");
    let tmpl = &ds["spec"]["template"];
    let pod = &tmpl["spec"];
    assert_eq!(pod["hostPID"], true);
    if pod["hostNetwork"] == true {
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    }
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let [agent] = containers(ds).try_into().expect("one agent container");
    assert_eq!(agent["image"], image.as_str());
    let args = strs(&agent["args"]);
    assert_eq!(args[0], "agent");
    let sc = &agent["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strs(&sc["capabilities"]["add"]), CAPS);

    // Metrics on, the port declared and announced to Prometheus.
    assert!(flag(&args, "--metrics").is_some(), "{args:?}");
    let metrics_port = port_named(&agent, "metrics");
    assert_eq!(
        addr_port(flag(&args, "--metrics-addr").expect("--metrics-addr")),
        metrics_port
    );
    let ann = &tmpl["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], metrics_port.to_string().as_str());
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(agent[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(agent[probe]["httpGet"]["port"], "metrics", "{probe}");
    }

    // The files the agent writes are where `kubectl exec … tapio recent`
    // looks (TAPIO_DATA_DIR), on a writable hostPath, not the read-only root.
    let data_dir = env_value(&agent, "TAPIO_DATA_DIR").expect("TAPIO_DATA_DIR")["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(flag(&args, "--data-dir"), Some("$(TAPIO_DATA_DIR)"));
    let data = mount(&agent, "/var/lib/tapio");
    assert!(data_dir.starts_with("/var/lib/tapio/"), "{data_dir}");
    assert_ne!(data["readOnly"], true);
    assert_eq!(
        volume(pod, data["name"].as_str().unwrap())["hostPath"]["path"],
        "/var/lib/tapio"
    );
    assert_eq!(flag(&args, "--node-name"), Some("$(NODE_NAME)"));
    assert_eq!(
        env_value(&agent, "NODE_NAME").expect("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    for path in ["/sys/fs/cgroup", "/sys/kernel/btf"] {
        let m = mount(&agent, path);
        assert_eq!(m["readOnly"], true, "{path}");
        assert_eq!(
            volume(pod, m["name"].as_str().unwrap())["hostPath"]["path"],
            path
        );
    }

    // SIGTERM finishes before the kubelet's SIGKILL.
    let shutdown: u64 = flag(&args, "--shutdown-timeout")
        .expect("--shutdown-timeout")
        .parse()
        .unwrap();
    assert!(shutdown < pod["terminationGracePeriodSeconds"].as_u64().unwrap());

    // The controller Deployment: non-root, read-only, no capabilities.
    let dep = find(&docs, "Deployment", "tapio-controller");
    let cpod = &dep["spec"]["template"]["spec"];
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(cpod["automountServiceAccountToken"], false);
    assert_eq!(cpod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(cpod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(cpod["securityContext"]["runAsUser"], 65532);
    let [ctl] = containers(dep)
        .try_into()
        .expect("one controller container");
    assert_eq!(ctl["image"], image.as_str());
    let csc = &ctl["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&csc["capabilities"]["drop"]), ["ALL"]);
    assert!(csc["capabilities"]["add"].is_null());
    assert_eq!(csc["runAsUser"], Value::Null, "the pod's 65532 applies");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(ctl[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(ctl[probe]["httpGet"]["port"], "http", "{probe}");
    }
    let cargs = strs(&ctl["args"]);
    let http = port_named(&ctl, "http");
    assert_eq!(addr_port(flag(&cargs, "--listen").unwrap()), http);

    // The profile the controller mounts is the generated ConfigMap, and
    // what it holds validates.
    let cm_name = volume(cpod, "profile")["configMap"]["name"]
        .as_str()
        .unwrap();
    assert!(cm_name.starts_with("tapio-profile-"), "{cm_name}");
    let cm = find(&docs, "ConfigMap", cm_name);
    let profile_path = flag(&cargs, "--profile").unwrap();
    assert!(profile_path.starts_with("/etc/tapio/profile/"));
    let file = profile_path.rsplit('/').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), cm["data"][file].as_str().unwrap()).unwrap();
    let out = Command::new(common::tapio_bin())
        .args(["profile", "validate"])
        .arg(dir.path().join(file))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The agent reaches the controller through its Service, with the same
    // token Secret.
    let svc = find(&docs, "Service", "tapio-controller");
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/name"],
        dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    );
    let sport = &svc["spec"]["ports"][0];
    assert_eq!(sport["targetPort"], "http");
    assert_eq!(
        flag(&args, "--controller-endpoint"),
        Some(
            format!(
                "http://tapio-controller:{}",
                sport["port"].as_u64().unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(
        volume(pod, "token")["secret"]["secretName"],
        volume(cpod, "token")["secret"]["secretName"]
    );
    // The Secret is the user's to create, never shipped.
    assert!(docs.iter().all(|d| d["kind"] != "Secret"));
}

#[test]
fn the_old_kernel_overlay_adds_only_sys_resource() {
    let (Some(base), Some(old)) = (kustomize("deploy"), kustomize("deploy/overlays/old-kernel"))
    else {
        return common::skip(&test_name!(), "kubectl is not installed");
    };
    let base = parse_all(&base, "base");
    let mut old = parse_all(&old, "old-kernel");
    let caps = &mut old.iter_mut().find(|d| d["kind"] == "DaemonSet").unwrap()["spec"]["template"]
        ["spec"]["containers"][0]["securityContext"]["capabilities"]["add"];
    let mut want: Vec<String> = CAPS.iter().map(|c| c.to_string()).collect();
    want.push("SYS_RESOURCE".into());
    assert_eq!(strs(caps), want);
    // Take it out again: what is left must be the base, unchanged.
    caps.as_sequence_mut().unwrap().pop();
    assert_eq!(old, base);
}

/// kubernetes-validate in a venv under target/, or None after saying why.
fn kubernetes_validate() -> Option<PathBuf> {
    let py = common::python_venv("kubevalidate", &["kubernetes-validate==1.37.0"])?;
    Some(py.with_file_name("kubernetes-validate"))
}

/// Every resource passed --strict against `version`; (passed, output).
fn validate(bin: &Path, yaml: &str, version: &str) -> (bool, usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let ran = common::output_within(
        Command::new(bin)
            .args(["--strict", "-k", version])
            .arg(&file),
        Duration::from_secs(120),
        false,
    );
    let text = format!("{}{}", ran.stdout, ran.stderr);
    let passed = text
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    let clean = ran.ok() && !text.contains("WARN") && !text.contains("ERROR");
    (clean, passed, text)
}

#[test]
fn kubernetes_validate_strict_accepts_the_base_and_the_overlay() {
    let (Some(base), Some(old)) = (kustomize("deploy"), kustomize("deploy/overlays/old-kernel"))
    else {
        return common::skip(&test_name!(), "kubectl is not installed");
    };
    let Some(bin) = kubernetes_validate() else {
        return common::skip(&test_name!(), "cannot install kubernetes-validate");
    };
    // The oldest Kubernetes still supported upstream when this was written,
    // and the newest the validator knows.
    for version in ["1.28.0", "1.37.0"] {
        for (name, yaml) in [("base", &base), ("old-kernel", &old)] {
            let docs = parse_all(yaml, name).len();
            let (clean, passed, text) = validate(&bin, yaml, version);
            assert!(clean, "{name} against {version}:\n{text}");
            assert_eq!(passed, docs, "{name} against {version}:\n{text}");
        }
    }
    // The validator is strict: one unknown field fails it.
    let line = base.lines().find(|l| l.trim() == "hostPID: true").unwrap();
    let indent = &line[..line.len() - line.trim_start().len()];
    let broken = base.replacen(line, &format!("{line}\n{indent}hostPid: true"), 1);
    assert_ne!(broken, base);
    let (clean, _, text) = validate(&bin, &broken, "1.37.0");
    assert!(!clean, "an unknown field passed:\n{text}");
}

/// `scripts/image.sh smoke` must run the agent the way the DaemonSet does:
/// same flags, capabilities, namespaces, seccomp and host mounts.
#[test]
fn the_image_smoke_runs_the_agent_as_the_daemonset_does() {
    let script = std::fs::read_to_string(common::repo_root().join("scripts/image.sh")).unwrap();
    let docs = documents("deploy/base/agent-daemonset.yaml");
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    let [agent] = containers(ds).try_into().expect("one agent container");
    for a in &strs(&agent["args"])[1..] {
        let name = a.split('=').next().unwrap();
        assert!(
            script.contains(&format!("{name}=")) || script.contains(&format!("{name} ")),
            "image.sh smoke does not pass {name}"
        );
    }
    let sc = &agent["securityContext"];
    let caps = strs(&sc["capabilities"]["add"]).join(",");
    assert!(script.contains(&format!("--cap-drop ALL --cap-add {caps} ")));
    assert_eq!(pod["hostPID"], true);
    assert!(script.contains("--pid host"));
    assert_eq!(
        pod["hostNetwork"] == true,
        script.contains("--pid host --network host")
    );
    assert_eq!(sc["runAsUser"], 0);
    assert!(script.contains("--user 0:0"));
    assert!(script.contains("--read-only --security-opt no-new-privileges"));
    assert_eq!(
        sc["seccompProfile"]["type"] == "Unconfined",
        script.contains("--security-opt seccomp=unconfined")
    );
    assert!(script.contains(&format!(
        "-e TAPIO_DATA_DIR={}",
        env_value(&agent, "TAPIO_DATA_DIR").unwrap()["value"]
            .as_str()
            .unwrap()
    )));
    for m in agent["volumeMounts"].as_sequence().unwrap() {
        let path = m["mountPath"].as_str().unwrap();
        let host = &volume(pod, m["name"].as_str().unwrap())["hostPath"]["path"];
        let want = match host.as_str() {
            Some(h) if m["readOnly"] == true => format!("-v {h}:{path}:ro"),
            Some(_) => format!(":{path}\""),
            None => format!(":{path}:ro\""),
        };
        assert!(script.contains(&want), "image.sh lacks the mount {want}");
    }
}

/// The README's "without the kustomize CLI" image override, added to a copy
/// of deploy/, moves both workloads to the pushed image.
#[test]
fn the_readme_image_override_renders() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(readme.contains(&format!(
        "scripts/image.sh build        # -> localhost/tapio:{version}"
    )));
    let start = readme
        .find("add the same lines to `deploy/kustomization.yaml`:")
        .expect("the README's override paragraph");
    let block: Vec<&str> = readme[start..]
        .lines()
        .skip(1)
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with("       "))
        .map(|l| &l[7..])
        .collect();
    assert_eq!(block.first(), Some(&"images:"), "{block:?}");
    let pushed = format!("registry.example.com/team/tapio:{version}");
    assert!(readme.contains(&format!(
        "kustomize edit set image localhost/tapio={pushed}"
    )));
    assert!(readme.contains(&format!("podman push localhost/tapio:{version} {pushed}")));

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("deploy");
    let ran = common::output_within(
        Command::new("cp")
            .arg("-r")
            .arg(common::repo_root().join("deploy"))
            .arg(&copy),
        Duration::from_secs(30),
        false,
    );
    assert!(ran.ok(), "{}", ran.stderr);
    let k = copy.join("kustomization.yaml");
    let mut text = std::fs::read_to_string(&k).unwrap();
    text.push_str(&block.join("\n"));
    text.push('\n');
    std::fs::write(&k, text).unwrap();
    let Some(rendered) = kustomize(copy.to_str().unwrap()) else {
        return common::skip(&test_name!(), "kubectl is not installed");
    };
    let docs = parse_all(&rendered, "override");
    let images: Vec<&Value> = docs
        .iter()
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|c| &c["image"])
        })
        .collect();
    assert_eq!(images.len(), 2);
    for i in images {
        assert_eq!(i, pushed.as_str());
    }
}
