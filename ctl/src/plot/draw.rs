//! Drawing a [`Figure`] with plotters: a title and three panels stacked (each channel's power
//! spectral density; the quality score and the flagged channels over stream time; the decoded
//! tokens over stream time), as PNG or SVG. Text is drawn with DejaVu Sans, read at run time.

use std::error::Error;
use std::io::Write;
use std::path::Path;

use bci2token_api::QualityFlag;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::Figure;

/// The panels' titles (tests look for them).
pub const PSD_TITLE: &str = "Power spectral density (Welch)";
pub const QUALITY_TITLE: &str = "Signal quality";
pub const TOKENS_TITLE: &str = "Decoded tokens";

/// Where the font is looked for: Debian's fonts-dejavu-core, Fedora's dejavu-sans-fonts, older
/// Red Hat's dejavu-fonts, Arch's ttf-dejavu.
pub const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const FAMILY: &str = "sans-serif";

/// The image format, from the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format, String> {
        match path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            Some(other) => {
                Err(format!("--output {}: unknown extension `.{other}`; give FILE.png or FILE.svg", path.display()))
            }
            None => Err(format!("--output {}: no extension; give FILE.png or FILE.svg", path.display())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }
}

/// Reads the font the text is drawn with (once per process).
pub fn load_font() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let Some((path, bytes)) = FONT_PATHS.iter().find_map(|p| std::fs::read(p).ok().map(|b| (p, b))) else {
                return Err(format!(
                    "no font to draw the plot's text with: none of {} exists; install the package \
                     fonts-dejavu-core (Debian, Ubuntu) or dejavu-sans-fonts (Fedora, RHEL)",
                    FONT_PATHS.join(", ")
                ));
            };
            // plotters keeps fonts for the whole process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
                .map_err(|_| format!("{path}: not a TrueType font that can be read; reinstall fonts-dejavu-core"))
        })
        .clone()
}

/// Draws `fig` into `out` (SVG), or into the file at `path` (PNG, which plotters writes itself;
/// the caller has created it). [`load_font`] must have succeeded.
pub fn render(fig: &Figure, format: Format, size: (u32, u32), path: &Path, out: &mut impl Write) -> Result<(), String> {
    match format {
        Format::Svg => {
            let mut svg = String::new();
            draw_figure(SVGBackend::with_string(&mut svg, size).into_drawing_area(), fig).map_err(|e| e.to_string())?;
            out.write_all(svg.as_bytes()).and_then(|()| out.flush()).map_err(|e| e.to_string())
        }
        Format::Png => draw_figure(BitMapBackend::new(path, size).into_drawing_area(), fig).map_err(|e| e.to_string()),
    }
}

type Drawn = Result<(), Box<dyn Error>>;

fn text(size: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&BLACK)
}

fn px(v: f64) -> i32 {
    v.round() as i32
}

/// Channel `i` of `n`: hues around the circle (short of red again), two lightnesses in turn.
fn colour(i: usize, n: usize) -> HSLColor {
    HSLColor(i as f64 / n.max(1) as f64 * 0.9, 0.85, if i % 2 == 0 { 0.36 } else { 0.5 })
}

fn flag_colour(flag: QualityFlag) -> RGBColor {
    match flag {
        QualityFlag::Flat => RGBColor(120, 120, 120),
        QualityFlag::Railed => RGBColor(214, 39, 40),
        QualityFlag::LineNoise => RGBColor(255, 127, 14),
        QualityFlag::OutOfRange => RGBColor(148, 103, 189),
    }
}

fn flag_name(flag: QualityFlag) -> &'static str {
    match flag {
        QualityFlag::Flat => "flat",
        QualityFlag::Railed => "railed",
        QualityFlag::LineNoise => "line noise",
        QualityFlag::OutOfRange => "out of range",
    }
}

/// The title: session, driver, model, rate, and where the data came from.
pub fn title(fig: &Figure) -> String {
    let m = &fig.meta;
    format!(
        "Session {} · driver {} · model {} · {} Hz · {} channels · {}, {:.1} s of samples",
        m.id,
        m.driver,
        m.model.as_deref().unwrap_or("none"),
        m.sample_rate,
        m.channels.len(),
        fig.source.as_str(),
        fig.seconds
    )
}

