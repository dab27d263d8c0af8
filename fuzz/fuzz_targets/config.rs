//! Arbitrary bytes as the daemon's config file (UTF-8 text; anything after a NUL byte is the
//! environment, one `NAME=VALUE` a line, e.g. `BCI2TOKEN_MAX_SESSIONS=4`; with `HOME` set the
//! `--user` daemon's configuration), parsed by the daemon's own parser. An error says something;
//! a config that parses holds what its keys promise and parses again the same.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use bci2token_config::{Config, Mode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, vars) = text.split_once('\0').unwrap_or((text, ""));
    let vars: HashMap<&str, &str> = vars.lines().filter_map(|l| l.split_once('=')).collect();
    let env = |k: &str| vars.get(k).map(|v| v.to_string());
    let mode = if vars.contains_key("HOME") { Mode::User } else { Mode::System };
    let path = Path::new("/etc/bci2token/bci2tokend.toml");
    let cfg = match Config::parse(mode, path, file, &env) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(cfg.file.as_deref(), Some(path));
    assert!((1..=1024).contains(&cfg.max_sessions) && (1..=1024).contains(&cfg.max_sessions_per_uid));
    assert!((0.0..=86_400.0).contains(&cfg.session_timeout));
    assert!((0.1..=60.0).contains(&cfg.stats_interval));
    assert!(cfg.line_frequency == 50.0 || cfg.line_frequency == 60.0);
    assert!([0o600, 0o660, 0o666].contains(&cfg.socket_mode));
    assert!((1.0..=3600.0).contains(&cfg.driver_hang_timeout));
    assert!((0.05..=3600.0).contains(&cfg.request_timeout) && (1.0..=86_400.0).contains(&cfg.idle_timeout));
    assert!(cfg.requests_per_second > 0.0 && cfg.requests_per_second <= 1e6);
    assert!(cfg.request_burst >= 1.0 && cfg.request_burst <= 1e6);
    assert!(cfg.dp_epsilon_budget > 0.0 && cfg.dp_epsilon_budget <= 100.0);
    assert!(cfg.dp_delta_budget > 0.0 && cfg.dp_delta_budget <= 100.0);
    assert!((0.0..=36_500.0).contains(&cfg.retention_days));
    assert!(cfg.data_dir.is_absolute() && cfg.runtime_dir.is_absolute());
    assert!(cfg.lsl_library.as_deref().is_none_or(Path::is_absolute));
    assert!(cfg.driver_path.iter().chain(&cfg.model_path).all(|p| p.is_absolute()));
    for settings in cfg.driver_settings.values() {
        assert!(settings.values().all(|v| !(v.is_null() || v.is_array() || v.is_object())));
    }
    let again = Config::parse(mode, path, file, &env).expect("a config that parsed parses again");
    assert_eq!(again, cfg);
});
