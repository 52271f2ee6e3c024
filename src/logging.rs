//! Log set-up: `tracing` to stderr, quiet at info, useful at debug (`RUST_LOG` or `--verbose`).
//!
//! Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp (the journal adds its own)
//! and start with a `<N>` syslog priority prefix, which journald turns into the entry's
//! priority — so `journalctl -p warning` shows exactly our warnings and errors.

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
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
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
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
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
