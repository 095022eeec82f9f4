//! PLACEHOLDER view structs (replaced by the ui branch).
use askama::Template;
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct AssetTable;
impl AssetTable {
    pub fn build() -> Self {
        AssetTable
    }
    pub fn get(&self, _path: &str) -> Option<(&'static [u8], &'static str)> {
        None
    }
}
pub struct Chrome {
    pub user: Option<UserView>,
    pub csrf_token: String,
    pub lang: String,
    pub assets: Arc<AssetTable>,
}
impl Chrome {
    pub fn asset(&self, path: &str) -> String {
        format!("/static/{path}")
    }
}
pub struct UserView {
    pub display_name: String,
    pub email: String,
    pub role_label: String,
}
#[derive(Template)]
#[template(path = "auth/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    pub email: String,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub next: String,
}
#[derive(Template)]
#[template(path = "site/list.html")]
pub struct SitesPage {
    pub chrome: Chrome,
    pub sites: Vec<SiteCard>,
}
pub struct SiteCard {
    pub id: String,
    pub name: String,
    pub organisation: String,
    pub online: bool,
    pub last_reading_at: Option<String>,
}
#[derive(Template)]
#[template(path = "site/dashboard.html")]
pub struct DashboardPage {
    pub chrome: Chrome,
    pub site_id: String,
    pub site_name: String,
    pub organisation: String,
    pub gauges: Vec<GaugeView>,
    pub lamps: Vec<LampView>,
    pub agent_online: bool,
    pub last_reading_at: Option<String>,
    pub live_url: String,
}
pub struct GaugeView {
    pub point_id: String,
    pub label: String,
    pub unit: String,
    pub min: f64,
    pub max: f64,
    pub value: Option<f64>,
    pub decimals: u8,
}
pub struct LampView {
    pub point_id: String,
    pub label: String,
    pub on: Option<bool>,
    pub alarm: bool,
}
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub title: String,
    pub message: String,
}
