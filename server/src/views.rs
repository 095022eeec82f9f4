//! Server-rendered pages: askama view structs and the embedded static assets.
//!
//! Every page struct carries a [`Chrome`] (who is logged in, the CSRF token,
//! the UI language and the [`AssetTable`]) and renders `templates/<area>/<name>.html`
//! through `templates/base.html`. Deriving `askama_web::WebTemplate` makes each
//! page an actix-web `Responder`, so a handler simply returns the struct.
//!
//! Templates render prepared values only: numbers are formatted here
//! ([`GaugeView::display_value`]), timestamps get a UTC fallback text here and
//! are re-rendered in the viewer's local time by `static/js/*.js`. Live values
//! reach the browser over the WebSocket described in `static/js/dashboard.js`;
//! everything the script needs is passed through `data-*` attributes because
//! the server's CSP forbids inline scripts and styles.
//!
//! ```ignore
//! let assets = Arc::new(AssetTable::embedded());          // once, at startup
//! let chrome = Chrome { user: None, csrf_token, lang: "fi".into(), assets };
//! HttpResponse::Ok().body(LoginPage { chrome, .. }.render()?)
//! ```

use std::collections::HashMap;
use std::sync::Arc;

pub mod controls;

use askama::Template;
use sha2::{Digest, Sha256};

/// Everything the shared page frame (`templates/base.html`) needs.
#[derive(Clone)]
pub struct Chrome {
    /// The logged-in user; `None` renders the header without name and logout.
    pub user: Option<UserView>,
    /// Token echoed by every POST form on the page (logout, login).
    pub csrf_token: String,
    /// UI language, `"en"` or `"fi"`; anything else falls back to English texts.
    pub lang: String,
    /// Content-hashed static files, shared by all requests.
    pub assets: Arc<AssetTable>,
}

impl Chrome {
    /// Cache-busting URL of a file under `static/`, e.g.
    /// `asset("css/app.css")` → `"/static/css/app.css?v=1a2b3c4d"`.
    ///
    /// A path that is not embedded yields the bare `/static/<path>` URL (it will
    /// 404); the unit tests check that every path used by a template exists.
    pub fn asset(&self, path: &str) -> String {
        self.assets
            .url(path)
            .unwrap_or_else(|| format!("/static/{path}"))
    }

    /// The UI text for `key` in this page's language (see [`translate`]).
    pub fn t(&self, key: &str) -> &'static str {
        translate(&self.lang, key)
    }
}

/// The logged-in user as shown in the header.
#[derive(Clone)]
pub struct UserView {
    pub display_name: String,
    pub email: String,
    /// Already localised role name ("Homeowner", "Asukas", …).
    pub role_label: String,
}

/// `GET /login`; the form posts `email`, `password`, `csrf_token`, `next` to `/login`.
#[derive(Template, askama_web::WebTemplate)]
#[template(path = "auth/login.html")]
pub struct LoginPage {
    pub chrome: Chrome,
    /// Pre-filled e-mail (after a failed attempt).
    pub email: String,
    /// Shown as an alert above the form, e.g. "Wrong e-mail or password".
    pub error: Option<String>,
    /// Neutral message, e.g. "You have been logged out".
    pub notice: Option<String>,
    /// Local path to return to after login; echoed in a hidden field.
    pub next: String,
}

/// The list of sites the user may open. Each card links to `/sites/<id>`.
#[derive(Template, askama_web::WebTemplate)]
#[template(path = "site/list.html")]
pub struct SitesPage {
    pub chrome: Chrome,
    pub sites: Vec<SiteCard>,
}

/// One site on [`SitesPage`].
#[derive(Clone)]
pub struct SiteCard {
    pub id: String,
    pub name: String,
    pub organisation: String,
    /// Whether the site's agent is connected right now.
    pub online: bool,
    /// RFC 3339 UTC timestamp of the newest reading.
    pub last_reading_at: Option<String>,
}

impl SiteCard {
    /// UTC fallback text for `last_reading_at` (JS replaces it with local time).
    pub fn last_reading_text(&self) -> String {
        self.last_reading_at
            .as_deref()
            .map(utc_fallback)
            .unwrap_or_default()
    }
}

