//! `GET /static/{path}`: files embedded in the binary.

use actix_web::{HttpResponse, http::header, web};

use crate::{error::AppError, state::AppState};

/// Serve an embedded file. URLs carry a content hash (`?v=`), so a year of
/// caching is safe.
pub async fn static_file(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (bytes, content_type) = state.assets.get(&path).ok_or(AppError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(bytes))
}
