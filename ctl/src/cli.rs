//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::EXIT_CODES_HELP;
use crate::evaluate::score::Decision;

#[derive(Debug, Parser)]
#[command(
    name = "bci2tokenctl",
    version,
    about = "Control the bci2tokend EEG daemon",
    long_about = "Control the bci2tokend EEG daemon over its control socket: status, driver plugins, \
                  devices, sessions, and following a session's live events.",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Control socket [default: $BCI2TOKEN_SOCKET, else the per-user daemon's
    /// $XDG_RUNTIME_DIR/bci2token/control.sock if it exists and we are not root,
    /// else /run/bci2token/control.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Talk to the daemon over D-Bus instead of its socket: --bus (the system bus), --bus=session
    /// (a --user daemon) or --bus=ADDRESS; prints the same as the socket
    #[arg(
        long,
        global = true,
        value_name = "BUS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "system",
        conflicts_with = "socket"
    )]
    pub bus: Option<String>,

    /// Print results as JSON (one document per line) instead of tables
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the daemon's version, mode, sessions and your role
    Status,
    /// Check the daemon's health: devices (connected, measured rate, gaps, electrode quality),
    /// decoders (queue, latency, circuit breaker), the store (free space, last backup) and the
    /// audit chain's head. Exit status 0 when all is well, 10 when degraded, 11 when failing (for
    /// scripts and systemd's ExecCondition=)
    Health,
    /// Print the daemon's metrics in Prometheus' text format (what `metrics_listen` serves)
    Metrics,
    /// List loaded driver plugins (name, version, ABI, file) and files that failed to load
    Drivers,
    /// List what each driver can open now
    Devices {
        /// Only ask this driver
        #[arg(long, value_name = "NAME")]
        driver: Option<String>,
    },
    /// List the model packages the daemon can attach (`session start --model NAME|DIR`)
    Models,
    /// Install model packages into the daemon (admin)
    #[command(subcommand)]
    Model(ModelCommand),
    /// Start, list, show and stop sessions
    #[command(subcommand)]
    Session(SessionCommand),
    /// Stream a running session's events until it ends
    Follow(FollowArgs),
    /// Draw a session into a PNG or SVG: each channel's power spectrum, signal quality over time
    /// and the decoded tokens (a running session: --seconds of it; an ended one: from the store)
    Plot(PlotArgs),
    /// Watch live sessions in a terminal UI: traces, band powers, electrode quality, tokens
    /// (q quits, Tab/n and p switch sessions; the keys are shown at the bottom)
    Monitor(MonitorArgs),
    /// The audit log of privileged and refused calls
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The store's master key
    #[command(subcommand)]
    Key(KeyCommand),
    /// Copy the session store, still encrypted, to a new FILE (admin; safe while recording)
    Backup {
        /// The new file (made absolute; never overwritten)
        #[arg(required_unless_present = "into", conflicts_with = "into")]
        file: Option<std::path::PathBuf>,
        /// Write a new file in DIR instead, named by the time (bci2token-YYYYMMDDTHHMMSSZ.backup)
        #[arg(long, value_name = "DIR")]
        into: Option<std::path::PathBuf>,
        /// With --into: once the new backup is written, remove DIR's backups older than DAYS days
        #[arg(long, value_name = "DAYS", requires = "into")]
        keep_days: Option<u32>,
    },
    /// Replace the session store with a backup FILE made under the same master key (admin; no
    /// session may be running)
    Restore {
        /// The backup file
        file: std::path::PathBuf,
    },
    /// Write a stored session, decrypted, as EDF+, BDF+ or CSV to a new file (admin)
    Export {
        /// Session id
        id: String,
        /// edf (16-bit EDF+ with annotations), bdf (24-bit BDF+), csv (samples only) or events
        /// (the stored events as JSON lines, after a line with the session's metadata)
        #[arg(long, value_parser = ["edf", "bdf", "csv", "events"])]
        format: String,
        /// The new file (never overwritten)
        #[arg(long, value_name = "FILE")]
        output: std::path::PathBuf,
        /// Instead of the samples, release per-window features with differential privacy
        /// (bandpower: 5 bands per channel per 2 s window; CSV)
        #[arg(long, value_parser = ["bandpower"], requires_all = ["dp_epsilon", "dp_delta"])]
        features: Option<String>,
        /// Privacy parameter ε of the release (0 < ε < 1)
        #[arg(long, value_name = "EPSILON")]
        dp_epsilon: Option<f64>,
        /// Privacy parameter δ of the release (e.g. 1e-5)
        #[arg(long, value_name = "DELTA")]
        dp_delta: Option<f64>,
        /// Clipping bound of each feature, µV² (default 100)
        #[arg(long, value_name = "UV2")]
        dp_clip: Option<f64>,
    },
    /// Replay annotated recordings through the daemon with a model and score its tokens
    /// (accuracy, confusion matrix, decision time, Wolpaw ITR)
    #[command(long_about = "Replays each FILE through the daemon at full speed (replay driver, speed=0) with \
    the model attached, collects the annotations and tokens of the session, and scores the tokens against \
    the annotations.\n\n\
    Trials: every annotation whose text is one of --classes is a cue. The trial starts at the cue, or with \
    --trial-start MARKER at the first MARKER annotation after the cue and before the next cue (a cue without \
    one is skipped with a note), and lasts --trial-length seconds, or the cue's own duration. A token counts for \
    a trial when start <= t <= end (t: the stream time of the last sample of the token's window).\n\n\
    Accuracy counts an undecided trial as wrong. ITR is Wolpaw's with T = the mean decision time \
    (token t - trial start); the ITR with T = the trial length is printed beside it.")]
    Evaluate(EvaluateArgs),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish or powershell), e.g.
    /// `bci2tokenctl completions bash > ~/.local/share/bash-completion/completions/bci2tokenctl`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages, bci2tokenctl.1 and one per subcommand, into DIR (for packagers)
    #[command(hide = true)]
    ManPages { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a session; prints its id (with --json the session object)
    Start(StartArgs),
    /// List sessions
    List,
    /// Show one session and its channels
    Show {
        /// Session id
        id: String,
    },
    /// Stop a running session
    Stop {
        /// Session id
        id: String,
    },
    /// Delete a stored session for good: its key is destroyed first, then its data (admin)
    Delete {
        /// Session id
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Install the package in DIR (model.toml, model.pt and the files beside them) into the
    /// daemon's model directory, where `--model NAME` finds it (admin)
    Install {
        /// The package directory
        dir: std::path::PathBuf,
        /// Replace an installed package of the same name
        #[arg(long)]
        replace: bool,
    },
    /// Train a model of your own on your recorded sessions: trials cut from their cue
    /// annotations (as `evaluate` cuts them), fitted by the daemon, kept as yours (`--model NAME`
    /// finds it; `models` lists it); prints the cross-validated accuracy and ITR
    Train(Box<TrainArgs>),
    /// Delete one of your trained models (an admin: anyone's, with --owner)
    Delete {
        /// The trained model's name
        name: String,
        /// Whose model (uid; admin) [default: yours]
        #[arg(long, value_name = "UID")]
        owner: Option<u32>,
    },
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The new model's name (letters, digits, `.`, `-`, `_`)
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// csp-lda (two classes), riemann-mdm, riemann-ts (motor imagery); trca, fbtrca (SSVEP)
    #[arg(long, value_name = "METHOD")]
    pub method: String,

    /// A recorded session to train on (an id from `session list`), or a recording (a file, which
    /// is replayed into a session first); repeatable
    #[arg(long = "from", value_name = "SESSION_ID|FILE", required = true)]
    pub from: Vec<String>,

    #[command(flatten)]
    pub trial: TrialArgs,

    /// The model's window, seconds [default: 2]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub window: Option<f64>,

    /// Seconds after a trial's start before its first training window [default: 0.5; fbtrca: 0]
    #[arg(long, value_name = "SECONDS")]
    pub offset: Option<f64>,

    /// Seconds between windows, in training and when decoding [default: 0.25]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub hop: Option<f64>,

    /// The channels the model reads [default: all of the recording's]
    #[arg(long, value_name = "LABEL,...", value_delimiter = ',')]
    pub channels: Option<Vec<String>>,

    /// Band-pass of the model's preprocessing, Hz [default: 8,30; fbtrca: 6,90]
    #[arg(long, value_name = "LOW,HIGH", value_delimiter = ',', num_args = 1)]
    pub bandpass: Option<Vec<f64>>,

    /// Mains notch of the model's preprocessing: 50 or 60 (Hz) [default: none]
    #[arg(long, value_name = "HZ")]
    pub notch: Option<f64>,

    /// fbtrca: each class's stimulus frequency in Hz, in the order of the classes [default: read
    /// from the labels, e.g. 13Hz]
    #[arg(long, value_name = "HZ,...", value_delimiter = ',')]
    pub frequencies: Option<Vec<f64>>,

    /// Folds of the cross-validation (whole trials held out) [default: 5]
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,

    /// Replace your trained model of the same name
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Replace the master key and re-wrap every session's key under the new one (admin)
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the audit log (admin)
    List {
        /// Only entries at or after this time (Unix seconds)
        #[arg(long, value_name = "UNIX_SECONDS")]
        since: Option<f64>,
    },
    /// Check the audit log's hash chain; exit status 9 and the first break when it is broken (admin)
    Verify,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Driver to open (see `bci2tokenctl drivers`)
    #[arg(long, value_name = "NAME")]
    pub driver: String,

    /// Driver configuration; repeatable. VALUE is sent as a string, unless it starts with
    /// '[' or '{', then it is sent as parsed JSON (e.g. --set 'script=[{"label":"13Hz","seconds":3}]').
    /// A later --set of the same KEY wins.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, serde_json::Value)>,

    /// Model package: a directory (sent as an absolute path) or the name of a model in the
    /// daemon's model path (see `bci2tokenctl models`)
    #[arg(long, value_name = "NAME|DIR")]
    pub model: Option<PathBuf>,

    /// After starting, stream the session's events from its first block until it ends
    #[arg(long)]
    pub follow: bool,

    /// With --follow: include sample blocks and their values
    #[arg(long, requires = "follow")]
    pub samples: bool,

    /// Publish the decoded tokens (marker stream) and class probabilities as LSL outlets, for
    /// LabRecorder and other LSL programs (needs --model and liblsl on the daemon's host)
    #[arg(long)]
    pub lsl_outlets: bool,

    /// The subject's pseudonym (never a name): stored with the session; differentially private
    /// releases of its features count against this subject's privacy budget
    #[arg(long, value_name = "PSEUDONYM")]
    pub subject: Option<String>,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Session id [default: the first live session you can see in `session list`]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Session id
    pub id: String,

    /// The new image, FILE.png or FILE.svg (the extension decides; never overwritten)
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,

    /// Image size in pixels
    #[arg(long, value_name = "WxH", default_value = "1600x1200", value_parser = crate::plot::parse_size)]
    pub size: (u32, u32),

    /// A running session: plot this many seconds of its stream, from now
    #[arg(long, value_name = "N", default_value = "10", value_parser = parse_seconds)]
    pub seconds: f64,
}

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Session id
    pub id: String,

    /// Include sample blocks and their values
    #[arg(long)]
    pub samples: bool,

    /// Stop after N events (not counting the initial reply) and exit 0
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Model package: a directory, or a name from `bci2tokenctl models`
    #[arg(long, value_name = "NAME|DIR")]
    pub model: String,

    #[command(flatten)]
    pub trial: TrialArgs,

    /// Which token decides a trial: the first in it, or the most frequent label (ties: the earliest)
    #[arg(long, value_enum, value_name = "HOW", default_value_t = Decision::First)]
    pub decision: Decision,

    /// Also count tokens decoded from windows that begin before the trial (by default a token counts
    /// only when its whole window lies in the trial: t − the model's window length ≥ trial start, as
    /// in a synchronous BCI; decision times are t − trial start either way)
    #[arg(long)]
    pub partial_windows: bool,

    /// Replay driver configuration (e.g. channels=O1,Oz,O2); repeatable; `path` and `speed` are set
    /// by evaluate
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, serde_json::Value)>,

    /// Annotated recordings (EDF+, BDF, ... as the replay driver reads them)
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