fn draw_figure<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> Drawn
where
    DB::ErrorType: 'static,
{
    let (w, h) = root.dim_in_pixel();
    let fs = (f64::from(h) / 52.0).clamp(9.0, 22.0);
    root.fill(&WHITE)?;
    let title_h = px(fs * 2.4);
    let (top, body) = root.split_vertically(title_h);
    top.draw_text(
        &title(fig),
        &text(fs * 1.2).pos(Pos::new(HPos::Center, VPos::Center)),
        (px(f64::from(w) / 2.0), title_h / 2),
    )?;
    let body_h = body.dim_in_pixel().1 as i32;
    let (psd, rest) = body.split_vertically(body_h * 44 / 100);
    let rest_h = rest.dim_in_pixel().1 as i32;
    let (quality, tokens) = rest.split_vertically(rest_h * 57 / 100);
    psd_panel(&psd, fig, fs)?;
    let x = time_range(fig);
    quality_panel(&quality, fig, fs, x)?;
    tokens_panel(&tokens, fig, fs, x)?;
    root.present()?;
    Ok(())
}

/// The stream time the two lower panels share, with a little room at both ends.
fn time_range(fig: &Figure) -> (f64, f64) {
    let (a, b) = fig.span;
    let pad = (b - a) * 0.02;
    (a - pad, b + pad)
}

/// A note in the middle of an area.
fn note<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, what: &str, fs: f64) -> Drawn
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    let style = text(fs).color(&RGBColor(110, 110, 110)).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(what, &style, (w as i32 / 2, h as i32 / 2))?;
    Ok(())
}

