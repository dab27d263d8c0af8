//! A tiny aligned-column table and key/value block renderer (no colors, no external crates).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
    indent: usize,
}

/// Display width of a cell: characters, not bytes (so `µV` is 2 wide).
fn width(s: &str) -> usize {
    s.chars().count()
}

impl Table {
    /// Columns are given as `(header, alignment)`.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            headers: columns.iter().map(|(h, _)| (*h).to_string()).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
            indent: 0,
        }
    }

    pub fn indent(mut self, n: usize) -> Self {
        self.indent = n;
        self
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Header row and rows, columns separated by two spaces, no trailing spaces, each line
    /// ending in `\n`.
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = " ".repeat(self.indent);
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - width(cell);
                let last = i + 1 == n;
                match self.align[i] {
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        if !last {
                            line.push_str(&" ".repeat(pad));
                        }
                    }
                }
                if !last {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the keys right-aligned (systemctl status style).
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(&" ".repeat(w - width(k)));
        out.push_str(k);
        out.push(':');
        if !v.is_empty() {
            out.push(' ');
            out.push_str(v);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_without_trailing_spaces() {
        let mut t = Table::new(&[("ID", Align::Left), ("STATE", Align::Left), ("FRAMES", Align::Right)]);
        t.row(vec!["s-1".into(), "running".into(), "12".into()]);
        t.row(vec!["s-long-id".into(), "failed".into(), "123456".into()]);
        assert_eq!(
            t.render(),
            "ID         STATE    FRAMES\n\
             s-1        running      12\n\
             s-long-id  failed   123456\n"
        );
    }

    #[test]
    fn last_left_column_is_not_padded_and_unicode_width_counts_chars() {
        let mut t = Table::new(&[("LABEL", Align::Left), ("UNIT", Align::Left)]).indent(2);
        t.row(vec!["Fp1".into(), "µV".into()]);
        t.row(vec!["C3".into()]);
        assert_eq!(t.render(), "  LABEL  UNIT\n  Fp1    µV\n  C3\n");
    }

    #[test]
    fn key_value_block() {
        let s = key_values(&[("Version", "1.0".into()), ("PID", "42".into()), ("Empty", String::new())]);
        assert_eq!(s, "Version: 1.0\n    PID: 42\n  Empty:\n");
    }
}
