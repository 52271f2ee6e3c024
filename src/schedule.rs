//! When digests are due: parsing the `schedule` of a digest and finding its next firing time.
//!
//! In: the schedule text from config (`hourly`, `hourly :15`, `daily 07:30`, `weekdays 08:00`,
//! `weekly mon 09:00`, `every 2h`, or a 5-field cron expression) and the digest's time zone.
//! Out: [`Schedule`], and from it the next UTC instant at which the digest is due. Pure: no
//! clock, no I/O; the daemon passes "now" in.
//!
//! # Time zones and DST
//! Schedules are wall-clock times in the digest's zone, so "daily 07:30" stays at 07:30 local
//! across DST changes. Two local times need a rule:
//! - a local time that does not exist (spring forward, e.g. 02:30 in Berlin on the last Sunday
//!   of March) fires at the first valid instant after the gap (03:00 local), so the digest is
//!   late, never lost;
//! - a local time that exists twice (fall back) fires once, at its first occurrence.
//!
//! `hourly` is the exception: it means "every hour at minute M" in real time, i.e. every instant
//! whose local minute is M. Treating it as calendar times would fire twice within a few minutes
//! after a spring-forward gap and skip an hour at fall back; as instants, DST neither skips nor
//! doubles an hour.
//!
//! Every calendar form is compiled to a cron pattern and searched with `croner` over *naive*
//! local time (we hand croner the naive time dressed as UTC, so it never sees a DST change);
//! the DST rules above are applied here when the naive time is resolved to an instant.

use std::fmt;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// The accepted forms, for error messages.
const FORMS: &str = "hourly, hourly :15, daily 07:30, weekdays 08:00, weekly mon 09:00, \
                     every 2h, or a 5-field cron expression such as \"30 7 * * 1-5\"";

/// Hour intervals `every Nh` accepts: those that divide the day, so the firings are evenly
/// spaced every day (with 5h the last gap of each day would be 4h).
const EVERY_HOURS: [u32; 7] = [1, 2, 3, 4, 6, 8, 12];

/// How a schedule was written (kept for display and for `hourly`'s own rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleKind {
    Hourly {
        minute: u32,
    },
    Daily {
        hour: u32,
        minute: u32,
    },
    Weekdays {
        hour: u32,
        minute: u32,
    },
    Weekly {
        weekday: chrono::Weekday,
        hour: u32,
        minute: u32,
    },
    EveryHours {
        hours: u32,
    },
    Cron(String),
}

/// A parsed, validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: ScheduleKind,
    /// The calendar pattern all non-hourly kinds are searched with.
    cron: Cron,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("empty schedule: write one of {FORMS}")]
    Empty,
    #[error("unknown schedule `{0}`: write one of {FORMS}")]
    Unknown(String),
    #[error("`{input}` is not a time of day: write HH:MM in 24-hour form, e.g. `daily 07:30`")]
    BadTime { input: String },
    #[error("`{input}` needs a time of day: add HH:MM in 24-hour form, e.g. `daily 07:30` or `weekly mon 09:00`")]
    MissingTime { input: String },
    #[error(
        "`{input}` is not a minute: write `hourly :MM` with MM from 00 to 59, e.g. `hourly :15`"
    )]
    BadMinute { input: String },
    #[error("`{input}` is not a weekday: write mon, tue, wed, thu, fri, sat or sun, e.g. `weekly mon 09:00`")]
    BadWeekday { input: String },
    #[error("`every {input}` is not supported: write `every Nh` with N one of 1, 2, 3, 4, 6, 8, 12 (hours that divide the day), or a cron expression")]
    BadInterval { input: String },
    #[error("cron expression `{input}` has {fields} fields: write 5 (minute hour day-of-month month day-of-week), e.g. \"30 7 * * 1-5\"")]
    CronFields { input: String, fields: usize },
    #[error("cron expression `{input}` is invalid ({reason}): write 5 fields (minute hour day-of-month month day-of-week), e.g. \"30 7 * * 1-5\"")]
    Cron { input: String, reason: String },
    #[error("schedule `{input}` never fires (e.g. 31 February): pick a date that exists")]
    NeverFires { input: String },
}

