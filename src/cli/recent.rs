//! `tapio recent`: the newest occurrences, filtered.

use super::output::{render_table, severity_style, Cell};
use super::{note_store, now_ns, print_report, report_error, DataDirArg};
use crate::exit::CliError;
use crate::store::filter::{comm, pid, place};
use crate::store::report::{self, RecentParams};
use crate::wire::Occurrence;

/// Arguments of `tapio recent`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Results are newest first. Times are the kernel facts' wall-clock times.\n\
Examples:\n  tapio recent --since 5m\n  tapio recent --namespace shop --pod cart-7d9f\n  tapio recent --container 3f2a9c1b7d4e --pid 4242\n  tapio recent --observer network --severity error --json\n  tapio recent --type oom_kill --since 2026-04-03T14:00:00Z"
)]
pub struct RecentArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Only occurrences at or after this: a duration back from now (30s, 5m,
    /// 2h, 1d) or an RFC 3339 time. Default: no lower bound.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only this type: a known kernel.<observer>.<name>, or its last part
    /// such as oom_kill. An unknown type is an error that lists the known
    /// ones.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Only this observer.
    #[arg(long, value_parser = crate::wire::Observer::NAMES)]
    pub observer: Option<String>,
    /// Only this severity or a more severe one.
    #[arg(long, value_parser = ["info", "warning", "error", "critical"])]
    pub severity: Option<String>,
    /// Only this pod: its name, or namespace/pod.
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// Only pods in this namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this container: its id or a prefix of it (e.g. the 12 hex
    /// digits shown under WHERE).
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Only this process id.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u64>,
    /// At most this many (the newest); 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = report::DEFAULT_LIMIT)]
    pub limit: u64,
    /// Print one JSON object (machine-stable) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tapio recent`.
pub fn run(args: RecentArgs) -> Result<(), CliError> {
    let store = args.data_dir.store();
    let params = RecentParams {
        since: args.since,
        kind: args.kind,
        observer: args.observer,
        severity: args.severity,
        limit: Some(args.limit),
        pod: args.pod,
        namespace: args.namespace,
        container: args.container,
        pid: args.pid,
        cursor: None,
    };
    let report = report::recent(&store, &params, now_ns()).map_err(report_error)?;
    note_store(&store, report.data_dir_exists, report.skipped);
    print_report(&report, args.json, |r, colour| {
        if r.occurrences.is_empty() {
            return "no occurrences found\n".to_string();
        }
        let mut text = table(&r.occurrences, colour);
        if r.matched > r.count as u64 {
            text.push_str(&format!(
                "{} of {} shown (newest first; --limit 0 shows all)\n",
                r.count, r.matched
            ));
        }
        text
    })
}

/// The human table: time, severity, type, where, pid, comm, message.
pub fn table(occurrences: &[Occurrence], colour: bool) -> String {
    let mut rows = vec![vec![
        Cell::new("TIME"),
        Cell::new("SEVERITY"),
        Cell::new("TYPE"),
        Cell::new("WHERE"),
        Cell::num("PID"),
        Cell::new("COMM"),
        Cell::new("MESSAGE"),
    ]];
    rows.extend(occurrences.iter().map(row));
    render_table(&rows, colour)
}

/// One occurrence as table cells. A fact without a process (a node-wide
/// one, a disk's) shows `-` for pid and comm.
pub fn row(o: &Occurrence) -> Vec<Cell> {
    vec![
        Cell::new(o.timestamp.as_str()),
        Cell::styled(o.severity.as_str(), severity_style(o.severity)),
        Cell::new(o.kind.as_str()),
        Cell::new(place(o)),
        Cell::num(pid(o).map_or_else(|| "-".to_string(), |p| p.to_string())),
        Cell::new(comm(o).unwrap_or("-")),
        Cell::new(o.error.message.as_str()),
    ]
}
