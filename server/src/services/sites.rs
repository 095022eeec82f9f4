//! Opening a site on behalf of a user.

use sea_orm::ConnectionTrait;

use crate::{
    domain::{Membership, Role, SiteId, access::role_on_site, dashboard::PointMeta},
    error::AppError,
    hub::Hub,
    store::{catalogue, people, readings},
};

/// A site the user may see, with their role on it.
#[derive(Debug, Clone)]
pub struct OpenSite {
    /// The site.
    pub summary: people::SiteSummary,
    /// The user's strongest role there.
    pub role: Role,
}

/// The site if the memberships reach it; otherwise `NotFound`, exactly as
/// for a site that does not exist, so ids of other tenants' sites leak nothing.
pub async fn open(
    db: &impl ConnectionTrait,
    memberships: &[Membership],
    id: SiteId,
) -> Result<OpenSite, AppError> {
    let summary = people::find_site(db, id).await?.ok_or(AppError::NotFound)?;
    let role = role_on_site(memberships, summary.site).ok_or(AppError::NotFound)?;
    Ok(OpenSite { summary, role })
}

/// Open the site named by a URL path segment (404 for strangers and
/// malformed ids alike), without loading its points.
pub async fn open_by_path(
    db: &impl ConnectionTrait,
    memberships: &[Membership],
    raw_id: &str,
) -> Result<OpenSite, AppError> {
    let id: SiteId = raw_id.parse().map_err(|_| AppError::NotFound)?;
    open(db, memberships, id).await
}

/// Open the site named by a URL path segment for viewing: parse the id, check
/// access (404 for strangers and malformed ids alike) and make sure the live
/// values are loaded.
pub async fn open_for_viewing(
    db: &impl ConnectionTrait,
    hub: &Hub,
    memberships: &[Membership],
    raw_id: &str,
) -> Result<(OpenSite, Vec<PointMeta>), AppError> {
    let id: SiteId = raw_id.parse().map_err(|_| AppError::NotFound)?;
    let site = open(db, memberships, id).await?;
    let points = points_with_live_values(db, hub, &site).await?;
    Ok((site, points))
}

/// The site's points, and make sure the hub holds their newest values
/// (loading them from the database after a server restart).
pub async fn points_with_live_values(
    db: &impl ConnectionTrait,
    hub: &Hub,
    site: &OpenSite,
) -> Result<Vec<PointMeta>, AppError> {
    let points = catalogue::points_of_site(db, site.summary.site).await?;
    if !hub.is_loaded(site.summary.site.site_id) {
        let mut latest = Vec::with_capacity(points.len());
        for p in &points {
            if let Some(r) = readings::latest(db, p.id).await? {
                latest.push(r);
            }
        }
        hub.load(site.summary.site.site_id, &latest);
    }
    Ok(points)
}
