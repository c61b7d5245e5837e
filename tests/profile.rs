//! Evidence Profile validation and compilation: fixture tables with exact
//! error paths, golden compiled configs, knob → kernel coverage, and the
//! `tapio profile` commands run as a binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use tapio::agent::abi::TapioConfig;
use tapio::profile::{self, Issue};
use tapio::wire::config::{CompiledConfig, ExitScope, KNOBS};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn issues_of(rel: &str) -> Vec<Issue> {
    let bytes = std::fs::read(fixture(rel)).unwrap();
    match profile::validate(&bytes) {
        Ok(p) => panic!("{rel} validated: {p:?}"),
        Err(issues) => issues,
    }
}

/// Every invalid fixture with the exact paths of its errors, in order.
const INVALID: &[(&str, &[&str])] = &[
    (
        "unknown_field",
        &[
            "metadata.labels",
            "extra",
            "spec.observers.network.refused_windw",
            "spec.observers.storage.slow_io",
        ],
    ),
    ("unknown_observer", &["spec.observers.gpu"]),
    (
        "out_of_range",
        &[
            "spec.observers.network.refused_min_count",
            "spec.observers.network.rtt_spike_multiplier",
            "spec.observers.network.rtt_min_baseline_samples",
            "spec.observers.container.ignore_exit_codes[0]",
            "spec.observers.container.ignore_exit_codes[2]",
            "spec.observers.storage.slow_io_threshold",
            "spec.observers.node.cpu_stall_ratio",
            "spec.observers.node.psi_cpu_ratio",
            "spec.observers.node.sample_period",
        ],
    ),
    (
        "wrong_type",
        &[
            "spec.observers.network.enabled",
            "spec.observers.network.refused_min_count",
            "spec.observers.network.refused_window",
            "spec.observers.network.rtt_spike_multiplier",
            "spec.observers.container.exit_scope",
            "spec.observers.container.ignore_exit_codes",
            "spec.observers.node",
        ],
    ),
    (
        "bad_duration",
        &[
            "spec.observers.network.refused_window",
            "spec.observers.network.retransmit_window",
            "spec.observers.network.rtt_spike_abs",
            "spec.observers.storage.slow_io_threshold",
            "spec.observers.storage.io_latency_critical",
            "spec.observers.node.sample_period",
        ],
    ),
    (
        "duplicate_key",
        &[
            "kind",
            "spec.observers.network",
            "spec.observers.network.refused_window",
        ],
    ),
    ("empty", &["document"]),
    ("non_utf8", &["document"]),
    ("syntax_error", &["document"]),
    ("two_documents", &["document"]),
    ("not_a_mapping", &["document"]),
    (
        "missing_required",
        &["kind", "spec.observers", "apiVersion", "metadata.name"],
    ),
    ("bad_identity", &["apiVersion", "metadata.name", "spec"]),
    (
        "critical_below_slow",
        &["spec.observers.storage.io_latency_critical"],
    ),
    (
        "slow_above_default_critical",
        &["spec.observers.storage.slow_io_threshold"],
    ),
    (
        "exit_codes",
        &[
            "spec.observers.container.exit_scope",
            "spec.observers.container.ignore_exit_codes",
            "spec.observers.container.ignore_exit_codes[16]",
            "spec.observers.container.ignore_exit_codes[17]",
        ],
    ),
    (
        "tagged",
        &[
            "spec.observers.network",
            "spec.observers.network.refused_window",
        ],
    ),
];

#[test]
fn invalid_fixtures_report_every_error_with_its_path() {
    for (name, paths) in INVALID {
        let issues = issues_of(&format!("tests/fixtures/profiles/invalid/{name}.yaml"));
        let got: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(&got, paths, "{name}: {issues:#?}");
    }
}

