//! `agent`: the Homecontrol site agent binary. See `agent --help`.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = agent::cli::Cli::parse();
    agent::telemetry::init("info", std::io::stderr);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain; config errors already name file, line and key.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
