//! A real SMTP server for the tests: `smtp_sink.py` (aiosmtpd) on a free
//! port, reporting each message it receives as a JSON line on stdout.
//!
//! Python comes from `HOMECONTROL_PYTHON` (default `<workspace>/.venv/bin/python`,
//! which `.ci/run` creates with `pip install aiosmtpd`).

use std::{path::PathBuf, process::Stdio};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

use crate::helpers::WAIT;

/// One received message.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Mail {
    /// Envelope sender.
    pub from: String,
    /// Envelope recipients.
    pub to: Vec<String>,
    /// Subject header (decoded).
    pub subject: String,
    /// The plain-text body (transfer encoding undone).
    pub body: String,
}

impl Mail {
    /// The path of the first `/confirm/<token>` link in the body.
    pub fn confirm_path(&self) -> String {
        let at = self
            .body
            .find("/confirm/")
            .unwrap_or_else(|| panic!("no confirmation link in {:?}", self.body));
        let rest = &self.body[at..];
        let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        rest[..end].to_owned()
    }
}

/// The running sink; killed when dropped.
pub struct SmtpSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

fn python() -> PathBuf {
    match std::env::var_os("HOMECONTROL_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    }
}

impl SmtpSink {
    /// Start the sink and wait until it listens.
    pub async fn start() -> Self {
        let py = python();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/smtp_sink.py");
        let mut child = Command::new(&py)
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the SMTP sink with {}: {e}. Create the venv with \
                     `python3 -m venv .venv && .venv/bin/pip install aiosmtpd` or set HOMECONTROL_PYTHON",
                    py.display()
                )
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the SMTP sink did not start in time (is aiosmtpd installed?)")
            .unwrap()
            .expect("the SMTP sink exited before listening (is aiosmtpd installed?)");
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        let port = u16::try_from(v["port"].as_u64().unwrap()).unwrap();
        Self {
            port,
            lines,
            _child: child,
        }
    }

    /// The next message the sink received.
    pub async fn next_mail(&mut self) -> Mail {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("timed out waiting for an e-mail")
            .unwrap()
            .expect("the SMTP sink exited");
        serde_json::from_str(&line).unwrap()
    }
}
