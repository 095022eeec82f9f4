//! Logging in, session tokens and CSRF tokens.
//!
//! A session is a JWT (HS256) in an `HttpOnly`, `SameSite=Strict` cookie with
//! an expiry. Forms carry a CSRF token that must equal the value of a separate
//! random `hc_csrf` cookie (double submit); with `SameSite=Strict` on both, a
//! foreign page can neither send our cookies nor read the token.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sea_orm::ConnectionTrait;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{secrets, throttle::LoginThrottle};
use crate::{
    config::AuthSettings,
    domain::UserId,
    store::{StoreError, people},
};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "hc_session";
/// Name of the CSRF cookie.
pub const CSRF_COOKIE: &str = "hc_csrf";

/// Why a login did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong e-mail or password, or a disabled account (not told apart).
    #[error("wrong e-mail or password")]
    BadCredentials,
    /// Too many recent failures for this e-mail or address.
    #[error("too many attempts; wait {0:?}")]
    Throttled(Duration),
    /// The database could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Check credentials, with throttling and equal work for unknown accounts.
pub async fn login(
    db: &impl ConnectionTrait,
    throttle: &LoginThrottle,
    email: &str,
    password: &str,
    client: &str,
) -> Result<people::UserRecord, LoginError> {
    let email_key = format!("email:{}", email.trim().to_lowercase());
    let ip_key = format!("ip:{client}");
    let keys = [email_key.as_str(), ip_key.as_str()];
    if let Some(wait) = throttle.check(&keys, Instant::now()) {
        return Err(LoginError::Throttled(wait));
    }
    let user = people::find_user_by_email(db, email).await?;
    let phc = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| secrets::DUMMY_HASH.to_owned());
    let ok = secrets::verify_password(password.to_owned(), phc).await;
    match user {
        Some(u) if ok && !u.disabled => {
            throttle.clear(&email_key);
            Ok(u)
        }
        _ => {
            throttle.fail(&keys, Instant::now());
            Err(LoginError::BadCredentials)
        }
    }
}

/// Claims inside a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: uuid::Uuid,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
}

/// Signing keys for session tokens.
#[derive(Clone)]
pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Keys from the configured secret.
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.expose_secret().as_bytes();
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl: Duration::from_secs(settings.session_ttl_minutes * 60),
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed token for `user`, valid from `now_unix` for the TTL.
    pub fn issue(&self, user: UserId, now_unix: i64) -> anyhow::Result<String> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: user.0,
            iat: now_unix,
            exp: now_unix + ttl,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The user of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Option<UserId> {
        self.claims(token).map(|c| UserId(c.sub))
    }

    /// When a valid, unexpired token expires (seconds since the epoch).
    /// Long-lived connections opened with it (the live feed) end then.
    pub fn expires_at(&self, token: &str) -> Option<i64> {
        self.claims(token).map(|c| c.exp)
    }

    fn claims(&self, token: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

/// A fresh random CSRF token.
pub fn new_csrf_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Constant-time check that the submitted token equals the cookie's.
pub fn csrf_matches(cookie: Option<&str>, submitted: &str) -> bool {
    let Some(cookie) = cookie else { return false };
    if cookie.len() != submitted.len() || cookie.is_empty() {
        return false;
    }
    cookie
        .bytes()
        .zip(submitted.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn keys(ttl_min: u64) -> SessionKeys {
        SessionKeys::new(&AuthSettings {
            jwt_secret: SecretString::from("k".repeat(40)),
            session_ttl_minutes: ttl_min,
            cookie_secure: false,
        })
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let k = keys(1);
        let user = UserId::new();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let t = k.issue(user, now).unwrap();
        assert_eq!(k.verify(&t), Some(user));
        assert_eq!(k.expires_at(&t), Some(now + 60));
        let old = k.issue(user, now - 120).unwrap();
        assert_eq!(k.verify(&old), None);
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let other = SessionKeys::new(&AuthSettings {
            jwt_secret: SecretString::from("z".repeat(40)),
            session_ttl_minutes: 5,
            cookie_secure: false,
        });
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let t = other.issue(UserId::new(), now).unwrap();
        assert_eq!(keys(5).verify(&t), None);
        assert_eq!(keys(5).verify("not.a.jwt"), None);
    }

    #[test]
    fn csrf_requires_the_cookie_and_an_exact_match() {
        let t = new_csrf_token();
        assert!(csrf_matches(Some(&t), &t));
        assert!(!csrf_matches(None, &t));
        assert!(!csrf_matches(Some(&t), "x"));
        assert!(!csrf_matches(Some(""), ""));
    }
}
