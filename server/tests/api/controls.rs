//! Remote control through the server: the envelope from hello, the Controls
//! page and its forms, commands to a fake agent over the real WebSocket
//! (also after a reconnect, or expired), results, control state, the
//! installer's comfort bands, roles, CSRF, tenant isolation and bad input.

use protocol::{
    AgentToServer, Command, CommandOutcome, CommandResult, ControlRequest, ControlSource,
    ControlState, ServerToAgent,
};
use reqwest::Response;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, sea_query::Expr};
use server::{
    domain::{Role, SiteId, SiteRef, control_text::CommandReason},
    store::{
        self,
        control::{CommandRecord, CommandStatus},
        entities::{audit_log, commands},
    },
};

use crate::helpers::{
    Browser, Person, TestAgent, TestApp, batch, envelope, reading, refused_status, spawn_app,
};

pub const SETPOINT: &str = "pop1/room3_floor_setpoint";
pub const CAR: &str = "pop1/car_heater";

/// POST a control form with a valid CSRF token.
pub async fn post(b: &Browser, site: SiteId, route: &str, fields: &[(&str, &str)]) -> Response {
    let token = b.csrf_token().await;
    let mut form = vec![("csrf_token", token.as_str())];
    form.extend_from_slice(fields);
    b.post_form(&format!("/sites/{site}/{route}"), &form).await
}

pub fn location(res: &Response) -> String {
    res.headers()["location"].to_str().unwrap().to_owned()
}

/// The next message must be a command.
pub async fn next_command(agent: &mut TestAgent) -> Command {
    match agent.reply().await {
        ServerToAgent::Command(c) => c,
        other => panic!("expected a command, got {other:?}"),
    }
}

/// Prove no command is waiting: a batch sent now is answered by an ack that
/// comes before anything else (the session handles one message at a time).
pub async fn assert_no_command(agent: &mut TestAgent, seq: u64) {
    match agent
        .request(&batch(seq, vec![reading("outdoor_temp", seq as i64, 1.0)]))
        .await
    {
        ServerToAgent::Ack(a) => assert_eq!(a.seq, seq),
        other => panic!("expected only an ack, got {other:?}"),
    }
}

pub async fn command_count(app: &TestApp) -> u64 {
    commands::Entity::find().count(app.db()).await.unwrap()
}

pub async fn audit_count(app: &TestApp) -> u64 {
    audit_log::Entity::find().count(app.db()).await.unwrap()
}

pub async fn stored(app: &TestApp, id: uuid::Uuid) -> CommandRecord {
    store::control::find_command(app.db(), id)
        .await
        .unwrap()
        .expect("the command is stored")
}

pub async fn wait_status(app: &TestApp, id: uuid::Uuid, want: CommandStatus) -> CommandRecord {
    let db = app.db().clone();
    crate::helpers::eventually(&format!("command {id} is {want:?}"), || {
        let db = db.clone();
        async move {
            store::control::find_command(&db, id)
                .await
                .unwrap()
                .is_some_and(|c| c.status == want)
        }
    })
    .await;
    stored(app, id).await
}

pub fn result(
    id: uuid::Uuid,
    outcome: CommandOutcome,
    reason: Option<&str>,
    before: f64,
    after: Option<f64>,
) -> AgentToServer {
    AgentToServer::CommandResult(CommandResult {
        id,
        at: time::OffsetDateTime::now_utc(),
        outcome,
        reason: reason.map(str::to_owned),
        before: Some(before),
        after,
    })
}

async fn page(b: &Browser, site: SiteId) -> String {
    let res = b.get(&format!("/sites/{site}/controls")).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The HTML of one control card.
fn card<'a>(html: &'a str, key: &str) -> &'a str {
    let at = html
        .find(&format!("data-control-key=\"{key}\""))
        .unwrap_or_else(|| panic!("no card {key}"));
    let rest = &html[at..];
    &rest[..rest.find("</article>").unwrap_or(rest.len())]
}

