//! The Kubernetes manifests in deploy/ stay true to the binary: they parse,
//! every flag they pass exists on the subcommand they run, and the profile
//! they ship validates.

mod common;

use std::process::Command;

fn documents(path: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn containers(doc: &serde_yaml::Value) -> Vec<serde_yaml::Value> {
    doc["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .cloned()
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

#[test]
fn every_manifest_flag_exists_and_the_shipped_profile_validates() {
    let mut checked = 0;
    for file in ["deploy/agent-daemonset.yaml", "deploy/controller.yaml"] {
        for doc in documents(file) {
            for c in containers(&doc) {
                let args: Vec<String> = c["args"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
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
            if doc["kind"] == "ConfigMap" {
                let profile = doc["data"]["profile.yaml"].as_str().unwrap();
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("profile.yaml");
                std::fs::write(&path, profile).unwrap();
                let out = Command::new(common::tapio_bin())
                    .args(["profile", "validate"])
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{file}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
    assert!(checked >= 10, "only {checked} flags checked");
}
