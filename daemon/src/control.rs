//! The control socket: length-prefixed JSON (see `bci2token_api::framing`), one request at a
//! time per connection; a follow request turns the connection into an event stream. Requests may
//! carry file descriptors (SCM_RIGHTS). This door does framing and the limits that protect the
//! daemon from its callers (connections, request size, unfinished frames, request rate); what a
//! request may do is the service's business.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bci2token_api::framing::{encode, MAX_REQUEST_BYTES};
use bci2token_api::{ApiError, Caller, ErrorCode, Event, Request, Response, MAX_REQUEST_FDS};
use tokio::io::{AsyncWriteExt, BufWriter, Interest};
use tokio::net::{UnixListener, UnixStream};

use crate::closer::Passed;
use crate::config::Mode;
use crate::hub::{Delivery, Subscription};
use crate::service::{ExportRequest, Followed, Service, StartRequest, Started};
use crate::token_bucket::TokenBucket;

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

/// Creates the runtime directory and binds the socket with `socket_mode` (0660 by default). A stale socket left by a
/// crashed daemon is replaced; a live one or a non-socket file is refused.
pub fn bind(path: &Path, mode: Mode, group: &str, socket_mode: u32) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err(dir, "cannot create the runtime directory"))?;
            // The user daemon's directory is private; the system one is reachable by anyone (the
            // socket's own mode and group decide who may connect; readers may ask for the status).
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))
        .map_err(io_err(path, "cannot set the socket's mode"))?;
    if mode == Mode::System {
        match nix::unistd::Group::from_name(group) {
            // The packaged unit runs with Group=bci2token, so the socket is born in its group;
            // chown is then not needed, and the unit's seccomp filter (~@privileged) refuses it.
            Ok(Some(g)) if std::fs::metadata(path).is_ok_and(|m| m.gid() == g.gid.as_raw()) => {}
            Ok(Some(g)) => {
                if let Err(e) = nix::unistd::chown(path, None, Some(g.gid)) {
                    log::warn!(
                        "control socket {}: cannot give it to group `{group}`: {e} (run the daemon with that \
                         group as its own, e.g. Group={group} in its unit)",
                        path.display()
                    );
                }
            }
            _ => log::warn!("group `{group}` does not exist; only root can use the control socket"),
        }
    }
    Ok(listener)
}

/// The limits of the door, read from the configuration at each connection (so a reload applies
/// to new connections).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    pub requests_per_second: f64,
    pub request_burst: f64,
    /// A connection idle this long between requests is closed (a follow stream is not idle).
    pub idle_timeout: Duration,
}

/// Where a caller stands at the door: admins (root, the admin group, the `--user` daemon's own
/// user) are held to no cap nor rate; readers share half of the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Admin,
    Member,
    Reader,
}

/// Who holds connections now, and every uid's request bucket.
#[derive(Default)]
struct Admission {
    total: usize,
    per_uid: HashMap<u32, usize>,
    buckets: HashMap<u32, TokenBucket>,
}

/// Connections and request rates of all callers, shared by the connection tasks.
#[derive(Default)]
pub struct Door {
    state: Mutex<Admission>,
}

/// One admitted connection; gives its place back when dropped.
pub struct Admitted {
    door: Arc<Door>,
    uid: u32,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut s = self.door.state.lock().unwrap();
        s.total -= 1;
        if let Some(n) = s.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                s.per_uid.remove(&self.uid);
            }
        }
    }
}

