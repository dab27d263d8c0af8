//! The service layer: every operation of the daemon, once, whatever door calls it (the control
//! socket, D-Bus). One public method per operation, taking and returning `bci2token-api` types;
//! each runs behind one guard ([`Service::guarded`]) that checks the caller's role and writes the
//! audit log. Methods may block (opening a device, probing hardware, the store): doors call them
//! through [`Service::call`], which runs them off the async runtime's worker threads.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use bci2token_api::{
    ApiError, AuditEntryInfo, AuditVerification, BackupDone, Caller, ConfigMap, Deleted, DeviceEntry, DeviceList,
    DriverList, ErrorCode, ExportDone, Exported, FeatureRelease, FileArg, FollowOptions, KeyRotation, ModelInfo,
    ModelList, PluginFailure, PrivacyBudget, Restored, SessionInfo, StatusInfo,
};
use bci2token_decoder::engine::Engine;
use bci2token_decoder::manifest::MANIFEST_FILE;
use bci2token_decoder::{Manifest, Model};
use bci2token_liblsl::Lsl;
use bci2token_sched::Heartbeats;

use crate::auth::{role_of, Role};
use crate::caller_files::{bounded, take_fd, Use};
use crate::closer::Passed;
use crate::config::{Config, Mode};
use crate::decoding::Decoding;
use crate::driver_host::{Isolation, Source};
use crate::hub::Subscription;
use crate::lsl_outlets::SessionOutlets;
use crate::plugins::{at_most, Driver, Registry, HOSTS_AT_ONCE};
use crate::recorder::StoreWriter;
use crate::session::{new_id, PipelineSettings, Session, SessionChange};
use crate::token_bucket::TokenBucket;
use bci2token_driver_abi::host::DriverError;
use bci2token_driver_host::client::Limits;
use bci2token_store::seal::Kind;

mod personal;
use bci2token_store::StoreReader;

/// The most a session's settings may take (serialised): scripts and channel lists fit easily.
const MAX_SESSION_CONFIG_BYTES: usize = 64 << 10;

/// Ended sessions kept in memory for `session list/show` (the oldest are forgotten first).
const ENDED_SESSIONS_KEPT: usize = 256;

/// Sessions added, changed or removed, as the service sees them: the bus door's ObjectManager
/// follows them. Late receivers lose the oldest (and re-read the list).
const SESSION_CHANGES_QUEUE: usize = 1024;

/// What `session_start` needs besides the caller and the descriptors.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub driver: String,
    /// Driver settings; a passed file is `{"fd": N, "name": ...}` (N indexes the request's descriptors).
    pub config: ConfigMap,
    pub model: Option<String>,
    /// Subscribe before the first block, so that nothing is missed.
    pub follow: Option<FollowOptions>,
    pub lsl_outlets: bool,
    pub subject: Option<String>,
}

/// What `export` needs besides the caller and the descriptors.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub id: String,
    pub format: String,
    pub path: FileArg,
    /// A private release of features (`bandpower`) instead of the recording.
    pub features: Option<String>,
    pub dp_epsilon: Option<f64>,
    pub dp_delta: Option<f64>,
    pub dp_clip: Option<f64>,
}

/// A session started; with `follow`, its event stream from the first block.
pub struct Started {
    pub info: SessionInfo,
    pub stream: Option<Subscription>,
}

/// A running session's event stream, and the session as it was when it began.
pub struct Followed {
    pub info: SessionInfo,
    pub stream: Subscription,
}

/// Every operation: its name (as the audit log and the socket protocol call it), the role it
/// needs before anything is looked at (owner checks come after), and whether its successes and
/// failures are audited (refusals always are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Status,
    Drivers,
    Devices,
    Models,
    ModelShow,
    ModelInstall,
    ModelTrain,
    ModelDelete,
    SessionStart,
    SessionList,
    SessionShow,
    SessionStop,
    SessionDelete,
    AuditList,
    AuditVerify,
    KeyRotate,
    Backup,
    Restore,
    Export,
    /// A private release spends the subject's budget, which every session of that subject shares
    /// (whoever recorded it): the admin's decision.
    ExportFeatures,
    Follow,
    Health,
    Metrics,
}

impl Op {
    #[cfg(test)]
    pub const ALL: [Op; 23] = [
        Op::Status,
        Op::Drivers,
        Op::Devices,
        Op::Models,
        Op::ModelShow,
        Op::ModelInstall,
        Op::ModelTrain,
        Op::ModelDelete,
        Op::SessionStart,
        Op::SessionList,
        Op::SessionShow,
        Op::SessionStop,
        Op::SessionDelete,
        Op::AuditList,
        Op::AuditVerify,
        Op::KeyRotate,
        Op::Backup,
        Op::Restore,
        Op::Export,
        Op::ExportFeatures,
        Op::Follow,
        Op::Health,
        Op::Metrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Status => "status",
            Op::Drivers => "drivers",
            Op::Devices => "devices",
            Op::Models => "models",
            Op::ModelShow => "model_show",
            Op::ModelInstall => "model_install",
            Op::ModelTrain => "model_train",
            Op::ModelDelete => "model_delete",
            Op::SessionStart => "session_start",
            Op::SessionList => "session_list",
            Op::SessionShow => "session_show",
            Op::SessionStop => "session_stop",
            Op::SessionDelete => "session_delete",
            Op::AuditList => "audit_list",
            Op::AuditVerify => "audit_verify",
            Op::KeyRotate => "key_rotate",
            Op::Backup => "backup",
            Op::Restore => "restore",
            Op::Export | Op::ExportFeatures => "export",
            Op::Follow => "follow",
            Op::Health => "health",
            Op::Metrics => "metrics",
        }
    }

    pub fn role(self) -> Role {
        match self {
            // Other users' sessions are only counted in `health`.
            Op::Status | Op::Health => Role::Reader,
            Op::SessionDelete
            | Op::AuditList
            | Op::AuditVerify
            | Op::KeyRotate
            | Op::Backup
            | Op::Restore
            | Op::ModelInstall
            | Op::ExportFeatures => Role::Admin,
            Op::Drivers
            | Op::Devices
            | Op::Models
            | Op::ModelShow
            | Op::ModelTrain
            | Op::ModelDelete
            | Op::SessionStart
            | Op::SessionList
            | Op::SessionShow
            | Op::SessionStop
            | Op::Export
            | Op::Follow
            | Op::Metrics => Role::Operator,
        }
    }

    /// The polkit action that lets a caller outside the admin group do an admin operation over
    /// D-Bus (systemd/org.bci2token.policy); `None` for operations that are not admin-only.
    pub fn polkit_action(self) -> Option<&'static str> {
        Some(match self {
            Op::SessionDelete => "org.bci2token.session.delete",
            Op::AuditList | Op::AuditVerify => "org.bci2token.audit",
            Op::KeyRotate => "org.bci2token.key.rotate",
            Op::Backup => "org.bci2token.backup",
            Op::Restore => "org.bci2token.restore",
            Op::ModelInstall => "org.bci2token.model.install",
            Op::ExportFeatures => "org.bci2token.export.features",
            _ => return None,
        })
    }

    fn audited(self) -> bool {
        !matches!(
            self,
            Op::Status
                | Op::Drivers
                | Op::Devices
                | Op::Models
                | Op::ModelShow
                | Op::SessionList
                | Op::SessionShow
                | Op::Health
                | Op::Metrics
        )
    }
}

/// A result that names the session it made, for the audit log (`ok: ID`).
pub trait Audited {
    fn audit_id(&self) -> Option<&str> {
        None
    }
}

impl Audited for SessionInfo {
    fn audit_id(&self) -> Option<&str> {
        Some(&self.id)
    }
}
impl Audited for Started {
    fn audit_id(&self) -> Option<&str> {
        Some(&self.info.id)
    }
}
impl Audited for Followed {
    fn audit_id(&self) -> Option<&str> {
        Some(&self.info.id)
    }
}
impl<T> Audited for Vec<T> {}
impl Audited for StatusInfo {}
impl Audited for bci2token_api::HealthReport {}
impl Audited for String {}
impl Audited for DriverList {}
impl Audited for DeviceList {}
impl Audited for ModelList {}
impl Audited for ModelInfo {}
impl Audited for bci2token_api::Trained {}
impl Audited for Deleted {}
impl Audited for KeyRotation {}
impl Audited for AuditVerification {}
impl Audited for BackupDone {}
impl Audited for Restored {}
impl Audited for ExportDone {
    fn audit_id(&self) -> Option<&str> {
        Some(match self {
            ExportDone::Features(f) => &f.id,
            ExportDone::Recording(e) => &e.id,
        })
    }
}

pub struct Service {
    config: RwLock<Config>,
    registry: RwLock<Registry>,
    sessions: Mutex<Vec<Arc<Session>>>,
    started: Instant,
    /// The decode thread shared by every session (so windows of several sessions batch together).
    engine: Arc<Engine>,
    /// Loaded models by package directory: sessions with the same model share it.
    models: Mutex<HashMap<PathBuf, Arc<Model>>>,
    /// Bumped when installed or trained packages change: a load that began before is not cached.
    models_generation: std::sync::atomic::AtomicU64,
    /// liblsl for the sessions' outlets, once one asked for them.
    lsl: Mutex<Option<Arc<Lsl>>>,
    /// The session store's writer: the audit log always, sessions when `record` is on.
    store: StoreWriter,
    /// Sessions being started (admitted, not yet running) per uid, so that `max_sessions` and
    /// `max_sessions_per_uid` hold however many starts race. Locked after `sessions`, never before.
    starting: Mutex<HashMap<u32, usize>>,
    /// Per-uid budget of refusals written to the audit log individually.
    refusal_log: Mutex<HashMap<u32, RefusalLog>>,
    /// Refusals so far by what was refused (`connect`, `request`, an operation), for the metrics.
    refusals: Mutex<std::collections::BTreeMap<String, u64>>,
    /// The store's facts for `health` and the metrics, and when they were read; held by the one
    /// caller that reads them again (see [`Service::store_facts`]).
    facts: RwLock<Option<(Instant, Result<bci2token_store::StoreFacts, String>)>>,
    facts_refresh: Mutex<()>,
    /// The torch device, chosen at the first model load (loading CUDA is not free).
    torch_device: OnceLock<Result<tch::Device, String>>,
    /// Sessions added, changed and removed (see [`SessionChange`]).
    changes: tokio::sync::broadcast::Sender<SessionChange>,
    /// Set when the daemon stops: no session starts any more.
    closing: std::sync::atomic::AtomicBool,
    /// Held by the one `model_train` that may run at a time.
    training: Mutex<()>,
    /// Held by the `devices` request that probes ([`Service::probe_devices`]).
    probing: Mutex<()>,
    /// Exports reading the store through readers of their own ([`Service::store_reader`]).
    readers: Arc<Mutex<StoreReaders>>,
    /// The worker threads' heartbeats: decode, store writer, each session's acquisition.
    heartbeats: Heartbeats,
    /// A thread silent for longer is stuck: half the watchdog time-out, or [`STUCK_AFTER`].
    stuck_after: std::time::Duration,
    /// Retention deletes by age only while the wall clock has not stepped.
    wall_clock: crate::wall_clock::StepWatch,
}

