//! The D-Bus door: `org.bci2token.Daemon1` at `/org/bci2token` (with an ObjectManager) and one
//! `org.bci2token.Session1` object per session, on the service's operations as the socket has
//! them. The caller of a method is the message's sender (its uid, pid and groups from the bus's
//! `GetConnectionCredentials`), never the daemon. Tokens and events of a session go only to the
//! callers who subscribed and may see it (signals addressed to them), never broadcast; bulk data
//! goes through a socket handed out by `OpenStream`. See docs/dbus.md.

mod callers;
mod daemon_object;
pub mod error;
mod polkit;
mod session_object;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bci2token_api::dbus::{session_path, BUS_NAME, DAEMON_PATH};
use bci2token_api::{ApiError, Caller, ErrorCode};
use zbus::fdo::RequestNameReply;
use zbus::Connection;

use crate::auth::Role;
use crate::config::Bus;
use crate::control::{Door, Standing};
use crate::service::Service;
use crate::session::SessionChange;

pub use error::BusError;

/// Subscriptions to sessions' signals most one session may have.
const MAX_SUBSCRIBERS_PER_SESSION: usize = 64;

/// A reply whose JSON form is larger than this is refused (`LimitReached`): the system bus
/// carries messages of 32 MiB at most, and a larger one would get the daemon disconnected.
const MAX_REPLY_JSON_BYTES: usize = 8 << 20;

/// How long connecting to the bus and taking the name may take.
const CONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What every object of the door shares.
pub struct Ctx {
    pub service: Arc<Service>,
    conn: Connection,
    door: Arc<Door>,
    callers: callers::Callers,
    /// Sessions with an object.
    objects: Mutex<HashSet<String>>,
    /// The forwarding task of each (session, subscriber's unique name); `None` while the
    /// subscription is being set up (the place is held).
    subscriptions: Mutex<HashMap<(String, String), Option<tokio::task::AbortHandle>>>,
    /// Whether admin operations may ask polkit: only a system daemon on the system bus, where
    /// only polkitd may own polkit's name.
    polkit: bool,
    /// Uids with a polkit check in progress (one at a time each: an interactive one may wait for
    /// minutes).
    polkit_asking: Mutex<HashSet<u32>>,
    /// The signals all subscribers share (see `session_object::forward`).
    signals: Arc<session_object::Budget>,
}

/// A uid's polkit check in progress; the uid is free again when this is dropped (however the
/// call ends).
struct Asking<'a> {
    set: &'a Mutex<HashSet<u32>>,
    uid: u32,
}

impl<'a> Asking<'a> {
    fn start(set: &'a Mutex<HashSet<u32>>, uid: u32) -> Option<Self> {
        set.lock().unwrap().insert(uid).then_some(Asking { set, uid })
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap().remove(&self.uid);
    }
}

/// What [`Ctx::admit`] found out about a caller.
pub struct Admitted {
    pub caller: Caller,
    role: Role,
    standing: Standing,
}

impl Ctx {
    /// Runs a service operation for the sender of `header`: its identity from the bus, its
    /// request budget (shared with the control socket), then the operation off the runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        header: &zbus::message::Header<'_>,
        op: impl FnOnce(&Service, &Caller) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, BusError> {
        let caller = self.admitted(header).await?;
        self.serve(caller, op).await
    }

    /// [`Self::run`] for an admin operation (see [`Self::admitted_admin`]).
    pub async fn run_admin<T: Send + 'static>(
        &self,
        header: &zbus::message::Header<'_>,
        op: crate::service::Op,
        f: impl FnOnce(&Service, &Caller) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, BusError> {
        let caller = self.admitted_admin(header, op).await?;
        self.serve(caller, f).await
    }

    /// Runs an operation for a caller already admitted ([`Self::admitted`]).
    pub async fn serve<T: Send + 'static>(
        &self,
        caller: Caller,
        op: impl FnOnce(&Service, &Caller) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, BusError> {
        Ok(self.service.call(move |s| op(s, &caller)).await?)
    }