/// The live dashboard of one site (`templates/site/dashboard.html`).
#[derive(Template, askama_web::WebTemplate)]
#[template(path = "site/dashboard.html")]
pub struct DashboardPage {
    pub chrome: Chrome,
    pub site_id: String,
    pub site_name: String,
    pub organisation: String,
    pub gauges: Vec<GaugeView>,
    pub lamps: Vec<LampView>,
    pub agent_online: bool,
    /// RFC 3339 UTC timestamp of the newest reading.
    pub last_reading_at: Option<String>,
    /// Path of the browser WebSocket, e.g. `"/sites/<id>/live"`.
    pub live_url: String,
}

impl DashboardPage {
    /// UTC fallback text for `last_reading_at` (JS replaces it with local time).
    pub fn last_reading_text(&self) -> String {
        self.last_reading_at
            .as_deref()
            .map(utc_fallback)
            .unwrap_or_default()
    }
}

/// One analogue point drawn as a 240° arc gauge.
#[derive(Clone)]
pub struct GaugeView {
    pub point_id: String,
    pub label: String,
    /// Display symbol, e.g. `"°C"` or `"%"`.
    pub unit: String,
    /// Scale of the arc; values outside are drawn at the ends.
    pub min: f64,
    pub max: f64,
    /// Latest value; `None` shows "—".
    pub value: Option<f64>,
    /// Digits after the decimal separator.
    pub decimals: u8,
}

/// Length of the gauge arc in SVG `pathLength` units (see `dashboard.html`).
const ARC_LENGTH: f64 = 100.0;
/// Half of the gauge sweep in degrees: the arc runs from -120° to +120° (0° =
/// top). 240° rather than 270° keeps the dial short, so the numerals can be
/// larger on a landscape tablet. Must match `HALF_SWEEP_DEG` in dashboard.js.
const HALF_SWEEP_DEG: f64 = 120.0;

impl GaugeView {
    /// Position of the value on the scale, clamped to `0.0..=1.0` (0 when unknown).
    pub fn fraction(&self) -> f64 {
        match self.value {
            Some(v) if v.is_finite() && self.max > self.min => {
                ((v - self.min) / (self.max - self.min)).clamp(0.0, 1.0)
            }
            _ => 0.0,
        }
    }

    /// `stroke-dasharray` of the value arc, e.g. `"42.50 100"`.
    pub fn arc_dash(&self) -> String {
        format!("{:.2} {ARC_LENGTH}", self.fraction() * ARC_LENGTH)
    }

    /// Rotation of the marker dot in degrees (0 = top of the dial).
    pub fn needle_deg(&self) -> String {
        format!(
            "{:.2}",
            -HALF_SWEEP_DEG + 2.0 * HALF_SWEEP_DEG * self.fraction()
        )
    }

    /// The value with `decimals` digits in the language's notation, or "—".
    pub fn display_value(&self, lang: &str) -> String {
        match self.value {
            Some(v) if v.is_finite() => format_number(v, self.decimals, lang),
            _ => "—".to_string(),
        }
    }

    /// The scale ends as shown under the dial (no decimals needed there).
    pub fn min_text(&self, lang: &str) -> String {
        format_number(self.min, 0, lang)
    }

    pub fn max_text(&self, lang: &str) -> String {
        format_number(self.max, 0, lang)
    }

    /// `data-value` attribute: the raw number, or empty when unknown.
    pub fn raw_value(&self) -> String {
        self.value
            .filter(|v| v.is_finite())
            .map(|v| v.to_string())
            .unwrap_or_default()
    }
}

/// One binary point drawn as a round status lamp.
#[derive(Clone)]
pub struct LampView {
    pub point_id: String,
    pub label: String,
    /// `None` = not read yet / communication error.
    pub on: Option<bool>,
    /// Lit means alarm (red); otherwise a lit lamp is a normal state (green).
    pub alarm: bool,
}

impl LampView {
    /// `data-state` attribute and CSS hook: `"on"`, `"off"` or `"unknown"`.
    pub fn state(&self) -> &'static str {
        match self.on {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        }
    }
}

