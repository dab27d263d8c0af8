//! The Prometheus alert rules as shipped (packaging/prometheus/): promtool accepts the rules file,
//! its unit tests (bci2token-alerts.test.yml: each alert firing with its labels and annotations,
//! and not firing on healthy series or conditions shorter than their `for`) pass, every alert
//! docs/monitoring.md promises is there with a severity, a summary and a description and has
//! tests, and the example scrape configuration is valid and loads the rules. promtool comes with
//! Debian's prometheus package (tools/setup installs it); nothing here listens on a port.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bci2token_tests::{workspace_root, TempDir};

/// Every alert the rules file must define. A deleted or renamed alert fails
/// `every_alert_is_defined_with_severity_and_annotations`.
const ALERTS: &[&str] = &[
    "BCI2TokenDown",
    "BCI2TokenMemoryHigh",
    "BCI2TokenDecoderFailing",
    "BCI2TokenBreakerOpen",
    "BCI2TokenDecodeLatencyHigh",
    "BCI2TokenWindowsDropped",
    "BCI2TokenEventsDropped",
    "BCI2TokenStoreDropped",
    "BCI2TokenDeviceDisconnected",
    "BCI2TokenBadElectrode",
    "BCI2TokenDiskLow",
    "BCI2TokenDiskFillingUp",
    "BCI2TokenBackupOld",
    "BCI2TokenPrivacyBudgetNearlySpent",
];

fn dir() -> PathBuf {
    workspace_root().join("packaging/prometheus")
}

/// Runs promtool with `args` in `cwd`: (success, stdout and stderr). Fails the test, saying what
/// to do, when promtool is not installed.
fn promtool(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = match Command::new("promtool").args(args).current_dir(cwd).stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: run tools/setup (as root), which installs Debian's prometheus \
             package with /usr/bin/promtool; these tests check the alert rules with it"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn promtool_check_rules_accepts_the_rules_file() {
    let (ok, text) = promtool(&["check", "rules", "bci2token-alerts.yml"], &dir());
    assert!(ok, "promtool check rules packaging/prometheus/bci2token-alerts.yml failed:\n{text}");
    let want = format!("SUCCESS: {} rules found", ALERTS.len());
    assert!(text.contains(&want), "expected `{want}` (one rule per alert, no recording rules):\n{text}");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let (ok, text) = promtool(&["test", "rules", "bci2token-alerts.test.yml"], &dir());
    assert!(ok, "promtool test rules packaging/prometheus/bci2token-alerts.test.yml failed:\n{text}");
    assert!(text.contains("SUCCESS"), "promtool test rules said no SUCCESS:\n{text}");
}

/// The rules file's alerts, each with the text of its entry (up to the next `- alert:`).
fn alerts_in(rules: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in rules.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn every_alert_is_defined_with_severity_and_annotations() {
    let rules = std::fs::read_to_string(dir().join("bci2token-alerts.yml")).unwrap();
    assert!(rules.contains("- name: bci2token"), "the rules' group is named bci2token");
    let alerts = alerts_in(&rules);
    let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    for want in ALERTS {
        assert!(
            names.contains(want),
            "alert {want} is missing from packaging/prometheus/bci2token-alerts.yml: {names:?}"
        );
    }
    for (name, body) in &alerts {
        assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "alert {name} is defined more than once");
        assert!(ALERTS.contains(&name.as_str()), "alert {name} is not in this test's list (add it, with its tests)");
        assert!(
            body.contains("severity: critical") || body.contains("severity: warning"),
            "alert {name} has no severity label critical or warning:\n{body}"
        );
        for key in ["summary:", "description:"] {
            assert!(body.contains(key), "alert {name} has no {key} annotation:\n{body}");
        }
    }
}

/// Every alert has unit tests where it fires (a non-empty `exp_alerts`) and where it must not
/// (an empty one), so that an alert added without tests fails here.
#[test]
fn every_alert_has_firing_and_quiet_test_cases() {
    let tests = std::fs::read_to_string(dir().join("bci2token-alerts.test.yml")).unwrap();
    // Each test case: its alertname and whether it expects alerts.
    let mut cases: Vec<(String, bool)> = Vec::new();
    let lines: Vec<&str> = tests.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find("alertname:") else { continue };
        let rest = &line[at + "alertname:".len()..];
        let name: String = rest.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        let quiet = if line.contains("exp_alerts: []") {
            true
        } else {
            let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
            match next {
                "exp_alerts: []" => true,
                "exp_alerts:" => false,
                other => panic!("the test case of {name} at line {} has no exp_alerts after it: {other:?}", i + 1),
            }
        };
        cases.push((name, quiet));
    }
    for want in ALERTS {
        let fires = cases.iter().any(|(n, quiet)| n == want && !quiet);
        let quiet = cases.iter().any(|(n, quiet)| n == want && *quiet);
        assert!(fires, "bci2token-alerts.test.yml has no case where {want} fires");
        assert!(quiet, "bci2token-alerts.test.yml has no case where {want} must not fire");
    }
}

/// packaging/prometheus/prometheus.yml.example, with its rules path pointed at this tree's file,
/// is a valid configuration that scrapes job bci2token on the default listener and loads the rules.
#[test]
fn the_example_prometheus_config_is_valid() {
    let example = std::fs::read_to_string(dir().join("prometheus.yml.example")).unwrap();
    let installed = "/etc/prometheus/rules/bci2token-alerts.yml";
    assert!(example.contains(installed), "the example loads the rules from {installed}");
    for want in ["job_name: bci2token", "127.0.0.1:9464", "metrics_listen"] {
        assert!(example.contains(want), "the example names {want}");
    }
    let tmp = TempDir::new("prometheus-config");
    let here = dir().join("bci2token-alerts.yml");
    std::fs::write(tmp.path().join("prometheus.yml"), example.replace(installed, &here.to_string_lossy())).unwrap();
    let (ok, text) = promtool(&["check", "config", "prometheus.yml"], tmp.path());
    assert!(ok, "promtool check config of prometheus.yml.example failed:\n{text}");
    assert!(text.contains("SUCCESS: 1 rule files found"), "the example loads the rules file:\n{text}");
}