/// How long the store's facts are reused by `health` and the metrics.
const FACTS_FRESH: std::time::Duration = std::time::Duration::from_secs(10);
/// How long `health` and the metrics wait for the store writer.
const FACTS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Without a watchdog: how long a worker thread may show no progress before `status` names it.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl Service {
    pub fn new(config: Config, registry: Registry) -> Result<Self, String> {
        let engine = Arc::new(
            Engine::start(config.decoder_max_batch).map_err(|e| format!("cannot start the decode thread: {e}"))?,
        );
        // The store is opened whether or not sessions are recorded: it holds the audit log.
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let store = StoreWriter::start(&config.data_dir, credentials.as_deref(), config.store_queue)
            .map_err(|e| format!("the session store: {e}"))?;
        let heartbeats = Heartbeats::default();
        for beat in engine.heartbeats() {
            heartbeats.register(beat);
        }
        heartbeats.register(store.heartbeat());
        personal::sweep_leftovers(&config.data_dir);
        Ok(Service {
            heartbeats,
            stuck_after: crate::notify::watchdog_interval()
                .unwrap_or(STUCK_AFTER)
                .max(std::time::Duration::from_secs(1)),
            wall_clock: crate::wall_clock::StepWatch::new(config.data_dir.join("retention-hold")),
            config: RwLock::new(config),
            registry: RwLock::new(registry),
            sessions: Mutex::new(Vec::new()),
            started: Instant::now(),
            engine,
            models: Mutex::new(HashMap::new()),
            models_generation: std::sync::atomic::AtomicU64::new(0),
            lsl: Mutex::new(None),
            store,
            starting: Mutex::new(HashMap::new()),
            refusal_log: Mutex::new(HashMap::new()),
            refusals: Mutex::new(std::collections::BTreeMap::new()),
            facts: RwLock::new(None),
            facts_refresh: Mutex::new(()),
            torch_device: OnceLock::new(),
            changes: tokio::sync::broadcast::channel(SESSION_CHANGES_QUEUE).0,
            closing: std::sync::atomic::AtomicBool::new(false),
            training: Mutex::new(()),
            probing: Mutex::new(()),
            readers: Arc::default(),
        })
    }

    /// The control socket's limits from the running configuration.
    pub fn limits(&self) -> crate::control::Limits {
        let cfg = self.config.read().unwrap();
        crate::control::Limits {
            request_timeout: std::time::Duration::from_secs_f64(cfg.request_timeout),
            max_connections: cfg.max_connections,
            max_connections_per_uid: cfg.max_connections_per_uid,
            requests_per_second: cfg.requests_per_second,
            request_burst: cfg.request_burst,
            idle_timeout: std::time::Duration::from_secs_f64(cfg.idle_timeout),
        }
    }

    /// Where `caller` stands at the control socket's door (see [`crate::control::Standing`]).
    pub fn standing(&self, caller: &Caller) -> crate::control::Standing {
        use crate::control::Standing;
        match self.role(caller) {
            Role::Admin => Standing::Admin,
            Role::Operator => Standing::Member,
            Role::Reader => Standing::Reader,
        }
    }

    pub fn config(&self) -> Config {
        self.config.read().unwrap().clone()
    }

    /// Runs a (blocking) service call on a blocking thread, off the async runtime's workers: the
    /// one way both doors call the service.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Service) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let service = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&service))
            .await
            .unwrap_or_else(|e| Err(ApiError::new(ErrorCode::Internal, format!("the request handler failed: {e}"))))
    }

    /// Sessions added, changed and removed from now on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<SessionChange> {
        self.changes.subscribe()
    }

    /// Every session the daemon keeps in memory, whoever owns it (for the doors' own bookkeeping:
    /// what a caller may see is decided by the operations).
    pub fn all_sessions(&self) -> Vec<SessionInfo> {
        self.sessions.lock().unwrap().iter().map(|s| s.info()).collect()
    }

    pub fn role(&self, caller: &Caller) -> Role {
        let cfg = self.config.read().unwrap();
        role_of(caller, cfg.mode, &cfg.admin_group, &cfg.socket_group)
    }

    fn require(&self, caller: &Caller, needed: Role, method: &str) -> Result<(), ApiError> {
        let role = self.role(caller);
        if role >= needed {
            return Ok(());
        }
        let cfg = self.config.read().unwrap();
        let group = if needed == Role::Admin { &cfg.admin_group } else { &cfg.socket_group };
        log::warn!(
            caller_uid = caller.uid;
            "refused {method} for uid {} pid {}: role {} needs {}",
            caller.uid,
            caller.pid.unwrap_or(0),
            role.as_str(),
            needed.as_str()
        );
        Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("{method} needs the {} role; add the user to the `{group}` group", needed.as_str()),
        ))
    }

    /// The guard of every operation: checks the role `op` needs (refused calls are audited),
    /// runs it, and audits what `op` says to (refusals always, as refusals).
    fn guarded<T: Audited>(
        &self,
        caller: &Caller,
        op: Op,
        object: &str,
        run: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        // A call polkit made an admin's says so in every entry it leaves.
        let by = if caller.admin_by_polkit { " (admin by polkit)" } else { "" };
        if let Err(e) = self.require(caller, op.role(), op.name()) {
            self.audit_refusal(caller, op.name(), object, &e.message);
            return Err(e);
        }
        let result = run();
        match &result {
            Err(e) if is_refusal(e.code) => {
                self.audit_refusal(caller, op.name(), object, &format!("{}{by}", e.message))
            }
            Ok(v) if op.audited() => {
                let outcome = match v.audit_id() {
                    Some(id) if object != id => format!("ok: {id}{by}"),
                    _ => format!("ok{by}"),
                };
                self.audit(caller, op.name(), object, &outcome);
            }
            Err(e) if op.audited() => self.audit(caller, op.name(), object, &format!("failed: {}{by}", e.message)),
            _ => {}
        }
        result
    }

    pub fn status(&self, caller: &Caller) -> Result<StatusInfo, ApiError> {
        self.guarded(caller, Op::Status, "", || Ok(self.status_info(caller)))
    }

    pub fn drivers(&self, caller: &Caller) -> Result<DriverList, ApiError> {
        self.guarded(caller, Op::Drivers, "", || Ok(self.driver_list()))
    }

    pub fn devices(&self, caller: &Caller, driver: Option<&str>) -> Result<DeviceList, ApiError> {
        self.guarded(caller, Op::Devices, "", || self.probe_devices(driver))
    }

    pub fn models(&self, caller: &Caller) -> Result<ModelList, ApiError> {
        self.guarded(caller, Op::Models, "", || {
            let mut list = self.list_models();
            for (uid, dir) in self.personal_models(caller) {
                match Manifest::load(&dir) {
                    Ok(m) => list.models.push(ModelInfo { owner: Some(uid), ..model_info(&dir, m) }),
                    Err(e) => list.errors.push(PluginFailure { file: dir.display().to_string(), error: e.to_string() }),
                }
            }
            Ok(list)
        })
    }

    pub fn model_show(&self, caller: &Caller, model: &str) -> Result<ModelInfo, ApiError> {
        self.guarded(caller, Op::ModelShow, "", || self.show_model(caller, model))
    }

    /// Installs a model package from its files (passed as descriptors); admin only.
    pub fn model_install(
        &self,
        caller: &Caller,
        files: &[FileArg],
        replace: bool,
        mut fds: Passed,
    ) -> Result<ModelInfo, ApiError> {
        let object = files.iter().map(|f| bounded(f.display())).collect::<Vec<_>>().join(" ");
        self.guarded(caller, Op::ModelInstall, &object, || self.install_model(caller, files, replace, &mut fds))
    }

    /// Fits a model to the caller's stored sessions and keeps it as theirs (see training).
    pub fn model_train(
        &self,
        caller: &Caller,
        request: bci2token_api::TrainRequest,
    ) -> Result<bci2token_api::Trained, ApiError> {
        let sources: Vec<String> = request.sessions.iter().take(8).map(|s| bounded(s)).collect();
        let object = format!("{} ({}) from {}", bounded(&request.name), bounded(&request.method), sources.join(" "));
        self.guarded(caller, Op::ModelTrain, &object, || self.train_model(caller, request))
    }

    /// Deletes a trained model: the caller's own, or (an admin) `owner`'s.
    pub fn model_delete(&self, caller: &Caller, model: &str, owner: Option<u32>) -> Result<ModelInfo, ApiError> {
        let object = format!("{} of uid {}", bounded(model), owner.unwrap_or(caller.uid));
        self.guarded(caller, Op::ModelDelete, &object, || self.delete_model(caller, model, owner))
    }

    pub fn session_start(&self, caller: &Caller, start: StartRequest, mut fds: Passed) -> Result<Started, ApiError> {
        let object = format!("driver {}", start.driver);
        self.guarded(caller, Op::SessionStart, &object, || self.start_session(caller, start, &mut fds))
    }

    /// The caller's sessions (an admin's: everyone's).
    pub fn session_list(&self, caller: &Caller) -> Result<Vec<SessionInfo>, ApiError> {
        self.guarded(caller, Op::SessionList, "", || {
            let admin = self.role(caller) == Role::Admin;
            let sessions = self.sessions.lock().unwrap();
            let visible = sessions.iter().filter(|s| admin || s.started_by.uid == caller.uid);
            Ok(visible.map(|s| s.info()).collect())
        })
    }

    pub fn session_show(&self, caller: &Caller, id: &str) -> Result<SessionInfo, ApiError> {
        self.guarded(caller, Op::SessionShow, id, || self.find_owned(caller, id, "see").map(|s| s.info()))
    }

    pub fn session_stop(&self, caller: &Caller, id: &str) -> Result<SessionInfo, ApiError> {
        self.guarded(caller, Op::SessionStop, id, || self.stop_session(caller, id))
    }

    /// Deletes a stored session for good; admin only.
    pub fn session_delete(&self, caller: &Caller, id: &str) -> Result<Deleted, ApiError> {
        self.guarded(caller, Op::SessionDelete, id, || self.delete_session(id))
    }

    pub fn audit_list(&self, caller: &Caller, since: Option<f64>) -> Result<Vec<AuditEntryInfo>, ApiError> {
        self.guarded(caller, Op::AuditList, "", || self.audit_entries(since))
    }

    pub fn audit_verify(&self, caller: &Caller) -> Result<AuditVerification, ApiError> {
        self.guarded(caller, Op::AuditVerify, "", || self.verify_audit())
    }

    pub fn key_rotate(&self, caller: &Caller) -> Result<KeyRotation, ApiError> {
        self.guarded(caller, Op::KeyRotate, "", || self.rotate_key())
    }

    pub fn backup(&self, caller: &Caller, path: &FileArg, mut fds: Passed) -> Result<BackupDone, ApiError> {
        let done = self.guarded(caller, Op::Backup, path.display(), || self.backup_to(caller, path, &mut fds));
        // Its audit entry is written: `health` sees the new backup at once.
        self.facts_are_stale();
        done
    }

    pub fn restore(&self, caller: &Caller, path: &FileArg, mut fds: Passed) -> Result<Restored, ApiError> {
        self.guarded(caller, Op::Restore, path.display(), || self.restore_from(caller, path, &mut fds))
    }

    pub fn export(&self, caller: &Caller, request: ExportRequest, mut fds: Passed) -> Result<ExportDone, ApiError> {
        let ExportRequest { id, format, path, features, dp_epsilon, dp_delta, dp_clip } = request;
        let (op, object) = match &features {
            None => (Op::Export, format!("{id} as {format} to {}", path.display())),
            Some(f) => (
                Op::ExportFeatures,
                format!("{id} {f} features (ε {dp_epsilon:?}, δ {dp_delta:?}) to {}", path.display()),
            ),
        };
        let dp = features.map(|f| (f, dp_epsilon, dp_delta, dp_clip));
        let done =
            self.guarded(caller, op, &object, || self.export_session(caller, &id, &format, (&path, &mut fds), dp));
        if op == Op::ExportFeatures {
            // A privacy budget was spent: `health` sees it at once.
            self.facts_are_stale();
        }
        done
    }

    /// How the daemon is doing; a caller who is not an admin sees their own sessions.
    pub fn health(&self, caller: &Caller) -> Result<bci2token_api::HealthReport, ApiError> {
        self.guarded(caller, Op::Health, "", || {
            let admin = self.role(caller) == Role::Admin;
            Ok(self.look().health(&|s: &SessionInfo| admin || s.started_by.uid == caller.uid, admin))
        })
    }

    /// The metrics text (Prometheus / OpenMetrics).
    pub fn metrics(&self, caller: &Caller) -> Result<String, ApiError> {
        self.guarded(caller, Op::Metrics, "", || Ok(self.metrics_text(crate::metrics::Format::Classic)))
    }

    /// The metrics text, for the `/metrics` listener.
    pub fn metrics_text(&self, format: crate::metrics::Format) -> String {
        crate::metrics::encode(&self.look(), format)
    }

    /// One look at the sessions, the store and the threads.
    fn look(&self) -> crate::observe::Look {
        let cfg = self.config();
        let sessions: Vec<Arc<Session>> = self.sessions.lock().unwrap().clone();
        let mut states = std::collections::BTreeMap::new();
        let mut live = Vec::new();
        for s in &sessions {
            let info = s.info();
            states.entry(info.state.as_str()).or_insert((info.state, 0)).1 += 1;
            if info.state.is_final() {
                continue;
            }
            let (measured_rate, gaps_last_minute) = s.activity();
            live.push(crate::observe::SessionLook {
                measured_rate,
                gaps_last_minute,
                tokens: s.decoder().map_or(0, |d| d.tokens()),
                store_queue: s.store_queue(),
                info,
            });
        }
        let free_bytes = crate::recorder::free_bytes(&cfg.data_dir);
        let size = |f: &str| std::fs::metadata(cfg.data_dir.join(f)).map_or(0, |m| m.len());
        let wal_bytes = size("sessions.db-wal");
        let size_bytes = size("sessions.db") + wal_bytes;
        let (facts, error) = match self.store_facts() {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e)),
        };
        crate::observe::Look {
            sessions: live,
            states: states.into_values().collect(),
            store: crate::observe::StoreLook {
                free_bytes,
                size_bytes,
                wal_bytes,
                facts,
                epsilon_budget: cfg.dp_epsilon_budget,
                error,
            },
            stuck: self
                .stuck()
                .iter()
                .map(|s| format!("{}: no progress for {:.1} s", s.public_name(), s.silent.as_secs_f64()))
                .collect(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            refusals: self.refusals.lock().unwrap().iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// The store's facts (audit head, last backup, budget spent), read on the writer thread at
    /// most every [`FACTS_FRESH`] and waited for at most [`FACTS_WAIT`]: however many callers ask
    /// for health or metrics, the writer answers one at a time: a caller that finds a read under
    /// way waits for it and takes what it read.
    fn store_facts(&self) -> Result<bci2token_store::StoreFacts, String> {
        let cached = || self.facts.read().unwrap().as_ref().map(|(at, f)| (*at, f.clone()));
        // One caller reads; the others wait for it (at most FACTS_WAIT) and take what it read.
        let _refreshing = self.facts_refresh.lock().unwrap();
        if let Some((at, f)) = cached() {
            if at.elapsed() < FACTS_FRESH {
                return f;
            }
        }
        let read = self.store.call_within(FACTS_WAIT, |s| s.facts().map_err(|e| e.to_string())).and_then(|r| r);
        *self.facts.write().unwrap() = Some((Instant::now(), read.clone()));
        read
    }

    /// The next look at the store's facts reads them again (the cached ones stay until then).
    fn facts_are_stale(&self) {
        if let Some((at, _)) = self.facts.write().unwrap().as_mut() {
            *at = Instant::now().checked_sub(FACTS_FRESH).unwrap_or(*at);
        }
    }

    /// Subscribes to a running session's events.
    pub fn follow(&self, caller: &Caller, id: &str, options: &FollowOptions) -> Result<Followed, ApiError> {
        self.guarded(caller, Op::Follow, id, || self.subscribe(caller, id, options))
    }

    /// Audits a refusal, at most `audit_refusals_per_minute` entries per uid: beyond that they are
    /// counted, and the count goes into the uid's next entry or, when the caller has calmed down,
    /// an entry of its own ([`Self::audit_suppressed_refusals`]): refusals cannot flood the log,
    /// and none goes unrecorded.
    pub fn audit_refusal(&self, caller: &Caller, action: &str, object: &str, message: &str) {
        {
            let mut refusals = self.refusals.lock().unwrap();
            // Actions are the daemon's own names, a few dozen at most.
            *refusals.entry(bounded(action)).or_default() += 1;
        }
        let per_minute = self.config.read().unwrap().audit_refusals_per_minute as f64;
        let suppressed = {
            let mut log = self.refusal_log.lock().unwrap();
            if log.len() > 65_536 {
                log.retain(|_, r| r.suppressed > 0);
            }
            let entry = log.entry(caller.uid).or_insert_with(|| RefusalLog::new(per_minute));
            if entry.bucket.take(per_minute / 60.0, per_minute).is_err() {
                entry.suppressed += 1;
                return;
            }
            std::mem::take(&mut entry.suppressed)
        };
        let outcome = if suppressed > 0 {
            format!("refused: {message} (and {suppressed} earlier refusal(s) of this uid not logged one by one)")
        } else {
            format!("refused: {message}")
        };
        self.audit(caller, action, object, &outcome);
    }

    /// Writes the counts of refusals not yet in the audit log, for uids whose allowance has come
    /// back (called every minute).
    pub fn audit_suppressed_refusals(&self) {
        let per_minute = self.config.read().unwrap().audit_refusals_per_minute as f64;
        let due: Vec<(u32, u64)> = {
            let mut log = self.refusal_log.lock().unwrap();
            log.iter_mut()
                .filter(|(_, r)| r.suppressed > 0)
                .filter_map(|(uid, r)| {
                    r.bucket
                        .take(per_minute / 60.0, per_minute)
                        .ok()
                        .map(|()| (*uid, std::mem::take(&mut r.suppressed)))
                })
                .collect()
        };
        for (uid, n) in due {
            let caller = Caller { uid, gid: u32::MAX, pid: None, groups: vec![], admin_by_polkit: false };
            self.audit(&caller, "refusals", "", &format!("refused: {n} refusal(s) of this uid not logged one by one"));
        }
    }

    /// Appends to the audit log and writes the entry's sequence number and MAC to the daemon's
    /// log, which anchors the chain's head outside the database.
    fn audit(&self, caller: &Caller, action: &str, object: &str, outcome: &str) {
        let store = &self.store;
        let t = crate::wall_clock::wall_now();
        let (uid, pid) = (caller.uid, caller.pid.and_then(|p| u32::try_from(p).ok()));
        let (a, o, r) = (bounded(action), bounded(object), bounded(outcome));
        let (action, object, outcome) = (a.clone(), o.clone(), r.clone());
        match store.call(move |s| s.audit_append(t, uid, pid, &a, &o, &r)).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(entry) => log::info!(
                caller_uid = uid;
                "audit {}: {action} {object} by uid {uid}: {outcome} (mac {})",
                entry.seq,
                entry.mac.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
            ),
            Err(e) => log::error!(caller_uid = uid; "audit: {action} {object} by uid {uid} could not be recorded: {e}"),
        }
    }

    fn status_info(&self, caller: &Caller) -> StatusInfo {
        // The configuration is copied out first: no lock is taken while `sessions` is held except
        // `starting` (a reload waiting for `config` must never wait on a session start).
        let cfg = self.config();
        let role = role_of(caller, cfg.mode, &cfg.admin_group, &cfg.socket_group);
        let caller_role = role.as_str().to_string();
        let drivers = self.registry.read().unwrap().len();
        let (sessions_active, sessions_total) = {
            let sessions = self.sessions.lock().unwrap();
            (sessions.iter().filter(|s| s.is_active()).count(), sessions.len())
        };
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: bci2token_api::PROTOCOL_VERSION,
            mode: cfg.mode.as_str().to_string(),
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            sessions_active,
            sessions_total,
            max_sessions: cfg.max_sessions,
            drivers,
            data_dir: cfg.data_dir.display().to_string(),
            socket: cfg.socket_path().display().to_string(),
            caller_role,
            stuck: self
                .stuck()
                .iter()
                .map(|stuck| {
                    // A session's acquisition thread is named after its id: only an admin sees
                    // the ids of other people's sessions (as in `session list`).
                    let name = if role == Role::Admin { &stuck.name } else { stuck.public_name() };
                    let background = if stuck.background { " (background)" } else { "" };
                    format!("{name}{background}: no progress for {:.1} s", stuck.silent.as_secs_f64())
                })
                .collect(),
        }
    }

    /// The worker threads silent for longer than the watchdog allows (see [`STUCK_AFTER`]).
    pub fn stuck(&self) -> Vec<bci2token_sched::Stuck> {
        self.heartbeats.stuck(self.stuck_after)
    }

    fn driver_list(&self) -> DriverList {
        let reg = self.registry.read().unwrap();
        DriverList { drivers: reg.infos(), failed: reg.failures().to_vec() }
    }

    /// What the drivers (or `only` the one named) can open now. The registry is not held while
    /// they probe (a probe may take seconds; a reload must not wait for it). One request probes
    /// at a time, [`HOSTS_AT_ONCE`] drivers side by side; the next finds the answers of the last
    /// 2 s ready ([`Driver::probe`]). So however many callers ask, there are that many probe
    /// threads and hosts at most.
    fn probe_devices(&self, only: Option<&str>) -> Result<DeviceList, ApiError> {
        let drivers: Vec<Arc<Driver>> = {
            let reg = self.registry.read().unwrap();
            if let Some(name) = only {
                if reg.get(name).is_none() {
                    return Err(unknown_driver(name, &reg));
                }
            }
            reg.drivers().filter(|d| only.is_none_or(|n| n == d.name)).cloned().collect()
        };
        let cfg = self.config();
        let probing = self.probing.lock().unwrap_or_else(|p| p.into_inner());
        let probed = at_most(HOSTS_AT_ONCE, &drivers, |d| d.probe(&cfg));
        drop(probing);
        let mut list = DeviceList { devices: Vec::new(), errors: Vec::new() };
        for (driver, result) in drivers.iter().zip(probed) {
            let result = result.unwrap_or_else(|_| {
                Err(DriverError { driver: driver.name.clone(), message: "its probe panicked".into(), panicked: true })
            });
            match result {
                Ok(devices) => list.devices.extend(devices.into_iter().map(|d| DeviceEntry {
                    driver: driver.name.clone(),
                    id: d.id,
                    description: d.description,
                    config: d.config,
                })),
                Err(e) => {
                    list.errors.push(PluginFailure { file: driver.path.display().to_string(), error: e.to_string() })
                }
            }
        }
        Ok(list)
    }

    fn find(&self, id: &str) -> Result<Arc<Session>, ApiError> {
        self.sessions.lock().unwrap().iter().find(|s| s.id == id).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no session `{id}`; `bci2tokenctl session list` shows the sessions"),
            )
        })
    }

    /// A session that belongs to someone else is shown, followed or stopped only for an admin.
    fn find_owned(&self, caller: &Caller, id: &str, what: &str) -> Result<Arc<Session>, ApiError> {
        let session = self.find(id)?;
        self.owner_or_admin(caller, session.started_by.uid, id, what)?;
        Ok(session)
    }

    /// An admin by the groups (or root): what gives a caller the sessions of others. polkit's
    /// yes to one admin action does not (it names the action, not other people's sessions).
    fn admin_by_group(&self, caller: &Caller) -> bool {
        self.role(&Caller { admin_by_polkit: false, ..caller.clone() }) == Role::Admin
    }

    fn owner_or_admin(&self, caller: &Caller, owner: u32, id: &str, what: &str) -> Result<(), ApiError> {
        if owner == caller.uid || self.admin_by_group(caller) {
            return Ok(());
        }
        let group = self.config.read().unwrap().admin_group.clone();
        Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "session `{id}` belongs to another user; only its owner or an admin (group `{group}`) may {what} it"
            ),
        ))
    }

    /// Holds a place for a session of `caller` against `max_sessions` and `max_sessions_per_uid`
    /// (counting the running sessions and the starts in progress), or says which limit is reached.
    fn reserve_start(&self, caller: &Caller, cfg: &Config) -> Result<StartSlot<'_>, ApiError> {
        // Admins are not held to the per-uid limit (as at the socket's door). Decided before the
        // locks: `config` is never taken while `sessions` is held.
        let unlimited = self.role(caller) == Role::Admin;
        let sessions = self.sessions.lock().unwrap();
        // Checked under the lock stop_all takes its list of sessions with: a start either comes
        // before (and is stopped with the rest) or is refused.
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ApiError::new(
                ErrorCode::Internal,
                "bci2tokend is stopping; start the session after it restarts",
            ));
        }
        let mut starting = self.starting.lock().unwrap();
        let active = sessions.iter().filter(|s| s.is_active()).count() + starting.values().sum::<usize>();
        if active >= cfg.max_sessions {
            return Err(ApiError::new(
                ErrorCode::LimitReached,
                format!(
                    "{active} sessions are running, the limit is max_sessions = {}; stop one first",
                    cfg.max_sessions
                ),
            ));
        }
        let mine = sessions.iter().filter(|s| s.is_active() && s.started_by.uid == caller.uid).count()
            + starting.get(&caller.uid).copied().unwrap_or(0);
        if !unlimited && mine >= cfg.max_sessions_per_uid {
            return Err(ApiError::new(
                ErrorCode::LimitReached,
                format!(
                    "uid {} runs {mine} sessions, the limit is max_sessions_per_uid = {}; stop one first",
                    caller.uid, cfg.max_sessions_per_uid
                ),
            ));
        }
        *starting.entry(caller.uid).or_insert(0) += 1;
        Ok(StartSlot { service: self, uid: caller.uid })
    }

    /// The configuration handed to the driver: the caller's keys, descriptors in place of their
    /// indices, and the host keys (`_…`) only the daemon sets: `_caller_paths` (whether the driver
    /// may open a file the caller names by path: `--user` only) and the admin's `[drivers.NAME]`.
    fn driver_config(
        &self,
        caller: &Caller,
        cfg: &Config,
        (driver, host_keys): (&str, bool),
        config: &bci2token_api::ConfigMap,
        fds: &mut Passed,
    ) -> Result<(bci2token_api::ConfigMap, Vec<OwnedFd>), ApiError> {
        let mut out = bci2token_api::ConfigMap::new();
        let mut held = Vec::new();
        for (key, value) in config {
            if bci2token_driver_abi::plugin::is_host_key(key) {
                return Err(ApiError::new(
                    ErrorCode::InvalidConfig,
                    format!(
                        "config key `{key}` is set by the daemon's administrator ([drivers.{driver}] in \
                         bci2tokend.toml), not per session"
                    ),
                ));
            }
            let value = match value {
                serde_json::Value::String(p) if cfg.mode == Mode::System && bci2token_api::is_file_key(key) => {
                    return Err(ApiError::new(
                        ErrorCode::PermissionDenied,
                        format!(
                            "config key `{key}` ({p}): the system daemon opens no file by a caller's path; pass the \
                             file as a descriptor (bci2tokenctl does this)"
                        ),
                    ));
                }
                serde_json::Value::Object(_) => {
                    let Ok(FileArg::Fd { fd, name }) = serde_json::from_value::<FileArg>(value.clone()) else {
                        return Err(ApiError::new(
                            ErrorCode::BadRequest,
                            format!("config key `{key}`: an object must be a passed file {{\"fd\": N, \"name\": ...}}"),
                        ));
                    };
                    // A recording or settings file, not a pipe or device a driver could hang on.
                    let shown = format!("config key `{key}` ({})", bounded(&name));
                    let file = take_fd(caller, fds, fd, Use::Read, &shown)?;
                    let value = serde_json::json!({ "fd": file.as_raw_fd(), "name": name });
                    held.push(file);
                    value
                }
                other => other.clone(),
            };
            out.insert(key.clone(), value);
        }
        if host_keys {
            out.insert("_caller_paths".into(), (cfg.mode == Mode::User).into());
            for (key, value) in cfg.driver_settings.get(driver).into_iter().flatten() {
                out.insert(format!("_{key}"), value.clone());
            }
        } else if cfg.driver_settings.contains_key(driver) {
            log::warn!(
                "driver `{driver}` predates host keys (ABI 1.2): its [drivers.{driver}] settings are not passed"
            );
        }
        Ok((out, held))
    }

    fn start_session(&self, caller: &Caller, start: StartRequest, fds: &mut Passed) -> Result<Started, ApiError> {
        let StartRequest { driver, config, model, follow, lsl_outlets, subject } = start;
        let driver = driver.as_str();
        let cfg = self.config();
        let loaded = match model {
            Some(spec) => Some(self.load_model(caller, &spec)?),
            None if !cfg.default_model.is_empty() => Some(self.load_model_trusted(&cfg.default_model)?),
            None => None,
        };
        // What a session keeps of the caller's text (in memory, in the store, in every listing)
        // is bounded.
        if serde_json::to_vec(&config).map_or(usize::MAX, |v| v.len()) > MAX_SESSION_CONFIG_BYTES {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("the session's settings take more than {} KiB", MAX_SESSION_CONFIG_BYTES >> 10),
            ));
        }
        if subject
            .as_ref()
            .is_some_and(|s| s.chars().count() > 128 || s.chars().any(bci2token_driver_abi::host::unprintable))
        {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`subject` is a pseudonym: at most 128 characters, no control or bidirectional formatting characters",
            ));
        }
        // A store whose file system is full would stop the recording at its first write.
        if cfg.record {
            self.store.check_room().map_err(|e| ApiError::new(ErrorCode::LimitReached, e))?;
        }
        let slot = self.reserve_start(caller, &cfg)?;
        let plugin = {
            let reg = self.registry.read().unwrap();
            Arc::clone(reg.get(driver).ok_or_else(|| unknown_driver(driver, &reg))?)
        };
        // Host keys came with ABI 1.2: an older plugin would refuse them, and it cannot be told
        // that callers' paths are not to be opened, so a system daemon does not run it.
        let host_keys = plugin.abi >= (1, 2);
        if !host_keys && cfg.mode == Mode::System {
            let (major, minor) = plugin.abi;
            return Err(ApiError::new(
                ErrorCode::DriverError,
                format!(
                    "driver `{driver}` is built for driver ABI {major}.{minor}; the system daemon runs drivers of ABI 1.2 \
                     or later (which refuse callers' paths and take the admin's settings as host keys): install an \
                     updated driver package"
                ),
            ));
        }
        let (driver_config, held) = self.driver_config(caller, &cfg, (driver, host_keys), &config, fds)?;
        let readable = match cfg.driver_isolation {
            Isolation::Process => crate::driver_host::readable_paths(&cfg, (&plugin.path, driver), &driver_config),
            Isolation::InProcess => Default::default(),
        };
        let limits = Limits {
            memory_mib: cfg.driver_memory_limit,
            read_grace: std::time::Duration::from_secs_f64(cfg.driver_hang_timeout),
            restarts: cfg.driver_restarts,
        };
        let opened = Source::open(cfg.driver_isolation, &plugin, &driver_config, &held, readable, limits);
        let device = opened.map_err(|e| {
            let code = if e.panicked { ErrorCode::DriverError } else { ErrorCode::InvalidConfig };
            ApiError::new(code, e.to_string())
        })?;
        // The driver keeps its own duplicates of what it needs.
        drop(held);
        let id = {
            let sessions = self.sessions.lock().unwrap();
            loop {
                let id = new_id();
                if !sessions.iter().any(|s| s.id == id) {
                    break id;
                }
            }
        };
        let fitted = match &loaded {
            Some(m) => {
                let labels: Vec<String> = device.info().channels.iter().map(|c| c.label.clone()).collect();
                let map = bci2token_decoder::fit::fit(&m.manifest, &labels, device.info().sample_rate)
                    .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e))?;
                Some((Arc::clone(m), map))
            }
            None => None,
        };
        let model_name = loaded.as_ref().map(|m| m.name().to_string());
        let session = Arc::new(Session::new(
            id,
            driver.to_string(),
            config,
            model_name,
            caller.clone(),
            &device,
            cfg.subscriber_queue,
        ));
        let outlets = match (&fitted, lsl_outlets || cfg.lsl_outlets) {
            (Some((m, _)), true) => {
                let lsl = self.liblsl(cfg.lsl_library.as_deref())?;
                Some(
                    SessionOutlets::open(&lsl, &session.id, m, &session.description)
                        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?,
                )
            }
            (None, true) if lsl_outlets => {
                return Err(ApiError::new(
                    ErrorCode::InvalidConfig,
                    "LSL outlets publish decoded tokens: give a model with --model (or set default_model)",
                ))
            }
            _ => None,
        };
        let decoding = match fitted {
            Some((m, map)) => Some(
                Decoding::new(
                    session.tag(),
                    Arc::clone(&session.hub),
                    m,
                    map,
                    session.sample_rate,
                    &self.engine,
                    !session.realtime,
                    cfg.decoder_queue,
                    crate::breaker::Breaker::new(
                        cfg.breaker_failures,
                        std::time::Duration::from_secs_f64(cfg.breaker_backoff),
                    ),
                )
                .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e))?,
            ),
            None => None,
        };
        if let (Some(d), Some(o)) = (&decoding, outlets) {
            d.publish_to(o);
        }
        if let Some(s) = subject.filter(|s| !s.trim().is_empty()) {
            session.set_subject(s.trim().to_string());
        }
        session.report_changes_to(self.changes.clone());
        self.heartbeats.register(&session.heartbeat);
        if cfg.record {
            let store = &self.store;
            let meta = serde_json::to_vec(&session.info()).unwrap_or_default();
            let recorder = store
                .record(
                    &session.id,
                    session.created,
                    meta,
                    &session.hub,
                    !session.realtime,
                    Arc::clone(&session.heartbeat),
                )
                .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
            session.record_to(recorder);
        }
        // Subscribe before the first block exists, so `start --follow` misses nothing. A source
        // that is not real time may wait for this first follower.
        let stream = follow.and_then(|f| session.hub.subscribe(f.samples, !session.realtime));
        let settings = PipelineSettings {
            stats_interval: cfg.stats_interval,
            line_frequency: cfg.line_frequency,
            stall_timeout: cfg.session_timeout,
            quality: cfg.quality,
            quality_interval: cfg.quality_interval,
        };
        session
            .spawn(device, settings, decoding)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot start the acquisition thread: {e}")))?;
        let tag = session.tag();
        log::info!(
            session_id = tag.id.as_str(),
            driver = tag.driver.as_str(),
            model = tag.model.as_str(),
            caller_uid = caller.uid;
            "session {}: started with driver `{driver}` by uid {} pid {} ({} channels at {} Hz)",
            session.id,
            caller.uid,
            caller.pid.unwrap_or(0),
            session.channels.len(),
            session.sample_rate
        );
        let info = session.info();
        let mut sessions = self.sessions.lock().unwrap();
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            // stop_all has taken its list already: this one is stopped here.
            drop(sessions);
            session.request_stop();
            session.join();
            return Err(ApiError::new(
                ErrorCode::Internal,
                "bci2tokend is stopping; start the session after it restarts",
            ));
        }
        let _ = self.changes.send(SessionChange::Added(info.id.clone()));
        sessions.push(session);
        // The running session now counts itself: give the place back under the same lock.
        drop(slot);
        for gone in forget_old_sessions(&mut sessions) {
            let _ = self.changes.send(SessionChange::Removed(gone));
        }
        Ok(Started { info, stream })
    }

    fn stop_session(&self, caller: &Caller, id: &str) -> Result<SessionInfo, ApiError> {
        let session = self.find_owned(caller, id, "stop")?;
        if session.is_active() {
            log::info!("session {id}: stop requested by uid {} pid {}", caller.uid, caller.pid.unwrap_or(0));
            session.request_stop();
            session.join();
        }
        Ok(session.info())
    }

    /// Deletes the stored sessions older than `retention_days` (each as `session delete` does,
    /// audited as the daemon's own `retention`). Returns how many were deleted.
    pub fn apply_retention(&self) -> usize {
        let days = self.config.read().unwrap().retention_days;
        if days <= 0.0 {
            return 0;
        }
        let now = match self.wall_clock.trusted_now() {
            Ok(now) => now,
            Err(why) => {
                log::info!("retention: nothing deleted now: {why}");
                return 0;
            }
        };
        let cutoff = now - days * 86_400.0;
        let expired = match self.stored(move |s| s.ended_before(cutoff)) {
            Ok(ids) => ids,
            Err(e) => {
                log::error!("retention: {}", e.message);
                return 0;
            }
        };
        let daemon = Caller {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            pid: None,
            groups: vec![],
            admin_by_polkit: false,
        };
        let mut deleted = 0;
        let total = expired.len();
        for (tried, id) in expired.into_iter().enumerate() {
            // A daemon that is stopping does not go on deleting (each deletion rewrites pages and
            // waits for the store): the rest is deleted after the next start.
            if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                log::info!("retention: stopping; {} expired session(s) left for the next start", total - tried);
                break;
            }
            let result = self.delete_session(&id);
            let outcome = match &result {
                Ok(_) => format!("ok: older than retention_days = {days}"),
                Err(e) => format!("failed: {}", e.message),
            };
            self.audit(&daemon, "retention", &id, &outcome);
            deleted += usize::from(result.is_ok());
        }
        if deleted > 0 {
            log::info!("retention: deleted {deleted} session(s) that ended more than {days} days ago");
        }
        deleted
    }

    /// Runs `f` on the store's writer thread (after the writes queued before it): a session the
    /// store does not have is `not_found`, any other store failure `internal`.
    fn stored<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut bci2token_store::Store) -> Result<T, bci2token_store::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.store.call(f).map_err(|e| ApiError::new(ErrorCode::Internal, e))?.map_err(store_error)
    }

    /// A read-only connection of the request's own to the store ([`StoreReader`]), for reads that
    /// must not hold up the writer thread (exports): it is opened after the writes queued so far
    /// are committed (a session just stopped is complete in it), with the master key in use now.
    /// Only that short step runs on the writer thread.
    fn store_reader(&self) -> Result<StoreReader, ApiError> {
        let (path, master) = self.stored(|s| Ok((s.path().to_path_buf(), Arc::clone(s.master()))))?;
        StoreReader::open(&path, master).map_err(store_error)
    }

    /// Deletes a stored session: its wrapped key, then its rows, then the WAL (crypto-shredding).
    fn delete_session(&self, id: &str) -> Result<Deleted, ApiError> {
        if let Ok(live) = self.find(id) {
            if live.is_active() {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("session `{id}` is still running; stop it first (bci2tokenctl session stop {id})"),
                ));
            }
        }
        let owned = id.to_string();
        let readers = Arc::clone(&self.readers);
        // The WAL is truncated now, or, while exports read the store (a checkpoint would wait for
        // them, and recording with it), when the last of them ends.
        let truncated = self.stored(move |s| {
            s.delete_session_rows(&owned)?;
            Ok(truncate_wal(s, &readers))
        })?;
        let mut sessions = self.sessions.lock().unwrap();
        if sessions.iter().any(|s| s.id == id) {
            sessions.retain(|s| s.id != id);
            let _ = self.changes.send(SessionChange::Removed(id.to_string()));
        }
        drop(sessions);
        let wal = if truncated { "WAL truncated" } else { "WAL truncated when the exports reading now end" };
        log::info!("session {id}: deleted from the store (key destroyed, rows zeroed, {wal})");
        Ok(Deleted { deleted: id.to_string() })
    }

    /// A new master key: written beside the old one, every wrapped key re-wrapped in one
    /// transaction, then the new key file replaces the old (a crash in between is recovered at
    /// start by whichever key opens the store).
    fn rotate_key(&self) -> Result<KeyRotation, ApiError> {
        let dir = self.config.read().unwrap().data_dir.clone();
        let sessions = self
            .store
            .call(move |s| -> Result<usize, String> {
                let next = Arc::new(s.master().begin_rotation(&dir)?);
                let n = s.rotate_master(next).map_err(|e| e.to_string())?;
                bci2token_store::MasterKey::finish_rotation(&dir)?;
                Ok(n)
            })
            .map_err(|e| ApiError::new(ErrorCode::Internal, e))?
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e))?;
        log::info!("store: master key rotated; {sessions} session key(s) re-wrapped");
        Ok(KeyRotation { rewrapped_sessions: sessions as u64 })
    }

    /// An encrypted copy of the store in a new file the caller could have created. SQLite writes
    /// the copy into the daemon's own directory; only the file opened safely for the caller is
    /// then written in the caller's place.
    fn backup_to(&self, caller: &Caller, path: &FileArg, fds: &mut Passed) -> Result<BackupDone, ApiError> {
        use crate::caller_files::Scratch;
        let (data_dir, mode) = {
            let cfg = self.config.read().unwrap();
            (cfg.data_dir.clone(), cfg.mode)
        };
        let out = crate::caller_files::output(caller, mode, path, fds)?;
        let scratch = Scratch::new(&data_dir, "backup");
        let shown = out.shown.clone();
        let written = bci2token_store::Store::backup(&data_dir.join("sessions.db"), &scratch.0)
            .map_err(|e| e.to_string())
            .and_then(|pages| {
                let mut copy = std::fs::File::open(&scratch.0).map_err(|e| e.to_string())?;
                std::io::copy(&mut copy, &mut &out.file)
                    .and_then(|_| out.file.sync_all())
                    .map_err(|e| format!("{shown}: {e}"))?;
                Ok(pages)
            });
        let pages = written.map_err(|e| {
            out.discard();
            ApiError::new(ErrorCode::Internal, e)
        })?;
        log::info!("store backed up to {shown} ({pages} pages)");
        Ok(BackupDone { path: shown, pages: u64::try_from(pages).unwrap_or(0) })
    }

    /// A stored session, decrypted, as EDF+, BDF+ or CSV in a new file the caller could create.
    fn export_session(
        &self,
        caller: &Caller,
        id: &str,
        format: &str,
        (path, fds): (&FileArg, &mut Passed),
        dp: Option<DpRequest>,
    ) -> Result<ExportDone, ApiError> {
        if !matches!(format, "edf" | "bdf" | "csv" | "events") {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("no export format `{format}`; use edf, bdf, csv or events"),
            ));
        }
        let (_counted, mut reader, meta, info) = self.open_stored(caller, id, "export")?;
        // Pass 1: every chunk authenticated (nothing is written when one fails), and the blocks'
        // index, ranges and notes gathered, one chunk at a time.
        let mut damaged: Vec<String> =
            meta.iter().filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string())).collect();
        let mut scan = match &info {
            Some(Ok(info)) => Some(crate::export::Scan::new(info, dp.is_none() && matches!(format, "edf" | "bdf"))),
            _ => None,
        };
        let mut undecodable: Option<String> = None;
        reader
            .for_each(id, Kind::Block, |seq, chunk| {
                match chunk {
                    Err(e) => damaged.push(e.to_string()),
                    Ok(plain) => {
                        if let (Some(scan), None) = (scan.as_mut(), &undecodable) {
                            match crate::export::decode_block(&plain) {
                                Ok(block) => scan.block(seq, &block),
                                Err(e) => undecodable = Some(e),
                            }
                        }
                    }
                }
                std::ops::ControlFlow::<()>::Continue(())
            })
            .map_err(store_error)?;
        reader
            .for_each(id, Kind::Event, |_, chunk| {
                match chunk {
                    Err(e) => damaged.push(e.to_string()),
                    Ok(plain) => {
                        if let (Some(scan), Ok(event)) =
                            (scan.as_mut(), serde_json::from_slice::<bci2token_api::Event>(&plain))
                        {
                            scan.event(&event);
                        }
                    }
                }
                std::ops::ControlFlow::<()>::Continue(())
            })
            .map_err(store_error)?;
        if !damaged.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "{} chunk(s) of session `{id}` fail authentication, nothing was exported: {}",
                    damaged.len(),
                    damaged.join("; ")
                ),
            ));
        }
        let info = match info {
            Some(Ok(info)) => info,
            Some(Err(e)) => {
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    format!("session `{id}`: its metadata does not parse: {e}"),
                ))
            }
            None => {
                return Err(ApiError::new(ErrorCode::Internal, format!("session `{id}` has no metadata in the store")))
            }
        };
        if let Some(e) = undecodable {
            return Err(ApiError::new(ErrorCode::Internal, format!("session `{id}`: {e}")));
        }
        if format == "events" && dp.is_none() {
            // Pass 2 of an events export: the events again, as stored, one JSON line each.
            let output = crate::caller_files::output(caller, self.config.read().unwrap().mode, path, fds)?;
            let mut out = std::io::BufWriter::new(&output.file);
            let written = crate::export::write_events(&mut out, &info, |write| {
                let stop = reader.for_each(id, Kind::Event, |_, chunk| {
                    match chunk.map_err(|e| e.to_string()).and_then(|plain| write(&plain)) {
                        Ok(()) => std::ops::ControlFlow::Continue(()),
                        Err(e) => std::ops::ControlFlow::Break(e),
                    }
                });
                stop.map_err(|e| e.to_string())?.map_or(Ok(()), Err)
            });
            drop(out);
            if let Err(e) = written {
                output.discard();
                return Err(ApiError::new(ErrorCode::Internal, format!("exporting session `{id}`: {e}")));
            }
            log::info!("session {id}: exported as events to {}", output.shown);
            return Ok(ExportDone::Recording(Exported { id: id.into(), format: "events".into(), path: output.shown }));
        }
        let layout = scan
            .expect("a scan for parsed metadata")
            .finish()
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, format!("exporting session `{id}`: {e}")))?;
        // Pass 2: the blocks again, by the index, one record at a time.
        let mut blocks = reader.lookup(id, Kind::Block).map_err(store_error)?;
        let output = crate::caller_files::output(caller, self.config.read().unwrap().mode, path, fds)?;
        if let Some(dp) = dp {
            return self.release_features(&info, &layout, &mut blocks, output, dp).map(ExportDone::Features);
        }
        let mut out = std::io::BufWriter::new(&output.file);
        let written = match format {
            "csv" => crate::export::write_csv(&mut out, &info, &layout, &mut blocks),
            f => crate::export::write_edf(&mut out, &info, &layout, &mut blocks, f == "bdf"),
        }
        .and_then(|()| std::io::Write::flush(&mut out).map_err(|e| e.to_string()));
        drop(out);
        if let Err(e) = written {
            output.discard();
            return Err(ApiError::new(ErrorCode::InvalidConfig, format!("exporting session `{id}`: {e}")));
        }
        log::info!("session {id}: exported as {format} to {}", output.shown);
        Ok(ExportDone::Recording(Exported { id: id.to_string(), format: format.to_string(), path: output.shown }))
    }

    /// A stored session opened for its owner or an admin (`verb` names the operation in a
    /// refusal): the reader holding its snapshot (counted, so that the WAL is not truncated under
    /// it), its metadata chunks and the parsed metadata. A session still running is refused.
    #[allow(clippy::type_complexity)]
    fn open_stored(
        &self,
        caller: &Caller,
        id: &str,
        verb: &str,
    ) -> Result<
        (
            ReaderCount<'_>,
            bci2token_store::StoreReader,
            bci2token_store::store::Chunks,
            Option<Result<SessionInfo, String>>,
        ),
        ApiError,
    > {
        if let Ok(live) = self.find(id) {
            self.owner_or_admin(caller, live.started_by.uid, id, verb)?;
            if live.is_active() {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("session `{id}` is still running; stop it first"),
                ));
            }
        }
        // The owner first, from the session's sealed metadata: nothing else is read for a stranger.
        // Everything is read on this (the request's) thread through a reader of its own; a key
        // rotation committed between taking the key and the reader's snapshot is retried once.
        // (Locals drop in reverse order: the reader closes before its count does.)
        let counted = ReaderCount::new(self);
        let (reader, meta) = {
            let mut reader = self.store_reader()?;
            match reader.read_all(id, Kind::Meta) {
                Err(bci2token_store::StoreError::Key { .. }) => {
                    reader = self.store_reader()?;
                    let meta = reader.read_all(id, Kind::Meta).map_err(store_error)?;
                    (reader, meta)
                }
                meta => (reader, meta.map_err(store_error)?),
            }
        };
        let info: Option<Result<SessionInfo, String>> = match meta.first().map(|(_, r)| r) {
            Some(Ok(plain)) => Some(serde_json::from_slice::<SessionInfo>(plain).map_err(|e| e.to_string())),
            _ => None,
        };
        let owner = info.as_ref().and_then(|i| i.as_ref().ok()).map(|i| i.started_by.uid);
        match owner {
            Some(uid) => self.owner_or_admin(caller, uid, id, verb)?,
            None if self.admin_by_group(caller) => {}
            None => {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!("the owner of session `{id}` cannot be read; only an admin may {verb} it"),
                ))
            }
        }
        Ok((counted, reader, meta, info))
    }

    /// A differentially private release of per-window band powers (see private_release), charged
    /// to the subject's budget before anything is written, then computed and written one window at
    /// a time.
    fn release_features(
        &self,
        info: &SessionInfo,
        layout: &crate::export::Layout,
        blocks: impl crate::export::Blocks,
        output: crate::caller_files::Output,
        (features, epsilon, delta, clip): DpRequest,
    ) -> Result<FeatureRelease, ApiError> {
        use crate::private_release as dp;
        let bad = |m: String| ApiError::new(ErrorCode::BadRequest, m);
        if features != "bandpower" {
            return Err(bad(format!("no feature set `{features}`; use bandpower")));
        }
        let (epsilon, delta) = match (epsilon, delta) {
            (Some(e), Some(d)) => (e, d),
            _ => return Err(bad("a private release needs dp_epsilon and dp_delta".into())),
        };
        let clip = clip.unwrap_or(100.0);
        dp::check(epsilon, delta, clip).map_err(bad)?;
        let mut windows = dp::windows(info, layout, clip).map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
        if windows.count == 0 {
            return Err(bad(format!("session `{}` is shorter than one {} s window", info.id, dp::WINDOW_SECONDS)));
        }
        let columns = windows.columns.clone();
        let subject = info.subject.clone().unwrap_or_else(|| format!("session:{}", info.id));
        // The output is already open: a file that cannot be written does not cost budget.
        let cfg = self.config();
        let limit = (cfg.dp_epsilon_budget, cfg.dp_delta_budget);
        let who = subject.clone();
        let spent = self
            .stored(move |s| s.dp_spend(&who, epsilon, delta, limit))
            .inspect_err(|_| output.discard())?
            .map_err(|(e, d)| {
                output.discard();
                ApiError::new(
                    ErrorCode::LimitReached,
                    format!(
                        "the privacy budget of {subject} would be exceeded: spent ε {e} of {}, δ {d} of {}; this release \
                         asks ε {epsilon}, δ {delta}. Nothing was released",
                        limit.0, limit.1
                    ),
                )
            })?;
        let sigma = dp::gaussian_sigma(clip, columns.len(), epsilon, delta);
        let mut noise = dp::Gaussian::new();
        let shown = output.shown.clone();
        let mut out = std::io::BufWriter::new(&output.file);
        let mut line = format!("window_start_s,{}\n", columns.join(","));
        let written = std::io::Write::write_all(&mut out, line.as_bytes())
            .map_err(|e| format!("{shown}: {e}"))
            .and_then(|()| {
                windows.for_each(layout, blocks, |start, row| {
                    use std::fmt::Write as _;
                    line.clear();
                    let _ = write!(line, "{start}");
                    for v in row {
                        let _ = write!(line, ",{}", v + sigma * noise.next());
                    }
                    line.push('\n');
                    std::io::Write::write_all(&mut out, line.as_bytes()).map_err(|e| format!("{shown}: {e}"))
                })
            })
            .and_then(|()| std::io::Write::flush(&mut out).map_err(|e| format!("{shown}: {e}")));
        drop(out);
        if let Err(e) = written {
            output.discard();
            return Err(ApiError::new(ErrorCode::Internal, e));
        }
        log::info!(
            "session {}: released {} windows × {} band powers to {} with ε {epsilon}, δ {delta} (σ {sigma:.3}); {subject} has \
             spent ε {}, δ {}",
            info.id,
            windows.count,
            columns.len(),
            shown,
            spent.0,
            spent.1
        );
        Ok(FeatureRelease {
            id: info.id.clone(),
            path: shown,
            features: columns.len() as u64,
            windows: windows.count,
            epsilon,
            delta,
            clip,
            sigma,
            subject,
            budget: PrivacyBudget {
                epsilon_spent: spent.0,
                delta_spent: spent.1,
                epsilon_limit: limit.0,
                delta_limit: limit.1,
            },
        })
    }

    /// Replaces the store with a backup; no session may be running.
    fn restore_from(&self, caller: &Caller, path: &FileArg, fds: &mut Passed) -> Result<Restored, ApiError> {
        use crate::caller_files::Scratch;
        let mut input = crate::caller_files::input(caller, self.config.read().unwrap().mode, path, fds)?;
        if self.active_sessions() > 0 {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "sessions are running; stop them before restoring (a restore replaces everything stored)",
            ));
        }
        // The daemon works on its own copy: the caller's file is only read.
        let scratch = Scratch::new(&self.config.read().unwrap().data_dir, "restore");
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&scratch.0)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{}: {e}", scratch.0.display())))?;
        let shown = bounded(path.display());
        std::io::copy(&mut input, &mut copy)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{shown}: {e}")))?;
        drop(copy);
        let src = scratch.0.clone();
        let shown_in_error = shown.clone();
        self.store
            .call(move |s| {
                s.restore(&src).map_err(|e| e.to_string().replace(&src.display().to_string(), &shown_in_error))
            })
            .map_err(|e| ApiError::new(ErrorCode::Internal, e))?
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e))?;
        drop(scratch);
        let mut sessions = self.sessions.lock().unwrap();
        for gone in sessions.iter().filter(|s| !s.is_active()) {
            let _ = self.changes.send(SessionChange::Removed(gone.id.clone()));
        }
        sessions.retain(|s| s.is_active());
        drop(sessions);
        log::info!("store restored from {shown}");
        Ok(Restored { restored_from: shown })
    }

    fn audit_entries(&self, since: Option<f64>) -> Result<Vec<AuditEntryInfo>, ApiError> {
        let entries = self.stored(move |s| s.audit_list(since))?;
        let list = entries
            .into_iter()
            .map(|e| AuditEntryInfo {
                seq: e.seq,
                t: e.t,
                uid: e.uid,
                pid: e.pid,
                action: e.action,
                object: e.object,
                outcome: e.outcome,
                mac: e.mac.iter().map(|b| format!("{b:02x}")).collect(),
            })
            .collect();
        Ok(list)
    }

    fn verify_audit(&self) -> Result<AuditVerification, ApiError> {
        let (verdict, entries) = self.stored(|s| Ok((s.audit_verify()?, s.audit_list(None)?.len() as u64)))?;
        let v = match verdict {
            Ok(_) => AuditVerification { entries, intact: true, problem: None },
            Err(b) => AuditVerification { entries, intact: false, problem: Some(b.to_string()) },
        };
        Ok(v)
    }

    fn subscribe(&self, caller: &Caller, id: &str, options: &FollowOptions) -> Result<Followed, ApiError> {
        let session = self.find_owned(caller, id, "follow")?;
        let stream = session.hub.subscribe(options.samples, false).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("session `{id}` has ended ({}); there is nothing to follow", session.state().as_str()),
            )
        })?;
        Ok(Followed { info: session.info(), stream })
    }

    /// Finds a model package a caller names: a name looked up in model_path, or a directory
    /// (with `--user`, whose callers are the daemon's own user, or for an admin: the documented
    /// exception). A system daemon does not look at a path for anyone else, not even to say
    /// whether it exists.
    fn find_model(&self, caller: &Caller, spec: &str) -> Result<PathBuf, ApiError> {
        if is_model_name(spec) {
            // The caller's own trained model of that name first (`model train` refuses a shared name).
            if let Some(dir) = self.find_personal(caller, spec) {
                return Ok(dir);
            }
            return self.find_model_trusted(spec);
        }
        let mode = self.config.read().unwrap().mode;
        if !spec.contains('/') {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("`{spec}` is not a model name (letters, digits, `.`, `-`, `_`) nor a directory"),
            ));
        }
        if mode == Mode::System && self.role(caller) != Role::Admin {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "the system daemon takes models by name from its model_path (`bci2tokenctl models` lists them); \
                 a model directory can be given by an admin only",
            ));
        }
        self.find_model_trusted(spec)
    }

    /// Finds a model package: a directory holding `model.toml`, or a name looked up in model_path
    /// (a subdirectory of that name, or a package whose manifest has that name). For names and
    /// directories that are not a caller's: the admin's `default_model`, or checked specs.
    fn find_model_trusted(&self, spec: &str) -> Result<PathBuf, ApiError> {
        let direct = Path::new(spec);
        if spec.contains('/') && direct.join(MANIFEST_FILE).is_file() {
            return Ok(direct.to_path_buf());
        }
        let dirs = self.config.read().unwrap().model_path.clone();
        for dir in dirs.iter().filter(|_| is_model_name(spec)) {
            if dir.join(spec).join(MANIFEST_FILE).is_file() {
                return Ok(dir.join(spec));
            }
        }
        if let Some(found) = model_dirs(&dirs).into_iter().find(|d| Manifest::load(d).is_ok_and(|m| m.name == spec)) {
            return Ok(found);
        }
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no model `{spec}`: not a directory with {MANIFEST_FILE}, nor a model in {}; `bci2tokenctl models` lists them",
                searched.join(":")
            ),
        ))
    }

    /// liblsl, loaded at the first session that asks for outlets (a failure is not remembered:
    /// installing liblsl needs no restart).
    fn liblsl(&self, configured: Option<&Path>) -> Result<Arc<Lsl>, ApiError> {
        let mut slot = self.lsl.lock().unwrap();
        if let Some(lsl) = slot.as_ref() {
            return Ok(Arc::clone(lsl));
        }
        let lsl = Lsl::load(configured)
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, format!("LSL outlets need liblsl: {e}")))?;
        log::info!("loaded liblsl {} from {}", lsl.library_version(), lsl.path().display());
        *slot = Some(Arc::clone(&lsl));
        Ok(lsl)
    }

    /// Loads the model a caller names (see [`Self::find_model`]).
    fn load_model(&self, caller: &Caller, spec: &str) -> Result<Arc<Model>, ApiError> {
        let dir = self.find_model(caller, spec)?;
        self.load_model_dir(dir)
    }

    /// Loads the admin's `default_model`.
    fn load_model_trusted(&self, spec: &str) -> Result<Arc<Model>, ApiError> {
        let dir = self.find_model_trusted(spec)?;
        self.load_model_dir(dir)
    }

    /// Loads a model once (later sessions share it), on the configured device.
    fn load_model_dir(&self, dir: PathBuf) -> Result<Arc<Model>, ApiError> {
        let key = dir.canonicalize().unwrap_or(dir.clone());
        if let Some(m) = self.models.lock().unwrap().get(&key) {
            return Ok(Arc::clone(m));
        }
        let generation = self.models_generation.load(std::sync::atomic::Ordering::SeqCst);
        let cfg = self.config();
        let device = self
            .torch_device
            .get_or_init(|| {
                bci2token_decoder::model::set_threads(cfg.decoder_threads);
                bci2token_decoder::model::choose_device(cfg.decoder_device).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e))?;
        let started = Instant::now();
        let model = Model::load(&dir, device).map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        log::info!(
            "loaded model `{}` {} from {} on {device:?} in {:.0} ms",
            model.name(),
            model.manifest.version,
            dir.display(),
            started.elapsed().as_secs_f64() * 1e3
        );
        let model = Arc::new(model);
        // A package replaced or deleted while this one loaded is not cached (this session keeps
        // what it loaded; the next loads afresh).
        let mut models = self.models.lock().unwrap();
        if self.models_generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            models.insert(key, Arc::clone(&model));
        }
        drop(models);
        Ok(model)
    }

    /// Installs a model package from the files the admin passed: copied into a scratch directory
    /// beside `data_dir/models`, checked there (manifest, TorchScript loads), then moved into place
    /// in one rename.
    fn install_model(
        &self,
        caller: &Caller,
        files: &[FileArg],
        replace: bool,
        fds: &mut Passed,
    ) -> Result<ModelInfo, ApiError> {
        let cfg = self.config();
        let root = cfg.data_dir.join("models");
        let bad = |m: String| ApiError::new(ErrorCode::BadRequest, m);
        if !cfg.model_path.contains(&root) {
            return Err(ApiError::new(
                ErrorCode::InvalidConfig,
                format!("installed models go to {}, which is not in model_path; add it there", root.display()),
            ));
        }
        let mut names = Vec::new();
        for f in files {
            let name = Path::new(f.display()).file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_model_name(name) || names.contains(&name) {
                return Err(bad(format!("`{}`: not a file name of a model package, or given twice", bounded(name))));
            }
            names.push(name);
        }
        for needed in [MANIFEST_FILE, "model.pt"] {
            if !names.contains(&needed) {
                return Err(bad(format!("a model package needs {needed}; give the package's directory")));
            }
        }
        std::fs::create_dir_all(&root)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{}: {e}", root.display())))?;
        let scratch = crate::caller_files::ScratchDir::new(&root, "install")
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{}: {e}", root.display())))?;
        for (f, name) in files.iter().zip(&names) {
            let mut input = crate::caller_files::input(caller, cfg.mode, f, fds)?;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(scratch.path().join(name))
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{name}: {e}")))?;
            std::io::copy(&mut input, &mut out)
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{name}: {e}")))?;
        }
        let invalid = |e: String| {
            ApiError::new(ErrorCode::InvalidConfig, e.replace(&scratch.path().display().to_string(), "the package"))
        };
        let manifest = Manifest::load(scratch.path()).map_err(|e| invalid(e.to_string()))?;
        if !is_model_name(&manifest.name) {
            return Err(invalid(format!("the manifest's name `{}` is not a model name", bounded(&manifest.name))));
        }
        Model::load(scratch.path(), tch::Device::Cpu).map_err(|e| invalid(e.to_string()))?;
        let dest = root.join(&manifest.name);
        let loaded = loaded_key(&dest);
        put_in_place(scratch, &dest, &root, replace, &manifest.name)?;
        self.forget_loaded(&loaded);
        log::info!(
            "model `{}` {} installed in {} by uid {}",
            manifest.name,
            manifest.version,
            dest.display(),
            caller.uid
        );
        Ok(model_info(&dest, manifest))
    }

    /// Sessions started from now on load the package whose [`loaded_key`] this is afresh.
    fn forget_loaded(&self, key: &Path) {
        let mut models = self.models.lock().unwrap();
        self.models_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        models.retain(|loaded, _| !loaded.starts_with(key));
    }

    fn show_model(&self, caller: &Caller, spec: &str) -> Result<ModelInfo, ApiError> {
        let dir = self.find_model(caller, spec)?;
        let manifest = Manifest::load(&dir).map_err(|e| ApiError::new(ErrorCode::InvalidConfig, e.to_string()))?;
        Ok(model_info(&dir, manifest))
    }

    pub fn list_models(&self) -> ModelList {
        let dirs = self.config.read().unwrap().model_path.clone();
        let mut list = ModelList { models: Vec::new(), errors: Vec::new() };
        for dir in model_dirs(&dirs) {
            match Manifest::load(&dir) {
                Ok(m) => list.models.push(model_info(&dir, m)),
                Err(e) => list.errors.push(PluginFailure { file: dir.display().to_string(), error: e.to_string() }),
            }
        }
        list
    }

    /// Stops every session and waits for their threads (shutdown).
    pub fn stop_all(&self) {
        // No session starts from now on, through any door; those being started finish first (a
        // driver's open may take a while), for at most 30 s.
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while !self.starting.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let sessions: Vec<Arc<Session>> = self.sessions.lock().unwrap().clone();
        for s in &sessions {
            s.request_stop();
        }
        for s in &sessions {
            s.join();
        }
    }

    pub fn active_sessions(&self) -> usize {
        self.sessions.lock().unwrap().iter().filter(|s| s.is_active()).count()
    }

    /// Applies a re-read configuration (SIGHUP). Returns what could not be applied without a restart.
    pub fn reload(&self, new: Config) -> Vec<String> {
        // New plugins first, without the configuration locked: a scan may wait for a probe in
        // progress, and every connection reads the configuration.
        let known = self.registry.read().unwrap().files();
        let scan = crate::plugins::inspect(&new, &known);
        let added = self.registry.write().unwrap().add(scan, &new.driver_path);
        if !added.is_empty() {
            log::info!("reload: loaded new drivers: {}", added.join(", "));
        }
        let mut cfg = self.config.write().unwrap();
        let mut not_applied = Vec::new();
        if new.data_dir != cfg.data_dir {
            not_applied.push("data_dir".to_string());
        }
        if new.runtime_dir != cfg.runtime_dir {
            not_applied.push("runtime_dir".to_string());
        }
        if new.log_target != cfg.log_target {
            not_applied.push("log_target".to_string());
        }
        if new.socket_group != cfg.socket_group {
            not_applied.push("socket_group".to_string());
        }
        if new.socket_mode != cfg.socket_mode {
            not_applied.push("socket_mode".to_string());
        }
        if new.bus != cfg.bus {
            not_applied.push("bus".to_string());
        }
        if new.metrics_listen != cfg.metrics_listen || new.metrics_listen_public != cfg.metrics_listen_public {
            not_applied.push("metrics_listen".to_string());
        }
        log::set_max_level(new.log_level);
        // Keys that need a restart keep their running values so status stays truthful.
        let keep = (
            cfg.data_dir.clone(),
            cfg.runtime_dir.clone(),
            cfg.log_target,
            cfg.socket_group.clone(),
            cfg.socket_mode,
            cfg.bus.clone(),
            (cfg.metrics_listen, cfg.metrics_listen_public),
        );
        *cfg = new;
        let metrics;
        (cfg.data_dir, cfg.runtime_dir, cfg.log_target, cfg.socket_group, cfg.socket_mode, cfg.bus, metrics) = keep;
        (cfg.metrics_listen, cfg.metrics_listen_public) = metrics;
        not_applied
    }
}

