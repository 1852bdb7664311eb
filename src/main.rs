use clap::Parser;
use clip_worker::cli::{run, Cli, Command};
use clip_worker::error::ErrorChain;
use clip_worker::telemetry;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the commands that talk over NATS take part in distributed traces.
    let service = match &cli.command {
        Command::Serve(_) => Some("clip-worker"),
        Command::Submit(_) => Some("clip-worker-submit"),
        _ => None,
    };
    let _telemetry = match telemetry::init(cli.log_format, service) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            ExitCode::FAILURE
        }
    }
}
