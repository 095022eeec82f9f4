//! A site's audit log: the page (newest entries, chain verified on every
//! view) and the whole chain as CSV.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, http::header, web};

use super::pages::{CurrentUser, chrome, render};
use crate::{
    domain::{audit, control::may_read_audit},
    error::AppError,
    services::sites::{self, OpenSite},
    state::AppState,
    store::audit as astore,
    views::controls::{AuditPage, audit_rows, chain_text},
};

/// Entries listed on the page (the CSV has all).
const PAGE_ROWS: u64 = 200;

async fn open_for_audit(
    state: &AppState,
    user: &CurrentUser,
    raw_id: &str,
) -> Result<OpenSite, AppError> {
    let site = sites::open_by_path(&state.db, &user.memberships, raw_id).await?;
    if !may_read_audit(site.role) {
        return Err(AppError::Forbidden);
    }
    Ok(site)
}

/// `GET /sites/{site_id}/audit`
pub async fn audit_page(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let site = open_for_audit(&state, &user, &path).await?;
    let site_ref = site.summary.site;
    let verified = astore::verify_site(&state.db, site_ref).await?;
    let rows = astore::recent(&state.db, site_ref, PAGE_ROWS).await?;
    let (chrome, cookie) = chrome(&req, &state, Some(&user));
    let (chain_ok, chain_text) = chain_text(&chrome.lang, &verified);
    let page = AuditPage {
        truncated: verified
            .as_ref()
            .map(|n| *n as u64 > PAGE_ROWS)
            .unwrap_or(false),
        rows: audit_rows(&rows),
        chrome,
        site_id: site_ref.site_id.to_string(),
        site_name: site.summary.name,
        chain_ok,
        chain_text,
    };
    render(StatusCode::OK, &page, cookie)
}

/// `GET /sites/{site_id}/audit.csv`: every entry with its hashes.
pub async fn audit_csv(
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let site = open_for_audit(&state, &user, &path).await?;
    let (entries, _) = astore::chain_of_site(&state.db, site.summary.site).await?;
    let name = format!("audit-{}.csv", site.summary.site.site_id);
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(audit::to_csv(&entries)))
}
