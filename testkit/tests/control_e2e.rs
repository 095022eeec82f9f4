//! Remote control end to end with nothing faked: the real server, the real
//! agent with the demo's control envelope ([`agent::sim::DEMO_CONTROLS`]) and
//! the EH-203 simulator over Modbus TCP, driven from the Controls page in
//! headless Chromium. Each test checks what the page shows against the
//! simulator's registers, the server's store and the audit chain:
//!
//! - the homeowner raises the hot-water setpoint; then someone turns it at
//!   the heat pump's own keypad and the page shows the new value at once
//!   (not at the agent's next periodic state refresh);
//! - switches the car heater on, then releases it (it has no schedule, so
//!   the device's own setting governs it again); the buttons show the state;
//! - boosts the hot water for a chosen time, then stops the boost;
//! - edits the car heater's weekly clock table (with a copied day and an
//!   exception day), which the agent then runs on its own clock; malformed
//!   edits are refused in the page, in Finnish;
//! - a read-only account sees the values but no working control.
//!
//! The scripts stop at checkpoints ([`browser::Script`]) while the page shows
//! a state, so the device is checked at that same moment.

use std::time::Duration;

use anyhow::Context;
use protocol::{ControlSource, ControlState};
use server::{
    domain::SiteRef,
    store,
    store::control::{CommandRecord, CommandStatus},
};
use testkit::{Stack, browser, eventually, stack::Login};
use time::OffsetDateTime;

const T: Duration = Duration::from_secs(30);
/// One whole browser run, Chromium start included.
const BROWSER_T: Duration = Duration::from_secs(120);
const KEY: &str = "heatpump/dhw_setpoint";
/// How long a change made at the device may take to reach the page: a poll
/// (300 ms) and a message, with room for a slow machine, yet well under the
/// agent's periodic control-state refresh (60 s), which it must not wait for.
const AT_ONCE: Duration = Duration::from_secs(20);

/// The number in the `reported` field of control card `key` on the Controls
/// page `html`.
fn reported_on_page(html: &str, key: &str) -> Option<f64> {
    let card = &html[html.find(&format!("data-control-key=\"{key}\""))?..];
    let field = &card[card.find("class=\"reported\">")? + "class=\"reported\">".len()..];
    field[..field.find('<')?].trim().parse().ok()
}

const CAR: &str = "heatpump/car_heater";
const BOOST: &str = "boost_dhw";

/// A card's form button as the page shows it (see `common.mjs` `buttons`):
/// its text, `aria-pressed` (JSON null when it has none) and whether it is
/// disabled.
fn button(text: &str, pressed: Option<bool>, disabled: bool) -> serde_json::Value {
    serde_json::json!({
        "text": text,
        "pressed": pressed.map(|p| p.to_string()),
        "disabled": disabled,
    })
}

/// The environment every Controls-page script needs, logged in as `who`.
fn page_env(stack: &Stack, who: &Login) -> Vec<(&'static str, String)> {
    vec![
        ("BASE_URL", stack.server.base.clone()),
        ("EMAIL", who.email.clone()),
        ("PASSWORD", who.password.clone()),
        (
            "CONTROLS_PATH",
            format!("/sites/{}/controls", stack.site.site_id),
        ),
    ]
}

/// The control state the store holds for the demo point `point`.
async fn state_of(stack: &Stack, point: &str) -> anyhow::Result<ControlState> {
    store::control::states_of_site(&stack.server.state.db, stack.site)
        .await?
        .into_iter()
        .find(|s| s.state.point == point)
        .map(|s| s.state)
        .with_context(|| format!("no control state stored for {point}"))
}

/// Wait until the agent has reported `point` with the device's value `value`.
async fn reported(stack: &Stack, point: &str, value: f64) -> anyhow::Result<ControlState> {
    eventually(
        T,
        &format!("the agent to report {point} = {value}"),
        || async move {
            state_of(stack, point)
                .await
                .ok()
                .filter(|s| s.reported == Some(value))
        },
    )
    .await
}

/// The simulator's holding register `addr`.
fn register(stack: &Stack, addr: u16) -> anyhow::Result<u16> {
    let words = stack
        .sim
        .read_holding(addr, 1)
        .map_err(|e| anyhow::anyhow!("reading register {addr}: {e:?}"))?;
    words.first().copied().context("one register read")
}

