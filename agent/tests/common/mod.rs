//! Helpers shared by the agent's integration tests: an in-test WebSocket
//! server playing the central server, a socat pty pair, the pymodbus peer, and
//! readiness polling with timeouts (never sleeps for readiness).

// The handshake callback's error type is tungstenite's, not ours to shrink.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err
)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{Ack, AgentToServer, ServerToAgent, Welcome};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader, Lines},
    net::TcpListener,
    process::{Child, ChildStdout, Command},
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::{
    Message,
    handshake::server::{ErrorResponse, Request, Response},
    http::StatusCode,
};
use tokio_util::sync::CancellationToken;

pub const AGENT_ID: &str = "0b6f3c1e-8a5b-4c1d-9e2f-3a4b5c6d7e8f";
pub const SECRET: &str = "test-secret-3f9a";
pub const WAIT: Duration = Duration::from_secs(20);

/// Await `fut` or fail the test with `what` after `WAIT`.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// What the fake server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// 1-based connection number.
    pub conn: usize,
    pub msg: AgentToServer,
    /// Whether the fake server acknowledged it (readings only).
    pub acked: bool,
}

/// A fake central server: checks the bearer token, answers Hello with Welcome,
/// forwards every message to the test and acks batches while `acking` is set.
pub struct FakeServer {
    pub url: String,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    pub acking: Arc<AtomicBool>,
    /// While false, upgrades are refused with 503 (server "down").
    pub accepting: Arc<AtomicBool>,
    pub last_acked: Arc<Mutex<Option<u64>>>,
    pub rejected_auth: Arc<Mutex<Vec<String>>>,
    drop_now: Arc<Mutex<CancellationToken>>,
    /// Pushes messages down the newest connection (see [`FakeServer::send`]).
    to_agent: Arc<Mutex<Option<mpsc::UnboundedSender<ServerToAgent>>>>,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/agent/v1/ws", listener.local_addr().unwrap());
        let (tx, seen) = mpsc::unbounded_channel();
        let acking = Arc::new(AtomicBool::new(true));
        let accepting = Arc::new(AtomicBool::new(true));
        let last_acked = Arc::new(Mutex::new(None));
        let rejected_auth = Arc::new(Mutex::new(Vec::new()));
        let drop_now = Arc::new(Mutex::new(CancellationToken::new()));
        let to_agent = Arc::new(Mutex::new(None));
        let push = to_agent.clone();
        let (a, l, r, d) = (
            acking.clone(),
            last_acked.clone(),
            rejected_auth.clone(),
            drop_now.clone(),
        );
        let up = accepting.clone();
        tokio::spawn(async move {
            let mut conn = 0;
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                if !up.load(Ordering::SeqCst) {
                    tokio::spawn(refuse(stream));
                    continue;
                }
                conn += 1;
                tokio::spawn(serve_conn(
                    conn,
                    stream,
                    tx.clone(),
                    a.clone(),
                    l.clone(),
                    r.clone(),
                    d.clone(),
                    push.clone(),
                ));
            }
        });
        FakeServer {
            url,
            seen,
            acking,
            accepting,
            last_acked,
            rejected_auth,
            drop_now,
            to_agent,
        }
    }

    /// Send `msg` to the agent on the newest connection, unchecked (the
    /// fake server trusts nothing and checks nothing).
    pub fn send(&self, msg: ServerToAgent) {
        self.to_agent
            .lock()
            .unwrap()
            .as_ref()
            .expect("an agent has connected")
            .send(msg)
            .expect("the connection is open");
    }

    /// Close the current connection(s) from the server side.
    pub fn drop_connection(&self) {
        // A token, not a Notify: a connection busy sending must not miss it.
        let mut current = self.drop_now.lock().unwrap();
        current.cancel();
        *current = CancellationToken::new();
    }

    /// The next message matching `f`, skipping others.
    pub async fn next_matching<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Seen) -> Option<T>,
    ) -> T {
        within(what, async {
            loop {
                let s = self.seen.recv().await.expect("fake server stopped");
                if let Some(t) = f(&s) {
                    return t;
                }
            }
        })
        .await
    }
}

/// Answer the upgrade with 503, as a server in maintenance would.
async fn refuse(stream: tokio::net::TcpStream) {
    let reject = |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
        let mut e = ErrorResponse::new(Some("down".into()));
        *e.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        Err(e)
    };
    let _ = tokio_tungstenite::accept_hdr_async(stream, reject).await;
}