fn unknown_driver(name: &str, reg: &Registry) -> ApiError {
    let names = reg.names();
    ApiError::new(
        ErrorCode::NotFound,
        if names.is_empty() {
            format!("no driver `{name}`: no driver plugins are loaded (check driver_path)")
        } else {
            format!("no driver `{name}`; loaded drivers: {}", names.join(", "))
        },
    )
}

/// Moves a checked package from its scratch directory to `dest` (inside `root`) in one rename;
/// with `replace`, an old package there steps aside first and comes back if the new one cannot
/// be put in place.
fn put_in_place(
    scratch: crate::caller_files::ScratchDir,
    dest: &Path,
    root: &Path,
    replace: bool,
    name: &str,
) -> Result<(), ApiError> {
    let internal = |e: std::io::Error| ApiError::new(ErrorCode::Internal, format!("{}: {e}", dest.display()));
    let old = if dest.exists() {
        if !replace {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("a model `{name}` is installed already; --replace replaces it"),
            ));
        }
        Some(crate::caller_files::ScratchDir::adopt(dest, root, "replaced").map_err(internal)?)
    } else {
        None
    };
    if let Err(e) = scratch.keep_as(dest) {
        if let Some(aside) = old {
            // Back where it was; if even that fails it stays aside (never removed).
            let aside = aside.release();
            if let Err(back) = std::fs::rename(&aside, dest) {
                log::error!("model `{name}`: the old package stays in {}: {back}", aside.display());
            }
        }
        return Err(internal(e));
    }
    Ok(())
}

