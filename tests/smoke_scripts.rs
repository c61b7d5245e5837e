//! Runs the end-to-end smoke scripts against the binary cargo just built,
//! so the README's test command covers them.

use crate::common;

use std::process::Command;

fn run_script(name: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/").to_string() + name;
    let out = Command::new("bash")
        .arg(&script)
        .arg(common::tapio_bin())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    assert!(text.contains("smoke: PASS"), "{name} did not pass:\n{text}");
}

#[test]
fn smoke_agent_controller() {
    require_ebpf!();
    run_script("smoke-agent-controller.sh");
}