impl Door {
    /// Admits a connection of `uid`, or says which cap it hits. Admins are counted but never
    /// refused, so callers filling the caps cannot lock out those who can stop them; readers
    /// (anyone, with socket_mode 0666) get half of `max_connections` at most, so strangers cannot
    /// lock out the operators.
    pub fn admit(self: &Arc<Self>, uid: u32, standing: Standing, limits: &Limits) -> Result<Admitted, String> {
        let mut s = self.state.lock().unwrap();
        let mine = s.per_uid.get(&uid).copied().unwrap_or(0);
        let exempt = standing == Standing::Admin;
        let cap =
            if standing == Standing::Reader { (limits.max_connections / 2).max(1) } else { limits.max_connections };
        if !exempt && s.total >= cap {
            let whom = if standing == Standing::Reader { " (callers without a role: half of it)" } else { "" };
            return Err(format!(
                "the daemon holds {} connections, the limit is max_connections = {}{whom}; try again later",
                s.total, limits.max_connections
            ));
        }
        if !exempt && mine >= limits.max_connections_per_uid {
            return Err(format!(
                "uid {uid} holds {mine} connections, the limit is max_connections_per_uid = {}; close some first",
                limits.max_connections_per_uid
            ));
        }
        s.total += 1;
        *s.per_uid.entry(uid).or_insert(0) += 1;
        Ok(Admitted { door: Arc::clone(self), uid })
    }

    /// Takes one request from `uid`'s bucket, or the refusal that says when to retry (both doors).
    pub fn admit_request(&self, uid: u32, standing: Standing, limits: &Limits) -> Result<(), ApiError> {
        self.take_request(uid, standing, limits).map_err(|wait| {
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "uid {uid} sends requests faster than requests_per_second = {} (burst {}); retry in {wait:.2} s",
                    limits.requests_per_second, limits.request_burst
                ),
            )
        })
    }

    /// Takes one request from `uid`'s bucket (admins have none); `Err(seconds)` until the next
    /// one is allowed.
    pub fn take_request(&self, uid: u32, standing: Standing, limits: &Limits) -> Result<(), f64> {
        if standing == Standing::Admin {
            return Ok(());
        }
        let mut s = self.state.lock().unwrap();
        // Forget full buckets of uids without connections, so the map stays as small as they are.
        if s.buckets.len() > 4 * limits.max_connections {
            let Admission { buckets, per_uid, .. } = &mut *s;
            buckets.retain(|u, _| per_uid.contains_key(u));
        }
        let bucket = s.buckets.entry(uid).or_insert_with(|| TokenBucket::full(limits.request_burst));
        bucket.take(limits.requests_per_second, limits.request_burst)
    }
}

/// Accepts connections until the listener is dropped. `door` holds the callers' request budgets,
/// which the bus door shares.
pub async fn serve(listener: UnixListener, service: Arc<Service>, door: Arc<Door>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let service = Arc::clone(&service);
                let door = Arc::clone(&door);
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, service, door).await {
                        log::debug!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The peer's supplementary groups (`SO_PEERGROUPS`): the groups its process had when it connected.
fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<u32>> {
    use nix::libc;
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer holds `len` bytes; the kernel writes at most that and sets `len`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        // ERANGE: `len` now says how much room the list needs (NGROUPS_MAX bounds it).
        if err.raw_os_error() == Some(libc::ERANGE) && groups.len() < 65_536 {
            groups.resize((len as usize / std::mem::size_of::<libc::gid_t>()).max(groups.len() * 2), 0);
            continue;
        }
        return Err(err);
    }
}

