//! A site's Controls page and its forms: setpoints, outputs, actions, the
//! installer's settings and the weekly schedule editor.
//!
//! Every form is a POST with the CSRF token; every handler opens the site
//! through the same access rule as the dashboard (404 for strangers), then
//! hands the form to [`crate::services::control`]. Accepted requests redirect
//! back to the page (POST → 303 → GET); refused ones re-render it with the
//! reason and a 4xx status.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use super::pages::{CurrentUser, check_csrf, chrome, redirect, render};
use crate::{
    domain::{
        Lang,
        control::{self as rules, ControlError},
    },
    error::AppError,
    services::{
        control::{self, Actor, ControlForm, RequestError, Requested, SettingsForm},
        sites::{self, OpenSite},
    },
    state::AppState,
    store::control as cstore,
    views::{
        controls::{
            ControlsContext, SchedulePage, controls_page, posted_rows, schedule_of, schedule_rows,
        },
        translate,
    },
};

fn actor(user: &CurrentUser, site: &OpenSite) -> Actor {
    Actor {
        id: user.id,
        name: user.display_name.clone(),
        email: user.email.clone(),
        role: site.role,
    }
}

fn controls_path(site: &OpenSite) -> String {
    format!("/sites/{}/controls", site.summary.site.site_id)
}

async fn render_controls(
    req: &HttpRequest,
    state: &AppState,
    user: &CurrentUser,
    site: &OpenSite,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let site_ref = site.summary.site;
    control::sweep_site(state, site_ref).await?;
    let access = rules::access(site.role);
    let controls = control::load(&state.db, site_ref).await?.visible_to(access);
    let (chrome, cookie) = chrome(req, state, Some(user));
    let page = controls_page(
        ControlsContext {
            chrome,
            site_id: site_ref.site_id.to_string(),
            site_name: site.summary.name.clone(),
            organisation: site.summary.organisation.clone(),
            agent_online: state.hub.agent_online(site_ref.site_id),
            access,
            can_configure: rules::may_configure(site.role),
            can_audit: rules::may_read_audit(site.role),
            error,
            notice,
        },
        &controls,
    );
    render(status, &page, cookie)
}

/// Query of `GET /sites/{id}/controls`.
#[derive(Debug, Deserialize)]
pub struct ControlsQuery {
    /// `sent`, `queued`, `held` or `saved` after a form.
    #[serde(default)]
    notice: Option<String>,
}

/// `GET /sites/{site_id}/controls`
pub async fn controls_page_handler(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ControlsQuery>,
) -> Result<HttpResponse, AppError> {
    let site = sites::open_by_path(&state.db, &user.memberships, &path).await?;
    let lang = super::pages::preferred_lang(&req);
    let notice = match query.notice.as_deref() {
        Some(n @ ("sent" | "queued" | "held" | "saved")) => {
            Some(translate(&lang, &format!("notice_{n}")).to_owned())
        }
        _ => None,
    };
    render_controls(&req, &state, &user, &site, None, notice, StatusCode::OK).await
}

