//! Bad input to `tapio agent`, through the built binary (issue 14 items 13
//! and 14 and the unwritable data dir): a device as the config, token or
//! BPF object file, an invalid node name, a data dir that cannot be
//! written, a garbage BPF object. Each fails at once, exit 1 for bad input
//! (checked before anything touches the kernel, so those tests need no
//! privileges), with the path and the cause stated once.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs `tapio agent <args>` with a bounded wait; panics if it does not end.
fn agent(args: &[&str]) -> Ran {
    output_within(
        Command::new(tapio_bin()).arg("agent").args(args),
        Duration::from_secs(60),
        false,
    )
}

#[test]
fn a_device_as_config_or_token_file_fails_fast_naming_it() {
    let out = agent(&["--config", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr.clone().trim(),
        "tapio: failed to read config /dev/zero: is not a regular file (a character device)"
    );
    let out = agent(&[
        "--config",
        "/dev/null",
        "--controller-endpoint",
        "http://127.0.0.1:9",
        "--controller-token-file",
        "/dev/zero",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr.clone().trim(),
        "tapio: failed to read token file /dev/zero: is not a regular file (a character device)"
    );
}

#[test]
fn an_invalid_node_name_is_refused_at_start() {
    let out = agent(&["--config", "/dev/null", "--node-name", "Node_1\nforged"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = out.stderr.clone();
    assert_eq!(err.lines().count(), 1, "one line, the name escaped: {err}");
    assert!(
        err.starts_with("tapio: invalid node name \"Node_1\\nforged\""),
        "{err}"
    );
}

#[test]
fn a_data_dir_that_exists_but_cannot_be_written_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("occ");
    std::fs::create_dir(&data).unwrap();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let out = if unsafe { libc::geteuid() } == 0 {
        // Root ignores mode bits: make the directory a read-only mount, in a
        // private mount namespace that disappears with the process.
        let script = format!(
            "mount --make-rprivate / && mount -t tmpfs -o ro,size=64k none {} && exec {} agent --config /dev/null --sink file --data-dir {}",
            data.display(),
            tapio_bin().display(),
            data.display()
        );
        output_within(
            Command::new("unshare").args(["--mount", "sh", "-c", &script]),
            Duration::from_secs(60),
            false,
        )
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
        agent(&[
            "--config",
            "/dev/null",
            "--sink",
            "file",
            "--data-dir",
            data.to_str().unwrap(),
        ])
    };
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = out.stderr.clone();
    let want = format!("tapio: data dir {} is not writable: ", data.display());
    assert!(err.starts_with(&want), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // The cause once, not "Read-only file system … Read-only file system".
    let cause = err.trim().strip_prefix(&want).unwrap();
    assert_eq!(err.matches(cause).count(), 1, "{err}");
}

#[test]
fn bpf_objects_that_are_devices_or_garbage_are_named_and_explained() {
    require_ebpf!();
    let dir = tempfile::tempdir().unwrap();
    let ebpf = dir.path();
    std::os::unix::fs::symlink("/dev/zero", ebpf.join("network.bpf.o")).unwrap();
    // Not an ELF file at all, and an ELF header with nothing behind it.
    std::fs::write(ebpf.join("container.bpf.o"), vec![0x5a; 4096]).unwrap();
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(64, 0);
    std::fs::write(ebpf.join("storage.bpf.o"), elf).unwrap();
    let out = agent(&[
        "--config",
        "/dev/null",
        "--ebpf-dir",
        ebpf.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = out.stderr.clone();
    assert!(
        err.contains(&format!(
            "failed to read BPF object {}: is not a regular file (a character device)",
            ebpf.join("network.bpf.o").display()
        )),
        "{err}"
    );
    assert!(
        err.contains("failed to open the container BPF object: "),
        "{err}"
    );
    assert!(
        err.contains("failed to open the storage BPF object: "),
        "{err}"
    );
    assert!(
        !err.contains("Unknown error"),
        "libbpf codes in words: {err}"
    );
    assert!(err.contains("no observer could be loaded"), "{err}");
}