// One argument per shared handle of the fake server; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn serve_conn(
    conn: usize,
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Seen>,
    acking: Arc<AtomicBool>,
    last_acked: Arc<Mutex<Option<u64>>>,
    rejected: Arc<Mutex<Vec<String>>>,
    drop_now: Arc<Mutex<CancellationToken>>,
    to_agent: Arc<Mutex<Option<mpsc::UnboundedSender<ServerToAgent>>>>,
) {
    let drop_now = drop_now.lock().unwrap().clone();
    let expected = format!("Bearer {AGENT_ID}.{SECRET}");
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let got = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if got == expected {
            Ok(resp)
        } else {
            rejected.lock().unwrap().push(got);
            let mut e = ErrorResponse::new(Some("unauthorized".into()));
            *e.status_mut() = StatusCode::UNAUTHORIZED;
            Err(e)
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (push, mut pushed) = mpsc::unbounded_channel::<ServerToAgent>();
    *to_agent.lock().unwrap() = Some(push);
    loop {
        let msg = tokio::select! {
            () = drop_now.cancelled() => return,
            Some(out) = pushed.recv() => {
                if sink.send(Message::Text(out.to_json().unwrap().into())).await.is_err() {
                    return;
                }
                continue;
            }
            m = stream.next() => m,
        };
        let Some(Ok(Message::Text(text))) = msg else {
            return;
        };
        let msg = AgentToServer::from_json(&text).expect("agent sends valid JSON");
        let reply = match &msg {
            AgentToServer::Hello(_) => Some(ServerToAgent::Welcome(Welcome {
                version: protocol::PROTOCOL_VERSION,
                site_id: uuid::Uuid::nil(),
                last_acked_seq: *last_acked.lock().unwrap(),
            })),
            AgentToServer::Readings(b) if acking.load(Ordering::SeqCst) => {
                let mut l = last_acked.lock().unwrap();
                *l = Some(l.map_or(b.seq, |x| x.max(b.seq)));
                Some(ServerToAgent::Ack(Ack { seq: b.seq }))
            }
            _ => None,
        };
        let acked = matches!(reply, Some(ServerToAgent::Ack(_)));
        let _ = tx.send(Seen { conn, msg, acked });
        if let Some(reply) = reply
            && sink
                .send(Message::Text(reply.to_json().unwrap().into()))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// Agent config text for one EH-203 on the given `[[bus]]` body.
pub fn agent_toml(server_url: &str, bus: &str, poll_ms: u64) -> String {
    format!(
        r#"[server]
url = "{server_url}"
agent_id = "{AGENT_ID}"
secret = "{SECRET}"

[[bus]]
name = "field"
{bus}
timeout_ms = 500

[[device]]
key = "heatpump"
label = "Lämpöpumppu"
bus = "field"
unit_id = 1
profile = "ouman_eh203_modbus200"
poll_interval_ms = {poll_ms}
"#
    )
}

/// Start the agent in-process; cancel the token to stop it.
pub fn spawn_agent(
    toml: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (stop, handle, _writer) = spawn_agent_with_writer(toml);
    (stop, handle)
}

/// [`spawn_agent`], also returning the agent's writer.
pub fn spawn_agent_with_writer(
    toml: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    agent::poller::Writer,
) {
    spawn_agent_configured(toml, |a| a)
}

/// [`spawn_agent_with_writer`], letting `configure` adjust the built agent
/// (e.g. its control clock) before it runs.
pub fn spawn_agent_configured(
    toml: &str,
    configure: impl FnOnce(agent::Agent) -> agent::Agent,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    agent::poller::Writer,
) {
    agent::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let toml = if toml.contains("[buffer]") {
        toml.to_owned()
    } else {
        format!(
            "{toml}\n[buffer]\npath = \"{}\"\n",
            dir.path().join("buffer.db").display()
        )
    };
    let cfg = agent::config::AgentConfig::from_toml("test.toml", &toml, Path::new("."))
        .expect("valid test config");
    let session = agent::uplink::session::SessionConfig {
        batch_window: Duration::from_millis(200),
        ..Default::default()
    };
    let agent = configure(agent::Agent::build(cfg).with_session_config(session));
    let writer = agent.writer();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(async move {
        let result = agent.run_until_stopped(s.cancelled_owned()).await;
        drop(dir);
        result
    });
    (stop, handle, writer)
}

/// A socat pty pair; the links live in a temp dir and vanish with it.
pub struct PtyPair {
    pub a: PathBuf,
    pub b: PathBuf,
    _child: Child,
    _dir: tempfile::TempDir,
}

pub async fn socat_pair() -> PtyPair {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("ttyA"), dir.path().join("ttyB"));
    let child = Command::new("socat")
        .arg("-d")
        .arg("-d")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("socat is required for the RTU tests (apt-get install socat): {e}")
        });
    within("socat to create both pty links", async {
        while !(a.exists() && b.exists()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    PtyPair {
        a,
        b,
        _child: child,
        _dir: dir,
    }
}

/// The Python for the pymodbus peer: `HOMECONTROL_PYTHON`, else `<workspace>/.venv/bin/python`.
pub fn python() -> PathBuf {
    match std::env::var_os("HOMECONTROL_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
    }
}

/// Start `pymodbus_server.py ARGS` and wait for its READY line; returns the
/// child and the rest of that line. Fails loudly when Python or pymodbus is missing.
pub async fn start_pymodbus(args: &[&str]) -> (Child, String) {
    let peer = start_pymodbus_peer(args).await;
    (peer.child, peer.ready)
}

/// A running pymodbus peer whose output is still being read (for `--trace`).
pub struct Peer {
    pub child: Child,
    /// The READY line without "READY ".
    pub ready: String,
    pub lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    /// The next traced request, as (unit, function code).
    pub async fn next_rx(&mut self) -> (u8, u8) {
        within("a traced request from the pymodbus peer", async {
            loop {
                let line = self.lines.next_line().await.unwrap().expect("peer exited");
                if let Some(rest) = line.strip_prefix("RX ") {
                    let field = |k: &str| -> u8 {
                        rest.split_whitespace()
                            .find_map(|kv| kv.strip_prefix(k))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or_else(|| panic!("bad trace line {line}"))
                    };
                    return (field("dev="), field("fc="));
                }
            }
        })
        .await
    }
}

/// Like [`start_pymodbus`], keeping the peer's stdout open for trace lines.
pub async fn start_pymodbus_peer(args: &[&str]) -> Peer {
    let py = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pymodbus_server.py");
    let mut child = Command::new(&py)
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the pymodbus peer with {}: {e}. Create the venv with \
                 `python3 -m venv .venv && .venv/bin/pip install pymodbus pyserial` \
                 or set HOMECONTROL_PYTHON",
                py.display()
            )
        });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = within("the pymodbus peer's READY line", async {
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.starts_with("READY ") => return l["READY ".len()..].to_owned(),
                Some(_) => continue,
                None => panic!(
                    "the pymodbus peer exited before READY (is pymodbus installed for {}?)",
                    py.display()
                ),
            }
        }
    })
    .await;
    Peer {
        child,
        ready,
        lines,
    }
}

