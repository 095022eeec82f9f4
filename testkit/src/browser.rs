//! Running the Playwright scripts in `testkit/browser/` against Debian's
//! headless Chromium. A missing `node_modules` or Chromium is an error with the
//! command that fixes it, never a silent skip.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context;

/// The `testkit/browser` directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Run `script` with `env`; returns its one-line JSON report. Fails when the
/// script exits non-zero, prints no JSON, or takes longer than `timeout`.
pub async fn run(
    script: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let dir = dir();
    anyhow::ensure!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in {} (.ci/run does)",
        dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    anyhow::ensure!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: apt-get install -y chromium (.ci/run does)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{script} did not finish within {timeout:?}"))?
        .with_context(|| format!("running node {script} (is Node.js installed?)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .with_context(|| {
            format!("{script} printed no JSON report.\nstdout: {stdout}\nstderr: {stderr}")
        })?;
    anyhow::ensure!(
        out.status.success() && report["ok"] == true,
        "{script} failed: {report}\nstderr: {stderr}"
    );
    Ok(report)
}
