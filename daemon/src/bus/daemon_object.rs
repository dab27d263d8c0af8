//! `org.bci2token.Daemon1` at `/org/bci2token`: every operation of the control socket as a
//! method. Records are `a{sv}` with the socket protocol's keys (bci2token_api::dbus); files are
//! descriptors (`h`), each with the name the caller gives it (shown in messages and the audit
//! log; its extension may tell a recording's format).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bci2token_api::dbus::{record, session_path, DAEMON_PATH};
use bci2token_api::dbus_args::{self, driver_config, AuditOptions, ExportOptions, StartOptions, StreamOptions};
use bci2token_api::{ApiError, ErrorCode, FileArg, FollowOptions, MAX_REQUEST_FDS};
use zbus::message::Header;
use zbus::zvariant::{self, OwnedObjectPath};

use super::error::BusError;
use super::Ctx;
use crate::closer::Passed;
use crate::service::{ExportRequest, Op, StartRequest, Started};

pub use bci2token_api::dbus::Dict;

pub struct DaemonObject {
    ctx: Arc<Ctx>,
}

impl DaemonObject {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        DaemonObject { ctx }
    }
}

/// Tells the bus that `ActiveSessions` changed.
pub async fn active_sessions_changed(conn: &zbus::Connection) {
    if let Ok(iface) = conn.object_server().interface::<_, DaemonObject>(DAEMON_PATH).await {
        let _ = iface.get().await.active_sessions_changed(iface.signal_emitter()).await;
    }
}

pub fn stream_options(dict: &Dict) -> Result<FollowOptions, BusError> {
    let o: StreamOptions = dbus_args::options("OpenStream", dict)?;
    Ok(FollowOptions { samples: o.samples })
}

/// The descriptors of one call, as the service takes them: each becomes `{"fd": N, "name": ...}`.
/// Those not handed on (the call failed first) go to the uid's closer, as the socket's do.
struct Files {
    uid: u32,
    fds: Vec<OwnedFd>,
}

impl Drop for Files {
    fn drop(&mut self) {
        crate::closer::dispose(self.uid, std::mem::take(&mut self.fds));
    }
}

impl Files {
    fn new(uid: u32) -> Self {
        Files { uid, fds: Vec::new() }
    }

    fn add(&mut self, name: &str, fd: OwnedFd) -> Result<FileArg, ApiError> {
        if self.fds.len() >= MAX_REQUEST_FDS {
            crate::closer::dispose(self.uid, vec![fd]);
            let message = format!("a call may pass at most {MAX_REQUEST_FDS} files");
            return Err(ApiError::new(ErrorCode::BadRequest, message));
        }
        self.fds.push(fd);
        Ok(FileArg::Fd { fd: (self.fds.len() - 1) as u32, name: name.to_string() })
    }

    fn passed(mut self) -> Passed {
        Passed::new(self.uid, std::mem::take(&mut self.fds))
    }
}

#[zbus::interface(name = "org.bci2token.Daemon1")]
impl DaemonObject {
    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// `system` or `user`.
    #[zbus(property(emits_changed_signal = "const"))]
    fn mode(&self) -> String {
        self.ctx.service.config().mode.as_str().to_string()
    }

    /// Sessions running now (everyone's).
    #[zbus(property)]
    fn active_sessions(&self) -> u32 {
        u32::try_from(self.ctx.service.active_sessions()).unwrap_or(u32::MAX)
    }

    /// The daemon's status (`status`); anyone.
    #[zbus(out_args("status"))]
    async fn status(&self, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run(&h, |s, c| s.status(c)).await.map(|v| record(&v))
    }

    /// How the daemon is doing (`health`): a `verdict` (ok, degraded, failing), `findings`, the
    /// caller's sessions, the store; anyone (other users' sessions are only counted).
    #[zbus(out_args("health"))]
    async fn health(&self, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run(&h, |s, c| s.health(c)).await.map(|v| record(&v))
    }

    /// The daemon's metrics in Prometheus' text format; operators.
    #[zbus(out_args("text"))]
    async fn metrics(&self, #[zbus(header)] h: Header<'_>) -> Result<String, BusError> {
        self.ctx.run(&h, |s, c| s.metrics(c)).await
    }

    /// Loaded driver plugins and plugins that failed to load.
    #[zbus(out_args("drivers"))]
    async fn drivers(&self, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run(&h, |s, c| s.drivers(c)).await.map(|v| record(&v))
    }

    /// Devices the drivers can open now; `driver` "" asks every driver.
    #[zbus(out_args("devices"))]
    async fn devices(&self, driver: String, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        let driver = Some(driver).filter(|d| !d.is_empty());
        self.ctx.run(&h, move |s, c| s.devices(c, driver.as_deref())).await.map(|v| record(&v))
    }

