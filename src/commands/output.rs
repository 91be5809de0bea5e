//! How the API commands print: aligned tables for people, `-o json` for programs, and
//! ages ("15s", "3m", "2h", "4d") as kubectl shows them.

use clap::ValueEnum;
use comfy_table::{CellAlignment, ColumnConstraint, Table};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Rows as aligned columns under a header, three spaces apart, no borders.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", render(header, rows));
}

fn render(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_header(header.to_vec())
        .add_rows(rows);
    for c in t.column_iter_mut() {
        c.set_padding((0, 3));
        c.set_cell_alignment(CellAlignment::Left);
        c.set_constraint(ColumnConstraint::ContentWidth);
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How long ago `at_ms` (ms since the epoch) was.
pub fn age(at_ms: u64) -> String {
    span(dabba_controller::node::now_millis().saturating_sub(at_ms))
}

/// A span of `ms` milliseconds, as kubectl shows ages.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let out = render(
            &["NAME", "READY", "REASON"],
            vec![
                vec!["payment".into(), "3".into(), String::new()],
                vec!["search".into(), "0".into(), "scaled to zero".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME      READY   REASON\npayment   3\nsearch    0       scaled to zero\n"
        );
    }
}
