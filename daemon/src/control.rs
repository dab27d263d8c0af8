//! The control socket: length-prefixed JSON (see `bci2token_api::framing`), one request at a
//! time per connection; a follow request turns the connection into an event stream.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bci2token_api::framing::{encode, frame_len};
use bci2token_api::{ApiError, Caller, ErrorCode, Event, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Mode;
use crate::hub::{Delivery, Subscription};
use crate::service::Service;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "control socket {}: another bci2tokend is already listening there; stop it first \
         (`systemctl stop bci2tokend`, or the other `bci2tokend --user`) or set runtime_dir",
        path.display()
    )]
    InUse { path: PathBuf },
    #[error("control socket {}: the path exists and is not a socket; remove it or set runtime_dir", path.display())]
    NotASocket { path: PathBuf },
    #[error("control socket {}: {what}: {source}", path.display())]
    Io { path: PathBuf, what: &'static str, source: std::io::Error },
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> BindError + 'a {
    move |source| BindError::Io { path: path.to_path_buf(), what, source }
}

/// Creates the runtime directory and binds the socket with mode 0660. A stale socket left by a
/// crashed daemon is replaced; a live one or a non-socket file is refused.
pub fn bind(path: &Path, mode: Mode, group: &str) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err(dir, "cannot create the runtime directory"))?;
            // The user daemon's directory is private; the system one is reachable by the socket group.
            let dir_mode = if mode == Mode::User { 0o700 } else { 0o755 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))
                .map_err(io_err(dir, "cannot set the runtime directory's mode"))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse { path: path.to_path_buf() }),
            Err(_) => {
                log::info!("removing stale control socket {}", path.display());
                std::fs::remove_file(path).map_err(io_err(path, "cannot remove the stale socket"))?;
            }
        },
        Ok(_) => return Err(BindError::NotASocket { path: path.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path, "cannot inspect the path")(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err(path, "cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io_err(path, "cannot set the socket's mode"))?;
    if mode == Mode::System {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => {
                if let Err(e) = nix::unistd::chown(path, None, Some(g.gid)) {
                    log::warn!("control socket {}: cannot give it to group `{group}`: {e}", path.display());
                }
            }
            _ => log::warn!("group `{group}` does not exist; only root can use the control socket"),
        }
    }
    Ok(listener)
}

/// Accepts connections until the listener is dropped.
pub async fn serve(listener: UnixListener, service: Arc<Service>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let service = Arc::clone(&service);
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, service).await {
                        log::debug!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("control socket accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<Option<Vec<u8>>, bci2token_api::FrameError> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; frame_len(header)?];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

async fn connection(mut stream: UnixStream, service: Arc<Service>) -> Result<(), bci2token_api::FrameError> {
    let cred = stream.peer_cred()?;
    let caller = Caller { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() };
    while let Some(body) = read_request(&mut stream).await? {
        let outcome = match serde_json::from_slice::<Request>(&body) {
            Ok(request) => {
                log::debug!("request {} from uid {} pid {}", request.method(), caller.uid, caller.pid.unwrap_or(0));
                let service = Arc::clone(&service);
                tokio::task::spawn_blocking(move || service.handle(&caller, request)).await.unwrap_or_else(|e| {
                    crate::service::Outcome {
                        reply: Err(ApiError::new(ErrorCode::Internal, format!("the request handler failed: {e}"))),
                        stream: None,
                    }
                })
            }
            Err(e) => crate::service::Outcome {
                reply: Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("malformed request: {e} (see docs/control-protocol.md)"),
                )),
                stream: None,
            },
        };
        let response = match outcome.reply {
            Ok(v) => Response::Ok(v),
            Err(e) => Response::Error(e),
        };
        stream.write_all(&encode(&response)?).await?;
        if let Some((session, subscription)) = outcome.stream {
            return stream_events(stream, &session, subscription).await;
        }
    }
    Ok(())
}

/// Writes every delivery as one frame until the session ends, then closes the connection.
async fn stream_events(
    stream: UnixStream,
    session: &str,
    mut subscription: Subscription,
) -> Result<(), bci2token_api::FrameError> {
    let mut out = BufWriter::with_capacity(256 * 1024, stream);
    while let Some(first) = subscription.recv().await {
        // Write everything already queued, then flush once.
        let mut next = Some(first);
        while let Some(delivery) = next {
            let frame = match delivery {
                Delivery::Event(event) => encode(&*event)?,
                Delivery::Lost(count) => encode(&Event::Lost { session: session.to_string(), count })?,
            };
            out.write_all(&frame).await?;
            next = subscription.try_recv();
        }
        out.flush().await?;
    }
    out.flush().await?;
    out.shutdown().await?;
    Ok(())
}
