//! The system files as shipped (systemd/, packaging/): systemd's own tools check the units, score
//! their sandbox, and apply the sysusers and tmpfiles snippets to a scratch root; the commented
//! configuration file, uncommented, is what the daemon accepts. (Booting them is the installed
//! test's: packaging/test-installed.)

use std::path::Path;
use std::process::{Command, Stdio};

use bci2token_tests::{bin_dir, workspace_root, TempDir};

/// Every unit of systemd/, with `/usr/bin/…` pointing at this build's programs (the units name
/// the installed paths), in a scratch directory.
fn units_here(tmp: &TempDir) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".service") || name.ends_with(".timer")) || name.starts_with("org.") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap().replace("/usr/bin/", &format!("{}/", bin_dir().display()));
        let copy = tmp.path().join(&name);
        std::fs::write(&copy, text).unwrap();
        out.push(copy);
    }
    out.sort();
    out
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze (Debian: systemd; tools/setup installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn systemd_analyze_verify_finds_nothing_in_any_unit() {
    let tmp = TempDir::new("units");
    let units = units_here(&tmp);
    let names: Vec<String> = units.iter().map(|u| u.file_name().unwrap().to_string_lossy().to_string()).collect();
    for expected in ["bci2tokend.service", "bci2token-backup.service", "bci2token-backup.timer"] {
        assert!(names.iter().any(|n| n == expected), "{expected} in systemd/: {names:?}");
    }
    for unit in &units {
        let (ok, text) = analyze(&["verify", "--man=no"], unit);
        assert!(ok && text.trim().is_empty(), "systemd-analyze verify {}:\n{text}", unit.display());
    }
}

/// `systemd-analyze security --offline=yes`: the daemon's sandbox scores at most 2.0 (lower is
/// safer), and so does the backup job's.
#[test]
fn the_sandboxes_score_at_most_2() {
    let tmp = TempDir::new("units-security");
    for unit in units_here(&tmp).iter().filter(|u| u.extension().is_some_and(|e| e == "service")) {
        let (_, text) = analyze(&["security", "--offline=yes"], unit);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
        eprintln!("{}: exposure {score}", unit.display());
        assert!(score <= 2.0, "{}: exposure {score} > 2.0\n{text}", unit.display());
    }
}

/// The sysusers snippet makes the daemon's user (in dialout) and both groups; the tmpfiles
/// snippet makes root's 0700 backup directory. Applied to a scratch root, not the machine.
#[test]
fn sysusers_and_tmpfiles_make_the_users_groups_and_directories() {
    let root = TempDir::new("sysroot");
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    for f in ["passwd", "group"] {
        std::fs::write(root.path().join("etc").join(f), std::fs::read(Path::new("/etc").join(f)).unwrap()).unwrap();
    }
    let apply = |tool: &str, file: &str, extra: &[&str]| {
        let out = Command::new(tool)
            .arg(format!("--root={}", root.path().display()))
            .args(extra)
            .arg("-")
            .stdin(std::fs::File::open(workspace_root().join("systemd").join(file)).unwrap())
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(out.status.success(), "{tool} {file}: {}", String::from_utf8_lossy(&out.stderr));
    };
    apply("systemd-sysusers", "bci2token.sysusers", &[]);
    apply("systemd-tmpfiles", "bci2token.tmpfiles", &["--create"]);
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    let user = passwd.lines().find(|l| l.starts_with("bci2token:")).expect("the daemon's user");
    assert!(user.ends_with(":/var/lib/bci2token:/usr/sbin/nologin"), "{user}");
    assert!(group.lines().any(|l| l.starts_with("bci2token:")), "{group}");
    assert!(group.lines().any(|l| l.starts_with("bci2token-admin:")), "{group}");
    let dialout = group.lines().find(|l| l.starts_with("dialout:")).unwrap();
    assert!(dialout.rsplit(':').next().unwrap().split(',').any(|m| m == "bci2token"), "{dialout}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let backups = std::fs::metadata(root.path().join("var/backups/bci2token")).unwrap();
    assert_eq!(backups.permissions().mode() & 0o7777, 0o700);
    assert_eq!(backups.uid(), 0);
}

/// /etc/bci2token/bci2tokend.toml ships every key commented out at its default: uncommented, the
/// daemon accepts it.
#[test]
fn the_commented_configuration_uncommented_is_accepted() {
    let text = std::fs::read_to_string(workspace_root().join("packaging/bci2tokend.toml")).unwrap();
    let keys = text.lines().filter(|l| l.starts_with('#') && l[1..].contains(" = ")).count();
    assert!(keys >= 25, "the file shows the keys ({keys})");
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with('[') || rest.split(" = ").next().is_some_and(is_key) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let tmp = TempDir::new("config");
    let file = tmp.path().join("bci2tokend.toml");
    std::fs::write(&file, uncommented).unwrap();
    let out = Command::new(bin_dir().join("bci2tokend"))
        .args(["--user", "--check", "--config"])
        .arg(&file)
        .env("BCI2TOKEN_DRIVER_PATH", bin_dir())
        .env("XDG_DATA_HOME", tmp.path())
        .env("XDG_RUNTIME_DIR", tmp.path())
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("configuration OK"), "{said}");
}

fn is_key(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The man pages packaging/build installs come from the command lines themselves: one per
/// subcommand, each naming its options, rendered by man without a warning; the completions name
/// every subcommand.
#[test]
fn man_pages_and_completions_cover_every_subcommand() {
    let tmp = TempDir::new("man-pages");
    let ctl = bin_dir().join("bci2tokenctl");
    let made = Command::new(&ctl).arg("man-pages").arg(tmp.path()).status().unwrap();
    assert!(made.success());
    let help = Command::new(&ctl).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    // The subcommands as --help lists them (two-space indent, then the name).
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subcommands.len() >= 10, "{subcommands:?}");
    let bash = Command::new(&ctl).args(["completions", "bash"]).output().unwrap();
    let bash = String::from_utf8(bash.stdout).unwrap();
    for sub in &subcommands {
        let page = tmp.path().join(format!("bci2tokenctl-{sub}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".SH NAME"), "{}", page.display());
        assert!(bash.contains(&format!("bci2tokenctl__subcmd__{sub}")), "bash completion lacks {sub}");
    }
    let start = std::fs::read_to_string(tmp.path().join("bci2tokenctl-session-start.1")).unwrap();
    assert!(start.contains("\\-\\-driver") && start.contains("\\-\\-model"), "{start}");
    let daemon = Command::new(bin_dir().join("bci2tokend")).arg("--man-page").output().unwrap();
    let daemon = String::from_utf8(daemon.stdout).unwrap();
    assert!(daemon.contains(".TH bci2tokend 8") && daemon.contains("\\-\\-config"), "{daemon}");
    // groff's own warnings, through preconv as man renders them (lintian's groff-message).
    std::fs::write(tmp.path().join("bci2tokend.8"), &daemon).unwrap();
    for page in ["bci2tokend.8", "bci2tokenctl.1", "bci2tokenctl-session-start.1", "bci2tokenctl-evaluate.1"] {
        let out = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(tmp.path().join(page))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{page}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
