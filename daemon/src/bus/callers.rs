//! Who sent a message: the bus daemon vouches for the sender's uid and pid (and, from dbus 1.15,
//! its groups) through `GetConnectionCredentials`. When the bus does not report the groups, they
//! are the user's groups in the group database (`getgrouplist`), which differs from the socket's
//! `SO_PEERGROUPS` only for a process that changed its groups after login (docs/dbus.md).

use std::collections::HashMap;
use std::sync::Mutex;

use bci2token_api::Caller;
use zbus::Connection;

use super::error::BusError;

/// Identities kept (unique names are never reused on a bus, so an entry never goes stale; the
/// cache is emptied when full and entries go when their connection leaves).
const CACHED_CALLERS: usize = 4096;

pub struct Callers {
    conn: Connection,
    cache: Mutex<HashMap<String, Caller>>,
}

impl Callers {
    pub fn new(conn: Connection) -> Self {
        Callers { conn, cache: Mutex::new(HashMap::new()) }
    }

    /// The caller behind a message's sender.
    pub async fn of(&self, header: &zbus::message::Header<'_>) -> Result<Caller, BusError> {
        let sender = header
            .sender()
            .ok_or_else(|| BusError::PermissionDenied("a message without a sender is not served".into()))?
            .to_string();
        if let Some(c) = self.cache.lock().unwrap().get(&sender) {
            return Ok(c.clone());
        }
        let proxy = zbus::fdo::DBusProxy::new(&self.conn).await?;
        let name = zbus::names::BusName::try_from(sender.as_str()).map_err(|e| BusError::ZBus(e.into()))?;
        let creds = proxy.get_connection_credentials(name).await.map_err(|e| {
            BusError::PermissionDenied(format!("the bus does not say who {sender} is ({e}); nothing is served"))
        })?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| BusError::PermissionDenied(format!("the bus reports no uid for {sender}")))?;
        let pid = creds.process_id().and_then(|p| i32::try_from(p).ok());
        let bus_groups = creds.into_unix_group_ids();
        // Users and groups come from NSS, which may ask a directory service: off the runtime.
        let caller = tokio::task::spawn_blocking(move || identity(uid, pid, bus_groups))
            .await
            .map_err(|e| BusError::Internal(format!("looking up uid {uid}: {e}")))?;
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHED_CALLERS {
            cache.clear();
        }
        cache.insert(sender, caller.clone());
        Ok(caller)
    }

    pub fn forget(&self, unique_name: &str) {
        self.cache.lock().unwrap().remove(unique_name);
    }
}

/// The caller's primary group from the user database, and its groups from the bus or, when the
/// bus does not report them, from the group database.
fn identity(uid: u32, pid: Option<i32>, bus_groups: Option<Vec<u32>>) -> Caller {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten();
    let gid = user.as_ref().map_or(u32::MAX, |u| u.gid.as_raw());
    let groups = match (bus_groups, &user) {
        (Some(g), _) => g,
        (None, Some(u)) => {
            let name = std::ffi::CString::new(u.name.as_bytes()).unwrap_or_default();
            nix::unistd::getgrouplist(&name, u.gid)
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default()
        }
        (None, None) => Vec::new(),
    };
    Caller { uid, gid, pid, groups, admin_by_polkit: false }
}
