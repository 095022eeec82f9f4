//! Logging in and out, sessions, CSRF, throttling and post-login redirects.

use secrecy::SecretString;
use server::{config::AuthSettings, services::auth::SessionKeys};

use crate::helpers::{hidden_input, spawn_app};

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_owned()
}

fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn the_right_password_sets_a_strict_http_only_session_cookie_and_redirects() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let res = app
        .login(&seed.homeowner.email, &seed.homeowner.password)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/");
    let session = set_cookies(&res)
        .into_iter()
        .find(|c| c.starts_with("hc_session="))
        .expect("a session cookie is set");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(session.contains("Path=/"), "{session}");

    // The session works: a homeowner with one site goes straight to it.
    let home = app.get("/").await;
    assert_eq!(home.status(), 303);
    assert_eq!(location(&home), format!("/sites/{}", seed.site.site_id));
    assert_eq!(app.get(&location(&home)).await.status(), 200);
}

#[tokio::test]
async fn the_e_mail_is_matched_case_insensitively() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let res = app
        .login(
            &seed.homeowner.email.to_uppercase(),
            &seed.homeowner.password,
        )
        .await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_e_mail_get_the_same_answer() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let wrong = app.login(&seed.homeowner.email, "not-the-password").await;
    let wrong_status = wrong.status();
    let wrong_cookies = set_cookies(&wrong);
    let wrong_html = wrong.text().await.unwrap();
    let unknown = app
        .login("nobody@example.test", &seed.homeowner.password)
        .await;
    let unknown_status = unknown.status();
    let unknown_html = unknown.text().await.unwrap();

    assert_eq!(wrong_status, 401);
    assert_eq!(wrong_status, unknown_status);
    assert!(
        wrong_html.contains("Wrong e-mail or password."),
        "{wrong_html}"
    );
    // The pages differ only in the echoed e-mail address.
    assert_eq!(
        wrong_html.replace(&seed.homeowner.email, "E"),
        unknown_html.replace("nobody@example.test", "E")
    );
    assert!(!wrong_cookies.iter().any(|c| c.starts_with("hc_session=")));
    assert_eq!(app.get("/sites").await.status(), 303, "not logged in");
}

#[tokio::test]
async fn a_login_without_the_csrf_token_is_refused() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    // No GET /login first: neither cookie nor token.
    let res = app
        .post_form(
            "/login",
            &[
                ("email", seed.homeowner.email.as_str()),
                ("password", seed.homeowner.password.as_str()),
                ("csrf_token", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("The form expired"));
    // A missing field is refused too, and never logs in.
    let res = app
        .post_form(
            "/login",
            &[
                ("email", seed.homeowner.email.as_str()),
                ("password", seed.homeowner.password.as_str()),
            ],
        )
        .await;
    assert!(res.status().is_client_error(), "{}", res.status());
    assert_eq!(app.get("/sites").await.status(), 303);
}

#[tokio::test]
async fn a_login_with_a_wrong_csrf_token_is_refused() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let token = app.csrf_token().await;
    let forged: String = token
        .chars()
        .map(|c| if c == 'a' { 'b' } else { 'a' })
        .collect();
    let res = app
        .post_form(
            "/login",
            &[
                ("email", seed.homeowner.email.as_str()),
                ("password", seed.homeowner.password.as_str()),
                ("csrf_token", forged.as_str()),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(
        !set_cookies(&res)
            .iter()
            .any(|c| c.starts_with("hc_session="))
    );
}

#[tokio::test]
async fn repeated_failures_are_throttled_even_for_the_right_password() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let mut throttled = None;
    for attempt in 1..=8 {
        let res = app.login(&seed.homeowner.email, "wrong-password").await;
        match res.status().as_u16() {
            401 => continue,
            429 => {
                throttled = Some((attempt, res.text().await.unwrap()));
                break;
            }
            other => panic!("attempt {attempt}: unexpected status {other}"),
        }
    }
    let (attempt, html) = throttled.expect("failures were never throttled");
    assert!(attempt > 1, "the first failure must not be throttled");
    assert!(html.contains("Wait"), "{html}");

    let res = app
        .login(&seed.homeowner.email, &seed.homeowner.password)
        .await;
    assert_eq!(
        res.status(),
        429,
        "the right password is refused while throttled"
    );
    assert!(res.text().await.unwrap().contains("Wait"));
    assert_eq!(app.get("/sites").await.status(), 303, "not logged in");
}

#[tokio::test]
async fn logout_clears_the_session() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    app.login_ok(&seed.technician).await;
    assert_eq!(app.get("/sites").await.status(), 200);

    let page = app.get("/sites").await.text().await.unwrap();
    let token = hidden_input(&page, "csrf_token").unwrap_or(app.csrf_token().await);
    let res = app.post_form("/logout", &[("csrf_token", &token)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login");
    let cleared = set_cookies(&res)
        .into_iter()
        .find(|c| c.starts_with("hc_session="))
        .expect("the session cookie is cleared");
    assert!(
        cleared.contains("Max-Age=0") || cleared.contains("1970"),
        "{cleared}"
    );
    let after = app.get("/sites").await;
    assert_eq!(after.status(), 303);
    assert!(location(&after).starts_with("/login"));
}

#[tokio::test]
async fn logout_without_the_csrf_token_is_refused() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    app.login_ok(&seed.technician).await;
    let res = app.post_form("/logout", &[("csrf_token", "x")]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.get("/sites").await.status(), 200, "still logged in");
}

#[tokio::test]
async fn an_expired_session_redirects_to_login() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let ttl = i64::try_from(app.state.sessions.ttl().as_secs()).unwrap();
    let expired = app
        .state
        .sessions
        .issue(seed.technician.id, now_unix() - ttl - 60)
        .unwrap();
    app.set_cookie("hc_session", &expired);
    let res = app.get("/sites").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login?next=%2Fsites");
}