/// A calm error page with a link home (`templates/error.html`).
#[derive(Template, askama_web::WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    /// HTTP status shown on the page; the handler still sets the response status.
    pub status: u16,
    pub title: String,
    pub message: String,
}

/// Formats `v` with `decimals` digits; Finnish uses a decimal comma.
fn format_number(v: f64, decimals: u8, lang: &str) -> String {
    let mut s = format!("{:.*}", usize::from(decimals), v);
    // "-0.0" reads as an error on a wall display; show "0.0".
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s.remove(0);
    }
    if lang == "fi" {
        s = s.replace('.', ",");
    }
    s
}

/// "2026-11-21T12:00:01Z" → "2026-11-21 12:00 UTC"; unparsable input is returned as is.
fn utc_fallback(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    match time::OffsetDateTime::parse(rfc3339, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// UI texts owned by the templates (labels of points come from the server).
/// Unknown keys render as `??` so a missing text is visible (and the test
/// `templates_use_only_known_assets_and_texts` catches it first).
pub fn translate(lang: &str, key: &str) -> &'static str {
    let fi = lang == "fi";
    let (en, fi_text) = match key {
        "skip" => ("Skip to content", "Siirry sisältöön"),
        "logout" => ("Log out", "Kirjaudu ulos"),
        "login_title" => ("Sign in", "Kirjaudu sisään"),
        "login_lead" => (
            "Sign in to see your home.",
            "Kirjaudu nähdäksesi kotisi tiedot.",
        ),
        "data_unavailable" => (
            "Data temporarily unavailable: the data store cannot be reached right now. \
             Signing in works again as soon as it returns.",
            "Tiedot tilapäisesti poissa käytöstä: tietovarastoon ei juuri nyt saada yhteyttä. \
             Kirjautuminen toimii taas heti, kun yhteys palaa.",
        ),
        "email" => ("E-mail", "Sähköposti"),
        "password" => ("Password", "Salasana"),
        "sign_in" => ("Sign in", "Kirjaudu"),
        "sites_title" => ("Sites", "Kohteet"),
        "no_sites" => (
            "No sites yet. Your installer adds them for you.",
            "Ei vielä kohteita. Asentaja lisää ne sinulle.",
        ),
        "online" => ("Online", "Yhteydessä"),
        "offline" => ("Offline", "Ei yhteyttä"),
        "last_data" => ("Last data", "Viimeisin data"),
        "no_data" => ("No data yet", "Ei dataa vielä"),
        "lamps" => ("Status", "Tilat"),
        "lamp_data" => ("DATA", "DATA"),
        "lamp_conn" => ("CONNECTION LOST", "YHTEYSVIRHE"),
        "state_on" => ("on", "päällä"),
        "state_off" => ("off", "pois"),
        "state_unknown" => ("unknown", "tuntematon"),
        "conn_ok" => ("Live", "Ajantasalla"),
        "conn_connecting" => ("Connecting…", "Yhdistetään…"),
        "conn_browser" => ("No connection to server", "Ei yhteyttä palvelimeen"),
        "conn_agent" => ("Site offline", "Kohde ei yhteydessä"),
        "stale" => ("No new data", "Ei uutta dataa"),
        "gauges" => ("Measurements", "Mittaukset"),
        "back_home" => ("Back to the start page", "Takaisin etusivulle"),
        "error" => ("Error", "Virhe"),
        // ---- site navigation ----
        "nav_dashboard" => ("Dashboard", "Näkymä"),
        "nav_controls" => ("Controls", "Ohjaukset"),
        "nav_audit" => ("Audit log", "Tapahtumaloki"),
        // ---- controls page ----
        "controls_title" => ("Controls", "Ohjaukset"),
        "setpoints" => ("Room setpoints", "Huoneiden asetusarvot"),
        "outputs" => ("Outputs", "Lähdöt"),
        "actions" => ("Functions", "Toiminnot"),
        "no_controls" => (
            "This site's agent offers no remote controls.",
            "Kohteen agentti ei tarjoa etäohjauksia.",
        ),
        "read_only" => (
            "Read-only view: this account cannot change anything.",
            "Vain katselu: tällä tunnuksella ei voi muuttaa mitään.",
        ),
        "agent_offline_note" => (
            "The site is offline. Changes wait for it to connect, and are dropped if they expire first.",
            "Kohde ei ole yhteydessä. Muutokset odottavat yhteyttä ja raukeavat, jos ne vanhenevat ensin.",
        ),
        "commanded" => ("Commanded", "Asetettu"),
        "reported" => ("Device reports", "Laite ilmoittaa"),
        "why_schedule" => ("Following the schedule", "Aikaohjelman mukaan"),
        "why_manual" => ("Manual until", "Käsiohjaus, päättyy"),
        "why_action" => ("Boost until", "Tehostus, päättyy"),
        // Says what governs the point, not only where the value comes from.
        "why_device" => (
            "No schedule or manual control: the device's own setting",
            "Ei aikaohjelmaa eikä käsiohjausta: laitteen oma asetus",
        ),
        "why_clamped" => (
            "Limited to the device's limit",
            "Rajoitettu laitteen rajaan",
        ),
        "why_none" => (
            "No report from the device yet",
            "Ei vielä tietoa laitteelta",
        ),
        "set" => ("Set", "Aseta"),
        "decrease" => ("Lower by one step", "Laske yhden askeleen"),
        "increase" => ("Raise by one step", "Nosta yhden askeleen"),
        "turn_on" => ("On", "Päälle"),
        "turn_off" => ("Off", "Pois"),
        "to_schedule" => ("Back to schedule", "Takaisin aikaohjelmaan"),
        "release_manual" => ("Release manual control", "Vapauta käsiohjaus"),
        "start" => ("Start", "Käynnistä"),
        "restart" => ("Restart", "Aloita alusta"),
        "stop" => ("Stop", "Pysäytä"),
        "duration" => ("Duration", "Kesto"),
        "running_until" => ("Running until", "Käynnissä, päättyy"),
        "not_running" => ("Not running", "Ei käynnissä"),
        "last_command" => ("Last command", "Viimeisin komento"),
        "by" => ("by", "tekijä"),
        "st_held" => (
            "Waiting for the owner's confirmation",
            "Odottaa omistajan vahvistusta",
        ),
        "st_sent" => (
            "Sent, waiting for the device",
            "Lähetetty, odottaa laitetta",
        ),
        "st_queued" => (
            "Waiting for the site to connect",
            "Odottaa kohteen yhteyttä",
        ),
        "st_applied" => ("Applied", "Toteutettu"),
        "st_rejected" => ("Refused by the site", "Kohde hylkäsi"),
        "st_expired" => ("Expired, not applied", "Vanhentui, ei toteutettu"),
        "st_failed" => ("Failed", "Epäonnistui"),
        "st_cancelled" => ("Cancelled", "Peruttu"),
        "st_unknown" => ("Unknown", "Tuntematon"),
        "comfort_band" => ("Comfort band", "Mukavuusalue"),
        "limits" => ("Device limits", "Laitteen rajat"),
        "edit_schedule" => ("Weekly schedule", "Viikko-ohjelma"),
        "installer_settings" => ("Installer settings", "Asentajan asetukset"),
        "band_min" => ("Comfort band from", "Mukavuusalue alkaen"),
        "band_max" => ("to", "asti"),
        "band_hint" => (
            "Empty = the device's limits. Changes outside the band need the owner's confirmation.",
            "Tyhjä = laitteen rajat. Alueen ulkopuoliset muutokset vaativat omistajan vahvistuksen.",
        ),
        "visible_to_homeowner" => ("Shown to homeowners", "Näytetään asukkaalle"),
        "save" => ("Save", "Tallenna"),
        "notice_sent" => ("Sent to the site.", "Lähetetty kohteeseen."),
        "notice_queued" => (
            "Saved. The site is offline; the change is sent when it connects.",
            "Tallennettu. Kohde ei ole yhteydessä; muutos lähetetään, kun yhteys palaa.",
        ),
        "notice_held" => (
            "Outside the comfort band: the owner got an e-mail to confirm the change.",
            "Mukavuusalueen ulkopuolella: omistaja sai sähköpostin muutoksen vahvistamiseksi.",
        ),
        "notice_saved" => ("Settings saved.", "Asetukset tallennettu."),
        // ---- schedule editor ----
        "schedule_title" => ("Weekly schedule", "Viikko-ohjelma"),
        "schedule_lead" => (
            "On-periods per day in local time, e.g. 06:00-08:00, 16:00-22:00. Empty = off all day.",
            "Päällä-jaksot päivittäin paikallista aikaa, esim. 06:00-08:00, 16:00-22:00. Tyhjä = pois koko päivän.",
        ),
        "time_zone" => ("Time zone", "Aikavyöhyke"),
        "on_value" => ("Value inside the periods", "Arvo jaksojen aikana"),
        "off_value" => ("Value outside the periods", "Arvo jaksojen ulkopuolella"),
        "mon" => ("Monday", "Maanantai"),
        "tue" => ("Tuesday", "Tiistai"),
        "wed" => ("Wednesday", "Keskiviikko"),
        "thu" => ("Thursday", "Torstai"),
        "fri" => ("Friday", "Perjantai"),
        "sat" => ("Saturday", "Lauantai"),
        "sun" => ("Sunday", "Sunnuntai"),
        "exceptions" => ("Exception days", "Poikkeuspäivät"),
        "exceptions_lead" => (
            "Dates that do not follow the week plan. Leave the date empty to remove a row.",
            "Päivät, jotka eivät noudata viikko-ohjelmaa. Tyhjennä päivämäärä poistaaksesi rivin.",
        ),
        "ex_date" => ("Date", "Päivämäärä"),
        "ex_kind" => ("Kind", "Tyyppi"),
        "ex_periods" => ("On-periods that day", "Päällä-jaksot sinä päivänä"),
        "holiday" => ("Holiday", "Loma / pyhä"),
        "away" => ("Away", "Poissa"),
        "send_schedule" => ("Send schedule", "Lähetä aikaohjelma"),
        "copy_weekdays" => ("Copy to Mon–Fri", "Kopioi ma–pe"),
        "copy_weekend" => ("Copy to Sat–Sun", "Kopioi la–su"),
        "back_controls" => ("Back to controls", "Takaisin ohjauksiin"),
        // ---- audit ----
        "audit_title" => ("Audit log", "Tapahtumaloki"),
        "chain_ok" => (
            "Hash chain intact; entries verified:",
            "Tarkistusketju eheä; tarkistettuja merkintöjä:",
        ),
        "chain_broken" => ("Hash chain BROKEN:", "Tarkistusketju RIKKI:"),
        "export_csv" => ("Download CSV", "Lataa CSV"),
        "audit_truncated" => (
            "Only the newest entries are listed; the CSV holds them all.",
            "Vain uusimmat merkinnät näytetään; CSV sisältää kaikki.",
        ),
        "no_entries" => ("Nothing has been logged yet.", "Ei vielä merkintöjä."),
        "col_time" => ("Time", "Aika"),
        "col_actor" => ("Who", "Kuka"),
        "col_action" => ("Action", "Toiminto"),
        "col_target" => ("Target", "Kohde"),
        "col_before" => ("Before", "Ennen"),
        "col_after" => ("After", "Jälkeen"),
        "col_decision" => ("Decision", "Päätös"),
        "col_result" => ("Result", "Tulos"),
        // ---- confirmation ----
        "confirm_title" => ("Confirm a change", "Vahvista muutos"),
        "confirm_lead" => (
            "This change is outside the comfort band. Nothing changes unless you confirm it.",
            "Muutos on mukavuusalueen ulkopuolella. Mikään ei muutu, ellet vahvista sitä.",
        ),
        "site" => ("Site", "Kohde"),
        "requested_by" => ("Requested by", "Pyytäjä"),
        "requested_at" => ("Requested at", "Pyydetty"),
        "control" => ("Control", "Ohjaus"),
        "new_value" => ("Change", "Muutos"),
        "why_confirm" => ("Why it needs you", "Miksi vahvistus tarvitaan"),
        "link_expires" => ("This link expires", "Linkki vanhenee"),
        "confirm_yes" => ("Confirm and send", "Vahvista ja lähetä"),
        "confirm_no" => ("Decline", "Hylkää"),
        "confirmed" => (
            "Confirmed: the change was sent to the site.",
            "Vahvistettu: muutos lähetettiin kohteeseen.",
        ),
        "declined" => (
            "Declined: nothing was changed.",
            "Hylätty: mitään ei muutettu.",
        ),
        "link_expired" => (
            "This confirmation link has expired. Nothing was changed; ask for the change again if it is still wanted.",
            "Vahvistuslinkki on vanhentunut. Mitään ei muutettu; pyydä muutosta uudelleen, jos sitä yhä tarvitaan.",
        ),
        "link_used" => (
            "This confirmation link has already been used (or the change was already decided). It works only once.",
            "Vahvistuslinkki on jo käytetty (tai muutoksesta on jo päätetty). Linkki toimii vain kerran.",
        ),
        "link_unknown" => (
            "This confirmation link is not valid. Check that the whole address was copied.",
            "Vahvistuslinkki ei kelpaa. Tarkista, että koko osoite kopioitui.",
        ),
        _ => return "??",
    };
    if fi { fi_text } else { en }
}

/// Static files compiled into the binary: `(path under static/, bytes)`.
///
/// Listed explicitly so the binary is self-contained; the test
/// `every_static_file_is_embedded` fails when a file under `static/` is missing here.
const EMBEDDED: &[(&str, &[u8])] = &[
    ("css/app.css", include_bytes!("../../static/css/app.css")),
    (
        "js/dashboard.js",
        include_bytes!("../../static/js/dashboard.js"),
    ),
    (
        "js/localtime.js",
        include_bytes!("../../static/js/localtime.js"),
    ),
    (
        "js/controls.js",
        include_bytes!("../../static/js/controls.js"),
    ),
    (
        "js/schedule.js",
        include_bytes!("../../static/js/schedule.js"),
    ),
    ("img/icon.svg", include_bytes!("../../static/img/icon.svg")),
];

/// One embedded static file.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    /// First 8 hex digits of the SHA-256 of `bytes`.
    hash: String,
}

