//! The `agent` binary's subcommands, run as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent"))
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");

#[test]
fn run_refuses_the_example_placeholder_secret_with_the_line_and_key() {
    let out = agent()
        .args(["run", "--config", EXAMPLE])
        .env_remove("AGENT_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("example.toml line 16: key `server.secret`"),
        "{err}"
    );
    assert!(err.contains("CHANGE-ME"), "{err}");
}

#[test]
fn run_takes_the_config_path_from_agent_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        std::fs::read_to_string(EXAMPLE)
            .unwrap()
            .replace("baud = 9600 ", "baud = \"fast\" "),
    )
    .unwrap();
    let out = agent()
        .arg("run")
        .env("AGENT_CONFIG", &path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 23: key `bus[0].baud`: invalid type: string \"fast\", expected u32"),
        "{err}"
    );
}

#[test]
fn check_config_prints_the_catalogue_with_guessed_addresses_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        std::fs::read_to_string(EXAMPLE)
            .unwrap()
            .replace("\"CHANGE-ME\"", "\"s3cret\""),
    )
    .unwrap();
    let out = agent()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("device heatpump"), "{text}");
    assert!(
        text.contains("outdoor_temp") && text.contains("data ID 18"),
        "{text}"
    );
    assert!(text.contains("verify on site"), "{text}");
    assert!(!text.contains("s3cret"), "the secret is never printed");
}

#[test]
fn profiles_lists_the_built_in_ids() {
    let out = agent().arg("profiles").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ouman_eh203_modbus200") && text.contains("generic_modbus"),
        "{text}"
    );
}