/// The site's audit chain, verified: (action, target) of every entry, and
/// the commands the non-result entries name, oldest first.
async fn audit(stack: &Stack) -> anyhow::Result<(Vec<(String, String)>, Vec<CommandRecord>)> {
    let conn = &stack.server.state.db;
    let site: SiteRef = stack.site;
    let verified = store::audit::verify_site(conn, site).await?;
    anyhow::ensure!(verified.is_ok(), "the audit chain is broken: {verified:?}");
    let (chain, _) = store::audit::chain_of_site(conn, site).await?;
    let mut commands = Vec::new();
    for c in chain.iter().filter(|c| c.entry.action != "result") {
        let id = c.entry.command_id.context("the entry names its command")?;
        commands.push(
            store::control::find_command(conn, id)
                .await?
                .context("the command is stored")?,
        );
    }
    let entries = chain
        .into_iter()
        .map(|c| (c.entry.action, c.entry.target))
        .collect();
    Ok((entries, commands))
}

/// An RFC 3339 time the page shows in a `datetime` attribute.
fn shown_time(v: &serde_json::Value) -> anyhow::Result<OffsetDateTime> {
    let text = v.as_str().with_context(|| format!("no time in {v}"))?;
    Ok(OffsetDateTime::parse(
        text,
        &time::format_description::well_known::Rfc3339,
    )?)
}

/// `a` and `b` are the same instant as far as a page shows it (the store
/// keeps microseconds, the agent's message nanoseconds).
fn same_instant(a: OffsetDateTime, b: OffsetDateTime) -> bool {
    (a - b).abs() < time::Duration::seconds(1)
}

#[tokio::test]
async fn the_homeowner_raises_the_hot_water_setpoint_and_the_real_device_takes_it()
-> anyhow::Result<()> {
    let stack = Stack::start_with_controls().await?;
    let conn = stack.server.state.db.clone();
    let site = stack.site;
    // The agent reports the preset 48.0 °C it read from the device.
    eventually(
        T,
        "the agent to report the preset hot-water setpoint",
        || {
            let conn = conn.clone();
            async move {
                store::control::states_of_site(&conn, site)
                    .await
                    .ok()?
                    .into_iter()
                    .find(|s| s.state.point == "dhw_setpoint" && s.state.reported == Some(48.0))
            }
        },
    )
    .await?;

    let out = tempfile::tempdir()?;
    let report = browser::run(
        "controls.mjs",
        &[
            ("BASE_URL", stack.server.base.clone()),
            ("EMAIL", stack.homeowner.email.clone()),
            ("PASSWORD", stack.homeowner.password.clone()),
            ("CONTROLS_PATH", format!("/sites/{}/controls", site.site_id)),
            ("CONTROL_KEY", KEY.to_owned()),
            ("OUT_DIR", out.path().display().to_string()),
            // The real agent answers within milliseconds, often before the
            // redirected page's live feed opens: the page then learns the
            // result from its resync, not from a live message.
            ("MIN_EVENTS", "0".to_owned()),
        ],
        Duration::from_secs(120),
    )
    .await?;
    // One 0.5 °C step up from what the device reported, applied and read back.
    assert_eq!(report["before"], 48.0, "{report}");
    assert_eq!(report["requested"], 48.5, "{report}");
    assert_eq!(report["reported"], 48.5, "{report}");
    assert_eq!(report["commanded"], 48.5, "{report}");
    assert_eq!(report["status_text"], "Toteutettu", "{report}");
    assert_eq!(
        report["next_plus"], 49.0,
        "the next step follows the new value: {report}"
    );

    // The simulated device's register holds the new value (0.1 °C units).
    assert_eq!(
        stack
            .sim
            .read_holding(agent::sim::DEMO_DHW_SETPOINT_REGISTER, 1)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        [485]
    );

    // The server recorded the command as applied by the real agent, with the
    // value before and after.
    let (chain, _) = store::audit::chain_of_site(&conn, site).await?;
    let actions: Vec<&str> = chain.iter().map(|c| c.entry.action.as_str()).collect();
    assert_eq!(actions, ["set", "result"]);
    let id = chain[0]
        .entry
        .command_id
        .context("the entry names its command")?;
    let cmd = store::control::find_command(&conn, id)
        .await?
        .context("stored")?;
    assert_eq!(cmd.status, CommandStatus::Applied);
    assert_eq!(cmd.value_after, Some(48.5));

    // Someone turns the setpoint down to 47.0 at the heat pump's keypad: the
    // page shows what the device now reports, next to what was commanded.
    stack
        .sim
        .set_holding(agent::sim::DEMO_DHW_SETPOINT_REGISTER, 470)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let homeowner = stack.login_homeowner().await?;
    let page = stack.url(&format!("/sites/{}/controls", site.site_id));
    eventually(AT_ONCE, "the keypad's 47.0 on the Controls page", || {
        let (homeowner, page) = (&homeowner, &page);
        async move {
            let html = homeowner.get(page).send().await.ok()?.text().await.ok()?;
            (reported_on_page(&html, KEY) == Some(47.0)).then_some(())
        }
    })
    .await?;

    stack.cleanup().await
}

