//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use sea_orm::ConnectionTrait;

use crate::state::AppState;

/// `GET /health`: the process answers. Always 200; says whether the database does.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let db_ok = state.db.execute_unprepared("SELECT 1").await.is_ok();
    state.db_health.record(db_ok);
    state.metrics.database_up.set(i64::from(db_ok));
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "database": if db_ok { "ok" } else { "unavailable" },
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /health/ready`: 200 only when the database answers (for load balancers).
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.db.execute_unprepared("SELECT 1").await {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"error": "temporarily_unavailable"})),
    }
}
