use clap::Parser;
use clip_worker::cli::{run, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLIP_WORKER_LOG")
                // Model download progress is worth seeing by default (it can take minutes).
                .unwrap_or_else(|_| "warn,clip_worker::model=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