fn psd_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure, fs: f64) -> Drawn
where
    DB::ErrorType: 'static,
{
    let Some(psd) = &fig.psd else {
        area.draw_text(
            PSD_TITLE,
            &text(fs * 1.1).pos(Pos::new(HPos::Center, VPos::Top)),
            (area.dim_in_pixel().0 as i32 / 2, px(fs * 0.5)),
        )?;
        return note(area, "too few samples for a spectrum (fewer than 16 frames)", fs);
    };
    let labels = &fig.meta.channels;
    let n = labels.len();
    let (aw, ah) = area.dim_in_pixel();
    let (aw, ah) = (aw as i32, ah as i32);

    // The legend: as many columns as the channels need, the font shrinking until they take at
    // most 40 % of the width.
    let top = px(fs * 2.2);
    let mut lf = fs * 0.85;
    let (rows, col_w, line_h) = loop {
        let line_h = px(lf * 1.3).max(1);
        let rows = ((ah - top - px(fs)) / line_h).max(1) as usize;
        let cols = n.div_ceil(rows).max(1) as i32;
        let widest = labels.iter().map(|l| area.estimate_text_size(l, &text(lf)).map_or(0, |(w, _)| w)).max();
        let col_w = widest.unwrap_or(0) as i32 + px(lf * 3.0);
        if cols * col_w <= aw * 40 / 100 || lf <= 6.0 {
            break (rows, col_w, line_h);
        }
        lf -= 0.5;
    };
    let legend_w = (n.div_ceil(rows).max(1) as i32) * col_w + px(fs * 0.5);
    let (chart_area, legend) = area.split_horizontally(aw - legend_w);

    let nyquist = fig.meta.sample_rate / 2.0;
    let f_lo = if nyquist > 2.0 { 1.0 } else { 0.0 };
    let bins: Vec<usize> = (0..psd.freqs.len()).filter(|&i| psd.freqs[i] >= f_lo && psd.freqs[i] <= nyquist).collect();
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for p in &psd.power {
        for &i in &bins {
            if p[i] > 0.0 && p[i].is_finite() {
                lo = lo.min(p[i]);
                hi = hi.max(p[i]);
            }
        }
    }
    if !(hi > 0.0 && lo.is_finite()) {
        (lo, hi) = (1e-3, 1.0);
    }
    let lo = lo.max(hi * 1e-10) / 2.0;
    let hi = hi * 2.0;

    let mut chart = ChartBuilder::on(&chart_area)
        .caption(PSD_TITLE, text(fs * 1.1))
        .margin(px(fs * 0.5))
        .x_label_area_size(px(fs * 2.8))
        .y_label_area_size(px(fs * 5.5))
        .build_cartesian_2d(f_lo..nyquist, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("frequency (Hz)")
        .y_desc("PSD (µV²/Hz)")
        .label_style(text(fs * 0.8))
        .axis_desc_style(text(fs * 0.85))
        .light_line_style(RGBColor(240, 240, 240))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    for (c, p) in psd.power.iter().enumerate() {
        let style = colour(c, n).stroke_width(1);
        chart.draw_series(LineSeries::new(bins.iter().map(|&i| (psd.freqs[i], p[i].max(lo))), style))?;
    }

    for (i, label) in labels.iter().enumerate() {
        let (col, row) = ((i / rows) as i32, (i % rows) as i32);
        let x = px(fs * 0.3) + col * col_w;
        let y = top + row * line_h + line_h / 2;
        legend.draw(&PathElement::new(vec![(x, y), (x + px(lf * 1.8), y)], colour(i, n).stroke_width(3)))?;
        legend.draw_text(label, &text(lf).pos(Pos::new(HPos::Left, VPos::Center)), (x + px(lf * 2.3), y))?;
    }
    Ok(())
}

fn quality_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure, fs: f64, x: (f64, f64)) -> Drawn
where
    DB::ErrorType: 'static,
{
    let (aw, ah) = area.dim_in_pixel();
    let (score_area, flag_area) = area.split_vertically(ah as i32 * 40 / 100);
    let labels = &fig.meta.channels;
    let n = labels.len().max(1);

    let mut score = ChartBuilder::on(&score_area)
        .caption(QUALITY_TITLE, text(fs * 1.1))
        .margin(px(fs * 0.5))
        .margin_bottom(0)
        .x_label_area_size(0)
        .y_label_area_size(px(fs * 5.5))
        .build_cartesian_2d(x.0..x.1, 0.0..1.05)?;
    score
        .configure_mesh()
        .y_desc("score")
        .y_labels(3)
        .x_labels(0)
        .label_style(text(fs * 0.8))
        .axis_desc_style(text(fs * 0.85))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    score.draw_series(LineSeries::new(fig.quality.iter().map(|q| (q.t, q.score)), blue.stroke_width(2)))?;
    score.draw_series(fig.quality.iter().map(|q| Circle::new((q.t, q.score), 2, blue.filled())))?;

    // The flags' colours, at the right of the title line.
    let mut right = aw as i32 - px(fs * 0.8);
    let key = text(fs * 0.75).pos(Pos::new(HPos::Right, VPos::Center));
    let y = px(fs * 0.9);
    for flag in QualityFlag::ALL.iter().rev() {
        let name = flag_name(*flag);
        let w = score_area.estimate_text_size(name, &key).map_or(0, |(w, _)| w as i32);
        score_area.draw_text(name, &key, (right, y))?;
        right -= w + px(fs * 0.3);
        let s = px(fs * 0.6);
        score_area.draw(&Rectangle::new([(right - s, y - s / 2), (right, y + s / 2)], flag_colour(*flag).filled()))?;
        right -= s + px(fs * 0.8);
    }

    let mut flags = ChartBuilder::on(&flag_area)
        .margin(px(fs * 0.5))
        .margin_top(px(fs * 0.3))
        .x_label_area_size(px(fs * 2.8))
        .y_label_area_size(px(fs * 5.5))
        .build_cartesian_2d(x.0..x.1, 0.0..n as f64)?;
    flags
        .configure_mesh()
        .x_desc("stream time (s)")
        .y_labels(0)
        .disable_y_mesh()
        .label_style(text(fs * 0.8))
        .axis_desc_style(text(fs * 0.85))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let mut any = false;
    for (i, q) in fig.quality.iter().enumerate() {
        // A channel's flags hold from this assessment to the next.
        let start = if i == 0 { q.t - q.window } else { q.t };
        let end = fig.quality.get(i + 1).map_or(x.1, |next| next.t);
        for (c, fl) in q.flags.iter().enumerate() {
            if let Some(flag) = fl.first() {
                any = true;
                let row = (n - 1 - c) as f64;
                let rect = Rectangle::new([(start, row + 0.1), (end, row + 0.9)], flag_colour(*flag).filled());
                flags.draw_series(std::iter::once(rect))?;
            }
        }
    }
    // Channel names beside their rows (every k-th when they do not fit).
    let (x0, y_top) = flags.backend_coord(&(x.0, n as f64));
    let (_, y_bottom) = flags.backend_coord(&(x.0, 0.0));
    let row_h = f64::from(y_bottom - y_top) / n as f64;
    // One name a row while a readable font fits; else a name every few rows.
    let fitting = (fs * 0.75).min(row_h * 0.9);
    let (lf, every) = if fitting >= 7.0 {
        (fitting, 1)
    } else {
        let lf = (fs * 0.6).max(7.0);
        (lf, ((lf * 1.15) / row_h).ceil().max(1.0) as usize)
    };
    let base = flag_area.get_base_pixel();
    let style = text(lf).pos(Pos::new(HPos::Right, VPos::Center));
    for (c, label) in labels.iter().enumerate().step_by(every) {
        let (_, y) = flags.backend_coord(&(x.0, (n - 1 - c) as f64 + 0.5));
        flag_area.draw_text(label, &style, (x0 - base.0 - px(fs * 0.3), y - base.1))?;
    }
    if fig.quality.is_empty() {
        note(&flag_area, "no quality events in this stretch of the session", fs)?;
    } else if !any {
        note(&flag_area, "no channel flagged", fs)?;
    }
    Ok(())
}

