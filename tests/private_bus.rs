//! A private `dbus-daemon` per test, configured as a system bus: Debian's stock policy
//! (/usr/share/dbus-1/system.conf, without what only the real system bus does: its user, pid
//! file, socket, service helper and the other packages' policies) plus the project's own policy
//! file, listening on a fresh `unix:dir=`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use crate::{workspace_root, TempDir};

pub struct PrivateBus {
    child: Option<Child>,
    /// The bus's address (`unix:path=…`): the same after [`PrivateBus::restart`].
    pub address: String,
    pub dir: TempDir,
}

/// `text` without the elements named `tags` (`<t …/>` and `<t …>…</t>`) and comments.
fn without(text: &str, tags: &[&str]) -> String {
    let mut out = text.to_string();
    while let Some(start) = out.find("<!--") {
        let end = out[start..].find("-->").map_or(out.len(), |e| start + e + 3);
        out.replace_range(start..end, "");
    }
    for tag in tags {
        loop {
            let open = [format!("<{tag}>"), format!("<{tag} "), format!("<{tag}/>")];
            let Some(start) = open.iter().filter_map(|o| out.find(o.as_str())).min() else { break };
            let rest = &out[start..];
            let self_closing = rest.find("/>").filter(|&e| rest.find('>') == Some(e + 1));
            let end = match self_closing {
                Some(e) => start + e + 2,
                None => {
                    let close = format!("</{tag}>");
                    start + rest.find(&close).expect("closed element") + close.len()
                }
            };
            out.replace_range(start..end, "");
        }
    }
    out
}

impl PrivateBus {
    /// A system-like bus with the project's policy, its groups `bci2token` and `bci2token-admin`
    /// renamed to `operator_group` and `admin_group` (the tests' own groups).
    pub fn system_like(operator_group: &str, admin_group: &str) -> PrivateBus {
        Self::system_like_with(operator_group, admin_group, &[])
    }

    /// [`Self::system_like`] with other services' bus policies (`/usr/share/dbus-1/system.d/…`).
    pub fn system_like_with(operator_group: &str, admin_group: &str, policies: &[&str]) -> PrivateBus {
        let dir = TempDir::new("bus");
        // Callers of other uids reach the socket in it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let stock = std::fs::read_to_string("/usr/share/dbus-1/system.conf").expect("dbus-daemon's system.conf");
        let stock = without(
            &stock,
            &[
                "user",
                "fork",
                "pidfile",
                "listen",
                "servicehelper",
                "syslog",
                "standard_system_servicedirs",
                "includedir",
                "include",
            ],
        );
        let policy = std::fs::read_to_string(workspace_root().join("systemd/org.bci2token.Daemon1.conf")).unwrap();
        let policy = policy
            .replace("group=\"bci2token-admin\"", &format!("group=\"{admin_group}\""))
            .replace("group=\"bci2token\"", &format!("group=\"{operator_group}\""));
        let policy_file = dir.path().join("org.bci2token.Daemon1.conf");
        std::fs::write(&policy_file, policy).unwrap();
        let config = stock.replace(
            "</busconfig>",
            &format!(
                "  <listen>unix:path={}</listen>\n  <include>{}</include>\n{}</busconfig>",
                dir.path().join("bus_socket").display(),
                policy_file.display(),
                policies.iter().map(|p| format!("  <include>{p}</include>\n")).collect::<String>()
            ),
        );
        let config_file = dir.path().join("bus.conf");
        std::fs::write(&config_file, config).unwrap();
        let address = format!("unix:path={}", dir.path().join("bus_socket").display());
        let mut bus = PrivateBus { child: None, address, dir };
        bus.start();
        bus
    }

    fn start(&mut self) {
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", self.dir.path().join("bus.conf").display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon (Debian: dbus-daemon; tools/setup installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with(&self.address), "dbus-daemon printed {line:?}, not {}", self.address);
        self.child = Some(child);
    }

    /// Ends the bus (every connection to it is lost).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.path().join("bus_socket"));
    }

    /// Starts the bus again at the same address.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn elements_and_comments_are_taken_out() {
        let text = "<a><user>x</user><fork/><!-- c --><listen>unix:</listen><policy/><include ignore_missing=\"yes\">f</include></a>";
        assert_eq!(super::without(text, &["user", "fork", "listen", "include"]), "<a><policy/></a>");
    }
}