/// The key of a package directory in the cache of loaded models: its canonical path (taken
/// before the directory is renamed away, while it still resolves).
fn loaded_key(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

fn model_info(dir: &Path, m: Manifest) -> ModelInfo {
    ModelInfo {
        dir: dir.display().to_string(),
        name: m.name,
        version: m.version,
        description: m.description,
        channels: m.input.channels,
        sample_rate: m.input.sample_rate,
        window_seconds: m.input.window_seconds,
        hop_seconds: m.input.hop_seconds,
        labels: m.output.labels,
        null_label: m.output.null_label,
        tokenizer: m.tokens.tokenizer,
        trained_on: m.provenance.trained_on,
        owner: None,
    }
}

/// Package directories (holding model.toml) directly inside each of `dirs`, sorted.
fn model_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        // Hidden directories are installs in progress (or left by a crash), not packages.
        let mut here: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| p.join(MANIFEST_FILE).is_file())
            .collect();
        here.sort();
        found.extend(here);
    }
    found
}

/// A model name as `--model` takes it: one path component of safe characters, not hidden.
fn is_model_name(spec: &str) -> bool {
    !spec.is_empty()
        && spec.len() <= 128
        && !spec.starts_with('.')
        && spec.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Errors that are refusals (of the caller's rights or limits), audited as such.
fn is_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::PermissionDenied
            | ErrorCode::LimitReached
            | ErrorCode::RateLimited
            | ErrorCode::TooManyConnections
            | ErrorCode::RequestTooLarge
            | ErrorCode::Timeout
    )
}

