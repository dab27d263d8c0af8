//! `bci2tokenctl monitor [ID]`: a terminal UI over a live session's events (docs/bci2tokenctl.md).
//!
//! Threads: the UI thread (this one) reads keys and draws at a fixed rate; a thread per followed
//! session reads its `follow --samples` stream; another lists the live sessions every few
//! seconds (for switching). They talk through one bounded channel (see [`feed`]). The terminal
//! is restored by [`term::Guard`] on every way out.

mod bands;
mod feed;
mod keys;
mod model;
mod ring;
mod term;
mod ui;

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bci2token_api::{ErrorCode, Request, SessionInfo};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent};
use ratatui::Terminal;

use crate::cli::MonitorArgs;
use crate::error::{CtlError, Kind};
use crate::files::Files;
use crate::transport::Transport;

use bands::BandMeter;
use feed::{Msg, Subscription};
use keys::{Action, Nav};
use model::SessionView;

/// How often the screen is drawn.
const FRAME: Duration = Duration::from_millis(100);
/// How often the live sessions are listed.
const LIST_EVERY: Duration = Duration::from_secs(2);
/// Messages waiting for the UI at most (then the reader waits and the daemon drops events).
const QUEUE: usize = 512;
/// At most this long spent on waiting messages before a frame is drawn.
const DRAIN_BUDGET: Duration = Duration::from_millis(40);
/// How long a note stays in the status line.
const NOTE_FOR: Duration = Duration::from_secs(3);

/// The usage error for `--json monitor`.
pub fn json_refused() -> CtlError {
    CtlError::new(
        Kind::Usage,
        "monitor draws a terminal UI and has no JSON output; for machine-readable events use \
         `bci2tokenctl --json follow ID --samples`",
    )
}

pub fn run(args: &MonitorArgs, transport: &Transport) -> Result<(), CtlError> {
    if !io::stdout().is_terminal() {
        return Err(CtlError::new(
            Kind::Usage,
            "monitor draws a terminal UI, but standard output is not a terminal; to record or \
             pipe a session's events use `bci2tokenctl follow ID --samples` (with --json for JSON lines)",
        ));
    }
    let id = match &args.id {
        Some(id) => id.clone(),
        None => first_live(transport)?,
    };
    // Subscribe before taking over the terminal, so that an unknown session, a refusal or a
    // daemon that is not running is reported as by any other command.
    let answer = transport.call(&feed::follow_request(&id), &Files::default())?;
    let info: SessionInfo = answer.reply.decode("follow")?;
    let frames = answer.frames.ok_or_else(|| CtlError::protocol("no event stream came with the reply to 'follow'"))?;

    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let mut app = App::new(transport.clone(), tx.clone());
    app.view.on_reply(&info);
    app.meter = BandMeter::new(info.sample_rate);

    let guard = term::Guard::enter().map_err(|e| terminal_error(&e))?;
    app.sub = Some(Subscription::start(app.generation, &id, transport, Some(frames), tx.clone()));
    let stop_listing = Arc::new(AtomicBool::new(false));
    feed::lister(transport, tx, stop_listing.clone(), LIST_EVERY);
    let result = Terminal::new(CrosstermBackend::new(io::stdout()))
        .map_err(|e| terminal_error(&e))
        .and_then(|mut terminal| app.run(&mut terminal, &rx, &guard));
    stop_listing.store(true, Ordering::SeqCst);
    app.sub = None;
    drop(guard);
    result
}

fn terminal_error(e: &io::Error) -> CtlError {
    CtlError::new(Kind::Io, format!("the terminal: {e}"))
}

/// The first live session the caller can see (`session list` order).
fn first_live(transport: &Transport) -> Result<String, CtlError> {
    let answer = transport.call(&Request::SessionList, &Files::default())?;
    let sessions: Vec<SessionInfo> = answer.reply.decode("session_list")?;
    sessions.iter().find(|s| !s.state.is_final()).map(|s| s.id.clone()).ok_or_else(|| {
        CtlError::new(
            Kind::Api(ErrorCode::NotFound),
            "no live session to monitor (`bci2tokenctl session list` shows none running that you may follow); \
             start one with `bci2tokenctl session start`",
        )
    })
}

struct App {
    transport: Transport,
    tx: SyncSender<Msg>,
    view: SessionView,
    nav: Nav,
    meter: Option<BandMeter>,
    sub: Option<Subscription>,
    /// Of the current subscription; messages of earlier ones are dropped.
    generation: u64,
    /// The live sessions' ids, in the daemon's order.
    live: Vec<String>,
    list_error: Option<String>,
    note: Option<(Instant, String)>,
    per_page: usize,
    theme: ui::Theme,
    scratch: Vec<f32>,
}

impl App {
    fn new(transport: Transport, tx: SyncSender<Msg>) -> App {
        App {
            transport,
            tx,
            view: SessionView::connecting(""),
            nav: Nav::default(),
            meter: None,
            sub: None,
            generation: 1,
            live: Vec::new(),
            list_error: None,
            note: None,
            per_page: 1,
            theme: ui::Theme::from_env(),
            scratch: Vec::new(),
        }
    }