/// Why a request could not be read.
enum ReadFailure {
    /// The peer closed the connection between frames.
    Closed,
    /// Something to tell the peer before closing: the framing cannot be trusted any more.
    Refuse(ApiError),
    /// The connection was idle too long: told why and closed, not audited (housekeeping, and a
    /// client that keeps a connection open would add an entry every idle_timeout).
    Idle(ApiError),
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadFailure {
    fn from(e: std::io::Error) -> Self {
        ReadFailure::Io(e)
    }
}

/// Receives up to `buf.len()` bytes and any descriptors that come with them.
async fn recv_with_fds(stream: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> std::io::Result<(usize, bool)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    stream
        .async_io(Interest::READABLE, || {
            // Room for the most one message can carry (SCM_MAX_FD): with less the kernel would
            // truncate, and the descriptors it still installed could not be collected to close.
            let mut space = nix::cmsg_space!([RawFd; 253]);
            let mut iov = [std::io::IoSliceMut::new(buf)];
            let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(std::io::Error::from)?;
            let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    // SAFETY: the kernel just installed these descriptors in this process for us.
                    fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
            Ok((msg.bytes, truncated))
        })
        .await
}

/// Reads one request frame and its descriptors. Waiting for a request has no time limit; once its
/// first byte has arrived, the rest must follow within `timeout`. The body grows as it arrives, so
/// a header that announces a large frame costs nothing until the bytes are sent.
/// The descriptors that came with it are collected in `fds` (also when the request fails: the
/// caller disposes of them).
async fn read_request(stream: &UnixStream, limits: &Limits, fds: &mut Vec<OwnedFd>) -> Result<Vec<u8>, ReadFailure> {
    let timeout = limits.request_timeout;
    let mut header = [0u8; 4];
    let (first, mut truncated) =
        tokio::time::timeout(limits.idle_timeout, recv_with_fds(stream, &mut header, fds)).await.map_err(|_| {
            ReadFailure::Idle(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "the connection was idle for idle_timeout = {} s and is closed; connect again",
                    limits.idle_timeout.as_secs_f64()
                ),
            ))
        })??;
    if first == 0 {
        return Err(ReadFailure::Closed);
    }
    // Descriptors come with the frame's first bytes (as bci2tokenctl sends them): any later ones
    // are refused at once, so a caller cannot pile descriptors into the daemon byte by byte.
    let too_many = || {
        ReadFailure::Refuse(ApiError::new(
            ErrorCode::BadRequest,
            format!("a request may carry at most {MAX_REQUEST_FDS} file descriptors, with its first bytes"),
        ))
    };
    if truncated || fds.len() > MAX_REQUEST_FDS {
        return Err(too_many());
    }
    let passed = fds.len();
    let deadline = tokio::time::Instant::now() + timeout;
    let late = || {
        ReadFailure::Refuse(ApiError::new(
            ErrorCode::Timeout,
            format!("the request was not finished within request_timeout = {} s", timeout.as_secs_f64()),
        ))
    };
    let mut got = first;
    while got < 4 {
        let (n, t) = tokio::time::timeout_at(deadline, recv_with_fds(stream, &mut header[got..], fds))
            .await
            .map_err(|_| late())??;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        got += n;
        if t || fds.len() > passed {
            return Err(too_many());
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_REQUEST_BYTES {
        return Err(ReadFailure::Refuse(ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("a request of {len} bytes exceeds the limit of {MAX_REQUEST_BYTES} bytes"),
        )));
    }
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let (n, t) = tokio::time::timeout_at(deadline, recv_with_fds(stream, &mut chunk[..want], fds))
            .await
            .map_err(|_| late())??;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        body.extend_from_slice(&chunk[..n]);
        truncated |= t;
        if truncated || fds.len() > passed {
            return Err(too_many());
        }
    }
    Ok(body)
}

/// Writes a reply; a caller that does not read it within idle_timeout loses the connection (it
/// would otherwise hold its place for ever).
async fn write_reply(
    stream: &mut UnixStream,
    response: &Response,
    limits: &Limits,
) -> Result<(), bci2token_api::FrameError> {
    let frame = encode(response)?;
    match tokio::time::timeout(limits.idle_timeout, stream.write_all(&frame)).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the caller does not read its reply").into()),
    }
}

async fn send_error(stream: &mut UnixStream, error: ApiError) -> Result<(), bci2token_api::FrameError> {
    let frame = encode(&Response::Error(error))?;
    // A peer that does not read its refusal does not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    Ok(())
}

/// Writes a refusal of the door (not of a request the service saw) to the audit log.
async fn audit_refusal(service: &Arc<Service>, caller: &Caller, action: &'static str, error: &ApiError) {
    let (service, caller, message) = (Arc::clone(service), caller.clone(), error.message.clone());
    let _ = tokio::task::spawn_blocking(move || service.audit_refusal(&caller, action, "", &message)).await;
}

