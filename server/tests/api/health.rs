//! Liveness and error pages.

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_answers_200_and_says_the_database_is_ok() {
    let app = spawn_app().await;
    let res = app.get("/health").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn an_unknown_page_gives_an_html_404_without_internals() {
    let app = spawn_app().await;
    let res = app.get("/no/such/page").await;
    assert_eq!(res.status(), 404);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/html"), "{ctype}");
    let html = res.text().await.unwrap();
    assert!(html.to_lowercase().contains("<html"), "{html}");
    assert!(html.contains("nothing here"), "{html}");
    for leak in ["{\"error\"", "panicked", "backtrace", "src/", "AppError"] {
        assert!(!html.contains(leak), "404 page leaks {leak}: {html}");
    }
}

#[tokio::test]
async fn an_unknown_api_path_gives_a_json_404() {
    let app = spawn_app().await;
    let res = app.get("/api/x").await;
    assert_eq!(res.status(), 404);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn pages_carry_the_security_headers() {
    let app = spawn_app().await;
    let res = app.get("/login").await;
    let h = res.headers();
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
}