#[tokio::test]
async fn the_envelope_from_hello_is_stored_and_replaced_on_every_hello() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let agent = app.controllable_agent(&seed.agent).await;
    let stored = store::control::envelopes_of_site(app.db(), seed.site)
        .await
        .unwrap();
    assert_eq!(stored, vec![(seed.agent.id, envelope())]);
    agent.close().await;

    let mut narrower = envelope();
    narrower.writables.truncate(1);
    narrower.writables[0].max = 24.0;
    let mut agent = app.agent(&seed.agent).await;
    assert!(matches!(
        agent
            .hello_with_envelope(seed.agent.id, Some(narrower.clone()))
            .await,
        ServerToAgent::Welcome(_)
    ));
    let stored = store::control::envelopes_of_site(app.db(), seed.site)
        .await
        .unwrap();
    assert_eq!(stored, vec![(seed.agent.id, narrower)]);

    // An agent without remote control announces none: no controls remain.
    assert!(matches!(
        agent.hello_with_envelope(seed.agent.id, None).await,
        ServerToAgent::Welcome(_)
    ));
    assert!(
        store::control::envelopes_of_site(app.db(), seed.site)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_homeowner_setpoint_inside_the_band_reaches_the_agent_and_its_result_is_stored_and_audited()
 {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    app.login_ok(&seed.homeowner).await;
    let before_post = time::OffsetDateTime::now_utc();

    let res = post(
        &app,
        seed.site.site_id,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "21,5")],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        location(&res),
        format!("/sites/{}/controls?notice=sent", seed.site.site_id)
    );

    let cmd = next_command(&mut agent).await;
    assert_eq!(
        cmd.request,
        ControlRequest::Set {
            device: "pop1".into(),
            point: "room3_floor_setpoint".into(),
            value: 21.5,
            until: None
        }
    );
    assert_eq!(cmd.issued_by, seed.homeowner.email);
    assert!(cmd.issued_at >= before_post - time::Duration::seconds(1));
    assert_eq!(
        cmd.expires_at - cmd.issued_at,
        time::Duration::seconds(300),
        "the default expiry"
    );
    let row = stored(&app, cmd.id).await;
    assert_eq!(row.status, CommandStatus::Sent);
    assert!(row.delivered_at.is_some());
    assert_eq!(row.requested_by, Some(seed.homeowner.id));

    agent
        .send(&result(
            cmd.id,
            CommandOutcome::Applied,
            None,
            21.0,
            Some(21.5),
        ))
        .await;
    let row = wait_status(&app, cmd.id, CommandStatus::Applied).await;
    assert_eq!(
        (row.value_before, row.value_after),
        (Some(21.0), Some(21.5))
    );
    assert!(row.result_at.is_some());

    let (chain, _) = store::audit::chain_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let entries: Vec<_> = chain.iter().map(|c| &c.entry).collect();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_eq!(entries[0].action, "set");
    assert_eq!(entries[0].actor_user_id, Some(seed.homeowner.id.0));
    assert_eq!(entries[0].actor_name, "Test person");
    assert_eq!(entries[0].target, SETPOINT);
    assert_eq!(entries[0].after.as_deref(), Some("21.5 °C"));
    assert_eq!(entries[0].result, "sent");
    assert_eq!(entries[1].action, "result");
    assert_eq!(
        entries[1].actor_user_id,
        Some(seed.homeowner.id.0),
        "the result is logged under the requester"
    );
    assert_eq!(entries[1].before.as_deref(), Some("21.0"));
    assert_eq!(entries[1].after.as_deref(), Some("21.5"));
    assert_eq!(
        entries[1].decision.as_deref(),
        Some("accepted by the agent's envelope")
    );
    assert_eq!(entries[1].result, "applied");
    assert_eq!(entries[1].command_id, Some(cmd.id));

    let html = page(&app, seed.site.site_id).await;
    let c = card(&html, SETPOINT);
    assert!(c.contains(r#"data-status="applied""#), "{c}");
    assert!(c.contains("Applied"), "{c}");
}

#[tokio::test]
async fn a_homeowner_setpoint_outside_the_band_is_refused_with_a_clear_message_and_nothing_is_written()
 {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    let installer = app.create_person(seed.org, Role::Installer, None).await;
    let inst = app.new_browser();
    inst.login_ok(&installer).await;
    let res = post(
        &inst,
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
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let audits = audit_count(&app).await;

    app.login_ok(&seed.homeowner).await;
    let res = post(
        &app,
        seed.site.site_id,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "24")],
    )
    .await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("24.0 °C is outside the comfort band 19.0–23.0 °C set by your installer."),
        "{html}"
    );
    assert_eq!(command_count(&app).await, 0);
    assert_eq!(audit_count(&app).await, audits);
    assert_no_command(&mut agent, 1).await;
    // The page offers the homeowner the band only.
    let c = card(&page(&app, seed.site.site_id).await, SETPOINT).to_owned();
    assert!(c.contains(r#"max="23.0""#), "{c}");
}

#[tokio::test]
async fn refusals_are_worded_in_the_language_of_the_page() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    let site = seed.site.site_id;
    let installer = app.create_person(seed.org, Role::Installer, None).await;
    let inst = app.new_browser();
    inst.login_ok(&installer).await;
    let res = post(
        &inst,
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
    assert_eq!(res.status(), 303);
    // A wall tablet set to Finnish (as browsers send it) and a phone set to
    // English, both the homeowner's.
    let fi = app.new_browser_in("fi-FI,fi;q=0.9,en;q=0.8");
    fi.login_ok(&seed.homeowner).await;
    let en = app.new_browser_in("en-GB,en;q=0.9");
    en.login_ok(&seed.homeowner).await;

    // A setpoint above the comfort band, in each language's notation.
    let too_high = [("control", SETPOINT), ("value", "24,5")];
    for (b, want) in [
        (
            &fi,
            "24,5 °C on asentajan asettaman mukavuusalueen 19,0–23,0 °C ulkopuolella.",
        ),
        (
            &en,
            "24.5 °C is outside the comfort band 19.0–23.0 °C set by your installer.",
        ),
    ] {
        let res = post(b, site, "controls/setpoint", &too_high).await;
        assert_eq!(res.status(), 422);
        let html = res.text().await.unwrap();
        assert!(
            html.contains(&format!(
                r#"<p class="flash flash-error" role="alert">{want}</p>"#
            )),
            "{want}: {html}"
        );
    }

    // A malformed schedule: re-shown in the editor with the reason.
    let backwards = [("control", CAR), ("day0", "08:00-06:00")];
    let overlapping = [("control", CAR), ("day3", "06:00-08:00, 07:00-09:00")];
    let boost_too_long = [("action", "boost_dhw"), ("op", "start"), ("minutes", "240")];
    for (b, route, form, want) in [
        (
            &fi,
            "schedule",
            &backwards[..],
            "Maanantai: jakso 08:00–06:00 päättyy ennen alkuaan.",
        ),
        (
            &en,
            "schedule",
            &backwards[..],
            "Monday: the period 08:00-06:00 ends before it starts.",
        ),
        (
            &fi,
            "schedule",
            &overlapping[..],
            "Torstai: jaksot 06:00–08:00 ja 07:00–09:00 menevät päällekkäin.",
        ),
        (
            &fi,
            "controls/action",
            &boost_too_long[..],
            "Lämmin vesi tehostus: valitse kesto väliltä 1–180 minuuttia.",
        ),
        (
            &en,
            "controls/action",
            &boost_too_long[..],
            "Choose between 1 and 180 minutes for boost hot water.",
        ),
    ] {
        let res = post(b, site, route, form).await;
        assert_eq!(res.status(), 422, "{want}");
        let html = res.text().await.unwrap();
        assert!(
            html.contains(&format!(r#"role="alert">{want}</p>"#)),
            "{want}: {html}"
        );
    }
    assert_eq!(command_count(&app).await, 0);
    assert_no_command(&mut agent, 1).await;
}

#[tokio::test]
async fn a_command_for_an_offline_agent_is_delivered_when_it_connects() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    // The envelope is known from an earlier session.
    app.controllable_agent(&seed.agent).await.close().await;
    app.login_ok(&seed.homeowner).await;
    let res = post(
        &app,
        seed.site.site_id,
        "controls/output",
        &[("control", CAR), ("state", "on")],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert!(
        location(&res).ends_with("?notice=queued"),
        "{}",
        location(&res)
    );
    let html = page(&app, seed.site.site_id).await;
    assert!(card(&html, CAR).contains(r#"data-status="queued""#));

    let mut agent = app.agent(&seed.agent).await;
    assert!(matches!(
        agent
            .hello_with_envelope(seed.agent.id, Some(envelope()))
            .await,
        ServerToAgent::Welcome(_)
    ));
    let cmd = next_command(&mut agent).await;
    assert!(matches!(cmd.request, ControlRequest::Set { value, .. } if value == 1.0));
    assert!(stored(&app, cmd.id).await.delivered_at.is_some());
    // Delivered once: a second session of the agent does not get it again.
    agent.close().await;
    let mut again = app.controllable_agent(&seed.agent).await;
    assert_no_command(&mut again, 1).await;
}

#[tokio::test]
async fn a_command_that_expired_while_the_agent_was_offline_is_marked_expired_and_not_sent() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    app.controllable_agent(&seed.agent).await.close().await;
    app.login_ok(&seed.homeowner).await;
    let res = post(
        &app,
        seed.site.site_id,
        "controls/output",
        &[("control", CAR), ("state", "on")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let id = commands::Entity::find()
        .one(app.db())
        .await
        .unwrap()
        .unwrap()
        .id;
    // The car heater was meant for 07:00; it is now past its expiry.
    commands::Entity::update_many()
        .col_expr(
            commands::Column::ExpiresAt,
            Expr::value(time::OffsetDateTime::now_utc() - time::Duration::minutes(1)),
        )
        .filter(commands::Column::Id.eq(id))
        .exec(app.db())
        .await
        .unwrap();

    let mut agent = app.controllable_agent(&seed.agent).await;
    assert_no_command(&mut agent, 1).await;
    let row = stored(&app, id).await;
    assert_eq!(row.status, CommandStatus::Expired);
    assert!(row.delivered_at.is_none());
    assert_eq!(
        CommandReason::from_stored(&row.reason.unwrap()),
        Some(CommandReason::OfflineUntilExpiry)
    );
    let (chain, _) = store::audit::chain_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let last = &chain.last().unwrap().entry;
    assert_eq!(
        (last.action.as_str(), last.actor_name.as_str()),
        ("expire", "system")
    );
    let html = page(&app, seed.site.site_id).await;
    let c = card(&html, CAR);
    assert!(c.contains(r#"data-status="expired""#), "{c}");
    assert!(
        c.contains("(the site was offline until the command expired; it was not sent)"),
        "{c}"
    );
    let fi = app.new_browser_in("fi");
    fi.login_ok(&seed.homeowner).await;
    let html = page(&fi, seed.site.site_id).await;
    let c = card(&html, CAR);
    assert!(
        c.contains("Vanhentui, ei toteutettu")
            && c.contains(
                "(kohde oli poissa yhteydestä, kunnes komento vanheni; sitä ei lähetetty)"
            ),
        "{c}"
    );
}

#[tokio::test]
async fn an_agent_refusal_and_an_agent_expiry_are_shown_with_their_reason() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    app.login_ok(&seed.homeowner).await;
    let mut live = app.live(seed.site.site_id).await.unwrap();
    post(
        &app,
        seed.site.site_id,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "26")],
    )
    .await;
    let cmd = next_command(&mut agent).await;
    agent
        .send(&result(
            cmd.id,
            CommandOutcome::Rejected,
            Some("26.0 changes faster than 4.0 per hour"),
            21.0,
            None,
        ))
        .await;
    let row = wait_status(&app, cmd.id, CommandStatus::Rejected).await;
    assert_eq!(
        row.reason.as_deref(),
        Some("26.0 changes faster than 4.0 per hour")
    );
    // The agent's words stay its own (English), labelled as the site's.
    let html = page(&app, seed.site.site_id).await;
    let c = card(&html, SETPOINT);
    assert!(
        c.contains("Refused by the site")
            && c.contains(
                "(the site&#39;s controller refused: 26.0 changes faster than 4.0 per hour)"
            ),
        "{c}"
    );
    let fi = app.new_browser_in("fi");
    fi.login_ok(&seed.homeowner).await;
    let html = page(&fi, seed.site.site_id).await;
    let c = card(&html, SETPOINT);
    assert!(
        c.contains("Kohde hylkäsi")
            && c.contains(
                "(kohteen ohjauslaite kieltäytyi: 26.0 changes faster than 4.0 per hour)"
            ),
        "{c}"
    );
    // The live message carries the note for viewers of either language.
    let msg = loop {
        let m = live.next_of_type("command").await;
        if m["status"] == "rejected" {
            break m;
        }
    };
    assert_eq!(
        msg["reason_text"],
        serde_json::json!({
            "en": "the site's controller refused: 26.0 changes faster than 4.0 per hour",
            "fi": "kohteen ohjauslaite kieltäytyi: 26.0 changes faster than 4.0 per hour",
        }),
        "{msg}"
    );

    post(
        &app,
        seed.site.site_id,
        "controls/output",
        &[("control", CAR), ("state", "on")],
    )
    .await;
    let cmd = next_command(&mut agent).await;
    agent
        .send(&result(
            cmd.id,
            CommandOutcome::Expired,
            Some("arrived after its expiry"),
            0.0,
            None,
        ))
        .await;
    wait_status(&app, cmd.id, CommandStatus::Expired).await;
    // A second answer to the same command changes nothing.
    agent
        .send(&result(
            cmd.id,
            CommandOutcome::Applied,
            None,
            0.0,
            Some(1.0),
        ))
        .await;
    assert_no_command(&mut agent, 1).await;
    assert_eq!(stored(&app, cmd.id).await.status, CommandStatus::Expired);
}

#[tokio::test]
async fn a_result_for_another_agents_command_is_ignored() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    let other_creds = app.create_agent(seed.site.site_id).await;
    let mut other = app.agent(&other_creds).await;
    assert!(matches!(
        other.hello(other_creds.id).await,
        ServerToAgent::Welcome(_)
    ));
    app.login_ok(&seed.homeowner).await;
    post(
        &app,
        seed.site.site_id,
        "controls/output",
        &[("control", CAR), ("state", "off")],
    )
    .await;
    let cmd = next_command(&mut agent).await;
    other
        .send(&result(
            cmd.id,
            CommandOutcome::Applied,
            None,
            1.0,
            Some(0.0),
        ))
        .await;
    assert_no_command(&mut other, 1).await;
    assert_eq!(stored(&app, cmd.id).await.status, CommandStatus::Sent);
}

#[tokio::test]
async fn control_state_is_stored_pushed_to_the_live_feed_and_shown_on_the_page() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    app.login_ok(&seed.homeowner).await;
    let mut live = app.live(seed.site.site_id).await.unwrap();
    live.next_of_type("snapshot").await;
    let until = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    let until = until.replace_nanosecond(0).unwrap();
    agent
        .send(&AgentToServer::ControlState(ControlState {
            device: "pop1".into(),
            point: "room3_floor_setpoint".into(),
            commanded: Some(22.5),
            reported: Some(22.4),
            source: ControlSource::Manual,
            until: Some(until),
            action: None,
            note: None,
        }))
        .await;
    let msg = live.next_of_type("control_state").await;
    assert_eq!(msg["note"], serde_json::Value::Null);
    assert_eq!(msg["control"], SETPOINT);
    assert_eq!(msg["commanded"], 22.5);
    assert_eq!(msg["reported"], 22.4);
    assert_eq!(msg["source"], "manual");
    assert!(msg["until"].as_str().is_some());

    let states = store::control::states_of_site(app.db(), seed.site)
        .await
        .unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state.until, Some(until));
    let html = page(&app, seed.site.site_id).await;
    let c = card(&html, SETPOINT);
    assert!(c.contains(">22.5<") && c.contains(">22.4<"), "{c}");
    assert!(
        c.contains("Manual until") && c.contains(r#"data-source="manual""#),
        "{c}"
    );
    // The nudges go one step from the commanded value.
    assert!(
        c.contains(r#"name="value" value="22.4""#) && c.contains(r#"name="value" value="22.6""#),
        "{c}"
    );

    assert!(c.contains(r#"<p class="why-note" hidden></p>"#), "{c}");

    // The agent's note is stored, sent live and shown next to the "why",
    // escaped like everything an agent says.
    agent
        .send(&AgentToServer::ControlState(ControlState {
            device: "pop1".into(),
            point: "car_heater".into(),
            commanded: Some(1.0),
            reported: Some(1.0),
            source: ControlSource::Schedule,
            until: None,
            action: None,
            note: Some("switched by the device's own clock table <b>(1 of 8)</b>".into()),
        }))
        .await;
    let msg = live.next_of_type("control_state").await;
    assert_eq!(
        msg["note"],
        "switched by the device's own clock table <b>(1 of 8)</b>"
    );
    let states = store::control::states_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let car = states
        .iter()
        .find(|s| s.state.point == "car_heater")
        .unwrap();
    assert_eq!(
        car.state.note.as_deref(),
        Some("switched by the device's own clock table <b>(1 of 8)</b>")
    );
    let html = page(&app, seed.site.site_id).await;
    let c = card(&html, CAR);
    let note = c
        .split(r#"<p class="why-note">"#)
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .expect("a shown note");
    assert!(note.starts_with("switched by the device"), "{note}");
    assert!(
        note.contains("own clock table") && note.contains("(1 of 8)"),
        "{note}"
    );
    assert!(!note.contains("<b>"), "escaped: {note}");

    // A running boost shows on its action card.
    agent
        .send(&AgentToServer::ControlState(ControlState {
            device: "heatpump".into(),
            point: "dhw_setpoint".into(),
            commanded: Some(55.0),
            reported: Some(54.0),
            source: ControlSource::Action,
            until: Some(until),
            action: Some("boost_dhw".into()),
            note: None,
        }))
        .await;
    live.next_of_type("control_state").await;
    let html = page(&app, seed.site.site_id).await;
    assert!(card(&html, "action:boost_dhw").contains(r#"data-running="true""#));
}

#[tokio::test]
async fn outputs_switch_on_off_and_back_to_schedule_and_boost_runs_for_the_chosen_time() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    app.login_ok(&seed.homeowner).await;
    let site = seed.site.site_id;
    for (state, want) in [("on", Some(1.0)), ("off", Some(0.0)), ("auto", None)] {
        let res = post(
            &app,
            site,
            "controls/output",
            &[("control", CAR), ("state", state)],
        )
        .await;
        assert_eq!(res.status(), 303, "{state}");
        let cmd = next_command(&mut agent).await;
        match (cmd.request, want) {
            (
                ControlRequest::Set {
                    device,
                    point,
                    value,
                    ..
                },
                Some(v),
            ) => {
                assert_eq!(
                    (device.as_str(), point.as_str(), value),
                    ("pop1", "car_heater", v)
                );
            }
            (ControlRequest::Release { point, .. }, None) => assert_eq!(point, "car_heater"),
            (other, _) => panic!("{state}: {other:?}"),
        }
    }
    let res = post(
        &app,
        site,
        "controls/action",
        &[("action", "boost_dhw"), ("op", "start"), ("minutes", "120")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let cmd = next_command(&mut agent).await;
    assert_eq!(
        cmd.request,
        ControlRequest::StartAction {
            action: "boost_dhw".into(),
            duration_s: 7200
        }
    );
    let res = post(
        &app,
        site,
        "controls/action",
        &[("action", "boost_dhw"), ("op", "stop")],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        next_command(&mut agent).await.request,
        ControlRequest::StopAction {
            action: "boost_dhw".into()
        }
    );
    let (chain, _) = store::audit::chain_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let actions: Vec<&str> = chain.iter().map(|c| c.entry.action.as_str()).collect();
    assert_eq!(
        actions,
        ["set", "set", "release", "start_action", "stop_action"]
    );
}

#[tokio::test]
async fn a_schedule_is_sent_as_a_weekly_clock_table_with_exception_days_and_prefills_the_editor() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    app.login_ok(&seed.homeowner).await;
    let site = seed.site.site_id;
    let editor = app
        .get(&format!("/sites/{site}/schedule?control=pop1%2Fcar_heater"))
        .await;
    assert_eq!(editor.status(), 200);
    let html = editor.text().await.unwrap();
    assert!(
        html.contains(r#"name="day6""#) && html.contains(r#"name="ex_date_0""#),
        "{html}"
    );

    let res = post(
        &app,
        site,
        "schedule",
        &[
            ("control", CAR),
            ("day0", "05:00-07:00"),
            ("day1", "05:00-07:00, 16:00-17:30"),
            ("day2", ""),
            ("day3", ""),
            ("day4", "05:00-07:00"),
            ("day5", ""),
            ("day6", ""),
            ("ex_date_0", "2026-12-24"),
            ("ex_label_0", "holiday"),
            ("ex_periods_0", ""),
            ("ex_date_1", "2026-12-31"),
            ("ex_label_1", "away"),
            ("ex_periods_1", "10:00-11:00"),
            ("ex_date_2", ""),
            ("ex_label_2", "holiday"),
            ("ex_periods_2", ""),
        ],
    )
    .await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let cmd = next_command(&mut agent).await;
    let ControlRequest::SetSchedule {
        device,
        point,
        schedule,
    } = cmd.request
    else {
        panic!("expected a schedule");
    };
    assert_eq!((device.as_str(), point.as_str()), ("pop1", "car_heater"));
    assert_eq!(schedule.time_zone, "Europe/Helsinki");
    assert_eq!(schedule.days.len(), 7);
    assert_eq!(schedule.days[1].len(), 2);
    assert_eq!(schedule.days[1][1].end_min, 17 * 60 + 30);
    assert_eq!(schedule.exceptions.len(), 2);
    assert_eq!(schedule.exceptions[1].label, "away");
    assert_eq!(
        cmd.expires_at - cmd.issued_at,
        time::Duration::days(1),
        "schedules wait longer"
    );

    agent
        .send(&result(cmd.id, CommandOutcome::Applied, None, 0.0, None))
        .await;
    wait_status(&app, cmd.id, CommandStatus::Applied).await;
    let html = app
        .get(&format!("/sites/{site}/schedule?control=pop1%2Fcar_heater"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"value="05:00-07:00, 16:00-17:30""#),
        "{html}"
    );
    assert!(html.contains(r#"value="2026-12-31""#));
}

/// Form fields as posted.
type Form<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_4xx_and_nothing_is_written() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    let installer = app.create_person(seed.org, Role::Installer, None).await;
    app.login_ok(&installer).await;
    let site = seed.site.site_id;
    let many_periods = (0..9)
        .map(|h| format!("{h:02}:00-{h:02}:30"))
        .collect::<Vec<_>>()
        .join(", ");
    let long_text = "06:00-07:00,".repeat(30);
    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "controls/setpoint",
            vec![("control", SETPOINT), ("value", "warm")],
            "is not a number",
        ),
        (
            "controls/setpoint",
            vec![("control", SETPOINT), ("value", "NaN")],
            "is not a number",
        ),
        (
            "controls/setpoint",
            vec![("control", SETPOINT), ("value", "inf")],
            "is not a number",
        ),
        (
            "controls/setpoint",
            vec![("control", SETPOINT), ("value", "")],
            "Enter a number",
        ),
        (
            "controls/setpoint",
            vec![("control", SETPOINT), ("value", "21.55")],
            "use steps of 0.1",
        ),
        (
            "controls/setpoint",
            vec![("control", SETPOINT), ("value", "35")],
            "outside the device&#39;s limits",
        ),
        (
            "controls/setpoint",
            vec![("control", "pop1/boiler"), ("value", "21")],
            "no control named",
        ),
        (
            "controls/setpoint",
            vec![("control", CAR), ("value", "1")],
            "no control named",
        ),
        (
            "controls/setpoint",
            vec![("control", SETPOINT)],
            "could not be read",
        ),
        (
            "controls/output",
            vec![("control", CAR), ("state", "maybe")],
            "not an output state",
        ),
        (
            "controls/output",
            vec![("control", SETPOINT), ("state", "on")],
            "no control named",
        ),
        (
            "controls/action",
            vec![("action", "boost_dhw"), ("op", "start"), ("minutes", "0")],
            "between 1 and 180",
        ),
        (
            "controls/action",
            vec![("action", "boost_dhw"), ("op", "start"), ("minutes", "600")],
            "between 1 and 180",
        ),
        (
            "controls/action",
            vec![("action", "boost_dhw"), ("op", "start"), ("minutes", "1.5")],
            "not a number of minutes",
        ),
        (
            "controls/action",
            vec![("action", "sauna"), ("op", "start"), ("minutes", "60")],
            "no control named",
        ),
        (
            "controls/action",
            vec![("action", "boost_dhw"), ("op", "explode")],
            "not an action operation",
        ),
        (
            "schedule",
            vec![("control", CAR), ("day0", &many_periods)],
            "at most 8 periods",
        ),
        (
            "schedule",
            vec![("control", CAR), ("day0", &long_text)],
            "too long",
        ),
        (
            "schedule",
            vec![("control", CAR), ("day0", "07:00-06:00")],
            "ends before it starts",
        ),
        (
            "schedule",
            vec![("control", CAR), ("day3", "06:00-08:00, 07:00-09:00")],
            "overlaps",
        ),
        (
            "schedule",
            vec![("control", CAR), ("ex_date_0", "2026-02-30")],
            "is not a date",
        ),
        (
            "schedule",
            vec![("control", CAR), ("ex_date_0", "tomorrow")],
            "is not a date",
        ),
        (
            "schedule",
            vec![("control", CAR), ("ex_date_40", "2026-12-24")],
            "At most 32 exception days",
        ),
        (
            "schedule",
            vec![
                ("control", CAR),
                ("ex_date_0", "2026-12-24"),
                ("ex_label_0", "party"),
            ],
            "not an exception kind",
        ),
        (
            "schedule",
            vec![
                ("control", SETPOINT),
                ("on_value", "NaN"),
                ("off_value", "19"),
            ],
            "is not a number",
        ),
        (
            "schedule",
            vec![("control", "pop1/boiler")],
            "no control named",
        ),
        (
            "controls/settings",
            vec![
                ("control", SETPOINT),
                ("band_min", "17"),
                ("band_max", "23"),
            ],
            "within the device",
        ),
        (
            "controls/settings",
            vec![
                ("control", SETPOINT),
                ("band_min", "23"),
                ("band_max", "19"),
            ],
            "above the highest",
        ),
        (
            "controls/settings",
            vec![("control", SETPOINT), ("band_min", "x"), ("band_max", "23")],
            "is not a number",
        ),
        (
            "controls/settings",
            vec![("control", CAR), ("band_min", "0"), ("band_max", "1")],
            "Only setpoints",
        ),
        (
            "controls/settings",
            vec![("control", "pop1/boiler")],
            "no control named",
        ),
    ];
    // 33 exception rows at once.
    let mut oversized: Vec<(String, String)> = (0..33)
        .map(|i| (format!("ex_date_{i}"), format!("2026-01-{:02}", i % 28 + 1)))
        .collect();
    oversized.push(("control".into(), CAR.into()));
    for (route, fields, want) in cases {
        let res = post(&app, site, route, &fields).await;
        let status = res.status().as_u16();
        let html = res.text().await.unwrap();
        assert_eq!(status, 422, "{route} {fields:?}: {html}");
        assert!(
            html.contains(want),
            "{route} {fields:?}: expected {want:?} in {html}"
        );
    }
    let token = app.csrf_token().await;
    let mut form: Vec<(&str, &str)> = vec![("csrf_token", &token)];
    form.extend(oversized.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let res = app
        .post_form(&format!("/sites/{site}/schedule"), &form)
        .await;
    assert_eq!(res.status(), 422);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("At most 32 exception days")
    );
    // A body over the form limit.
    let huge = "x".repeat(32 * 1024);
    let res = post(&app, site, "schedule", &[("control", CAR), ("day0", &huge)]).await;
    assert!(res.status().is_client_error(), "{}", res.status());

    assert_eq!(command_count(&app).await, 0, "nothing was stored");
    assert_eq!(audit_count(&app).await, 0, "nothing was logged");
    assert!(
        store::control::settings_of_site(app.db(), seed.site)
            .await
            .unwrap()
            .is_empty()
    );
    assert_no_command(&mut agent, 1).await;
}

#[tokio::test]
async fn every_control_form_requires_the_csrf_token() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    let installer = app.create_person(seed.org, Role::Installer, None).await;
    app.login_ok(&installer).await;
    let _ = app.csrf_token().await; // the cookie is set; the forms below carry a wrong token or none
    let site = seed.site.site_id;
    let forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "controls/setpoint",
            vec![("control", SETPOINT), ("value", "21")],
        ),
        ("controls/output", vec![("control", CAR), ("state", "on")]),
        (
            "controls/action",
            vec![("action", "boost_dhw"), ("op", "start"), ("minutes", "60")],
        ),
        (
            "controls/settings",
            vec![
                ("control", SETPOINT),
                ("band_min", "19"),
                ("band_max", "23"),
            ],
        ),
        ("schedule", vec![("control", CAR), ("day0", "06:00-07:00")]),
    ];
    for (route, fields) in forms {
        for token in [None, Some("0".repeat(48))] {
            let mut form = fields.clone();
            if let Some(t) = &token {
                form.push(("csrf_token", t));
            }
            let res = app
                .post_form(&format!("/sites/{site}/{route}"), &form)
                .await;
            assert_eq!(res.status(), 403, "{route} with token {token:?}");
        }
    }
    assert_eq!(command_count(&app).await, 0);
    assert_eq!(audit_count(&app).await, 0);
    assert_no_command(&mut agent, 1).await;
}

struct World {
    a1: SiteRef,
    a2: SiteRef,
    b1: SiteRef,
    homeowner_a1: Person,
    installer_b: Person,
    viewer_a1: Person,
}

async fn world(app: &TestApp) -> (World, TestAgent, TestAgent) {
    let org_a = app.create_org("Org A").await;
    let org_b = app.create_org("Org B").await;
    let a1 = app.create_site(org_a, "A1 house").await;
    let a2 = app.create_site(org_a, "A2 house").await;
    let b1 = app.create_site(org_b, "B1 house").await;
    let homeowner_a1 = app
        .create_person(org_a, Role::Homeowner, Some(a1.site_id))
        .await;
    let viewer_a1 = app
        .create_person(org_a, Role::Viewer, Some(a1.site_id))
        .await;
    let installer_b = app.create_person(org_b, Role::Installer, None).await;
    let agent_a2 = app.create_agent(a2.site_id).await;
    let agent_b1 = app.create_agent(b1.site_id).await;
    let a2_link = app.controllable_agent(&agent_a2).await;
    let b1_link = app.controllable_agent(&agent_b1).await;
    (
        World {
            a1,
            a2,
            b1,
            homeowner_a1,
            installer_b,
            viewer_a1,
        },
        a2_link,
        b1_link,
    )
}

#[tokio::test]
async fn the_new_routes_show_nothing_of_another_organisation_or_another_site() {
    let app = spawn_app().await;
    let (w, mut a2_link, mut b1_link) = world(&app).await;
    let homeowner = app.new_browser();
    homeowner.login_ok(&w.homeowner_a1).await;
    let foreign_installer = app.new_browser();
    foreign_installer.login_ok(&w.installer_b).await;
    for (who, site) in [
        (&homeowner, w.a2.site_id),
        (&homeowner, w.b1.site_id),
        (&foreign_installer, w.a1.site_id),
        (&foreign_installer, w.a2.site_id),
    ] {
        for path in [
            format!("/sites/{site}/controls"),
            format!("/sites/{site}/schedule?control=pop1%2Fcar_heater"),
            format!("/sites/{site}/audit"),
            format!("/sites/{site}/audit.csv"),
        ] {
            let res = who.get(&path).await;
            assert_eq!(res.status(), 404, "{path}");
            let body = res.text().await.unwrap();
            assert!(
                !body.contains("A2 house") && !body.contains("car_heater"),
                "{path}: {body}"
            );
        }
        for (route, fields) in [
            (
                "controls/setpoint",
                vec![("control", SETPOINT), ("value", "21")],
            ),
            ("controls/output", vec![("control", CAR), ("state", "on")]),
            (
                "controls/action",
                vec![("action", "boost_dhw"), ("op", "start"), ("minutes", "60")],
            ),
            (
                "controls/settings",
                vec![("control", SETPOINT), ("band_min", ""), ("band_max", "")],
            ),
            ("schedule", vec![("control", CAR), ("day0", "06:00-07:00")]),
        ] {
            let res = post(who, site, route, &fields).await;
            assert_eq!(res.status(), 404, "{route} on {site}");
        }
    }
    // A malformed site id is a plain 404 too.
    assert_eq!(
        homeowner.get("/sites/not-a-uuid/controls").await.status(),
        404
    );
    assert_eq!(command_count(&app).await, 0);
    assert_eq!(audit_count(&app).await, 0);
    assert_no_command(&mut a2_link, 1).await;
    assert_no_command(&mut b1_link, 1).await;
    // The live feed that carries control events is closed to them as well.
    let err = homeowner.live(w.b1.site_id).await.err().unwrap();
    assert_eq!(refused_status(&err), Some(404));
}

#[tokio::test]
async fn a_viewer_sees_the_controls_read_only_and_can_neither_change_nor_read_the_audit_log() {
    let app = spawn_app().await;
    let (w, _a2, _b1) = world(&app).await;
    let agent = app.create_agent(w.a1.site_id).await;
    let mut link = app.controllable_agent(&agent).await;
    app.login_ok(&w.viewer_a1).await;
    let site = w.a1.site_id;
    let html = page(&app, site).await;
    assert!(html.contains("Read-only view"), "{html}");
    assert!(html.contains(&format!(r#"data-control-key="{SETPOINT}""#)));
    assert!(
        !html.contains("/controls/setpoint")
            && !html.contains("/controls/output")
            && !html.contains("/schedule?")
    );
    for (route, fields) in [
        (
            "controls/setpoint",
            vec![("control", SETPOINT), ("value", "21")],
        ),
        ("controls/output", vec![("control", CAR), ("state", "on")]),
        (
            "controls/action",
            vec![("action", "boost_dhw"), ("op", "start"), ("minutes", "60")],
        ),
        (
            "controls/settings",
            vec![("control", SETPOINT), ("band_min", ""), ("band_max", "")],
        ),
        ("schedule", vec![("control", CAR), ("day0", "06:00-07:00")]),
    ] {
        let res = post(&app, site, route, &fields).await;
        assert_eq!(res.status(), 403, "{route}");
    }
    assert_eq!(
        app.get(&format!("/sites/{site}/schedule?control=pop1%2Fcar_heater"))
            .await
            .status(),
        403
    );
    assert_eq!(app.get(&format!("/sites/{site}/audit")).await.status(), 403);
    assert_eq!(
        app.get(&format!("/sites/{site}/audit.csv")).await.status(),
        403
    );
    assert_eq!(command_count(&app).await, 0);
    assert_no_command(&mut link, 1).await;
}

#[tokio::test]
async fn the_installer_sets_comfort_bands_and_hides_controls_from_homeowners() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    let installer = app.create_person(seed.org, Role::Installer, None).await;
    let site = seed.site.site_id;
    let inst = app.new_browser();
    inst.login_ok(&installer).await;
    let html = page(&inst, site).await;
    assert!(
        html.contains("/controls/settings"),
        "installers get the settings forms"
    );
    let res = post(
        &inst,
        site,
        "controls/settings",
        &[
            ("control", SETPOINT),
            ("band_min", "19,5"),
            ("band_max", "22"),
            ("homeowner_visible", "on"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).ends_with("?notice=saved"));
    // Unticked checkbox: hidden.
    let res = post(
        &inst,
        site,
        "controls/settings",
        &[("control", "action:boost_dhw")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let settings = store::control::settings_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let band = settings[SETPOINT].band.unwrap();
    assert_eq!((band.min, band.max), (19.5, 22.0));
    assert!(!settings["action:boost_dhw"].homeowner_visible);

    // Technicians operate but do not configure.
    let tech = app.new_browser();
    tech.login_ok(&seed.technician).await;
    assert!(!page(&tech, site).await.contains("/controls/settings"));
    let res = post(
        &tech,
        site,
        "controls/settings",
        &[("control", SETPOINT), ("band_min", ""), ("band_max", "")],
    )
    .await;
    assert_eq!(res.status(), 403);

    app.login_ok(&seed.homeowner).await;
    let html = page(&app, site).await;
    assert!(
        !html.contains("boost_dhw"),
        "the hidden action is not shown"
    );
    assert!(html.contains("19.5–22.0 °C"));
    let res = post(
        &app,
        site,
        "controls/action",
        &[("action", "boost_dhw"), ("op", "start"), ("minutes", "60")],
    )
    .await;
    assert_eq!(
        res.status(),
        422,
        "a hidden control does not exist for the homeowner"
    );
    let res = post(
        &app,
        site,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "22.5")],
    )
    .await;
    assert_eq!(res.status(), 422);
    let res = post(
        &app,
        site,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "22")],
    )
    .await;
    assert_eq!(res.status(), 303);
    next_command(&mut agent).await;

    let (chain, _) = store::audit::chain_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let first = &chain[0].entry;
    assert_eq!(first.action, "control_settings");
    assert_eq!(first.actor_user_id, Some(installer.id.0));
    assert_eq!(
        first.before.as_deref(),
        Some("band envelope; visible to homeowners")
    );
    assert_eq!(
        first.after.as_deref(),
        Some("band 19.5–22.0 °C; visible to homeowners")
    );
}

#[tokio::test]
async fn concurrent_commands_chain_the_audit_log_without_gaps() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    let site = seed.site.site_id;
    let mut browsers = Vec::new();
    for _ in 0..6 {
        let b = app.new_browser();
        b.login_ok(&seed.homeowner).await;
        browsers.push(b);
    }
    let posts = browsers.iter().enumerate().map(|(i, b)| {
        let value = format!("2{i}.0");
        async move {
            post(
                b,
                site,
                "controls/setpoint",
                &[("control", SETPOINT), ("value", &value)],
            )
            .await
            .status()
        }
    });
    for status in futures_util::future::join_all(posts).await {
        assert_eq!(status, 303);
    }
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(next_command(&mut agent).await.id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each command delivered once");
    let (chain, head) = store::audit::chain_of_site(app.db(), seed.site)
        .await
        .unwrap();
    assert_eq!(chain.len(), 6);
    assert_eq!(
        server::domain::audit::verify(seed.site.site_id, &chain, head.as_ref()),
        Ok(6)
    );
}

#[tokio::test]
async fn a_technician_operates_the_companys_sites_under_their_own_name_and_another_companys_sees_nothing()
 {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let site = seed.site.site_id;
    let mut agent = app.controllable_agent(&seed.agent).await;
    // A second site of the same service company, with its own agent.
    let other_site = app.create_site(seed.org, "Virtanen").await;
    let other_agent = app.create_agent(other_site.site_id).await;
    let mut other_link = app.controllable_agent(&other_agent).await;
    // The technician has a real name, so the log can be read by people.
    let email = format!("teemu-{}@example.test", uuid::Uuid::new_v4().simple());
    let tech_id =
        server::services::admin::create_user(app.db(), &email, "Teemu Teknikko", "pw-tech-123")
            .await
            .unwrap();
    server::services::admin::add_member(app.db(), seed.org, &email, Role::Technician, None)
        .await
        .unwrap();
    let tech = app.new_browser();
    tech.login_ok(&crate::helpers::Person {
        id: tech_id,
        email: email.clone(),
        password: "pw-tech-123".into(),
    })
    .await;

    // The same controls on every site of the company.
    for (s, link) in [(site, &mut agent), (other_site.site_id, &mut other_link)] {
        let res = post(
            &tech,
            s,
            "controls/output",
            &[("control", CAR), ("state", "on")],
        )
        .await;
        assert_eq!(res.status(), 303, "{s}");
        let cmd = next_command(link).await;
        assert_eq!(
            cmd.issued_by, email,
            "the agent logs the technician's address"
        );
        link.send(&result(
            cmd.id,
            CommandOutcome::Applied,
            None,
            0.0,
            Some(1.0),
        ))
        .await;
        wait_status(&app, cmd.id, CommandStatus::Applied).await;
    }
    let res = post(
        &tech,
        site,
        "controls/action",
        &[("action", "boost_dhw"), ("op", "start"), ("minutes", "60")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let boost = next_command(&mut agent).await;
    assert_eq!(boost.issued_by, email);

    // Every entry of the site's log is under the technician's name.
    let (chain, _) = store::audit::chain_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let who: Vec<(&str, Option<uuid::Uuid>, &str)> = chain
        .iter()
        .map(|c| {
            (
                c.entry.action.as_str(),
                c.entry.actor_user_id,
                c.entry.actor_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        who,
        [
            ("set", Some(tech_id.0), "Teemu Teknikko"),
            ("result", Some(tech_id.0), "Teemu Teknikko"),
            ("start_action", Some(tech_id.0), "Teemu Teknikko"),
        ]
    );
    // The homeowner reads it on the audit page and in the export.
    app.login_ok(&seed.homeowner).await;
    let page = app.get(&format!("/sites/{site}/audit")).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Teemu Teknikko"));
    let csv = app.get(&format!("/sites/{site}/audit.csv")).await;
    assert_eq!(csv.status(), 200);
    assert!(csv.text().await.unwrap().contains("Teemu Teknikko"));

    // A technician of another service company reaches none of it.
    let rival_org = app.create_org("Kilpailija Oy").await;
    let rival = app.create_person(rival_org, Role::Technician, None).await;
    let outsider = app.new_browser();
    outsider.login_ok(&rival).await;
    let commands_before = command_count(&app).await;
    let audit_before = audit_count(&app).await;
    assert_eq!(
        outsider
            .get(&format!("/sites/{site}/controls"))
            .await
            .status(),
        404
    );
    let res = post(
        &outsider,
        site,
        "controls/output",
        &[("control", CAR), ("state", "off")],
    )
    .await;
    assert_eq!(res.status(), 404);
    assert_eq!(command_count(&app).await, commands_before);
    assert_eq!(audit_count(&app).await, audit_before);
}