impl Schedule {
    /// Parses a schedule as written in config. Case and surrounding whitespace are ignored.
    pub fn parse(s: &str) -> Result<Schedule, ScheduleError> {
        let text = s.trim();
        let words: Vec<&str> = text.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let lw: Vec<&str> = lower.iter().map(String::as_str).collect();
        let kind = match lw.as_slice() {
            [] => return Err(ScheduleError::Empty),
            ["hourly"] => ScheduleKind::Hourly { minute: 0 },
            ["hourly", m] => ScheduleKind::Hourly {
                minute: parse_minute(m)?,
            },
            ["daily", t] => {
                let (hour, minute) = parse_hhmm(t)?;
                ScheduleKind::Daily { hour, minute }
            }
            ["weekdays", t] => {
                let (hour, minute) = parse_hhmm(t)?;
                ScheduleKind::Weekdays { hour, minute }
            }
            ["weekly", d, t] => {
                let weekday = parse_weekday(d)?;
                let (hour, minute) = parse_hhmm(t)?;
                ScheduleKind::Weekly {
                    weekday,
                    hour,
                    minute,
                }
            }
            ["daily"] | ["weekdays"] | ["weekly", _] => {
                return Err(ScheduleError::MissingTime {
                    input: text.to_string(),
                })
            }
            ["every", n] => ScheduleKind::EveryHours {
                hours: parse_every(n)?,
            },
            ["every", n, unit] if matches!(*unit, "h" | "hour" | "hours") => {
                ScheduleKind::EveryHours {
                    hours: parse_every(&format!("{n}h"))?,
                }
            }
            [first, ..] if first.starts_with('@') && words.len() == 1 => {
                ScheduleKind::Cron(text.to_string())
            }
            _ if words.len() == 5 => ScheduleKind::Cron(words.join(" ")),
            _ if looks_like_cron(&words) => {
                return Err(ScheduleError::CronFields {
                    input: text.to_string(),
                    fields: words.len(),
                })
            }
            _ => return Err(ScheduleError::Unknown(text.to_string())),
        };
        let pattern = match &kind {
            ScheduleKind::Hourly { minute } => format!("{minute} * * * *"),
            ScheduleKind::Daily { hour, minute } => format!("{minute} {hour} * * *"),
            ScheduleKind::Weekdays { hour, minute } => format!("{minute} {hour} * * 1-5"),
            ScheduleKind::Weekly {
                weekday,
                hour,
                minute,
            } => format!("{minute} {hour} * * {}", weekday.num_days_from_sunday()),
            ScheduleKind::EveryHours { hours } => format!("0 */{hours} * * *"),
            ScheduleKind::Cron(c) => c.clone(),
        };
        let cron = Cron::new(&pattern)
            .parse()
            .map_err(|e| ScheduleError::Cron {
                input: text.to_string(),
                reason: e.to_string(),
            })?;
        let sched = Schedule { kind, cron };
        // A pattern like "0 0 31 2 *" parses but never matches; catching it here means a typo
        // fails at config load, not silently as a digest that never comes.
        let probe = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single();
        let fires = probe.and_then(|p| sched.next_after(p, Tz::UTC)).is_some();
        if !fires {
            return Err(ScheduleError::NeverFires {
                input: text.to_string(),
            });
        }
        Ok(sched)
    }

    pub fn kind(&self) -> &ScheduleKind {
        &self.kind
    }

    /// The first instant strictly after `after` at which the schedule fires, with wall-clock
    /// times read in `tz`. `None` only if no firing exists within the search bounds (a valid
    /// schedule always has one; see [`Schedule::parse`]).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        if let ScheduleKind::Hourly { minute } = self.kind {
            return next_local_minute(after, tz, minute);
        }
        // Truncate sub-seconds: croner keeps them, and a firing at 07:30:00.4 would look odd.
        let local = after.with_timezone(&tz).naive_local();
        let mut cursor = local.with_nanosecond(0).unwrap_or(local);
        // Resolved instants are monotonic in naive time, so the first candidate that resolves
        // past `after` is the answer. A candidate can resolve to or before `after` only when
        // it is the second pass of a repeated hour (it already fired) or lies inside the gap we
        // are standing just after; a handful of steps covers that.
        for _ in 0..16 {
            let cand = self
                .cron
                .find_next_occurrence(&cursor.and_utc(), false)
                .ok()?
                .naive_utc();
            if let Some(at) = resolve_local(cand, tz) {
                if at > after {
                    return Some(at);
                }
            }
            cursor = cand;
        }
        None
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ScheduleKind::Hourly { minute } => write!(f, "hourly :{minute:02}"),
            ScheduleKind::Daily { hour, minute } => write!(f, "daily {hour:02}:{minute:02}"),
            ScheduleKind::Weekdays { hour, minute } => {
                write!(f, "weekdays {hour:02}:{minute:02}")
            }
            ScheduleKind::Weekly {
                weekday,
                hour,
                minute,
            } => write!(
                f,
                "weekly {} {hour:02}:{minute:02}",
                weekday.to_string().to_lowercase()
            ),
            ScheduleKind::EveryHours { hours } => write!(f, "every {hours}h"),
            ScheduleKind::Cron(c) => f.write_str(c),
        }
    }
}

