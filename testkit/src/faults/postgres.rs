//! A PostgreSQL cluster of the test's own, so the test can stop and start the
//! database without touching the machine's shared server. `initdb` and
//! `pg_ctl` refuse to run as root, so they run as the `postgres` user (through
//! `runuser` when the test runs as root) on a directory that user owns.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::process::Command;

/// A private cluster on 127.0.0.1:`port` with trust authentication; stopped
/// and deleted when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// Its port.
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin` (or `PG_BIN_DIR`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(d) = std::env::var("PG_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL server binaries not found: /usr/lib/postgresql is missing (set PG_BIN_DIR)",
        )?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .context("no /usr/lib/postgresql/<version>/bin/initdb found (set PG_BIN_DIR)")
}

/// True when `initdb` and `pg_ctl` can be found (the soak then adds the
/// database fault).
pub fn available() -> bool {
    bin_dir().is_ok_and(|b| b.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    // The effective uid without libc: /proc/self/status "Uid: real effective …".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Run a PostgreSQL tool, as `postgres` when we are root.
async fn run_pg(bin: &Path, tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let exe = bin.join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", exe.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{tool} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl PrivatePostgres {
    /// `initdb` a new cluster in a temporary directory and start it.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("hc-pg-")
            .tempdir()
            .context("creating the cluster directory")?;
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .await?;
            anyhow::ensure!(
                st.success(),
                "chown of {} to postgres failed",
                dir.path().display()
            );
        }
        let data = dir.path().join("data");
        let data_s = data.display().to_string();
        run_pg(
            &bin,
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .await?;
        let pg = PrivatePostgres {
            port: super::free_port()?,
            bin,
            data,
            _dir: dir,
        };
        pg.start_server().await?;
        Ok(pg)
    }

    /// The connection URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl start` (waits until it accepts connections).
    pub async fn start_server(&self) -> anyhow::Result<()> {
        let data = self.data.display().to_string();
        let sock = self
            .data
            .parent()
            .unwrap_or(&self.data)
            .display()
            .to_string();
        let opts = format!(
            "-p {} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        let log = self
            .data
            .parent()
            .unwrap_or(&self.data)
            .join("postgres.log")
            .display()
            .to_string();
        run_pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D", &data, "-o", &opts, "-l", &log, "-w", "-t", "30", "start",
            ],
        )
        .await
    }

    /// `pg_ctl stop -m fast`: every session is disconnected, the port refuses.
    pub async fn stop_server(&self) -> anyhow::Result<()> {
        let data = self.data.display().to_string();
        run_pg(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"],
        )
        .await
    }

    /// `CREATE DATABASE name`.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        use sea_orm::sqlx::{self, Connection};
        let mut conn = sqlx::postgres::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(self.url(name))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Immediate mode: the directory is deleted right after.
        let exe = self.bin.join("pg_ctl");
        let data = self.data.display().to_string();
        let mut cmd = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "-t", "10", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
