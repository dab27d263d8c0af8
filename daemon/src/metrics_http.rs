//! The optional `/metrics` listener (`metrics_listen`) for a Prometheus server to scrape. Plain
//! HTTP/1.1 without authentication: loopback only unless the configuration says otherwise, with
//! TLS and authentication left to a proxy in front (docs/monitoring.md). It answers `GET /metrics`
//! and nothing else, one request per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Format;
use crate::service::Service;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 8;
/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("metrics_listen = \"{addr}\": cannot listen there: {e} (choose a free port, or \"\" for no listener)")
    })
}

pub async fn serve(listener: TcpListener, service: Arc<Service>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, service)).await {
                log::debug!("metrics listener: {peer}: {e}");
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, service: Arc<Service>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
            )
            .await;
        }
    }
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
    // OpenMetrics for a scraper that asks for it (Prometheus does), else the classic format.
    let head_text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let format = if head_text.lines().any(|l| l.starts_with("accept:") && l.contains("application/openmetrics-text")) {
        Format::OpenMetrics
    } else {
        Format::Classic
    };
    let text = tokio::task::spawn_blocking(move || service.metrics_text(format))
        .await
        .map_err(|e| std::io::Error::other(format!("collecting the metrics: {e}")))?;
    let body = if method == b"HEAD" { "" } else { text.as_str() };
    respond(&mut stream, "200 OK", format.content_type(), body).await
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
