//! Log set-up: `tracing` to stderr, quiet at info, useful at debug (`RUST_LOG` or `--verbose`).
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp (the journal adds its own)
//! and start with a `<N>` syslog priority prefix, which journald turns into the entry's
//! priority — so `journalctl -p warning` shows exactly our warnings and errors. journald
//! reads the stream line by line, so an event that spans lines (a config error rendered with
//! its source line and caret) gets the prefix on *every* line, or its tail would be filed at
//! the default priority and vanish from `-p warning`.
//!
//! That same line-by-line reading is why text from outside — feed titles and URLs, parse
//! errors quoting a document's bytes, a server's error message — goes into a log line only
//! through [`untrusted`]: a raw newline followed by `<4>` would otherwise start an entry of
//! its own, at a priority the feed chose. Multi-line events are only ever our own text.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Formats like the default formatter, without time, behind a syslog priority prefix.
struct JournalFormat {
    inner: Format<Full, ()>,
}

/// syslog priority of a tracing level (sd-daemon(3)).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut buf = String::new();
        self.inner.format_event(ctx, Writer::new(&mut buf), event)?;
        write!(
            writer,
            "{}",
            prefix_lines(priority(event.metadata().level()), &buf)
        )
    }
}

/// `text` with `<prio>` in front of every line (the last line keeps its newline, if any).
pub fn prefix_lines(prio: u8, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive('\n') {
        out.push_str(&format!("<{prio}>"));
        out.push_str(line);
    }
    out
}

/// At most this many characters of one untrusted value reach a log line.
pub const MAX_UNTRUSTED_CHARS: usize = 300;

/// Feed- or server-supplied text for a log line: newlines, control characters, bidi controls
/// and line separators shown as escapes (`\n`, `\u{202e}`), and at most
/// [`MAX_UNTRUSTED_CHARS`] characters (then `…`). The one way such text enters a log line:
/// `tracing::warn!(title = %logging::untrusted(&item.title), …)`.
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted(text)
}

/// See [`untrusted`]; escapes when displayed, so it costs nothing for a filtered-out event.
pub struct Untrusted<'a>(&'a str);

/// Characters that must not reach a log line as themselves: they end a line (journald reads
/// one entry per line), or make a terminal show the line differently from its bytes.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for (n, c) in self.0.chars().enumerate() {
            if n == MAX_UNTRUSTED_CHARS {
                return f.write_char('…');
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Whether stderr goes to the journal (systemd sets `JOURNAL_STREAM` for the service).
pub fn to_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Prints a diagnostic that is not a tracing event (a config error rendered before logging
/// matters, say) to stderr — under the journal with `prio` on every line, so
/// `journalctl -p err` shows start-up config errors in full too.
pub fn diag(prio: u8, text: &str) {
    let mut text = text.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if to_journal() {
        eprint!("{}", prefix_lines(prio, &text));
    } else {
        eprint!("{text}");
    }
}

/// Installs the global subscriber. `verbose` raises the default level to debug; `RUST_LOG`
/// overrides both.
pub fn init(verbose: bool) {
    let default = if verbose {
        "policywatch=debug,info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journal = to_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if journal {
        builder
            .with_ansi(false)
            .fmt_fields(DefaultFields::new())
            .event_format(JournalFormat {
                inner: Format::default()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            })
            .try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_a_multi_line_event_carries_the_priority() {
        let text = "ERROR cfg.toml:3:9: error: bad\n  |\n3 | x = 1\n  |     ^\n";
        let out = prefix_lines(3, text);
        assert_eq!(out.lines().count(), 4);
        assert!(out.lines().all(|l| l.starts_with("<3>")), "{out}");
        assert!(out.ends_with("^\n"));
        assert_eq!(prefix_lines(6, "one line\n"), "<6>one line\n");
    }

    #[test]
    fn untrusted_text_stays_on_one_line_and_bounded() {
        let cases = [
            ("plain title", "plain title"),
            ("a\n<4>ERROR forged line", "a\\n<4>ERROR forged line"),
            (
                "cr\r\ttab\u{0}nul\u{85}nel",
                "cr\\r\\ttab\\u{0}nul\\u{85}nel",
            ),
            (
                "\u{202e}evil\u{2066}\u{200f}",
                "\\u{202e}evil\\u{2066}\\u{200f}",
            ),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("出口管制 Việt", "出口管制 Việt"),
        ];
        for (input, want) in cases {
            assert_eq!(untrusted(input).to_string(), want, "{input:?}");
        }
        let long = "x".repeat(MAX_UNTRUSTED_CHARS * 3);
        let shown = untrusted(&long).to_string();
        assert_eq!(shown.chars().count(), MAX_UNTRUSTED_CHARS + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
