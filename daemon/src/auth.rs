//! Who may do what. Roles: `admin` (root and members of the admin group) may do everything;
//! `operator` (members of the socket group) may start, follow and stop sessions; anyone else who
//! can reach the socket may read the status only. In `--user` mode the daemon's own user is admin.
//! Group membership is what the kernel reported for the caller's process (its primary and
//! supplementary groups when it connected), not the group database: a user added to a group
//! gains the role with their next login, as with file permissions. Over D-Bus, a caller outside
//! the admin group may be an admin for one call when polkit authorizes that operation's action
//! (`Caller::admin_by_polkit`, set by the bus door only).

use bci2token_api::Caller;
use nix::unistd::{Group, Uid};

use crate::config::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// True if the caller's process belongs to the group named `group`.
fn in_group(caller: &Caller, group: &str) -> bool {
    let Ok(Some(g)) = Group::from_name(group) else { return false };
    caller.in_group(g.gid.as_raw())
}

pub fn role_of(caller: &Caller, mode: Mode, admin_group: &str, operator_group: &str) -> Role {
    if caller.uid == 0 || caller.admin_by_polkit {
        return Role::Admin;
    }
    match mode {
        Mode::User => {
            if caller.uid == Uid::current().as_raw() {
                Role::Admin
            } else {
                Role::Reader
            }
        }
        Mode::System => {
            if in_group(caller, admin_group) {
                Role::Admin
            } else if in_group(caller, operator_group) {
                Role::Operator
            } else {
                Role::Reader
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_admin_and_strangers_read_only() {
        let root = Caller { uid: 0, gid: 0, pid: None, groups: vec![], admin_by_polkit: false };
        assert_eq!(role_of(&root, Mode::System, "bci2token-admin", "bci2token"), Role::Admin);
        let me = Caller {
            uid: Uid::current().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pid: None,
            groups: vec![],
            admin_by_polkit: false,
        };
        assert_eq!(role_of(&me, Mode::User, "x", "y"), Role::Admin);
        let stranger = Caller { uid: 65_533, gid: 65_533, pid: None, groups: vec![], admin_by_polkit: false };
        if Uid::current().as_raw() != 65_533 {
            assert_eq!(role_of(&stranger, Mode::User, "x", "y"), Role::Reader);
            assert_eq!(role_of(&stranger, Mode::System, "no-such-group-a", "no-such-group-b"), Role::Reader);
        }
        // A supplementary group counts; the group database's member list does not matter.
        if let Ok(Some(g)) = Group::from_name("root") {
            let member =
                Caller { uid: 65_533, gid: 65_533, pid: None, groups: vec![g.gid.as_raw()], admin_by_polkit: false };
            assert_eq!(role_of(&member, Mode::System, "root", "no-such-group"), Role::Admin);
            assert_eq!(role_of(&member, Mode::System, "no-such-group", "root"), Role::Operator);
        }
    }
}
