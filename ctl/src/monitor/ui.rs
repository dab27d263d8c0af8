//! Drawing one screen of the monitor (pure: from the state to a frame).
//!
//! ```text
//!  header   bci2token monitor │ session ID (i/n live) │ driver │ model │ channels @ rate
//!  status   state │ breaker │ gaps │ lost │ quality score   (or what just happened)
//!  traces   a strip per channel of the page: label, ±scale µV, trace   │ Quality (per channel)
//!                                                                      │ Bands of the selected one
//!  tokens   the text so far; the last token and its probabilities
//!  footer   the keys
//! ```

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as Segment};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use bci2token_api::observe::BreakerState;

use super::bands::{BandMeter, Powers, BANDS};
use super::keys::{Nav, FOOTER};
use super::model::{ChannelView, SessionView, Stream};

/// Rows of a channel strip at least (label and scale).
pub const MIN_STRIP_ROWS: u16 = 2;
/// Columns of a strip's label (channel name, scale).
const LABEL_COLUMNS: u16 = 9;

/// Colours, or none with `NO_COLOR` (https://no-color.org): then only bold and reverse video.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Theme {
        Theme { color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    fn good(&self) -> Style {
        self.fg(Color::Green)
    }
    fn bad(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    fn warn(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }
    fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }
    fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    fn trace(&self) -> Color {
        if self.color {
            Color::Cyan
        } else {
            Color::Reset
        }
    }
}

/// Everything a screen shows.
pub struct Screen<'a> {
    pub view: &'a SessionView,
    pub nav: &'a Nav,
    /// The followed session's place among the live ones (from 1), and how many are live.
    pub position: (Option<usize>, usize),
    /// Something to tell right now (e.g. "no other live session").
    pub note: Option<&'a str>,
    pub theme: Theme,
}

/// What the drawing found out that the keys need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drawn {
    /// Channel strips per page.
    pub per_page: usize,
}

/// Draws the screen; `meter` computes the selected channel's band powers, `scratch` is reused
/// for samples.
pub fn draw(frame: &mut Frame, s: &Screen, meter: Option<&mut BandMeter>, scratch: &mut Vec<f32>) -> Drawn {
    let [header, status, middle, tokens, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(s)), header);
    frame.render_widget(Paragraph::new(status_line(s)), status);
    frame.render_widget(Paragraph::new(Line::styled(FOOTER, s.theme.selected())), footer);
    frame.render_widget(tokens_widget(s, tokens.width), tokens);

    let side_width = if middle.width >= 64 { (middle.width / 3).clamp(30, 40) } else { 0 };
    let [traces, side] = Layout::horizontal([Constraint::Min(10), Constraint::Length(side_width)]).areas(middle);
    let per_page = usize::from((traces.height.saturating_sub(1) / MIN_STRIP_ROWS).max(1));
    draw_traces(frame, s, traces, per_page, scratch);
    if side_width > 0 {
        let [quality, bands] = Layout::vertical([Constraint::Min(3), Constraint::Length(7)]).areas(side);
        frame.render_widget(quality_widget(s, per_page), quality);
        let powers = match (meter, s.view.channels.get(s.nav.selected)) {
            (Some(m), Some(ch)) => {
                let n = m.samples();
                m.compute(ch.ring.last(n), ch.ring.len().min(n)).ok_or(n)
            }
            _ => Err(0),
        };
        frame.render_widget(bands_widget(s, powers, bands.width.saturating_sub(2)), bands);
    }
    Drawn { per_page }
}

