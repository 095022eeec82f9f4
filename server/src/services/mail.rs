//! Outgoing e-mail over SMTP (lettre, rustls).
//!
//! One [`Mailer`] per process, built from `SERVER_SMTP__*`. When no relay is
//! configured the mailer is *off*, and features that depend on mail (the
//! confirmation of changes outside a comfort band) say so instead of
//! pretending to have sent something.

use std::time::Duration;

use anyhow::Context;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};
use secrecy::ExposeSecret;

use crate::config::{SmtpSettings, SmtpTls};

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// No relay is configured.
    #[error("e-mail is not configured on this server")]
    NotConfigured,
    /// The address cannot be used as a recipient.
    #[error("'{0}' is not a usable e-mail address")]
    BadAddress(String),
    /// The relay refused or could not be reached.
    #[error("the mail relay did not accept the message: {0}")]
    Relay(String),
}

/// Sends plain-text mail through the configured relay; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    inner: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("configured", &self.is_configured())
            .finish()
    }
}

impl Mailer {
    /// A mailer for `settings` (off when no host is set). Fails on settings
    /// lettre cannot use (checked at startup).
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        if !settings.enabled() {
            return Ok(Self { inner: None });
        }
        let host = settings.host.trim();
        let builder = match settings.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .with_context(|| {
                    format!("`SERVER_SMTP__HOST` '{host}' cannot be used for STARTTLS")
                })?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .with_context(|| format!("`SERVER_SMTP__HOST` '{host}' cannot be used for TLS"))?,
        };
        let mut builder = builder
            .port(settings.port)
            .timeout(Some(Duration::from_secs(settings.timeout_seconds)));
        if !settings.username.trim().is_empty() {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(
                settings.username.trim().to_owned(),
                password,
            ));
        }
        let from: Mailbox = settings.from.parse().with_context(|| {
            format!("`SERVER_SMTP__FROM` '{}' is not an address", settings.from)
        })?;
        Ok(Self {
            inner: Some((builder.build(), from)),
        })
    }

    /// A mailer that sends nothing.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Whether a relay is configured.
    pub fn is_configured(&self) -> bool {
        self.inner.is_some()
    }

    /// Send one plain-text message and wait for the relay's acceptance.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        let Some((transport, from)) = &self.inner else {
            return Err(MailError::NotConfigured);
        };
        let to: Mailbox = to
            .parse()
            .map_err(|_| MailError::BadAddress(to.to_owned()))?;
        let msg = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| MailError::Relay(e.to_string()))?;
        transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Relay(e.to_string()))
    }
}