#[tokio::test]
async fn the_homeowner_switches_the_car_heater_on_and_back_to_its_schedule_on_the_real_device()
-> anyhow::Result<()> {
    let stack = Stack::start_with_controls().await?;
    let car_register = agent::sim::DEMO_CAR_HEATER_REGISTER;
    reported(&stack, "car_heater", 0.0).await?;

    let mut env = page_env(&stack, &stack.homeowner);
    env.push(("CONTROL_KEY", CAR.to_owned()));
    let mut page = browser::Script::start("controls_output.mjs", &env, BROWSER_T)?;

    // The page shows the car heater on: the device holds it, and the page's
    // end time is the agent's (the envelope caps an override at 180 min).
    let on = page.checkpoint("on").await?;
    let card = &on["card"];
    assert_eq!(register(&stack, car_register)?, 1, "{on}");
    // The buttons show it on; with no schedule, releasing the manual control
    // is offered as just that.
    assert_eq!(
        card["buttons"],
        serde_json::json!({
            "on": button("Päälle", Some(true), false),
            "off": button("Pois", Some(false), false),
            "auto": button("Vapauta käsiohjaus", None, false),
        }),
        "{on}"
    );
    assert_eq!(card["reported"], "päällä", "{on}");
    assert_eq!(card["commanded"], "päällä", "{on}");
    assert_eq!(card["last_status_text"], "Toteutettu", "{on}");
    assert!(
        card["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("Käsiohjaus, päättyy ")),
        "{on}"
    );
    let state = state_of(&stack, "car_heater").await?;
    assert_eq!(state.source, ControlSource::Manual);
    let until = state.until.context("a manual override has an end")?;
    assert!(same_instant(shown_time(&card["until_iso"])?, until), "{on}");
    let (_, commands) = audit(&stack).await?;
    let set = commands.first().context("the set command")?;
    assert_eq!(
        (set.op.as_str(), set.status),
        ("set", CommandStatus::Applied)
    );
    assert_eq!(set.value_after, Some(1.0));
    let applied_at = set.result_at.context("the agent answered")?;
    assert!(
        same_instant(until, applied_at + time::Duration::minutes(180)),
        "until {until}, applied at {applied_at}"
    );

    // Released: it has no schedule, so the agent puts the idle value (off)
    // back, and the page says plainly that nothing but the device governs it,
    // with nothing left to release.
    page.resume().await?;
    let report = page.finish().await?;
    assert_eq!(register(&stack, car_register)?, 0, "{report}");
    let off_by_itself = serde_json::json!({
        "on": button("Päälle", Some(false), false),
        "off": button("Pois", Some(true), false),
        "auto": button("Vapauta käsiohjaus", None, true),
    });
    assert_eq!(report["before"]["buttons"], off_by_itself, "{report}");
    let released = &report["released"];
    assert_eq!(released["buttons"], off_by_itself, "{report}");
    assert_eq!(released["reported"], "pois", "{report}");
    assert_eq!(released["source"], "device", "{report}");
    assert_eq!(
        released["why"], "Ei aikaohjelmaa eikä käsiohjausta: laitteen oma asetus",
        "{report}"
    );
    assert_eq!(released["last_status_text"], "Toteutettu", "{report}");
    assert_eq!(
        state_of(&stack, "car_heater").await?.source,
        ControlSource::Device
    );

    let (entries, commands) = audit(&stack).await?;
    let actions: Vec<&str> = entries.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["set", "result", "release", "result"]);
    assert!(entries.iter().all(|(_, target)| target == CAR));
    let release = &commands[1];
    assert_eq!(
        (release.op.as_str(), release.status, release.value_after),
        ("release", CommandStatus::Applied, Some(0.0))
    );
    stack.cleanup().await
}

