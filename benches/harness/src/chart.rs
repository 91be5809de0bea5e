//! Bar charts as SVG, one per measurement, written next to the JSON and Markdown.
//!
//! Hand-drawn rather than through a plotting crate: a chart here is a title, a few
//! labelled horizontal bars and their values, which is a page of SVG; keeping it a pure
//! function of the numbers makes it testable like the rest of the report.

use std::fmt::Write as _;

/// One bar: its label, its value, and the value as shown (with its unit).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub shown: String,
}

impl Bar {
    pub fn new(label: impl Into<String>, value: f64, shown: impl Into<String>) -> Bar {
        Bar {
            label: label.into(),
            value,
            shown: shown.into(),
        }
    }
}

const WIDTH: f64 = 760.0;
const LABEL_WIDTH: f64 = 260.0;
const VALUE_WIDTH: f64 = 150.0;
const ROW: f64 = 28.0;
const TOP: f64 = 48.0;

/// An SVG document: `title`, a note under it, and one horizontal bar per entry, scaled to
/// the largest value. Values that are not finite or below zero draw no bar.
pub fn bars(title: &str, note: &str, bars: &[Bar]) -> String {
    let max = bars
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let span = WIDTH - LABEL_WIDTH - VALUE_WIDTH;
    let height = TOP + ROW * bars.len() as f64 + 16.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="20" font-size="15" font-weight="bold">{}</text><text x="10" y="38" fill="#555555">{}</text>"##,
        escape(title),
        escape(note)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let len = if max > 0.0 && b.value.is_finite() && b.value > 0.0 {
            (b.value / max * span).max(1.0)
        } else {
            0.0
        };
        let fill = if b.label.starts_with("dabba") {
            "#d9822b"
        } else {
            "#4a6fa5"
        };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{LABEL_WIDTH}" y="{:.1}" width="{len:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LABEL_WIDTH - 8.0,
            y + 17.0,
            escape(&b.label),
            y + 4.0,
            ROW - 8.0,
            LABEL_WIDTH + len + 6.0,
            y + 17.0,
            escape(&b.shown)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widths(svg: &str) -> Vec<f64> {
        svg.split(r#"width=""#)
            .skip(2) // the document's width, then the background's 100%
            .filter_map(|s| s.split('"').next()?.parse().ok())
            .collect()
    }

    #[test]
    fn bars_scale_to_the_largest_value() {
        let svg = bars(
            "Cold start p50",
            "lower is better",
            &[
                Bar::new("dabba", 2.0, "2.0 ms"),
                Bar::new("docker run", 500.0, "500 ms"),
                Bar::new("missing", f64::NAN, "n/a"),
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let w = widths(&svg);
        assert_eq!(w.len(), 3, "{svg}");
        assert!((w[1] - (WIDTH - LABEL_WIDTH - VALUE_WIDTH)).abs() < 0.01);
        assert!(w[0] >= 1.0 && w[0] < 2.0, "a tiny value still shows: {w:?}");
        assert_eq!(w[2], 0.0);
        assert!(svg.contains(">500 ms<") && svg.contains(">n/a<"));
    }

    #[test]
    fn text_is_escaped() {
        let svg = bars("a < b & c", "", &[Bar::new("x\"y", 1.0, "1")]);
        assert!(svg.contains("a &lt; b &amp; c") && svg.contains("x&quot;y"));
    }
}
