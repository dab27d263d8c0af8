//! The optional `/metrics` listener (`metrics_listen`) for a Prometheus server to scrape. Plain
//! HTTP/1.1 without authentication: loopback only unless the configuration says otherwise, with
//! TLS and authentication left to a proxy in front (docs/monitoring.md). It answers `GET /metrics`
//! (and `HEAD`) and nothing else, one request per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::Format;
use crate::service::Service;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;
/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head,
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// and this long in all, answer included.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("metrics_listen = \"{addr}\": cannot listen there: {e} (choose a free port, or \"\" for no listener)")
    })
}

pub async fn serve(listener: TcpListener, service: Arc<Service>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // Host names are checked on loopback only (see `answer`); a public listener is reached by the
    // names its proxy or scraper use.
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("metrics listener: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = Arc::clone(&service);
        // The permit goes with the connection, and into the blocking collection when there is
        // one: a client that gives up does not free its slot before its scrape is done.
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, service, permit, loopback)).await {
                log::debug!("metrics listener: {peer}: {e}");
            }
        });
    }
}

/// The request head, or `None` when the client closed, was too slow, or sent too much (then
/// `too_large` says so).
async fn read_head(stream: &mut TcpStream, too_large: &mut bool) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let reading = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if head.len() + n > MAX_HEAD {
                *too_large = true;
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(HEAD_TIMEOUT, reading).await.ok().flatten().map(|()| head)
}

async fn answer(
    mut stream: TcpStream,
    service: Arc<Service>,
    permit: OwnedSemaphorePermit,
    loopback: bool,
) -> std::io::Result<()> {
    let mut too_large = false;
    let Some(head) = read_head(&mut stream, &mut too_large).await else {
        if too_large {
            respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", "request head too large\n")
                .await?;
            // What the client still sends is read and dropped for a moment (a lingering close), so
            // that closing with unread data does not reset the connection before it reads the answer.
            let mut buf = [0u8; 4096];
            let drain = async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
        }
        return Ok(());
    };
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    // `/metrics`, with or without a query string (Prometheus adds none; others may).
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    if path != b"/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", "bci2tokend serves /metrics only\n").await;
    }
    if method != b"GET" && method != b"HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", "use GET /metrics\n").await;
    }
    let head_text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    // A web page in a browser on this machine could reach a loopback listener through a name of
    // its own that resolves to 127.0.0.1 (DNS rebinding): only addresses and `localhost` are
    // hosts of a loopback listener.
    let host = head_text.lines().find_map(|l| l.strip_prefix("host:")).map(str::trim);
    if loopback && host.is_some_and(|h| !host_is_an_address(h)) {
        return respond(&mut stream, "421 Misdirected Request", "text/plain", "use the listener's address\n").await;
    }
    // OpenMetrics for a scraper that asks for it (Prometheus does), else the classic format.
    let openmetrics = head_text.lines().any(|l| l.starts_with("accept:") && l.contains("application/openmetrics-text"));
    let format = if openmetrics { Format::OpenMetrics } else { Format::Classic };
    if method == b"HEAD" {
        return respond(&mut stream, "200 OK", format.content_type(), "").await;
    }
    let text = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        service.metrics_text(format)
    })
    .await
    .map_err(|e| std::io::Error::other(format!("collecting the metrics: {e}")))?;
    respond(&mut stream, "200 OK", format.content_type(), &text).await
}

/// `localhost`, an IPv4 address or a bracketed IPv6 address, with or without a port.
fn host_is_an_address(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split_once(']').is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok()
}

async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_and_localhost_are_hosts() {
        for ok in ["127.0.0.1:9464", "127.0.0.1", "localhost:9464", "[::1]:9464", "[::1]", "10.0.0.5:9464"] {
            assert!(host_is_an_address(ok), "{ok}");
        }
        for bad in ["evil.example:9464", "evil.example", "127.0.0.1.nip.io:9464", "[evil]:1", "localhost.evil:1", ""] {
            assert!(!host_is_an_address(bad), "{bad}");
        }
    }
}
