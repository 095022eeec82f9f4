//! `server`: the Homecontrol web service and its operator commands.

use anyhow::Context;
use clap::Parser;
use server::{
    cli::{Cli, Command},
    config::Settings,
    startup::Application,
    store, telemetry,
};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load()?;
    telemetry::init(&settings.log.filter, settings.log.format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            tracing::info!(port = app.port(), "listening");
            app.run_until_stopped().await.context("serving HTTP")
        }
        Command::Migrate => {
            let db = store::connect(&settings.database).await?;
            store::migrate(&db).await
        }
        Command::Admin(cmd) => server::cli::run_admin(&settings, cmd).await,
    }
}
