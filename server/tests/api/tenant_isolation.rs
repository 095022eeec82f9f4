//! Nobody sees a site their memberships do not reach, and "not yours" looks
//! exactly like "does not exist".

use server::domain::{Role, SiteId, SiteRef};

use crate::helpers::{Person, TestApp, refused_status, spawn_app};

/// Organisation A with sites A1 and A2, organisation B with site B1.
struct World {
    a1: SiteRef,
    a2: SiteRef,
    b1: SiteRef,
    homeowner_a1: Person,
    technician_a: Person,
}

async fn world(app: &TestApp) -> World {
    let org_a = app.create_org("Org A").await;
    let org_b = app.create_org("Org B").await;
    let a1 = app.create_site(org_a, "A1 house").await;
    let a2 = app.create_site(org_a, "A2 house").await;
    let b1 = app.create_site(org_b, "B1 house").await;
    let homeowner_a1 = app
        .create_person(org_a, Role::Homeowner, Some(a1.site_id))
        .await;
    let technician_a = app.create_person(org_a, Role::Technician, None).await;
    World {
        a1,
        a2,
        b1,
        homeowner_a1,
        technician_a,
    }
}

async fn assert_html_404(app: &TestApp, path: &str) -> String {
    let res = app.get(path).await;
    assert_eq!(res.status(), 404, "{path}");
    let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/html"), "{path}: {ctype}");
    res.text().await.unwrap()
}

async fn assert_live_refused(app: &TestApp, site: SiteId) {
    let err = app
        .live(site)
        .await
        .err()
        .unwrap_or_else(|| panic!("live feed of {site} was upgraded"));
    assert_eq!(refused_status(&err), Some(404), "{err}");
}

#[tokio::test]
async fn a_homeowner_gets_404_for_a_site_of_another_organisation() {
    let app = spawn_app().await;
    let w = world(&app).await;
    app.login_ok(&w.homeowner_a1).await;
    let foreign = assert_html_404(&app, &format!("/sites/{}", w.b1.site_id)).await;
    let missing = assert_html_404(&app, &format!("/sites/{}", SiteId::new())).await;
    assert_eq!(foreign, missing, "not yours looks exactly like missing");
    assert!(!foreign.contains("B1 house"));
    assert_live_refused(&app, w.b1.site_id).await;
}

#[tokio::test]
async fn a_homeowner_gets_404_for_another_site_of_the_same_organisation() {
    let app = spawn_app().await;
    let w = world(&app).await;
    app.login_ok(&w.homeowner_a1).await;
    assert_eq!(
        app.get(&format!("/sites/{}", w.a1.site_id)).await.status(),
        200
    );
    let html = assert_html_404(&app, &format!("/sites/{}", w.a2.site_id)).await;
    assert!(!html.contains("A2 house"));
    assert_live_refused(&app, w.a2.site_id).await;
    assert!(
        app.live(w.a1.site_id).await.is_ok(),
        "own site's feed works"
    );
}

#[tokio::test]
async fn a_malformed_site_id_is_a_plain_404() {
    let app = spawn_app().await;
    let w = world(&app).await;
    app.login_ok(&w.technician_a).await;
    assert_html_404(&app, "/sites/not-a-uuid").await;
    assert_html_404(&app, "/sites/not-a-uuid/live").await;
}

#[tokio::test]
async fn a_technician_sees_every_site_of_their_organisation_and_none_of_another() {
    let app = spawn_app().await;
    let w = world(&app).await;
    app.login_ok(&w.technician_a).await;
    for site in [w.a1, w.a2] {
        assert_eq!(
            app.get(&format!("/sites/{}", site.site_id)).await.status(),
            200
        );
        assert!(app.live(site.site_id).await.is_ok());
    }
    assert_html_404(&app, &format!("/sites/{}", w.b1.site_id)).await;
    assert_live_refused(&app, w.b1.site_id).await;
}

#[tokio::test]
async fn the_site_list_shows_only_visible_sites() {
    let app = spawn_app().await;
    let w = world(&app).await;

    app.login_ok(&w.technician_a).await;
    let html = app.get("/sites").await.text().await.unwrap();
    assert!(html.contains(&w.a1.site_id.to_string()));
    assert!(html.contains(&w.a2.site_id.to_string()));
    assert!(!html.contains(&w.b1.site_id.to_string()));
    assert!(!html.contains("B1 house"));

    let homeowner = app.new_browser();
    homeowner.login_ok(&w.homeowner_a1).await;
    let html = homeowner.get("/sites").await.text().await.unwrap();
    assert!(html.contains(&w.a1.site_id.to_string()));
    assert!(!html.contains(&w.a2.site_id.to_string()));
    assert!(!html.contains(&w.b1.site_id.to_string()));
}

#[tokio::test]
async fn someone_without_memberships_sees_no_sites() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let org_c = app.create_org("Org C").await;
    let loner = app.create_person(org_c, Role::Technician, None).await;
    app.login_ok(&loner).await;
    let html = app.get("/sites").await.text().await.unwrap();
    for site in [w.a1, w.a2, w.b1] {
        assert!(!html.contains(&site.site_id.to_string()));
    }
}
