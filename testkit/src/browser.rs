//! Running the Playwright scripts in `testkit/browser/` against Debian's
//! headless Chromium. A missing `node_modules` or Chromium is an error with the
//! command that fixes it, never a silent skip.
//!
//! [`run`] runs a script to its end and returns its one-line JSON report.
//! [`Script`] does the same in steps: a script that calls `checkpoint(name)`
//! (see `testkit/browser/common.mjs`) stops there until the test has looked
//! at the device or the store, so "the page shows it" and "the register holds
//! it" are checked at the same moment, without sampling.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
    time::Instant,
};

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
    // Without CHECKPOINTS a script passes its checkpoints without stopping.
    Script::spawn(script, env, timeout, false)?.finish().await
}

/// A script running in steps (see the module docs).
pub struct Script {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
    deadline: Instant,
    timeout: Duration,
    /// What the script printed that was not a checkpoint (its report, mostly).
    printed: Vec<String>,
}

impl Script {
    /// Start `script` with `env` (and `CHECKPOINTS=1`, so it waits at each
    /// checkpoint). The whole run, checkpoints included, must end within
    /// `timeout`.
    pub fn start(script: &str, env: &[(&str, String)], timeout: Duration) -> anyhow::Result<Self> {
        Self::spawn(script, env, timeout, true)
    }

    fn spawn(
        script: &str,
        env: &[(&str, String)],
        timeout: Duration,
        checkpoints: bool,
    ) -> anyhow::Result<Self> {
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
        if checkpoints {
            cmd.env("CHECKPOINTS", "1");
        }
        cmd.arg(script)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running node {script} (is Node.js installed?)"))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut stderr = child.stderr.take().context("piped stderr")?;
        // Read stderr all along: a full pipe would stop the script.
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Ok(Script {
            name: script.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout: BufReader::new(stdout).lines(),
            stderr,
            deadline: Instant::now() + timeout,
            timeout,
            printed: Vec::new(),
        })
    }

    /// Wait until the script reaches checkpoint `name`; returns what it
    /// reported there. The script waits until [`Script::resume`]. Fails if
    /// the script ends (its report is in the error) or reaches another
    /// checkpoint first.
    pub async fn checkpoint(&mut self, name: &str) -> anyhow::Result<serde_json::Value> {
        loop {
            let line = tokio::time::timeout_at(self.deadline, self.stdout.next_line())
                .await
                .with_context(|| {
                    format!(
                        "{} did not reach checkpoint {name} within {:?}",
                        self.name, self.timeout
                    )
                })?
                .with_context(|| format!("reading {}'s output", self.name))?;
            let Some(line) = line else {
                let stderr = self.stderr_text().await;
                anyhow::bail!(
                    "{} ended before checkpoint {name}: {}\nstderr: {stderr}",
                    self.name,
                    self.printed.join("\n")
                );
            };
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) if v.get("checkpoint").is_some() => {
                    anyhow::ensure!(
                        v["checkpoint"] == name,
                        "{} reached checkpoint {} while the test waited for {name}: {v}",
                        self.name,
                        v["checkpoint"]
                    );
                    return Ok(v);
                }
                _ => self.printed.push(line),
            }
        }
    }

    /// Let the script go on from its checkpoint.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the script's input is closed")?;
        stdin
            .write_all(b"go\n")
            .await
            .with_context(|| format!("resuming {}", self.name))?;
        stdin.flush().await?;
        Ok(())
    }

    /// Wait for the script to end; returns its report. Fails when it exits
    /// non-zero, prints no JSON report, or the time is up.
    pub async fn finish(mut self) -> anyhow::Result<serde_json::Value> {
        drop(self.stdin.take());
        let name = self.name.clone();
        let timeout = self.timeout;
        let rest = async {
            while let Some(line) = self.stdout.next_line().await? {
                self.printed.push(line);
            }
            self.child.wait().await
        };
        let status = tokio::time::timeout_at(self.deadline, rest)
            .await
            .with_context(|| format!("{name} did not finish within {timeout:?}"))?
            .with_context(|| format!("waiting for node {name}"))?;
        let stderr = self.stderr_text().await;
        let report = self
            .printed
            .iter()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .with_context(|| {
                format!(
                    "{name} printed no JSON report.\nstdout: {}\nstderr: {stderr}",
                    self.printed.join("\n")
                )
            })?;
        anyhow::ensure!(
            status.success() && report["ok"] == true,
            "{name} failed: {report}\nstderr: {stderr}"
        );
        Ok(report)
    }

    async fn stderr_text(&mut self) -> String {
        // The script has closed its stdout; its stderr ends with it.
        match tokio::time::timeout(Duration::from_secs(5), &mut self.stderr).await {
            Ok(Ok(text)) => text,
            _ => "(not available)".into(),
        }
    }
}
