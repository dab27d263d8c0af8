//! bci2tokend: acquires EEG through driver plugins, processes it and publishes events to clients.

mod auth;
mod breaker;
mod bus;
mod caller_files;
mod closer;
mod control;
mod decoding;
mod driver_host;
mod export;
mod hub;
mod live_quality;
mod logging;
mod lsl_outlets;
mod metrics;
mod metrics_http;
mod notify;
mod observe;
mod plugins;
mod private_release;
mod recorder;
mod service;
mod session;
mod token_bucket;
mod training;
mod wall_clock;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

// The configuration lives in a crate of its own (no libtorch, so that it can be fuzzed).
use bci2token_config as config;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, Mode};
use crate::plugins::Registry;
use crate::service::Service;

/// Exit status for configuration errors (sysexits EX_CONFIG), so a unit can refuse to restart on it.
const EXIT_CONFIG: u8 = 78;

/// The bci2token daemon: EEG in, events and tokens out.
#[derive(Parser, Debug)]
#[command(name = "bci2tokend", version, about, long_about = None, after_help = "\
Configuration: /etc/bci2token/bci2tokend.toml (system) or $XDG_CONFIG_HOME/bci2token/bci2tokend.toml (--user).
Every key can be overridden by BCI2TOKEN_<KEY> in the environment, e.g. BCI2TOKEN_DATA_DIR,
BCI2TOKEN_RUNTIME_DIR, BCI2TOKEN_DRIVER_PATH (colon-separated), BCI2TOKEN_LOG_LEVEL, BCI2TOKEN_MAX_SESSIONS.
Signals: SIGTERM/SIGINT stop all sessions and exit 0; SIGHUP reloads the configuration.
See also: bci2tokenctl(1), bci2tokend.toml(5), bci2token-ipc(7), bci2token-dbus(7).")]
struct Args {
    /// Configuration file (default: the mode's standard location, if it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run as the calling user with XDG directories (no root needed).
    #[arg(long)]
    user: bool,
    /// Check the configuration and the driver plugins, print what was found, and exit.
    #[arg(long)]
    check: bool,
    /// The D-Bus bus to offer the API on: `system`, `session`, `none` or an address
    /// (default: the `bus` key; the system bus, or the session bus with --user).
    #[arg(long, value_name = "BUS")]
    bus: Option<String>,
    /// Print the man page, bci2tokend(8), and exit (for packagers).
    #[arg(long, hide = true)]
    man_page: bool,
}

fn load_config(args: &Args) -> Result<Config, config::ConfigError> {
    let mode = if args.user { Mode::User } else { Mode::System };
    let bus = args.bus.clone();
    Config::load(mode, args.config.as_deref(), &|k| match (k, &bus) {
        ("BCI2TOKEN_BUS", Some(b)) => Some(b.clone()),
        _ => std::env::var(k).ok(),
    })
}