fn header_line<'a>(s: &Screen<'a>) -> Line<'a> {
    let v = s.view;
    let t = s.theme;
    let sep = || Span::styled(" \u{2502} ", t.dim());
    let position = match s.position {
        (Some(i), n) => format!(" ({i}/{n} live)"),
        (None, n) => format!(" ({n} live)"),
    };
    let mut spans = vec![Span::raw(" session "), Span::styled(safe(&v.id), t.title()), Span::raw(position)];
    if !v.driver.is_empty() {
        spans.extend([sep(), Span::raw(safe(&v.driver))]);
        spans.extend([sep(), Span::raw(v.model.as_deref().map_or_else(|| "no model".into(), safe))]);
        spans.extend([sep(), Span::raw(format!("{} ch @ {} Hz", v.channels.len(), number(v.sample_rate)))]);
        if !v.description.is_empty() {
            spans.extend([sep(), Span::styled(safe(&v.description), t.dim())]);
        }
    }
    Line::from(spans)
}

fn status_line<'a>(s: &Screen<'a>) -> Line<'a> {
    let v = s.view;
    let t = s.theme;
    if let Some(note) = s.note {
        return Line::styled(format!(" {}", safe(note)), t.warn());
    }
    match &v.stream {
        Stream::Connecting => {
            return Line::styled(format!(" connecting to session {}\u{2026}", safe(&v.id)), t.warn());
        }
        Stream::Closed(why) => {
            return Line::styled(format!(" stream closed: {}; Tab/n switches, q quits", safe(why)), t.bad());
        }
        Stream::Ended => {
            let state = v.state.map_or("ended", |s| s.as_str());
            let why = v.state_message.as_deref().map(|m| format!(": {}", safe(m))).unwrap_or_default();
            return Line::styled(
                format!(" the session ended ({state}{why}); Tab/n switches to a live one, q quits"),
                t.warn(),
            );
        }
        Stream::Live => {}
    }
    let sep = || Span::styled(" \u{2502} ", t.dim());
    let state = v.state.map_or("?", |s| s.as_str());
    let state_style = match v.state {
        Some(bci2token_api::SessionState::Running) => t.good(),
        _ => t.warn(),
    };
    let mut spans = vec![Span::raw(" state "), Span::styled(state.to_string(), state_style), sep()];
    match &v.breaker {
        None => spans.push(Span::styled("no model", t.dim())),
        Some(b) => {
            let style = match b.state {
                BreakerState::Closed => t.good(),
                BreakerState::HalfOpen => t.warn(),
                BreakerState::Open => t.bad(),
            };
            spans.push(Span::raw("breaker "));
            spans.push(Span::styled(b.state.as_str().to_string(), style));
            if b.state != BreakerState::Closed {
                let retry = b.retry_in.map(|r| format!(", retry in {r:.1} s")).unwrap_or_default();
                spans.push(Span::raw(format!(" ({} failures{retry})", b.failures)));
            }
        }
    }
    spans.push(sep());
    let gaps = if v.gap_seconds > 0.0 {
        format!("gaps {} ({:.2} s)", v.gaps, v.gap_seconds)
    } else {
        format!("gaps {}", v.gaps)
    };
    spans.push(Span::styled(gaps, if v.gaps > 0 { t.warn() } else { Style::new() }));
    spans.push(sep());
    spans.push(Span::styled(format!("lost {}", v.lost), if v.lost > 0 { t.warn() } else { Style::new() }));
    spans.push(sep());
    match &v.quality {
        None => spans.push(Span::styled("quality \u{2026}", t.dim())),
        Some(q) => {
            let good = q.channels.iter().filter(|c| c.flags.is_empty()).count();
            let style = if good == q.channels.len() { t.good() } else { t.bad() };
            spans
                .push(Span::styled(format!("quality {:.0}% ({good}/{} ok)", q.score * 100.0, q.channels.len()), style));
        }
    }
    if let Some(p) = &v.problem {
        spans.push(sep());
        spans.push(Span::styled(safe(p), t.warn()));
    } else if let Some((onset, text)) = &v.annotation {
        spans.push(sep());
        spans.push(Span::raw(format!("marker \"{}\" at {onset:.1} s", safe(text))));
    }
    Line::from(spans)
}

