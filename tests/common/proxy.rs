//! A TCP proxy on loopback that can stall: while stalled it keeps every
//! socket open and forwards nothing (no FIN, no RST), as a frozen NAT, a
//! hung middlebox or a partitioned network does. The kernel still
//! acknowledges what the client sends, so TCP keepalives and
//! TCP_USER_TIMEOUT see nothing wrong: only client-side deadlines can.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The proxy; it stops when dropped.
pub struct StallProxy {
    /// Where to connect instead of the server.
    pub addr: SocketAddr,
    stalled: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl StallProxy {
    /// Forwards 127.0.0.1:<random> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), upstream).await
    }

    /// Forwards `ip`:<random> to `upstream`.
    pub async fn start_on(ip: std::net::IpAddr, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(pipe(cr, sw, rx.clone()), pipe(sr, cw, rx));
                    }
                });
            }
        });
        Self {
            addr,
            stalled: Arc::new(tx),
            task,
        }
    }

    /// Stops (or resumes) forwarding on every connection, old and new.
    pub fn stall(&self, on: bool) {
        self.stalled.send_replace(on);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).expect("a URL");
        u.set_host(Some(&self.addr.ip().to_string())).expect("host");
        u.set_port(Some(self.addr.port())).expect("port");
        u.to_string()
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Data read just before a stall is held, too.
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The server address a test database URL names.
pub fn server_addr(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).expect("a URL");
    let host = u.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", u.port().unwrap_or(5432))
        .parse()
        .expect("server address")
}
