//! `bci2tokenctl model train`: the request, and the recordings named in `--from` recorded as
//! sessions first (replayed through the daemon at full speed, as `evaluate` replays them: the
//! daemon parses a caller's file only in a driver host), so that the daemon trains on sessions of
//! its store only.

use std::path::Path;

use bci2token_api::{ConfigMap, TrainRequest};

use crate::cli::TrainArgs;
use crate::error::{CtlError, Kind};
use crate::evaluate::replay;
use crate::transport::Transport;

/// `--from`: each an existing file (replayed into a session, whose id takes its place) or a
/// session id.
fn sessions(from: &[String], socket: &Transport, json: bool) -> Result<Vec<String>, CtlError> {
    let mut ids = Vec::with_capacity(from.len());
    let recorded = |ids: &[String]| {
        if ids.is_empty() {
            String::new()
        } else {
            format!(" (sessions recorded so far: {})", ids.join(", "))
        }
    };
    for source in from {
        let path = Path::new(source);
        if !path.is_file() {
            if source.contains('/') {
                return Err(CtlError::new(Kind::Usage, format!("--from {source}: no such file")));
            }
            ids.push(source.clone());
            continue;
        }
        let collected = replay::replay_file(socket, path, &ConfigMap::new(), None, &|_| {})
            .map_err(|e| CtlError::new(e.kind, format!("--from {source}: {}{}", e.message, recorded(&ids))))?;
        if !json {
            eprintln!("Recorded {source} as session {}.", collected.session);
        }
        ids.push(collected.session);
    }
    Ok(ids)
}

/// `model train`'s request from its arguments; recordings among `--from` are replayed into
/// sessions first.
pub fn request(a: &TrainArgs, socket: &Transport, json: bool) -> Result<TrainRequest, CtlError> {
    // What can be checked here is, before any recording is replayed into a session.
    bci2token_manifest::check_name(&a.name).map_err(|e| CtlError::new(Kind::Usage, format!("--name: {e}")))?;
    bci2token_calibrate::method::Method::parse(&a.method)
        .map_err(|e| CtlError::new(Kind::Usage, format!("--method: {e}")))?;
    let bandpass_hz = match a.bandpass.as_deref() {
        None => None,
        Some(&[low, high]) => Some([low, high]),
        Some(_) => return Err(CtlError::new(Kind::Usage, "--bandpass takes LOW,HIGH in Hz (e.g. 8,30)")),
    };
    Ok(TrainRequest {
        name: a.name.clone(),
        method: a.method.clone(),
        sessions: sessions(&a.from, socket, json)?,
        classes: a.trial.classes.clone(),
        map: a.trial.map.clone(),
        trial_start: a.trial.trial_start.clone(),
        trial_length: a.trial.trial_length,
        trials: a.trial.trials,
        window_seconds: a.window,
        offset_seconds: a.offset,
        hop_seconds: a.hop,
        channels: a.channels.clone(),
        bandpass_hz,
        notch_hz: a.notch,
        frequencies: a.frequencies.clone(),
        folds: a.folds,
        replace: a.replace,
    })
}
