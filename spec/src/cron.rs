//! Cron schedules: the standard five fields, evaluated in an IANA time zone.
//!
//! `minute hour day-of-month month day-of-week`, each `*`, a value, a range `a-b`, a
//! step `*/n` or `a-b/n`, or a comma list of those; months and weekdays also by name
//! (`jan`, `mon`; 0 and 7 are Sunday). `@yearly`, `@monthly`, `@weekly`, `@daily` (or
//! `@midnight`) and `@hourly` stand for their usual expansions.
//!
//! Six fields put a seconds field first (`*/5 * * * * *`: every five seconds), as in
//! Quartz, Spring and the `cron` crate. Kubernetes refuses it; dabba accepts it because
//! sub-minute jobs (heartbeats, reconciliation sweeps) are real, and because a schedule
//! every few seconds is how the exactly-once guarantee is tested across failovers.
//!
//! Day of month and day of week combine as in Vixie cron (and Kubernetes): when both are
//! restricted, a day matching either one matches; when one is `*`, the other decides.
//!
//! Daylight saving time, by the "compatible" rule of RFC 5545 and JavaScript's Temporal:
//! - a local time that does not exist (a spring-forward gap) runs that much later: in
//!   America/New_York, 02:30 on the second Sunday of March runs at 03:30 EDT;
//! - a local time that happens twice (a fall-back fold) runs once, at its first
//!   occurrence: 01:30 on the first Sunday of November runs at 01:30 EDT, not again at
//!   01:30 EST;
//! - two schedule times that land on the same instant (02:30 and 03:30 on a gap day) run
//!   once.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    /// Bit 0 only, for five-field schedules.
    seconds: u64,
    has_seconds: bool,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day of month / day of week were `*` (unrestricted).
    any_day: bool,
    any_weekday: bool,
}

/// What is wrong with a schedule, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule `{schedule}`: {message}")]
pub struct ScheduleError {
    pub schedule: String,
    pub message: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Years searched for the next time (a schedule for February 29 needs up to eight).
const SEARCH_DAYS: i64 = 366 * 8 + 2;

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name's value (1 for months, 0 for weekdays).
    names_from: u32,
}

const SECONDS: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
};

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    FieldSpec {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_from: 1,
    },
    FieldSpec {
        name: "day of week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
        names_from: 0,
    },
];