    /// The sender of `header`, once it has taken a request from its budget (shared with the
    /// control socket; a refusal is audited).
    pub async fn admitted(&self, header: &zbus::message::Header<'_>) -> Result<Caller, BusError> {
        Ok(self.admit(header).await?.caller)
    }

    /// [`Self::admitted`], with the caller's role and standing.
    pub async fn admit(&self, header: &zbus::message::Header<'_>) -> Result<Admitted, BusError> {
        let caller = self.callers.of(header).await?;
        let door = Arc::clone(&self.door);
        // The role needs group lookups (NSS): off the runtime, as the operation itself.
        Ok(self
            .service
            .call(move |s| {
                // As at the socket: the closer's backlog, then the request budget.
                let limits = s.limits();
                let role = s.role(&caller);
                let standing: Standing = s.standing(&caller);
                let admitted = crate::closer::refuse_while_stuck(caller.uid)
                    .and_then(|()| door.admit_request(caller.uid, standing, &limits));
                if let Err(error) = admitted {
                    s.audit_refusal(&caller, "request", "", &error.message);
                    return Err(error);
                }
                Ok(Admitted { caller, role, standing })
            })
            .await?)
    }

    /// A place among the connections of the caller (as a follow stream holds one on the socket),
    /// for a stream the bus door hands out; refused (and audited) as the socket refuses a
    /// connection.
    pub async fn stream_place(&self, who: &Admitted) -> Result<crate::control::Admitted, BusError> {
        let limits = self.service.limits();
        match self.door.admit(who.caller.uid, who.standing, &limits) {
            Ok(place) => Ok(place),
            Err(message) => {
                let caller = who.caller.clone();
                let m = message.clone();
                let _ = self
                    .service
                    .call(move |s| {
                        s.audit_refusal(&caller, "connect", "", &m);
                        Ok(())
                    })
                    .await;
                Err(BusError::TooManyConnections(message))
            }
        }
    }

    /// The admitted caller of an admin operation `op`: outside the admin group, polkit is asked
    /// for the operation's action (a system daemon on the system bus only), and a yes makes the
    /// caller an admin for this one call.
    pub async fn admitted_admin(
        &self,
        header: &zbus::message::Header<'_>,
        op: crate::service::Op,
    ) -> Result<Caller, BusError> {
        let Admitted { mut caller, role, .. } = self.admit(header).await?;
        let Some(action) = op.polkit_action() else { return Ok(caller) };
        if role >= Role::Admin || !self.polkit {
            return Ok(caller);
        }
        let Some(_asking) = Asking::start(&self.polkit_asking, caller.uid) else {
            // One check at a time per uid; the group rules decide this one.
            return Ok(caller);
        };
        let uid = caller.uid;
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let interactive = header.primary().flags().contains(zbus::message::Flags::AllowInteractiveAuth);
        let authorized = polkit::authorizes(&self.conn, &sender, action, interactive).await;
        if authorized {
            log::info!("polkit authorized {action} for uid {uid} ({sender})");
            caller.admin_by_polkit = true;
        }
        Ok(caller)
    }

    /// Holds a subscriber's place (at most [`MAX_SUBSCRIBERS_PER_SESSION`] per session; one that
    /// re-subscribes keeps its own).
    fn reserve_subscription(&self, id: &str, sender: &str) -> Result<(), ApiError> {
        let mut subs = self.subscriptions.lock().unwrap();
        subs.retain(|_, t| t.as_ref().is_none_or(|t| !t.is_finished()));
        let key = (id.to_string(), sender.to_string());
        if !subs.contains_key(&key) && subs.keys().filter(|(s, _)| s == id).count() >= MAX_SUBSCRIBERS_PER_SESSION {
            return Err(ApiError::new(
                ErrorCode::LimitReached,
                format!("session `{id}` has {MAX_SUBSCRIBERS_PER_SESSION} subscribers already; unsubscribe one first"),
            ));
        }
        subs.entry(key).or_insert(None);
        Ok(())
    }

