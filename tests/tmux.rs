//! A terminal for the tests of terminal programs: a detached tmux session on a tmux server of its
//! own (`-L`), with a shell whose prompt is [`PROMPT`]; the test types into it and reads the screen.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The prompt of the shell in the pane.
pub const PROMPT: &str = "b2t-test$ ";

/// A detached tmux session on a server of its own, killed on drop.
pub struct Tmux {
    server: String,
    target: String,
}

impl Tmux {
    pub fn start(tag: &str, width: u16, height: u16) -> Tmux {
        let server = format!("bci2token-{tag}-{}", std::process::id());
        let tmux = Tmux { server, target: tag.to_string() };
        let (w, h) = (width.to_string(), height.to_string());
        let shell = format!("env PS1='{PROMPT}' bash --norc --noprofile");
        tmux.run(&["new-session", "-d", "-s", tag, "-x", &w, "-y", &h, &shell]);
        tmux
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("tmux");
        // -u: the panes' text is UTF-8 (µ, box drawing, braille) whatever the locale here.
        cmd.args(["-u", "-L", &self.server]).args(args).env("LC_ALL", "C.UTF-8").env_remove("TMUX");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap_or_else(|e| panic!("tmux (is it installed? tools/setup): {e}"));
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Keys by tmux's names (`Tab`, `C-c`, `Enter`, `q`).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.target];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `line` literally and presses Enter.
    pub fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", &self.target, "-l", line]);
        self.keys(&["Enter"]);
    }

    pub fn screen(&self) -> String {
        String::from_utf8(self.run(&["capture-pane", "-p", "-t", &self.target]).stdout).unwrap()
    }

    pub fn display(&self, format: &str) -> String {
        String::from_utf8(self.run(&["display-message", "-p", "-t", &self.target, format]).stdout)
            .unwrap()
            .trim()
            .to_string()
    }

    /// Polls the screen until `ok` holds; panics after `timeout` with `what` and the last screen.
    pub fn wait(&self, what: &str, timeout: Duration, mut ok: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command(&["kill-server"]).output();
    }
}