impl FieldSpec {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.names_from + i as u32);
        }
        let v: u32 = text.parse().map_err(|_| {
            let names = if self.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({})", self.names.join(", "))
            };
            format!(
                "{} field: `{text}` is not a number from {} to {}{names}",
                self.name, self.min, self.max
            )
        })?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} field: {v} is outside {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// The set of values, as bits.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{} field: step `{s}` is not a positive number", self.name)
                    })?;
                    (r, step)
                }
                None => (part, 1),
            };
            let (from, to) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!(
                        "{} field: range `{range}` runs backwards",
                        self.name
                    ));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `5/15` means from 5 to the end, every 15.
                (a, if part.contains('/') { self.max } else { a })
            };
            for v in (from..=to).step_by(step as usize) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Schedule, ScheduleError> {
        let err = |message: String| ScheduleError {
            schedule: text.to_string(),
            message,
        };
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(err(format!(
                    "unknown macro `{other}` (use @yearly, @monthly, @weekly, @daily or @hourly)"
                )));
            }
            other => other,
        };
        let mut fields: Vec<&str> = expanded.split_whitespace().collect();
        let has_seconds = fields.len() == 6;
        let seconds = match fields.len() {
            5 => 1,
            6 => SECONDS.parse(fields.remove(0)).map_err(err)?,
            n => {
                return Err(err(format!(
                    "{n} fields: a schedule has 5 (minute hour day-of-month month day-of-week), or 6 with seconds first"
                )));
            }
        };
        let mut sets = [0u64; 5];
        for (i, (spec, field)) in FIELDS.iter().zip(&fields).enumerate() {
            sets[i] = spec.parse(field).map_err(err)?;
        }
        // 7 is Sunday too.
        let weekdays = (sets[4] | (sets[4] >> 7)) & 0x7f;
        Ok(Schedule {
            text: text.trim().to_string(),
            seconds,
            has_seconds,
            minutes: sets[0],
            hours: sets[1] as u32,
            days: sets[2] as u32,
            months: sets[3] as u16,
            weekdays: weekdays as u8,
            any_day: fields[2].starts_with('*'),
            any_weekday: fields[4].starts_with('*'),
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Schedule {
    fn matches_date(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let day = self.days & (1 << d.day()) != 0;
        let weekday = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => day || weekday,
            (true, false) => weekday,
            (false, true) => day,
            (true, true) => true,
        }
    }

    /// Whether the schedule has a seconds field (six fields).
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    /// The instants of the schedule's minutes on local date `d` in `tz` (each minute's
    /// second 0), in order, each once. Offsets change on whole minutes, so a minute's
    /// seconds follow its start.
    fn minutes_on(&self, d: Date, tz: &TimeZone) -> Vec<Timestamp> {
        let mut out = Vec::new();
        for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
            for m in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                let Ok(time) = Time::new(h as i8, m as i8, 0, 0) else {
                    continue;
                };
                let dt = DateTime::from_parts(d, time);
                if let Ok(ts) = tz.to_ambiguous_timestamp(dt).compatible() {
                    out.push(ts);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Scheduled instants strictly after `after`, oldest first, passed to `take` until it
    /// returns false or the search runs [`SEARCH_DAYS`] past `after`.
    fn walk(&self, after: Timestamp, tz: &TimeZone, mut take: impl FnMut(Timestamp) -> bool) {
        // Start a day early: a gap can move a time of the previous local day past `after`.
        let Ok(mut day) = tz.to_datetime(after).date().checked_sub(1.day()) else {
            return;
        };
        for _ in 0..SEARCH_DAYS {
            if self.matches_date(day) {
                for minute in self.minutes_on(day, tz) {
                    if minute.as_second() + 59 <= after.as_second() {
                        continue;
                    }
                    for s in (0..60).filter(|s| self.seconds & (1 << s) != 0) {
                        let Ok(t) = minute.checked_add(jiff::SignedDuration::from_secs(s)) else {
                            return;
                        };
                        if t > after && !take(t) {
                            return;
                        }
                    }
                }
            }
            let Ok(next) = day.checked_add(1.day()) else {
                return;
            };
            day = next;
        }
    }

    /// The first scheduled instant strictly after `after`, in zone `tz`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut first = None;
        self.walk(after, tz, |t| {
            first = Some(t);
            false
        });
        first
    }

    /// Every scheduled instant in `(after, until]`, oldest first, at most `limit`.
    pub fn between(
        &self,
        after: Timestamp,
        until: Timestamp,
        tz: &TimeZone,
        limit: usize,
    ) -> Vec<Timestamp> {
        let mut out = Vec::new();
        if limit == 0 || until <= after {
            return out;
        }
        self.walk(after, tz, |t| {
            if t > until {
                return false;
            }
            // A time already passed on a later day is never repeated.
            if out.last().is_none_or(|l| t > *l) {
                out.push(t);
            }
            out.len() < limit
        });
        out
    }
}

/// An IANA time zone by name; an unknown name is an error that says so.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("`{name}` is not an IANA time zone name (like `Asia/Kolkata` or `UTC`)")
    })
}