async fn connection(
    mut stream: UnixStream,
    service: Arc<Service>,
    door: Arc<Door>,
) -> Result<(), bci2token_api::FrameError> {
    let cred = stream.peer_cred()?;
    let groups = peer_groups(&stream).unwrap_or_else(|e| {
        log::warn!("control connection of uid {}: cannot read its groups ({e}); using its primary group", cred.uid());
        Vec::new()
    });
    let caller = Caller { uid: cred.uid(), gid: cred.gid(), pid: cred.pid(), groups, admin_by_polkit: false };
    // The role needs group lookups (NSS, which may ask a directory service): not on a worker.
    let (limits, standing) = {
        let (service, caller) = (Arc::clone(&service), caller.clone());
        match tokio::task::spawn_blocking(move || (service.limits(), service.standing(&caller))).await {
            Ok(found) => found,
            Err(e) => return Err(std::io::Error::other(format!("the admission check failed: {e}")).into()),
        }
    };
    let _admitted = match door.admit(caller.uid, standing, &limits) {
        Ok(a) => a,
        Err(message) => {
            let error = ApiError::new(ErrorCode::TooManyConnections, message);
            audit_refusal(&service, &caller, "connect", &error).await;
            return send_error(&mut stream, error).await;
        }
    };
    loop {
        if let Err(error) = crate::closer::refuse_while_stuck(caller.uid) {
            audit_refusal(&service, &caller, "request", &error).await;
            return send_error(&mut stream, error).await;
        }
        // Descriptors that do not reach the service are closed by the closer, never here.
        let mut fds = Vec::new();
        let read = read_request(&stream, &limits, &mut fds).await;
        let body = match read {
            Ok(body) => body,
            Err(failure) => {
                crate::closer::dispose(caller.uid, fds);
                return match failure {
                    ReadFailure::Closed => Ok(()),
                    ReadFailure::Io(e) => Err(e.into()),
                    ReadFailure::Idle(error) => send_error(&mut stream, error).await,
                    ReadFailure::Refuse(error) => {
                        audit_refusal(&service, &caller, "request", &error).await;
                        send_error(&mut stream, error).await
                    }
                };
            }
        };
        if let Err(error) = door.admit_request(caller.uid, standing, &limits) {
            crate::closer::dispose(caller.uid, fds);
            audit_refusal(&service, &caller, "request", &error).await;
            write_reply(&mut stream, &Response::Error(error), &limits).await?;
            continue;
        }
        let (reply, follow) = match serde_json::from_slice::<Request>(&body) {
            Ok(request) => {
                log::debug!("request {} from uid {} pid {}", request.method(), caller.uid, caller.pid.unwrap_or(0));
                let fds = Passed::new(caller.uid, fds);
                let c = caller.clone();
                match service.call(move |s| Ok(dispatch(s, &c, request, fds))).await {
                    Ok(done) => done,
                    Err(e) => (Err(e), None),
                }
            }
            // serde's message quotes at most the offending token of the caller's own request.
            Err(e) => {
                crate::closer::dispose(caller.uid, fds);
                let e = ApiError::new(
                    ErrorCode::BadRequest,
                    format!("malformed request: {e} (see docs/control-protocol.md)"),
                );
                (Err(e), None)
            }
        };
        let response = match reply {
            Ok(v) => Response::Ok(v),
            Err(e) => Response::Error(e),
        };
        write_reply(&mut stream, &response, &limits).await?;
        if let Some((session, subscription)) = follow {
            return stream_events(stream, &session, subscription).await;
        }
    }
}

/// A reply's value, and for a request that follows a session the stream that comes after it.
type Dispatched = (Result<serde_json::Value, ApiError>, Option<(String, Subscription)>);