/// The instant a local wall-clock time denotes, by the rules in the module doc: the earlier of
/// two (fall back), or the end of the gap (spring forward).
fn resolve_local(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => {
            // Walk forward to the first local minute that exists: that is the gap's end, and
            // the instant it denotes is the transition itself. Gaps are an hour in practice;
            // two days covers the rare day-long jumps (Samoa 2011).
            let mut n = naive;
            for _ in 0..(48 * 60) {
                n = n.checked_add_signed(Duration::minutes(1))?;
                match tz.from_local_datetime(&n) {
                    LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
                    LocalResult::Ambiguous(a, b) => return Some(a.min(b).with_timezone(&Utc)),
                    LocalResult::None => {}
                }
            }
            None
        }
    }
}

/// First whole UTC minute after `after` whose local minute (in `tz`) is `minute`. Offsets in
/// use today are multiples of 15 minutes, so this is found within the hour; the bound covers
/// any offset change in between.
fn next_local_minute(after: DateTime<Utc>, tz: Tz, minute: u32) -> Option<DateTime<Utc>> {
    let start = after.with_second(0)?.with_nanosecond(0)?;
    (1..=3 * 60)
        .map(|k| start + Duration::minutes(k))
        .find(|t| t.with_timezone(&tz).minute() == minute)
}

