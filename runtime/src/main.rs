//! `cerebellum`: one binary that simulates, runs and trains robot policies.

use clap::Parser;

fn main() -> std::process::ExitCode {
    use cerebellum_runtime::commands;
    cerebellum_runtime::memory::keep_freed_memory();
    let json = std::env::args().any(|a| a == "--json");
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !json || !e.use_stderr() => e.exit(),
        Err(e) => {
            // A flag clap refuses (`--algo sac`) is a failure like any
            // other: with --json, its message as the JSON error too.
            let _ = e.print();
            let command = std::env::args()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .unwrap_or_default();
            let message = e.to_string();
            let first = message
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            commands::print_json_error(&command, &anyhow::anyhow!("{first}"));
            return std::process::ExitCode::from(2);
        }
    };
    commands::init_logging(cli.verbose);
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
