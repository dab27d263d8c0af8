//! Personal models: `model train` fits one to a caller's stored sessions and keeps it under
//! `data_dir/personal-models/UID/NAME` (directories 0700, files 0600, the daemon's), where only
//! that caller's `--model NAME` finds it (before the shared models), `models` lists it with its
//! owner, and `model delete` removes it. The package is written by the daemon from numbers it
//! fitted: no caller's TorchScript is ever loaded.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use bci2token_api::{Event, TrainRequest, Trained};
use bci2token_calibrate::method::Method;
use bci2token_calibrate::trials::{build_rules, Annotation};
use bci2token_decoder::fit::{match_labels, RATE_TOLERANCE};

use super::*;
use crate::training::{self, Described, Gatherer, Plan};

/// Under `data_dir`.
const PERSONAL_DIR: &str = "personal-models";
/// Sessions one training may read.
const MAX_SOURCES: usize = 64;

/// Removes what a daemon that stopped mid-way left under `data_dir/personal-models/UID`: the
/// hidden scratch directories of a training, a replaced model set aside, a deletion not finished
/// (a person's model must not outlive its deletion). Called at start, before any request.
pub(super) fn sweep_leftovers(data_dir: &Path) {
    let Ok(users) = std::fs::read_dir(data_dir.join(PERSONAL_DIR)) else { return };
    for user in users.filter_map(Result::ok) {
        let Ok(entries) = std::fs::read_dir(user.path()) else { continue };
        for e in entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with('.')) {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    log::info!("removed {}, left by a training or deletion that did not finish", e.path().display())
                }
                Err(err) => log::warn!("{}: {err}", e.path().display()),
            }
        }
    }
}

fn bad(message: String) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

impl Service {
    fn personal_root(&self) -> PathBuf {
        self.config().data_dir.join(PERSONAL_DIR)
    }

    /// The caller's trained model of that name, if there is one.
    pub(super) fn find_personal(&self, caller: &Caller, name: &str) -> Option<PathBuf> {
        let dir = self.personal_root().join(caller.uid.to_string()).join(name);
        dir.join(MANIFEST_FILE).is_file().then_some(dir)
    }

    /// Trained models the caller may see: their own (an admin: everyone's), with their owners.
    pub(super) fn personal_models(&self, caller: &Caller) -> Vec<(u32, PathBuf)> {
        let root = self.personal_root();
        let uids: Vec<u32> = if self.admin_by_group(caller) {
            let Ok(entries) = std::fs::read_dir(&root) else { return Vec::new() };
            entries.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
        } else {
            vec![caller.uid]
        };
        let mut found = Vec::new();
        for uid in uids {
            for dir in model_dirs(&[root.join(uid.to_string())]) {
                found.push((uid, dir));
            }
        }
        found.sort();
        found
    }

