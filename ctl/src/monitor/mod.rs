//! `bci2tokenctl monitor [ID]`: a terminal UI over a live session's events (docs/bci2tokenctl.md).
//!
//! Threads: the UI thread (this one) reads keys and draws, at most at a fixed rate and only when
//! something changed; a thread per followed session reads its `follow --samples` stream into the
//! session's view, shared behind a mutex; another lists the live sessions every few seconds (for
//! switching) and sends them through a small bounded channel (see [`feed`]). The terminal is
//! restored by [`term::Guard`] on every way out.

mod bands;
mod feed;
mod keys;
mod model;
mod ring;
mod term;
mod ui;

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
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
use feed::{lock, Msg, Shared, Subscription};
use keys::{Action, Nav};
use model::SessionView;

/// How often the screen is drawn at most.
const FRAME: Duration = Duration::from_millis(100);
/// How often an idle UI looks for news (changes of the view, messages, signals).
const IDLE: Duration = Duration::from_millis(25);
/// How often the live sessions are listed.
const LIST_EVERY: Duration = Duration::from_secs(2);
/// Lists waiting for the UI at most (then the lister waits).
const QUEUE: usize = 4;
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

    let mut view = SessionView::connecting(&id);
    view.on_reply(&info);
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let mut app = App::new(transport.clone(), view);

    let guard = term::Guard::enter().map_err(|e| terminal_error(&e))?;
    app.sub = Some(Subscription::start(&id, transport, Some(frames), app.view.clone()));
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
    /// The followed session's, written by its subscription's thread (each subscription has a
    /// view of its own: nothing of a session switched away from reaches this one).
    view: Shared,
    nav: Nav,
    /// For the band powers at the rate the view's rings hold (`meter_rate`).
    meter: Option<BandMeter>,
    meter_rate: Option<u64>,
    sub: Option<Subscription>,
    /// The view's revision last drawn.
    drawn: Option<u64>,
    /// The live sessions' ids, in the daemon's order.
    live: Vec<String>,
    list_error: Option<String>,
    note: Option<(Instant, String)>,
    per_page: usize,
    theme: ui::Theme,
    scratch: Vec<f32>,
}

impl App {
    fn new(transport: Transport, view: SessionView) -> App {
        App {
            transport,
            view: Arc::new(Mutex::new(view)),
            nav: Nav::default(),
            meter: None,
            meter_rate: None,
            sub: None,
            drawn: None,
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
        // Something other than the view changed (a key, a list, the size): draw.
        let mut dirty = true;
        loop {
            if guard.signalled.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Some(panic) = guard.panicked() {
                return Err(CtlError::new(Kind::Io, panic));
            }
            while let Ok(msg) = rx.try_recv() {
                dirty |= self.on_msg(msg);
            }
            if self.note.as_ref().is_some_and(|(at, _)| at.elapsed() > NOTE_FOR) {
                self.note = None;
                dirty = true;
            }
            let changed = dirty || self.drawn != Some(lock(&self.view).revision);
            if changed && Instant::now() >= next_draw {
                // The view is locked only while the frame is made, not while it is written out
                // (a slow terminal does not hold up the reader).
                terminal.draw(|frame| self.draw(frame)).map_err(draw_error)?;
                next_draw = Instant::now() + FRAME;
                dirty = false;
            }
            let wait = next_draw.saturating_duration_since(Instant::now()).max(IDLE);
            if !event::poll(wait).map_err(|e| terminal_error(&e))? {
                continue;
            }
            // Every key already typed before the next frame.
            loop {
                match event::read().map_err(|e| terminal_error(&e))? {
                    TermEvent::Key(key) => {
                        if let Some(action) = keys::action(&key) {
                            if action == Action::Quit {
                                return Ok(());
                            }
                            self.on_action(action);
                            (next_draw, dirty) = (Instant::now(), true);
                        }
                    }
                    TermEvent::Resize(..) => (next_draw, dirty) = (Instant::now(), true),
                    _ => {}
                }
                if !event::poll(Duration::ZERO).map_err(|e| terminal_error(&e))? {
                    break;
                }
            }
        }
    }

    fn draw(&mut self, frame: &mut ratatui::Frame) {
        let view = lock(&self.view);
        let rate = view.held_rate();
        if self.meter_rate != Some(rate.to_bits()) {
            self.meter = BandMeter::new(rate);
            self.meter_rate = Some(rate.to_bits());
        }
        let position = (self.live.iter().position(|id| *id == view.id).map(|i| i + 1), self.live.len());
        let note = self.note.as_ref().map(|(_, n)| n.as_str());
        let screen = ui::Screen { view: &view, nav: &self.nav, position, note, theme: self.theme };
        let drawn = ui::draw(frame, &screen, self.meter.as_mut(), &mut self.scratch);
        self.per_page = drawn.per_page;
        self.drawn = Some(view.revision);
    }

    /// True when the screen changes.
    fn on_msg(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Sessions(Ok(list)) => {
                let live: Vec<String> = list.iter().filter(|s| !s.state.is_final()).map(|s| s.id.clone()).collect();
                let changed = live != self.live;
                (self.live, self.list_error) = (live, None);
                changed
            }
            Msg::Sessions(Err(e)) => {
                self.list_error = Some(e);
                false
            }
        }
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::NextSession | Action::PrevSession => {
                let id = lock(&self.view).id.clone();
                match keys::neighbour(&id, &self.live, action == Action::NextSession) {
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
            other => {
                let channels = lock(&self.view).channels.len();
                self.nav.apply(other, channels, self.per_page);
            }
        }
    }

    /// Follows `id` instead of the current session.
    fn switch_to(&mut self, id: &str) {
        // Cancels the old stream; what its thread may still write goes to the old view.
        self.sub = None;
        self.view = Arc::new(Mutex::new(SessionView::connecting(id)));
        self.drawn = None;
        self.nav.selected = 0;
        self.note = None;
        self.sub = Some(Subscription::start(id, &self.transport, None, self.view.clone()));
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
