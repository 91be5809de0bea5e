//! Where a field is in a manifest's text, so an error can name its line and column.
//!
//! A field is a dotted path as errors name it: `app.route`, `limits.memory`,
//! `cron[1].timezone`, `rollout.steps[2].set_weight`, `analysis[0].metrics[1].interval`.
//! The key's own line is found in its table (a `[table]`, the n-th `[[array]]` of
//! tables, or an inline table one level up); failing that, the table's header line.
//! TOML parse errors carry their own spans; this is for errors found after parsing.

/// One segment of a field path: a name and, for arrays of tables, an index.
fn segments(field: &str) -> Vec<(&str, Option<usize>)> {
    field
        .split('.')
        .map(|s| match s.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
            None => (s, None),
        })
        .collect()
}

/// The 1-based line and column of `field` in `text`; (0, 0) when nothing is found.
pub fn locate_field(text: &str, field: &str) -> (usize, usize) {
    let segs = segments(field);
    // Try the whole path as table + key, then shorter tables with the next segment as
    // the key (an inline table's field is reported at the key that holds the table).
    for split in (1..segs.len()).rev() {
        let (table, key) = (&segs[..split], segs[split].0);
        if let Some(found) = find_key(text, table, key) {
            return found;
        }
    }
    // The deepest table whose header exists.
    for depth in (1..=segs.len()).rev() {
        if let Some(line) = find_header(text, &segs[..depth]) {
            return (line, 1);
        }
    }
    (0, 0)
}

/// The header path of a line (`[a.b]` or `[[a.b]]`) and whether it is an array.
fn header(line: &str) -> Option<(String, bool)> {
    let t = line.trim();
    if let Some(inner) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
        return Some((inner.trim().to_string(), true));
    }
    let inner = t.strip_prefix('[')?.strip_suffix(']')?;
    Some((inner.trim().to_string(), false))
}

/// Walks the lines of `text`, calling `visit(index, line, inside)` for each, `inside`
/// telling whether the line is in (or is the header of) the table `table`; stops when
/// `visit` returns true.
fn walk(
    text: &str,
    table: &[(&str, Option<usize>)],
    mut visit: impl FnMut(usize, &str, bool) -> bool,
) {
    let name: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    let name = name.join(".");
    // How many times each array header has been seen since its parent's last one.
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        if let Some((h, array)) = header(line) {
            if array {
                *counts.entry(h.clone()).or_default() += 1;
                let child = format!("{h}.");
                counts.retain(|k, _| !k.starts_with(&child));
            }
            inside = h == name
                && table.iter().enumerate().all(|(depth, (_, index))| {
                    let prefix: Vec<&str> = table[..=depth].iter().map(|(n, _)| *n).collect();
                    match index {
                        Some(n) => counts.get(&prefix.join(".")).copied() == Some(n + 1),
                        None => true,
                    }
                });
            if visit(i, line, inside) {
                return;
            }
            continue;
        }
        if visit(i, line, inside) {
            return;
        }
    }
}

fn find_key(text: &str, table: &[(&str, Option<usize>)], key: &str) -> Option<(usize, usize)> {
    let mut found = None;
    walk(text, table, |i, line, inside| {
        if inside
            && header(line).is_none()
            && let Some((k, _)) = line.split_once('=')
            && k.trim().trim_matches('"') == key
        {
            found = Some((i + 1, line.len() - line.trim_start().len() + 1));
            return true;
        }
        false
    });
    found
}

fn find_header(text: &str, table: &[(&str, Option<usize>)]) -> Option<usize> {
    let mut found = None;
    walk(text, table, |i, line, inside| {
        if inside && header(line).is_some() {
            found = Some(i + 1);
            return true;
        }
        false
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[app]
name = "search"
route = "/search"

[[rollout.steps]]
set_weight = 5
[[rollout.steps]]
set_weight = 500
[[rollout.steps]]
analysis = { templates = [] }

[[analysis]]
name = "a"
[[analysis.metrics]]
name = "x"
[[analysis]]
name = "b"
[[analysis.metrics]]
name = "y"
[[analysis.metrics]]
name = "z"
interval = "1ms"
"#;

    #[test]
    fn keys_are_found_in_their_table_and_array_element() {
        assert_eq!(locate_field(TEXT, "app.route"), (3, 1));
        assert_eq!(locate_field(TEXT, "rollout.steps[1].set_weight"), (8, 1));
        assert_eq!(locate_field(TEXT, "rollout.steps[0].set_weight"), (6, 1));
        // A field of an inline table: the key holding the table.
        assert_eq!(
            locate_field(TEXT, "rollout.steps[2].analysis.templates"),
            (10, 1)
        );
        assert_eq!(
            locate_field(TEXT, "analysis[1].metrics[1].interval"),
            (22, 1)
        );
        assert_eq!(locate_field(TEXT, "analysis[1].metrics[0].name"), (19, 1));
        assert_eq!(locate_field(TEXT, "analysis[0].name"), (13, 1));
        // A key not written: the header of its table.
        assert_eq!(locate_field(TEXT, "analysis[1].metrics[1].count"), (20, 1));
        assert_eq!(locate_field(TEXT, "nothing.here"), (0, 0));
    }
}