/// The embedded `static/` files with their content hashes; build once at
/// startup and share through an `Arc`.
pub struct AssetTable {
    files: HashMap<&'static str, Asset>,
}

impl AssetTable {
    /// Hashes every embedded file (a few kilobytes; takes microseconds).
    pub fn embedded() -> Self {
        let files = EMBEDDED
            .iter()
            .map(|&(path, bytes)| {
                let digest = Sha256::digest(bytes);
                let asset = Asset {
                    bytes,
                    content_type: content_type(path),
                    hash: hex::encode(&digest[..4]),
                };
                (path, asset)
            })
            .collect();
        Self { files }
    }

    /// Bytes and `Content-Type` of `path` (relative to `static/`, no leading
    /// slash, query string removed). Serve with a long `Cache-Control`, since
    /// URLs carry the content hash.
    pub fn get(&self, path: &str) -> Option<(&'static [u8], &'static str)> {
        self.files.get(path).map(|a| (a.bytes, a.content_type))
    }

    /// `"/static/<path>?v=<hash8>"`, or `None` when the file is not embedded.
    pub fn url(&self, path: &str) -> Option<String> {
        self.files
            .get(path)
            .map(|a| format!("/static/{path}?v={}", a.hash))
    }

    /// The 8-hex-digit content hash of `path` (usable as an `ETag`).
    pub fn hash(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(|a| a.hash.as_str())
    }