/// How trials are cut from a recording's annotations: the rules `evaluate` scores by and `model
/// train` fits by (bci2token-calibrate's `trials`).
#[derive(Debug, Args)]
pub struct TrialArgs {
    /// Annotation texts that are class cues, in class order [default: evaluate: the model's
    /// labels except its null label, as the texts --map maps to them; model train: the texts
    /// --map names, in its order]
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub classes: Option<Vec<String>>,

    /// Annotation text → model label (e.g. T1=hands,T2=feet); repeatable; texts not mapped are
    /// their own label
    #[arg(long = "map", value_name = "TEXT=LABEL,...", value_delimiter = ',', value_parser = parse_map)]
    pub map: Vec<(String, String)>,

    /// A trial starts at the first MARKER annotation after its cue (e.g. stim_start) instead of at the cue
    #[arg(long, value_name = "MARKER")]
    pub trial_start: Option<String>,

    /// Trial length in seconds [default: the cue annotation's duration]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub trial_length: Option<f64>,

    /// Only trials FIRST to LAST (numbered from 1 in time order, in each recording), e.g. 1-12
    #[arg(long, value_name = "FIRST-LAST", value_parser = bci2token_calibrate::trials::parse_trial_range)]
    pub trials: Option<(usize, usize)>,
}