#[tokio::test]
async fn a_forged_or_garbled_session_redirects_to_login() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let other_keys = SessionKeys::new(&AuthSettings {
        jwt_secret: SecretString::from("an-attacker-guessed-this-secret-0123456789".to_owned()),
        session_ttl_minutes: 60,
        cookie_secure: false,
    });
    let forged = other_keys.issue(seed.technician.id, now_unix()).unwrap();
    for cookie in [forged.as_str(), "not-a-jwt", ""] {
        app.set_cookie("hc_session", cookie);
        let res = app.get(&format!("/sites/{}", seed.site.site_id)).await;
        assert_eq!(res.status(), 303, "cookie {cookie:?}");
        assert!(
            location(&res).starts_with("/login?next="),
            "cookie {cookie:?}"
        );
    }
}

#[tokio::test]
async fn a_valid_session_of_a_deleted_user_redirects_to_login() {
    let app = spawn_app().await;
    let token = app
        .state
        .sessions
        .issue(server::domain::UserId::new(), now_unix())
        .unwrap();
    app.set_cookie("hc_session", &token);
    let res = app.get("/sites").await;
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn next_is_followed_after_login_when_it_is_a_local_path() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let target = format!("/sites/{}", seed.site.site_id);
    let res = app
        .login_with_next(&seed.technician.email, &seed.technician.password, &target)
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), target);
}

#[tokio::test]
async fn an_open_redirect_through_next_is_prevented() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    // The login page does not echo a foreign target into its form.
    let page = app
        .get("/login?next=//evil.example/steal")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(hidden_input(&page, "next").as_deref(), Some("/"));
    for next in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
    ] {
        let res = app
            .login_with_next(&seed.technician.email, &seed.technician.password, next)
            .await;
        assert_eq!(res.status(), 303, "next={next}");
        assert_eq!(location(&res), "/", "next={next}");
    }
}

#[tokio::test]
async fn logging_in_from_the_redirect_lands_on_the_page_first_asked_for() {
    let app = spawn_app().await;
    let seed = app.seed().await;
    let wanted = format!("/sites/{}", seed.site.site_id);
    let bounced = app.get(&wanted).await;
    assert_eq!(bounced.status(), 303);
    let login_url = location(&bounced);
    let page = app.get(&login_url).await.text().await.unwrap();
    let next = hidden_input(&page, "next").expect("the form carries next");
    assert_eq!(next, wanted);
    let res = app
        .login_with_next(&seed.homeowner.email, &seed.homeowner.password, &next)
        .await;
    assert_eq!(location(&res), wanted);
}

// Regression: the per-address login throttle trusted any client's
// X-Forwarded-For, so a new forged address per request escaped it.
#[tokio::test]
async fn a_forged_forwarded_for_header_does_not_escape_the_address_throttle() {
    let app = spawn_app().await;
    let mut statuses = Vec::new();
    for attempt in 0..8 {
        let token = app.csrf_token().await;
        let email = format!("nobody{attempt}@example.test");
        let res = app
            .client
            .post(app.url("/login"))
            .header("X-Forwarded-For", format!("203.0.113.{attempt}"))
            .header("Forwarded", format!("for=198.51.100.{attempt}"))
            .form(&[
                ("email", email.as_str()),
                ("password", "guess"),
                ("csrf_token", token.as_str()),
                ("next", ""),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert!(
        statuses.contains(&429),
        "different e-mails from one peer with forged addresses must be throttled: {statuses:?}"
    );
}
