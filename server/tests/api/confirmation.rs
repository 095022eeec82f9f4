//! Changes outside the comfort band: held, e-mailed to the site's owners over
//! a real SMTP conversation (aiosmtpd), confirmed or declined through the
//! one-time link, and refused when the link expired or was used.

use protocol::ControlRequest;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use server::{
    config::SmtpTls,
    domain::{Role, control_text::CommandReason},
    store::{
        self,
        control::CommandStatus,
        entities::{commands, confirmations},
    },
};

use crate::{
    controls::{SETPOINT, assert_no_command, command_count, location, next_command, post, stored},
    helpers::{Browser, Person, Seed, TestAgent, TestApp, hidden_input, spawn_app, spawn_app_with},
    smtp::SmtpSink,
};

struct Setup {
    app: TestApp,
    seed: Seed,
    sink: SmtpSink,
    agent: TestAgent,
    installer: Browser,
    installer_person: Person,
}

async fn setup() -> Setup {
    let sink = SmtpSink::start().await;
    let port = sink.port;
    let app = spawn_app_with(|s| {
        s.smtp.host = "127.0.0.1".into();
        s.smtp.port = port;
        s.smtp.tls = SmtpTls::None;
        s.smtp.from = "Homecontrol <noreply@homecontrol.test>".into();
    })
    .await;
    let seed = app.seed().await;
    let agent = app.controllable_agent(&seed.agent).await;
    let installer_person = app.create_person(seed.org, Role::Installer, None).await;
    let installer = app.new_browser();
    installer.login_ok(&installer_person).await;
    let res = post(
        &installer,
        seed.site.site_id,
        "controls/settings",
        &[
            ("control", SETPOINT),
            ("band_min", "19"),
            ("band_max", "23"),
            ("homeowner_visible", "on"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    Setup {
        app,
        seed,
        sink,
        agent,
        installer,
        installer_person,
    }
}

/// The installer asks for 25 °C (inside the envelope, outside the band).
async fn ask_for_25(s: &Setup) -> uuid::Uuid {
    let res = post(
        &s.installer,
        s.seed.site.site_id,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "25")],
    )
    .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    assert!(
        location(&res).ends_with("?notice=held"),
        "{}",
        location(&res)
    );
    commands::Entity::find()
        .filter(commands::Column::Status.eq(CommandStatus::HeldForConfirmation.as_str()))
        .one(s.app.db())
        .await
        .unwrap()
        .expect("a held command")
        .id
}

async fn open_link(b: &Browser, path: &str) -> (u16, String) {
    let res = b.get(path).await;
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// Use a link: read the page's CSRF token and post the decision. Pages
/// without a form (expired, used) carry no token; the cookie's value is sent
/// then, so a refusal is about the link, not about the token.
async fn decide(b: &Browser, path: &str, decision: &str) -> (u16, String) {
    let page = b.get(path).await.text().await.unwrap();
    let token = hidden_input(&page, "csrf_token").unwrap_or_else(|| csrf_cookie(b));
    let res = b
        .post_form(path, &[("csrf_token", &token), ("decision", decision)])
        .await;
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

fn csrf_cookie(b: &Browser) -> String {
    let header = b
        .cookie_header()
        .map(|h| h.to_str().unwrap().to_owned())
        .unwrap_or_default();
    header
        .split("; ")
        .find_map(|c| c.strip_prefix("hc_csrf="))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_installer_change_outside_the_band_is_held_until_the_owner_confirms_it_by_e_mail() {
    let mut s = setup().await;
    let id = ask_for_25(&s).await;
    assert_no_command(&mut s.agent, 1).await;

    let mail = s.sink.next_mail().await;
    assert_eq!(mail.to, vec![s.seed.homeowner.email.clone()]);
    assert_eq!(mail.from, "noreply@homecontrol.test");
    assert!(
        mail.subject.contains("Confirm a change at Mäkelä"),
        "{}",
        mail.subject
    );
    assert!(
        mail.body
            .contains(&format!("wants to set {SETPOINT} to 25.0 °C at Mäkelä")),
        "{}",
        mail.body
    );
    assert!(
        mail.body.contains("outside the comfort band 19.0–23.0 °C"),
        "{}",
        mail.body
    );
    let link = mail.confirm_path();
    assert_eq!(link.len(), "/confirm/".len() + 43, "{link}");

    // The token is stored only as its hash.
    let rows = confirmations::Entity::find().all(s.app.db()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].token_hash.contains(&link["/confirm/".len()..]));

    // The owner opens the link (no login needed) and sees what is asked.
    let owner = s.app.new_browser();
    let (status, html) = open_link(&owner, &link).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(r#"data-state="ready""#)
            && html.contains("25.0 °C")
            && html.contains("Mäkelä"),
        "{html}"
    );
    // Looking changed nothing.
    assert_eq!(
        stored(&s.app, id).await.status,
        CommandStatus::HeldForConfirmation
    );

    let (status, html) = decide(&owner, &link, "confirm").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"data-state="confirmed""#), "{html}");
    let cmd = next_command(&mut s.agent).await;
    assert_eq!(cmd.id, id);
    assert!(matches!(cmd.request, ControlRequest::Set { value, .. } if value == 25.0));
    assert_eq!(cmd.issued_by, s.installer_person.email);
    assert!(
        cmd.expires_at > time::OffsetDateTime::now_utc(),
        "a fresh expiry from the confirmation"
    );
    let row = stored(&s.app, id).await;
    assert_eq!(row.status, CommandStatus::Sent);
    assert!(row.outside_band);

    let (chain, _) = store::audit::chain_of_site(s.app.db(), s.seed.site)
        .await
        .unwrap();
    let of_cmd: Vec<_> = chain
        .iter()
        .filter(|c| c.entry.command_id == Some(id))
        .map(|c| &c.entry)
        .collect();
    assert_eq!(of_cmd.len(), 2);
    assert_eq!(of_cmd[0].actor_user_id, Some(s.installer_person.id.0));
    assert!(
        of_cmd[0].result.starts_with("held for confirmation by"),
        "{}",
        of_cmd[0].result
    );
    assert!(
        of_cmd[0]
            .decision
            .as_deref()
            .unwrap()
            .contains("outside the comfort band")
    );
    assert_eq!(of_cmd[1].action, "confirm");
    assert_eq!(of_cmd[1].actor_user_id, Some(s.seed.homeowner.id.0));

    // The link works once.
    let (status, html) = decide(&owner, &link, "confirm").await;
    assert_eq!(status, 409);
    assert!(html.contains("already been used"), "{html}");
    let (status, _) = open_link(&owner, &link).await;
    assert_eq!(status, 409);
    assert_no_command(&mut s.agent, 2).await;
}

#[tokio::test]
async fn every_owner_gets_a_link_and_the_first_decision_wins() {
    let mut s = setup().await;
    let second = s
        .app
        .create_person(s.seed.org, Role::Homeowner, Some(s.seed.site.site_id))
        .await;
    let id = ask_for_25(&s).await;
    let mut paths = [s.sink.next_mail().await, s.sink.next_mail().await];
    paths.sort_by(|a, b| a.to[0].cmp(&b.to[0]));
    let mut to: Vec<String> = paths.iter().map(|m| m.to[0].clone()).collect();
    to.sort();
    let mut want = vec![s.seed.homeowner.email.clone(), second.email.clone()];
    want.sort();
    assert_eq!(to, want);
    let owner = s.app.new_browser();
    let (status, html) = decide(&owner, &paths[0].confirm_path(), "decline").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"data-state="declined""#));
    let row = stored(&s.app, id).await;
    assert_eq!(row.status, CommandStatus::Cancelled);
    assert!(matches!(
        CommandReason::from_stored(&row.reason.unwrap()),
        Some(CommandReason::Declined { .. })
    ));
    let (status, _) = decide(&owner, &paths[1].confirm_path(), "confirm").await;
    assert_eq!(status, 409, "the change was already decided");
    assert_no_command(&mut s.agent, 1).await;
}

#[tokio::test]
async fn an_expired_link_gets_a_clear_page_and_nothing_is_sent() {
    let mut s = setup().await;
    let id = ask_for_25(&s).await;
    let link = s.sink.next_mail().await.confirm_path();
    confirmations::Entity::update_many()
        .col_expr(
            confirmations::Column::ExpiresAt,
            Expr::value(time::OffsetDateTime::now_utc() - time::Duration::minutes(1)),
        )
        .exec(s.app.db())
        .await
        .unwrap();
    let owner = s.app.new_browser();
    let (status, html) = open_link(&owner, &link).await;
    assert_eq!(status, 410);
    assert!(
        html.contains("has expired") && html.contains(r#"data-state="expired""#),
        "{html}"
    );
    let (status, _) = decide(&owner, &link, "confirm").await;
    assert_eq!(status, 410);
    let row = stored(&s.app, id).await;
    assert_eq!(row.status, CommandStatus::Expired);
    assert_eq!(
        CommandReason::from_stored(&row.reason.unwrap()),
        Some(CommandReason::NotConfirmedInTime)
    );
    assert_no_command(&mut s.agent, 1).await;
}

#[tokio::test]
async fn unknown_links_and_forged_forms_are_refused() {
    let s = setup().await;
    let _id = ask_for_25(&s).await;
    let owner = s.app.new_browser();
    for path in [
        "/confirm/not-a-token",
        &format!("/confirm/{}", "A".repeat(43)),
        &format!("/confirm/{}", "x".repeat(500)),
    ] {
        let (status, html) = open_link(&owner, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(html.contains("not valid"), "{html}");
    }
    let mut s = s;
    let link = s.sink.next_mail().await.confirm_path();
    let _ = owner.get(&link).await; // sets the CSRF cookie
    let res = owner
        .post_form(
            &link,
            &[("csrf_token", &"0".repeat(48)), ("decision", "confirm")],
        )
        .await;
    assert_eq!(res.status(), 403);
    let res = owner.post_form(&link, &[("decision", "confirm")]).await;
    assert_eq!(res.status(), 403);
    let page = owner.get(&link).await.text().await.unwrap();
    let token = hidden_input(&page, "csrf_token").unwrap();
    let res = owner
        .post_form(&link, &[("csrf_token", &token), ("decision", "maybe")])
        .await;
    assert_eq!(res.status(), 422);
    assert_no_command(&mut s.agent, 1).await;
}

#[tokio::test]
async fn without_an_owner_to_ask_or_without_e_mail_the_change_is_refused() {
    // No homeowner at the site.
    let s = setup().await;
    let org = s.app.create_org("Empty Oy").await;
    let site = s.app.create_site(org, "Mökki").await;
    let agent = s.app.create_agent(site.site_id).await;
    let _link = s.app.controllable_agent(&agent).await;
    let installer = s.app.create_person(org, Role::Installer, None).await;
    let b = s.app.new_browser();
    b.login_ok(&installer).await;
    let res = post(
        &b,
        site.site_id,
        "controls/settings",
        &[
            ("control", SETPOINT),
            ("band_min", "19"),
            ("band_max", "23"),
            ("homeowner_visible", "on"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    let res = post(
        &b,
        site.site_id,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "26")],
    )
    .await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("no homeowner to ask"));

    // No SMTP relay configured.
    let app = spawn_app().await;
    let seed = app.seed().await;
    let _agent = app.controllable_agent(&seed.agent).await;
    let inst = app.create_person(seed.org, Role::Installer, None).await;
    app.login_ok(&inst).await;
    let res = post(
        &app,
        seed.site.site_id,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "26")],
    )
    .await;
    // The default band is the envelope, so 26 is simply sent...
    assert_eq!(res.status(), 303);
    let res = post(
        &app,
        seed.site.site_id,
        "controls/settings",
        &[
            ("control", SETPOINT),
            ("band_min", "19"),
            ("band_max", "23"),
            ("homeowner_visible", "on"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    // ...but outside a band it cannot be confirmed without e-mail.
    let res = post(
        &app,
        seed.site.site_id,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "26")],
    )
    .await;
    assert_eq!(res.status(), 409);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("e-mail is not configured")
    );
    assert_eq!(command_count(&app).await, 1);
}

#[tokio::test]
async fn when_the_relay_cannot_be_reached_the_change_is_cancelled_not_left_waiting() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = spawn_app_with(|s| {
        s.smtp.host = "127.0.0.1".into();
        s.smtp.port = port;
        s.smtp.tls = SmtpTls::None;
        s.smtp.timeout_seconds = 5;
    })
    .await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    let inst = app.create_person(seed.org, Role::Installer, None).await;
    app.login_ok(&inst).await;
    let site = seed.site.site_id;
    post(
        &app,
        site,
        "controls/settings",
        &[
            ("control", SETPOINT),
            ("band_min", "19"),
            ("band_max", "23"),
            ("homeowner_visible", "on"),
        ],
    )
    .await;
    let res = post(
        &app,
        site,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "26")],
    )
    .await;
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("could not be sent"));
    let row = commands::Entity::find()
        .one(app.db())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "cancelled");
    assert_no_command(&mut agent, 1).await;
}
