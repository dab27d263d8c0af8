//! Who may do what. Roles: `admin` (root and members of the admin group) may do everything;
//! `operator` (members of the socket group) may start, follow and stop sessions; anyone else who
//! can reach the socket may read the status only. In `--user` mode the daemon's own user is admin.

use bci2token_api::Caller;
use nix::unistd::{Gid, Group, Uid, User};

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

/// True if the user `uid` (primary group `gid`) belongs to the group named `group`.
fn in_group(uid: u32, gid: u32, group: &str) -> bool {
    let Ok(Some(g)) = Group::from_name(group) else { return false };
    if g.gid == Gid::from_raw(gid) {
        return true;
    }
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else { return false };
    g.mem.contains(&user.name)
}

pub fn role_of(caller: &Caller, mode: Mode, admin_group: &str, operator_group: &str) -> Role {
    if caller.uid == 0 {
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
            if in_group(caller.uid, caller.gid, admin_group) {
                Role::Admin
            } else if in_group(caller.uid, caller.gid, operator_group) {
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
        let root = Caller { uid: 0, gid: 0, pid: None };
        assert_eq!(role_of(&root, Mode::System, "bci2token-admin", "bci2token"), Role::Admin);
        let me = Caller { uid: Uid::current().as_raw(), gid: Gid::current().as_raw(), pid: None };
        assert_eq!(role_of(&me, Mode::User, "x", "y"), Role::Admin);
        let stranger = Caller { uid: 65_533, gid: 65_533, pid: None };
        if Uid::current().as_raw() != 65_533 {
            assert_eq!(role_of(&stranger, Mode::User, "x", "y"), Role::Reader);
            assert_eq!(role_of(&stranger, Mode::System, "no-such-group-a", "no-such-group-b"), Role::Reader);
        }
    }
}