/// A place held for a session being started; given back when dropped (on failure, or once the
/// running session counts itself).
struct StartSlot<'a> {
    service: &'a Service,
    uid: u32,
}

impl Drop for StartSlot<'_> {
    fn drop(&mut self) {
        let mut starting = self.service.starting.lock().unwrap();
        if let Some(n) = starting.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                starting.remove(&self.uid);
            }
        }
    }
}

/// A uid's allowance of refusals audited one by one (`audit_refusals_per_minute`), and the
/// refusals not written since its last entry.
struct RefusalLog {
    bucket: TokenBucket,
    suppressed: u64,
}

impl RefusalLog {
    fn new(per_minute: f64) -> Self {
        RefusalLog { bucket: TokenBucket::full(per_minute), suppressed: 0 }
    }
}

/// Forgets the oldest ended sessions beyond `ENDED_SESSIONS_KEPT`; returns their ids.
fn forget_old_sessions(sessions: &mut Vec<Arc<Session>>) -> Vec<String> {
    let ended = sessions.iter().filter(|s| !s.is_active()).count();
    let mut excess = ended.saturating_sub(ENDED_SESSIONS_KEPT);
    let mut gone = Vec::new();
    sessions.retain(|s| {
        if excess > 0 && !s.is_active() {
            excess -= 1;
            gone.push(s.id.clone());
            false
        } else {
            true
        }
    });
    gone
}

