//! Terminal output: aligned tables and optional colour. Colour is used only
//! when stdout is a terminal and `NO_COLOR` is not set (to any value).

use std::io::IsTerminal;

use crate::store::summary::Verdict;
use crate::wire::Severity;

/// Whether to colour stdout.
pub fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// An ANSI style for one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Red,
    BoldRed,
    Yellow,
    Green,
    Magenta,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Red => "\x1b[31m",
            Style::BoldRed => "\x1b[1;31m",
            Style::Yellow => "\x1b[33m",
            Style::Green => "\x1b[32m",
            Style::Magenta => "\x1b[35m",
        }
    }

    /// Wraps the text of `padded` in this style, leaving trailing padding
    /// plain.
    pub fn paint(self, padded: &str) -> String {
        let trimmed = padded.trim_end();
        format!(
            "{}{trimmed}\x1b[0m{}",
            self.code(),
            &padded[trimmed.len()..]
        )
    }
}

pub fn severity_style(s: Severity) -> Option<Style> {
    match s {
        Severity::Critical => Some(Style::BoldRed),
        Severity::Error => Some(Style::Red),
        Severity::Warning => Some(Style::Yellow),
        Severity::Info | Severity::Unknown => None,
    }
}

pub fn verdict_style(v: Verdict) -> Option<Style> {
    match v {
        Verdict::Ok => Some(Style::Green),
        Verdict::Degraded => Some(Style::Yellow),
        Verdict::Failing => Some(Style::BoldRed),
        Verdict::Unknown => Some(Style::Magenta),
    }
}

/// Replaces control characters (newlines, escapes) in text read from files,
/// so a foreign file cannot break the layout or drive the terminal.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One table cell.
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub style: Option<Style>,
    pub right: bool,
}

impl Cell {
    pub fn new(text: impl Into<String>) -> Cell {
        Cell {
            text: clean(&text.into()),
            style: None,
            right: false,
        }
    }

    pub fn styled(text: impl Into<String>, style: Option<Style>) -> Cell {
        Cell {
            style,
            ..Cell::new(text)
        }
    }

    /// A right-aligned cell (numbers and their headers).
    pub fn num(n: impl std::fmt::Display) -> Cell {
        Cell {
            right: true,
            ..Cell::new(n.to_string())
        }
    }
}

/// Renders rows as columns separated by two spaces, each as wide as its
/// widest cell; the last column is not padded (no trailing spaces).
pub fn render_table(rows: &[Vec<Cell>], colour: bool) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let last = i + 1 == row.len();
            let pad = widths[i] - cell.text.chars().count();
            let padded = if cell.right {
                format!("{}{}", " ".repeat(pad), cell.text)
            } else if last {
                cell.text.clone()
            } else {
                format!("{}{}", cell.text, " ".repeat(pad))
            };
            match cell.style {
                Some(s) if colour => line.push_str(&s.paint(&padded)),
                _ => line.push_str(&padded),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_without_trailing_space() {
        let rows = vec![
            vec![Cell::new("A"), Cell::num("COUNT"), Cell::new("NOTE")],
            vec![Cell::new("long name"), Cell::num(7), Cell::new("x")],
            vec![Cell::new("b"), Cell::num(1234567), Cell::new("")],
        ];
        assert_eq!(
            render_table(&rows, false),
            "A            COUNT  NOTE\nlong name        7  x\nb          1234567\n"
        );
    }

    #[test]
    fn colour_wraps_text_not_padding() {
        let rows = vec![
            vec![Cell::styled("ok", Some(Style::Green)), Cell::new("x")],
            vec![Cell::new("failing"), Cell::new("y")],
        ];
        assert_eq!(
            render_table(&rows, true),
            "\x1b[32mok\x1b[0m       x\nfailing  y\n"
        );
        assert_eq!(render_table(&rows, false), "ok       x\nfailing  y\n");
    }

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(clean("a\nb\x1b[31mc\t"), "a b [31mc ");
    }
}
