//! The driver plugins found in the driver path. Every shared library there is tried; a file that
//! is not a plugin, speaks another ABI, or crashes or hangs when loaded is recorded with its
//! reason and the rest are still used.
//!
//! With `driver_isolation = "process"` (the default) the daemon never loads a plugin itself: a
//! driver host loads each one to say what it is (at start and at each reload) and to probe for
//! devices ([`Driver::probe`]), so a plugin's constructors and `probe` run confined, as its
//! sessions do. In-process isolation loads the plugin here, once, at its first use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bci2token_api::{DriverInfo, PluginFailure};
use bci2token_driver_abi::host::{bounded, DriverError, Plugin};
use bci2token_driver_abi::types::DeviceInfo;
use bci2token_driver_host::client::{self, Limits};

use crate::config::Config;
use crate::driver_host::{host_exe, readable_paths, Isolation};

/// A plugin file in the driver path, as it described itself.
#[derive(Debug)]
pub struct Driver {
    pub name: String,
    pub version: String,
    /// (major, minor) the plugin was built with.
    pub abi: (u32, u32),
    pub path: PathBuf,
    /// The plugin loaded into this process (in-process isolation only): at its first use.
    loaded: Mutex<Option<Arc<Plugin>>>,
    /// The last probe's answer and when it was asked. Held while a probe runs: requests at the
    /// same time wait for it and share its answer, so there is one probe host per driver at most.
    probed: Mutex<Option<(Instant, Probed)>>,
}

/// What a probe answered.
type Probed = Result<Vec<DeviceInfo>, DriverError>;

/// A probe's answer is shared with the requests of the next this long.
const PROBE_FRESH: Duration = Duration::from_secs(2);
/// Devices one probe may list, configuration keys one device may carry, at most.
const MAX_PROBED: usize = 256;
const MAX_DEVICE_KEYS: usize = 32;
/// Driver hosts that describe or probe at once, at most (a driver path with thousands of files
/// must not start thousands of processes).
pub const HOSTS_AT_ONCE: usize = 8;

impl Driver {
    /// The plugin, loaded into this process (in-process isolation). Refused when the file now
    /// holds another driver than the one found at the last scan.
    pub fn in_process(&self) -> Result<Arc<Plugin>, DriverError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plugin) = loaded.as_ref() {
            return Ok(Arc::clone(plugin));
        }
        let plugin = Plugin::load(&self.path).map_err(|e| self.error(e.to_string()))?;
        if plugin.name() != self.name {
            return Err(self.error(format!(
                "{} now holds driver `{}`; reload the daemon (systemctl reload bci2tokend) to use it",
                self.path.display(),
                plugin.name()
            )));
        }
        *loaded = Some(Arc::clone(&plugin));
        Ok(plugin)
    }

    /// The devices the driver can open now: its `probe`, where `cfg.driver_isolation` says, or
    /// the answer of a probe asked less than [`PROBE_FRESH`] ago. What it lists is made fit for
    /// a terminal: at most [`MAX_PROBED`] devices, texts [`bounded`], settings of plain values.
    pub fn probe(&self, cfg: &Config) -> Result<Vec<DeviceInfo>, DriverError> {
        let mut probed = self.probed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, answer)) = probed.as_ref().filter(|(at, _)| at.elapsed() < PROBE_FRESH) {
            log::debug!("driver `{}`: the probe of {:.1} s ago answers", self.name, at.elapsed().as_secs_f64());
            return answer.clone();
        }
        let answer = self.probe_now(cfg).and_then(|devices| self.tidy(devices));
        *probed = Some((Instant::now(), answer.clone()));
        answer
    }

    /// A probe's devices fit for a terminal and for `session start --set`: a device whose id or
    /// settings would have to be changed to show (a control or formatting character, more than
    /// 256 characters, a setting that is not a string, number or boolean, more than
    /// [`MAX_DEVICE_KEYS`] settings) is left out with a warning, since the changed settings would
    /// not open it; descriptions are only shown, so they are [`bounded`].
    fn tidy(&self, devices: Vec<DeviceInfo>) -> Result<Vec<DeviceInfo>, DriverError> {
        if devices.len() > MAX_PROBED {
            return Err(self.error(format!("its probe listed {} devices, more than {MAX_PROBED}", devices.len())));
        }
        let shows = |text: &str| bounded(text) == text;
        let plain = |v: &serde_json::Value| match v {
            serde_json::Value::String(text) => shows(text),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => true,
            _ => false,
        };
        let mut kept = Vec::with_capacity(devices.len());
        for d in devices {
            let fits =
                shows(&d.id) && d.config.len() <= MAX_DEVICE_KEYS && d.config.iter().all(|(k, v)| shows(k) && plain(v));
            if fits {
                kept.push(DeviceInfo { description: bounded(&d.description), ..d });
            } else {
                log::warn!(
                    "driver `{}`: its probe listed a device ({}) whose id or settings cannot be shown as they are; \
                     left out",
                    self.name,
                    bounded(&d.id)
                );
            }
        }
        Ok(kept)
    }

    fn probe_now(&self, cfg: &Config) -> Result<Vec<DeviceInfo>, DriverError> {
        match cfg.driver_isolation {
            Isolation::InProcess => self.in_process()?.probe(),
            Isolation::Process => {
                let exe = host_exe().map_err(|m| self.error(m))?;
                let found =
                    client::describe(exe, &self.path, sandbox_for(cfg, &self.path, &self.name), limits(cfg), true)?;
                if found.name != self.name || found.abi != self.abi {
                    let (major, minor) = found.abi;
                    return Err(self.error(format!(
                        "{} now holds driver `{}` (ABI {major}.{minor}), not the one listed; reload the daemon \
                         (systemctl reload bci2tokend) to use it",
                        self.path.display(),
                        found.name
                    )));
                }
                found.probe.unwrap_or_else(|| Err(self.error("its host did not probe".into())))
            }
        }
    }

    fn error(&self, message: String) -> DriverError {
        DriverError { driver: self.name.clone(), message, panicked: false }
    }
}

