//! Bytes → [`EvidenceProfile`], collecting every problem with its path.

use std::borrow::Cow;
use std::fmt;

use super::schema::*;
use super::tree::{self, Node};
use crate::wire::config::{ExitScope, MAX_IGNORE_EXIT_CODES};

/// One validation problem: where and what. Displays as `path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted YAML path (`spec.observers.network.refused_window`,
    /// `…ignore_exit_codes[2]`), or `document` for the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Path of issues about the document as a whole.
pub const DOCUMENT: &str = "document";

struct Issues(Vec<Issue>);

impl Issues {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Issue {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

/// Validates a profile document. On success every knob the document sets
/// is typed and in range; on failure every problem found is returned, in
/// document order.
pub fn validate(bytes: &[u8]) -> Result<EvidenceProfile, Vec<Issue>> {
    let mut issues = Issues(Vec::new());
    if bytes.len() > MAX_PROFILE_BYTES {
        issues.push(
            DOCUMENT,
            format!("is larger than {MAX_PROFILE_BYTES} bytes (1 MiB), the most a profile may be"),
        );
        return Err(issues.0);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            issues.push(
                DOCUMENT,
                format!(
                    "is not valid UTF-8 (first bad byte at offset {})",
                    e.valid_up_to()
                ),
            );
            return Err(issues.0);
        }
    };
    let root = match tree::parse(text) {
        Ok(n) => n,
        Err(e) => {
            issues.push(DOCUMENT, format!("is not valid YAML: {e}"));
            return Err(issues.0);
        }
    };
    let profile = walk_root(&root, &mut issues);
    if issues.0.is_empty() {
        Ok(profile)
    } else {
        Err(issues.0)
    }
}

fn join(parent: &str, key: &str) -> String {
    let key = shown_key(key);
    if parent.is_empty() {
        key.into_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A mapping key as a path segment. Field-name keys stay as they are;
/// anything else (empty, dots, spaces, control characters) is quoted and
/// escaped, so a path always names its key unambiguously and an issue is
/// always one line (`tapio profile validate` and the controller's log print
/// them; a key must not be able to forge a line there).
fn shown_key(key: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if !key.is_empty() && key.bytes().all(plain) {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{key:?}"))
    }
}

/// The string-keyed entries of a mapping, with duplicate and non-string
/// keys reported. Duplicates are reported once per repeat and skipped, so
/// their values are not judged twice.
fn entries<'a>(
    map: &'a [(Node, Node)],
    path: &str,
    issues: &mut Issues,
) -> Vec<(&'a str, &'a Node)> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (k, v) in map {
        let Node::Str(key) = k else {
            let shown = match k {
                Node::Int(i) => i.to_string(),
                Node::Bool(b) => b.to_string(),
                other => other.kind().to_owned(),
            };
            let at = if path.is_empty() { DOCUMENT } else { path };
            issues.push(
                at,
                format!("key {shown} is not a string; keys must be field names"),
            );
            continue;
        };
        if seen.contains(&key.as_str()) {
            issues.push(
                &join(path, key),
                "duplicate key; each field may appear once",
            );
            continue;
        }
        seen.push(key);
        out.push((key.as_str(), v));
    }
    out
}

fn unknown(path: &str, what: &str, allowed: &[&str], issues: &mut Issues) {
    issues.push(
        path,
        format!("unknown {what}; allowed: {}", allowed.join(", ")),
    );
}

fn walk_root(root: &Node, issues: &mut Issues) -> EvidenceProfile {
    let mut profile = EvidenceProfile::default();
    let map = match root {
        Node::Map(m) => m,
        Node::Null => {
            issues.push(
                DOCUMENT,
                "is empty; expected an EvidenceProfile with apiVersion, kind, metadata and spec",
            );
            return profile;
        }
        other => {
            issues.push(
                DOCUMENT,
                format!(
                    "must be a mapping with apiVersion, kind, metadata and spec (got {})",
                    other.kind()
                ),
            );
            return profile;
        }
    };
    let (mut api, mut kind, mut meta, mut spec) = (false, false, false, false);
    for (key, value) in entries(map, "", issues) {
        match key {
            "apiVersion" => {
                api = true;
                expect_literal(value, key, API_VERSION, issues);
            }
            "kind" => {
                kind = true;
                expect_literal(value, key, KIND, issues);
            }
            "metadata" => {
                meta = true;
                profile.name = walk_metadata(value, issues).unwrap_or_default();
            }
            "spec" => {
                spec = true;
                walk_spec(value, &mut profile, issues);
            }
            _ => unknown(
                &join("", key),
                "field",
                &["apiVersion", "kind", "metadata", "spec"],
                issues,
            ),
        }
    }
    if !api {
        issues.push(
            "apiVersion",
            format!("is required; must be \"{API_VERSION}\""),
        );
    }
    if !kind {
        issues.push("kind", format!("is required; must be \"{KIND}\""));
    }
    if !meta {
        issues.push(
            "metadata.name",
            "is required; must be a DNS label (1-63 of a-z, 0-9, '-')",
        );
    }
    if !spec {
        issues.push("spec", "is required; must be a mapping with observers");
    }
    profile
}

fn expect_literal(value: &Node, path: &str, want: &str, issues: &mut Issues) {
    match value {
        Node::Str(s) if s == want => {}
        Node::Str(s) => issues.push(
            path,
            format!("unsupported value \"{}\"; must be \"{want}\"", shorten(s)),
        ),
        other => issues.push(
            path,
            format!("must be the string \"{want}\" (got {})", other.kind()),
        ),
    }
}

fn walk_metadata(value: &Node, issues: &mut Issues) -> Option<String> {
    const RULE: &str =
        "must be a DNS label (1-63 of a-z, 0-9, '-', starting and ending with a letter or digit)";
    let Node::Map(map) = value else {
        issues.push(
            "metadata",
            format!("must be a mapping with name (got {})", value.kind()),
        );
        return None;
    };
    let mut name = None;
    let mut seen = false;
    for (key, v) in entries(map, "metadata", issues) {
        match key {
            "name" => {
                seen = true;
                match v {
                    Node::Str(s) if is_dns_label(s) => name = Some(s.clone()),
                    Node::Str(s) => {
                        issues.push("metadata.name", format!("{RULE} (got \"{}\")", shorten(s)))
                    }
                    other => issues.push("metadata.name", format!("{RULE} (got {})", other.kind())),
                }
            }
            _ => unknown(&join("metadata", key), "field", &["name"], issues),
        }
    }
    if !seen {
        issues.push("metadata.name", format!("is required; {RULE}"));
    }
    name
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b.iter().all(|c| ok(c) || *c == b'-')
        && ok(&b[0])
        && ok(&b[b.len() - 1])
}

/// Quotes at most 40 characters of user text back in a message, control
/// characters escaped so the message stays on one line.
fn shorten(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == 40 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn walk_spec(value: &Node, profile: &mut EvidenceProfile, issues: &mut Issues) {
    let map = match value {
        Node::Map(m) => m,
        other => {
            issues.push(
                "spec",
                format!("must be a mapping with observers (got {})", other.kind()),
            );
            return;
        }
    };
    for (key, v) in entries(map, "spec", issues) {
        match key {
            "observers" => walk_observers(v, profile, issues),
            _ => unknown(&join("spec", key), "field", &["observers"], issues),
        }
    }
}

fn walk_observers(value: &Node, profile: &mut EvidenceProfile, issues: &mut Issues) {
    const PATH: &str = "spec.observers";
    let map = match value {
        Node::Map(m) => m,
        other => {
            issues.push(
                PATH,
                format!(
                    "must be a mapping of {} (got {})",
                    OBSERVERS.join(", "),
                    other.kind()
                ),
            );
            return;
        }
    };
    for (key, v) in entries(map, PATH, issues) {
        let path = join(PATH, key);
        let knobs = match key {
            "network" => NETWORK_KNOBS,
            "container" => CONTAINER_KNOBS,
            "storage" => STORAGE_KNOBS,
            "node" => NODE_KNOBS,
            _ => {
                unknown(&path, "observer", OBSERVERS, issues);
                continue;
            }
        };
        let fields = match v {
            Node::Map(m) => entries(m, &path, issues),
            // `network:` with nothing under it means "all defaults".
            Node::Null => Vec::new(),
            other => {
                issues.push(
                    &path,
                    format!(
                        "must be a mapping of {} (got {})",
                        knobs.join(", "),
                        other.kind()
                    ),
                );
                continue;
            }
        };
        let mut ctx = Knobs {
            path: &path,
            allowed: knobs,
            issues: &mut *issues,
        };
        match key {
            "network" => profile.network = ctx.network(&fields),
            "container" => profile.container = ctx.container(&fields),
            "storage" => profile.storage = ctx.storage(&fields),
            _ => profile.node = ctx.node(&fields),
        }
    }
}

/// Judges the knobs of one observer section.
struct Knobs<'a> {
    path: &'a str,
    allowed: &'static [&'static str],
    issues: &'a mut Issues,
}

