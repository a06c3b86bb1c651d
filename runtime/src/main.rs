//! `cerebellum`: one binary that simulates, runs and trains robot policies.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cerebellum_runtime::commands::Cli::parse();
    cerebellum_runtime::commands::init_logging(cli.verbose);
    match cli.command.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
