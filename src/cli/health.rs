//! `tapio health [observer]`: a verdict per observer and for the node, from
//! recent evidence (the occurrence files) and what the agent says about
//! itself (its status file, `<data-dir>/.agent-status.json`). The rule is in
//! [`crate::store::summary`] and in `--help`.
//!
//! Exit codes are the verdict: 0 ok, 1 degraded, 2 failing, 3 unknown
//! (no data dir, nothing ever written, agent gone/stopped/unconfigured, or
//! every observer unavailable). Bad usage also exits 1, with an error line
//! and nothing on stdout; a data dir that cannot be read exits 3 (we cannot
//! tell). This module must not make `ok` out of missing information.

use super::output::{render_table, verdict_style, Cell};
use super::{note_store, now_ns, print_report, DataDirArg};
use crate::exit::CliError;
use crate::store::agent_status::STATUS_FILE;
use crate::store::filter::format_duration;
use crate::store::report::{self, HealthParams, HealthReport, ReportError};
use crate::store::summary::{AgentReport, Verdict};

/// Arguments of `tapio health`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Verdict rule, per observer, over the occurrences in the window:\n  \
failing   at least 1 critical, or at least 10 error\n  \
degraded  otherwise at least 1 error, or at least 5 warning\n  \
ok        otherwise\n\
The agent's status file (<data-dir>/.agent-status.json) adds what files cannot show: an\n\
observer the agent reports degraded is at least degraded; one it reports unavailable is\n\
unknown and makes the node at least degraded. The node is the worst observer, or unknown\n\
when: the data dir is missing; there is neither a status file nor any occurrence file;\n\
the status file is older than 30 s (agent gone) or says stopped; the config is not\n\
applied; or every observer is unavailable (blind).\n\
Exit codes: 0 ok, 1 degraded, 2 failing, 3 unknown (bad usage: 1, with an error line)."
)]
pub struct HealthArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Only this observer.
    #[arg(value_parser = crate::wire::Observer::NAMES)]
    pub observer: Option<String>,
    /// Window start: a duration back from --until (30s, 5m, 2h, 1d) or an
    /// RFC 3339 time.
    #[arg(long, value_name = "WHEN", default_value = "15m")]
    pub since: String,
    /// Window end, RFC 3339. Default: now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Print one JSON object (machine-stable) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tapio health`; the verdict is the exit code.
pub fn run(args: HealthArgs) -> Result<(), CliError> {
    let store = args.data_dir.store();
    let params = HealthParams {
        observer: args.observer,
        since: Some(args.since),
        until: args.until,
    };
    let report = match report::health(&store, &params, now_ns()) {
        Ok(r) => r,
        Err(ReportError::Invalid(msg)) => return Err(CliError::usage(anyhow::anyhow!(msg))),
        // Exit 2 would read as "failing": we only know we cannot tell.
        Err(ReportError::Store(e)) => {
            return Err(CliError {
                code: Verdict::Unknown.exit_code(),
                error: e.into(),
            })
        }
    };
    note_store(&store, report.data_dir_exists, report.skipped);
    print_report(&report, args.json, render)?;
    match report.verdict {
        Verdict::Ok => Ok(()),
        v => Err(CliError {
            code: v.exit_code(),
            error: anyhow::anyhow!("health is {}", v.as_str()),
        }),
    }
}

/// One line on what the agent's status file said.
fn agent_line(data_dir: &str, a: &AgentReport) -> String {
    match a.status_file {
        "reported" => {
            let mut line = format!(
                "{}, node {}, pid {}, version {}, updated {} ({}s ago)",
                a.state.as_deref().unwrap_or("-"),
                a.node_name.as_deref().unwrap_or("-"),
                a.pid.unwrap_or(0),
                a.version.as_deref().unwrap_or("-"),
                a.updated.as_deref().unwrap_or("-"),
                a.age_seconds.unwrap_or(0)
            );
            match &a.config {
                Some(c) if c.applied => line.push_str(&format!(", config generation {}", c.generation)),
                _ => line.push_str(", config not applied"),
            }
            if let Some(c) = &a.controller {
                line.push_str(&format!(", controller {} {}", c.endpoint, c.state));
            }
            line
        }
        "missing" => format!(
            "no status file ({}/{STATUS_FILE}): observer states unknown, verdicts from occurrence files only",
            data_dir.trim_end_matches('/')
        ),
        "invalid" => format!(
            "status file unusable ({}): observer states unknown, verdicts from occurrence files only",
            a.problem
        ),
        _ => "- (no data dir)".to_string(),
    }
}

/// The human form: window, node verdict, one row per observer, the rule.
pub fn render(r: &HealthReport, colour: bool) -> String {
    let mut summary = vec![
        vec![
            Cell::new("window"),
            Cell::new(format!(
                "{} .. {} ({})",
                r.window.since,
                r.window.until,
                format_duration(r.window.seconds * 1_000_000_000)
            )),
        ],
        vec![
            Cell::new("agent"),
            Cell::new(agent_line(&r.data_dir, &r.agent)),
        ],
        vec![
            Cell::new("verdict"),
            Cell::styled(r.verdict.as_str(), verdict_style(r.verdict)),
        ],
    ];
    for (i, reason) in r.reasons.iter().enumerate() {
        summary.push(vec![
            Cell::new(if i == 0 { "why" } else { "" }),
            Cell::new(reason.as_str()),
        ]);
    }
    let mut out = render_table(&summary, colour);
    out.push('\n');
    let mut rows = vec![vec![
        Cell::new("OBSERVER"),
        Cell::new("STATE"),
        Cell::new("VERDICT"),
        Cell::num("TOTAL"),
        Cell::num("CRITICAL"),
        Cell::num("ERROR"),
        Cell::num("WARNING"),
        Cell::num("INFO"),
        Cell::new("NEWEST"),
    ]];
    for h in &r.observers {
        rows.push(vec![
            Cell::new(h.observer.as_str()),
            Cell::new(h.state.as_str()),
            Cell::styled(h.verdict.as_str(), verdict_style(h.verdict)),
            Cell::num(h.total),
            Cell::num(h.counts.critical),
            Cell::num(h.counts.error),
            Cell::num(h.counts.warning),
            Cell::num(h.counts.info),
            Cell::new(h.newest.as_deref().unwrap_or("-")),
        ]);
    }
    out.push_str(&render_table(&rows, colour));
    out.push_str(&format!("\nrule: {}\n", r.rule));
    out
}
