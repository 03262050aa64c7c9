//! Reboot windows: `DAYS HH:MM DURATION` in a channel's time zone, e.g.
//! `Mon..Fri 04:00 2h`, `Sat,Sun 22:30 90m`, `* 03:00 1h30m`.
//!
//! DAYS is `*` (every day), a day (`Mon`), a range (`Mon..Fri`, wrapping
//! allowed: `Fri..Mon`) or a comma list of those. A window opens at HH:MM
//! local time on each listed day and lasts DURATION (`2h`, `45m`, `1h30m`,
//! at most 7 days), so it may run past midnight. Pure: the caller gives the time.

use chrono::{DateTime, Datelike, Days, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// The longest window.
const MAX_DURATION_MINUTES: i64 = 7 * 24 * 60;

/// A parsed reboot window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Days the window opens on (Monday = index 0).
    days: [bool; 7],
    /// Local opening time.
    start: NaiveTime,
    /// How long it stays open.
    duration: chrono::Duration,
}

/// Why a window or time zone is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The window's text is malformed.
    #[error("window {window:?}: {why} (expected e.g. \"Mon..Fri 04:00 2h\")")]
    Malformed {
        /// The window as given.
        window: String,
        /// What is wrong.
        why: String,
    },
    /// Not an IANA time zone name.
    #[error(
        "unknown time zone {0:?} (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")"
    )]
    TimeZone(String),
}

fn weekday(name: &str) -> Option<Weekday> {
    name.parse::<Weekday>().ok()
}

fn parse_days(spec: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if spec == "*" {
        return Ok([true; 7]);
    }
    for part in spec.split(',') {
        if let Some((from, to)) = part.split_once("..") {
            let from = weekday(from).ok_or_else(|| format!("{from:?} is not a day"))?;
            let to = weekday(to).ok_or_else(|| format!("{to:?} is not a day"))?;
            let mut d = from;
            loop {
                days[d.num_days_from_monday() as usize] = true;
                if d == to {
                    break;
                }
                d = d.succ();
            }
        } else {
            let d = weekday(part).ok_or_else(|| format!("{part:?} is not a day"))?;
            days[d.num_days_from_monday() as usize] = true;
        }
    }
    Ok(days)
}

fn parse_duration(spec: &str) -> Result<chrono::Duration, String> {
    let mut minutes: i64 = 0;
    let mut number = String::new();
    let mut saw_unit = false;
    for c in spec.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number
            .parse()
            .map_err(|_| format!("duration {spec:?} needs a number before {c:?}"))?;
        number.clear();
        let per = match c {
            'h' => 60,
            'm' => 1,
            _ => return Err(format!("duration {spec:?}: unit {c:?} is not h or m")),
        };
        minutes = minutes.saturating_add(n.saturating_mul(per));
        saw_unit = true;
    }
    if !number.is_empty() || !saw_unit {
        return Err(format!("duration {spec:?} must end in h or m"));
    }
    if minutes <= 0 || minutes > MAX_DURATION_MINUTES {
        return Err(format!("duration {spec:?} must be between 1m and 168h"));
    }
    Ok(chrono::Duration::minutes(minutes))
}

impl Window {
    /// Parses `DAYS HH:MM DURATION`.
    pub fn parse(text: &str) -> Result<Window, WindowError> {
        let malformed = |why: String| WindowError::Malformed {
            window: text.to_owned(),
            why,
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [days, start, duration] = parts[..] else {
            return Err(malformed(
                "needs three parts: days, start time, duration".into(),
            ));
        };
        let days = parse_days(days).map_err(malformed)?;
        let start = NaiveTime::parse_from_str(start, "%H:%M")
            .map_err(|_| malformed(format!("{start:?} is not HH:MM")))?;
        let duration = parse_duration(duration).map_err(malformed)?;
        Ok(Window {
            days,
            start,
            duration,
        })
    }

    /// True when `now` falls inside an opening of this window in `tz`.
    pub fn contains(&self, tz: Tz, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&tz);
        let back = self.duration.num_days() as u64 + 1;
        (0..=back).any(|days_ago| {
            let Some(date) = local.date_naive().checked_sub_days(Days::new(days_ago)) else {
                return false;
            };
            if !self.days[date.weekday().num_days_from_monday() as usize] {
                return false;
            }
            // A start inside a DST gap does not exist locally: that day's window is skipped.
            let Some(open) = tz
                .from_local_datetime(&date.and_time(self.start))
                .earliest()
            else {
                return false;
            };
            let open = open.with_timezone(&Utc);
            open <= now && now < open + self.duration
        })
    }
}