    /// Embedded paths, for diagnostics and tests.
    pub fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.files.keys().copied()
    }
}

impl Default for AssetTable {
    fn default() -> Self {
        Self::embedded()
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("json" | "webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome(user: bool, lang: &str) -> Chrome {
        Chrome {
            user: user.then(|| UserView {
                display_name: "Maija Meikäläinen".into(),
                email: "maija@example.com".into(),
                role_label: "Asukas".into(),
            }),
            csrf_token: "csrf-123".into(),
            lang: lang.into(),
            assets: Arc::new(AssetTable::embedded()),
        }
    }

    pub(super) fn sample_dashboard(lang: &str) -> DashboardPage {
        let g = |id: &str, label: &str, min: f64, max: f64, value: Option<f64>| GaugeView {
            point_id: id.into(),
            label: label.into(),
            unit: "°C".into(),
            min,
            max,
            value,
            decimals: 1,
        };
        DashboardPage {
            chrome: chrome(true, lang),
            site_id: "site-1".into(),
            site_name: "Koivula".into(),
            organisation: "Lämpöhuolto Oy".into(),
            gauges: vec![
                g("p-out", "Ulkolämpötila", -30.0, 30.0, Some(-7.44)),
                g("p-sup1", "Menovesi 1", 0.0, 70.0, Some(31.26)),
                g("p-sup2", "Menovesi 2", 0.0, 70.0, Some(27.0)),
                g("p-hw-top", "Käyttövesi ylä", 0.0, 80.0, Some(52.3)),
                g("p-hw-bot", "Käyttövesi ala", 0.0, 80.0, None),
                g(
                    "p-gas",
                    "Kuumakaasu <script>alert(1)</script>",
                    0.0,
                    120.0,
                    Some(78.9),
                ),
            ],
            lamps: vec![
                LampView {
                    point_id: "l-comp".into(),
                    label: "KOMPRESSORI".into(),
                    on: Some(true),
                    alarm: false,
                },
                LampView {
                    point_id: "l-heat".into(),
                    label: "SÄHKÖVASTUS".into(),
                    on: Some(false),
                    alarm: false,
                },
                LampView {
                    point_id: "l-al-a".into(),
                    label: "HÄLYTYS A".into(),
                    on: Some(false),
                    alarm: true,
                },
                LampView {
                    point_id: "l-al-b".into(),
                    label: "HÄLYTYS B".into(),
                    on: None,
                    alarm: true,
                },
            ],
            agent_online: true,
            last_reading_at: Some("2026-11-21T12:00:01Z".into()),
            live_url: "/sites/site-1/live".into(),
        }
    }

    #[test]
    fn dashboard_renders_points_and_live_url() {
        let html = sample_dashboard("fi").render().expect("renders");
        assert!(html.contains(r#"<html lang="fi">"#));
        assert!(html.contains(r#"data-live-url="/sites/site-1/live""#));
        assert!(html.contains(r#"data-updates="0""#));
        for id in ["p-out", "p-sup1", "p-gas", "l-comp", "l-al-b"] {
            assert!(html.contains(&format!(r#"data-point-id="{id}""#)), "{id}");
        }
        // Finnish decimal comma, requested decimals, and "—" for unknown.
        assert!(html.contains(">-7,4<"), "{html}");
        assert!(html.contains(">31,3<"));
        assert!(html.contains(r#"class="value">—<"#));
        assert!(html.contains(r#"data-decimals="1""#));
        assert!(html.contains(r#"data-state="unknown""#));
        assert!(html.contains("YHTEYSVIRHE"));
        assert!(html.contains(r#"datetime="2026-11-21T12:00:01Z""#));
        assert!(html.contains(r#"name="csrf_token" value="csrf-123""#));
    }

    #[test]
    fn labels_are_escaped() {
        let html = sample_dashboard("en").render().expect("renders");
        assert!(!html.contains("<script>alert(1)</script>"));
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                || html.contains("&lt;script&gt;")
        );
        assert!(html.contains(">-7.4<"));
    }

    #[test]
    fn pages_have_no_inline_scripts_or_styles() {
        let html = sample_dashboard("en").render().expect("renders");
        assert!(!html.contains(" style="), "CSP forbids style attributes");
        assert!(!html.contains(" onclick="));
        for tag in html.split("<script").skip(1) {
            let head = &tag[..tag.find('>').expect("closed tag")];
            assert!(head.contains("src=\"/static/"), "inline script: {head}");
        }
    }

    #[test]
    fn login_page_has_form_fields_and_escapes_input() {
        let page = LoginPage {
            chrome: chrome(false, "en"),
            email: "\"><script>x</script>".into(),
            error: Some("Wrong e-mail or password".into()),
            notice: None,
            next: "/sites/1".into(),
        };
        let html = page.render().expect("renders");
        assert!(html.contains(r#"action="/login""#));
        assert!(html.contains(r#"method="post""#));
        assert!(html.contains(r#"name="csrf_token" value="csrf-123""#));
        assert!(html.contains(r#"name="next" value="/sites/1""#));
        assert!(html.contains(r#"name="password""#));
        assert!(html.contains("Wrong e-mail or password"));
        assert!(!html.contains("<script>x</script>"));
        assert!(!html.contains("/logout"), "no logout when logged out");
    }

    #[test]
    fn sites_page_links_each_site() {
        let page = SitesPage {
            chrome: chrome(true, "en"),
            sites: vec![
                SiteCard {
                    id: "s1".into(),
                    name: "Koivula".into(),
                    organisation: "Org".into(),
                    online: true,
                    last_reading_at: Some("2026-11-21T12:00:01Z".into()),
                },
                SiteCard {
                    id: "s2".into(),
                    name: "Mökki <b>".into(),
                    organisation: "Org".into(),
                    online: false,
                    last_reading_at: None,
                },
            ],
        };
        let html = page.render().expect("renders");
        assert!(html.contains(r#"href="/sites/s1""#));
        assert!(html.contains(r#"href="/sites/s2""#));
        assert!(html.contains("2026-11-21 12:00 UTC"));
        assert!(!html.contains("Mökki <b>"));
        assert!(html.contains(r#"action="/logout""#));
        assert!(html.contains("Maija Meikäläinen"));
    }

    #[test]
    fn error_page_links_home() {
        let page = ErrorPage {
            chrome: chrome(false, "fi"),
            status: 404,
            title: "Not found".into(),
            message: "No such page".into(),
        };
        let html = page.render().expect("renders");
        assert!(html.contains("404"));
        assert!(html.contains(r#"href="/""#));
        assert!(html.contains("Takaisin etusivulle"));
    }

    #[test]
    fn asset_urls_carry_a_content_hash() {
        let assets = AssetTable::embedded();
        let url = assets.url("css/app.css").expect("embedded");
        assert!(url.starts_with("/static/css/app.css?v="));
        assert_eq!(url.len(), "/static/css/app.css?v=".len() + 8);
        let (bytes, ct) = assets.get("js/dashboard.js").expect("embedded");
        assert!(!bytes.is_empty());
        assert_eq!(ct, "text/javascript; charset=utf-8");
        assert!(assets.get("../Cargo.toml").is_none());
    }

    #[test]
    fn every_static_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../static");
        let assets = AssetTable::embedded();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("static dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(&root).expect("under root");
                let rel = rel.to_string_lossy().replace('\\', "/");
                assert!(assets.get(&rel).is_some(), "add {rel} to EMBEDDED");
            }
        }
    }

    #[test]
    fn templates_use_only_known_assets_and_texts() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let assets = AssetTable::embedded();
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("templates dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("utf-8 template");
                for (marker, check) in [("chrome.asset(\"", 0), ("chrome.t(\"", 1)] {
                    for part in text.split(marker).skip(1) {
                        let arg = &part[..part.find('"').expect("closing quote")];
                        if check == 0 {
                            assert!(assets.get(arg).is_some(), "{path:?}: asset {arg}");
                        } else {
                            assert_ne!(translate("en", arg), "??", "{path:?}: text {arg}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gauge_geometry_and_numbers() {
        let mut g = GaugeView {
            point_id: "p".into(),
            label: "x".into(),
            unit: "%".into(),
            min: 0.0,
            max: 200.0,
            value: Some(50.0),
            decimals: 0,
        };
        assert_eq!(g.arc_dash(), "25.00 100");
        assert_eq!(g.needle_deg(), "-60.00");
        g.value = Some(-10.0);
        assert_eq!(g.arc_dash(), "0.00 100");
        g.value = Some(-0.04);
        g.decimals = 1;
        assert_eq!(g.display_value("en"), "0.0");
        g.value = Some(f64::NAN);
        assert_eq!(g.display_value("en"), "—");
        assert_eq!(g.raw_value(), "");
    }
}
