//! `GET|POST /confirm/{token}`: the page an e-mailed confirmation link opens.
//!
//! No login is needed: the link is the second channel, a 256-bit one-time
//! token sent only to the site's homeowners and stored only as a hash. GET
//! shows the held change and never confirms or declines it (mail scanners
//! fetch links; the only thing a GET may do is mark a command whose links all
//! expired as expired, which the Controls page does too); the POST, with the
//! page's CSRF token, confirms or declines. An expired, used or unknown link
//! gets a page saying so, with 410, 409 or 404.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use super::pages::{check_csrf, chrome, render};
use crate::{
    error::AppError,
    services::control::{self, ConfirmLookup, Decided},
    state::AppState,
    views::controls::{ConfirmPage, ConfirmState, Moment},
};

/// Longest token accepted (ours are 43 characters).
const MAX_TOKEN_LEN: usize = 128;

fn page(
    req: &HttpRequest,
    state: &AppState,
    token: &str,
    st: ConfirmState,
) -> (ConfirmPage, Option<actix_web::cookie::Cookie<'static>>) {
    let (chrome, cookie) = chrome(req, state, None);
    (
        ConfirmPage {
            chrome,
            state: st,
            site_name: String::new(),
            requested_by: String::new(),
            requested_at: None,
            target: String::new(),
            value: String::new(),
            reason: String::new(),
            expires_at: None,
            action: format!("/confirm/{token}"),
        },
        cookie,
    )
}

fn status_of(st: &ConfirmState) -> StatusCode {
    match st {
        ConfirmState::Ready | ConfirmState::Confirmed | ConfirmState::Declined => StatusCode::OK,
        ConfirmState::Expired => StatusCode::GONE,
        ConfirmState::Used => StatusCode::CONFLICT,
        ConfirmState::Unknown => StatusCode::NOT_FOUND,
    }
}

/// `GET /confirm/{token}`
pub async fn confirm_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let token = path.into_inner();
    let lookup = if token.len() > MAX_TOKEN_LEN {
        ConfirmLookup::Unknown
    } else {
        control::lookup_confirmation(&state, &token).await?
    };
    let st = match &lookup {
        ConfirmLookup::Valid(_) => ConfirmState::Ready,
        ConfirmLookup::Expired => ConfirmState::Expired,
        ConfirmLookup::Used => ConfirmState::Used,
        ConfirmLookup::Unknown => ConfirmState::Unknown,
    };
    let status = status_of(&st);
    let (mut p, cookie) = page(&req, &state, &token, st);
    if let ConfirmLookup::Valid(v) = lookup {
        p.site_name = v.site_name;
        p.requested_by = v.requested_by;
        p.requested_at = Some(Moment::of(v.requested_at));
        p.target = v.target;
        p.value = v.value;
        p.reason = v.reason;
        p.expires_at = Some(Moment::of(v.expires_at));
    }
    render(status, &p, cookie)
}

/// Body of `POST /confirm/{token}`.
#[derive(Debug, Deserialize)]
pub struct DecisionBody {
    #[serde(default)]
    csrf_token: String,
    decision: String,
}

/// `POST /confirm/{token}`
pub async fn confirm_decision(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<DecisionBody>,
) -> Result<HttpResponse, AppError> {
    check_csrf(&req, &form.csrf_token)?;
    let token = path.into_inner();
    let confirm = match form.decision.as_str() {
        "confirm" => true,
        "decline" => false,
        _ => return Err(AppError::Validation("Choose confirm or decline.".into())),
    };
    let decided = if token.len() > MAX_TOKEN_LEN {
        Decided::Unknown
    } else {
        control::decide(&state, &token, confirm).await?
    };
    let st = match decided {
        Decided::Confirmed => ConfirmState::Confirmed,
        Decided::Declined => ConfirmState::Declined,
        Decided::Expired => ConfirmState::Expired,
        Decided::Used => ConfirmState::Used,
        Decided::Unknown => ConfirmState::Unknown,
    };
    let status = status_of(&st);
    let (p, cookie) = page(&req, &state, &token, st);
    render(status, &p, cookie)
}