#[test]
fn every_invalid_fixture_is_in_the_table() {
    let dir = fixture("tests/fixtures/profiles/invalid");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = INVALID.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn knob_errors_name_the_allowed_range() {
    let issues = issues_of("tests/fixtures/profiles/invalid/out_of_range.yaml");
    let msg = |p: &str| {
        issues
            .iter()
            .find(|i| i.path == p)
            .map(|i| i.to_string())
            .unwrap()
    };
    assert_eq!(
        msg("spec.observers.storage.slow_io_threshold"),
        "spec.observers.storage.slow_io_threshold: must be between 1ms and 60s (got 90s)"
    );
    assert_eq!(
        msg("spec.observers.network.rtt_spike_multiplier"),
        "spec.observers.network.rtt_spike_multiplier: must be between 1.1 and 100 (got 1)"
    );
    assert_eq!(
        msg("spec.observers.container.ignore_exit_codes[2]"),
        "spec.observers.container.ignore_exit_codes[2]: must be between 1 and 255 (got 256)"
    );
    // Every knob error (wrong type, bad duration, range) names the range.
    for name in ["wrong_type", "bad_duration", "out_of_range"] {
        for issue in issues_of(&format!("tests/fixtures/profiles/invalid/{name}.yaml")) {
            let m = &issue.message;
            assert!(
                m.contains("between")
                    || m.contains("true or false")
                    || m.contains("\"init\" or \"all\"")
                    || m.contains("mapping of"),
                "{name}: {issue}"
            );
        }
    }
}

#[test]
fn ten_megabyte_document_is_refused_without_parsing() {
    let mut doc = b"apiVersion: tapio.io/v1\nkind: EvidenceProfile\n# ".to_vec();
    doc.resize(10 * 1024 * 1024, b'x');
    let issues = profile::validate(&doc).unwrap_err();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].path, "document");
    assert!(issues[0].message.contains("1048576"), "{}", issues[0]);

    // The file reader stops after the limit, so a huge file is not loaded whole.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    std::fs::write(&path, &doc).unwrap();
    let read = profile::read_bounded(&path).unwrap();
    assert_eq!(read.len(), profile::MAX_PROFILE_BYTES + 1);
    let out = Command::new(env!("CARGO_BIN_EXE_tapio"))
        .args(["profile", "validate"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("document: is larger than"));
}

#[test]
fn default_profile_compiles_to_the_builtin_config() {
    let cfg = profile::load(&fixture("examples/profiles/default.yaml")).unwrap();
    assert_eq!(cfg, CompiledConfig::default());
    assert_eq!(
        cfg.hash().0,
        "sha256:0194b755544257dae4c936b49cbaeaab77ffc74e093720ee66ded249a639dc91"
    );
}

