//! Keys: which key does what, and the state they move (selected channel, page, time span), kept
//! apart from the terminal so that it can be tested.

use std::ops::Range;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    NextSession,
    PrevSession,
    NextChannel,
    PrevChannel,
    NextPage,
    PrevPage,
    LongerSpan,
    ShorterSpan,
}

/// The footer: every key, in words that fit 80 columns.
pub const FOOTER: &str =
    "q quit  Tab/n next session  p prev  \u{2191}\u{2193} channel  PgUp/PgDn page  \u{2190}\u{2192} time span";

/// The action of a key press (`None` for other keys and for key releases).
pub fn action(key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c' | 'C') if ctrl => Action::Quit,
        _ if ctrl => return None,
        KeyCode::Char('q' | 'Q') => Action::Quit,
        KeyCode::Tab | KeyCode::Char('n') => Action::NextSession,
        KeyCode::BackTab | KeyCode::Char('p') => Action::PrevSession,
        KeyCode::Down | KeyCode::Char('j') => Action::NextChannel,
        KeyCode::Up | KeyCode::Char('k') => Action::PrevChannel,
        KeyCode::PageDown | KeyCode::Char(']' | ' ') => Action::NextPage,
        KeyCode::PageUp | KeyCode::Char('[') => Action::PrevPage,
        KeyCode::Right | KeyCode::Char('+' | '=') => Action::LongerSpan,
        KeyCode::Left | KeyCode::Char('-') => Action::ShorterSpan,
        _ => return None,
    })
}

/// The time spans the traces can show, s.
pub const SPANS: [f64; 4] = [1.0, 2.0, 5.0, 10.0];

/// What the keys move within one session's display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nav {
    /// The selected channel (its band powers are shown); its page is the one shown.
    pub selected: usize,
    /// Index into [`SPANS`].
    pub span: usize,
}

impl Default for Nav {
    fn default() -> Nav {
        Nav { selected: 0, span: 2 }
    }
}

impl Nav {
    pub fn span_seconds(&self) -> f64 {
        SPANS[self.span.min(SPANS.len() - 1)]
    }

    /// Applies a channel, page or span action for `channels` channels shown `per_page` at a time;
    /// other actions change nothing here. Channels and pages wrap around.
    pub fn apply(&mut self, action: Action, channels: usize, per_page: usize) {
        let per_page = per_page.max(1);
        if channels == 0 {
            self.selected = 0;
        }
        let last = channels.saturating_sub(1);
        self.selected = self.selected.min(last);
        let pages = channels.div_ceil(per_page).max(1);
        let page = self.selected / per_page;
        match action {
            Action::NextChannel => self.selected = if self.selected >= last { 0 } else { self.selected + 1 },
            Action::PrevChannel => self.selected = if self.selected == 0 { last } else { self.selected - 1 },
            Action::NextPage => self.selected = ((page + 1) % pages * per_page).min(last),
            Action::PrevPage => self.selected = ((page + pages - 1) % pages * per_page).min(last),
            Action::LongerSpan => self.span = (self.span + 1).min(SPANS.len() - 1),
            Action::ShorterSpan => self.span = self.span.saturating_sub(1),
            Action::Quit | Action::NextSession | Action::PrevSession => {}
        }
    }

    /// The channels on the selected channel's page.
    pub fn page(&self, channels: usize, per_page: usize) -> Range<usize> {
        let per_page = per_page.max(1);
        let start = (self.selected.min(channels.saturating_sub(1)) / per_page) * per_page;
        start.min(channels)..(start + per_page).min(channels)
    }

    /// Page number (from 1) and page count, for the display.
    pub fn page_of(&self, channels: usize, per_page: usize) -> (usize, usize) {
        let per_page = per_page.max(1);
        (self.page(channels, per_page).start / per_page + 1, channels.div_ceil(per_page).max(1))
    }
}

