//! [`CronSchedule`]: when a schedule fires. A cron expression — five
//! fields (minute, hour, day of month, month, day of week), an optional
//! leading seconds field, or an alias (`@hourly`, `@daily`/`@midnight`,
//! `@weekly`, `@monthly`, `@yearly`/`@annually`) — read in an IANA time
//! zone. Parsing and the next fire time come from the `croner` crate;
//! zones from `chrono-tz`.
//!
//! Daylight-saving time: a time that does not exist (the hour skipped in
//! spring) fires at the first valid time after the gap; a time that
//! happens twice (the hour repeated in autumn) fires once, the first time.
//! When both day of month and day of week are restricted, either matching
//! is enough (as in Vixie cron).
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use offload_types::CronSchedule;
//!
//! let nightly = CronSchedule::parse("0 3 * * *", "Europe/Berlin").unwrap();
//! let after = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
//! // 03:00 in Berlin is 02:00 UTC in winter
//! assert_eq!(nightly.next_after(after), Some(Utc.with_ymd_and_hms(2026, 1, 11, 2, 0, 0).unwrap()));
//! assert!(CronSchedule::parse("61 * * * *", "UTC").is_err());
//! ```

use std::fmt;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::ValidationError;

/// Longest cron expression accepted.
pub const MAX_CRON_LEN: usize = 200;

/// A parsed cron expression in a time zone.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    zone: Tz,
    cron: Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expression", &self.expression)
            .field("time_zone", &self.zone.name())
            .finish()
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.zone == other.zone
    }
}

