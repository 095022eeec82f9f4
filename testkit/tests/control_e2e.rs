//! Remote control end to end with nothing faked: the real server, the real
//! agent with the demo's control envelope ([`agent::sim::DEMO_CONTROLS`]) and
//! the EH-203 simulator over Modbus TCP. The homeowner raises the hot-water
//! setpoint on the Controls page in headless Chromium; the simulator's
//! register changes, and the page shows the agent's read-back value and the
//! applied result. Then someone turns the setpoint at the heat pump's own
//! keypad, and the Controls page shows the device's new value at once (not
//! at the agent's next periodic state refresh).

use std::time::Duration;

use anyhow::Context;
use server::{store, store::control::CommandStatus};
use testkit::{Stack, browser, eventually};

const T: Duration = Duration::from_secs(30);
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
