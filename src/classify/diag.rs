//! Diagnostics for watch rules: compile errors and noisy-rule warnings, and how they are shown.
//!
//! In: a watch id, which of its strings is at fault, a byte offset inside that string, and the
//! `toml::Spanned` span of the string in the config file. Out: `Display` without file context,
//! and `render(file_name, file_src)` giving `file:LINE:COL: ...`, the source line and a caret
//! under the exact character, then the hint.

use std::fmt;
use std::ops::Range;

/// Which string of a watch a diagnostic points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSource {
    Query,
    Exclude,
    /// The watch as a whole (e.g. a duplicate id): points at the id.
    Watch,
}

impl RuleSource {
    fn label(self) -> &'static str {
        match self {
            RuleSource::Query => "query",
            RuleSource::Exclude => "exclude",
            RuleSource::Watch => "watch",
        }
    }
}

/// A compile error in a watch rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub watch_id: String,
    pub source: RuleSource,
    /// Byte offset inside the query (or exclude) text as parsed.
    pub offset: usize,
    pub message: String,
    pub hint: Option<String>,
    /// Span of the TOML string value in the config file, quotes included, when known.
    pub span: Option<Range<usize>>,
}

/// A warning about a rule that will probably match too much.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleWarning {
    pub watch_id: String,
    pub source: RuleSource,
    pub offset: usize,
    pub message: String,
    pub hint: Option<String>,
    pub span: Option<Range<usize>>,
}

/// The one-line form shared by errors and warnings (no file at hand).
#[allow(clippy::too_many_arguments)]
fn fmt_line(
    f: &mut fmt::Formatter<'_>,
    watch_id: &str,
    severity: &str,
    message: &str,
    source: &RuleSource,
    offset: usize,
    hint: Option<&str>,
) -> fmt::Result {
    write!(
        f,
        "watch `{watch_id}`: {severity}{message} (in {} at byte {offset})",
        source.label()
    )?;
    if let Some(h) = hint {
        write!(f, "; hint: {h}")?;
    }
    Ok(())
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, msg, hint) = (&self.watch_id, &self.message, self.hint.as_deref());
        fmt_line(f, id, "", msg, &self.source, self.offset, hint)
    }
}

impl std::error::Error for RuleError {}

impl fmt::Display for RuleWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, msg, hint) = (&self.watch_id, &self.message, self.hint.as_deref());
        fmt_line(f, id, "warning: ", msg, &self.source, self.offset, hint)
    }
}

impl RuleError {
    pub fn render(&self, file_name: &str, file_src: &str) -> String {
        render(
            file_name,
            file_src,
            &self.watch_id,
            "error",
            &self.message,
            self.hint.as_deref(),
            self.span.as_ref(),
            self.offset,
        )
    }
}

impl RuleWarning {
    pub fn render(&self, file_name: &str, file_src: &str) -> String {
        render(
            file_name,
            file_src,
            &self.watch_id,
            "warning",
            &self.message,
            self.hint.as_deref(),
            self.span.as_ref(),
            self.offset,
        )
    }
}

/// Maps a byte offset inside the parsed string value to a byte offset in the file, given the
/// span of the value (quotes included). Exact for literal strings ('...', '''...'''), close for
/// basic strings (escape sequences are walked, line-ending backslashes are not).
pub fn file_offset(file_src: &str, span: &Range<usize>, offset: usize) -> usize {
    let Some(raw) = file_src.get(span.start..span.end.min(file_src.len())) else {
        return span.start.min(file_src.len());
    };
    let (open, basic) = if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else {
        (0, false)
    };
    let mut pos = open;
    if open == 3 {
        // TOML trims a newline directly after the opening delimiter.
        if raw[pos..].starts_with("\r\n") {
            pos += 2;
        } else if raw[pos..].starts_with('\n') {
            pos += 1;
        }
    }
    if !basic {
        return (span.start + pos + offset).min(file_src.len());
    }
    // Walk the source, counting how many value bytes each source piece produces.
    let body = &raw[pos..];
    let mut produced = 0usize;
    let mut it = body.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if produced >= offset {
            return span.start + pos + i;
        }
        if c == '\\' {
            match it.next() {
                Some((_, 'u')) => {
                    for _ in 0..4 {
                        it.next();
                    }
                    produced += 2; // approximate: most escaped chars are 1–3 bytes
                }
                Some((_, 'U')) => {
                    for _ in 0..8 {
                        it.next();
                    }
                    produced += 3;
                }
                Some(_) => produced += 1,
                None => break,
            }
        } else {
            produced += c.len_utf8();
        }
    }
    (span.start + pos + body.len()).min(file_src.len())
}

#[allow(clippy::too_many_arguments)]
fn render(
    file_name: &str,
    file_src: &str,
    watch_id: &str,
    severity: &str,
    message: &str,
    hint: Option<&str>,
    span: Option<&Range<usize>>,
    offset: usize,
) -> String {
    let message = format!("watch `{watch_id}`: {message}");
    match span {
        Some(span) => crate::diagnostic::render_at(
            file_name,
            file_src,
            file_offset(file_src, span, offset),
            severity,
            &message,
            hint,
        ),
        None => {
            let mut out = format!("{file_name}: {severity}: {message}");
            if let Some(h) = hint {
                out.push_str(&format!("\n  = hint: {h}"));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_in_literal_multiline_and_basic_strings() {
        let src = "query = '''\nab (cd'''\n";
        let span = 8..src.len() - 1;
        assert_eq!(&src[file_offset(src, &span, 3)..][..1], "(");
        let src = "query = \"a\\\"b (c\"";
        let span = 8..src.len();
        // value is `a"b (c`; `(` is at value offset 4
        assert_eq!(&src[file_offset(src, &span, 4)..][..1], "(");
        let src = "query = 'x y'";
        assert_eq!(file_offset(src, &(8..13), 2), 11);
    }

    #[test]
    fn render_shows_line_col_and_caret() {
        let src = "[[watches]]\nid = \"ai-chips\"\nquery = '''\nchips AND (nvidia\n'''\n";
        let start = src.find("'''").unwrap();
        let end = src.rfind("'''").unwrap() + 3;
        let e = RuleError {
            watch_id: "ai-chips".into(),
            source: RuleSource::Query,
            offset: 10,
            message: "unbalanced parenthesis opened here".into(),
            hint: Some("add the missing `)`".into()),
            span: Some(start..end),
        };
        let r = e.render("watches.toml", src);
        assert!(
            r.starts_with("watches.toml:4:11: error: watch `ai-chips`: unbalanced parenthesis"),
            "{r}"
        );
        assert!(
            r.contains("4 | chips AND (nvidia\n  |           ^\n"),
            "{r}"
        );
        assert!(r.contains("hint: add the missing"));
    }
}
