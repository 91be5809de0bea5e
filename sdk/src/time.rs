//! Calendar dates and RFC 3339 timestamps, without a time-zone database.
//!
//! Payments are dated and settled in India Standard Time, a fixed UTC+05:30 with no
//! daylight saving, so a fixed offset is exact. Dates use the proleptic Gregorian
//! calendar, converted to and from days since 1970-01-01.

use std::fmt;
use std::str::FromStr;

/// India Standard Time, in minutes east of UTC.
pub const IST_OFFSET_MINUTES: i32 = 5 * 60 + 30;

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Days since 1970-01-01 (negative before).
    pub fn to_days(self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let month_from_march = (m + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + d - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        Date {
            year: year as i32,
            month: month as u8,
            day: day as u8,
        }
    }

    /// The previous calendar day.
    pub fn pred(self) -> Date {
        Date::from_days(self.to_days() - 1)
    }

    /// The calendar date at `unix_millis` in a zone `offset_minutes` east of UTC.
    pub fn at(unix_millis: i64, offset_minutes: i32) -> Date {
        let local_ms = unix_millis + i64::from(offset_minutes) * 60_000;
        Date::from_days(local_ms.div_euclid(86_400_000))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Why a date or timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct TimeParseError {
    pub text: String,
    pub expected: &'static str,
}

impl FromStr for Date {
    type Err = TimeParseError;

    /// Reads `YYYY-MM-DD` and rejects dates that do not exist (`2026-02-30`).
    fn from_str(s: &str) -> Result<Date, TimeParseError> {
        let err = || TimeParseError {
            text: s.to_string(),
            expected: "a date in the form YYYY-MM-DD",
        };
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, TimeParseError> {
            let part = &s[r];
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().map_err(|_| err())
            } else {
                Err(err())
            }
        };
        let date = Date {
            year: num(0..4)? as i32,
            month: num(5..7)? as u8,
            day: num(8..10)? as u8,
        };
        if !(1..=12).contains(&date.month)
            || date.day == 0
            || Date::from_days(date.to_days()) != date
        {
            return Err(err());
        }
        Ok(date)
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats a time as RFC 3339 with milliseconds in the given zone:
/// `2026-11-26T14:05:09.123+05:30`.
pub fn format_rfc3339(unix_millis: i64, offset_minutes: i32) -> String {
    let local = unix_millis + i64::from(offset_minutes) * 60_000;
    let date = Date::from_days(local.div_euclid(86_400_000));
    let ms_of_day = local.rem_euclid(86_400_000);
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    let zone = if offset_minutes == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let a = offset_minutes.unsigned_abs();
        format!("{sign}{:02}:{:02}", a / 60, a % 60)
    };
    format!("{date}T{h:02}:{m:02}:{s:02}.{ms:03}{zone}")
}

/// Reads an RFC 3339 timestamp (`2026-11-26T01:00:00+05:30`, `...Z`, optional fraction)
/// into milliseconds since the Unix epoch and the offset it was written in.
pub fn parse_rfc3339(s: &str) -> Result<(i64, i32), TimeParseError> {
    let err = || TimeParseError {
        text: s.to_string(),
        expected: "an RFC 3339 timestamp such as 2026-11-26T01:00:00+05:30",
    };
    if s.len() < 20 || !s.is_char_boundary(10) {
        return Err(err());
    }
    let date: Date = s[..10].parse().map_err(|_| err())?;
    let rest = &s[10..];
    let rest = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix('t'))
        .or_else(|| rest.strip_prefix(' '))
        .ok_or_else(err)?;
    let b = rest.as_bytes();
    if b.len() < 9 || b[2] != b':' || b[5] != b':' {
        return Err(err());
    }
    let two = |i: usize| -> Result<i64, TimeParseError> {
        rest.get(i..i + 2)
            .filter(|p| p.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|p| p.parse().ok())
            .ok_or_else(err)
    };
    let (h, m, sec) = (two(0)?, two(3)?, two(6)?);
    if h > 23 || m > 59 || sec > 60 {
        return Err(err());
    }
    let mut i = 8;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(err());
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let zone = &rest[i..];
    let offset: i32 = match zone {
        "Z" | "z" => 0,
        _ if zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && &zone[3..4] == ":" =>
        {
            let zh: i32 = zone[1..3].parse().map_err(|_| err())?;
            let zm: i32 = zone[4..6].parse().map_err(|_| err())?;
            if zh > 23 || zm > 59 {
                return Err(err());
            }
            let v = zh * 60 + zm;
            if zone.starts_with('-') { -v } else { v }
        }
        _ => return Err(err()),
    };
    let local_ms = date.to_days() * 86_400_000 + (h * 3600 + m * 60 + sec) * 1000 + millis;
    Ok((local_ms - i64::from(offset) * 60_000, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_over_four_centuries() {
        for days in (-200_000..200_000).step_by(7) {
            assert_eq!(Date::from_days(days).to_days(), days);
        }
        assert_eq!(Date::from_days(0).to_string(), "1970-01-01");
        assert_eq!("2000-03-01".parse::<Date>().unwrap().to_days(), 11_017);
    }

    #[test]
    fn invalid_dates_are_rejected() {
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "26-01-01",
            "2026-1-01",
            "2026-01-32",
        ] {
            assert!(bad.parse::<Date>().is_err(), "{bad}");
        }
        assert!("2024-02-29".parse::<Date>().is_ok());
    }

    #[test]
    fn pred_crosses_months_and_years() {
        let d: Date = "2026-01-01".parse().unwrap();
        assert_eq!(d.pred().to_string(), "2025-12-31");
        let d: Date = "2024-03-01".parse().unwrap();
        assert_eq!(d.pred().to_string(), "2024-02-29");
    }

    #[test]
    fn ist_dates_change_at_local_midnight() {
        // 2026-11-25T18:29:59.999Z is 23:59:59.999 IST on the 25th; a millisecond later it
        // is the 26th in India.
        let (t, _) = parse_rfc3339("2026-11-25T18:29:59.999Z").unwrap();
        assert_eq!(Date::at(t, IST_OFFSET_MINUTES).to_string(), "2026-11-25");
        assert_eq!(
            Date::at(t + 1, IST_OFFSET_MINUTES).to_string(),
            "2026-11-26"
        );
    }

    #[test]
    fn rfc3339_round_trips_with_offsets() {
        let (t, off) = parse_rfc3339("2026-11-26T01:00:00+05:30").unwrap();
        assert_eq!(off, 330);
        assert_eq!(format_rfc3339(t, 0), "2026-11-25T19:30:00.000Z");
        assert_eq!(format_rfc3339(t, 330), "2026-11-26T01:00:00.000+05:30");
        let (t2, _) = parse_rfc3339("2026-11-25T19:30:00.5Z").unwrap();
        assert_eq!(t2 - t, 500);
        for bad in [
            "2026-11-26",
            "2026-11-26T25:00:00Z",
            "2026-11-26T01:00:00",
            "2026-11-26T01:00:00+0530",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
