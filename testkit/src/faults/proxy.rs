//! A TCP proxy whose behaviour can be switched at runtime, to cut the network
//! between two processes.
//!
//! - [`Mode::Pass`]: forward both ways.
//! - [`Mode::Reset`]: close every open connection now, and close new ones as
//!   soon as they are accepted (a router that reboots, a NAT that forgets).
//! - [`Mode::BlackHole`]: forward nothing. Open connections stay open but no
//!   byte moves either way; new connections are accepted and held without an
//!   upstream. Switching back to `Pass` lets the held bytes through, late, as
//!   TCP retransmission would after a cable is plugged back in.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Pass,
    /// Drop every connection.
    Reset,
    /// Hold every connection, forward nothing.
    BlackHole,
}

/// A running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listen on a random port of 127.0.0.1 and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    res = listener.accept() => {
                        let Ok((client, _)) = res else { continue };
                        count.fetch_add(1, Ordering::Relaxed);
                        pipes.spawn(pipe(client, upstream, rx.clone()));
                    }
                    Some(_) = pipes.join_next(), if !pipes.is_empty() => {}
                }
            }
        });
        Ok(Proxy {
            addr,
            mode,
            accepted,
            task,
        })
    }

    /// Switch mode; takes effect on every connection at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Wait while black-holed; `false` when the connection must be dropped.
async fn wait_passable(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let m = *mode.borrow_and_update();
        match m {
            Mode::Pass => return true,
            Mode::Reset => return false,
            Mode::BlackHole => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn pipe(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if !wait_passable(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // The client sees its connection close, as with a refused upstream.
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Either direction ending (EOF, error or reset) ends both.
    tokio::select! {
        () = copy(cr, sw, mode.clone()) => {}
        () = copy(sr, cw, mode) => {}
    }
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !wait_passable(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A mode change while waiting for bytes: re-check before reading on.
            Ok(()) = mode.changed() => continue,
        };
        // Bytes read just as a black hole began are held until it ends.
        if !wait_passable(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn a_black_hole_holds_bytes_until_the_link_is_restored_and_reset_drops_the_connection() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"one").await.unwrap(), b"one");

        proxy.set(Mode::BlackHole);
        s.write_all(b"two").await.unwrap();
        let mut buf = [0u8; 3];
        let held = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            s.read_exact(&mut buf),
        )
        .await;
        assert!(held.is_err(), "nothing passes a black hole");
        proxy.set(Mode::Pass);
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"two");

        proxy.set(Mode::Reset);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("a reset closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
        proxy.set(Mode::Pass);
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"three").await.unwrap(), b"three");
    }
}