    /// Records a subscriber's forwarding task in its place, ending an earlier one of the same
    /// subscriber; a place already given up (the subscriber left meanwhile) ends the task.
    fn add_subscription(&self, id: &str, sender: &str, task: tokio::task::AbortHandle) {
        let mut subs = self.subscriptions.lock().unwrap();
        match subs.get_mut(&(id.to_string(), sender.to_string())) {
            Some(place) => {
                if let Some(old) = place.replace(task) {
                    old.abort();
                }
            }
            None => task.abort(),
        }
    }

    /// Ends subscriptions: of `sender` to `id`, of `sender` to every session (`id` None), or of
    /// everyone to `id` (`sender` None). Returns how many ended.
    fn end_subscriptions(&self, id: Option<&str>, sender: Option<&str>) -> usize {
        let mut subs = self.subscriptions.lock().unwrap();
        let before = subs.len();
        subs.retain(|(s, who), task| {
            let hit = id.is_none_or(|i| i == s) && sender.is_none_or(|w| w == who);
            if let (true, Some(task)) = (hit, task) {
                task.abort();
            }
            !hit
        });
        before - subs.len()
    }
}

/// Serves the D-Bus door for the life of the process: connects to `bus`, and when that fails or
/// the connection is lost later, says so and tries again with back-off (1 s to a minute), the
/// daemon going on with its socket meanwhile. `ready` is sent once the first attempt is over.
pub async fn serve(service: Arc<Service>, door: Arc<Door>, bus: Bus, ready: tokio::sync::oneshot::Sender<()>) {
    if bus == Bus::None {
        log::info!("D-Bus: off (bus = \"none\"); the control socket is the only door");
        let _ = ready.send(());
        return;
    }
    let shown = match &bus {
        Bus::Address(a) => a.clone(),
        Bus::System => "the system bus".into(),
        _ => "the session bus".into(),
    };
    // polkit is trusted only where only polkitd can own its name: the real system bus.
    let polkit = bus == Bus::System && service.config().mode == crate::config::Mode::System;
    let mut ready = Some(ready);
    let mut wait = std::time::Duration::from_secs(1);
    let mut told = false;
    loop {
        match start(&service, &door, &bus, polkit).await {
            Ok(running) => {
                log::info!("D-Bus: {BUS_NAME} on {shown}");
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                told = false;
                let up = std::time::Instant::now();
                running.lost().await;
                // Back to a quick retry only after a connection that lasted; one that fails at
                // once is retried ever more slowly.
                if up.elapsed() > std::time::Duration::from_secs(60) {
                    wait = std::time::Duration::from_secs(1);
                }
                log::error!(
                    "D-Bus: the connection to {shown} is lost; the control socket serves meanwhile, reconnecting"
                );
                // Closing sends on a connection that failed: it cannot block for long, and it is
                // not awaited past a few seconds anyway (nor cancelled).
                let closing = tokio::spawn(running.close());
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), closing).await;
            }
            Err(why) => {
                if !told {
                    log::warn!(
                        "D-Bus: cannot offer {BUS_NAME} on {shown} ({why}); running with the control socket only, \
                         trying again every minute at most"
                    );
                    told = true;
                } else {
                    log::debug!("D-Bus: {shown}: {why}");
                }
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(60));
    }
}

