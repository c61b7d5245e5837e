//! `tapio`: parse arguments, set up logging once, dispatch, map the outcome
//! to an exit code (0 ok, 1 usage/validation error, 2 runtime failure).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tapio::exit::CliError;

#[derive(Parser)]
#[command(
    name = "tapio",
    version,
    about = "An exact eBPF observer of kernel failure facts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing the agent's flags buys nothing"
)]
enum Command {
    /// Run the node agent (Linux, root or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN).
    Agent(tapio::agent::config::AgentArgs),
    /// Validate or compile an Evidence Profile.
    Profile(tapio::cli::profile::ProfileArgs),
    /// Serve an Evidence Profile to agents over tapio-wire/v1.
    Controller(tapio::controller::ControllerArgs),
    /// Summarise the local occurrence files: counts by observer and type, newest.
    Status(tapio::cli::StatusArgs),
    /// Show the newest occurrences, filtered by time, type, observer, severity.
    Recent(tapio::cli::RecentArgs),
    /// Follow new occurrences as the agent writes them, until Ctrl-C.
    Watch(tapio::cli::WatchArgs),
    /// Verdict per observer and node (ok / degraded / failing / unknown; exit 0-3).
    Health(tapio::cli::HealthArgs),
    /// Serve the occurrence files to MCP clients (read-only, JSON-RPC over stdio).
    Mcp(tapio::mcp::McpArgs),
}

fn main() -> ExitCode {
    // Bad usage exits 1 (clap's own default would be 2, our runtime-failure
    // code); --help and --version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    tapio::exit::init_logging();
    let result: Result<(), CliError> = match cli.command {
        Command::Agent(args) => tapio::agent::run(args),
        Command::Profile(args) => tapio::cli::profile::run(args),
        Command::Controller(args) => tapio::controller::run(args),
        Command::Status(args) => tapio::cli::status::run(args),
        Command::Recent(args) => tapio::cli::recent::run(args),
        Command::Watch(args) => tapio::cli::watch::run(args),
        Command::Health(args) => tapio::cli::health::run(args),
        Command::Mcp(args) => tapio::mcp::run(args),
    };
    tapio::exit::finish(result)
}

/// The only libm symbol the dependency tree needs is `pow` (tokio's
/// scheduler statistics). Defining it here, from the pure-Rust `libm`
/// crate, keeps the binary's dynamic dependencies to libc and libgcc_s
/// (the linker drops libm.so.6 once nothing references it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
