//! Log set-up: `tracing` to stderr, quiet at info, useful at debug (`RUST_LOG` or `--verbose`).
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp (the journal adds its own)
//! and start with a `<N>` syslog priority prefix, which journald turns into the entry's
//! priority — so `journalctl -p warning` shows exactly our warnings and errors. journald
//! reads the stream line by line, so an event that spans lines (a config error rendered with
//! its source line and caret) gets the prefix on *every* line, or its tail would be filed at
//! the default priority and vanish from `-p warning`.

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
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
