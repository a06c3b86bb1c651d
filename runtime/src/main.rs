//! `cerebellum`: one binary that simulates, runs and trains robot policies.

use clap::Parser;

fn main() -> std::process::ExitCode {
    use cerebellum_runtime::commands;
    cerebellum_runtime::memory::keep_freed_memory();
    let cli = commands::Cli::parse();
    commands::init_logging(cli.verbose);
    let json = std::env::args().any(|a| a == "--json");
    let name = cli.command.name();
    match cli.command.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", commands::error_text(&error));
            if json && error.downcast_ref::<commands::Reported>().is_none() {
                commands::print_json_error(name, &error);
            }
            std::process::ExitCode::FAILURE
        }
    }
}
