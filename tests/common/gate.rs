//! The one skip policy of the integration tests. A test that needs the
//! kernel (root, BTF) or a tool on PATH says so in its first line with
//! `require_ebpf!()` / `require_ebpf!("tool", ...)` / `require_tools!(...)`;
//! when it cannot run, it prints one line naming itself and the reason and
//! passes — or panics under `TAPIO_REQUIRE_EBPF=1` (CI), where a skip would
//! hide a failure. This module decides only whether a test runs; it never
//! sets anything up.

use std::path::Path;

/// The full name of the test function this expands in, as the harness
/// prints it (`network_kernel::refused_connect…`), without naming it twice
/// by hand: the path of an item declared inside the function, minus the
/// crate name and that item.
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::common::test_path(std::any::type_name_of_val(&here))
    }};
}

/// Returns from the calling test unless it may use the kernel and every
/// named tool is on PATH (see the module doc for what it prints).
macro_rules! require_ebpf {
    ($($tool:expr),* $(,)?) => {
        if !$crate::common::ebpf_and_tools(&test_name!(), &[$($tool),*]) {
            return;
        }
    };
}

/// Returns from the calling test unless every named tool is on PATH; for
/// tests (or the rest of a test) that need a tool but not the kernel.
macro_rules! require_tools {
    ($($tool:expr),+ $(,)?) => {
        if !$crate::common::tools(&test_name!(), &[$($tool),+]) {
            return;
        }
    };
}

/// Turns `type_name_of_val` of a function declared in a test into the
/// test's name: drops the crate, the marker function and the `{{closure}}`
/// segments an async test body adds.
pub fn test_path(type_name: &str) -> String {
    let parts: Vec<&str> = type_name
        .split("::")
        .skip(1)
        .filter(|p| *p != "{{closure}}")
        .collect();
    parts[..parts.len().saturating_sub(1)].join("::")
}

/// True under `TAPIO_REQUIRE_EBPF=1` (CI): nothing may be skipped.
pub fn strict() -> bool {
    std::env::var("TAPIO_REQUIRE_EBPF").as_deref() == Ok("1")
}

/// Says (one line) that `test` does not run and why — or fails it when
/// [`strict`]. The caller returns afterwards.
pub fn skip(test: &str, why: &str) {
    if strict() {
        panic!("{test}: cannot run ({why}) but TAPIO_REQUIRE_EBPF=1");
    }
    eprintln!("skipping {test}: {why}");
}

/// Why this process cannot use the kernel's eBPF, if it cannot.
fn kernel_unavailable() -> Option<&'static str> {
    if !cfg!(target_os = "linux") {
        return Some("not Linux");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (kernel tests need root and BTF)");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel has no BTF (/sys/kernel/btf/vmlinux)");
    }
    None
}

/// Returns true when `test` may use the kernel (root, BTF); otherwise
/// [`skip`]s it and returns false. Prefer `require_ebpf!()`, which names the
/// test itself.
pub fn require_ebpf(test: &str) -> bool {
    match kernel_unavailable() {
        None => true,
        Some(why) => {
            skip(test, why);
            false
        }
    }
}

/// Whether `tool` is an executable file in a PATH directory.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// True when every tool is on PATH; otherwise [`skip`]s `test` naming the
/// missing ones and returns false.
pub fn tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return true;
    }
    skip(
        test,
        &format!(
            "needs {} (scripts/setup.sh --test installs it)",
            missing.join(", ")
        ),
    );
    false
}

/// [`require_ebpf`], then [`tools`].
pub fn ebpf_and_tools(test: &str, needs: &[&str]) -> bool {
    require_ebpf(test) && tools(test, needs)
}

#[test]
fn test_name_is_the_path_the_harness_prints() {
    assert_eq!(
        test_name!(),
        "common::gate::test_name_is_the_path_the_harness_prints"
    );
}

#[tokio::test]
async fn test_name_in_an_async_test_drops_the_closure_segments() {
    let name = async { test_name!() }.await;
    assert_eq!(
        name,
        "common::gate::test_name_in_an_async_test_drops_the_closure_segments"
    );
}

#[test]
fn tools_are_found_on_path_and_missing_ones_are_not() {
    assert!(on_path("sh"));
    assert!(!on_path("tapio-no-such-tool-on-any-path"));
}