#[tokio::test]
async fn the_homeowner_boosts_the_hot_water_for_a_chosen_time_and_stops_it_on_the_real_device()
-> anyhow::Result<()> {
    let stack = Stack::start_with_controls().await?;
    let dhw_register = agent::sim::DEMO_DHW_SETPOINT_REGISTER;
    reported(&stack, "dhw_setpoint", 48.0).await?;

    let mut env = page_env(&stack, &stack.homeowner);
    env.extend([
        ("ACTION", BOOST.to_owned()),
        ("CONTROL_KEY", KEY.to_owned()),
        // The envelope allows at most 60 min; the page offers 30 and 60.
        ("MINUTES", "30".to_owned()),
    ]);
    let mut page = browser::Script::start("controls_boost.mjs", &env, BROWSER_T)?;

    // The page shows the boost running: the device holds the boost value,
    // and both cards show the end the agent set, 30 min after it started.
    let running = page.checkpoint("running").await?;
    assert_eq!(register(&stack, dhw_register)?, 550, "{running}");
    let (action, point) = (&running["action"], &running["point"]);
    // While it runs, Stop is the way out and Start would begin it again.
    assert_eq!(
        (&action["buttons"]["start"], &action["buttons"]["stop"]),
        (
            &button("Aloita alusta", None, false),
            &button("Pysäytä", None, false)
        ),
        "{running}"
    );
    assert_eq!(point["reported"], "55,0", "{running}");
    assert!(
        point["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("Tehostus, päättyy ")),
        "{running}"
    );
    assert!(
        action["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("Käynnissä, päättyy ")),
        "{running}"
    );
    let state = state_of(&stack, "dhw_setpoint").await?;
    assert_eq!(
        (state.source, state.action.as_deref()),
        (ControlSource::Action, Some(BOOST))
    );
    let until = state.until.context("a running action has an end")?;
    assert!(
        same_instant(shown_time(&action["until_iso"])?, until),
        "{running}"
    );
    let (_, commands) = audit(&stack).await?;
    let start = commands.first().context("the start command")?;
    assert_eq!(
        (start.op.as_str(), start.status),
        ("start_action", CommandStatus::Applied)
    );
    let request: serde_json::Value = serde_json::from_str(&start.request)?;
    assert_eq!(request["duration_s"], 1800, "the chosen 30 min: {request}");
    let applied_at = start.result_at.context("the agent answered")?;
    assert!(
        same_instant(until, applied_at + time::Duration::minutes(30)),
        "until {until}, applied at {applied_at}"
    );

    // Stopped from the page: the value from before the boost is back.
    page.resume().await?;
    let report = page.finish().await?;
    assert_eq!(register(&stack, dhw_register)?, 480, "{report}");
    let stopped = &report["stopped"];
    // Idle, before and after: nothing to stop.
    let idle = (
        &button("Käynnistä", None, false),
        &button("Pysäytä", None, true),
    );
    for stage in [&report["before"]["action"], &stopped["action"]] {
        assert_eq!(
            (&stage["buttons"]["start"], &stage["buttons"]["stop"]),
            idle,
            "{report}"
        );
    }
    assert_eq!(stopped["point"]["reported"], "48,0", "{report}");
    assert_eq!(stopped["action"]["why"], "Ei käynnissä", "{report}");
    assert_eq!(
        stopped["action"]["last_status_text"], "Toteutettu",
        "{report}"
    );
    let state = state_of(&stack, "dhw_setpoint").await?;
    assert_eq!((state.source, state.action), (ControlSource::Device, None));

    let (entries, commands) = audit(&stack).await?;
    let actions: Vec<&str> = entries.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["start_action", "result", "stop_action", "result"]);
    assert!(entries.iter().all(|(_, t)| t == "action:boost_dhw"));
    assert_eq!(commands[1].status, CommandStatus::Applied);
    assert_eq!(commands[1].value_after, Some(48.0));
    stack.cleanup().await
}

/// The first whole hour from 06:00 to 20:00 Helsinki time at least an hour
/// from now: within the day a schedule change stays deliverable, with room
/// for an hour-long period before an evening one.
fn next_schedule_edge() -> anyhow::Result<jiff::Zoned> {
    const ZONE: &str = "Europe/Helsinki";
    let soon = jiff::Zoned::now()
        .in_tz(ZONE)?
        .checked_add(jiff::Span::new().hours(1))?
        .round(
            jiff::ZonedRound::new()
                .smallest(jiff::Unit::Hour)
                .mode(jiff::RoundMode::Ceil),
        )?;
    let edge = match soon.hour() {
        h if h < 6 => soon.date().at(6, 0, 0, 0).in_tz(ZONE)?,
        h if h > 20 => soon.date().tomorrow()?.at(6, 0, 0, 0).in_tz(ZONE)?,
        _ => soon,
    };
    Ok(edge)
}

#[tokio::test]
async fn a_weekly_clock_table_edited_in_the_browser_switches_the_real_output_at_its_minute()
-> anyhow::Result<()> {
    let mut stack = Stack::start_with_controls().await?;
    let car_register = agent::sim::DEMO_CAR_HEATER_REGISTER;
    reported(&stack, "car_heater", 0.0).await?;
    // The homeowner edits while the house is offline: the change waits at
    // the server, and the agent that connects next runs it on its own clock.
    stack.stop_agent().await?;

    let edge = next_schedule_edge()?;
    let edge_at = OffsetDateTime::from_unix_timestamp(edge.timestamp().as_second())?;
    let day = usize::try_from(edge.weekday().to_monday_zero_offset())?;
    let hour = u16::try_from(edge.hour())?;
    let periods = format!("{hour:02}:00-{:02}:00, 22:00-23:30", hour + 1);
    let away = edge.date().checked_add(jiff::Span::new().days(3))?;
    let mut env = page_env(&stack, &stack.homeowner);
    env.extend([
        ("CONTROL_KEY", CAR.to_owned()),
        ("DAY", day.to_string()),
        ("PERIODS", periods.clone()),
        ("EXCEPTION_DATE", away.to_string()),
    ]);
    let mut page = browser::Script::start("controls_schedule.mjs", &env, BROWSER_T)?;

    // Sent from the editor: stored and waiting for the site, as the page says.
    let saved = page.checkpoint("saved").await?;
    assert_eq!(saved["card"]["last_status"], "queued", "{saved}");
    assert!(
        saved["notice"]
            .as_str()
            .is_some_and(|n| n.contains("muutos lähetetään, kun yhteys palaa")),
        "{saved}"
    );
    let (entries, commands) = audit(&stack).await?;
    assert_eq!(entries, [("set_schedule".to_owned(), CAR.to_owned())]);
    let cmd = &commands[0];
    assert_eq!((cmd.status, cmd.delivered_at), (CommandStatus::Sent, None));
    let protocol::ControlRequest::SetSchedule { schedule, .. } =
        serde_json::from_str(&cmd.request)?
    else {
        anyhow::bail!("not a schedule: {}", cmd.request);
    };
    // The typed day went to its kind of days by the copy button; the
    // exception day is off all day.
    let same_kind = if day < 5 { 0..5 } else { 5..7 };
    let typed = vec![
        protocol::Period {
            start_min: hour * 60,
            end_min: (hour + 1) * 60,
        },
        protocol::Period {
            start_min: 22 * 60,
            end_min: 23 * 60 + 30,
        },
    ];
    for (d, got) in schedule.days.iter().enumerate() {
        let want = if same_kind.contains(&d) {
            typed.clone()
        } else {
            vec![]
        };
        assert_eq!(got, &want, "day {d}: {schedule:?}");
    }
    assert_eq!(schedule.exceptions.len(), 1, "{schedule:?}");
    let ex = &schedule.exceptions[0];
    assert_eq!(
        (ex.date.to_string(), ex.label.as_str(), ex.periods.len()),
        (away.to_string(), "away", 0)
    );
    assert_eq!(
        (
            schedule.time_zone.as_str(),
            schedule.on_value,
            schedule.off_value
        ),
        ("Europe/Helsinki", 1.0, 0.0)
    );

    // The agent connects with its clock a minute before the first period,
    // running 20 times as fast: the edge comes 3 s later.
    let clock =
        agent::control::executor::Clock::starting_at(edge_at - time::Duration::minutes(1), 20.0);
    stack.start_agent_with_control_clock(clock)?;
    page.resume().await?;
    let watch = eventually(T, "the car heater to switch on", || {
        let now = clock.now();
        let on = register(&stack, car_register).ok() == Some(1);
        async move { on.then_some(now) }
    });
    let (switched, on_at) = tokio::join!(page.checkpoint("switched"), watch);
    let (switched, on_at) = (switched?, on_at?);
    assert!(on_at >= edge_at, "switched on at {on_at}, before {edge_at}");
    assert_eq!(register(&stack, car_register)?, 1, "{switched}");
    let card = &switched["card"];
    assert_eq!(
        (&card["why"], &card["reported"], &card["last_status_text"]),
        (
            &"Aikaohjelman mukaan".into(),
            &"päällä".into(),
            &"Toteutettu".into()
        ),
        "{switched}"
    );
    // Updated live, as the page learnt from the site: it has a schedule now
    // and follows it already, so "back to schedule" names it and has nothing
    // to do; the buttons show the output on.
    assert_eq!(
        card["buttons"],
        serde_json::json!({
            "on": button("Päälle", Some(true), false),
            "off": button("Pois", Some(false), false),
            "auto": button("Takaisin aikaohjelmaan", None, true),
        }),
        "{switched}"
    );
    let state = state_of(&stack, "car_heater").await?;
    assert_eq!(
        (state.source, state.reported),
        (ControlSource::Schedule, Some(1.0))
    );
    let (entries, commands) = audit(&stack).await?;
    let actions: Vec<&str> = entries.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["set_schedule", "result"]);
    let cmd = &commands[0];
    assert_eq!(cmd.status, CommandStatus::Applied);
    let (chain, _) = store::audit::chain_of_site(&stack.server.state.db, stack.site).await?;
    assert_eq!(chain[1].entry.result, "applied");
    // Taken before the edge (the machine was quick enough): it was off then.
    if cmd.result_at.is_some_and(|at| at < edge_at) {
        assert_eq!(cmd.value_after, Some(0.0), "on before its period");
    }

    // The editor shows what was saved; malformed edits change nothing.
    page.resume().await?;
    let report = page.finish().await?;
    let shown_days: Vec<String> = (0..7)
        .map(|d| {
            if same_kind.contains(&d) {
                periods.clone()
            } else {
                String::new()
            }
        })
        .collect();
    assert_eq!(
        report["typed_days"],
        serde_json::json!(shown_days),
        "{report}"
    );
    assert_eq!(
        report["saved_days"],
        serde_json::json!(shown_days),
        "{report}"
    );
    assert_eq!(
        report["saved_exceptions"],
        serde_json::json!([{"date": away.to_string(), "label": "away", "periods": ""}]),
        "{report}"
    );
    let weekday = [
        "Maanantai",
        "Tiistai",
        "Keskiviikko",
        "Torstai",
        "Perjantai",
        "Lauantai",
        "Sunnuntai",
    ][day];
    let refusals = report["malformed"]
        .as_array()
        .context("the malformed edits")?;
    let expected = [
        format!("{weekday}: jakso 08:00–06:00 päättyy ennen alkuaan."),
        format!("{weekday}: jaksot 06:00–08:00 ja 07:00–09:00 menevät päällekkäin."),
    ];
    assert_eq!(refusals.len(), expected.len(), "{report}");
    for (r, message) in refusals.iter().zip(expected) {
        assert_eq!(r["status"], 422, "{r}");
        assert_eq!(r["error"], message.as_str(), "{r}");
        assert_eq!(r["kept"], r["typed"], "what was typed stays: {r}");
        assert_eq!(r["exceptions_kept"], report["saved_exceptions"], "{r}");
    }
    assert_eq!(
        report["days_after_malformed"], report["saved_days"],
        "{report}"
    );
    let (entries, _) = audit(&stack).await?;
    assert_eq!(
        entries.len(),
        2,
        "the refused edits left no trace: {entries:?}"
    );
    assert_eq!(register(&stack, car_register)?, 1);
    assert_eq!(
        state_of(&stack, "car_heater").await?.source,
        ControlSource::Schedule
    );
    stack.cleanup().await
}

