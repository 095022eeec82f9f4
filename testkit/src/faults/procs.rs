//! The real `server` and `agent` binaries as child processes. Each one logs to
//! its own file (appended across restarts, so a failure report shows the whole
//! story) and is SIGKILLed when dropped.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, ChildStdout, Command},
};

/// How long a process may take to become ready.
const READY: Duration = Duration::from_secs(30);

/// One restartable child process.
#[derive(Debug)]
pub struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    stdout: Option<BufReader<ChildStdout>>,
    /// Pipe stdout to us (for a ready line) instead of the log. Only for
    /// processes that print little there: an unread full pipe blocks them.
    pub pipe_stdout: bool,
    /// How many times it was started.
    pub starts: u32,
}

impl Proc {
    /// Describe a process; nothing runs until [`Proc::spawn`].
    pub fn new(
        name: &str,
        program: PathBuf,
        args: &[&str],
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        Proc {
            name: name.to_owned(),
            program,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env,
            log,
            child: None,
            stdout: None,
            pipe_stdout: false,
            starts: 0,
        }
    }

    /// Start it, stdout and stderr appended to the log (stdout piped instead
    /// when `pipe_stdout`).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let stdout = if self.pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(log.try_clone().context("duplicating the log handle")?)
        };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.stdout = child.stdout.take().map(BufReader::new);
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fail (with the log's tail) if the process has exited.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = &mut self.child
            && let Ok(Some(status)) = c.try_wait()
        {
            anyhow::bail!(
                "{} exited with {status}; its log ends with:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// Wait for a stdout line starting with `prefix` and return it.
    pub async fn read_line_starting(&mut self, prefix: &str) -> anyhow::Result<String> {
        let name = self.name.clone();
        let out = self
            .stdout
            .as_mut()
            .with_context(|| format!("{name} is not running"))?;
        let fut = async {
            let mut line = String::new();
            loop {
                line.clear();
                if out.read_line(&mut line).await? == 0 {
                    anyhow::bail!("{name} closed stdout before printing {prefix}");
                }
                if line.starts_with(prefix) {
                    return Ok(line.trim_end().to_owned());
                }
            }
        };
        match tokio::time::timeout(READY, fut).await {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(e.context(self.log_tail(40))),
            Err(_) => anyhow::bail!(
                "{name} printed no {prefix} line within {READY:?}; log:\n{}",
                self.log_tail(40)
            ),
        }
    }

    /// SIGKILL and reap (no cleanup of any kind happens in the process).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.start_kill().ok();
            c.wait()
                .await
                .with_context(|| format!("reaping {}", self.name))?;
        }
        self.stdout = None;
        Ok(())
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if let Some(c) = &mut self.child
                && tokio::time::timeout(grace, c.wait()).await.is_ok()
            {
                self.child = None;
                self.stdout = None;
                return Ok(());
            }
        }
        self.kill().await
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// The last `n` lines of a file (empty when unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `server serve` on a port chosen once and kept across restarts.
#[derive(Debug)]
pub struct ServerProc {
    /// The process.
    pub proc: Proc,
    /// Its HTTP port.
    pub port: u16,
}

impl ServerProc {
    /// Start the server against `database_url` and wait for `/health`.
    pub async fn start(database_url: &str, port: u16, log: PathBuf) -> anyhow::Result<Self> {
        let env = vec![
            ("SERVER_DATABASE__URL".into(), database_url.to_owned()),
            ("SERVER_HTTP__HOST".into(), "127.0.0.1".into()),
            ("SERVER_HTTP__PORT".into(), port.to_string()),
            ("SERVER_HTTP__WORKERS".into(), "2".into()),
            ("SERVER_DATABASE__MAX_CONNECTIONS".into(), "10".into()),
            // No config files: defaults plus the variables above.
            (
                "SERVER_CONFIG_DIR".into(),
                "/nonexistent-homecontrol-config".into(),
            ),
            ("SERVER_LOG__FILTER".into(), "info".into()),
        ];
        let proc = Proc::new("server", super::binary("server")?, &["serve"], env, log);
        let mut s = ServerProc { proc, port };
        s.restart().await?;
        Ok(s)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start again (after a kill) and wait for `/health`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.spawn()?;
        self.wait_healthy().await
    }

    /// Poll `/health` until it answers 2xx.
    pub async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/health", self.base());
        let deadline = tokio::time::Instant::now() + READY;
        loop {
            self.proc.ensure_alive()?;
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "the server did not answer /health within {READY:?}; log:\n{}",
                    self.proc.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.proc.kill().await
    }
}

/// `agent simulate eh203 --tcp 127.0.0.1:<port>`: a simulated heat pump in its
/// own process, so a power cycle is a SIGKILL and a start on the same port.
#[derive(Debug)]
pub struct SimProc {
    /// The process.
    pub proc: Proc,
    /// Its Modbus TCP port.
    pub port: u16,
}

impl SimProc {
    /// Start a simulator ticking every `tick` and wait for its READY line.
    pub async fn start(port: u16, tick: Duration, log: PathBuf) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{port}");
        let tick_ms = tick.as_millis().to_string();
        let mut proc = Proc::new(
            "simulator",
            super::binary("agent")?,
            &["simulate", "eh203", "--tcp", &addr, "--tick-ms", &tick_ms],
            vec![],
            log,
        );
        // It prints only its READY line on stdout; logs go to stderr.
        proc.pipe_stdout = true;
        let mut s = SimProc { proc, port };
        s.power_on().await?;
        Ok(s)
    }

    /// Power on (start) and wait until it serves.
    pub async fn power_on(&mut self) -> anyhow::Result<()> {
        self.proc.spawn()?;
        self.proc.read_line_starting("READY").await.map(|_| ())
    }

    /// Power off: SIGKILL, every connection drops, the port refuses.
    pub async fn power_off(&mut self) -> anyhow::Result<()> {
        self.proc.kill().await
    }
}

/// `agent run --config <file>`.
#[derive(Debug)]
pub struct AgentProc {
    /// The process.
    pub proc: Proc,
    /// Its config file.
    pub config: PathBuf,
    /// Its buffer (and ledger) database.
    pub buffer_db: PathBuf,
}

impl AgentProc {
    /// Write nothing; start the agent on an existing config.
    pub fn start(config: PathBuf, buffer_db: PathBuf, log: PathBuf) -> anyhow::Result<Self> {
        let cfg = config.display().to_string();
        let proc = Proc::new(
            "agent",
            super::binary("agent")?,
            &["run", "--config", &cfg],
            vec![("RUST_BACKTRACE".into(), "1".into())],
            log,
        );
        let mut a = AgentProc {
            proc,
            config,
            buffer_db,
        };
        a.proc.spawn()?;
        Ok(a)
    }

    /// SIGKILL: whatever is in flight is not flushed.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.proc.kill().await
    }

    /// Start again with the same config and buffer.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.spawn()
    }

    /// SIGTERM (a clean shutdown that may flush), SIGKILL after 10 s.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.proc.terminate(Duration::from_secs(10)).await
    }
}