/// The door while it is up: its connection and the tasks serving it (ended when it is dropped).
struct Running {
    conn: Connection,
    ctx: Arc<Ctx>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Returns once the connection has failed (the bus is asked something every 10 s). A bus
    /// that is only slow is waited for: a question is never cut short, since a message half
    /// written would corrupt the connection.
    async fn lost(&self) {
        let Ok(proxy) = zbus::fdo::DBusProxy::new(&self.conn).await else { return };
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            if proxy.get_id().await.is_err() {
                return;
            }
        }
    }

    /// Ends this door for good: its tasks and subscriptions, its objects (which hold the
    /// connection, so that it would otherwise live on and keep the name), the connection itself.
    async fn close(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.ctx.end_subscriptions(None, None);
        let server = self.conn.object_server();
        let ids: Vec<String> = self.ctx.objects.lock().unwrap().drain().collect();
        for id in ids {
            let _ = server.remove::<session_object::SessionObject, _>(session_path(&id).as_str()).await;
        }
        let _ = server.remove::<daemon_object::DaemonObject, _>(DAEMON_PATH).await;
        let _ = server.remove::<zbus::fdo::ObjectManager, _>(DAEMON_PATH).await;
        let _ = self.conn.clone().close().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connects, takes the well-known name and serves the objects.
async fn start(service: &Arc<Service>, door: &Arc<Door>, bus: &Bus, polkit: bool) -> Result<Running, String> {
    let builder = match bus {
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
        Bus::None => return Err("no bus".into()),
    };
    // Only the connection's set-up is timed (dropping it half-way leaves nothing behind). The name
    // is taken only once the objects are served: a call that started the daemon by activation is
    // delivered as soon as the name is owned, and must find them.
    let build = builder.map_err(|e| e.to_string())?.build();
    let conn = match tokio::time::timeout(CONNECT_WITHIN, build).await {
        Ok(built) => built.map_err(|e| e.to_string())?,
        Err(_) => return Err(format!("no answer within {CONNECT_WITHIN:?}")),
    };
    let ctx = Arc::new(Ctx {
        service: Arc::clone(service),
        conn: conn.clone(),
        door: Arc::clone(door),
        callers: callers::Callers::new(conn.clone()),
        objects: Mutex::new(HashSet::new()),
        subscriptions: Mutex::new(HashMap::new()),
        polkit,
        polkit_asking: Mutex::new(HashSet::new()),
        signals: Arc::new(session_object::Budget::default()),
    });
    let mut running = Running { conn: conn.clone(), ctx: Arc::clone(&ctx), tasks: Vec::new() };
    let server = conn.object_server();
    let served = async {
        server.at(DAEMON_PATH, zbus::fdo::ObjectManager).await?;
        server.at(DAEMON_PATH, daemon_object::DaemonObject::new(Arc::clone(&ctx))).await
    };
    let named = async {
        served.await?;
        conn.request_name_with_flags(BUS_NAME, zbus::fdo::RequestNameFlags::DoNotQueue.into()).await
    };
    // Timed like the connection: a bus that accepts and then never answers must not hold the
    // daemon's readiness.
    let refused = match tokio::time::timeout(CONNECT_WITHIN, named).await {
        Ok(Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner)) => None,
        Ok(Ok(_)) => Some(format!("{BUS_NAME} is owned by another connection")),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {CONNECT_WITHIN:?} while taking {BUS_NAME}")),
    };
    if let Some(e) = refused {
        // The objects hold the connection: take them away.
        running.close().await;
        return Err(e);
    }
    running.tasks = vec![
        tokio::spawn(follow_sessions(conn.clone(), Arc::clone(&ctx))),
        tokio::spawn(forget_departed(conn.clone(), Arc::clone(&ctx))),
    ];
    Ok(running)
}

/// A reply's records, refused when too large to cross the bus (see [`MAX_REPLY_JSON_BYTES`]).
pub fn fits<T: serde::Serialize>(records: T, what: &str) -> Result<T, BusError> {
    let size = serde_json::to_vec(&records).map_or(usize::MAX, |v| v.len());
    if size > MAX_REPLY_JSON_BYTES {
        return Err(BusError::LimitReached(format!(
            "{what} take {} MiB, more than a D-Bus reply carries ({} MiB); ask for less (ListAudit's `since`) \
             or use the control socket",
            size >> 20,
            MAX_REPLY_JSON_BYTES >> 20
        )));
    }
    Ok(records)
}