/// Like [`spawn_agent`], and also hands the built agent to `peek` before it
/// runs (e.g. to take the register bank of a `modbus_slave` device).
pub fn spawn_agent_then<T>(
    toml: &str,
    peek: impl FnOnce(&agent::Agent) -> T,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    T,
) {
    spawn_agent_with(toml, |a| a, peek)
}

/// [`spawn_agent_then`], letting `configure` adjust the built agent (e.g.
/// its control clock) before `peek` sees it.
pub fn spawn_agent_with<T>(
    toml: &str,
    configure: impl FnOnce(agent::Agent) -> agent::Agent,
    peek: impl FnOnce(&agent::Agent) -> T,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    T,
) {
    agent::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{toml}\n[buffer]\npath = \"{}\"\n",
        dir.path().join("buffer.db").display()
    );
    let cfg = agent::config::AgentConfig::from_toml("test.toml", &toml, Path::new("."))
        .expect("valid test config");
    let session = agent::uplink::session::SessionConfig {
        batch_window: Duration::from_millis(200),
        ..Default::default()
    };
    let agent = configure(agent::Agent::build(cfg).with_session_config(session));
    let peeked = peek(&agent);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(async move {
        let result = agent.run_until_stopped(s.cancelled_owned()).await;
        drop(dir);
        result
    });
    (stop, handle, peeked)
}

/// `pymodbus_master.py`: a pymodbus client driven one JSON command at a time.
pub struct PyMaster {
    child: Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl PyMaster {
    /// Start the master on `tty` with `framer` ("rtu" or "ascii") and wait for READY.
    pub async fn start(framer: &str, tty: &Path) -> PyMaster {
        let py = python();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/pymodbus_master.py");
        let mut child = Command::new(&py)
            .arg(&script)
            .arg(framer)
            .arg(tty)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run the pymodbus master with {}: {e}", py.display())
            });
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        within("the pymodbus master's READY line", async {
            loop {
                match lines.next_line().await.unwrap() {
                    Some(l) if l.starts_with("READY ") => return,
                    Some(_) => continue,
                    None => panic!("the pymodbus master exited before READY"),
                }
            }
        })
        .await;
        PyMaster {
            child,
            stdin,
            lines,
        }
    }

    /// Send one command, return its JSON answer.
    pub async fn call(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        use tokio::io::AsyncWriteExt as _;
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let reply = within("the pymodbus master's answer", self.lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the pymodbus master exited on {cmd}"));
        serde_json::from_str(&reply).unwrap()
    }
}

/// Log lines of this test process (every test binary runs its tests in their
/// own processes under nextest, so the global subscriber is this test's).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Install the process's log subscriber, writing into the returned buffer.
    pub fn install() -> Logs {
        let logs = Logs::default();
        let sink = logs.clone();
        agent::telemetry::init("info", move || sink.clone());
        logs
    }
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
