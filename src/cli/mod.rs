//! Subcommands of the `zamba2c` CLI and the helpers they share.

mod bench;
mod bench_table;
mod chat;
mod compile;
mod convert;
mod dot;
pub(crate) mod engine;
mod hub;
mod input;
mod inspect;
mod limits;
mod logits;
pub mod output;
mod run;
mod run_batch;
mod sampling;
pub mod signals;
mod text;
mod tokenize;
mod tokens;

use clap::{Parser, Subcommand};

/// zamba2c: an ahead-of-time compiler for Zamba2 language models.
#[derive(Parser, Debug)]
#[command(name = "zamba2c", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Compile(compile::CompileArgs),
    Inspect(inspect::InspectArgs),
    Logits(logits::LogitsArgs),
    Run(run::RunArgs),
    Chat(chat::ChatArgs),
    Tokenize(tokenize::TokenizeArgs),
    Bench(bench::BenchArgs),
    Serve(crate::serve::ServeArgs),
    Convert(convert::ConvertArgs),
}

/// Logs go to stderr through `tracing`, filtered by `RUST_LOG` (default: warnings, and the
/// server's request log), in colour only when stderr is a terminal and `NO_COLOR` is unset
/// (no escape codes in a log file or a pipe).
pub fn init_logging() {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,zamba2c::serve=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

/// Runs one subcommand.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Compile(a) => compile::main(a),
        Command::Inspect(a) => inspect::main(a),
        Command::Logits(a) => logits::main(a),
        Command::Run(a) => run::main(a),
        Command::Chat(a) => chat::main(a),
        Command::Tokenize(a) => tokenize::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Serve(a) => crate::serve::main(a),
        Command::Convert(a) => convert::main(a),
    }
}
