//! Typed settings for the server binary.
//!
//! Load order (later wins): defaults in code → `config/base.toml` →
//! `config/<environment>.toml` → environment variables `SERVER_<SECTION>__<KEY>`
//! (for example `SERVER_HTTP__PORT=8080`). `DATABASE_URL` is accepted as an
//! alias of `SERVER_DATABASE__URL` because every tool in this field knows it.
//! Secrets may also come from a file named by `<VAR>_FILE`
//! (`SERVER_AUTH__JWT_SECRET_FILE=/run/secrets/jwt`). Every variable is
//! documented in `config/README.md`; a test keeps the two in step.

use std::path::Path;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The placeholder secret in example files; production refuses to start with it.
pub const EXAMPLE_JWT_SECRET: &str = "dev-only-jwt-secret-change-me-0000000000000000";

/// All server settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `development` (pretty logs, relaxed cookie flags) or `production`.
    pub environment: Environment,
    /// Where to listen and how the public sees us.
    pub http: HttpSettings,
    /// Which database to use.
    pub database: DatabaseSettings,
    /// Sessions and login.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// Remote control: command lifetimes and confirmation links.
    pub control: ControlSettings,
    /// Outgoing e-mail (confirmation links).
    pub smtp: SmtpSettings,
    /// Several replicas on one PostgreSQL.
    pub replicas: ReplicaSettings,
}

/// Settings of the relay between server replicas (PostgreSQL only; see
/// [`crate::relay`]).
#[derive(Debug, Clone, Deserialize)]
pub struct ReplicaSettings {
    /// How often this replica tells the others it is alive and which agents
    /// it holds. A replica silent for three of its intervals counts as gone
    /// and its agents as offline.
    pub heartbeat_ms: u64,
}

impl ReplicaSettings {
    /// The heartbeat interval.
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.heartbeat_ms)
    }
}

/// Remote-control settings.
#[derive(Debug, Clone, Deserialize)]
pub struct ControlSettings {
    /// How long a manual command (setpoint, output, boost) stays valid. An
    /// agent that receives it later drops it as expired; the server stops
    /// delivering it to an agent that was offline.
    pub command_ttl_seconds: u64,
    /// How long a schedule change stays deliverable to an offline agent
    /// (a timetable is still wanted tomorrow, a boost is not).
    pub schedule_ttl_seconds: u64,
    /// How long an e-mailed confirmation link works.
    pub confirmation_ttl_minutes: u64,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on localhost, tests).
    None,
    /// STARTTLS on a submission port (587), required.
    Starttls,
    /// TLS from the first byte (465).
    Tls,
}

/// Outgoing mail through an SMTP relay.
#[derive(Debug, Clone, Deserialize)]
pub struct SmtpSettings {
    /// Relay host name; empty disables e-mail (changes outside a comfort band
    /// then cannot be confirmed and are refused).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: SmtpTls,
    /// Login name at the relay; empty = no authentication.
    pub username: String,
    /// Password at the relay.
    pub password: Option<SecretString>,
    /// Sender address, e.g. `Homecontrol <noreply@example.com>`.
    pub from: String,
    /// Give up on one message after this long.
    pub timeout_seconds: u64,
}

impl SmtpSettings {
    /// Whether e-mail is configured.
    pub fn enabled(&self) -> bool {
        !self.host.trim().is_empty()
    }
}

/// `GET /metrics` settings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetricsSettings {
    /// Bearer token a scraper must send. Unset or empty: `/metrics` is 404,
    /// so an install never exposes fleet details by accident.
    pub token: Option<SecretString>,
}

impl MetricsSettings {
    /// The token, when one is set and not empty.
    pub fn token(&self) -> Option<&str> {
        self.token
            .as_ref()
            .map(|t| t.expose_secret().trim())
            .filter(|t| !t.is_empty())
    }
}

/// Deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Local development and the demo.
    Development,
    /// A real deployment behind TLS.
    Production,
}

/// HTTP listener settings.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// Interface to bind, e.g. `127.0.0.1` or `0.0.0.0`.
    pub host: String,
    /// TCP port; 0 picks a free one (tests).
    pub port: u16,
    /// Number of actix worker threads; 0 means one per core.
    pub workers: usize,
    /// Comma-separated IP addresses of reverse proxies whose
    /// `X-Forwarded-For` / `Forwarded` headers are believed. Empty: the TCP
    /// peer is the client (a forged header cannot dodge the login throttle).
    pub trusted_proxies: String,
    /// The address people use to reach the server, e.g.
    /// `https://homecontrol.example.com`; links in e-mails start with it.
    /// Empty: `http://<host>:<bound port>` (development).
    pub public_url: String,
}

