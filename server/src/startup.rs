//! Building the application: database, state, and every route in one place.

use std::{net::TcpListener, sync::Arc};

use actix_web::{
    App, HttpServer,
    dev::Server,
    middleware::{DefaultHeaders, ErrorHandlers},
    web,
};
use anyhow::Context;
use sea_orm::{DatabaseConnection, DbBackend};
use tracing_actix_web::TracingLogger;

use crate::{
    config::Settings,
    error::AppError,
    hub::Hub,
    links::AgentLinks,
    metrics::Metrics,
    relay::Relay,
    routes::{
        agent_ws, assets, audit, auth, confirm, controls, health, live, metrics, pages, sites,
    },
    services::{auth::SessionKeys, db_health::DbHealth, mail::Mailer, throttle::LoginThrottle},
    state::AppState,
    store,
    views::AssetTable,
};

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

/// Content-Security-Policy for every response: no inline script, no foreign origins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

impl Application {
    /// Connect to the database, run migrations and bind the listener
    /// (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = store::connect(&settings.database).await?;
        store::migrate(&db).await?;
        Self::build_with_db(settings, db).await
    }

    /// Like [`Application::build`] with an already-open, migrated database.
    pub async fn build_with_db(settings: Settings, db: DatabaseConnection) -> anyhow::Result<Self> {
        let address = format!("{}:{}", settings.http.host, settings.http.port);
        let listener = TcpListener::bind(&address).with_context(|| format!("binding {address}"))?;
        let port = listener
            .local_addr()
            .context("reading the bound address")?
            .port();
        let public_url = match settings.http.public_url.trim() {
            "" => format!("http://{}:{port}", settings.http.host),
            url => url.trim_end_matches('/').to_owned(),
        };
        // Replicas share PostgreSQL and relay through it; SQLite is one process.
        let relay = (db.get_database_backend() == DbBackend::Postgres)
            .then(|| Relay::new(settings.replicas.heartbeat()));
        let (hub, links) = match &relay {
            Some(r) => (Hub::relayed(r.clone()), AgentLinks::relayed(r.clone())),
            None => (Hub::default(), AgentLinks::default()),
        };
        let state = AppState {
            db,
            sessions: SessionKeys::new(&settings.auth),
            throttle: Arc::new(LoginThrottle::default()),
            hub,
            assets: Arc::new(AssetTable::embedded()),
            metrics: Arc::new(Metrics::new()),
            db_health: DbHealth::default(),
            links,
            mailer: Mailer::new(&settings.smtp).context("setting up e-mail")?,
            public_url: Arc::from(public_url),
            settings: Arc::new(settings),
            relay,
        };
        if let Some(relay) = &state.relay {
            relay.start(state.clone()).await;
        }
        let server = run(listener, state.clone())?;
        Ok(Self {
            port,
            server,
            state,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests use it to reach the database and hub).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until the process is asked to stop, then tell the other
    /// replicas (if any) that this one is gone.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some(relay) = &self.state.relay {
            relay.goodbye().await;
        }
        result
    }
}

fn run(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let workers = match state.settings.http.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    };
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(ErrorHandlers::new().default_handler(pages::render_error_pages))
            .wrap(
                DefaultHeaders::new()
                    .add(("Content-Security-Policy", CSP))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Referrer-Policy", "same-origin"))
                    .add(("X-Frame-Options", "DENY")),
            )
            .wrap(TracingLogger::default())
            .app_data(data.clone())
            .app_data(
                web::FormConfig::default()
                    .limit(16 * 1024)
                    .error_handler(|err, _| {
                        AppError::Validation(format!("the form could not be read: {err}")).into()
                    }),
            )
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                AppError::Validation(format!("the address has an invalid parameter: {err}")).into()
            }))
            .route("/health", web::get().to(health::health))
            .route("/health/ready", web::get().to(health::ready))
            .route("/metrics", web::get().to(metrics::metrics))
            .route("/static/{path:.*}", web::get().to(assets::static_file))
            .route("/agent/v1/ws", web::get().to(agent_ws::agent_link))
            .route("/login", web::get().to(auth::login_page))
            .route("/login", web::post().to(auth::login))
            .route("/logout", web::post().to(auth::logout))
            .route("/", web::get().to(sites::home))
            .route("/sites", web::get().to(sites::list_sites_page))
            .route(
                "/sites/{site_id}",
                web::get().to(sites::site_dashboard_page),
            )
            .route("/sites/{site_id}/live", web::get().to(live::site_live_feed))
            .route(
                "/sites/{site_id}/controls",
                web::get().to(controls::controls_page_handler),
            )
            .route(
                "/sites/{site_id}/controls/setpoint",
                web::post().to(controls::set_setpoint),
            )
            .route(
                "/sites/{site_id}/controls/output",
                web::post().to(controls::set_output),
            )
            .route(
                "/sites/{site_id}/controls/action",
                web::post().to(controls::run_action),
            )
            .route(
                "/sites/{site_id}/controls/settings",
                web::post().to(controls::save_settings),
            )
            .route(
                "/sites/{site_id}/schedule",
                web::get().to(controls::schedule_page),
            )
            .route(
                "/sites/{site_id}/schedule",
                web::post().to(controls::save_schedule),
            )
            .route("/sites/{site_id}/audit", web::get().to(audit::audit_page))
            .route(
                "/sites/{site_id}/audit.csv",
                web::get().to(audit::audit_csv),
            )
            .route("/confirm/{token}", web::get().to(confirm::confirm_page))
            .route(
                "/confirm/{token}",
                web::post().to(confirm::confirm_decision),
            )
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(AppError::NotFound)
            }))
    })
    .workers(workers)
    .shutdown_timeout(5)
    .listen(listener)
    .context("starting the HTTP server")?
    .run();
    Ok(server)
}
