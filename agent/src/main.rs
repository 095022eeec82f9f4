//! `agent`: the Homecontrol site agent binary. See `agent --help`.

use anyhow::Context as _;
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = agent::cli::Cli::parse();
    agent::telemetry::init("info", std::io::stderr);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(agent::cli::run(cli))
}