    fn run<B: ratatui::backend::Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        rx: &Receiver<Msg>,
        guard: &term::Guard,
    ) -> Result<(), CtlError>
    where
        B::Error: std::fmt::Display,
    {
        let draw_error = |e: B::Error| CtlError::new(Kind::Io, format!("drawing on the terminal: {e}"));
        terminal.clear().map_err(draw_error)?;
        let mut next_draw = Instant::now();
        loop {
            if guard.signalled.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Some(panic) = guard.panicked() {
                return Err(CtlError::new(Kind::Io, panic));
            }
            let started = Instant::now();
            while let Ok(msg) = rx.try_recv() {
                self.on_msg(msg);
                if started.elapsed() > DRAIN_BUDGET {
                    break;
                }
            }
            if Instant::now() >= next_draw {
                if self.note.as_ref().is_some_and(|(at, _)| at.elapsed() > NOTE_FOR) {
                    self.note = None;
                }
                terminal.draw(|frame| self.draw(frame)).map_err(draw_error)?;
                next_draw = Instant::now() + FRAME;
            }
            let wait = next_draw.saturating_duration_since(Instant::now());
            if event::poll(wait).map_err(|e| terminal_error(&e))? {
                match event::read().map_err(|e| terminal_error(&e))? {
                    TermEvent::Key(key) => {
                        if let Some(action) = keys::action(&key) {
                            if action == Action::Quit {
                                return Ok(());
                            }
                            self.on_action(action);
                            next_draw = Instant::now();
                        }
                    }
                    TermEvent::Resize(..) => next_draw = Instant::now(),
                    _ => {}
                }
            }
        }
    }

    fn draw(&mut self, frame: &mut ratatui::Frame) {
        let position = (self.live.iter().position(|id| *id == self.view.id).map(|i| i + 1), self.live.len());
        let note = self.note.as_ref().map(|(_, n)| n.as_str());
        let screen = ui::Screen { view: &self.view, nav: &self.nav, position, note, theme: self.theme };
        let drawn = ui::draw(frame, &screen, self.meter.as_mut(), &mut self.scratch);
        self.per_page = drawn.per_page;
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Reply { generation, info } if generation == self.generation => {
                self.view.on_reply(&info);
                self.meter = BandMeter::new(info.sample_rate);
            }
            Msg::Event { generation, event } if generation == self.generation => self.view.apply(&event),
            Msg::Closed { generation, error } if generation == self.generation => {
                if let Some(why) = error {
                    if !self.view.ended() {
                        self.view.stream = model::Stream::Closed(why);
                    }
                }
            }
            Msg::Sessions(Ok(list)) => {
                self.live = list.iter().filter(|s| !s.state.is_final()).map(|s| s.id.clone()).collect();
                self.list_error = None;
            }
            Msg::Sessions(Err(e)) => self.list_error = Some(e),
            Msg::Reply { .. } | Msg::Event { .. } | Msg::Closed { .. } => {}
        }
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::NextSession | Action::PrevSession => {
                match keys::neighbour(&self.view.id, &self.live, action == Action::NextSession) {
                    Some(id) => self.switch_to(&id),
                    None => {
                        let why = match &self.list_error {
                            Some(e) => format!("cannot list the sessions: {e}"),
                            None => "no other live session to switch to".to_string(),
                        };
                        self.note = Some((Instant::now(), why));
                    }
                }
            }
            other => self.nav.apply(other, self.view.channels.len(), self.per_page),
        }
    }

    /// Follows `id` instead of the current session.
    fn switch_to(&mut self, id: &str) {
        self.sub = None; // cancels the old stream
        self.generation += 1;
        self.view = SessionView::connecting(id);
        self.meter = None;
        self.nav.selected = 0;
        self.note = None;
        self.sub = Some(Subscription::start(self.generation, id, &self.transport, None, self.tx.clone()));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::socket::Env;

    #[test]
    fn monitor_takes_an_optional_id_and_refuses_json() {
        let cli = Cli::try_parse_from(["bci2tokenctl", "monitor"]).unwrap();
        assert!(matches!(&cli.command, Command::Monitor(a) if a.id.is_none()));
        let cli = Cli::try_parse_from(["bci2tokenctl", "--socket", "/x", "monitor", "3f2a91c04b7e"]).unwrap();
        assert!(matches!(&cli.command, Command::Monitor(a) if a.id.as_deref() == Some("3f2a91c04b7e")));
        assert!(Cli::try_parse_from(["bci2tokenctl", "monitor", "a", "b"]).is_err());

        // Refused before anything is connected (no daemon at /nonexistent).
        let cli = Cli::try_parse_from(["bci2tokenctl", "--socket", "/nonexistent", "monitor", "--json"]).unwrap();
        let mut out = Vec::new();
        let e = crate::app::run(&cli, &Env::default(), &mut out).unwrap_err();
        assert_eq!((e.exit_code(), e.code()), (2, "usage".to_string()));
        assert!(e.message.contains("no JSON output"), "{}", e.message);
        assert!(out.is_empty());
    }
}
