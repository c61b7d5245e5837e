//! Bytes → [`EvidenceProfile`], collecting every problem with its path.
//! Knob names, types and ranges come from the knob table
//! ([`crate::wire::config::KNOBS`]); nothing here names a knob.

use std::borrow::Cow;
use std::fmt;

use super::schema::*;
use super::tree::{self, Node};
use crate::wire::config::{
    knob, ExitScope, Knob, KnobKind, KnobValue, Unit, AT_LEAST, KNOBS, MAX_IGNORE_EXIT_CODES,
};
use crate::wire::time::{parse_duration, DURATION_UNITS};
use crate::wire::Observer;

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
    let observers: Vec<&str> = Observer::ALL.iter().map(|o| o.as_str()).collect();
    let map = match value {
        Node::Map(m) => m,
        other => {
            issues.push(
                PATH,
                format!(
                    "must be a mapping of {} (got {})",
                    observers.join(", "),
                    other.kind()
                ),
            );
            return;
        }
    };
    for (key, v) in entries(map, PATH, issues) {
        let path = join(PATH, key);
        let Some(observer) = Observer::parse(key) else {
            unknown(&path, "observer", &observers, issues);
            continue;
        };
        let knobs: Vec<&str> = KNOBS
            .iter()
            .filter(|k| k.observer == observer)
            .map(|k| k.name)
            .collect();
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
            allowed: &knobs,
            issues: &mut *issues,
        };
        ctx.section(observer, &fields, profile);
    }
}

/// Judges the knobs of one observer section against their [`KNOBS`] rows.
struct Knobs<'a> {
    path: &'a str,
    allowed: &'a [&'static str],
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

    fn section(
        &mut self,
        observer: Observer,
        fields: &[(&str, &Node)],
        profile: &mut EvidenceProfile,
    ) {
        let mut refused: Vec<&str> = Vec::new();
        let first = profile.knobs.len();
        for &(key, v) in fields {
            let Some(k) = knob(observer, key) else {
                self.unknown(key);
                continue;
            };
            match self.value(key, v, k) {
                Some(value) => profile.knobs.push((k, value)),
                None => refused.push(k.name),
            }
        }
        let set = &profile.knobs[first..];
        for &(obs, low, high) in &AT_LEAST {
            if obs == observer && !refused.contains(&low) && !refused.contains(&high) {
                self.ordered(observer, low, high, set);
            }
        }
    }

    /// One [`AT_LEAST`] rule, judged on the effective values (a knob left
    /// out takes its default); the issue goes to the knob the document set.
    fn ordered(
        &mut self,
        observer: Observer,
        low: &str,
        high: &str,
        set: &[(&'static Knob, KnobValue)],
    ) {
        let (Some(lk), Some(hk)) = (knob(observer, low), knob(observer, high)) else {
            return;
        };
        let given = |k: &Knob| set.iter().find(|(s, _)| s.name == k.name).map(|(_, v)| v);
        let effective = |k: &Knob| k.nanos(given(k).unwrap_or(&k.default));
        let (lo, hi) = (effective(lk), effective(hk));
        if hi >= lo {
            return;
        }
        if given(hk).is_some() {
            let path = self.at(high);
            self.issues.push(
                &path,
                format!(
                    "must be at least {low} ({}) and at most {} (got {})",
                    DisplayDuration(lo),
                    DisplayDuration(hk.max_nanos()),
                    DisplayDuration(hi)
                ),
            );
        } else {
            let path = self.at(low);
            self.issues.push(
                &path,
                format!(
                    "must be between {} and {high} ({}, the default) (got {})",
                    DisplayDuration(lk.min_nanos()),
                    DisplayDuration(hi),
                    DisplayDuration(lo)
                ),
            );
        }
    }

    /// Judges one value by its row; `None` (with the issue recorded) when
    /// refused, else the value in the row's [`CompiledConfig`] unit.
    fn value(&mut self, key: &str, v: &Node, k: &Knob) -> Option<KnobValue> {
        match k.kind {
            KnobKind::Bool => self.boolean(key, v).map(KnobValue::Bool),
            KnobKind::Count { min, max } => self
                .count(key, v, min, max)
                .map(|c| KnobValue::Int(c.into())),
            KnobKind::Duration {
                min_ns,
                max_ns,
                unit,
            } => self
                .duration(key, v, (min_ns, max_ns), unit)
                .map(|ns| KnobValue::Int(ns / unit.nanos())),
            KnobKind::Milli { min, max } => {
                let noun = if k.name.ends_with("_ratio") {
                    "ratio"
                } else {
                    "number"
                };
                self.decimal(key, v, (min, max), noun)
                    .map(|m| KnobValue::Int(m.into()))
            }
            KnobKind::ExitScope => self.exit_scope(key, v).map(KnobValue::Scope),
            KnobKind::ExitCodes { min, max } => {
                self.exit_codes(key, v, min, max).map(KnobValue::Codes)
            }
        }
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

    fn count(&mut self, key: &str, v: &Node, min: u32, max: u32) -> Option<u32> {
        let want = format!("an integer between {min} and {max}");
        match v {
            Node::Int(i) if (i128::from(min)..=i128::from(max)).contains(i) => Some(*i as u32),
            Node::Int(i) => self.fail(key, format!("must be between {min} and {max} (got {i})")),
            other => self.fail(key, format!("must be {want} (got {})", other.kind())),
        }
    }

    fn duration(
        &mut self,
        key: &str,
        v: &Node,
        (min_ns, max_ns): (u64, u64),
        unit: Unit,
    ) -> Option<u64> {
        let range = format!(
            "between {} and {}",
            DisplayDuration(min_ns),
            DisplayDuration(max_ns)
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
                    "invalid duration \"{}\"; must be a number with a unit ({DURATION_UNITS}) like \"100ms\", {range}",
                    shorten(text)
                ),
            );
        };
        if ns < min_ns || ns > max_ns {
            return self.fail(key, format!("must be {range} (got {})", shorten(text)));
        }
        if ns % unit.nanos() != 0 {
            return self.fail(
                key,
                format!(
                    "must be a whole number of {} {range} (got {})",
                    unit.name(),
                    shorten(text)
                ),
            );
        }
        Some(ns)
    }

    /// A number with at most three decimal places, as thousandths.
    fn decimal(
        &mut self,
        key: &str,
        v: &Node,
        (min_milli, max_milli): (u32, u32),
        noun: &str,
    ) -> Option<u32> {
        let range = format!(
            "between {} and {}",
            DisplayMilli(min_milli.into()),
            DisplayMilli(max_milli.into())
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
            Some(m) if (i128::from(min_milli)..=i128::from(max_milli)).contains(&m) => {
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
            Node::Str(s) if ExitScope::parse(s).is_some() => ExitScope::parse(s),
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

    fn exit_codes(&mut self, key: &str, v: &Node, min: u8, max: u8) -> Option<Vec<u8>> {
        let rule = format!(
            "a list of at most {MAX_IGNORE_EXIT_CODES} exit codes between {} and {}",
            min, max
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
                Node::Int(c) if (i128::from(min)..=i128::from(max)).contains(c) => {
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
                        format!("must be between {} and {} (got {c})", min, max),
                    );
                }
                other => {
                    ok = false;
                    self.issues.push(
                        &path,
                        format!(
                            "must be an exit code between {} and {} (got {})",
                            min,
                            max,
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
