//! The set of loaded driver plugins. Every shared library in the driver path is tried; a file that
//! is not a plugin or speaks another ABI is recorded with its reason and the rest still load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bci2token_api::{DriverInfo, PluginFailure};
use bci2token_driver_abi::host::Plugin;

#[derive(Default)]
pub struct Registry {
    /// By driver name.
    plugins: BTreeMap<String, Arc<Plugin>>,
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

impl Registry {
    /// Loads every plugin found in `dirs` that is not loaded yet. Already-loaded plugins stay as
    /// they are (sessions may be using them). Returns the names newly loaded.
    pub fn scan(&mut self, dirs: &[PathBuf]) -> Vec<String> {
        self.failed.clear();
        let mut added = Vec::new();
        for dir in dirs {
            let files = match libraries_in(dir) {
                Ok(files) => files,
                Err(e) => {
                    log::warn!("driver directory {}: {e}", dir.display());
                    continue;
                }
            };
            for file in files {
                if self.plugins.values().any(|p| p.path() == file) {
                    continue;
                }
                match Plugin::load(&file) {
                    Ok(plugin) => {
                        let name = plugin.name().to_string();
                        if let Some(existing) = self.plugins.get(&name) {
                            let msg = format!(
                                "driver `{name}` is already loaded from {}; this copy is ignored",
                                existing.path().display()
                            );
                            log::warn!("{}: {msg}", file.display());
                            self.failed.push(PluginFailure { file: file.display().to_string(), error: msg });
                            continue;
                        }
                        log::info!(
                            "loaded driver `{name}` {} (ABI {}.{}) from {}",
                            plugin.version(),
                            plugin.abi().0,
                            plugin.abi().1,
                            file.display()
                        );
                        added.push(name.clone());
                        self.plugins.insert(name, plugin);
                    }
                    Err(e) => {
                        log::warn!("{e}");
                        self.failed.push(PluginFailure { file: file.display().to_string(), error: e.to_string() });
                    }
                }
            }
        }
        if self.plugins.is_empty() {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            log::warn!(
                "no driver plugins found in {}; set driver_path (BCI2TOKEN_DRIVER_PATH) to the directory holding \
                 libbci2token_driver_*.so",
                dirs.join(":")
            );
        }
        added
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    pub fn names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    pub fn infos(&self) -> Vec<DriverInfo> {
        self.plugins
            .values()
            .map(|p| DriverInfo {
                name: p.name().to_string(),
                version: p.version().to_string(),
                abi: format!("{}.{}", p.abi().0, p.abi().1),
                file: p.path().display().to_string(),
            })
            .collect()
    }

    pub fn failures(&self) -> &[PluginFailure] {
        &self.failed
    }
}