    pub(super) fn train_model(&self, caller: &Caller, r: TrainRequest) -> Result<Trained, ApiError> {
        // The name as a manifest takes it, checked before anything is read.
        bci2token_decoder::manifest::check_name(&r.name).map_err(|e| bad(format!("--name: {}", bounded(&e))))?;
        if r.name.len() > 128 {
            return Err(bad("--name: at most 128 characters".into()));
        }
        if self.find_model_trusted(&r.name).is_ok() {
            return Err(bad(format!(
                "`{}` is the name of a shared model (`bci2tokenctl models`); give yours another name",
                r.name
            )));
        }
        let method = Method::parse(&r.method).map_err(|e| bad(bounded(&e)))?;
        if r.sessions.is_empty() || r.sessions.len() > MAX_SOURCES {
            return Err(bad(format!(
                "name 1 to {MAX_SOURCES} stored sessions to train on (`bci2tokenctl session list` lists yours)"
            )));
        }
        if let Some(twice) = r.sessions.iter().enumerate().find(|(i, s)| r.sessions[..*i].contains(s)).map(|(_, s)| s) {
            // The same windows in two folds would inflate the cross-validated accuracy.
            return Err(bad(format!("session `{}` is named twice", bounded(twice))));
        }
        if let Some(channels) = &r.channels {
            if channels.is_empty()
                || channels.iter().enumerate().any(|(i, c)| c.is_empty() || channels[..i].contains(c))
            {
                return Err(bad("--channels: name each channel once".into()));
            }
        }
        if r.map.iter().any(|(text, label)| text.is_empty() || label.trim().is_empty()) {
            return Err(bad("--map: an annotation text or a label is empty".into()));
        }
        let classes: Vec<String> = match &r.classes {
            Some(c) => c.clone(),
            None => {
                let mut c: Vec<String> = Vec::new();
                for (text, _) in &r.map {
                    if !c.contains(text) {
                        c.push(text.clone());
                    }
                }
                c
            }
        };
        if classes.len() < 2 {
            return Err(bad(
                "a model needs two classes or more: pass --classes (the cue annotations, e.g. T1,T2) or --map \
                 (e.g. T1=hands --map T2=feet)"
                    .into(),
            ));
        }
        let (mut rules, notes) = build_rules(Some(&classes), &r.map, None, r.trial_start.clone(), r.trial_length)
            .map_err(|e| bad(bounded(&e)))?;
        if let Some((first, last)) = r.trials {
            if first == 0 || last < first {
                return Err(bad(format!("--trials {first}-{last}: give FIRST-LAST, trial numbers from 1")));
            }
            rules.trials = Some((first, last));
        }
        let plan = Plan::new(method, rules, &r).map_err(|e| bad(bounded(&e)))?;
        let root = self.personal_root().join(caller.uid.to_string());
        let dest = root.join(&r.name);
        if dest.exists() && !r.replace {
            return Err(bad(format!("you have a trained model `{}` already; --replace replaces it", r.name)));
        }
        // One training at a time: each holds up to a few hundred MiB while it fits.
        // (A training that panicked left the lock poisoned, not held: it is free.)
        let _one = match self.training.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(ApiError::new(
                    ErrorCode::LimitReached,
                    "another model is being trained; try again when it is done (trainings run one at a time)",
                ))
            }
        };
        // Reading runs here, at the request's priority, so that the store's snapshot is let go
        // soon (a reader holds the WAL); the fit, seconds of CPU, on a thread of its own at the
        // lowest priority, so that live sessions keep theirs.
        let (gathered, channels, rate, window_frames, hop_frames) = self.gather(caller, &r, &plan)?;
        let trained = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if let Err(e) = bci2token_sched::priority::run_in_background() {
                        log::warn!("model training runs at normal priority: {e}");
                    }
                    self.fit_and_write(caller, &r, &plan, (&gathered, channels, rate, window_frames, hop_frames), &dest)
                })
                .join()
        })
        .map_err(|_| {
            ApiError::new(ErrorCode::Internal, "model training failed unexpectedly (see the daemon's log)")
        })??;
        Ok(Trained { notes: notes.into_iter().chain(trained.notes).collect(), ..trained })
    }

    /// The training windows of the request's sessions, with the model's channels, the rate, the
    /// window's and hop's frames.
    #[allow(clippy::type_complexity)]
    fn gather(
        &self,
        caller: &Caller,
        r: &TrainRequest,
        plan: &Plan,
    ) -> Result<(training::Gathered, Vec<String>, f64, usize, usize), ApiError> {
        let invalid = |m: String| ApiError::new(ErrorCode::InvalidConfig, m);
        let stopping = || ApiError::new(ErrorCode::Internal, "bci2tokend is stopping; train after it restarts");
        let mut gatherer: Option<(Gatherer<'_>, Vec<String>, f64)> = None;
        for id in &r.sessions {
            let (_counted, mut reader, meta, info) = self.open_stored(caller, id, "train on")?;
            let info = match info {
                Some(Ok(info)) => info,
                _ => {
                    return Err(invalid(format!(
                        "session `{}` is not in the store, or its metadata cannot be read (the daemon stores \
                         sessions unless `record = false`)",
                        bounded(id)
                    )))
                }
            };
            if meta.iter().any(|(_, c)| c.is_err()) {
                return Err(invalid(format!("session `{id}`: its metadata fails authentication")));
            }
            let labels: Vec<String> = info.channels.iter().map(|c| c.label.clone()).collect();
            let (g, channels, rate) = match &mut gatherer {
                Some(g) => g,
                None => {
                    let channels = r.channels.clone().unwrap_or_else(|| labels.clone());
                    let g = Gatherer::new(plan, info.sample_rate, channels.len())
                        .map_err(|e| invalid(format!("session `{id}`: {e}")))?;
                    gatherer.insert((g, channels, info.sample_rate))
                }
            };
            if (info.sample_rate - *rate).abs() > RATE_TOLERANCE * rate.max(1.0) {
                return Err(invalid(format!(
                    "session `{id}` was recorded at {} Hz, the first at {rate} Hz: train on sessions of one rate",
                    info.sample_rate
                )));
            }
            let (picks, missing) = match_labels(channels, &labels);
            if !missing.is_empty() {
                return Err(invalid(bounded(&format!(
                    "session `{id}` has no channel {} (its channels: {}); pass --channels with labels every session has",
                    missing.join(", "),
                    labels.join(", ")
                ))));
            }
            if picks.iter().enumerate().any(|(i, p)| picks[..i].contains(p)) {
                return Err(invalid(format!("session `{id}`: two of --channels name the same channel")));
            }
            // The annotations first (the trials), then the blocks in order.
            let mut annotations = Vec::new();
            let mut damaged = 0usize;
            let too_many = reader
                .for_each(id, Kind::Event, |_, chunk| {
                    match chunk.map(|plain| serde_json::from_slice::<Event>(&plain)) {
                        Ok(Ok(Event::Annotation { onset, duration, text, .. })) => {
                            if annotations.len() == training::MAX_ANNOTATIONS {
                                return std::ops::ControlFlow::Break(());
                            }
                            annotations.push(Annotation { onset, duration, text })
                        }
                        Ok(_) => {}
                        Err(_) => damaged += 1,
                    }
                    std::ops::ControlFlow::Continue(())
                })
                .map_err(store_error)?;
            if too_many.is_some() {
                return Err(invalid(format!("session `{id}` has more than {} annotations", training::MAX_ANNOTATIONS)));
            }
            g.begin(id, &annotations, picks).map_err(|e| invalid(bounded(&e)))?;
            drop(annotations);
            let mut failed: Option<ApiError> = None;
            reader
                .for_each(id, Kind::Block, |seq, chunk| {
                    if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                        failed = Some(stopping());
                        return std::ops::ControlFlow::Break(());
                    }
                    let step = match chunk {
                        Err(_) => {
                            damaged += 1;
                            Ok(())
                        }
                        Ok(plain) => crate::export::decode_block(&plain).and_then(|b| g.block(seq, &b)),
                    };
                    match step {
                        Ok(()) => std::ops::ControlFlow::Continue(()),
                        Err(e) => {
                            failed = Some(invalid(format!("session `{id}`: {e}")));
                            std::ops::ControlFlow::Break(())
                        }
                    }
                })
                .map_err(store_error)?;
            if let Some(e) = failed {
                return Err(e);
            }
            if damaged > 0 {
                return Err(invalid(format!(
                    "{damaged} chunk(s) of session `{id}` fail authentication: nothing was trained"
                )));
            }
            g.end();
        }
        let (g, channels, rate) = gatherer.expect("at least one session");
        let (window_frames, hop_frames) = (g.window_frames(), g.hop_frames());
        Ok((g.finish(), channels, rate, window_frames, hop_frames))
    }

    fn fit_and_write(
        &self,
        caller: &Caller,
        r: &TrainRequest,
        plan: &Plan,
        (gathered, channels, rate, window_frames, hop_frames): (&training::Gathered, Vec<String>, f64, usize, usize),
        dest: &Path,
    ) -> Result<Trained, ApiError> {
        let invalid = |m: String| ApiError::new(ErrorCode::InvalidConfig, m);
        let fit = training::fit(plan, gathered, &channels, rate).map_err(invalid)?;
        let module = training::module(&fit.fitted, channels.len(), window_frames).map_err(invalid)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut manifest = training::manifest(
            plan,
            &fit,
            Described {
                name: &r.name,
                channels,
                rate,
                sources: r.sessions.clone(),
                owner_uid: caller.uid,
                trained_at: now,
            },
        );
        // The hop the model decodes at is the one it was trained at, in whole frames.
        manifest.input.hop_seconds = hop_frames as f64 / rate;
        let root = dest.parent().expect("a personal directory");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{}: {e}", root.display())))?;
        let internal = |e: String| ApiError::new(ErrorCode::Internal, e);
        let scratch = crate::caller_files::ScratchDir::new(root, "train")
            .map_err(|e| internal(format!("{}: {e}", root.display())))?;
        let toml = manifest.to_toml().map_err(internal)?;
        let manifest_path = scratch.path().join(MANIFEST_FILE);
        std::fs::write(&manifest_path, toml).map_err(|e| internal(format!("{}: {e}", manifest_path.display())))?;
        let model_path = scratch.path().join(bci2token_decoder::manifest::MODEL_FILE);
        module.save(&model_path).map_err(|e| internal(format!("{}: {e}", model_path.display())))?;
        for file in [&manifest_path, &model_path] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| internal(format!("{}: {e}", file.display())))?;
        }
        // What the decoder will load, loaded once here: a package that does not load is not kept.
        Model::load(scratch.path(), tch::Device::Cpu).map_err(|e| internal(format!("the trained model: {e}")))?;
        let loaded = loaded_key(dest);
        put_in_place(scratch, dest, root, r.replace, &r.name)?;
        self.forget_loaded(&loaded);
        log::info!(
            "model `{}` ({}) trained for uid {} on {} window(s) of {} session(s): cross-validated accuracy {:.3}",
            r.name,
            plan.method.name(),
            caller.uid,
            gathered.windows.len(),
            r.sessions.len(),
            fit.cv_accuracy
        );
        let labels = manifest.output.labels.clone();
        Ok(Trained {
            model: ModelInfo { owner: Some(caller.uid), ..model_info(dest, manifest) },
            method: plan.method.name().into(),
            trials: labels.into_iter().zip(fit.trials.iter().copied()).collect(),
            windows: gathered.windows.len(),
            cv_accuracy: fit.cv_accuracy,
            cv_folds: fit.folds,
            itr_bits_per_minute: fit.itr_bits_per_minute,
            notes: gathered.notes.clone(),
        })
    }

    pub(super) fn delete_model(&self, caller: &Caller, name: &str, owner: Option<u32>) -> Result<ModelInfo, ApiError> {
        let uid = owner.unwrap_or(caller.uid);
        if uid != caller.uid && !self.admin_by_group(caller) {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "only an admin may delete another user's trained model",
            ));
        }
        let root = self.personal_root().join(uid.to_string());
        let dir = root.join(name);
        if !is_model_name(name) || !dir.join(MANIFEST_FILE).is_file() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no trained model `{}` of uid {uid} (`bci2tokenctl models` lists them)", bounded(name)),
            ));
        }
        // A package whose manifest no longer loads (an older schema) is deleted all the same.
        let info = match Manifest::load(&dir) {
            Ok(manifest) => ModelInfo { owner: Some(uid), ..model_info(&dir, manifest) },
            Err(e) => {
                log::warn!("trained model `{name}` of uid {uid}: {e}; deleted all the same");
                ModelInfo {
                    name: name.to_string(),
                    dir: dir.display().to_string(),
                    owner: Some(uid),
                    ..Default::default()
                }
            }
        };
        // Out of sight in one rename, then removed; sessions running with it keep their copy in memory.
        let loaded = loaded_key(&dir);
        let aside = crate::caller_files::ScratchDir::adopt(&dir, &root, "deleted")
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("{}: {e}", dir.display())))?;
        self.forget_loaded(&loaded);
        drop(aside);
        log::info!("trained model `{name}` of uid {uid} deleted by uid {}", caller.uid);
        Ok(info)
    }
}