/// What a host that only describes or probes may read and preload: as a session's host with
/// no session settings but the admin's for this driver (`[drivers.NAME] library` is readable and
/// preloaded, so a probe that looks the library up by name finds that one).
fn sandbox_for(cfg: &Config, plugin: &Path, driver: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let admin: serde_json::Map<String, serde_json::Value> = cfg
        .driver_settings
        .get(driver)
        .into_iter()
        .flatten()
        .map(|(key, value)| (format!("_{key}"), value.clone()))
        .collect();
    readable_paths(cfg, (plugin, driver), &admin)
}

fn limits(cfg: &Config) -> Limits {
    Limits { memory_mib: cfg.driver_memory_limit, read_grace: Duration::ZERO, restarts: 0 }
}

/// What looking at the driver path found: the new plugins and the files that are none.
pub struct Scan {
    found: Vec<Driver>,
    failed: Vec<PluginFailure>,
}

/// Shared libraries in `dir`, sorted so that loading order (and which duplicate wins) is stable.
fn libraries_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "so") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Describes every plugin in `cfg.driver_path` that is not among `known` (files already
/// registered: sessions may be using them). Each file in a driver host of its own,
/// [`HOSTS_AT_ONCE`] at a time; in this process with in-process isolation. Takes no lock: a
/// reload runs it while requests are served.
pub fn inspect(cfg: &Config, known: &[PathBuf]) -> Scan {
    let mut files = Vec::new();
    for dir in &cfg.driver_path {
        match libraries_in(dir) {
            Ok(found) => files.extend(found.into_iter().filter(|f| !known.contains(f))),
            Err(e) => log::warn!("driver directory {}: {e}", dir.display()),
        }
    }
    let described: Vec<Result<Driver, String>> = match cfg.driver_isolation {
        Isolation::InProcess => files.iter().map(|f| load_here(f)).collect(),
        Isolation::Process => at_most(HOSTS_AT_ONCE, &files, |f| describe_in_host(cfg, f))
            .into_iter()
            .map(|r| r.unwrap_or_else(|_| Err("describing it panicked".into())))
            .collect(),
    };
    let mut scan = Scan { found: Vec::new(), failed: Vec::new() };
    for (file, result) in files.iter().zip(described) {
        match result {
            Ok(driver) => scan.found.push(driver),
            Err(error) => {
                log::warn!("{error}");
                scan.failed.push(PluginFailure { file: file.display().to_string(), error });
            }
        }
    }
    scan
}

/// `work` on every item, by at most `n` threads at once, each taking the next item when it is
/// done (one that takes long holds up only its own thread); the answers in the items' order, a
/// panic in `work` as `Err` (it must not end the reload or request that asked). One item, or no
/// thread to be had: on this thread.
pub fn at_most<T: Sync, R: Send>(n: usize, items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<std::thread::Result<R>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let answers: Vec<Mutex<Option<std::thread::Result<R>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let worker = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(item) = items.get(i) else { break };
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item)));
        *answers[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
    };
    if items.len() <= 1 {
        worker();
    } else {
        std::thread::scope(|scope| {
            let started =
                (0..n.min(items.len())).filter(|_| std::thread::Builder::new().spawn_scoped(scope, worker).is_ok());
            if started.count() == 0 {
                worker();
            }
        });
    }
    // Every item was taken by a worker, and every worker ran to the end (none can panic).
    answers
        .into_iter()
        .map(|a| a.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or(Err(Box::new(()))))
        .collect()
}

