//! Diagnostics for files users edit: one look for every error and warning about the config
//! and its rules — `file:line:col: severity: message`, the source line, a caret, a hint.
//!
//! In: the file's name and text, a byte offset, the words. Out: the rendered text. Pure.

/// Renders `message` at byte `offset` of `src`: `file:line:col: error: message`, the source
/// line, a caret under the column, and the hint.
pub fn render_at(
    file: &str,
    src: &str,
    offset: usize,
    severity: &str,
    message: &str,
    hint: Option<&str>,
) -> String {
    let offset = floor_char_boundary(src, offset.min(src.len()));
    let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let line_no = src[..offset].matches('\n').count() + 1;
    let col = src[line_start..offset].chars().count() + 1;
    let line = src[line_start..line_end].trim_end_matches('\r');
    let mut out = format!("{file}:{line_no}:{col}: {severity}: {message}\n");
    let gutter = line_no.to_string().len();
    out.push_str(&format!("{:gutter$} |\n", ""));
    out.push_str(&format!("{line_no} | {line}\n"));
    out.push_str(&format!(
        "{:gutter$} | {:>width$}^",
        "",
        "",
        width = col - 1
    ));
    if let Some(h) = hint {
        out.push_str(&format!("\n{:gutter$} = hint: {h}", ""));
    }
    out
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
