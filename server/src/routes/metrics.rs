//! `GET /metrics`: Prometheus text exposition, for a scraper that holds the
//! token. Without `SERVER_METRICS__TOKEN` the route does not exist (404), and
//! a wrong or missing token is also answered 404, so the endpoint does not
//! announce itself to strangers.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use sha2::{Digest, Sha256};

use crate::{error::AppError, state::AppState};

/// Constant-time comparison of the presented token with the configured one
/// (hashing first makes the lengths equal).
fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(presented), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Serve the metrics to a holder of the token.
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let Some(expected) = state.settings.metrics.token() else {
        return Err(AppError::NotFound);
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !presented.is_some_and(|p| token_matches(p, expected)) {
        return Err(AppError::NotFound);
    }
    let up = state.db_health.is_up(&state.db).await;
    state.metrics.database_up.set(i64::from(up));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(state.metrics.render(std::time::SystemTime::now())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }
}
