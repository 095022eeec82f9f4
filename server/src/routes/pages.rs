//! Shared plumbing for browser pages: the logged-in user, the CSRF cookie,
//! rendering templates, and turning errors into calm HTML pages.

use std::{future::Future, pin::Pin};

use actix_web::{
    FromRequest, HttpRequest, HttpResponse,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    dev::{Payload, ServiceResponse},
    http::{StatusCode, header},
    middleware::ErrorHandlerResponse,
    web,
};
use askama::Template;

use crate::{
    domain::{Membership, UserId},
    error::AppError,
    services::auth::{CSRF_COOKIE, SESSION_COOKIE, new_csrf_token},
    state::AppState,
    store::people,
    views::{Chrome, ErrorPage, UserView},
};

/// The logged-in user of a request, with their memberships.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// Id.
    pub id: UserId,
    /// E-mail.
    pub email: String,
    /// Shown name.
    pub display_name: String,
    /// What they may see.
    pub memberships: Vec<Membership>,
}

impl CurrentUser {
    /// The view of this user for the page header.
    pub fn view(&self) -> UserView {
        let role = self.memberships.iter().map(|m| m.role).max();
        UserView {
            display_name: self.display_name.clone(),
            email: self.email.clone(),
            role_label: role.map(|r| r.label().to_owned()).unwrap_or_default(),
        }
    }
}

impl FromRequest for CurrentUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        Box::pin(async move {
            let state =
                state.ok_or_else(|| AppError::Unexpected(anyhow::anyhow!("AppState missing")))?;
            let user_id = token
                .and_then(|t| state.sessions.verify(&t))
                .ok_or(AppError::Unauthorized)?;
            let user = people::find_user(&state.db, user_id)
                .await?
                .ok_or(AppError::Unauthorized)?;
            if user.disabled {
                return Err(AppError::Unauthorized);
            }
            let memberships = people::memberships_of(&state.db, user_id).await?;
            Ok(CurrentUser {
                id: user.id,
                email: user.email,
                display_name: user.display_name,
                memberships,
            })
        })
    }
}

/// The request's CSRF token, and a cookie to set when it had none yet.
pub fn csrf(req: &HttpRequest, secure: bool) -> (String, Option<Cookie<'static>>) {
    if let Some(c) = req.cookie(CSRF_COOKIE).filter(|c| c.value().len() == 48) {
        return (c.value().to_owned(), None);
    }
    let token = new_csrf_token();
    let cookie = Cookie::build(CSRF_COOKIE, token.clone())
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::days(1))
        .finish();
    (token, Some(cookie))
}

/// Refuse a form whose CSRF token does not match the request's cookie
/// (double submit; see `services::auth`).
pub fn check_csrf(req: &HttpRequest, submitted: &str) -> Result<(), AppError> {
    if crate::services::auth::csrf_matches(
        req.cookie(CSRF_COOKIE).as_ref().map(|c| c.value()),
        submitted,
    ) {
        Ok(())
    } else {
        Err(AppError::Forbidden)
    }
}

/// Page chrome for a request.
pub fn chrome(
    req: &HttpRequest,
    state: &AppState,
    user: Option<&CurrentUser>,
) -> (Chrome, Option<Cookie<'static>>) {
    let (csrf_token, cookie) = csrf(req, state.settings.auth.cookie_secure);
    let lang = preferred_lang(req);
    (
        Chrome {
            user: user.map(CurrentUser::view),
            csrf_token,
            lang,
            assets: state.assets.clone(),
        },
        cookie,
    )
}

/// The UI language the browser prefers: `fi` or `en`.
pub fn preferred_lang(req: &HttpRequest) -> String {
    let accept = req
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.trim_start().starts_with("fi") {
        "fi".into()
    } else {
        "en".into()
    }
}

/// Render a template as an HTML response with the given status, setting the
/// CSRF cookie when one was minted.
pub fn render<T: Template>(
    status: StatusCode,
    page: &T,
    cookie: Option<Cookie<'static>>,
) -> Result<HttpResponse, AppError> {
    let html = page
        .render()
        .map_err(|e| AppError::Unexpected(anyhow::anyhow!("rendering template: {e}")))?;
    let mut res = HttpResponse::build(status);
    res.content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(c) = cookie {
        res.cookie(c);
    }
    Ok(res.body(html))
}

/// A redirect (303 See Other, so a POST becomes a GET).
pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .finish()
}

/// The client's address for throttling and logs. Forwarding headers are
/// believed only when the TCP peer is a configured trusted proxy; otherwise
/// anyone could name a fresh address per request and escape the per-address
/// login throttle.
pub fn client_address(req: &HttpRequest, state: &AppState) -> String {
    let peer = req.peer_addr().map(|a| a.ip());
    match peer {
        Some(ip) if state.settings.http.trusted_proxy_ips().contains(&ip) => req
            .connection_info()
            .realip_remote_addr()
            .map(|a| a.to_owned())
            .unwrap_or_else(|| ip.to_string()),
        Some(ip) => ip.to_string(),
        None => "unknown".to_owned(),
    }
}

/// Only same-site relative paths are allowed as a post-login target.
pub fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.contains("://");
    if ok { next.to_owned() } else { "/".to_owned() }
}

fn is_machine_path(path: &str) -> bool {
    path.starts_with("/api/")
        || path.starts_with("/agent/")
        || path.starts_with("/health")
        || path == "/metrics"
        || path.starts_with("/static/")
}

/// Error-handler middleware: browser routes get an HTML error page (401 →
/// redirect to the login page); API, agent and health routes keep JSON.
pub fn render_error_pages<B>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let path = res.request().path().to_owned();
    if is_machine_path(&path) {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let (req, old) = res.into_parts();
    if status == StatusCode::UNAUTHORIZED {
        let full = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = format!("/login?next={}", url_encode(full));
        let resp = redirect(&target);
        return Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, resp).map_into_right_body(),
        ));
    }
    let app_err = old.error().and_then(|e| e.as_error::<AppError>());
    let (title, message) = match app_err {
        Some(e) => (e.title().to_owned(), e.public_message()),
        None => (
            status.canonical_reason().unwrap_or("Error").to_owned(),
            match status {
                StatusCode::NOT_FOUND => AppError::NotFound.public_message(),
                StatusCode::METHOD_NOT_ALLOWED => "That action is not available here.".to_owned(),
                s if s.is_client_error() => {
                    "The request could not be understood. Go back and try again.".to_owned()
                }
                _ => AppError::Unexpected(anyhow::anyhow!("")).public_message(),
            },
        ),
    };
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let page = state.map(|s| ErrorPage {
        chrome: Chrome {
            user: None,
            csrf_token: String::new(),
            lang: preferred_lang(&req),
            assets: s.assets.clone(),
        },
        status: status.as_u16(),
        title,
        message,
    });
    let resp = match page.map(|p| render(status, &p, None)) {
        Some(Ok(r)) => r,
        _ => HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body("Error"),
    };
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, resp).map_into_right_body(),
    ))
}

/// Percent-encode a path for a query parameter.
pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_accepted_as_next() {
        assert_eq!(safe_next("/sites/x"), "/sites/x");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil"), "/");
        assert_eq!(safe_next(""), "/");
    }
}