#[test]
fn strict_profile_matches_its_golden_output() {
    let cfg = profile::load(&fixture("examples/profiles/strict.yaml")).unwrap();
    let golden =
        std::fs::read_to_string(fixture("tests/fixtures/profiles/strict.compiled.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&golden).unwrap();
    assert_eq!(doc["config_hash"], cfg.hash().0.as_str());
    let from_golden: CompiledConfig = serde_json::from_value(doc["config"].clone()).unwrap();
    assert_eq!(from_golden, cfg);
    assert_eq!(cfg.profile, "strict");
    assert_eq!(cfg.network.rtt_spike_multiplier_permille, 2500);
    assert_eq!(cfg.container.exit_scope, ExitScope::All);
    assert_eq!(cfg.container.ignore_exit_codes, vec![130, 143]);
    assert_eq!(cfg.storage.slow_io_threshold_ns, 50_000_000);

    // The command prints exactly the golden text.
    let out = Command::new(env!("CARGO_BIN_EXE_tapio"))
        .args(["profile", "compile"])
        .arg(fixture("examples/profiles/strict.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), golden);
}

#[test]
fn valid_fixtures_compile_with_defaults_for_what_is_left_out() {
    let load = |n: &str| {
        profile::load(&fixture(&format!("tests/fixtures/profiles/valid/{n}.yaml"))).unwrap()
    };
    let d = CompiledConfig::default();

    let minimal = load("minimal");
    assert_eq!(
        minimal,
        CompiledConfig {
            profile: "fixture".into(),
            ..d.clone()
        }
    );

    let partial = load("partial");
    assert!(!partial.storage.enabled);
    assert_eq!(
        partial.storage.slow_io_threshold_ns,
        d.storage.slow_io_threshold_ns
    );
    assert_eq!(partial.network, d.network);
    assert_eq!(partial.container.ignore_exit_codes, vec![1, 130, 143]);

    let units = load("units");
    assert_eq!(units.network.refused_window_ms, 2500);
    assert_eq!(units.network.retransmit_window_ms, 60_000);
    assert_eq!(units.network.rtt_spike_abs_us, 750);
    assert_eq!(units.network.rtt_spike_multiplier_permille, 1125);
    assert_eq!(units.storage.slow_io_threshold_ns, 1_500_000);
    assert_eq!(units.storage.io_latency_critical_ns, 500_000_000);
    assert_eq!(units.node.sample_period_ms, 250);
    assert_eq!(units.node.memory_pressure_mpki_milli, 500);
    assert_eq!(units.node.cpu_stall_permille, 1000);
}

/// Each knob set to a non-default value, per observer.
const NON_DEFAULT: &[(&str, &str, &str)] = &[
    ("network", "enabled", "false"),
    ("network", "refused_min_count", "2"),
    ("network", "refused_window", "2s"),
    ("network", "retransmit_min_count", "7"),
    ("network", "retransmit_window", "3s"),
    ("network", "rtt_spike_multiplier", "4.5"),
    ("network", "rtt_min_baseline_samples", "16"),
    ("network", "rtt_spike_abs", "20ms"),
    ("container", "enabled", "false"),
    ("container", "exit_scope", "all"),
    ("container", "ignore_exit_codes", "[1]"),
    ("storage", "enabled", "false"),
    ("storage", "slow_io_threshold", "200ms"),
    ("storage", "io_latency_critical", "2s"),
    ("node", "enabled", "false"),
    ("node", "sample_period", "2s"),
    ("node", "cpu_stall_ratio", "0.7"),
    ("node", "ipc_drop_ratio", "0.3"),
    ("node", "memory_pressure_mpki", "30"),
    ("node", "psi_memory_ratio", "0.2"),
    ("node", "psi_cpu_ratio", "0.6"),
    ("node", "min_baseline_samples", "4"),
];

#[test]
fn every_knob_reaches_the_kernel_struct() {
    // The list covers every row of the knob table…
    let mut listed: Vec<(&str, &str)> = NON_DEFAULT.iter().map(|(o, k, _)| (*o, *k)).collect();
    let mut known: Vec<(&str, &str)> = KNOBS
        .iter()
        .map(|k| (k.observer.as_str(), k.name))
        .collect();
    listed.sort();
    known.sort();
    assert_eq!(listed, known);

    // …and each one BPF reads changes the bytes written to the kernel
    // carriers; the others (judged in user space) leave them as they are.
    let base = TapioConfig::from_compiled(&CompiledConfig::default(), 1).to_bytes();
    for (obs, knob, value) in NON_DEFAULT {
        let doc = format!(
            "apiVersion: tapio.io/v1\nkind: EvidenceProfile\nmetadata:\n  name: default\n\
             spec:\n  observers:\n    {obs}:\n      {knob}: {value}\n"
        );
        let cfg = profile::compile_bytes(doc.as_bytes())
            .unwrap_or_else(|e| panic!("{obs}.{knob}: {e:?}"));
        let bytes = TapioConfig::from_compiled(&cfg, 1).to_bytes();
        let row = KNOBS
            .iter()
            .find(|k| k.observer.as_str() == *obs && k.name == *knob)
            .unwrap();
        if row.abi.is_some() {
            assert_ne!(bytes, base, "{obs}.{knob} does not reach tapio_config");
        } else {
            assert_eq!(
                bytes, base,
                "{obs}.{knob} is user space's, yet changes tapio_config"
            );
        }
    }
}

/// Whether `text` holds `word`, not followed by more of an identifier,
/// right after one of `before` (`.` / `->` for a member access).
fn accesses(text: &str, before: &[&str], word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    before.iter().any(|b| {
        let needle = format!("{b}{word}");
        text.match_indices(&needle)
            .any(|(i, _)| !text[i + needle.len()..].starts_with(ident))
    })
}

/// The table's `abi` column tells the truth: a row names a member of
/// `struct tapio_config` exactly when a BPF source reads that member
/// (`->member` or `.member`; the member names are unique to the struct),
/// and the struct holds nothing else but its header (version, generation)
/// and the ignore list's count.
#[test]
fn knob_table_abi_column_matches_the_sources() {
    let header = std::fs::read_to_string(fixture("bpf/include/tapio_abi.h")).unwrap();
    let members = header
        .split("struct tapio_config {")
        .nth(1)
        .and_then(|rest| rest.split("};").next())
        .expect("struct tapio_config in tapio_abi.h");
    let mut sources = String::new();
    // The shared headers, and each observer's source in its own folder.
    let mut dirs = vec![fixture("bpf/include")];
    for entry in std::fs::read_dir(fixture("src/agent/observers")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".bpf.c") || name.ends_with(".bpf.h") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    assert!(sources.contains("SEC("), "BPF sources not found");
    let mut named = vec!["abi_version", "generation", "ctr_ignore_exit_codes_count"];
    for k in &KNOBS {
        let row = format!("{}.{}", k.observer.as_str(), k.name);
        let Some(member) = k.abi else {
            continue;
        };
        named.push(member);
        assert!(
            accesses(members, &[" "], member),
            "{row}: `{member}` is not a member of struct tapio_config"
        );
        if member == "flags" {
            // `flags` is a common member name, so a text search proves
            // nothing; every program is gated on its observer's bit (the
            // config lookup in tapio_common.bpf.h), so `enabled` is read.
            continue;
        }
        assert!(
            accesses(&sources, &[".", "->"], member),
            "{row}: names `{member}` but no BPF source reads it"
        );
    }
    // Every member the struct declares is one of those.
    for line in members.lines() {
        let decl = line.split("/*").next().unwrap().trim();
        let Some(decl) = decl.strip_suffix(';') else {
            continue;
        };
        let name = decl.rsplit(' ').next().unwrap().split('[').next().unwrap();
        assert!(
            named.contains(&name),
            "struct tapio_config holds `{name}`, which no knob BPF reads names"
        );
    }
}

#[test]
fn validate_command_output_and_exit_codes() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tapio"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let ok = run(&["profile", "validate", "examples/profiles/default.yaml"]);
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(ok.stdout).unwrap(),
        "examples/profiles/default.yaml: OK (profile \"default\", config_hash \
         sha256:0194b755544257dae4c936b49cbaeaab77ffc74e093720ee66ded249a639dc91)\n"
    );

    let f = "tests/fixtures/profiles/invalid/critical_below_slow.yaml";
    for cmd in ["validate", "compile"] {
        let bad = run(&["profile", cmd, f]);
        assert_eq!(bad.status.code(), Some(1), "{cmd}");
        assert!(bad.stdout.is_empty(), "{cmd}");
        assert_eq!(
            String::from_utf8(bad.stderr).unwrap(),
            format!(
                "{f}: spec.observers.storage.io_latency_critical: must be at least \
                 slow_io_threshold (500ms) and at most 600s (got 200ms)\n\
                 tapio: invalid profile {f}: 1 error\n"
            )
        );
    }

    let missing = run(&["profile", "validate", "no/such/profile.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
}