impl Knobs<'_> {
    fn at(&self, key: &str) -> String {
        join(self.path, key)
    }

    fn unknown(&mut self, key: &str) {
        let path = self.at(key);
        unknown(&path, "field", self.allowed, self.issues);
    }

    fn network(&mut self, fields: &[(&str, &Node)]) -> NetworkSpec {
        let mut s = NetworkSpec::default();
        for &(key, v) in fields {
            match key {
                "enabled" => s.enabled = self.boolean(key, v),
                "refused_min_count" => s.refused_min_count = self.count(key, v, REFUSED_MIN_COUNT),
                "refused_window" => s.refused_window_ns = self.duration(key, v, REFUSED_WINDOW),
                "retransmit_min_count" => {
                    s.retransmit_min_count = self.count(key, v, RETRANSMIT_MIN_COUNT)
                }
                "retransmit_window" => {
                    s.retransmit_window_ns = self.duration(key, v, RETRANSMIT_WINDOW)
                }
                "rtt_spike_multiplier" => {
                    s.rtt_spike_multiplier_milli =
                        self.decimal(key, v, RTT_SPIKE_MULTIPLIER, "number")
                }
                "rtt_min_baseline_samples" => {
                    s.rtt_min_baseline_samples = self.count(key, v, RTT_MIN_BASELINE_SAMPLES)
                }
                "rtt_spike_abs" => s.rtt_spike_abs_ns = self.duration(key, v, RTT_SPIKE_ABS),
                _ => self.unknown(key),
            }
        }
        s
    }

    fn container(&mut self, fields: &[(&str, &Node)]) -> ContainerSpec {
        let mut s = ContainerSpec::default();
        for &(key, v) in fields {
            match key {
                "enabled" => s.enabled = self.boolean(key, v),
                "exit_scope" => s.exit_scope = self.exit_scope(key, v),
                "ignore_exit_codes" => s.ignore_exit_codes = self.exit_codes(key, v),
                _ => self.unknown(key),
            }
        }
        s
    }

    fn storage(&mut self, fields: &[(&str, &Node)]) -> StorageSpec {
        let mut s = StorageSpec::default();
        for &(key, v) in fields {
            match key {
                "enabled" => s.enabled = self.boolean(key, v),
                "slow_io_threshold" => {
                    s.slow_io_threshold_ns = self.duration(key, v, SLOW_IO_THRESHOLD)
                }
                "io_latency_critical" => {
                    s.io_latency_critical_ns = self.duration(key, v, IO_LATENCY_CRITICAL)
                }
                _ => self.unknown(key),
            }
        }
        // Critical must not be below slow, judged on the effective values
        // (a knob left out takes its default).
        let defaults = crate::wire::CompiledConfig::default().storage;
        let slow = s
            .slow_io_threshold_ns
            .unwrap_or(defaults.slow_io_threshold_ns);
        let critical = s
            .io_latency_critical_ns
            .unwrap_or(defaults.io_latency_critical_ns);
        let both_valid = fields.iter().all(|(k, _)| match *k {
            "slow_io_threshold" => s.slow_io_threshold_ns.is_some(),
            "io_latency_critical" => s.io_latency_critical_ns.is_some(),
            _ => true,
        });
        if both_valid && critical < slow {
            if s.io_latency_critical_ns.is_some() {
                let path = self.at("io_latency_critical");
                self.issues.push(
                    &path,
                    format!(
                        "must be at least slow_io_threshold ({}) and at most {} (got {})",
                        DisplayDuration(slow),
                        DisplayDuration(IO_LATENCY_CRITICAL.max_ns),
                        DisplayDuration(critical)
                    ),
                );
            } else {
                let path = self.at("slow_io_threshold");
                self.issues.push(
                    &path,
                    format!(
                        "must be between {} and io_latency_critical ({}, the default) (got {})",
                        DisplayDuration(SLOW_IO_THRESHOLD.min_ns),
                        DisplayDuration(critical),
                        DisplayDuration(slow)
                    ),
                );
            }
        }
        s
    }

    fn node(&mut self, fields: &[(&str, &Node)]) -> NodeSpec {
        let mut s = NodeSpec::default();
        for &(key, v) in fields {
            match key {
                "enabled" => s.enabled = self.boolean(key, v),
                "sample_period" => s.sample_period_ns = self.duration(key, v, SAMPLE_PERIOD),
                "cpu_stall_ratio" => s.cpu_stall_ratio_milli = self.decimal(key, v, RATIO, "ratio"),
                "ipc_drop_ratio" => s.ipc_drop_ratio_milli = self.decimal(key, v, RATIO, "ratio"),
                "memory_pressure_mpki" => {
                    s.memory_pressure_mpki_milli =
                        self.decimal(key, v, MEMORY_PRESSURE_MPKI, "number")
                }
                "psi_memory_ratio" => {
                    s.psi_memory_ratio_milli = self.decimal(key, v, RATIO, "ratio")
                }
                "psi_cpu_ratio" => s.psi_cpu_ratio_milli = self.decimal(key, v, RATIO, "ratio"),
                "min_baseline_samples" => {
                    s.min_baseline_samples = self.count(key, v, MIN_BASELINE_SAMPLES)
                }
                _ => self.unknown(key),
            }
        }
        s
    }

    fn fail<T>(&mut self, key: &str, message: String) -> Option<T> {
        let path = self.at(key);
        self.issues.push(&path, message);
        None
    }

    fn boolean(&mut self, key: &str, v: &Node) -> Option<bool> {
        match v {
            Node::Bool(b) => Some(*b),
            other => self.fail(key, format!("must be true or false (got {})", other.kind())),
        }
    }

    fn count(&mut self, key: &str, v: &Node, r: CountRange) -> Option<u32> {
        let want = format!("an integer between {} and {}", r.min, r.max);
        match v {
            Node::Int(i) if (i128::from(r.min)..=i128::from(r.max)).contains(i) => Some(*i as u32),
            Node::Int(i) => self.fail(
                key,
                format!("must be between {} and {} (got {i})", r.min, r.max),
            ),
            other => self.fail(key, format!("must be {want} (got {})", other.kind())),
        }
    }

    fn duration(&mut self, key: &str, v: &Node, r: DurationRange) -> Option<u64> {
        let range = format!(
            "between {} and {}",
            DisplayDuration(r.min_ns),
            DisplayDuration(r.max_ns)
        );
        let text = match v {
            Node::Str(s) => s,
            other => {
                return self.fail(
                    key,
                    format!(
                        "must be a duration like \"100ms\" or \"1s\" {range} (got {})",
                        other.kind()
                    ),
                )
            }
        };
        let Some(ns) = parse_duration(text) else {
            return self.fail(
                key,
                format!(
                    "invalid duration \"{}\"; must be a number with a unit (ns, us, ms, s, m) like \"100ms\", {range}",
                    shorten(text)
                ),
            );
        };
        if ns < r.min_ns || ns > r.max_ns {
            return self.fail(key, format!("must be {range} (got {})", shorten(text)));
        }
        if ns % r.unit.nanos() != 0 {
            return self.fail(
                key,
                format!(
                    "must be a whole number of {} {range} (got {})",
                    r.unit.name(),
                    shorten(text)
                ),
            );
        }
        Some(ns)
    }

    /// A number with at most three decimal places, as thousandths.
    fn decimal(&mut self, key: &str, v: &Node, r: DecimalRange, noun: &str) -> Option<u32> {
        let range = format!(
            "between {} and {}",
            DisplayMilli(r.min_milli.into()),
            DisplayMilli(r.max_milli.into())
        );
        let milli: Option<i128> = match v {
            Node::Int(i) => Some(i.saturating_mul(1000)),
            Node::Float(f) if f.is_finite() => {
                let scaled = f * 1000.0;
                let rounded = scaled.round();
                if (scaled - rounded).abs() > 1e-6 {
                    return self.fail(
                        key,
                        format!("must have at most 3 decimal places, {range} (got {f})"),
                    );
                }
                // Saturating float→int; the range check below rejects it.
                Some(rounded as i128)
            }
            Node::Float(f) => {
                return self.fail(key, format!("must be a {noun} {range} (got {f})"));
            }
            other => {
                return self.fail(
                    key,
                    format!("must be a {noun} {range} (got {})", other.kind()),
                );
            }
        };
        match milli {
            Some(m) if (i128::from(r.min_milli)..=i128::from(r.max_milli)).contains(&m) => {
                Some(m as u32)
            }
            _ => {
                let shown = match v {
                    Node::Int(i) => i.to_string(),
                    Node::Float(f) => f.to_string(),
                    _ => String::new(),
                };
                self.fail(key, format!("must be {range} (got {shown})"))
            }
        }
    }

    fn exit_scope(&mut self, key: &str, v: &Node) -> Option<ExitScope> {
        match v {
            Node::Str(s) if s == "init" => Some(ExitScope::Init),
            Node::Str(s) if s == "all" => Some(ExitScope::All),
            Node::Str(s) => self.fail(
                key,
                format!("must be \"init\" or \"all\" (got \"{}\")", shorten(s)),
            ),
            other => self.fail(
                key,
                format!("must be \"init\" or \"all\" (got {})", other.kind()),
            ),
        }
    }

    fn exit_codes(&mut self, key: &str, v: &Node) -> Option<Vec<u8>> {
        let r = IGNORE_EXIT_CODE;
        let rule = format!(
            "a list of at most {MAX_IGNORE_EXIT_CODES} exit codes between {} and {}",
            r.min, r.max
        );
        let items = match v {
            Node::Seq(items) => items,
            other => return self.fail(key, format!("must be {rule} (got {})", other.kind())),
        };
        let mut ok = true;
        if items.len() > MAX_IGNORE_EXIT_CODES {
            ok = false;
            self.fail::<()>(key, format!("must be {rule} (got {} entries)", items.len()));
        }
        let mut codes = Vec::with_capacity(items.len().min(MAX_IGNORE_EXIT_CODES));
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.at(key));
            match item {
                Node::Int(c) if (i128::from(r.min)..=i128::from(r.max)).contains(c) => {
                    let c = *c as u8;
                    if codes.contains(&c) {
                        ok = false;
                        self.issues.push(
                            &path,
                            format!("duplicate exit code {c}; each code may appear once"),
                        );
                    } else {
                        codes.push(c);
                    }
                }
                Node::Int(c) => {
                    ok = false;
                    self.issues.push(
                        &path,
                        format!("must be between {} and {} (got {c})", r.min, r.max),
                    );
                }
                other => {
                    ok = false;
                    self.issues.push(
                        &path,
                        format!(
                            "must be an exit code between {} and {} (got {})",
                            r.min,
                            r.max,
                            other.kind()
                        ),
                    );
                }
            }
        }
        ok.then_some(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: tapio.io/v1\nkind: EvidenceProfile\nmetadata:\n  name: t\n";

    fn issues(doc: &str) -> Vec<Issue> {
        validate(doc.as_bytes()).expect_err("the document is invalid")
    }

    fn one_line(i: &Issue) -> bool {
        !i.to_string().chars().any(char::is_control)
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/profile.rs`): YAML complex keys
    /// (`? `) made an empty key, and the issue had an empty path, printed
    /// as `FILE: : unknown field`.
    #[test]
    fn empty_key_is_named() {
        for i in issues("?\r>\r?\r?\r") {
            assert!(!i.path.is_empty(), "{i:?}");
        }
        let got = issues(&format!("{HEAD}spec: {{}}\n\"\": 1\n"));
        assert_eq!(
            got,
            vec![Issue {
                path: "\"\"".into(),
                message: "unknown field; allowed: apiVersion, kind, metadata, spec".into(),
            }]
        );
    }

    #[test]
    fn odd_keys_are_quoted_and_escaped() {
        let doc = format!(
            "{HEAD}spec:\n  observers:\n    network:\n      \"a\\nb\": 1\n      \"x.y\": 2\n"
        );
        let got = issues(&doc);
        let paths: Vec<&str> = got.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                r#"spec.observers.network."a\nb""#,
                r#"spec.observers.network."x.y""#
            ]
        );
        assert!(got.iter().all(one_line), "{got:?}");
        assert!(got[0]
            .message
            .starts_with("unknown field; allowed: enabled"));
    }

    /// Found by fuzzing: `kind` echoed its value raw (a tab, here; any
    /// newline, and all of a 1 MiB string).
    #[test]
    fn wrong_literal_is_shortened_and_escaped() {
        let long = "x".repeat(100);
        let doc =
            format!("apiVersion: \"v\\t1\\n\"\nkind: {long}\nmetadata:\n  name: t\nspec: {{}}\n");
        let got = issues(&doc);
        let messages: Vec<&str> = got.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                r#"unsupported value "v\t1\n"; must be "tapio.io/v1""#,
                &format!(
                    "unsupported value \"{}…\"; must be \"EvidenceProfile\"",
                    "x".repeat(40)
                ),
            ]
        );
    }

    #[test]
    fn quoted_values_cannot_break_the_line() {
        let doc = "apiVersion: tapio.io/v1\nkind: EvidenceProfile\nmetadata:\n  name: \"x\\e[31m\\nforged: line\"\nspec: {}\n";
        let got = issues(doc);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].path, "metadata.name");
        assert!(
            got[0]
                .message
                .ends_with(r#"(got "x\u{1b}[31m\nforged: line")"#),
            "{}",
            got[0].message
        );
        assert!(one_line(&got[0]));
    }
}