impl HttpSettings {
    /// The trusted proxy addresses (validated at startup).
    pub fn trusted_proxy_ips(&self) -> Vec<std::net::IpAddr> {
        self.trusted_proxies
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

/// Database settings.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `sqlite://path?mode=rwc` or `postgres://user:pass@host/db`.
    pub url: SecretString,
    /// Connection pool size.
    pub max_connections: u32,
}

/// Authentication settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// HMAC key for session tokens (at least 32 bytes).
    pub jwt_secret: SecretString,
    /// Session lifetime in minutes.
    pub session_ttl_minutes: u64,
    /// Send cookies with `Secure` (on behind TLS; off for plain-HTTP dev).
    pub cookie_secure: bool,
}

/// Log output settings.
#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// Default `tracing` filter when `RUST_LOG` is unset.
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured.
    Pretty,
    /// One JSON object per line (production).
    Json,
}

/// Which database backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl DatabaseSettings {
    /// The backend named by the URL scheme, or an error naming the variable.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        let url = self.url.expose_secret();
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            other => bail!(
                "`SERVER_DATABASE__URL` (or `DATABASE_URL`) has unknown scheme '{other}'; \
                 use sqlite://path?mode=rwc or postgres://user@host/db"
            ),
        }
    }
}

/// Names of every environment variable the server reads; `config/README.md`
/// must document each (checked by a test).
pub const ENV_VARS: &[&str] = &[
    "SERVER_ENVIRONMENT",
    "SERVER_HTTP__HOST",
    "SERVER_HTTP__PORT",
    "SERVER_HTTP__WORKERS",
    "SERVER_HTTP__TRUSTED_PROXIES",
    "SERVER_DATABASE__URL",
    "DATABASE_URL",
    "SERVER_DATABASE__URL_FILE",
    "SERVER_DATABASE__MAX_CONNECTIONS",
    "SERVER_AUTH__JWT_SECRET",
    "SERVER_AUTH__JWT_SECRET_FILE",
    "SERVER_AUTH__SESSION_TTL_MINUTES",
    "SERVER_AUTH__COOKIE_SECURE",
    "SERVER_LOG__FORMAT",
    "SERVER_LOG__FILTER",
    "SERVER_METRICS__TOKEN",
    "SERVER_METRICS__TOKEN_FILE",
    "SERVER_HTTP__PUBLIC_URL",
    "SERVER_CONTROL__COMMAND_TTL_SECONDS",
    "SERVER_CONTROL__SCHEDULE_TTL_SECONDS",
    "SERVER_CONTROL__CONFIRMATION_TTL_MINUTES",
    "SERVER_SMTP__HOST",
    "SERVER_SMTP__PORT",
    "SERVER_SMTP__TLS",
    "SERVER_SMTP__USERNAME",
    "SERVER_SMTP__PASSWORD",
    "SERVER_SMTP__PASSWORD_FILE",
    "SERVER_SMTP__FROM",
    "SERVER_SMTP__TIMEOUT_SECONDS",
    "SERVER_REPLICAS__HEARTBEAT_MS",
    "SERVER_CONFIG_DIR",
    "RUST_LOG",
];

const DEFAULTS: &str = r#"
environment = "development"
[http]
host = "127.0.0.1"
port = 8080
workers = 0
trusted_proxies = ""
public_url = ""
[database]
url = "sqlite://homecontrol.db?mode=rwc"
max_connections = 8
[auth]
jwt_secret = "dev-only-jwt-secret-change-me-0000000000000000"
session_ttl_minutes = 720
cookie_secure = false
[log]
format = "pretty"
filter = "info,sqlx=warn,sea_orm=warn"
[control]
command_ttl_seconds = 300
schedule_ttl_seconds = 86400
confirmation_ttl_minutes = 60
[smtp]
host = ""
port = 587
tls = "starttls"
username = ""
from = "Homecontrol <noreply@localhost>"
timeout_seconds = 20
[replicas]
heartbeat_ms = 10000
"#;

