//! Command line of the server binary: `serve` (default), `migrate`, and the
//! operator's `admin …` subcommands that set up a real site before the
//! installer portal exists. Each admin command works on whichever database
//! `DATABASE_URL` (or `SERVER_DATABASE__URL`) names.

use std::io::BufRead;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    config::Settings,
    domain::{Role, SiteId},
    services::admin,
    store,
};

/// Homecontrol server.
#[derive(Debug, Parser)]
#[command(name = "server", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (runs migrations first).
    Serve,
    /// Run database migrations and exit.
    Migrate,
    /// Operator tasks against the configured database.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// Operator tasks.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an organisation (installer or service company).
    CreateOrg {
        /// Name, e.g. "Lämpöasennus Virtanen Oy".
        #[arg(long)]
        name: String,
    },
    /// Create a user. The password is read from stdin unless --password is given.
    CreateUser {
        /// E-mail address (the login).
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Password (visible in the process list; prefer stdin).
        #[arg(long)]
        password: Option<String>,
    },
    /// Create a site in an organisation.
    CreateSite {
        /// Organisation id or exact name.
        #[arg(long)]
        org: String,
        /// Site name, e.g. "Mäkelä, Kangasala".
        #[arg(long)]
        name: String,
        /// IANA time zone of the site.
        #[arg(long, default_value = "Europe/Helsinki")]
        timezone: String,
    },
    /// Give a user a role: installer/technician for the whole organisation,
    /// homeowner/viewer for one site (--site).
    AddMember {
        /// Organisation id or exact name.
        #[arg(long)]
        org: String,
        /// The user's e-mail.
        #[arg(long)]
        email: String,
        /// installer | technician | homeowner | viewer
        #[arg(long)]
        role: String,
        /// Site id, for homeowner and viewer.
        #[arg(long)]
        site: Option<String>,
    },
    /// Register an agent for a site and print its secret once.
    CreateAgent {
        /// Site id.
        #[arg(long)]
        site: String,
        /// A name for the agent box.
        #[arg(long, default_value = "agent")]
        name: String,
        /// Public WebSocket URL of this server, for the printed config snippet.
        #[arg(long, default_value = "wss://homecontrol.example.com/agent/v1/ws")]
        server_url: String,
    },
}

/// Run a parsed admin command; prints results for an operator.
pub async fn run_admin(settings: &Settings, cmd: AdminCommand) -> anyhow::Result<()> {
    let db = store::connect(&settings.database).await?;
    store::migrate(&db).await?;
    match cmd {
        AdminCommand::CreateOrg { name } => {
            let name = name.trim();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
            let org = store::people::create_organisation(&db, name).await?;
            println!("organisation {} created: {}", org.name, org.id);
        }
        AdminCommand::CreateUser {
            email,
            name,
            password,
        } => {
            let password = match password {
                Some(p) => p,
                None => {
                    eprintln!("password (one line on stdin):");
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let id = admin::create_user(&db, &email, &name, &password).await?;
            println!("user {email} created: {id}");
        }
        AdminCommand::CreateSite {
            org,
            name,
            timezone,
        } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            let tenant = admin::organisation(&db, &org).await?;
            let site = store::people::create_site(&db, tenant, name.trim(), &timezone).await?;
            println!("site {} created: {}", name.trim(), site.site_id);
        }
        AdminCommand::AddMember {
            org,
            email,
            role,
            site,
        } => {
            let tenant = admin::organisation(&db, &org).await?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let site = site
                .map(|s| {
                    s.parse::<SiteId>()
                        .map_err(|_| anyhow::anyhow!("--site '{s}' is not a site id"))
                })
                .transpose()?;
            admin::add_member(&db, tenant, &email, role, site).await?;
            println!("{email} is now {} of {org}", role.as_str());
        }
        AdminCommand::CreateAgent {
            site,
            name,
            server_url,
        } => {
            let site: SiteId = site
                .parse()
                .map_err(|_| anyhow::anyhow!("--site '{site}' is not a site id"))?;
            let (id, secret) = admin::create_agent(&db, site, &name).await?;
            println!("agent {name} created: {id}");
            println!("Its secret is shown only now. Put this in the agent's config file:\n");
            println!(
                "[server]\nurl = \"{server_url}\"\nagent_id = \"{id}\"\nsecret = \"{secret}\""
            );
        }
    }
    Ok(())
}