    /// Model packages in the daemon's model path.
    #[zbus(out_args("models"))]
    async fn models(&self, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run(&h, |s, c| s.models(c)).await.map(|v| record(&v))
    }

    /// One model package, by name.
    #[zbus(out_args("info"))]
    async fn show_model(&self, model: String, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run(&h, move |s, c| s.model_show(c, &model)).await.map(|v| record(&v))
    }

    /// Installs a model package from its files (name, descriptor); admin only.
    #[zbus(out_args("model"))]
    async fn install_model(
        &self,
        files: Vec<(String, zvariant::OwnedFd)>,
        replace: bool,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<Dict, BusError> {
        let caller = self.ctx.admitted_admin(&h, Op::ModelInstall).await?;
        let mut passed = Files::new(caller.uid);
        let mut args = Vec::new();
        for (name, fd) in files {
            args.push(passed.add(&name, OwnedFd::from(fd))?);
        }
        let passed = passed.passed();
        self.ctx.serve(caller, move |s, c| s.model_install(c, &args, replace, passed)).await.map(|v| record(&v))
    }

    /// Trains a model of the caller's own on their stored `sessions` (`method`: csp-lda,
    /// riemann-mdm, riemann-ts, trca, fbtrca); `options` as `bci2tokenctl model train`'s (docs/dbus.md).
    /// Returns the training's record (the model, trials, cross-validated accuracy, notes).
    #[zbus(out_args("trained"))]
    async fn train_model(
        &self,
        name: String,
        method: String,
        sessions: Vec<String>,
        options: Dict,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<Dict, BusError> {
        let o: dbus_args::TrainOptions = dbus_args::options("TrainModel", &options)?;
        let request = o.into_request(name, method, sessions);
        self.ctx.run(&h, move |s, c| s.model_train(c, request)).await.map(|v| record(&v))
    }

    /// Deletes one of the caller's trained models (an admin: `owner`'s; -1 for the caller).
    #[zbus(out_args("model"))]
    async fn delete_model(&self, model: String, owner: i64, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        let owner = match owner {
            -1 => None,
            uid => Some(u32::try_from(uid).map_err(|_| {
                BusError::from(bci2token_api::ApiError::new(
                    bci2token_api::ErrorCode::BadRequest,
                    format!("DeleteModel: owner {uid} is not a uid (give -1 for yourself)"),
                ))
            })?),
        };
        self.ctx.run(&h, move |s, c| s.model_delete(c, &model, owner)).await.map(|v| record(&v))
    }

    /// Starts a session: `config` is the driver's settings (a file as `h` or `(sh)`), `options`
    /// `model` (s), `lsl_outlets` (b), `subject` (s). Returns the session's object and record.
    #[zbus(out_args("session", "info"))]
    async fn start_session(
        &self,
        driver: String,
        config: Dict,
        options: Dict,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<(OwnedObjectPath, Dict), BusError> {
        let caller = self.ctx.admitted(&h).await?;
        let started = self.start(driver, config, options, None, caller).await?;
        Ok((object_path(&started.info.id)?, record(&started.info)))
    }

    /// Starts a session and returns with it a socket carrying its events from the very first
    /// block (as `OpenStream`): nothing is missed. `stream_options`: `samples` (b).
    #[zbus(out_args("session", "info", "stream"))]
    async fn start_session_with_stream(
        &self,
        driver: String,
        config: Dict,
        options: Dict,
        stream_options: Dict,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<(OwnedObjectPath, Dict, zvariant::OwnedFd), BusError> {
        let follow = Some(self::stream_options(&stream_options)?);
        let who = self.ctx.admit(&h).await?;
        let place = self.ctx.stream_place(&who).await?;
        let started = self.start(driver, config, options, follow, who.caller).await?;
        let Started { info, stream } = started;
        let stream = stream.ok_or_else(|| BusError::Internal("the session gave no event stream".into()))?;
        let fd = super::session_object::stream_socket(&info.id, stream, place)?;
        Ok((object_path(&info.id)?, record(&info), fd))
    }

    /// The caller's sessions (an admin's: everyone's).
    #[zbus(out_args("sessions"))]
    async fn list_sessions(&self, #[zbus(header)] h: Header<'_>) -> Result<Vec<Dict>, BusError> {
        let sessions = self.ctx.run(&h, |s, c| s.session_list(c)).await?;
        super::fits(sessions, "the sessions").map(|v| v.iter().map(record).collect())
    }

    #[zbus(out_args("session"))]
    async fn show_session(&self, id: String, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run(&h, move |s, c| s.session_show(c, &id)).await.map(|v| record(&v))
    }

    #[zbus(out_args("session"))]
    async fn stop_session(&self, id: String, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run(&h, move |s, c| s.session_stop(c, &id)).await.map(|v| record(&v))
    }

    /// Deletes a stored session for good; admin only.
    #[zbus(out_args("deleted"))]
    async fn delete_session(&self, id: String, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run_admin(&h, Op::SessionDelete, move |s, c| s.session_delete(c, &id)).await.map(|v| record(&v))
    }

    /// Audit entries; `options`: `since` (d, Unix seconds). Admin only.
    #[zbus(out_args("entries"))]
    async fn list_audit(&self, options: Dict, #[zbus(header)] h: Header<'_>) -> Result<Vec<Dict>, BusError> {
        let o: AuditOptions = dbus_args::options("ListAudit", &options)?;
        let entries = self.ctx.run_admin(&h, Op::AuditList, move |s, c| s.audit_list(c, o.since)).await?;
        super::fits(entries, "the audit entries").map(|v| v.iter().map(record).collect())
    }

    /// Checks the audit log's hash chain; admin only.
    #[zbus(out_args("verification"))]
    async fn verify_audit(&self, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run_admin(&h, Op::AuditVerify, |s, c| s.audit_verify(c)).await.map(|v| record(&v))
    }

    /// A new master key, every session key re-wrapped; admin only.
    #[zbus(out_args("rotation"))]
    async fn rotate_key(&self, #[zbus(header)] h: Header<'_>) -> Result<Dict, BusError> {
        self.ctx.run_admin(&h, Op::KeyRotate, |s, c| s.key_rotate(c)).await.map(|v| record(&v))
    }

    /// Copies the store (encrypted) into `file`, an empty file open for writing; admin only.
    #[zbus(out_args("backup"))]
    async fn backup(
        &self,
        name: String,
        file: zvariant::OwnedFd,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<Dict, BusError> {
        let caller = self.ctx.admitted_admin(&h, Op::Backup).await?;
        let mut files = Files::new(caller.uid);
        let arg = files.add(&name, OwnedFd::from(file))?;
        let passed = files.passed();
        self.ctx.serve(caller, move |s, c| s.backup(c, &arg, passed)).await.map(|v| record(&v))
    }

    /// Replaces the store with the backup in `file` (open for reading); admin only.
    #[zbus(out_args("restored"))]
    async fn restore(
        &self,
        name: String,
        file: zvariant::OwnedFd,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<Dict, BusError> {
        let caller = self.ctx.admitted_admin(&h, Op::Restore).await?;
        let mut files = Files::new(caller.uid);
        let arg = files.add(&name, OwnedFd::from(file))?;
        let passed = files.passed();
        self.ctx.serve(caller, move |s, c| s.restore(c, &arg, passed)).await.map(|v| record(&v))
    }

    /// Writes a stored session into `file` (empty, open for writing) as `format` (edf, bdf,
    /// csv, events); `options`: `features` (s), `dp_epsilon`, `dp_delta`, `dp_clip` (d) for a private
    /// release of features instead.
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("exported"))]
    async fn export(
        &self,
        id: String,
        format: String,
        name: String,
        file: zvariant::OwnedFd,
        options: Dict,
        #[zbus(header)] h: Header<'_>,
    ) -> Result<Dict, BusError> {
        let o: ExportOptions = dbus_args::options("Export", &options)?;
        let op = if o.features.is_some() { Op::ExportFeatures } else { Op::Export };
        let caller = self.ctx.admitted_admin(&h, op).await?;
        let mut files = Files::new(caller.uid);
        let path = files.add(&name, OwnedFd::from(file))?;
        let passed = files.passed();
        let request = ExportRequest {
            id,
            format,
            path,
            features: o.features,
            dp_epsilon: o.dp_epsilon,
            dp_delta: o.dp_delta,
            dp_clip: o.dp_clip,
        };
        self.ctx.serve(caller, move |s, c| s.export(c, request, passed)).await.map(|v| record(&v))
    }
}

impl DaemonObject {
    async fn start(
        &self,
        driver: String,
        config: Dict,
        options: Dict,
        follow: Option<FollowOptions>,
        caller: bci2token_api::Caller,
    ) -> Result<Started, BusError> {
        let o: StartOptions = dbus_args::options("StartSession", &options)?;
        let mut files = Files::new(caller.uid);
        let config = driver_config(&config, |name, fd| files.add(name, fd))?;
        let passed = files.passed();
        let start =
            StartRequest { driver, config, model: o.model, follow, lsl_outlets: o.lsl_outlets, subject: o.subject };
        self.ctx.serve(caller, move |s, c| s.session_start(c, start, passed)).await
    }
}

fn object_path(id: &str) -> Result<OwnedObjectPath, BusError> {
    OwnedObjectPath::try_from(session_path(id)).map_err(|e| BusError::Internal(e.to_string()))
}