/// `(features, ε, δ, clip)` of a private release request.
type DpRequest = (String, Option<f64>, Option<f64>, Option<f64>);

/// A store failure as the API says it: a session the store does not have is `not_found`, any
/// other failure `internal`.
fn store_error(e: bci2token_store::StoreError) -> ApiError {
    match e {
        bci2token_store::StoreError::NoSession(id) => {
            ApiError::new(ErrorCode::NotFound, format!("no stored session `{id}`"))
        }
        other => ApiError::new(ErrorCode::Internal, other.to_string()),
    }
}

/// An export's second pass: a session's blocks by sequence number, from the request's reader.
impl crate::export::Blocks for bci2token_store::ChunkLookup<'_> {
    fn block(&mut self, seq: u64) -> Result<crate::export::Block, String> {
        match self.get(seq) {
            Ok(Some(plain)) => crate::export::decode_block(&plain),
            Ok(None) => Err(format!("block {seq} is gone from the store")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Exports reading the store now, and whether a deletion left the WAL's truncation to the last of
/// them (a truncating checkpoint waits for readers, holding up the writer thread meanwhile).
#[derive(Debug, Default)]
struct StoreReaders {
    running: usize,
    truncate_owed: bool,
}

/// On the writer thread: checkpoints and truncates the WAL (true), or, while exports read, owes it
/// to the last of them (false).
fn truncate_wal(store: &mut bci2token_store::Store, readers: &Mutex<StoreReaders>) -> bool {
    let mut r = readers.lock().unwrap();
    if r.running > 0 {
        r.truncate_owed = true;
        return false;
    }
    match store.checkpoint() {
        Ok(()) => {
            r.truncate_owed = false;
            true
        }
        Err(e) => {
            // Still owed: retried every minute (Service::truncate_owed_wal) and at the next start.
            r.truncate_owed = true;
            log::warn!("{e}; the deleted session's old pages stay until a checkpoint succeeds");
            false
        }
    }
}

impl Service {
    /// Checkpoints the WAL if a deletion still owes that (after a failed checkpoint); called every
    /// minute.
    pub fn truncate_owed_wal(&self) {
        if !self.readers.lock().unwrap().truncate_owed {
            return;
        }
        let readers = Arc::clone(&self.readers);
        match self.store.call(move |s| truncate_wal(s, &readers)) {
            Ok(true) => log::info!("store: WAL truncated; the deletion it was owed to is complete"),
            Ok(false) => {}
            Err(e) => log::warn!("store: truncating the WAL after a deletion: {e}"),
        }
    }
}

/// One export counted in [`StoreReaders`] while it lives; the last one out truncates the WAL when
/// a deletion owed that.
struct ReaderCount<'s> {
    service: &'s Service,
}

impl<'s> ReaderCount<'s> {
    fn new(service: &'s Service) -> ReaderCount<'s> {
        service.readers.lock().unwrap().running += 1;
        ReaderCount { service }
    }
}

impl Drop for ReaderCount<'_> {
    fn drop(&mut self) {
        let owed = {
            let mut r = self.service.readers.lock().unwrap();
            r.running -= 1;
            r.running == 0 && r.truncate_owed
        };
        if owed {
            let readers = Arc::clone(&self.service.readers);
            match self.service.store.call(move |s| truncate_wal(s, &readers)) {
                Ok(true) => log::info!("store: WAL truncated after the exports that read during a deletion"),
                Ok(false) => {}
                Err(e) => log::warn!("store: truncating the WAL after a deletion: {e}"),
            }
        }
    }
}
