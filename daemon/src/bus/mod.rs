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
use zbus::Connection;

use crate::auth::Role;
use crate::config::Bus;
use crate::control::{Door, Standing};
use crate::service::Service;
use crate::session::SessionChange;

pub use error::BusError;

/// Subscriptions to sessions' signals most one session may have.
const MAX_SUBSCRIBERS_PER_SESSION: usize = 64;

/// What every object of the door shares.
pub struct Ctx {
    pub service: Arc<Service>,
    conn: Connection,
    door: Arc<Door>,
    callers: callers::Callers,
    /// Sessions with an object.
    objects: Mutex<HashSet<String>>,
    /// The forwarding task of each (session, subscriber's unique name).
    subscriptions: Mutex<HashMap<(String, String), tokio::task::AbortHandle>>,
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
        Ok(self.admit(header).await?.0)
    }

    /// [`Self::admitted`] and its role.
    async fn admit(&self, header: &zbus::message::Header<'_>) -> Result<(Caller, Role), BusError> {
        let caller = self.callers.of(header).await?;
        // As at the socket: a uid whose passed descriptors cannot be closed sends no more.
        let stuck = crate::closer::pending(caller.uid);
        if stuck > crate::closer::MAX_PENDING_CLOSES {
            return Err(BusError::TooManyConnections(format!(
                "{stuck} descriptors uid {} passed earlier are still being closed; try again later",
                caller.uid
            )));
        }
        let door = Arc::clone(&self.door);
        // The role needs group lookups (NSS): off the runtime, as the operation itself.
        Ok(self
            .service
            .call(move |s| {
                let limits = s.limits();
                let role = s.role(&caller);
                let standing: Standing = s.standing(&caller);
                if let Err(wait) = door.take_request(caller.uid, standing, &limits) {
                    let error = ApiError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "uid {} sends requests faster than requests_per_second = {} (burst {}); retry in {wait:.2} s",
                            caller.uid, limits.requests_per_second, limits.request_burst
                        ),
                    );
                    s.audit_refusal(&caller, "request", "", &error.message);
                    return Err(error);
                }
                Ok((caller, role))
            })
            .await?)
    }

    /// The admitted caller of an admin operation `op`: outside the admin group, polkit is asked
    /// for the operation's action, and a yes makes the caller an admin for this one call.
    pub async fn admitted_admin(
        &self,
        header: &zbus::message::Header<'_>,
        op: crate::service::Op,
    ) -> Result<Caller, BusError> {
        let (mut caller, role) = self.admit(header).await?;
        let Some(action) = op.polkit_action() else { return Ok(caller) };
        if role < Role::Admin {
            let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
            let interactive = header.primary().flags().contains(zbus::message::Flags::AllowInteractiveAuth);
            if polkit::authorizes(&self.conn, &sender, action, interactive).await {
                log::info!("polkit authorized {action} for uid {} ({sender})", caller.uid);
                caller.admin_by_polkit = true;
            }
        }
        Ok(caller)
    }

    /// Refuses a new subscriber beyond [`MAX_SUBSCRIBERS_PER_SESSION`] (one that re-subscribes
    /// replaces its own subscription and needs no room).
    fn subscription_room(&self, id: &str, sender: &str) -> Result<(), BusError> {
        let mut subs = self.subscriptions.lock().unwrap();
        subs.retain(|_, t| !t.is_finished());
        let mine = subs.contains_key(&(id.to_string(), sender.to_string()));
        if !mine && subs.keys().filter(|(s, _)| s == id).count() >= MAX_SUBSCRIBERS_PER_SESSION {
            return Err(BusError::LimitReached(format!(
                "session `{id}` has {MAX_SUBSCRIBERS_PER_SESSION} subscribers already; unsubscribe one first"
            )));
        }
        Ok(())
    }

    /// Records a subscriber's forwarding task, ending an earlier one of the same subscriber.
    fn add_subscription(&self, id: &str, sender: &str, task: tokio::task::AbortHandle) {
        let mut subs = self.subscriptions.lock().unwrap();
        if let Some(old) = subs.insert((id.to_string(), sender.to_string()), task) {
            old.abort();
        }
    }

    /// Ends subscriptions: of `sender` to `id`, of `sender` to every session (`id` None), or of
    /// everyone to `id` (`sender` None). Returns how many ended.
    fn end_subscriptions(&self, id: Option<&str>, sender: Option<&str>) -> usize {
        let mut subs = self.subscriptions.lock().unwrap();
        let before = subs.len();
        subs.retain(|(s, who), task| {
            let hit = id.is_none_or(|i| i == s) && sender.is_none_or(|w| w == who);
            if hit {
                task.abort();
            }
            !hit
        });
        before - subs.len()
    }
}

/// Connects to the bus `bus` names, takes the well-known name and serves the objects. `None`
/// (logged) when there is no bus or the name cannot be had: the daemon goes on with its socket.
pub async fn start(service: Arc<Service>, door: Arc<Door>, bus: &Bus) -> Option<Connection> {
    let builder = match bus {
        Bus::None => {
            log::info!("D-Bus: off (bus = \"none\"); the control socket is the only door");
            return None;
        }
        Bus::System => zbus::connection::Builder::system(),
        Bus::Session => zbus::connection::Builder::session(),
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
    };
    let shown = match bus {
        Bus::Address(a) => a.clone(),
        Bus::System => "the system bus".into(),
        _ => "the session bus".into(),
    };
    let conn = match builder.and_then(|b| b.name(BUS_NAME)).map(|b| b.build()) {
        Ok(fut) => fut.await,
        Err(e) => Err(e),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            log::warn!("D-Bus: cannot offer {BUS_NAME} on {shown} ({e}); running with the control socket only");
            return None;
        }
    };
    let ctx = Arc::new(Ctx {
        service: Arc::clone(&service),
        conn: conn.clone(),
        door,
        callers: callers::Callers::new(conn.clone()),
        objects: Mutex::new(HashSet::new()),
        subscriptions: Mutex::new(HashMap::new()),
    });
    let server = conn.object_server();
    let served = async {
        server.at(DAEMON_PATH, zbus::fdo::ObjectManager).await?;
        server.at(DAEMON_PATH, daemon_object::DaemonObject::new(Arc::clone(&ctx))).await?;
        Ok::<_, zbus::Error>(())
    };
    if let Err(e) = served.await {
        log::error!("D-Bus: cannot serve {DAEMON_PATH}: {e}; running with the control socket only");
        return None;
    }
    tokio::spawn(follow_sessions(conn.clone(), Arc::clone(&ctx)));
    tokio::spawn(forget_departed(conn.clone(), Arc::clone(&ctx)));
    log::info!("D-Bus: {BUS_NAME} on {shown}");
    Some(conn)
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
                    iface.get_mut().await.set_state(state, message);
                    let emitter = iface.signal_emitter();
                    let _ = iface.get().await.state_changed(emitter).await;
                    let _ = iface.get().await.message_changed(emitter).await;
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
                iface.get_mut().await.set_state(info.state, info.message.clone());
                let _ = iface.get().await.state_changed(iface.signal_emitter()).await;
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
