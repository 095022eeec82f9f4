//! The one error type every handler returns.
//!
//! Browser routes get a calm HTML page; `/api/…` and agent routes get JSON
//! `{"error":"snake_case_code"}`. Unexpected errors are logged once with their
//! whole cause chain and the client sees only an opaque message.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};

/// Errors a request can end in.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Input failed validation; the message is safe to show.
    #[error("{0}")]
    Validation(String),
    /// Not logged in (browser routes redirect to the login page).
    #[error("not logged in")]
    Unauthorized,
    /// Logged in but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// No such thing, or not visible to this user (the two are not told apart).
    #[error("not found")]
    NotFound,
    /// The request conflicts with current state.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached right now.
    #[error("data temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A bug or an outage we did not foresee.
    #[error("unexpected error")]
    Unexpected(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        use sea_orm::DbErr;
        match e {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => AppError::Unavailable(e.into()),
            other => AppError::Unexpected(other.into()),
        }
    }
}

impl AppError {
    /// Stable machine-readable code for JSON bodies.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Validation(_) => "validation_failed",
            AppError::Unauthorized => "unauthorized",
            AppError::Forbidden => "forbidden",
            AppError::NotFound => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::Unavailable(_) => "temporarily_unavailable",
            AppError::Unexpected(_) => "internal_error",
        }
    }

    /// A short title for the HTML error page.
    pub fn title(&self) -> &'static str {
        match self {
            AppError::Validation(_) => "Check the form",
            AppError::Unauthorized => "Please log in",
            AppError::Forbidden => "Not allowed",
            AppError::NotFound => "Not found",
            AppError::Conflict(_) => "Conflict",
            AppError::Unavailable(_) => "Data temporarily unavailable",
            AppError::Unexpected(_) => "Something went wrong",
        }
    }

    /// A sentence safe to show to anyone.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Validation(m) | AppError::Conflict(m) => m.clone(),
            AppError::Unauthorized => "Log in to see this page.".into(),
            AppError::Forbidden => "Your account may not do this.".into(),
            AppError::NotFound => "There is nothing here, or you have no access to it.".into(),
            AppError::Unavailable(_) => {
                "The data store cannot be reached right now. Values will return by themselves; try again in a minute.".into()
            }
            AppError::Unexpected(_) => "The error was logged. Please try again.".into(),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// JSON by default; the HTML page is rendered by the error-page middleware
    /// for browser routes (see `routes::pages::render_error_pages`).
    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::Unexpected(e) => tracing::error!(error = ?e, "unexpected error"),
            AppError::Unavailable(e) => tracing::warn!(error = %e, "database unavailable"),
            _ => {}
        }
        HttpResponse::build(self.status_code())
            .insert_header(("X-Error-Code", self.code()))
            .json(serde_json::json!({ "error": self.code(), "message": self.public_message() }))
    }
}