/// `t` in zone `tz` as RFC 3339 with its offset, e.g. `2026-11-26T01:00:00+05:30`.
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(schedule: &str, zone: &str, after: &str) -> String {
        let tz = time_zone(zone).unwrap();
        let s: Schedule = schedule.parse().unwrap();
        rfc3339_in(s.next_after(at(after), &tz).unwrap(), &tz)
    }

    #[test]
    fn the_settlement_runs_at_one_in_the_morning_india_time() {
        // 2026-11-25T20:00Z is 01:30 IST on the 26th: the next run is 01:00 IST the 27th.
        assert_eq!(
            next("0 1 * * *", "Asia/Kolkata", "2026-11-25T20:00:00Z"),
            "2026-11-27T01:00:00+05:30"
        );
        assert_eq!(
            next("0 1 * * *", "Asia/Kolkata", "2026-11-25T19:29:59Z"),
            "2026-11-26T01:00:00+05:30"
        );
        // Exactly at a scheduled instant: the next one, never the same.
        assert_eq!(
            next("0 1 * * *", "Asia/Kolkata", "2026-11-25T19:30:00Z"),
            "2026-11-27T01:00:00+05:30"
        );
    }

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        let s: Schedule = "*/15 9-17 * jan,jul MON-fri".parse().unwrap();
        assert_eq!(s.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(s.hours, (9..=17).map(|h| 1u32 << h).sum::<u32>());
        assert_eq!(s.months, 1 << 1 | 1 << 7);
        assert_eq!(s.weekdays, 0b0111110);
        let s: Schedule = "5/20 0 1,15 * 7".parse().unwrap();
        assert_eq!(s.minutes, 1 << 5 | 1 << 25 | 1 << 45);
        assert_eq!(s.weekdays, 1, "7 is Sunday");
        let daily: Schedule = "@daily".parse().unwrap();
        assert_eq!(daily.minutes, 1);
        assert_eq!(daily.to_string(), "@daily");
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, says) in [
            ("0 1 * *", "4 fields"),
            ("0 0 1 * * * *", "7 fields"),
            ("60 * * * * *", "second field: 60 is outside 0-59"),
            ("60 * * * *", "minute field: 60 is outside 0-59"),
            ("* 24 * * *", "hour field: 24 is outside 0-23"),
            ("* * 0 * *", "day of month field: 0 is outside 1-31"),
            ("* * * foo *", "month field: `foo` is not a number"),
            ("* * * * 8", "day of week field: 8 is outside 0-7"),
            ("*/0 * * * *", "step `0`"),
            ("5-1 * * * *", "runs backwards"),
            ("@reboot", "unknown macro"),
        ] {
            let e = text.parse::<Schedule>().unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        assert!(time_zone("Mars/Olympus_Mons").unwrap_err().contains("IANA"));
    }

    #[test]
    fn day_of_month_and_day_of_week_combine_as_in_vixie_cron() {
        let tz = time_zone("UTC").unwrap();
        // Both restricted: the 13th or any Friday.
        let s: Schedule = "0 0 13 * 5".parse().unwrap();
        let times = s.between(
            at("2026-11-01T00:00:00Z"),
            at("2026-11-30T23:59:00Z"),
            &tz,
            10,
        );
        let days: Vec<i8> = times.iter().map(|t| tz.to_datetime(*t).day()).collect();
        assert_eq!(
            days,
            [6, 13, 20, 27],
            "Fridays of November 2026, and the 13th (a Friday)"
        );
        let s: Schedule = "0 0 1 * 1".parse().unwrap();
        let times = s.between(
            at("2026-11-01T00:00:00Z"),
            at("2026-11-30T23:59:00Z"),
            &tz,
            10,
        );
        let days: Vec<i8> = times.iter().map(|t| tz.to_datetime(*t).day()).collect();
        assert_eq!(
            days,
            [2, 9, 16, 23, 30],
            "Mondays (the 1st was before the window)"
        );
        // One restricted: only it counts.
        let s: Schedule = "0 0 * * 1".parse().unwrap();
        assert_eq!(
            s.between(
                at("2026-11-01T00:00:00Z"),
                at("2026-11-30T23:59:00Z"),
                &tz,
                10
            )
            .len(),
            5
        );
    }

    #[test]
    fn a_time_in_the_spring_forward_gap_runs_that_much_later() {
        // 2026-03-08: New York skips 02:00-03:00.
        assert_eq!(
            next("30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z"),
            "2026-03-08T03:30:00-04:00"
        );
        // 02:30 and 03:30 land on the same instant that day: one run.
        let tz = time_zone("America/New_York").unwrap();
        let s: Schedule = "30 2,3 * * *".parse().unwrap();
        let day = s.between(
            at("2026-03-08T05:00:00Z"),
            at("2026-03-09T03:59:00Z"),
            &tz,
            10,
        );
        assert_eq!(day.len(), 1, "{day:?}");
        // Other days: both.
        let day = s.between(
            at("2026-03-09T05:00:00Z"),
            at("2026-03-10T03:59:00Z"),
            &tz,
            10,
        );
        assert_eq!(day.len(), 2);
    }

    #[test]
    fn a_time_in_the_fall_back_fold_runs_once_at_its_first_occurrence() {
        // 2026-11-01: New York repeats 01:00-02:00.
        let tz = time_zone("America/New_York").unwrap();
        let s: Schedule = "30 1 * * *".parse().unwrap();
        let day = s.between(
            at("2026-11-01T04:00:00Z"),
            at("2026-11-02T04:00:00Z"),
            &tz,
            10,
        );
        assert_eq!(day.len(), 1, "{day:?}");
        assert_eq!(rfc3339_in(day[0], &tz), "2026-11-01T01:30:00-04:00");
        // Every 30 minutes through the fold: the repeated hour's times are not run twice.
        let s: Schedule = "*/30 * * * *".parse().unwrap();
        let hours = s.between(
            at("2026-11-01T04:00:00Z"),
            at("2026-11-01T08:00:00Z"),
            &tz,
            100,
        );
        assert_eq!(
            hours.len(),
            6,
            "00:30 01:00 01:30 EDT, 02:00 02:30 03:00 EST"
        );
    }

    #[test]
    fn a_seconds_field_comes_first() {
        let tz = time_zone("Asia/Kolkata").unwrap();
        let s: Schedule = "*/20 * * * * *".parse().unwrap();
        assert!(s.has_seconds());
        assert!(!"* * * * *".parse::<Schedule>().unwrap().has_seconds());
        let times = s.between(
            at("2026-11-26T18:29:30Z"),
            at("2026-11-26T18:31:00Z"),
            &tz,
            100,
        );
        let shown: Vec<String> = times.iter().map(|t| rfc3339_in(*t, &tz)).collect();
        assert_eq!(
            shown,
            [
                "2026-11-26T23:59:40+05:30",
                "2026-11-27T00:00:00+05:30",
                "2026-11-27T00:00:20+05:30",
                "2026-11-27T00:00:40+05:30",
                "2026-11-27T00:01:00+05:30",
            ],
            "across the local midnight"
        );
        assert_eq!(
            next("15,45 30 1 * * *", "UTC", "2026-11-26T01:30:15Z"),
            "2026-11-26T01:30:45+00:00"
        );
        // Through New York's spring-forward gap, a time of the skipped hour runs an hour
        // later, its seconds with it.
        assert_eq!(
            next("10 30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z"),
            "2026-03-08T03:30:10-04:00"
        );
    }

    #[test]
    fn a_long_window_is_walked_once() {
        // A day of every-second times (an outage of a day) is listed in one pass.
        let tz = time_zone("UTC").unwrap();
        let s: Schedule = "* * * * * *".parse().unwrap();
        let day = s.between(
            at("2026-11-25T00:00:00Z"),
            at("2026-11-26T00:00:00Z"),
            &tz,
            200_000,
        );
        assert_eq!(day.len(), 86_400);
        assert!(day.windows(2).all(|w| w[0] < w[1]));
        let first = s.between(
            at("2026-11-25T00:00:00Z"),
            at("2026-11-26T00:00:00Z"),
            &tz,
            10,
        );
        assert_eq!(first, day[..10]);
    }

    #[test]
    fn rare_schedules_are_found_years_ahead() {
        let tz = time_zone("UTC").unwrap();
        let s: Schedule = "0 0 29 2 *".parse().unwrap();
        let t = s.next_after(at("2026-03-01T00:00:00Z"), &tz).unwrap();
        assert_eq!(rfc3339_in(t, &tz), "2028-02-29T00:00:00+00:00");
        let never: Schedule = "0 0 31 2 *".parse().unwrap();
        assert_eq!(never.next_after(at("2026-03-01T00:00:00Z"), &tz), None);
    }
}
