//! The `zamba2c` command line: compile a Zamba2 checkpoint into a plan, inspect it, and run it;
//! convert a checkpoint to the Hugging Face layout.

mod cli;
mod serve;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging();
    // The server handles SIGTERM and Ctrl-C itself (it drains in-flight requests, then exits);
    // every other command ends on them after removing its temporaries.
    if !matches!(args.command, cli::Command::Serve(_)) {
        cli::signals::install();
    }
    match cli::dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        // `zamba2c inspect PLAN | head -1`: the reader has what it wanted.
        Err(e) if cli::output::is_stdout_closed(&e) => cli::signals::die_of_sigpipe(),
        Err(e) => {
            // One line: the whole context chain, file and field included, and no backtrace.
            // Not eprintln!: a closed stderr is no reason to panic.
            let msg = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::FAILURE
        }
    }
}