fn load_here(file: &Path) -> Result<Driver, String> {
    let plugin = Plugin::load(file).map_err(|e| e.to_string())?;
    Ok(Driver {
        name: plugin.name().to_string(),
        version: plugin.version().to_string(),
        abi: plugin.abi(),
        path: file.to_path_buf(),
        loaded: Mutex::new(Some(plugin)),
        probed: Mutex::new(None),
    })
}

fn describe_in_host(cfg: &Config, file: &Path) -> Result<Driver, String> {
    let exe = host_exe()?;
    let found = client::describe(exe, file, sandbox_for(cfg, file, ""), limits(cfg), false).map_err(|e| {
        // Most of the host's messages name the file already.
        let path = file.display().to_string();
        if e.message.contains(&path) {
            e.message
        } else {
            format!("{path}: {}", e.message)
        }
    })?;
    Ok(Driver {
        name: found.name,
        version: found.version,
        abi: found.abi,
        path: file.to_path_buf(),
        loaded: Mutex::new(None),
        probed: Mutex::new(None),
    })
}

#[derive(Default)]
pub struct Registry {
    /// By driver name.
    drivers: BTreeMap<String, Arc<Driver>>,
    failed: Vec<PluginFailure>,
}

impl Registry {
    /// Describes and adds every plugin in `cfg.driver_path` (the daemon's start).
    pub fn scan(&mut self, cfg: &Config) -> Vec<String> {
        let scan = inspect(cfg, &self.files());
        self.add(scan, &cfg.driver_path)
    }

    /// The plugin files registered.
    pub fn files(&self) -> Vec<PathBuf> {
        self.drivers.values().map(|d| d.path.clone()).collect()
    }

    /// Adds what a scan found (the first file of a name wins; registered ones stay as they are)
    /// and keeps its failures as the current ones. Returns the names newly added.
    pub fn add(&mut self, scan: Scan, dirs: &[PathBuf]) -> Vec<String> {
        self.failed = scan.failed;
        let mut added = Vec::new();
        for driver in scan.found {
            if self.drivers.values().any(|d| d.path == driver.path) {
                continue;
            }
            if let Some(existing) = self.drivers.get(&driver.name) {
                let msg = format!(
                    "driver `{}` is already loaded from {}; this copy is ignored",
                    driver.name,
                    existing.path.display()
                );
                log::warn!("{}: {msg}", driver.path.display());
                self.failed.push(PluginFailure { file: driver.path.display().to_string(), error: msg });
                continue;
            }
            let (major, minor) = driver.abi;
            log::info!(
                "found driver `{}` {} (ABI {major}.{minor}) in {}",
                driver.name,
                driver.version,
                driver.path.display()
            );
            added.push(driver.name.clone());
            self.drivers.insert(driver.name.clone(), Arc::new(driver));
        }
        if self.drivers.is_empty() {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            log::warn!(
                "no driver plugins found in {}; set driver_path (BCI2TOKEN_DRIVER_PATH) to the directory holding \
                 libbci2token_driver_*.so",
                dirs.join(":")
            );
        }
        added
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Driver>> {
        self.drivers.get(name)
    }

    pub fn len(&self) -> usize {
        self.drivers.len()
    }

    pub fn names(&self) -> Vec<String> {
        self.drivers.keys().cloned().collect()
    }

    pub fn drivers(&self) -> impl Iterator<Item = &Arc<Driver>> {
        self.drivers.values()
    }

    pub fn infos(&self) -> Vec<DriverInfo> {
        self.drivers
            .values()
            .map(|d| DriverInfo {
                name: d.name.clone(),
                version: d.version.clone(),
                abi: format!("{}.{}", d.abi.0, d.abi.1),
                file: d.path.display().to_string(),
            })
            .collect()
    }

    pub fn failures(&self) -> &[PluginFailure] {
        &self.failed
    }
}
