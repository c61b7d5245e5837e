//! The agent binary's start-up contract: bad input exits 1 with the reason,
//! a missing privilege or kernel feature exits 2 with one clear line, and
//! `--ebpf-dir` really loads objects from disk.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(tapio_bin())
        .arg("agent")
        .args(args)
        .output()
        .expect("run tapio agent")
}

#[test]
fn unknown_toml_key_is_rejected_by_name_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "sinks = [\"stdout\"]\nsink_typo = 1\n").unwrap();
    let out = agent(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sink_typo"), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
}

#[test]
fn explicit_missing_config_file_is_an_error_and_heartbeat_minimum_holds() {
    let out = agent(&["--config", "/nonexistent/tapio.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tapio.toml"));
    let out = agent(&["--heartbeat-interval", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 5 seconds"));
}

#[test]
fn without_privileges_the_agent_says_why_and_exits_2() {
    require_ebpf!();
    // Drop to nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(tapio_bin())
        .args(["agent", "--config", "/dev/null"])
        .output()
        .expect("run setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one clear line: {err}");
    assert!(lines[0].contains("needs root or CAP_BPF"), "{err}");
    assert!(lines[0].contains("CAP_BPF"), "{err}");
}

#[test]
fn ebpf_dir_loads_objects_from_disk_and_missing_objects_fail_clearly() {
    require_ebpf!();
    // An empty directory: no observer can load, exit 2 naming the file.
    let empty = tempfile::tempdir().unwrap();
    let out = agent(&[
        "--config",
        "/dev/null",
        "--ebpf-dir",
        empty.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("network.bpf.o"), "{err}");
    assert!(err.contains("no observer could be loaded"), "{err}");

    // The same objects, from disk, work like the embedded ones.
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in tapio::agent::linux::loader::embedded_objects() {
        std::fs::write(dir.path().join(format!("{name}.bpf.o")), bytes).unwrap();
    }
    let agent = Agent::start("", &["--ebpf-dir", dir.path().to_str().unwrap()]);
    let p = closed_port("127.0.0.1");
    assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    agent.wait_for(
        "refusal via --ebpf-dir objects",
        Duration::from_secs(10),
        |v| is_type(v, "kernel.network.connection_refused") && dport(v) == u64::from(p),
    );
}

#[test]
fn file_sink_writes_one_atomic_file_per_occurrence_and_shutdown_flushes() {
    require_ebpf!();
    let mut agent = Agent::start("", &["--sink", "file"]);
    let ports: Vec<u16> = (0..3).map(|_| closed_port("127.0.0.1")).collect();
    for p in &ports {
        assert!(std::net::TcpStream::connect(("127.0.0.1", *p)).is_err());
    }
    // Stop right away: the occurrences must still be on disk afterwards.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.stop(), Some(0));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&agent.data_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The agent's status file lives here too, by design (a dot-file the
        // store does not count as an occurrence).
        if name == ".agent-status.json" {
            continue;
        }
        assert!(!name.starts_with('.'), "temp file left behind: {name}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(name, format!("{}.json", v["id"].as_str().unwrap()));
        found.push(dport(&v) as u16);
    }
    for p in &ports {
        assert_eq!(
            found.iter().filter(|f| *f == p).count(),
            1,
            "port {p} in {found:?}"
        );
    }
}

#[test]
fn without_btf_the_agent_says_why_and_exits_2() {
    require_ebpf!();
    // Hide the kernel's BTF in a private mount namespace (gone with it).
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs none /sys/kernel/btf && exec {} agent --config /dev/null",
        tapio_bin().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .expect("run unshare (util-linux)");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("exposes no BTF"), "{err}");
    assert!(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "host BTF untouched"
    );
}

#[test]
fn a_controller_mode_agent_is_inert_until_configured_and_counts_it() {
    require_ebpf!();
    // A controller address where nothing listens: no config ever arrives.
    let dead = closed_port("127.0.0.1");
    let mport = closed_port("127.0.0.1");
    let agent = Agent::start_until(
        &format!("[metrics]\nenabled = true\naddr = \"127.0.0.1:{mport}\"\n"),
        &[
            "--controller-endpoint",
            &format!("http://127.0.0.1:{dead}"),
            "--heartbeat-interval",
            "5",
        ],
        "agent running",
    );
    let p = closed_port("127.0.0.1");
    assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(agent.matching(|_| true).is_empty(), "inert agent emitted");
    let text = reqwest::blocking::get(format!("http://127.0.0.1:{mport}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        counter(
            &text,
            "tapio_config_errors_total{observer=\"network\",reason=\"unconfigured\"}"
        ) > 0,
        "{text}"
    );
    assert!(
        counter(
            &text,
            "tapio_controller_send_failures_total{kind=\"hello\"}"
        ) >= 1,
        "{text}"
    );
    assert!(
        counter(&text, "tapio_config_fetch_total{result=\"error\"}") >= 1,
        "{text}"
    );
}
