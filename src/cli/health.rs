//! `tapio health [observer]`: a verdict per observer from recent evidence.
//! The rule is in [`crate::store::summary`] and in `--help`.

use super::output::{render_table, verdict_style, Cell};
use super::{note_store, now_ns, print_report, report_error, DataDirArg};
use crate::exit::CliError;
use crate::store::filter::format_duration;
use crate::store::report::{self, HealthParams, HealthReport};

/// Arguments of `tapio health`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Verdict rule, per observer, over the occurrences in the window:\n  \
failing   at least 1 critical, or at least 10 error\n  \
degraded  otherwise at least 1 error, or at least 5 warning\n  \
ok        otherwise\n\
The node's verdict is the worst observer's. Evidence is the occurrence files only: an\n\
observer that never started also reads ok (see the agent's logs for `unavailable`)."
)]
pub struct HealthArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Only this observer.
    #[arg(value_parser = ["network", "container", "storage", "node"])]
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

/// Runs `tapio health`.
pub fn run(args: HealthArgs) -> Result<(), CliError> {
    let store = args.data_dir.store();
    let params = HealthParams {
        observer: args.observer,
        since: Some(args.since),
        until: args.until,
    };
    let report = report::health(&store, &params, now_ns()).map_err(report_error)?;
    note_store(&store, report.data_dir_exists, report.skipped);
    print_report(&report, args.json, render)
}

/// The human form: window, node verdict, one row per observer, the rule.
pub fn render(r: &HealthReport, colour: bool) -> String {
    let summary = vec![
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
            Cell::new("verdict"),
            Cell::styled(r.verdict.as_str(), verdict_style(r.verdict)),
        ],
    ];
    let mut out = render_table(&summary, colour);
    out.push('\n');
    let mut rows = vec![vec![
        Cell::new("OBSERVER"),
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