/// A nice round scale (1, 2 or 5 × 10^k) at least `max_abs`; 1 for a flat or empty channel.
pub fn nice_scale(max_abs: f64) -> f64 {
    if !(max_abs.is_finite() && max_abs > 1e-6) {
        return 1.0;
    }
    let decade = 10f64.powf(max_abs.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * decade >= max_abs * (1.0 - 1e-12) {
            return m * decade;
        }
    }
    10.0 * decade
}

/// `±50 µV`, `±0.2 µV`, `±2000 µV`.
pub fn scale_label(scale: f64, unit: &str) -> String {
    let digits = if scale >= 1.0 { 0 } else { (-scale.log10()).ceil().max(0.0) as usize };
    let unit = if unit == "uV" { "\u{b5}V" } else { unit };
    format!("\u{b1}{scale:.digits$} {unit}").trim_end().to_string()
}

fn draw_traces(frame: &mut Frame, s: &Screen, area: Rect, per_page: usize, scratch: &mut Vec<f32>) {
    let v = s.view;
    let t = s.theme;
    let span = s.nav.span_seconds();
    let n = v.channels.len();
    let page = s.nav.page(n, per_page);
    let (page_no, pages) = s.nav.page_of(n, per_page);
    let title = if n == 0 {
        " waiting for the session's channels\u{2026}".to_string()
    } else {
        let until = v.latest_t.map(|t| format!(" to t={t:.1} s")).unwrap_or_default();
        format!(
            " last {} s{until} \u{2502} ch {}-{} of {n} \u{2502} page {page_no}/{pages}",
            number(span),
            page.start + 1,
            page.end
        )
    };
    let [title_area, strips] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(Line::styled(title, t.title())), title_area);
    if page.is_empty() || strips.height == 0 {
        return;
    }
    let rows = (strips.height / page.len() as u16).max(1);
    let shown = (span * v.held_rate()).round().max(1.0) as usize;
    for (i, ch) in page.clone().enumerate() {
        let y = strips.y + i as u16 * rows;
        if y >= strips.y + strips.height {
            break;
        }
        let strip = Rect { x: strips.x, y, width: strips.width, height: rows.min(strips.y + strips.height - y) };
        draw_strip(frame, s, &v.channels[ch], ch == s.nav.selected, strip, shown, scratch);
    }
}

