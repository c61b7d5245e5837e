//! The container image, end to end: `scripts/image.sh build` makes
//! `localhost/tapio:<version>` offline, and `scripts/image.sh smoke` runs it
//! the way deploy/'s DaemonSet does and checks, field by field, that the
//! agent inside reports a refused connect made on the host and one made in
//! another container with their host pids (the second with its podman
//! container id). The script does the checking; this test runs it on a
//! machine that can (root, BTF, podman), and under TAPIO_REQUIRE_EBPF=1 it
//! must run.
//!
//! `build` runs `cargo build --release` once (a no-op when target/release
//! is fresh); it takes the release profile's own build lock, not this debug
//! test's.

use crate::common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Runs `scripts/image.sh <sub>` in its own process group, bounded by
/// `limit` (on expiry the whole group gets SIGTERM, which the script's
/// trap turns into its cleanup); returns (exit ok, stdout, stderr).
fn image_sh(sub: &str, limit: Duration) -> (bool, String, String) {
    let root = common::repo_root();
    let ran = common::output_within(
        Command::new(root.join("scripts/image.sh"))
            .arg(sub)
            .current_dir(root)
            .process_group(0),
        limit,
        true,
    );
    (ran.ok(), ran.stdout, ran.stderr)
}

/// The number after `label` on the line starting with `prefix`.
fn figure(out: &str, prefix: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"));
    let rest = &line[line.find(label).expect(label) + label.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?}: {line:?}"))
}

#[test]
fn the_image_reports_host_and_container_faults_from_inside_its_container() {
    require_ebpf!("podman");

    // A cold LTO release build on a busy 2-core machine takes minutes.
    let (ok, out, err) = image_sh("build", Duration::from_secs(45 * 60));
    assert!(ok, "image.sh build failed:\n{out}\n{err}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        err.contains(&format!("built localhost/tapio:{version} (")),
        "{err}"
    );
    // Exactly the loader, libc and libgcc_s, named by ldd.
    let libs = err
        .lines()
        .find(|l| l.contains("shared objects ldd named"))
        .expect("the library line");
    assert!(libs.contains("copied 3 shared objects"), "{libs}");
    for lib in ["/libc.so.6", "/libgcc_s.so.1", "/ld-linux"] {
        assert!(libs.contains(lib), "{lib} missing: {libs}");
    }

    let (ok, out, err) = image_sh("smoke", Duration::from_secs(10 * 60));
    assert!(ok, "image.sh smoke failed:\n{out}\n{err}");
    println!("{out}");
    assert_eq!(out.lines().last(), Some("smoke: ok"), "{out}");
    // The script checked pid, comm, daddr, type and container_id; its
    // summary lines must say both faults were seen.
    let host = out
        .lines()
        .find(|l| l.starts_with("smoke: host: "))
        .expect("host line");
    assert!(host.contains("count 5"), "{host}");
    let container = out
        .lines()
        .find(|l| l.starts_with("smoke: container: "))
        .expect("container line");
    assert!(container.contains("count 5"), "{container}");
    let id = container.rsplit(' ').next().unwrap();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{container}"
    );
    // scratch + one stripped binary + three libraries: small. A base image
    // creeping in would show here.
    let mb = figure(&out, "smoke: image ", "size ");
    assert!(mb > 1.0 && mb < 30.0, "image is {mb} MB");
    assert!(figure(&out, "smoke: agent peak RSS", "container ") > 0.0);
}