#[tokio::test]
async fn a_viewer_sees_the_real_values_live_but_no_controls_and_a_forged_form_changes_nothing()
-> anyhow::Result<()> {
    let stack = Stack::start_with_controls().await?;
    let viewer = stack.add_viewer().await?;
    reported(&stack, "dhw_setpoint", 48.0).await?;
    reported(&stack, "car_heater", 0.0).await?;

    let mut env = page_env(&stack, &viewer);
    env.extend([
        ("CONTROL_KEYS", format!("{KEY},{CAR},action:{BOOST}")),
        ("WATCH_KEY", KEY.to_owned()),
        ("FORGE_KEY", CAR.to_owned()),
    ]);
    let mut page = browser::Script::start("controls_viewer.mjs", &env, BROWSER_T)?;

    // The values the device reports, and nothing to press.
    let looked = page.checkpoint("looked").await?;
    let cards = &looked["cards"];
    assert_eq!(cards[KEY]["reported"], "48,0", "{looked}");
    assert_eq!(cards[CAR]["reported"], "pois", "{looked}");
    assert_eq!(
        cards[format!("action:{BOOST}")]["why"],
        "Ei käynnissä",
        "{looked}"
    );
    for (key, card) in cards.as_object().context("cards")? {
        assert_eq!(card["forms"], 0, "{key}: {looked}");
        assert_eq!(card["enabled_buttons"], 0, "{key}: {looked}");
        assert_eq!(card["links"], serde_json::json!([]), "{key}: {looked}");
    }
    let whole = &looked["page"];
    assert_eq!(whole["forms"], serde_json::json!([]), "{looked}");
    assert_eq!(
        (
            &whole["enabled_buttons"],
            &whole["inputs"],
            &whole["schedule_links"]
        ),
        (&0.into(), &0.into(), &0.into()),
        "{looked}"
    );
    assert_eq!(
        whole["nav"],
        serde_json::json!(["Näkymä", "Ohjaukset"]),
        "no audit log: {looked}"
    );
    assert_eq!(
        looked["flashes"]["notices"],
        serde_json::json!(["Vain katselu: tällä tunnuksella ei voi muuttaa mitään."]),
        "{looked}"
    );

    // Someone turns the hot-water setpoint at the heat pump's own panel:
    // the tablet shows it without a reload.
    stack
        .sim
        .set_holding(agent::sim::DEMO_DHW_SETPOINT_REGISTER, 465)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    page.resume().await?;
    let report = page.finish().await?;
    assert_eq!(report["changed"]["reported"], "46,5", "{report}");

    // A form forged in the page, with its own CSRF token: refused with the
    // Controls page again (at the form's address) and the reason; nothing
    // reaches the device.
    let forged = &report["forged"];
    assert_eq!(forged["status"], 403, "{report}");
    assert_eq!(
        forged["path"],
        format!("/sites/{}/controls/output", stack.site.site_id),
        "{report}"
    );
    assert_eq!(
        forged["flashes"]["errors"],
        serde_json::json!(["Tällä tunnuksella voi vain katsella, ei muuttaa mitään."]),
        "{report}"
    );
    assert_eq!(forged["card"]["reported"], "pois", "{report}");
    assert_eq!(report["schedule_status"], 403, "{report}");
    assert_eq!(register(&stack, agent::sim::DEMO_CAR_HEATER_REGISTER)?, 0);
    let (entries, commands) = audit(&stack).await?;
    assert!(entries.is_empty() && commands.is_empty(), "{entries:?}");
    assert!(
        store::control::latest_commands_of_site(&stack.server.state.db, stack.site, 10)
            .await?
            .is_empty()
    );
    stack.cleanup().await
}
