//! The audit log: the hash chain catches edited and removed rows, the page
//! says so, and the CSV export holds every entry with its hashes.

use protocol::CommandOutcome;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use server::{
    domain::{
        Role,
        audit::{self, CSV_HEADER, ChainFault},
    },
    store::{self, entities::audit_log},
};

use crate::{
    controls::{CAR, SETPOINT, next_command, post, result, wait_status},
    helpers::{Seed, TestApp, spawn_app},
};
use server::store::control::CommandStatus;

/// Four entries: a setpoint with its result, an output switched on, and
/// the installer's comfort band.
async fn history(app: &TestApp) -> Seed {
    let seed = app.seed().await;
    let mut agent = app.controllable_agent(&seed.agent).await;
    app.login_ok(&seed.homeowner).await;
    let site = seed.site.site_id;
    post(
        app,
        site,
        "controls/setpoint",
        &[("control", SETPOINT), ("value", "21.5")],
    )
    .await;
    let cmd = next_command(&mut agent).await;
    agent
        .send(&result(
            cmd.id,
            CommandOutcome::Applied,
            None,
            21.0,
            Some(21.5),
        ))
        .await;
    wait_status(app, cmd.id, CommandStatus::Applied).await;
    post(
        app,
        site,
        "controls/output",
        &[("control", CAR), ("state", "on")],
    )
    .await;
    next_command(&mut agent).await;
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
    seed
}

async fn verify(app: &TestApp, seed: &Seed) -> Result<usize, ChainFault> {
    store::audit::verify_site(app.db(), seed.site)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_chain_verifies_and_an_edited_row_is_caught_on_the_page() {
    let app = spawn_app().await;
    let seed = history(&app).await;
    assert_eq!(verify(&app, &seed).await, Ok(4));
    let html = app
        .get(&format!("/sites/{}/audit", seed.site.site_id))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"data-chain-ok="true""#), "{html}");
    assert!(
        html.contains("21.5 °C") && html.contains("Test person"),
        "{html}"
    );

    // Someone with database access makes the result look like 27 °C.
    audit_log::Entity::update_many()
        .col_expr(audit_log::Column::ValueAfter, Expr::value("27.0"))
        .filter(audit_log::Column::SiteId.eq(seed.site.site_id.0))
        .filter(audit_log::Column::Seq.eq(2))
        .exec(app.db())
        .await
        .unwrap();
    assert_eq!(
        verify(&app, &seed).await,
        Err(ChainFault::Edited { seq: 2 })
    );
    let html = app
        .get(&format!("/sites/{}/audit", seed.site.site_id))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"data-chain-ok="false""#), "{html}");
    assert!(html.contains("entry 2 was changed"), "{html}");
}

#[tokio::test]
async fn a_row_edited_with_a_recomputed_hash_is_still_caught() {
    let app = spawn_app().await;
    let seed = history(&app).await;
    let (chain, _) = store::audit::chain_of_site(app.db(), seed.site)
        .await
        .unwrap();
    let mut forged = chain[0].entry.clone();
    forged.actor_name = "Someone else".into();
    let hash = audit::entry_hash(seed.site.site_id, &forged, &chain[0].prev_hash);
    audit_log::Entity::update_many()
        .col_expr(audit_log::Column::ActorName, Expr::value("Someone else"))
        .col_expr(audit_log::Column::Hash, Expr::value(hash))
        .filter(audit_log::Column::SiteId.eq(seed.site.site_id.0))
        .filter(audit_log::Column::Seq.eq(1))
        .exec(app.db())
        .await
        .unwrap();
    assert_eq!(
        verify(&app, &seed).await,
        Err(ChainFault::BrokenLink { seq: 2 })
    );
}

#[tokio::test]
async fn a_removed_row_and_a_removed_newest_row_are_caught() {
    let app = spawn_app().await;
    let seed = history(&app).await;
    let delete = |seq: i64| {
        audit_log::Entity::delete_many()
            .filter(audit_log::Column::SiteId.eq(seed.site.site_id.0))
            .filter(audit_log::Column::Seq.eq(seq))
            .exec(app.db())
    };
    delete(4).await.unwrap();
    assert_eq!(
        verify(&app, &seed).await,
        Err(ChainFault::Truncated { head: 4, last: 3 })
    );
    delete(2).await.unwrap();
    assert_eq!(
        verify(&app, &seed).await,
        Err(ChainFault::Missing {
            expected: 2,
            found: 3
        })
    );
}

#[tokio::test]
async fn the_csv_export_holds_every_entry_with_its_hashes() {
    let app = spawn_app().await;
    let seed = history(&app).await;
    let res = app
        .get(&format!("/sites/{}/audit.csv", seed.site.site_id))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(lines.len(), 5, "{csv}");
    let (chain, _) = store::audit::chain_of_site(app.db(), seed.site)
        .await
        .unwrap();
    for (line, c) in lines[1..].iter().zip(&chain) {
        assert!(line.starts_with(&format!("{},", c.entry.seq)), "{line}");
        assert!(
            line.ends_with(&format!(",{},{}", c.prev_hash, c.hash)),
            "{line}"
        );
    }
    assert!(
        lines[1].contains(&format!(
            ",{},Test person,set,{SETPOINT},",
            seed.homeowner.id
        )),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains(",21.5 °C,"), "{}", lines[1]);
    assert!(
        lines[2].contains(",result,")
            && lines[2].contains(",21.0,21.5,")
            && lines[2].contains(",applied,"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].contains(&format!(",set,{CAR},")) && lines[3].contains(",on,"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].contains(",control_settings,") && lines[4].contains("band 19.0–23.0 °C"),
        "{}",
        lines[4]
    );
    assert!(
        lines[1].contains(&format!(",{},", audit::GENESIS)),
        "the first entry chains to genesis"
    );
}