/// Runs one request of the socket protocol as the service operation it names (blocking).
fn dispatch(service: &Service, caller: &Caller, request: Request, fds: Passed) -> Dispatched {
    fn reply<T: serde::Serialize>(result: Result<T, ApiError>) -> Dispatched {
        (result.and_then(json), None)
    }
    let c = caller;
    match request {
        Request::Status => reply(service.status(c)),
        Request::Drivers => reply(service.drivers(c)),
        Request::Devices { driver } => reply(service.devices(c, driver.as_deref())),
        Request::Models => reply(service.models(c)),
        Request::ModelShow { model } => reply(service.model_show(c, &model)),
        Request::ModelInstall { files, replace } => reply(service.model_install(c, &files, replace, fds)),
        Request::ModelTrain(train) => reply(service.model_train(c, train)),
        Request::ModelDelete { model, owner } => reply(service.model_delete(c, &model, owner)),
        Request::SessionStart { driver, config, model, follow, lsl_outlets, subject } => {
            let start = StartRequest { driver, config, model, follow, lsl_outlets, subject };
            match service.session_start(c, start, fds) {
                Ok(Started { info, stream }) => {
                    let stream = stream.map(|s| (info.id.clone(), s));
                    (json(info), stream)
                }
                Err(e) => (Err(e), None),
            }
        }
        Request::SessionList => reply(service.session_list(c)),
        Request::SessionShow { id } => reply(service.session_show(c, &id)),
        Request::SessionStop { id } => reply(service.session_stop(c, &id)),
        Request::SessionDelete { id } => reply(service.session_delete(c, &id)),
        Request::AuditList { since } => reply(service.audit_list(c, since)),
        Request::AuditVerify => reply(service.audit_verify(c)),
        Request::KeyRotate => reply(service.key_rotate(c)),
        Request::Backup { path } => reply(service.backup(c, &path, fds)),
        Request::Restore { path } => reply(service.restore(c, &path, fds)),
        Request::Export { id, format, path, features, dp_epsilon, dp_delta, dp_clip } => {
            let export = ExportRequest { id, format, path, features, dp_epsilon, dp_delta, dp_clip };
            reply(service.export(c, export, fds))
        }
        Request::Health => reply(service.health(c)),
        Request::Metrics => reply(service.metrics(c)),
        Request::Follow { id, options } => match service.follow(c, &id, &options) {
            Ok(Followed { info, stream }) => (json(&info), Some((info.id.clone(), stream))),
            Err(e) => (Err(e), None),
        },
    }
}

fn json<T: serde::Serialize>(v: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot encode reply: {e}")))
}

/// Writes every delivery as one frame until the session ends, then closes the connection.
pub async fn stream_events(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            request_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_connections_per_uid: 2,
            requests_per_second: 1.0,
            request_burst: 2.0,
            idle_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn connections_are_capped_per_uid_and_in_total_and_given_back() {
        let door = Arc::new(Door::default());
        let l = limits();
        let m = Standing::Member;
        let a = door.admit(1000, m, &l).unwrap();
        assert!(door.admit(1005, Standing::Reader, &l).err().unwrap().contains("half of it"), "readers get 1 of 3");
        let _b = door.admit(1000, m, &l).unwrap();
        assert!(door.admit(1000, m, &l).err().unwrap().contains("max_connections_per_uid = 2"));
        let _c = door.admit(1001, m, &l).unwrap();
        assert!(door.admit(1002, m, &l).err().unwrap().contains("max_connections = 3"));
        drop(a);
        let _d = door.admit(1002, m, &l).expect("a closed connection frees its place");
        let _admin =
            door.admit(0, Standing::Admin, &l).expect("an admin is never locked out, though every place is taken");
    }

    #[test]
    fn the_request_bucket_allows_a_burst_then_the_rate() {
        let door = Door::default();
        let l = limits();
        let m = Standing::Member;
        assert!(door.take_request(7, m, &l).is_ok());
        assert!(door.take_request(7, m, &l).is_ok());
        let wait = door.take_request(7, m, &l).unwrap_err();
        assert!(wait > 0.9 && wait <= 1.0, "{wait}");
        assert!(door.take_request(8, m, &l).is_ok(), "another uid has its own bucket");
        assert!((0..100).all(|_| door.take_request(0, Standing::Admin, &l).is_ok()), "admins are not limited");
    }
}