fn draw_strip(
    frame: &mut Frame,
    s: &Screen,
    ch: &ChannelView,
    selected: bool,
    area: Rect,
    shown: usize,
    scratch: &mut Vec<f32>,
) {
    let t = s.theme;
    let [label_area, trace_area] =
        Layout::horizontal([Constraint::Length(LABEL_COLUMNS), Constraint::Min(1)]).areas(area);
    ch.ring.copy_last(shown, scratch);
    let finite = || scratch.iter().copied().filter(|x| x.is_finite()).map(f64::from);
    let count = finite().count();
    let mean = if count > 0 { finite().sum::<f64>() / count as f64 } else { 0.0 };
    let max_abs = finite().map(|x| (x - mean).abs()).fold(0.0, f64::max);
    let scale = nice_scale(max_abs);

    let flags: Vec<&str> = s
        .view
        .quality
        .as_ref()
        .and_then(|q| q.channels.iter().find(|c| c.label == ch.label))
        .map(|c| c.flags.iter().map(|f| f.as_str()).collect())
        .unwrap_or_default();
    let marker = if selected { "\u{25b8}" } else { " " };
    let name_style = if !flags.is_empty() {
        t.bad()
    } else if selected {
        t.selected()
    } else {
        t.title()
    };
    let mut lines = vec![
        Line::from(vec![Span::raw(marker), Span::styled(safe(&ch.label), name_style)]),
        Line::styled(format!(" {}", scale_label(scale, &safe(&ch.unit))), t.dim().remove_modifier(Modifier::BOLD)),
    ];
    if !flags.is_empty() {
        lines.push(Line::styled(format!(" {}", flags.join(",")), t.bad()));
    }
    frame.render_widget(Paragraph::new(lines), label_area);

    if count == 0 {
        let text = if ch.ring.is_empty() { "no samples yet" } else { "no signal (gap)" };
        frame.render_widget(Paragraph::new(Line::styled(text, t.dim())), trace_area);
        return;
    }
    // Right-aligned: the newest sample at the right edge, `shown` samples across.
    let offset = shown - scratch.len();
    let pixels = usize::from(trace_area.width) * 2;
    let color = t.trace();
    let clamp = |x: f32| (f64::from(x) - mean).clamp(-scale, scale);
    let mut segments = Vec::new();
    if scratch.len() <= pixels * 2 {
        // Few samples: a line through them.
        for (i, w) in scratch.windows(2).enumerate() {
            if w[0].is_finite() && w[1].is_finite() {
                let x = (offset + i) as f64;
                segments.push(Segment::new(x, clamp(w[0]), x + 1.0, clamp(w[1]), color));
            }
        }
    } else {
        // Many: each pixel column's range, overlapping its neighbour's by a sample so that the
        // trace stays joined.
        let per = shown as f64 / pixels as f64;
        for c in 0..pixels {
            let lo = ((c as f64 * per) as usize).max(offset) - offset;
            let hi = ((((c + 1) as f64 * per) as usize + 1).max(offset) - offset).min(scratch.len());
            if lo >= hi {
                continue;
            }
            let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
            for &x in scratch[lo..hi].iter().filter(|x| x.is_finite()) {
                min = min.min(x);
                max = max.max(x);
            }
            if min <= max {
                let x = (c as f64 + 0.5) * per;
                segments.push(Segment::new(x, clamp(min), x, clamp(max), color));
            }
        }
    }
    let canvas =
        Canvas::default().marker(Marker::Braille).x_bounds([0.0, shown as f64]).y_bounds([-scale, scale]).paint(
            move |ctx| {
                for seg in &segments {
                    ctx.draw(seg);
                }
            },
        );
    frame.render_widget(canvas, trace_area);
}

fn quality_widget<'a>(s: &Screen<'a>, per_page: usize) -> Paragraph<'a> {
    let v = s.view;
    let t = s.theme;
    let Some(q) = &v.quality else {
        return Paragraph::new(Line::styled("no quality assessed yet", t.dim()))
            .block(Block::bordered().title(" Quality "));
    };
    let good = q.channels.iter().filter(|c| c.flags.is_empty()).count();
    let title = format!(" Quality {:.0}% ({good}/{} ok) ", q.score * 100.0, q.channels.len());
    let page = s.nav.page(v.channels.len(), per_page);
    let on_page: Vec<&str> = v.channels[page].iter().map(|c| c.label.as_str()).collect();
    let mut lines = Vec::new();
    for c in q.channels.iter().filter(|c| on_page.contains(&c.label.as_str())) {
        let line = if c.flags.is_empty() {
            Line::from(vec![Span::raw(format!("{:<8}", safe(&c.label))), Span::styled("ok", t.good())])
        } else {
            let flags: Vec<&str> = c.flags.iter().map(|f| f.as_str()).collect();
            Line::styled(format!("{:<8}{}", safe(&c.label), flags.join(", ")), t.bad())
        };
        lines.push(line);
    }
    let elsewhere: Vec<String> = q
        .channels
        .iter()
        .filter(|c| !c.flags.is_empty() && !on_page.contains(&c.label.as_str()))
        .map(|c| format!("{} {}", safe(&c.label), c.flags.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(",")))
        .collect();
    if !elsewhere.is_empty() {
        lines.push(Line::styled(format!("other pages: {}", elsewhere.join("; ")), t.bad()));
    }
    Paragraph::new(lines).block(Block::bordered().title(title))
}

