//! Asking polkit whether a caller outside the admin group may do an admin operation (a desktop
//! admin gets the usual password prompt from their polkit agent). Without polkit on the bus, or
//! when it cannot answer, the group rules decide alone. The actions are in
//! systemd/org.bci2token.policy.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::Value;

/// How long an interactive authorization may take (a person typing a password).
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

#[zbus::proxy(
    interface = "org.freedesktop.PolicyKit1.Authority",
    default_service = "org.freedesktop.PolicyKit1",
    default_path = "/org/freedesktop/PolicyKit1/Authority"
)]
trait Authority {
    #[allow(clippy::type_complexity)]
    fn check_authorization(
        &self,
        subject: &(&str, HashMap<&str, Value<'_>>),
        action_id: &str,
        details: HashMap<&str, &str>,
        flags: u32,
        cancellation_id: &str,
    ) -> zbus::Result<(bool, bool, HashMap<String, String>)>;
}

/// True at most once a minute.
fn warn_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    now >= last + 60 && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// `CheckAuthorization` flag: the subject may be asked (through its polkit agent).
const ALLOW_USER_INTERACTION: u32 = 1;

/// True when polkit authorizes `action` for the bus connection `sender`; polkit may ask the
/// person (through their agent) only when the call allowed it (the message's
/// ALLOW_INTERACTIVE_AUTHORIZATION flag, as `busctl --allow-interactive-authorization` sets).
pub async fn authorizes(conn: &zbus::Connection, sender: &str, action: &str, interactive: bool) -> bool {
    let ask = async {
        // Only polkitd (or root) may answer: on the system bus only they may own the name, but the
        // daemon may have been pointed at another bus through DBUS_SYSTEM_BUS_ADDRESS.
        // polkitd is started by bus activation, on first use: until then its name has no owner.
        let polkit = zbus::names::WellKnownName::try_from("org.freedesktop.PolicyKit1")?;
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let owner = match dbus.get_connection_unix_user(polkit.clone().into()).await {
            Err(zbus::fdo::Error::NameHasNoOwner(_)) => {
                dbus.start_service_by_name(polkit.clone(), 0).await?;
                dbus.get_connection_unix_user(polkit.into()).await?
            }
            other => other?,
        };
        let trusted = owner == 0
            || tokio::task::spawn_blocking(move || {
                nix::unistd::User::from_uid(owner.into()).ok().flatten().is_some_and(|u| u.name == "polkitd")
            })
            .await
            .unwrap_or(false);
        if !trusted {
            return Err(zbus::Error::Failure(format!(
                "org.freedesktop.PolicyKit1 is owned by uid {owner}, not polkitd"
            )));
        }
        let authority = AuthorityProxy::new(conn).await?;
        let subject = ("system-bus-name", HashMap::from([("name", Value::from(sender))]));
        let flags = if interactive { ALLOW_USER_INTERACTION } else { 0 };
        authority.check_authorization(&subject, action, HashMap::new(), flags, "").await
    };
    match tokio::time::timeout(ANSWER_WITHIN, ask).await {
        Ok(Ok((authorized, _challenge, _))) => authorized,
        Ok(Err(e)) => {
            // Anyone may make the daemon ask (by calling an admin method): warned once a minute.
            if warn_now() {
                log::warn!("polkit could not decide {action} for {sender} ({e}); the group rules decide");
            } else {
                log::debug!("polkit could not decide {action} for {sender} ({e})");
            }
            false
        }
        Err(_) => {
            log::warn!("polkit gave no answer within {ANSWER_WITHIN:?} for {action} of {sender}; refused");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::Role;
    use crate::service::Op;

    #[test]
    fn every_admin_operation_has_an_action_in_the_policy_file_and_no_other() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/org.bci2token.policy");
        let policy = std::fs::read_to_string(file).unwrap();
        let declared: Vec<&str> =
            policy.split("<action id=\"").skip(1).map(|rest| rest.split('"').next().unwrap()).collect();
        for op in Op::ALL {
            match op.polkit_action() {
                Some(action) => {
                    assert_eq!(op.role(), Role::Admin, "{op:?}");
                    assert!(declared.contains(&action), "{action} ({op:?}) is not in {file}");
                }
                None => assert!(op.role() < Role::Admin, "admin operation {op:?} has no polkit action"),
            }
        }
        for action in declared {
            assert!(Op::ALL.iter().any(|op| op.polkit_action() == Some(action)), "{action} is used by no operation");
        }
    }

    /// polkit answers a CheckAuthorization about another's call only to root or to the action's
    /// owner; the daemon runs as bci2token (its unit's User=), so each action must name it.
    #[test]
    fn every_action_is_owned_by_the_daemons_user() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/org.bci2token.policy");
        let policy = std::fs::read_to_string(file).unwrap();
        for action in policy.split("<action id=").skip(1) {
            let action = &action[..action.find("</action>").unwrap()];
            assert!(
                action.contains(r#"<annotate key="org.freedesktop.policykit.owner">unix-user:bci2token</annotate>"#),
                "{action}"
            );
        }
    }
}