impl CronSchedule {
    /// Parses `expression` in the IANA zone `time_zone` (`UTC`,
    /// `Europe/Berlin`, …). Errors name the field: `cron` or `time_zone`.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, ValidationError> {
        let expression = expression.trim();
        if expression.is_empty() || expression.len() > MAX_CRON_LEN {
            return Err(ValidationError::new(
                "cron",
                format!("must be 1 to {MAX_CRON_LEN} characters"),
            ));
        }
        let zone: Tz = time_zone.trim().parse().map_err(|_| {
            ValidationError::new(
                "time_zone",
                format!("{time_zone:?} is not an IANA time zone name such as UTC or Europe/Berlin"),
            )
        })?;
        // the one common alias the parser does not know
        let pattern = if expression.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            expression
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| {
                ValidationError::new(
                    "cron",
                    format!(
                        "{expression:?} is not a cron expression ({e}); expected 5 fields \
                         (minute hour day-of-month month day-of-week), an optional seconds \
                         field first, or @hourly, @daily, @weekly, @monthly, @yearly"
                    ),
                )
            })?;
        Ok(Self {
            expression: expression.to_owned(),
            zone,
            cron,
        })
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's IANA name.
    pub fn time_zone(&self) -> &str {
        self.zone.name()
    }

    /// The first fire time strictly after `after`, on a whole second;
    /// `None` if there is none (an expression such as `0 0 30 2 *` never
    /// fires).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // fire times are whole seconds: search from the second `after` is in
        // (strictly after it, so a fraction past a fire time skips that one)
        let whole = after.with_nanosecond(0).unwrap_or(after);
        let local = whole.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` fire times after `after`, in order.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(t) => {
                    out.push(t);
                    at = t;
                }
                None => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn next(expr: &str, zone: &str, after: DateTime<Utc>) -> DateTime<Utc> {
        CronSchedule::parse(expr, zone)
            .unwrap()
            .next_after(after)
            .unwrap_or_else(|| panic!("{expr} never fires"))
    }

    #[test]
    fn next_fire_times_are_pinned() {
        // 2026-01-01 is a Thursday
        let cases = [
            (
                "*/15 * * * *",
                utc(2026, 1, 1, 0, 7, 0),
                utc(2026, 1, 1, 0, 15, 0),
            ),
            (
                "*/15 * * * *",
                utc(2026, 1, 1, 0, 15, 0),
                utc(2026, 1, 1, 0, 30, 0),
            ),
            (
                "5-20/5 3 * * *",
                utc(2026, 1, 1, 3, 6, 0),
                utc(2026, 1, 1, 3, 10, 0),
            ),
            (
                "0 9 * * 1-5",
                utc(2026, 1, 3, 10, 0, 0),
                utc(2026, 1, 5, 9, 0, 0),
            ),
            (
                "0 9 * * MON-FRI",
                utc(2026, 1, 3, 10, 0, 0),
                utc(2026, 1, 5, 9, 0, 0),
            ),
            (
                "0 0 1,15 * *",
                utc(2026, 1, 2, 0, 0, 0),
                utc(2026, 1, 15, 0, 0, 0),
            ),
            (
                "0 0 1 JAN,JUL *",
                utc(2026, 1, 2, 0, 0, 0),
                utc(2026, 7, 1, 0, 0, 0),
            ),
            // day of month or day of week: the 13th, or any Friday
            (
                "0 12 13 * 5",
                utc(2026, 1, 1, 13, 0, 0),
                utc(2026, 1, 2, 12, 0, 0),
            ),
            (
                "0 12 13 * 5",
                utc(2026, 1, 12, 13, 0, 0),
                utc(2026, 1, 13, 12, 0, 0),
            ),
            (
                "0 0 29 2 *",
                utc(2026, 1, 1, 0, 0, 0),
                utc(2028, 2, 29, 0, 0, 0),
            ),
            // an optional seconds field first
            (
                "*/10 * * * * *",
                utc(2026, 1, 1, 0, 0, 5),
                utc(2026, 1, 1, 0, 0, 10),
            ),
            (
                "30 0 12 * * *",
                utc(2026, 1, 1, 12, 0, 30),
                utc(2026, 1, 2, 12, 0, 30),
            ),
            // aliases
            (
                "@hourly",
                utc(2026, 1, 1, 0, 30, 0),
                utc(2026, 1, 1, 1, 0, 0),
            ),
            (
                "@daily",
                utc(2026, 1, 1, 0, 30, 0),
                utc(2026, 1, 2, 0, 0, 0),
            ),
            (
                "@midnight",
                utc(2026, 1, 1, 0, 30, 0),
                utc(2026, 1, 2, 0, 0, 0),
            ),
            (
                "@weekly",
                utc(2026, 1, 1, 0, 30, 0),
                utc(2026, 1, 4, 0, 0, 0),
            ),
            (
                "@monthly",
                utc(2026, 1, 1, 0, 30, 0),
                utc(2026, 2, 1, 0, 0, 0),
            ),
            (
                "@yearly",
                utc(2026, 1, 1, 0, 30, 0),
                utc(2027, 1, 1, 0, 0, 0),
            ),
            (
                "@annually",
                utc(2026, 1, 1, 0, 30, 0),
                utc(2027, 1, 1, 0, 0, 0),
            ),
        ];
        for (expr, after, want) in cases {
            assert_eq!(next(expr, "UTC", after), want, "{expr} after {after}");
        }
    }

    #[test]
    fn berlin_daylight_saving_changes() {
        let z = "Europe/Berlin";
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist
        assert_eq!(
            next("30 2 * * *", z, utc(2026, 3, 28, 12, 0, 0)),
            utc(2026, 3, 29, 1, 0, 0),
            "a skipped time fires at the end of the gap (03:00 CEST)"
        );
        assert_eq!(
            next("30 2 * * *", z, utc(2026, 3, 29, 1, 0, 0)),
            utc(2026, 3, 30, 0, 30, 0)
        );
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice
        assert_eq!(
            next("30 2 * * *", z, utc(2026, 10, 24, 12, 0, 0)),
            utc(2026, 10, 25, 0, 30, 0),
            "a repeated time fires once, the first time (CEST)"
        );
        assert_eq!(
            next("30 2 * * *", z, utc(2026, 10, 25, 0, 30, 0)),
            utc(2026, 10, 26, 1, 30, 0)
        );
        // across the change the wall-clock time stays 09:00
        assert_eq!(
            next("0 9 * * *", z, utc(2026, 3, 28, 12, 0, 0)),
            utc(2026, 3, 29, 7, 0, 0)
        );
        assert_eq!(
            next("0 9 * * *", z, utc(2026, 10, 24, 12, 0, 0)),
            utc(2026, 10, 25, 8, 0, 0)
        );
    }

    #[test]
    fn new_york_daylight_saving_changes() {
        let z = "America/New_York";
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT
        assert_eq!(
            next("30 2 * * *", z, utc(2026, 3, 7, 12, 0, 0)),
            utc(2026, 3, 8, 7, 0, 0)
        );
        assert_eq!(
            next("30 2 * * *", z, utc(2026, 3, 8, 7, 0, 0)),
            utc(2026, 3, 9, 6, 30, 0)
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice
        assert_eq!(
            next("30 1 * * *", z, utc(2026, 10, 31, 12, 0, 0)),
            utc(2026, 11, 1, 5, 30, 0)
        );
        assert_eq!(
            next("30 1 * * *", z, utc(2026, 11, 1, 5, 30, 0)),
            utc(2026, 11, 2, 6, 30, 0)
        );
    }

    #[test]
    fn fire_times_are_whole_seconds_after_a_fractional_time() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let at = utc(2026, 1, 1, 10, 0, 0) + chrono::Duration::milliseconds(500);
        assert_eq!(every_second.next_after(at), Some(utc(2026, 1, 1, 10, 0, 1)));
        let nightly = CronSchedule::parse("0 3 * * *", "UTC").unwrap();
        let almost = utc(2026, 1, 1, 2, 59, 59) + chrono::Duration::milliseconds(900);
        assert_eq!(nightly.next_after(almost), Some(utc(2026, 1, 1, 3, 0, 0)));
        let past = utc(2026, 1, 1, 3, 0, 0) + chrono::Duration::milliseconds(1);
        assert_eq!(nightly.next_after(past), Some(utc(2026, 1, 2, 3, 0, 0)));
    }

    #[test]
    fn upcoming_lists_fire_times_in_order() {
        let s = CronSchedule::parse("0 */6 * * *", "UTC").unwrap();
        assert_eq!(
            s.upcoming(utc(2026, 1, 1, 1, 0, 0), 3),
            vec![
                utc(2026, 1, 1, 6, 0, 0),
                utc(2026, 1, 1, 12, 0, 0),
                utc(2026, 1, 1, 18, 0, 0)
            ]
        );
        assert_eq!(s.expression(), "0 */6 * * *");
        assert_eq!(s.time_zone(), "UTC");
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_naming_the_field() {
        for expr in [
            "",
            "61 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "* * *",
            "0 0 0 1 1 * 2030",
            "@fortnightly",
            "*/0 * * * *",
            "a b c d e",
        ] {
            let e = CronSchedule::parse(expr, "UTC").unwrap_err();
            assert_eq!(e.field, "cron", "{expr:?}: {e}");
        }
        let e = CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e.field, "time_zone");
        let long = format!("{} * * * *", "1,".repeat(200));
        assert_eq!(CronSchedule::parse(&long, "UTC").unwrap_err().field, "cron");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_parsed_or_refused_without_panicking(expr in ".{0,80}", zone in "[A-Za-z/_]{0,20}") {
            let _ = CronSchedule::parse(&expr, &zone);
        }

        #[test]
        fn a_daily_time_fires_within_a_day_at_that_wall_clock_time(
            minute in 0u32..60,
            hour in 0u32..24,
            secs in 0i64..(4 * 365 * 86_400),
        ) {
            let s = CronSchedule::parse(&format!("{minute} {hour} * * *"), "UTC").unwrap();
            let after = utc(2026, 1, 1, 0, 0, 0) + chrono::Duration::seconds(secs);
            let at = s.next_after(after).unwrap();
            proptest::prop_assert!(at > after);
            proptest::prop_assert!(at - after <= chrono::Duration::days(1));
            proptest::prop_assert_eq!((chrono::Timelike::hour(&at), chrono::Timelike::minute(&at)), (hour, minute));
        }
    }
}