/// `Err(n)`: no powers (n: the samples needed, 0 when there is no meter).
fn bands_widget<'a>(s: &Screen<'a>, powers: Result<Powers, usize>, inner_width: u16) -> Paragraph<'a> {
    let t = s.theme;
    let label = s.view.channels.get(s.nav.selected).map_or("-", |c| c.label.as_str());
    let block = Block::bordered().title(format!(" Bands {}, \u{b5}V\u{b2}, last 1 s ", safe(label)));
    let p = match powers {
        Ok(p) => p,
        Err(0) => {
            return Paragraph::new(Line::styled("no spectrum at this rate", t.dim())).block(block);
        }
        Err(_) => {
            return Paragraph::new(Line::styled("needs 1 s of signal without gaps", t.dim())).block(block);
        }
    };
    // name (6) + bar + " 100%" (5) + " 1234" (6)
    let bar_width = usize::from(inner_width).saturating_sub(17).max(1);
    let lines: Vec<Line> = BANDS
        .iter()
        .zip(p.bands)
        .zip(p.relative())
        .map(|((b, power), share)| {
            Line::from(vec![
                Span::raw(format!("{:<6}", b.name)),
                Span::styled(bar(share, bar_width), t.fg(Color::Magenta)),
                Span::raw(format!(" {:>3.0}% {:>5}", share * 100.0, compact(power))),
            ])
        })
        .collect();
    Paragraph::new(lines).block(block)
}

/// A bar of `fraction` of `width` cells, in eighths, padded to `width`.
pub fn bar(fraction: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '\u{258f}', '\u{258e}', '\u{258d}', '\u{258c}', '\u{258b}', '\u{258a}', '\u{2589}'];
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let mut s: String = std::iter::repeat_n('\u{2588}', eighths / 8).collect();
    if eighths % 8 > 0 {
        s.push(PARTS[eighths % 8]);
    }
    let len = s.chars().count();
    s.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
    s
}

/// A power in at most 5 characters.
fn compact(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 99_999.5 {
        format!("{v:.0e}")
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A rate or span without needless decimals: 250, 0.5, 2.5.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// A string of the daemon's as it may go to the terminal: its control characters and bidi
/// controls (which could hide or reorder what is around them) made `?`.
pub fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || is_bidi_control(c) { '?' } else { c }).collect()
}

/// Unicode's Bidi_Control characters: ALM, LRM, RLM, the embeddings and overrides (U+202A–E) and
/// the isolates (U+2066–9).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The decoded text's tail that fits `width`, control characters made visible (bidi controls `?`).
fn text_tail(text: &str, width: usize) -> String {
    let shown: Vec<char> = text
        .chars()
        .map(|c| {
            if c.is_control() {
                '\u{b7}'
            } else if is_bidi_control(c) {
                '?'
            } else {
                c
            }
        })
        .collect();
    if shown.len() <= width {
        return shown.into_iter().collect();
    }
    let keep = width.saturating_sub(1);
    std::iter::once('\u{2026}').chain(shown[shown.len() - keep..].iter().copied()).collect()
}