fn tokens_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure, fs: f64, x: (f64, f64)) -> Drawn
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(TOKENS_TITLE, text(fs * 1.1))
        .margin(px(fs * 0.5))
        .x_label_area_size(px(fs * 2.8))
        .y_label_area_size(px(fs * 5.5))
        .build_cartesian_2d(x.0..x.1, 0.0..1.3)?;
    chart
        .configure_mesh()
        .x_desc("stream time (s)")
        .y_desc("probability")
        .y_labels(3)
        .label_style(text(fs * 0.8))
        .axis_desc_style(text(fs * 0.85))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let ink = RGBColor(44, 62, 120);
    let label_style = text(fs * 0.8).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (k, t) in fig.tokens.iter().enumerate() {
        let p = t.confidence.clamp(0.0, 1.0);
        chart.draw_series(std::iter::once(PathElement::new(vec![(t.t, 0.0), (t.t, p)], ink.stroke_width(2))))?;
        chart.draw_series(std::iter::once(Circle::new((t.t, p), 3, ink.filled())))?;
        // Two heights in turn, so neighbours overlap less.
        let y = p + 0.04 + 0.12 * (k % 2) as f64;
        chart.draw_series(std::iter::once(Text::new(t.label.clone(), (t.t, y), label_style.clone())))?;
    }
    if fig.tokens.is_empty() {
        let why = if fig.meta.model.is_none() {
            "no tokens: the session has no model"
        } else {
            "no token in this stretch of the session"
        };
        note(area, why, fs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::data::{Meta, Psd, QualityPoint, Source, TokenMark};
    use super::*;

    fn figure(channels: usize) -> Figure {
        let labels: Vec<String> = (0..channels).map(|i| format!("Ch{i}<&>")).collect();
        let freqs: Vec<f64> = (0..=50).map(|k| k as f64).collect();
        let power = (0..channels).map(|c| freqs.iter().map(|f| 100.0 / (1.0 + f) * (c + 1) as f64).collect()).collect();
        let mut flags = vec![Vec::new(); channels];
        flags[channels - 1] = vec![QualityFlag::Railed];
        Figure {
            meta: Meta {
                id: "abc123".into(),
                driver: "synthetic".into(),
                model: Some("speller-40".into()),
                sample_rate: 100.0,
                channels: labels,
            },
            source: Source::Stored,
            psd: Some(Psd { freqs, power, segments: 3, nperseg: 100 }),
            quality: vec![
                QualityPoint { t: 1.0, window: 1.0, score: 1.0, flags: vec![Vec::new(); channels] },
                QualityPoint { t: 2.0, window: 1.0, score: 0.5, flags },
            ],
            tokens: vec![
                TokenMark { t: 1.5, label: "yes".into(), confidence: 0.9 },
                TokenMark { t: 2.5, label: "no".into(), confidence: 0.4 },
            ],
            span: (0.0, 3.0),
            frames: 300,
            seconds: 3.0,
            lost: 0,
        }
    }

    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string()))
            .collect()
    }

    #[test]
    fn the_svg_names_every_channel_token_and_panel() {
        load_font().unwrap();
        for channels in [2, 64] {
            let fig = figure(channels);
            let mut svg = Vec::new();
            render(&fig, Format::Svg, (900, 700), Path::new("unused.svg"), &mut svg).unwrap();
            let svg = String::from_utf8(svg).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains(r#"width="900" height="700""#), "{}", &svg[..200]);
            let texts = svg_texts(&svg);
            for want in [PSD_TITLE, QUALITY_TITLE, TOKENS_TITLE, "yes", "no", "railed", &title(&fig)] {
                assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
            }
            for c in 0..channels {
                let escaped = format!("Ch{c}&lt;&amp;&gt;");
                assert!(texts.contains(&escaped), "{escaped} not in the legend");
            }
        }
    }

    #[test]
    fn formats_come_from_the_extension() {
        assert_eq!(Format::of(Path::new("a/b.PNG")), Ok(Format::Png));
        assert_eq!(Format::of(Path::new("b.svg")), Ok(Format::Svg));
        assert!(Format::of(Path::new("b.jpg")).unwrap_err().contains("unknown extension `.jpg`"));
        assert!(Format::of(Path::new("b")).unwrap_err().contains("no extension"));
    }
}
