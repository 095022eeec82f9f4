//! The README's first command: the demo binary starts a working site on the
//! embedded default and prints a URL and logins that work.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_prints_a_url_and_logins_that_show_live_values() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args([
            "--port",
            "0",
            "--tick-ms",
            "200",
            "--poll-ms",
            "300",
            "--data-dir",
        ])
        .arg(data.path())
        .env_remove("DATABASE_URL")
        .env_remove("SERVER_DATABASE__URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = Killed(child);
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut email, mut password) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find("http://") {
            url = Some(
                line[at..]
                    .trim()
                    .trim_end_matches('/')
                    .replace("0.0.0.0", "127.0.0.1"),
            );
        }
        if line.contains("homeowner@") {
            let words: Vec<&str> = line.split_whitespace().collect();
            email = words
                .iter()
                .find(|w| w.contains('@'))
                .map(|s| s.to_string());
            password = words.last().map(|s| s.to_string());
        }
        if line.contains("Stop with Ctrl-C") {
            break;
        }
    }
    let (url, email, password) = (
        url.expect("a URL"),
        email.expect("a homeowner login"),
        password.expect("a password"),
    );
    assert!(
        !url.ends_with(":0"),
        "the printed URL has the real port: {url}"
    );
    assert!(
        data.path().join("homecontrol.db").exists(),
        "SQLite file under the data dir"
    );

    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = client
        .get(format!("{url}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = login
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let page = client
        .post(format!("{url}/login"))
        .form(&[
            ("email", email.as_str()),
            ("password", password.as_str()),
            ("csrf_token", &token),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    // Redirects are followed: a homeowner with one house lands on its dashboard.
    assert!(
        page.url().path().starts_with("/sites/"),
        "landed on {}",
        page.url()
    );
    // The agent's catalogue arrives within a second or two; reload until the gauges show.
    let dashboard = page.url().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let html = client
            .get(dashboard.clone())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let has_number = html
            .split("data-value=\"")
            .skip(1)
            .any(|s| s.starts_with(|c: char| c.is_ascii_digit() || c == '-'));
        if html.matches("data-point-id").count() >= 10 && has_number {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed the heat pump's points"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The Controls page lists the demo's hot-water setpoint with the value
    // the agent read from the simulator (48.0 °C preset).
    let controls = format!("{}/controls", dashboard.as_str().trim_end_matches('/'));
    loop {
        let html = client
            .get(&controls)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if html.contains("data-control-key=\"heatpump/dhw_setpoint\"")
            && html.contains("data-control-key=\"heatpump/car_heater\"")
            && (html.contains("48,0") || html.contains("48.0"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Controls page never listed the demo setpoint"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