impl Settings {
    /// Load from defaults, `config/` files and the process environment.
    pub fn load() -> anyhow::Result<Self> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let dir = std::env::var("SERVER_CONFIG_DIR").unwrap_or_else(|_| "config".into());
        Self::load_from(Path::new(&dir), &vars)
    }

    /// Load from defaults, the TOML files in `dir` (if present) and `vars`
    /// (the environment, passed in so tests need not mutate the process).
    pub fn load_from(dir: &Path, vars: &[(String, String)]) -> anyhow::Result<Self> {
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let env_name = get("SERVER_ENVIRONMENT").unwrap_or_else(|| "development".into());
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(config::File::from(dir.join("base.toml")).required(false))
            .add_source(config::File::from(dir.join(format!("{env_name}.toml"))).required(false));
        let mut env_map = std::collections::HashMap::new();
        for (k, v) in vars {
            if let Some(rest) = k.strip_prefix("SERVER_") {
                if rest == "CONFIG_DIR" || rest.ends_with("_FILE") {
                    continue;
                }
                env_map.insert(rest.to_lowercase().replace("__", "."), v.clone());
            }
        }
        if let Some(url) = get("DATABASE_URL") {
            env_map.entry("database.url".into()).or_insert(url);
        }
        for (k, v) in vars {
            if let Some(rest) = k
                .strip_prefix("SERVER_")
                .and_then(|r| r.strip_suffix("_FILE"))
            {
                let text = std::fs::read_to_string(v)
                    .with_context(|| format!("`{k}` names '{v}', which cannot be read"))?;
                env_map.insert(
                    rest.to_lowercase().replace("__", "."),
                    text.trim().to_owned(),
                );
            }
        }
        for (k, v) in env_map {
            builder = builder
                .set_override(k.clone(), v)
                .with_context(|| format!("setting `{k}`"))?;
        }
        let settings: Settings = builder
            .build()
            .context("reading configuration")?
            .try_deserialize()
            .context("configuration has an invalid value")?;
        settings.validate()?;
        Ok(settings)
    }

    /// Fail fast on settings that cannot work, with a sentence naming the variable.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.database.backend()?;
        if !(50..=600_000).contains(&self.replicas.heartbeat_ms) {
            bail!(
                "`SERVER_REPLICAS__HEARTBEAT_MS` is {}; use 50 to 600000 milliseconds",
                self.replicas.heartbeat_ms
            );
        }
        for part in self
            .http
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if part.parse::<std::net::IpAddr>().is_err() {
                bail!("`SERVER_HTTP__TRUSTED_PROXIES` has '{part}', which is not an IP address");
            }
        }
        let secret = self.auth.jwt_secret.expose_secret();
        if secret.len() < 32 {
            bail!("`SERVER_AUTH__JWT_SECRET` must be at least 32 bytes long");
        }
        if self.environment == Environment::Production {
            if secret == EXAMPLE_JWT_SECRET {
                bail!(
                    "`SERVER_AUTH__JWT_SECRET` is the example value; set a random secret in production"
                );
            }
            if !self.auth.cookie_secure {
                bail!("`SERVER_AUTH__COOKIE_SECURE` must be true in production (serve over TLS)");
            }
        }
        if self.auth.session_ttl_minutes == 0 {
            bail!("`SERVER_AUTH__SESSION_TTL_MINUTES` must be at least 1");
        }
        let public = self.http.public_url.trim();
        if !public.is_empty() {
            match url::Url::parse(public) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => bail!(
                    "`SERVER_HTTP__PUBLIC_URL` is '{public}', which is not an http(s) address"
                ),
            }
        }
        for (var, v) in [
            (
                "SERVER_CONTROL__COMMAND_TTL_SECONDS",
                self.control.command_ttl_seconds,
            ),
            (
                "SERVER_CONTROL__SCHEDULE_TTL_SECONDS",
                self.control.schedule_ttl_seconds,
            ),
            (
                "SERVER_CONTROL__CONFIRMATION_TTL_MINUTES",
                self.control.confirmation_ttl_minutes,
            ),
            ("SERVER_SMTP__TIMEOUT_SECONDS", self.smtp.timeout_seconds),
        ] {
            if v == 0 {
                bail!("`{var}` must be at least 1");
            }
        }
        if self.smtp.enabled() {
            if self.smtp.from.parse::<lettre::message::Mailbox>().is_err() {
                bail!(
                    "`SERVER_SMTP__FROM` is '{}', which is not an e-mail address",
                    self.smtp.from
                );
            }
            if self.environment == Environment::Production && public.is_empty() {
                bail!(
                    "`SERVER_HTTP__PUBLIC_URL` must be set in production when e-mail is on \
                     (confirmation links point there)"
                );
            }
        }
        Ok(())
    }

    /// Settings for tests and the demo: a given database, port 0, one worker.
    pub fn for_database(database_url: &str) -> Self {
        let vars = vec![
            ("SERVER_DATABASE__URL".to_owned(), database_url.to_owned()),
            ("SERVER_HTTP__PORT".to_owned(), "0".to_owned()),
            ("SERVER_HTTP__WORKERS".to_owned(), "2".to_owned()),
        ];
        Self::load_from(Path::new("/nonexistent-config-dir"), &vars)
            .expect("built-in defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_without_files_or_env() {
        let s = Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.database.backend().unwrap(), Backend::Sqlite);
    }

    #[test]
    fn env_overrides_nested_keys() {
        let s = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[
                ("SERVER_HTTP__PORT", "9999"),
                ("DATABASE_URL", "postgres://x@h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http.port, 9999);
        assert_eq!(s.database.backend().unwrap(), Backend::Postgres);
    }

    #[test]
    fn unknown_database_scheme_is_a_startup_error_naming_the_variable() {
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("DATABASE_URL", "postgress://x@h/db")]),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("SERVER_DATABASE__URL") && text.contains("postgress"),
            "{text}"
        );
    }

    #[test]
    fn a_heartbeat_out_of_range_is_refused_naming_the_variable() {
        for bad in ["0", "10", "600001"] {
            let err = Settings::load_from(
                Path::new("/nonexistent"),
                &vars(&[("SERVER_REPLICAS__HEARTBEAT_MS", bad)]),
            )
            .unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.contains("SERVER_REPLICAS__HEARTBEAT_MS") && text.contains(bad),
                "{text}"
            );
        }
        let ok = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_REPLICAS__HEARTBEAT_MS", "250")]),
        )
        .unwrap();
        assert_eq!(
            ok.replicas.heartbeat(),
            std::time::Duration::from_millis(250)
        );
    }

    #[test]
    fn production_refuses_the_example_secret() {
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[
                ("SERVER_ENVIRONMENT", "production"),
                ("SERVER_AUTH__COOKIE_SECURE", "true"),
            ]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("example value"));
    }

    #[test]
    fn secret_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt");
        std::fs::write(&path, "a-very-long-secret-read-from-a-file-0123456789\n").unwrap();
        let s = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_AUTH__JWT_SECRET_FILE", path.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(
            s.auth.jwt_secret.expose_secret(),
            "a-very-long-secret-read-from-a-file-0123456789"
        );
    }

    #[test]
    fn trusted_proxies_must_be_ip_addresses() {
        let ok = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_HTTP__TRUSTED_PROXIES", "127.0.0.1, ::1")]),
        )
        .unwrap();
        assert_eq!(ok.http.trusted_proxy_ips().len(), 2);
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_HTTP__TRUSTED_PROXIES", "proxy.local")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("TRUSTED_PROXIES"));
    }

    #[test]
    fn a_malformed_number_names_the_key() {
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_HTTP__PORT", "eighty")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("port"), "{err:#}");
    }

    #[test]
    fn metrics_are_off_unless_a_non_empty_token_is_set() {
        let off = Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
        assert_eq!(off.metrics.token(), None);
        let empty = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_METRICS__TOKEN", " ")]),
        )
        .unwrap();
        assert_eq!(empty.metrics.token(), None);
        let on = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_METRICS__TOKEN", "scrape-me")]),
        )
        .unwrap();
        assert_eq!(on.metrics.token(), Some("scrape-me"));
    }

    #[test]
    fn smtp_is_off_by_default_and_a_bad_sender_names_the_variable() {
        let off = Settings::load_from(Path::new("/nonexistent"), &[]).unwrap();
        assert!(!off.smtp.enabled());
        assert_eq!(off.control.command_ttl_seconds, 300);
        let on = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[
                ("SERVER_SMTP__HOST", "127.0.0.1"),
                ("SERVER_SMTP__PORT", "2525"),
                ("SERVER_SMTP__TLS", "none"),
            ]),
        )
        .unwrap();
        assert!(on.smtp.enabled());
        assert_eq!(on.smtp.tls, SmtpTls::None);
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[
                ("SERVER_SMTP__HOST", "smtp.example.com"),
                ("SERVER_SMTP__FROM", "not an address"),
            ]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("SERVER_SMTP__FROM"), "{err:#}");
    }

    #[test]
    fn control_lifetimes_must_be_positive_and_the_public_url_an_address() {
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_CONTROL__COMMAND_TTL_SECONDS", "0")]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("COMMAND_TTL_SECONDS"),
            "{err:#}"
        );
        let err = Settings::load_from(
            Path::new("/nonexistent"),
            &vars(&[("SERVER_HTTP__PUBLIC_URL", "homecontrol.example.com")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("PUBLIC_URL"), "{err:#}");
    }

    #[test]
    fn every_env_var_is_documented_in_config_readme() {
        let doc = include_str!("../../config/README.md");
        for var in ENV_VARS {
            assert!(
                doc.contains(&format!("`{var}`")),
                "config/README.md lacks `{var}`"
            );
        }
    }
}