/// bci2tokend(8), from the same definitions as `--help` (packaging/build installs it).
fn print_man_page() -> ExitCode {
    use clap::CommandFactory;
    let page = clap_mangen::Man::new(Args::command()).section("8");
    match page.render(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bci2tokend: --man-page: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.man_page {
        return print_man_page();
    }
    // Not dumpable: no core file holds the master key or samples, and no other process of this
    // user (a plugin in a driver host among them) may ptrace the daemon or read /proc/PID/mem.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    // Everything the daemon creates is its own unless it says otherwise (the socket and the
    // runtime directory get their modes explicitly).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Every connection may hold a request's descriptors: the soft limit goes up to the hard one
    // (systemd's default soft limit of 1024 is for select(), which the daemon does not use).
    if let Ok((soft, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
    let cfg = match load_config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("bci2tokend: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match logging::init(cfg.log_target, cfg.log_level) {
        Ok(to) => log::debug!("logging to {to}"),
        Err(e) => {
            eprintln!("bci2tokend: cannot set up logging: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    // Opened now, so that sessions run this daemon's host even after an upgrade replaced it
    // (and before the scan, whose hosts describe the plugins).
    let host = driver_host::host_exe().map(|h| h.path.display().to_string());
    let mut registry = Registry::default();
    registry.scan(&cfg);
    if args.check {
        match &host {
            Ok(path) => println!("driver host {path}"),
            Err(e) => println!("driver host: {e}"),
        }
        println!("configuration OK ({})", cfg.file.as_ref().map_or("defaults".into(), |f| f.display().to_string()));
        for d in registry.infos() {
            println!("driver {} {} (ABI {}) {}", d.name, d.version, d.abi, d.file);
        }
        for f in registry.failures() {
            println!("not loaded: {}", f.error);
        }
        let host_ok = host.is_ok() || cfg.driver_isolation == driver_host::Isolation::InProcess;
        let ok = registry.len() > 0 && registry.failures().is_empty() && host_ok;
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    match &host {
        Ok(path) => log::debug!("driver host: {path}"),
        Err(e) if cfg.driver_isolation == driver_host::Isolation::Process => log::error!("{e}"),
        Err(_) => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args, cfg, registry))
}

/// Starts the D-Bus door on a runtime of its own: zbus closes the descriptors callers pass on its
/// threads, and a caller's file system may make a close wait (FUSE); that must not hold up the
/// control socket or anything else. Returns once the door is up or has said why not.
async fn start_bus(service: Arc<Service>, door: Arc<control::Door>) {
    let bus = service.config().bus;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("dbus".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                log::error!("D-Bus: cannot start its runtime ({e}); running with the control socket only");
                let _ = ready_tx.send(());
                return;
            }
        };
        runtime.block_on(bus::serve(service, door, bus, ready_tx));
    });
    match spawned {
        Ok(_) => {
            let _ = ready_rx.await;
        }
        Err(e) => log::error!("D-Bus: cannot start its thread ({e}); running with the control socket only"),
    }
}

async fn run(args: Args, cfg: Config, registry: Registry) -> ExitCode {
    let socket = cfg.socket_path();
    // Signal handlers first, so a SIGTERM right after READY=1 is handled, not fatal.
    let (Ok(mut sigterm), Ok(mut sigint), Ok(mut sighup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        log::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let listener = match control::bind(&socket, cfg.mode, &cfg.socket_group, cfg.socket_mode) {
        Ok(l) => l,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let drivers = registry.names();
    let service = match Service::new(cfg, registry) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics_listener = match service.config().metrics_listen {
        Some(addr) => match metrics_http::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                log::error!("{e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let door = Arc::new(control::Door::default());
    let server = tokio::spawn(control::serve(listener, Arc::clone(&service), Arc::clone(&door)));
    if let Some(l) = metrics_listener {
        if let Ok(addr) = l.local_addr() {
            log::info!("serving metrics on http://{addr}/metrics");
        }
        tokio::spawn(metrics_http::serve(l, Arc::clone(&service)));
    }
    start_bus(Arc::clone(&service), door).await;
    log::info!("listening on {} with drivers: {}", socket.display(), drivers.join(", "));
    notify::ready(&format!("ready: {} drivers, no sessions", drivers.len()));

    if let Some(interval) = notify::watchdog_interval() {
        log::debug!("systemd watchdog: pinging every {interval:?} while every worker thread makes progress");
        let watched = Arc::clone(&service);
        tokio::spawn(async move {
            // Checked more often than pinged, so a recovery is seen within a fraction of the
            // interval; a ping goes out at most once per interval.
            let mut tick = tokio::time::interval(interval / 4);
            let mut last_ping: Option<std::time::Instant> = None;
            let mut reported: Vec<String> = Vec::new();
            loop {
                tick.tick().await;
                // Threads of replays run at the lowest priority and may be starved by other work
                // on the machine: reported in `status`, but they do not stop the watchdog.
                let stuck: Vec<_> = watched.stuck().into_iter().filter(|s| !s.background).collect();
                let names: Vec<String> = stuck.iter().map(|s| s.name.clone()).collect();
                if names != reported {
                    if stuck.is_empty() {
                        log::warn!("watchdog: every worker thread makes progress again; feeding the watchdog");
                        notify::status(&format!("{} active session(s)", watched.active_sessions()));
                    } else {
                        let list: Vec<String> = stuck
                            .iter()
                            .map(|s| format!("{} (no progress for {:.1} s)", s.name, s.silent.as_secs_f64()))
                            .collect();
                        log::error!(
                            "watchdog: stuck: {}; not feeding systemd's watchdog (it restarts the service unless they \
                             recover)",
                            list.join(", ")
                        );
                        // systemctl status shows this line to every local user: no session ids.
                        let shown: Vec<&str> = stuck.iter().map(|s| s.public_name()).collect();
                        notify::status(&format!("stuck: {}", shown.join(", ")));
                    }
                    reported = names;
                }
                // (A tick early is on time: the ticks come every quarter interval.)
                if stuck.is_empty() && last_ping.is_none_or(|t| t.elapsed() + interval / 8 >= interval) {
                    notify::watchdog();
                    last_ping = Some(std::time::Instant::now());
                }
            }
        });
    }
    // Retention: at start, hourly, and after each reload (a changed retention_days applies at
    // once), on a blocking thread: deletions rewrite pages.
    let retention_service = Arc::clone(&service);
    let reloaded = Arc::new(tokio::sync::Notify::new());
    let retention_due = Arc::clone(&reloaded);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = retention_due.notified() => {}
            }
            let s = Arc::clone(&retention_service);
            let _ = tokio::task::spawn_blocking(move || s.apply_retention()).await;
        }
    });
    // Every minute: refusals counted beyond the audit allowance get their entry once the
    // allowance is back, and a WAL truncation a deletion still owes is retried.
    let refusal_service = Arc::clone(&service);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            let s = Arc::clone(&refusal_service);
            let _ = tokio::task::spawn_blocking(move || {
                s.audit_suppressed_refusals();
                s.truncate_owed_wal();
            })
            .await;
        }
    });
    let status_service = Arc::clone(&service);
    tokio::spawn(async move {
        let mut last = usize::MAX;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            let active = status_service.active_sessions();
            if active != last {
                notify::status(&format!("{active} active session(s)"));
                last = active;
            }
        }
    });

    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                notify::reloading();
                match load_config(&args) {
                    Ok(new) => {
                        let not_applied = service.reload(new);
                        reloaded.notify_one();
                        if not_applied.is_empty() {
                            log::info!("configuration reloaded");
                        } else {
                            log::warn!("configuration reloaded; these keys need a restart to change: {}", not_applied.join(", "));
                        }
                    }
                    Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
                }
                notify::ready("reloaded");
            }
        }
    }
    notify::stopping();
    log::info!("stopping: ending {} active session(s)", service.active_sessions());
    server.abort();
    let svc = Arc::clone(&service);
    if let Err(e) = tokio::task::spawn_blocking(move || svc.stop_all()).await {
        log::error!("stopping sessions: {e}");
    }
    if let Err(e) = std::fs::remove_file(&socket) {
        log::debug!("removing {}: {e}", socket.display());
    }
    log::info!("stopped");
    notify::flush(std::time::Duration::from_secs(1));
    ExitCode::SUCCESS
}
