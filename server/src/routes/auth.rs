//! Login and logout.

use actix_web::{
    HttpRequest, HttpResponse,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    http::StatusCode,
    web,
};
use serde::Deserialize;

use super::pages::{chrome, client_address, redirect, render, safe_next};
use crate::{
    error::AppError,
    services::auth::{self, CSRF_COOKIE, LoginError, SESSION_COOKIE, csrf_matches},
    state::AppState,
    views::LoginPage,
};

/// Query of `GET /login`.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /login`
pub async fn login_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, AppError> {
    let (chrome, cookie) = chrome(&req, &state, None);
    let next = safe_next(query.next.as_deref().unwrap_or("/"));
    // The form renders without the database; say so rather than let the
    // person type a password that cannot be checked right now.
    let notice = (!state.db_health.is_up(&state.db).await)
        .then(|| crate::views::translate(&chrome.lang, "data_unavailable").to_owned());
    let page = LoginPage {
        chrome,
        email: String::new(),
        error: None,
        notice,
        next,
    };
    render(StatusCode::OK, &page, cookie)
}

/// Body of `POST /login`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf_token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let next = safe_next(&form.next);
    let (chrome, cookie) = chrome(&req, &state, None);
    let retry = |chrome, status: StatusCode, msg: String, cookie| {
        let page = LoginPage {
            chrome,
            email: form.email.clone(),
            error: Some(msg),
            notice: None,
            next: next.clone(),
        };
        render(status, &page, cookie)
    };
    if !csrf_matches(
        req.cookie(CSRF_COOKIE).as_ref().map(|c| c.value()),
        &form.csrf_token,
    ) {
        return retry(
            chrome,
            StatusCode::FORBIDDEN,
            "The form expired. Please log in again.".into(),
            cookie,
        );
    }
    let client = client_address(&req, &state);
    match auth::login(
        &state.db,
        &state.throttle,
        &form.email,
        &form.password,
        &client,
    )
    .await
    {
        Ok(user) => {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let token = state.sessions.issue(user.id, now)?;
            let session = Cookie::build(SESSION_COOKIE, token)
                .path("/")
                .http_only(true)
                .secure(state.settings.auth.cookie_secure)
                .same_site(SameSite::Strict)
                .max_age(CookieDuration::seconds(
                    i64::try_from(state.sessions.ttl().as_secs()).unwrap_or(3600),
                ))
                .finish();
            tracing::info!(user_id = %user.id, "login");
            let mut res = redirect(&next);
            res.add_cookie(&session)
                .map_err(|e| AppError::Unexpected(anyhow::anyhow!("setting cookie: {e}")))?;
            Ok(res)
        }
        Err(LoginError::BadCredentials) => {
            tracing::info!(client = %client, "failed login");
            retry(
                chrome,
                StatusCode::UNAUTHORIZED,
                "Wrong e-mail or password.".into(),
                cookie,
            )
        }
        Err(LoginError::Throttled(wait)) => {
            let secs = wait.as_secs().max(1);
            retry(
                chrome,
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed attempts. Wait {secs} s and try again."),
                cookie,
            )
        }
        Err(LoginError::Store(e)) => Err(e.into()),
    }
}

/// Body of `POST /logout`.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf_token: String,
}

/// `POST /logout`: clears the session cookie.
pub async fn logout(
    req: HttpRequest,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, AppError> {
    if !csrf_matches(
        req.cookie(CSRF_COOKIE).as_ref().map(|c| c.value()),
        &form.csrf_token,
    ) {
        return Err(AppError::Forbidden);
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "")
        .path("/")
        .same_site(SameSite::Strict)
        .http_only(true)
        .finish();
    gone.make_removal();
    let mut res = redirect("/login");
    res.add_cookie(&gone)
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("clearing cookie: {e}")))?;
    Ok(res)
}