/// Parses one `TEXT=LABEL` of `--map`.
pub fn parse_map(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((text, label)) if !text.is_empty() && !label.is_empty() => Ok((text.to_string(), label.to_string())),
        _ => Err(format!("'{arg}' is not TEXT=LABEL")),
    }
}

/// Parses a positive, finite number of seconds.
pub fn parse_seconds(arg: &str) -> Result<f64, String> {
    match arg.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{arg}' is not a positive number of seconds")),
    }
}

/// Parses one `--set KEY=VALUE`.
pub fn parse_set(arg: &str) -> Result<(String, serde_json::Value), String> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(format!("'{arg}' is not KEY=VALUE (missing '=')"));
    };
    if key.is_empty() {
        return Err(format!("'{arg}' has an empty KEY"));
    }
    let trimmed = value.trim_start();
    let value = if trimmed.starts_with('[') || trimmed.starts_with('{') {
        serde_json::from_str(value)
            .map_err(|e| format!("the value of '{key}' starts like JSON but does not parse: {e}"))?
    } else if key == "path" && !value.is_empty() && std::path::Path::new(value).is_relative() {
        // File paths are resolved here: the daemon's working directory means nothing to the user.
        let abs = std::path::absolute(value).map_err(|e| format!("path={value}: cannot make it absolute: {e}"))?;
        serde_json::Value::String(abs.display().to_string())
    } else {
        serde_json::Value::String(value.to_string())
    };
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests {

    #[test]
    fn bare_bus_means_the_system_bus_and_does_not_eat_the_command() {
        let cli = Cli::try_parse_from(["bci2tokenctl", "--bus", "status"]).unwrap();
        assert_eq!(cli.bus.as_deref(), Some("system"));
        assert!(matches!(cli.command, Command::Status));
        let cli = Cli::try_parse_from(["bci2tokenctl", "--bus=session", "drivers"]).unwrap();
        assert_eq!(cli.bus.as_deref(), Some("session"));
        assert!(Cli::try_parse_from(["bci2tokenctl", "--bus", "--socket", "/x", "status"]).is_err(), "one door");
        let cli = Cli::try_parse_from(["bci2tokenctl", "status"]).unwrap();
        assert_eq!(cli.bus, None);
    }
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    #[test]
    fn set_values() {
        assert_eq!(parse_set("seed=7").unwrap(), ("seed".into(), json!("7")));
        assert_eq!(parse_set("file=/a=b.edf").unwrap(), ("file".into(), json!("/a=b.edf")));
        assert_eq!(parse_set("empty=").unwrap(), ("empty".into(), json!("")));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            parse_set("path=rec.edf").unwrap(),
            ("path".into(), json!(cwd.join("rec.edf").display().to_string()))
        );
        assert_eq!(parse_set("path=/abs.edf").unwrap(), ("path".into(), json!("/abs.edf")));
        assert_eq!(parse_set("flag=true").unwrap(), ("flag".into(), json!("true")));
        assert_eq!(
            parse_set(r#"script=[{"label":"13Hz","seconds":3}]"#).unwrap(),
            ("script".into(), json!([{"label": "13Hz", "seconds": 3}]))
        );
        assert_eq!(parse_set(r#"o={"a":1.5}"#).unwrap(), ("o".into(), json!({"a": 1.5})));
    }

    #[test]
    fn set_errors() {
        let e = parse_set("seed").unwrap_err();
        assert!(e.contains("'seed'") && e.contains("missing '='"), "{e}");
        assert!(parse_set("=x").unwrap_err().contains("empty KEY"));
        assert!(parse_set("script=[1,").unwrap_err().contains("'script'"));
    }

    #[test]
    fn set_without_equals_is_a_usage_error_naming_it() {
        let err =
            Cli::try_parse_from(["bci2tokenctl", "session", "start", "--driver", "x", "--set", "seed"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("seed"), "{err}");
    }

    #[test]
    fn command_line_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "bci2tokenctl",
            "session",
            "start",
            "--driver",
            "synthetic",
            "--set",
            "a=1",
            "--set",
            "b=[2]",
            "--follow",
            "--samples",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Session(SessionCommand::Start(a)) = cli.command else { panic!() };
        assert_eq!(a.set, vec![("a".into(), json!("1")), ("b".into(), json!([2]))]);
        assert!(a.follow && a.samples);

        assert!(Cli::try_parse_from(["bci2tokenctl", "session", "start", "--driver", "x", "--samples"]).is_err());
        assert!(Cli::try_parse_from(["bci2tokenctl", "follow", "s", "--count", "0"]).is_err());
        let cli = Cli::try_parse_from(["bci2tokenctl", "--socket", "/x", "follow", "s", "--count", "3"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/x")));
        let Command::Follow(f) = cli.command else { panic!() };
        assert_eq!(f.count, Some(3));
    }

    #[test]
    fn evaluate_command_line() {
        let cli = Cli::try_parse_from([
            "bci2tokenctl",
            "evaluate",
            "--model",
            "mi",
            "--map",
            "T1=hands,T2=feet",
            "--map",
            "T0=rest",
            "--classes",
            "T1,T2",
            "--trial-length",
            "4",
            "--decision",
            "majority",
            "--set",
            "channels=C3,C4",
            "a.edf",
            "b.edf",
        ])
        .unwrap();
        let Command::Evaluate(e) = cli.command else { panic!() };
        assert_eq!(e.model, "mi");
        assert_eq!(
            e.trial.map,
            vec![("T1".into(), "hands".into()), ("T2".into(), "feet".into()), ("T0".into(), "rest".into())]
        );
        assert_eq!(e.trial.classes, Some(vec!["T1".to_string(), "T2".to_string()]));
        assert_eq!((e.trial.trial_length, e.decision, e.trial.trial_start), (Some(4.0), Decision::Majority, None));
        assert_eq!(e.set, vec![("channels".into(), json!("C3,C4"))]);
        assert_eq!(e.files, vec![PathBuf::from("a.edf"), PathBuf::from("b.edf")]);

        let cli = Cli::try_parse_from(["bci2tokenctl", "evaluate", "--model", "m", "x.edf"]).unwrap();
        let Command::Evaluate(e) = cli.command else { panic!() };
        assert_eq!((e.trial.classes, e.decision, e.trial.map.len()), (None, Decision::First, 0));

        for bad in [
            &["evaluate", "--model", "m"][..],
            &["evaluate", "x.edf"],
            &["evaluate", "--model", "m", "--map", "T1", "x.edf"],
            &["evaluate", "--model", "m", "--map", "T1=", "x.edf"],
            &["evaluate", "--model", "m", "--trial-length", "0", "x.edf"],
            &["evaluate", "--model", "m", "--trial-length", "inf", "x.edf"],
            &["evaluate", "--model", "m", "--decision", "last", "x.edf"],
        ] {
            let args = std::iter::once("bci2tokenctl").chain(bad.iter().copied());
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3  the daemon is not running"), "{help}");
        assert!(help.contains("BCI2TOKEN_SOCKET"));
    }
}
