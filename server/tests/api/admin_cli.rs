//! The operator's `server admin …` commands, run as a real process against a
//! fresh SQLite file.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use protocol::ServerToAgent;
use server::domain::AgentId;

use crate::helpers::{AgentCreds, Person, TestDb, spawn_app_on};

/// A fresh SQLite database and a way to run admin commands on it.
struct Cli {
    db: TestDb,
}

impl Cli {
    fn new() -> Self {
        Self {
            db: TestDb::fresh_sqlite(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_server"));
        cmd.arg("admin")
            .args(args)
            .env("SERVER_DATABASE__URL", &self.db.url)
            .env("SERVER_CONFIG_DIR", "/nonexistent-config-dir")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .expect("running the server binary")
    }

    /// Run, expect success, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run, expect failure, return stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

/// The text after the last ": " on the line starting with `prefix`.
fn id_after(stdout: &str, prefix: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(": ").next())
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {stdout}"))
        .trim()
        .to_owned()
}

/// The value of `key = "value"` in the printed agent config.
fn config_value(stdout: &str, key: &str) -> String {
    let prefix = format!("{key} = \"");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"));
    line[prefix.len()..line.len() - 1].to_owned()
}

/// Organisation "Acme Lämpö" with one site; returns the site id.
fn org_and_site(cli: &Cli) -> String {
    let out = cli.ok(&["create-org", "--name", "Acme Lämpö"]);
    assert!(
        out.starts_with("organisation Acme Lämpö created: "),
        "{out}"
    );
    let out = cli.ok(&["create-site", "--org", "Acme Lämpö", "--name", "Mäkelä"]);
    let site = id_after(&out, "site Mäkelä created");
    assert!(uuid::Uuid::parse_str(&site).is_ok(), "{out}");
    site
}

#[tokio::test]
async fn admin_commands_set_up_a_site_a_homeowner_and_an_agent_that_work() {
    let cli = Cli::new();
    let site = org_and_site(&cli);

    let out = cli.ok(&[
        "create-user",
        "--email",
        "Owner@Example.test",
        "--name",
        "Owner",
        "--password",
        "a-long-password",
    ]);
    assert!(
        out.starts_with("user Owner@Example.test created: "),
        "{out}"
    );
    let out = cli.ok(&[
        "add-member",
        "--org",
        "Acme Lämpö",
        "--email",
        "owner@example.test",
        "--role",
        "homeowner",
        "--site",
        &site,
    ]);
    assert!(out.contains("is now homeowner"), "{out}");

    // Password from stdin, as the help recommends.
    let mut child = cli
        .command(&["create-user", "--email", "tech@example.test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"stdin-password-123\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.ok(&[
        "add-member",
        "--org",
        "Acme Lämpö",
        "--email",
        "tech@example.test",
        "--role",
        "technician",
    ]);

    let out = cli.ok(&["create-agent", "--site", &site, "--name", "box-1"]);
    let agent_id: AgentId = config_value(&out, "agent_id").parse().unwrap();
    let secret = config_value(&out, "secret");
    assert!(secret.len() >= 43, "{out}");
    assert_eq!(id_after(&out, "agent box-1 created"), agent_id.to_string());

    // The effects are real: the server on that file accepts both logins and the agent.
    let app = spawn_app_on(cli.db).await;
    let owner = Person {
        id: server::domain::UserId::new(),
        email: "owner@example.test".into(),
        password: "a-long-password".into(),
    };
    app.login_ok(&owner).await;
    assert_eq!(app.get(&format!("/sites/{site}")).await.status(), 200);
    let tech = app.new_browser();
    let res = tech.login("tech@example.test", "stdin-password-123").await;
    assert_eq!(res.status(), 303);

    let creds = AgentCreds {
        id: agent_id,
        secret,
        site: site.parse().unwrap(),
    };
    let mut agent = app.agent(&creds).await;
    match agent.hello(agent_id).await {
        ServerToAgent::Welcome(w) => assert_eq!(w.site_id.to_string(), site),
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[test]
fn an_unknown_role_is_refused_with_the_list_of_roles() {
    let cli = Cli::new();
    org_and_site(&cli);
    cli.ok(&[
        "create-user",
        "--email",
        "a@example.test",
        "--password",
        "long-enough-1",
    ]);
    let err = cli.fails(&[
        "add-member",
        "--org",
        "Acme Lämpö",
        "--email",
        "a@example.test",
        "--role",
        "admin",
    ]);
    assert!(err.contains("unknown role 'admin'"), "{err}");
    assert!(err.contains("homeowner"), "{err}");
}

#[test]
fn a_homeowner_without_a_site_is_refused() {
    let cli = Cli::new();
    org_and_site(&cli);
    cli.ok(&[
        "create-user",
        "--email",
        "a@example.test",
        "--password",
        "long-enough-1",
    ]);
    let err = cli.fails(&[
        "add-member",
        "--org",
        "Acme Lämpö",
        "--email",
        "a@example.test",
        "--role",
        "homeowner",
    ]);
    assert!(err.contains("give --site"), "{err}");
}

#[test]
fn a_technician_with_a_site_is_refused() {
    let cli = Cli::new();
    let site = org_and_site(&cli);
    cli.ok(&[
        "create-user",
        "--email",
        "a@example.test",
        "--password",
        "long-enough-1",
    ]);
    let err = cli.fails(&[
        "add-member",
        "--org",
        "Acme Lämpö",
        "--email",
        "a@example.test",
        "--role",
        "technician",
        "--site",
        &site,
    ]);
    assert!(err.contains("organisation-wide"), "{err}");
}

#[test]
fn a_short_password_is_refused() {
    let cli = Cli::new();
    let err = cli.fails(&[
        "create-user",
        "--email",
        "a@example.test",
        "--password",
        "short",
    ]);
    assert!(err.contains("at least 10 characters"), "{err}");
}

#[test]
fn a_malformed_e_mail_is_refused() {
    let cli = Cli::new();
    let err = cli.fails(&[
        "create-user",
        "--email",
        "not-an-address",
        "--password",
        "long-enough-1",
    ]);
    assert!(err.contains("not an e-mail address"), "{err}");
}

#[test]
fn a_duplicate_e_mail_is_refused() {
    let cli = Cli::new();
    cli.ok(&[
        "create-user",
        "--email",
        "a@example.test",
        "--password",
        "long-enough-1",
    ]);
    let err = cli.fails(&[
        "create-user",
        "--email",
        "A@example.test",
        "--password",
        "long-enough-1",
    ]);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_bad_site_id_is_refused() {
    let cli = Cli::new();
    org_and_site(&cli);
    let err = cli.fails(&["create-agent", "--site", "not-a-site"]);
    assert!(err.contains("'not-a-site' is not a site id"), "{err}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let err = cli.fails(&["create-agent", "--site", &unknown]);
    assert!(err.contains(&format!("no site {unknown}")), "{err}");
    cli.ok(&[
        "create-user",
        "--email",
        "a@example.test",
        "--password",
        "long-enough-1",
    ]);
    let err = cli.fails(&[
        "add-member",
        "--org",
        "Acme Lämpö",
        "--email",
        "a@example.test",
        "--role",
        "homeowner",
        "--site",
        "nope",
    ]);
    assert!(err.contains("is not a site id"), "{err}");
}

#[test]
fn a_site_of_another_organisation_cannot_be_granted() {
    let cli = Cli::new();
    let site = org_and_site(&cli);
    cli.ok(&["create-org", "--name", "Other Oy"]);
    cli.ok(&[
        "create-user",
        "--email",
        "a@example.test",
        "--password",
        "long-enough-1",
    ]);
    let err = cli.fails(&[
        "add-member",
        "--org",
        "Other Oy",
        "--email",
        "a@example.test",
        "--role",
        "homeowner",
        "--site",
        &site,
    ]);
    assert!(err.contains("no site"), "{err}");
}

#[test]
fn an_unknown_organisation_is_refused() {
    let cli = Cli::new();
    let err = cli.fails(&["create-site", "--org", "Nobody Oy", "--name", "X"]);
    assert!(err.contains("no organisation named 'Nobody Oy'"), "{err}");
}