fn tokens_widget<'a>(s: &Screen<'a>, width: u16) -> Paragraph<'a> {
    let v = s.view;
    let t = s.theme;
    let block = Block::new().borders(Borders::TOP).title(format!(" Tokens: {} ", v.token_count));
    if v.model.is_none() && !v.driver.is_empty() {
        return Paragraph::new(Line::styled("no model: this session decodes no tokens", t.dim())).block(block);
    }
    let text_width = usize::from(width).saturating_sub(6);
    let mut lines = vec![Line::from(vec![
        Span::styled("text  ", t.title()),
        Span::styled(text_tail(&v.text, text_width), t.title()),
    ])];
    match v.tokens.back() {
        None => lines.push(Line::styled("last  none yet", t.dim())),
        Some(last) => {
            let recent: Vec<String> = v.tokens.iter().rev().skip(1).take(8).map(|k| safe(&k.label)).collect();
            let before =
                if recent.is_empty() { String::new() } else { format!(" \u{2502} before: {}", recent.join(" ")) };
            lines.push(Line::from(vec![
                Span::styled("last  ", t.title()),
                Span::styled(safe(&last.label), t.good()),
                Span::raw(format!(
                    " {} p={:.2} t={:.2} s {:.1} ms{before}",
                    safe(&format!("{:?}", last.text)),
                    last.confidence,
                    last.t,
                    last.latency_us as f64 / 1000.0,
                )),
            ]));
            let probs: Vec<String> =
                last.probabilities.iter().take(8).map(|(label, p)| format!("{} {p:.2}", safe(label))).collect();
            lines.push(Line::from(vec![Span::styled("probs ", t.title()), Span::raw(probs.join("  "))]));
        }
    }
    Paragraph::new(lines).block(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::model::SessionView;
    use bci2token_api::event::ChannelMajor;
    use bci2token_api::Event;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    #[test]
    fn scales_are_round_and_labelled() {
        assert_eq!(nice_scale(0.0), 1.0);
        assert_eq!(nice_scale(f64::NAN), 1.0);
        assert_eq!(nice_scale(37.0), 50.0);
        assert_eq!(nice_scale(50.0), 50.0);
        assert_eq!(nice_scale(51.0), 100.0);
        assert_eq!(nice_scale(1.5), 2.0);
        assert_eq!(nice_scale(0.13), 0.2);
        assert_eq!(nice_scale(1800.0), 2000.0);
        assert_eq!(scale_label(50.0, "uV"), "\u{b1}50 \u{b5}V");
        assert_eq!(scale_label(0.2, "uV"), "\u{b1}0.2 \u{b5}V");
        assert_eq!(scale_label(0.05, "g"), "\u{b1}0.05 g");
        assert_eq!(scale_label(2.0, ""), "\u{b1}2");
    }

    #[test]
    fn bars_fill_in_eighths() {
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(1.0, 4), "\u{2588}\u{2588}\u{2588}\u{2588}");
        assert_eq!(bar(0.5, 4), "\u{2588}\u{2588}  ");
        assert_eq!(bar(1.0 / 16.0, 2), "\u{258f} ");
        assert_eq!(bar(2.0, 2).chars().count(), 2);
        assert_eq!(text_tail("abcdef", 4), "\u{2026}def");
        assert_eq!(text_tail("a\nb", 9), "a\u{b7}b");
    }

    fn screen_text(view: &SessionView, nav: &Nav, width: u16, height: u16) -> (Vec<String>, Drawn) {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let mut meter = BandMeter::new(view.held_rate());
        let mut scratch = Vec::new();
        let mut drawn = None;
        terminal
            .draw(|f| {
                let s = Screen { view, nav, position: (Some(1), 2), note: None, theme: Theme { color: false } };
                drawn = Some(draw(f, &s, meter.as_mut(), &mut scratch));
            })
            .unwrap();
        let buf = terminal.backend().buffer().clone();
        let lines =
            (0..height).map(|y| (0..width).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>()).collect();
        (lines, drawn.unwrap())
    }

    fn session(labels: &[&str]) -> SessionView {
        let mut v = SessionView::connecting("3f2a91c04b7e");
        v.on_reply(&crate::monitor::model::tests::info("3f2a91c04b7e", labels, 250.0));
        // 3 s of a 10 Hz sine of 20 µV on every channel but O2 (zero).
        let frames = 750;
        let mut values = Vec::new();
        for l in labels {
            for i in 0..frames {
                let x = (2.0 * std::f64::consts::PI * 10.0 * i as f64 / 250.0).sin() * 20.0;
                values.push(if *l == "O2" { 0.0 } else { x as f32 });
            }
        }
        let data = ChannelMajor { channels: labels.len(), frames, values: values.into() };
        v.apply(&Event::Samples { session: v.id.clone(), seq: 0, t: 0.0, frames, flags: 0, data });
        let channels: Vec<serde_json::Value> = labels
            .iter()
            .map(|l| {
                let flags: Vec<&str> = if *l == "O2" { vec!["flat"] } else { vec![] };
                serde_json::json!({"label": l, "flags": flags, "std_uv": 1.0, "ptp_uv": 1.0,
                                   "railed_fraction": 0.0, "line_ratio": 0.0})
            })
            .collect();
        v.apply(
            &serde_json::from_value(serde_json::json!({"type": "quality", "session": "s", "t": 3.0, "window": 1.0,
                "score": (labels.len() - 1) as f64 / labels.len() as f64, "channels": channels}))
            .unwrap(),
        );
        for (i, l) in ["h", "i"].iter().enumerate() {
            v.apply(
                &serde_json::from_value(serde_json::json!({"type":"token","session":"s","seq":i,"t":2.5,
                "label":l,"text":l,"tokenizer":"gpt2","token_ids":[71],"confidence":0.91,
                "probabilities":{(*l):0.91,"g":0.05,"j":0.04},"logit_bias":{},"latency_us":1500,"entered_ns":1}))
                .unwrap(),
            );
        }
        v
    }

    const SPELLER: [&str; 8] = ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8"];

    #[test]
    fn an_80_by_24_screen_shows_everything() {
        let v = session(&SPELLER);
        let (lines, drawn) = screen_text(&v, &Nav::default(), 80, 24);
        let all = lines.join("\n");
        assert_eq!(drawn.per_page, 8, "8 strips of 2 rows fit:\n{all}");
        assert!(lines[0].contains("session 3f2a91c04b7e (1/2 live)"), "{all}");
        assert!(lines[0].contains("8 ch @ 250 Hz"), "{all}");
        assert!(lines[1].contains("state running") && lines[1].contains("breaker closed"), "{all}");
        assert!(lines[1].contains("quality 88% (7/8 ok)"), "{all}");
        assert_eq!(lines[23].trim_end(), FOOTER, "{all}");
        for label in SPELLER {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("\u{25b8}{label} ")) || l.starts_with(&format!(" {label} "))),
                "{label}:\n{all}"
            );
        }
        // The sine's channels at ±20 µV, O2 (flat) at the smallest scale.
        assert_eq!(all.matches("\u{b1}20 \u{b5}V").count(), 7, "{all}");
        assert_eq!(all.matches("\u{b1}1 \u{b5}V").count(), 1, "{all}");
        assert!(
            all.contains('\u{28ff}') || all.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)),
            "braille traces:\n{all}"
        );
        assert!(lines.iter().any(|l| l.contains("O2      flat")), "{all}");
        assert!(lines.iter().any(|l| l.contains("O1      ok")), "{all}");
        // The selected channel (O1): all alpha.
        assert!(all.contains("Bands O1"), "{all}");
        let alpha = lines.iter().find(|l| l.contains("alpha")).unwrap();
        assert!(alpha.contains("100%"), "{alpha}");
        assert!(lines.iter().any(|l| l.starts_with("text  hi")), "{all}");
        assert!(lines.iter().any(|l| l.starts_with("last  i") && l.contains("p=0.91")), "{all}");
        assert!(lines.iter().any(|l| l.starts_with("probs i 0.91  g 0.05  j 0.04")), "{all}");
    }

    #[test]
    fn many_channels_are_paged_and_the_selection_moves_the_bands() {
        let labels: Vec<String> = (1..=64).map(|i| format!("E{i}")).collect();
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let v = session(&refs);
        let mut nav = Nav::default();
        nav.apply(super::super::keys::Action::NextPage, 64, 8);
        nav.apply(super::super::keys::Action::NextChannel, 64, 8);
        let (lines, drawn) = screen_text(&v, &nav, 80, 24);
        let all = lines.join("\n");
        assert_eq!(drawn.per_page, 8);
        assert!(all.contains(" last 5 s to t=3.0 s │ ch 9-16 of 64 │ page 2/8"), "{all}");
        assert!(all.contains("\u{25b8}E10"), "{all}");
        assert!(!all.contains(" E1 "), "{all}");
        assert!(all.contains("Bands E10"), "{all}");
        // The flagged O2 is not among them: nothing flagged on this page.
        assert!(!all.contains("flat"), "{all}");
    }

    #[test]
    fn daemon_strings_reach_the_terminal_without_controls_or_bidi_overrides() {
        assert_eq!(safe("O1"), "O1");
        assert_eq!(safe("a\u{1b}[2Jb\n\u{7f}\u{9b}"), "a?[2Jb???");
        assert_eq!(safe("x\u{202e}y\u{2066}\u{2069}\u{200f}\u{61c}z\u{b5}V"), "x?y????z\u{b5}V");
        assert_eq!(text_tail("a\u{202e}b\nc", 9), "a?b\u{b7}c");

        let evil = "\u{202e}lol\u{1b}[31m\u{2067}";
        let mut v = session(&["O1", evil]);
        v.description = evil.into();
        v.problem = Some(format!("warning: {evil}"));
        v.apply(
            &serde_json::from_value(serde_json::json!({"type":"token","session":"s","seq":9,"t":2.5,
            "label":evil,"text":evil,"tokenizer":"gpt2","token_ids":[71],"confidence":0.91,
            "probabilities":{(evil):0.91},"logit_bias":{},"latency_us":1500,"entered_ns":1}))
            .unwrap(),
        );
        let mut nav = Nav::default();
        nav.apply(super::super::keys::Action::NextChannel, 2, 8);
        let (lines, _) = screen_text(&v, &nav, 120, 24);
        let all = lines.join("\n");
        assert!(!all.chars().any(|c| c.is_control() && c != '\n' || is_bidi_control(c)), "{all:?}");
        assert!(all.contains("?lol?[31m?"), "{all}");
        v.annotation = Some((1.0, evil.into()));
        v.problem = None;
        v.stream = Stream::Closed(evil.into());
        for (view, note) in [(&v, None), (&v, Some(evil))] {
            let mut terminal = Terminal::new(TestBackend::new(120, 24)).unwrap();
            terminal
                .draw(|f| {
                    let s = Screen { view, nav: &nav, position: (None, 0), note, theme: Theme { color: true } };
                    draw(f, &s, None, &mut Vec::new());
                })
                .unwrap();
            let buf = terminal.backend().buffer();
            let text: String = buf.content().iter().map(|c| c.symbol()).collect();
            assert!(!text.chars().any(|c| c.is_control() || is_bidi_control(c)), "{text:?}");
            assert!(text.contains("?lol?[31m?"), "{text}");
        }
        v.stream = Stream::Live;
        let annotated = status_line(&Screen {
            view: &v,
            nav: &nav,
            position: (None, 0),
            note: None,
            theme: Theme { color: false },
        });
        let text: String = annotated.spans.iter().map(|s| s.content.as_ref()).collect();
        assert!(text.contains("marker \"?lol?[31m?\""), "{text}");
    }

    #[test]
    fn an_ended_session_says_so_and_what_to_do() {
        let mut v = session(&SPELLER);
        v.apply(
            &serde_json::from_value(serde_json::json!({"type":"state","session":"s","state":"stopped","message":null}))
                .unwrap(),
        );
        let (lines, _) = screen_text(&v, &Nav::default(), 80, 24);
        assert!(lines[1].contains("the session ended (stopped); Tab/n switches"), "{}", lines.join("\n"));
        // A tiny terminal does not break the drawing.
        let (lines, _) = screen_text(&v, &Nav::default(), 20, 6);
        assert_eq!(lines.len(), 6);
    }
}
