//! Password hashing (argon2id) and agent secrets (random, stored as SHA-256).
//!
//! Agent secrets are 256 random bits, so a fast hash is enough to make a
//! leaked database useless while keeping reconnect storms cheap; passwords are
//! low-entropy and get argon2id, run on the blocking pool.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Hash a password with argon2id (default parameters), off the async runtime.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
    })
    .await?
}

/// A valid argon2id hash of a random password, used to spend the same time
/// on unknown e-mail addresses as on known ones.
pub(crate) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q8v0t6g6z6a2j7qv2Xc6o7uGkF1x1oJ0oG0v1C3pE1E";

/// Check a password against a PHC hash, off the async runtime. A malformed
/// hash counts as a mismatch.
pub async fn verify_password(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// A new agent secret: 32 random bytes, base64url without padding.
pub fn new_agent_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex SHA-256 of an agent secret, as stored.
pub fn hash_agent_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of a presented secret with the stored hash.
pub fn agent_secret_matches(secret: &str, stored_hash: &str) -> bool {
    let presented = hash_agent_secret(secret);
    let (a, b) = (presented.as_bytes(), stored_hash.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_hash_verifies_and_rejects_wrong_password() {
        let h = hash_password("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), h.clone()).await);
        assert!(!verify_password("wrong".into(), h).await);
    }

    #[tokio::test]
    async fn dummy_hash_parses_and_matches_nothing() {
        assert!(!verify_password("anything".into(), DUMMY_HASH.into()).await);
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn agent_secrets_are_long_random_and_compare_by_hash() {
        let a = new_agent_secret();
        let b = new_agent_secret();
        assert_ne!(a, b);
        assert!(a.len() >= 43);
        let h = hash_agent_secret(&a);
        assert!(agent_secret_matches(&a, &h));
        assert!(!agent_secret_matches(&b, &h));
        assert!(!agent_secret_matches(&a, "short"));
    }
}