/// What a refused request shows: the page again, with the reason in the
/// page's language.
async fn refused(
    req: &HttpRequest,
    state: &AppState,
    user: &CurrentUser,
    site: &OpenSite,
    err: RequestError,
) -> Result<HttpResponse, AppError> {
    let refusal = match err {
        RequestError::Store(e) => return Err(e.into()),
        ref other => other.refusal(),
    };
    let lang = Lang::from_code(&super::pages::preferred_lang(req));
    let status = match &err {
        RequestError::Control(ControlError::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        RequestError::Control(ControlError::NotAllowed(_)) => StatusCode::FORBIDDEN,
        RequestError::NoOwner | RequestError::MailOff => StatusCode::CONFLICT,
        RequestError::MailFailed => StatusCode::SERVICE_UNAVAILABLE,
        RequestError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = refusal.map(|r| r.text(lang));
    render_controls(req, state, user, site, message, None, status).await
}

async fn respond(
    req: &HttpRequest,
    state: &AppState,
    user: &CurrentUser,
    site: &OpenSite,
    result: Result<Requested, RequestError>,
) -> Result<HttpResponse, AppError> {
    let notice = match result {
        Ok(Requested::Sent {
            agent_online: true, ..
        }) => "sent",
        Ok(Requested::Sent { .. }) => "queued",
        Ok(Requested::Held { .. }) => "held",
        Err(e) => return refused(req, state, user, site, e).await,
    };
    Ok(redirect(&format!(
        "{}?notice={notice}",
        controls_path(site)
    )))
}

/// Body of `POST /sites/{id}/controls/setpoint`.
#[derive(Debug, Deserialize)]
pub struct SetpointBody {
    #[serde(default)]
    csrf_token: String,
    control: String,
    value: String,
}

/// `POST /sites/{site_id}/controls/setpoint`
pub async fn set_setpoint(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<SetpointBody>,
) -> Result<HttpResponse, AppError> {
    check_csrf(&req, &form.csrf_token)?;
    let site = sites::open_by_path(&state.db, &user.memberships, &path).await?;
    let form = form.into_inner();
    let request = ControlForm::Setpoint {
        control: form.control,
        value: form.value,
    };
    let result = control::request(&state, &site, &actor(&user, &site), request).await;
    respond(&req, &state, &user, &site, result).await
}

/// Body of `POST /sites/{id}/controls/output`.
#[derive(Debug, Deserialize)]
pub struct OutputBody {
    #[serde(default)]
    csrf_token: String,
    control: String,
    state: String,
}

/// `POST /sites/{site_id}/controls/output`
pub async fn set_output(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<OutputBody>,
) -> Result<HttpResponse, AppError> {
    check_csrf(&req, &form.csrf_token)?;
    let site = sites::open_by_path(&state.db, &user.memberships, &path).await?;
    let form = form.into_inner();
    let request = ControlForm::Output {
        control: form.control,
        state: form.state,
    };
    let result = control::request(&state, &site, &actor(&user, &site), request).await;
    respond(&req, &state, &user, &site, result).await
}

/// Body of `POST /sites/{id}/controls/action`.
#[derive(Debug, Deserialize)]
pub struct ActionBody {
    #[serde(default)]
    csrf_token: String,
    action: String,
    op: String,
    #[serde(default)]
    minutes: String,
}

/// `POST /sites/{site_id}/controls/action`
pub async fn run_action(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<ActionBody>,
) -> Result<HttpResponse, AppError> {
    check_csrf(&req, &form.csrf_token)?;
    let site = sites::open_by_path(&state.db, &user.memberships, &path).await?;
    let form = form.into_inner();
    let request = ControlForm::Action {
        action: form.action,
        op: form.op,
        minutes: form.minutes,
    };
    let result = control::request(&state, &site, &actor(&user, &site), request).await;
    respond(&req, &state, &user, &site, result).await
}

/// Body of `POST /sites/{id}/controls/settings`.
#[derive(Debug, Deserialize)]
pub struct SettingsBody {
    #[serde(default)]
    csrf_token: String,
    control: String,
    #[serde(default)]
    band_min: String,
    #[serde(default)]
    band_max: String,
    /// A checkbox: present (`on`) when ticked.
    #[serde(default)]
    homeowner_visible: Option<String>,
}

/// `POST /sites/{site_id}/controls/settings` (installers)
pub async fn save_settings(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<SettingsBody>,
) -> Result<HttpResponse, AppError> {
    check_csrf(&req, &form.csrf_token)?;
    let site = sites::open_by_path(&state.db, &user.memberships, &path).await?;
    let form = form.into_inner();
    let settings = SettingsForm {
        control: form.control,
        band_min: form.band_min,
        band_max: form.band_max,
        homeowner_visible: form.homeowner_visible.is_some(),
    };
    match control::update_settings(&state, &site, &actor(&user, &site), settings).await {
        Ok(()) => Ok(redirect(&format!("{}?notice=saved", controls_path(&site)))),
        Err(e) => refused(&req, &state, &user, &site, e).await,
    }
}

/// Query of the schedule editor.
#[derive(Debug, Deserialize)]
pub struct ScheduleQuery {
    control: String,
}

async fn render_schedule(
    req: &HttpRequest,
    state: &AppState,
    user: &CurrentUser,
    site: &OpenSite,
    control_key: &str,
    posted: Option<(&[(String, String)], &ControlError)>,
) -> Result<HttpResponse, AppError> {
    let site_ref = site.summary.site;
    let access = rules::access(site.role);
    if access == rules::Access::ReadOnly {
        return Err(AppError::Forbidden);
    }
    let controls = control::load(&state.db, site_ref).await?.visible_to(access);
    let w = controls
        .writable(control_key)
        .filter(|w| w.info.schedulable)
        .ok_or(AppError::NotFound)?;
    let (chrome, cookie) = chrome(req, state, Some(user));
    let lang = chrome.lang.clone();
    let is_setpoint = w.info.kind == protocol::ControlKind::Setpoint;
    let (days, exceptions, on_value, off_value, error, status) = match posted {
        Some((form, error)) => {
            let (days, ex) = posted_rows(&lang, form);
            let get = |k: &str| {
                form.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.chars().take(32).collect::<String>())
                    .unwrap_or_default()
            };
            (
                days,
                ex,
                get("on_value"),
                get("off_value"),
                Some(error.text(Lang::from_code(&lang))),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        None => {
            let current = cstore::latest_schedule_request(&state.db, site_ref, &w.key)
                .await?
                .and_then(|r| schedule_of(&r));
            let (days, ex) = schedule_rows(&lang, current.as_ref());
            let fmt = |v: f64| rules::format_value(v, w.info.step);
            // Without a schedule yet: "on" is what the point has now (or the
            // middle of the band), "off" two degrees lower, both in the band.
            let (on, off) = match &current {
                Some(s) => (fmt(s.on_value), fmt(s.off_value)),
                None => {
                    let now = w
                        .state
                        .as_ref()
                        .and_then(|s| s.commanded.or(s.reported))
                        .filter(|v| w.band.contains(*v))
                        .unwrap_or((w.band.min + w.band.max) / 2.0);
                    let now = rules::tidy(now, w.info.step);
                    (fmt(now), fmt((now - 2.0).max(w.band.min)))
                }
            };
            (days, ex, on, off, None, StatusCode::OK)
        }
    };
    let page = SchedulePage {
        chrome,
        site_id: site_ref.site_id.to_string(),
        site_name: site.summary.name.clone(),
        control: w.key.clone(),
        label: w
            .label
            .as_deref()
            .map(|l| crate::domain::dashboard::localized_label(l, &lang).to_owned())
            .unwrap_or_else(|| w.info.point.replace('_', " ")),
        unit: w.unit.clone(),
        time_zone: site.summary.timezone.clone(),
        is_setpoint,
        on_value,
        off_value,
        days,
        exceptions,
        error,
        band_text: format!(
            "{}–{} {}",
            rules::format_value(w.band.min, w.info.step),
            rules::format_value(w.band.max, w.info.step),
            w.unit
        ),
        max_exceptions: rules::MAX_EXCEPTIONS,
    };
    render(status, &page, cookie)
}

/// `GET /sites/{site_id}/schedule?control=<device/point>`
pub async fn schedule_page(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ScheduleQuery>,
) -> Result<HttpResponse, AppError> {
    let site = sites::open_by_path(&state.db, &user.memberships, &path).await?;
    render_schedule(&req, &state, &user, &site, &query.control, None).await
}

/// `POST /sites/{site_id}/schedule`: the editor's fields (see
/// [`crate::domain::control::parse_schedule`]) plus `control` and `csrf_token`.
pub async fn save_schedule(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, AppError> {
    let fields = form.into_inner();
    let field = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    check_csrf(&req, &field("csrf_token"))?;
    let site = sites::open_by_path(&state.db, &user.memberships, &path).await?;
    let control_key = field("control");
    let schedule_fields: Vec<(String, String)> = fields
        .iter()
        .filter(|(n, _)| n != "csrf_token" && n != "control")
        .cloned()
        .collect();
    let request = ControlForm::Schedule {
        control: control_key.clone(),
        fields: schedule_fields,
    };
    match control::request(&state, &site, &actor(&user, &site), request).await {
        Err(RequestError::Control(err @ ControlError::Invalid(_)))
            if control::load(&state.db, site.summary.site)
                .await?
                .visible_to(rules::access(site.role))
                .writable(&control_key)
                .is_some() =>
        {
            render_schedule(
                &req,
                &state,
                &user,
                &site,
                &control_key,
                Some((&fields, &err)),
            )
            .await
        }
        other => respond(&req, &state, &user, &site, other).await,
    }
}