fn parse_hhmm(s: &str) -> Result<(u32, u32), ScheduleError> {
    let bad = || ScheduleError::BadTime {
        input: s.to_string(),
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let ok_digits = |x: &str, max_len| {
        !x.is_empty() && x.len() <= max_len && x.bytes().all(|b| b.is_ascii_digit())
    };
    if !ok_digits(h, 2) || !ok_digits(m, 2) || m.len() != 2 {
        return Err(bad());
    }
    let hour: u32 = h.parse().map_err(|_| bad())?;
    let minute: u32 = m.parse().map_err(|_| bad())?;
    if hour > 23 || minute > 59 {
        return Err(bad());
    }
    Ok((hour, minute))
}

fn parse_minute(s: &str) -> Result<u32, ScheduleError> {
    let bad = || ScheduleError::BadMinute {
        input: s.to_string(),
    };
    let digits = s.strip_prefix(':').ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let m: u32 = digits.parse().map_err(|_| bad())?;
    if m > 59 {
        return Err(bad());
    }
    Ok(m)
}

fn parse_weekday(s: &str) -> Result<chrono::Weekday, ScheduleError> {
    use chrono::Weekday::*;
    let d = match s {
        "mon" | "monday" => Mon,
        "tue" | "tues" | "tuesday" => Tue,
        "wed" | "wednesday" => Wed,
        "thu" | "thur" | "thurs" | "thursday" => Thu,
        "fri" | "friday" => Fri,
        "sat" | "saturday" => Sat,
        "sun" | "sunday" => Sun,
        _ => {
            return Err(ScheduleError::BadWeekday {
                input: s.to_string(),
            })
        }
    };
    Ok(d)
}

fn parse_every(s: &str) -> Result<u32, ScheduleError> {
    let bad = || ScheduleError::BadInterval {
        input: s.to_string(),
    };
    let n = s.strip_suffix('h').ok_or_else(bad)?;
    let n: u32 = n.parse().map_err(|_| bad())?;
    if EVERY_HOURS.contains(&n) {
        Ok(n)
    } else {
        Err(bad())
    }
}

/// Whether the words look like an attempt at cron (so the error can be about field count).
fn looks_like_cron(words: &[&str]) -> bool {
    words.len() >= 3
        && words.iter().all(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "*/,-?LW#".contains(c))
        })
        && words.iter().any(|w| w.contains('*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test timestamp")
            .with_timezone(&Utc)
    }

    /// (schedule, zone, after, expected next) — all instants in UTC.
    fn check(cases: &[(&str, &str, &str, &str)]) {
        for (sched, zone, after, want) in cases {
            let s = Schedule::parse(sched).unwrap_or_else(|e| panic!("{sched}: {e}"));
            let tz: Tz = zone.parse().expect("zone");
            let got = s.next_after(utc(after), tz);
            assert_eq!(
                got,
                Some(utc(want)),
                "{sched} in {zone} after {after}: got {got:?}, want {want}"
            );
        }
    }

    #[test]
    fn plain_days() {
        check(&[
            // CET is UTC+1 in November.
            (
                "daily 07:30",
                "Europe/Berlin",
                "2026-11-28T05:00:00Z",
                "2026-11-28T06:30:00Z",
            ),
            // Exactly at the firing time: the next one, not the same one again.
            (
                "daily 07:30",
                "Europe/Berlin",
                "2026-11-28T06:30:00Z",
                "2026-11-29T06:30:00Z",
            ),
            (
                "daily 07:30",
                "Europe/Berlin",
                "2026-11-28T06:29:59.700Z",
                "2026-11-28T06:30:00Z",
            ),
            (
                "DAILY 7:30",
                "Asia/Ho_Chi_Minh",
                "2026-11-28T01:00:00Z",
                "2026-11-29T00:30:00Z",
            ),
            (
                "daily 07:30",
                "Asia/Ho_Chi_Minh",
                "2026-11-28T00:00:00Z",
                "2026-11-28T00:30:00Z",
            ),
            // Friday afternoon in New York (EST, UTC-5): next weekday is Monday.
            (
                "weekdays 08:00",
                "America/New_York",
                "2026-11-27T14:00:00Z",
                "2026-11-30T13:00:00Z",
            ),
            (
                "weekdays 08:00",
                "America/New_York",
                "2026-11-26T12:00:00Z",
                "2026-11-26T13:00:00Z",
            ),
            (
                "weekly mon 09:00",
                "America/New_York",
                "2026-11-28T00:00:00Z",
                "2026-11-30T14:00:00Z",
            ),
            (
                "weekly sunday 18:00",
                "UTC",
                "2026-11-29T18:00:00Z",
                "2026-12-06T18:00:00Z",
            ),
            (
                "every 6h",
                "Europe/Berlin",
                "2026-11-28T06:00:00Z",
                "2026-11-28T11:00:00Z",
            ),
            (
                "every 2 hours",
                "UTC",
                "2026-11-28T23:30:00Z",
                "2026-11-29T00:00:00Z",
            ),
            (
                "0 9 * * 1-5",
                "Europe/Berlin",
                "2026-11-28T12:00:00Z",
                "2026-11-30T08:00:00Z",
            ),
            (
                "@daily",
                "UTC",
                "2026-11-28T12:00:00Z",
                "2026-11-29T00:00:00Z",
            ),
            (
                "hourly",
                "UTC",
                "2026-11-28T12:00:00Z",
                "2026-11-28T13:00:00Z",
            ),
            (
                "hourly :15",
                "Europe/Berlin",
                "2026-11-28T12:20:00Z",
                "2026-11-28T13:15:00Z",
            ),
            // India is UTC+5:30: local minute 0 is UTC minute 30.
            (
                "hourly",
                "Asia/Kolkata",
                "2026-11-28T00:00:00Z",
                "2026-11-28T00:30:00Z",
            ),
        ]);
    }

    #[test]
    fn spring_forward_fires_at_the_end_of_the_gap() {
        check(&[
            // Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
            (
                "daily 02:30",
                "Europe/Berlin",
                "2026-03-28T02:00:00Z",
                "2026-03-29T01:00:00Z",
            ),
            // The day after, 02:30 exists again (CEST, UTC+2).
            (
                "daily 02:30",
                "Europe/Berlin",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
            ),
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
            ),
            // New York 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
            (
                "daily 02:30",
                "America/New_York",
                "2026-03-08T05:00:00Z",
                "2026-03-08T07:00:00Z",
            ),
            (
                "every 2h",
                "Europe/Berlin",
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:00:00Z",
            ),
            // Hourly is real time: 01:15 CET, then 03:15 CEST one hour later, nothing between.
            (
                "hourly :15",
                "Europe/Berlin",
                "2026-03-28T23:20:00Z",
                "2026-03-29T00:15:00Z",
            ),
            (
                "hourly :15",
                "Europe/Berlin",
                "2026-03-29T00:15:00Z",
                "2026-03-29T01:15:00Z",
            ),
        ]);
    }

    #[test]
    fn fall_back_fires_once() {
        check(&[
            // Berlin 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:30 happens
            // at 00:30 UTC and again at 01:30 UTC. It fires at the first only...
            (
                "daily 02:30",
                "Europe/Berlin",
                "2026-10-24T23:00:00Z",
                "2026-10-25T00:30:00Z",
            ),
            // ...and after it, the next firing is the next day, not the repeat.
            (
                "daily 02:30",
                "Europe/Berlin",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
            ),
            // Asked from inside the repeated hour (02:10 CET, second pass): already fired.
            (
                "daily 02:30",
                "Europe/Berlin",
                "2026-10-25T01:10:00Z",
                "2026-10-26T01:30:00Z",
            ),
            // New York 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
            (
                "daily 01:30",
                "America/New_York",
                "2026-11-01T04:00:00Z",
                "2026-11-01T05:30:00Z",
            ),
            (
                "daily 01:30",
                "America/New_York",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z",
            ),
            // Hourly fires in both passes of the repeated hour: they are different hours.
            (
                "hourly :15",
                "Europe/Berlin",
                "2026-10-25T00:20:00Z",
                "2026-10-25T01:15:00Z",
            ),
            (
                "hourly :15",
                "America/New_York",
                "2026-11-01T05:20:00Z",
                "2026-11-01T06:15:00Z",
            ),
        ]);
    }

    #[test]
    fn successive_daily_firings_are_a_day_apart_in_local_time() {
        let s = Schedule::parse("daily 07:30").expect("parse");
        let tz: Tz = "Europe/Berlin".parse().expect("tz");
        let mut t = utc("2026-10-20T00:00:00Z");
        for _ in 0..20 {
            t = s.next_after(t, tz).expect("next");
            let local = t.with_timezone(&tz);
            assert_eq!((local.hour(), local.minute()), (7, 30), "{t}");
        }
    }

    #[test]
    fn errors_say_what_to_write() {
        let cases: &[(&str, &str)] = &[
            ("", "write one of"),
            ("fortnightly", "write one of"),
            ("daily 7", "HH:MM"),
            ("daily 25:00", "HH:MM"),
            ("daily 07:5", "HH:MM"),
            ("weekly monday", "HH:MM"),
            ("weekly xyz 09:00", "mon, tue"),
            ("hourly 15", "hourly :MM"),
            ("hourly :75", "hourly :MM"),
            ("every 5h", "1, 2, 3, 4, 6, 8, 12"),
            ("every 30m", "every Nh"),
            ("0 * * * * *", "write 5"),
            ("0 25 * * *", "invalid"),
            ("0 0 31 2 *", "never fires"),
        ];
        for (input, hint) in cases {
            let err = Schedule::parse(input).expect_err(input).to_string();
            assert!(err.contains(hint), "{input:?}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "hourly :15",
            "daily 07:30",
            "weekdays 08:00",
            "weekly mon 09:00",
            "every 2h",
            "30 7 * * 1-5",
        ] {
            let parsed = Schedule::parse(s).expect(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(
                Schedule::parse(&parsed.to_string()).expect(s).kind(),
                parsed.kind()
            );
        }
    }
}

#[cfg(test)]
mod props {
    //! For any instant and zone, the next firing is later, soon enough, and at the written
    //! local time unless that time did not exist that day.
    use super::*;
    use chrono::Offset as _;
    use proptest::prelude::*;

    const ZONES: &[&str] = &[
        "Europe/Berlin",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe", // 30-minute DST shift
        "Asia/Ho_Chi_Minh",
        "UTC",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn next_firing_is_later_and_on_time(
            secs in 1_700_000_000i64..1_900_000_000,
            zone in prop::sample::select(ZONES),
            hour in 0u32..24,
            minute in 0u32..60,
            kind in 0usize..4,
        ) {
            let tz: Tz = zone.parse().expect("zone");
            let after = Utc.timestamp_opt(secs, 0).single().expect("time");
            let text = match kind {
                0 => format!("daily {hour:02}:{minute:02}"),
                1 => format!("weekdays {hour:02}:{minute:02}"),
                2 => format!("weekly wed {hour:02}:{minute:02}"),
                _ => format!("hourly :{minute:02}"),
            };
            let s = Schedule::parse(&text).expect("parse");
            let next = s.next_after(after, tz).expect("fires");
            prop_assert!(next > after);
            let bound = if kind == 3 { Duration::hours(2) } else { Duration::days(8) };
            prop_assert!(next - after <= bound, "{} after {} in {}: {}", text, after, zone, next);
            let local = next.with_timezone(&tz);
            if kind == 3 {
                prop_assert_eq!(local.minute(), minute);
            } else if (local.hour(), local.minute()) != (hour, minute) {
                // Only allowed when the written time fell into a DST gap that day: then the
                // instant just before the firing is in another offset.
                let before = (next - Duration::minutes(1)).with_timezone(&tz);
                prop_assert!(
                    before.offset().fix() != local.offset().fix(),
                    "{} in {}: {} is not {:02}:{:02} and not after a gap", text, zone, local, hour, minute
                );
            }
            // Asking again from the firing gives a strictly later one (no double firing).
            let again = s.next_after(next, tz).expect("fires again");
            prop_assert!(again > next);
        }
    }
}