/// Keeps one object per session the daemon knows, following the service's changes.
async fn follow_sessions(conn: Connection, ctx: Arc<Ctx>) {
    let mut changes = ctx.service.changes();
    let server = conn.object_server();
    for info in ctx.service.all_sessions() {
        add_session(&conn, &ctx, info).await;
    }
    loop {
        let change = match changes.recv().await {
            Ok(c) => c,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                log::warn!("D-Bus: {n} session change(s) missed; re-reading the sessions");
                resync(&conn, &ctx).await;
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match change {
            SessionChange::Added(id) => {
                // The state may have moved on since the change was sent: take the session as it is now.
                if let Some(info) = ctx.service.all_sessions().into_iter().find(|s| s.id == id) {
                    add_session(&conn, &ctx, info).await;
                }
            }
            SessionChange::State { id, state, message } => {
                let path = session_path(&id);
                if let Ok(iface) = server.interface::<_, session_object::SessionObject>(path.as_str()).await {
                    // Shared access only: a method of the object may be running (Stop waits for
                    // the session's end), and an exclusive lock would wait for it.
                    let object = iface.get().await;
                    object.set_state(state, message);
                    let emitter = iface.signal_emitter();
                    let _ = object.state_changed(emitter).await;
                    let _ = object.message_changed(emitter).await;
                }
            }
            SessionChange::Removed(id) => remove_session(&conn, &ctx, &id).await,
        }
        daemon_object::active_sessions_changed(&conn).await;
    }
}

async fn add_session(conn: &Connection, ctx: &Arc<Ctx>, info: bci2token_api::SessionInfo) {
    let path = session_path(&info.id);
    let id = info.id.clone();
    let object = session_object::SessionObject::new(Arc::clone(ctx), info);
    match conn.object_server().at(path.as_str(), object).await {
        Ok(_) => {
            ctx.objects.lock().unwrap().insert(id);
        }
        Err(e) => log::warn!("D-Bus: cannot add {path}: {e}"),
    }
}

async fn remove_session(conn: &Connection, ctx: &Arc<Ctx>, id: &str) {
    ctx.end_subscriptions(Some(id), None);
    ctx.objects.lock().unwrap().remove(id);
    let _ = conn.object_server().remove::<session_object::SessionObject, _>(session_path(id).as_str()).await;
}

/// After missed changes: objects for exactly the sessions the service has.
async fn resync(conn: &Connection, ctx: &Arc<Ctx>) {
    let server = conn.object_server();
    let sessions = ctx.service.all_sessions();
    for info in &sessions {
        let path = session_path(&info.id);
        match server.interface::<_, session_object::SessionObject>(path.as_str()).await {
            Ok(iface) => {
                let object = iface.get().await;
                object.set_state(info.state, info.message.clone());
                let _ = object.state_changed(iface.signal_emitter()).await;
            }
            Err(_) => add_session(conn, ctx, info.clone()).await,
        }
    }
    let known: Vec<String> = ctx.objects.lock().unwrap().iter().cloned().collect();
    for id in known.iter().filter(|id| !sessions.iter().any(|s| &s.id == *id)) {
        remove_session(conn, ctx, id).await;
    }
}

/// A caller that leaves the bus loses its subscriptions and its cached identity (unique names
/// are never reused on a bus, so neither would be of use again).
async fn forget_departed(conn: Connection, ctx: Arc<Ctx>) {
    use bci2token_api::dbus::next;
    let proxy = match zbus::fdo::DBusProxy::new(&conn).await {
        Ok(p) => p,
        Err(e) => {
            log::warn!("D-Bus: cannot watch callers leaving ({e}); subscriptions end with their sessions");
            return;
        }
    };
    let mut gone = match proxy.receive_name_owner_changed().await {
        Ok(s) => s,
        Err(e) => {
            log::warn!("D-Bus: cannot watch callers leaving ({e}); subscriptions end with their sessions");
            return;
        }
    };
    while let Some(signal) = next(&mut gone).await {
        let Ok(args) = signal.args() else { continue };
        if args.new_owner().is_none() && args.name().starts_with(':') {
            let name = args.name().to_string();
            ctx.callers.forget(&name);
            ctx.end_subscriptions(None, Some(&name));
        }
    }
}
