//! The site list and a site's live dashboard.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

use super::pages::{CurrentUser, chrome, redirect, render};
use crate::{
    domain::dashboard,
    error::AppError,
    services::sites,
    state::AppState,
    store::people,
    views::{DashboardPage, GaugeView, LampView, SiteCard, SitesPage},
};

fn rfc3339_ms(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `GET /`: a person with one site goes straight to it (a wall tablet, a
/// homeowner); others get the list.
pub async fn home(user: CurrentUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let visible = people::sites_visible_to(&state.db, &user.memberships).await?;
    match visible.as_slice() {
        [only] => Ok(redirect(&format!("/sites/{}", only.site.site_id))),
        _ => Ok(redirect("/sites")),
    }
}

/// `GET /sites`
pub async fn list_sites_page(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let visible = people::sites_visible_to(&state.db, &user.memberships).await?;
    let cards = visible
        .into_iter()
        .map(|s| SiteCard {
            id: s.site.site_id.to_string(),
            name: s.name,
            organisation: s.organisation,
            online: state.hub.agent_online(s.site.site_id),
            last_reading_at: state.hub.latest(s.site.site_id).1.and_then(rfc3339_ms),
        })
        .collect();
    let (chrome, cookie) = chrome(&req, &state, Some(&user));
    render(
        StatusCode::OK,
        &SitesPage {
            chrome,
            sites: cards,
        },
        cookie,
    )
}

/// `GET /sites/{site_id}`
pub async fn site_dashboard_page(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (site, points) =
        sites::open_for_viewing(&state.db, &state.hub, &user.memberships, &path).await?;
    let site_id = site.summary.site.site_id;
    let (latest, newest) = state.hub.latest(site_id);
    let latest: HashMap<i64, f64> = latest
        .iter()
        .filter(|r| r.quality != protocol::Quality::CommError)
        .map(|r| (r.point_id.0, r.value))
        .collect();
    let (gauges, lamps) = dashboard::layout(&points);
    let (chrome, cookie) = chrome(&req, &state, Some(&user));
    let lang = chrome.lang.clone();
    let label = |l: &str| capitalise(dashboard::localized_label(l, &lang));
    let page = DashboardPage {
        chrome,
        site_id: site_id.to_string(),
        site_name: site.summary.name,
        organisation: site.summary.organisation,
        gauges: gauges
            .into_iter()
            .map(|g| GaugeView {
                point_id: g.point_id.to_string(),
                value: latest.get(&g.point_id.0).copied(),
                label: label(&g.label),
                unit: g.unit,
                min: g.min,
                max: g.max,
                decimals: g.decimals,
            })
            .collect(),
        lamps: lamps
            .into_iter()
            .map(|l| LampView {
                point_id: l.point_id.to_string(),
                on: latest.get(&l.point_id.0).map(|v| *v >= 0.5),
                label: label(&l.label),
                alarm: l.alarm,
            })
            .collect(),
        agent_online: state.hub.agent_online(site_id),
        last_reading_at: newest.and_then(rfc3339_ms),
        live_url: format!("/sites/{site_id}/live"),
    };
    render(StatusCode::OK, &page, cookie)
}