/// The live session after (`forward`) or before `current` in `live` (the daemon's order),
/// wrapping around; when `current` is not there (it ended), the first (or last) one. `None`
/// when there is no other.
pub fn neighbour(current: &str, live: &[String], forward: bool) -> Option<String> {
    let n = live.len();
    match live.iter().position(|id| id == current) {
        Some(_) if n == 1 => None,
        Some(i) => Some(live[if forward { (i + 1) % n } else { (i + n - 1) % n }].clone()),
        None if forward => live.first().cloned(),
        None => live.last().cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(action(&press(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(action(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(action(&press(KeyCode::Char('c'))), None, "c alone is no key");
        assert_eq!(action(&KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL)), None);
        assert_eq!(action(&press(KeyCode::Tab)), Some(Action::NextSession));
        assert_eq!(action(&press(KeyCode::Char('n'))), Some(Action::NextSession));
        assert_eq!(action(&KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)), Some(Action::PrevSession));
        assert_eq!(action(&press(KeyCode::Char('p'))), Some(Action::PrevSession));
        assert_eq!(action(&press(KeyCode::Down)), Some(Action::NextChannel));
        assert_eq!(action(&press(KeyCode::Char('k'))), Some(Action::PrevChannel));
        assert_eq!(action(&press(KeyCode::PageDown)), Some(Action::NextPage));
        assert_eq!(action(&press(KeyCode::Char('['))), Some(Action::PrevPage));
        assert_eq!(action(&press(KeyCode::Right)), Some(Action::LongerSpan));
        assert_eq!(action(&press(KeyCode::Char('-'))), Some(Action::ShorterSpan));
        assert_eq!(action(&press(KeyCode::Char('x'))), None);
        let mut release = press(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(action(&release), None, "a release is not a press");
        assert!(FOOTER.chars().count() <= 80, "{FOOTER}");
    }

    #[test]
    fn channels_and_pages_wrap_and_follow_each_other() {
        // 20 channels, 8 per page: pages 0-7, 8-15, 16-19.
        let mut nav = Nav::default();
        assert_eq!(nav.page(20, 8), 0..8);
        assert_eq!(nav.page_of(20, 8), (1, 3));
        for _ in 0..8 {
            nav.apply(Action::NextChannel, 20, 8);
        }
        assert_eq!((nav.selected, nav.page(20, 8)), (8, 8..16), "moving down moves the page");
        nav.apply(Action::NextPage, 20, 8);
        assert_eq!((nav.selected, nav.page(20, 8), nav.page_of(20, 8)), (16, 16..20, (3, 3)));
        nav.apply(Action::NextPage, 20, 8);
        assert_eq!(nav.selected, 0, "past the last page: the first");
        nav.apply(Action::PrevPage, 20, 8);
        assert_eq!(nav.selected, 16);
        nav.apply(Action::PrevChannel, 20, 8);
        assert_eq!((nav.selected, nav.page(20, 8)), (15, 8..16));
        nav.selected = 19;
        nav.apply(Action::NextChannel, 20, 8);
        assert_eq!(nav.selected, 0);
        nav.apply(Action::PrevChannel, 20, 8);
        assert_eq!(nav.selected, 19);
        // Fewer channels than before (another session): the selection is clamped.
        nav.apply(Action::NextSession, 4, 8);
        assert_eq!((nav.selected, nav.page(4, 8)), (3, 0..4));
        // No channels at all, or no room: nothing breaks.
        nav.apply(Action::NextChannel, 0, 0);
        assert_eq!((nav.selected, nav.page(0, 0), nav.page_of(0, 0)), (0, 0..0, (1, 1)));
    }

    #[test]
    fn time_span_steps_within_its_bounds() {
        let mut nav = Nav::default();
        assert_eq!(nav.span_seconds(), 5.0);
        nav.apply(Action::LongerSpan, 8, 8);
        nav.apply(Action::LongerSpan, 8, 8);
        assert_eq!(nav.span_seconds(), 10.0);
        for _ in 0..5 {
            nav.apply(Action::ShorterSpan, 8, 8);
        }
        assert_eq!(nav.span_seconds(), 1.0);
    }

    #[test]
    fn switching_sessions_cycles_through_the_live_ones() {
        let live: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(neighbour("a", &live, true).as_deref(), Some("b"));
        assert_eq!(neighbour("c", &live, true).as_deref(), Some("a"));
        assert_eq!(neighbour("a", &live, false).as_deref(), Some("c"));
        assert_eq!(neighbour("b", &live, false).as_deref(), Some("a"));
        // The followed session ended and left the list.
        assert_eq!(neighbour("gone", &live, true).as_deref(), Some("a"));
        assert_eq!(neighbour("gone", &live, false).as_deref(), Some("c"));
        assert_eq!(neighbour("a", &live[..1], true), None, "no other session");
        assert_eq!(neighbour("a", &[], true), None);
    }
}