/// Parses an IANA time zone name.
pub fn parse_tz(name: &str) -> Result<Tz, WindowError> {
    name.parse::<Tz>()
        .map_err(|_| WindowError::TimeZone(name.to_owned()))
}

/// True when `now` is inside any of `windows` in `tz`; no windows means always.
/// Windows that do not parse never match (they are refused when stored).
pub fn open_at(windows: &[String], timezone: &str, now: DateTime<Utc>) -> bool {
    if windows.is_empty() {
        return true;
    }
    let Ok(tz) = parse_tz(timezone) else {
        return false;
    };
    windows
        .iter()
        .filter_map(|w| Window::parse(w).ok())
        .any(|w| w.contains(tz, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn w(s: &str) -> Window {
        Window::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn windows_parse() {
        let x = w("Mon..Fri 04:00 2h");
        assert_eq!(x.days, [true, true, true, true, true, false, false]);
        assert_eq!(x.duration, chrono::Duration::hours(2));
        assert_eq!(
            w("Fri..Mon 00:00 1h30m").days,
            [true, false, false, false, true, true, true]
        );
        assert_eq!(
            w("Sat,Sun 22:30 90m").days,
            [false, false, false, false, false, true, true]
        );
        assert_eq!(w("* 03:00 45m").days, [true; 7]);
        for bad in [
            "",
            "Mon 04:00",
            "Funday 04:00 2h",
            "Mon 25:00 2h",
            "Mon 04:00 2",
            "Mon 04:00 2d",
            "Mon 04:00 0m",
            "Mon 04:00 200h",
            "Mon..Xyz 04:00 1h",
            "Mon 04:00 2h extra",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_tz("Europe/Berlin").is_ok());
        assert!(parse_tz("Mars/Olympus").is_err());
    }

    #[test]
    fn windows_match_in_their_time_zone() -> Result<(), WindowError> {
        let x = w("Mon..Fri 04:00 2h");
        let berlin = parse_tz("Europe/Berlin")?;
        // 2024-06-03 is a Monday; Berlin is UTC+2 in summer.
        assert!(x.contains(berlin, at("2024-06-03T02:30:00Z")));
        assert!(!x.contains(berlin, at("2024-06-03T04:30:00Z")));
        assert!(x.contains(parse_tz("UTC")?, at("2024-06-03T04:30:00Z")));
        // Saturday: closed.
        assert!(!x.contains(berlin, at("2024-06-08T02:30:00Z")));
        // Across midnight: Friday 23:00 + 3h is open early on Saturday.
        let late = w("Fri 23:00 3h");
        assert!(late.contains(parse_tz("UTC")?, at("2024-06-08T01:00:00Z")));
        assert!(!late.contains(parse_tz("UTC")?, at("2024-06-08T02:00:00Z")));
        Ok(())
    }

    #[test]
    fn no_windows_means_always() {
        let now = at("2024-06-08T12:00:00Z");
        assert!(open_at(&[], "UTC", now));
        assert!(!open_at(&["Mon 04:00 1h".into()], "UTC", now));
        assert!(open_at(
            &["Mon 04:00 1h".into(), "Sat 11:00 2h".into()],
            "UTC",
            now
        ));
    }
}
