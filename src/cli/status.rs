//! `tapio status`: what the data dir holds.

use super::output::{render_table, Cell};
use super::{note_store, print_report, report_error, DataDirArg};
use crate::exit::CliError;
use crate::store::report::{self, StatusReport};
use crate::wire::Observer;

/// Arguments of `tapio status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Print one JSON object (machine-stable) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tapio status`.
pub fn run(args: StatusArgs) -> Result<(), CliError> {
    let store = args.data_dir.store();
    let report = report::status(&store).map_err(report_error)?;
    note_store(&store, report.data_dir_exists, report.skipped);
    print_report(&report, args.json, render)
}

/// The human form: a summary block, then counts by observer and by type.
pub fn render(r: &StatusReport, colour: bool) -> String {
    let newest = match &r.newest {
        Some(o) => format!(
            "{}  {}  {}  {}",
            o.timestamp,
            o.severity.as_str(),
            o.kind,
            o.error.message
        ),
        None => "-".to_string(),
    };
    let summary = vec![
        vec![Cell::new("data dir"), Cell::new(r.data_dir.as_str())],
        vec![Cell::new("occurrences"), Cell::new(r.total.to_string())],
        vec![
            Cell::new("skipped"),
            Cell::new(match r.skipped.total() {
                0 => "0".to_string(),
                n => format!("{n} ({})", r.skipped.describe()),
            }),
        ],
        vec![Cell::new("newest"), Cell::new(newest)],
    ];
    let mut out = render_table(&summary, colour);
    out.push('\n');
    let mut rows = vec![vec![Cell::new("OBSERVER"), Cell::num("COUNT")]];
    for o in Observer::ALL {
        let n = r.by_observer.get(o.as_str()).copied().unwrap_or(0);
        rows.push(vec![Cell::new(o.as_str()), Cell::num(n)]);
    }
    out.push_str(&render_table(&rows, colour));

    if !r.by_type.is_empty() {
        out.push('\n');
        let mut rows = vec![vec![Cell::new("TYPE"), Cell::num("COUNT")]];
        for (t, n) in &r.by_type {
            rows.push(vec![Cell::new(t.as_str()), Cell::num(*n)]);
        }
        out.push_str(&render_table(&rows, colour));
    }
    out
}
