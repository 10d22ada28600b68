//! Request-context conditions: source networks and time windows.

use std::net::IpAddr;

use chrono::{DateTime, NaiveTime, TimeDelta, Utc, Weekday};
use ipnet::IpNet;

use super::spec::{ConditionsSpec, TimeWindowSpec};
use super::zone::{TimeZone, ZoneError};

#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub source_networks: Vec<IpNet>,
    pub time_windows: Vec<TimeWindow>,
}

#[derive(Debug, Clone)]
pub struct TimeWindow {
    days: Vec<Weekday>,
    start: NaiveTime,
    end: NaiveTime,
    zone: TimeZone,
}

impl Conditions {
    pub fn compile(spec: &ConditionsSpec) -> Result<Self, String> {
        let source_networks = spec
            .source_cidrs
            .iter()
            .map(|raw| {
                raw.parse::<IpNet>()
                    .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("conditions.source_cidrs: {raw:?} is not a CIDR or address"))
            })
            .collect::<Result<_, _>>()?;
        let time_windows = spec.time_windows.iter().map(TimeWindow::compile).collect::<Result<_, _>>()?;
        Ok(Self { source_networks, time_windows })
    }

    /// `None` (unknown address) passes only when no network is required.
    pub fn source_allowed(&self, source: Option<IpAddr>) -> bool {
        if self.source_networks.is_empty() {
            return true;
        }
        let Some(ip) = source.map(canonical_ip) else { return false };
        self.source_networks.iter().any(|net| net.contains(&ip))
    }

    pub fn time_allowed(&self, now: DateTime<Utc>) -> bool {
        self.time_windows.is_empty() || self.time_windows.iter().any(|w| w.contains(now))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as the IPv4 address they carry.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl TimeWindow {
    fn compile(spec: &TimeWindowSpec) -> Result<Self, String> {
        let parse_time = |raw: &str| {
            NaiveTime::parse_from_str(raw, "%H:%M").map_err(|_| format!("time window: {raw:?} is not HH:MM"))
        };
        let days = spec
            .days
            .iter()
            .map(|d| parse_day(d).ok_or_else(|| format!("time window: unknown day {d:?} (use mon … sun)")))
            .collect::<Result<_, _>>()?;
        let zone = TimeZone::get(&spec.zone).map_err(|error| match error {
            ZoneError::Unknown => format!("time window: unknown time zone {:?}", spec.zone),
            ZoneError::Malformed(_) => format!("time window: time zone {:?}: {error}", spec.zone),
        })?;
        Ok(Self { days, start: parse_time(&spec.start)?, end: parse_time(&spec.end)?, zone })
    }

    fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.naive_utc() + TimeDelta::seconds(i64::from(self.zone.offset_at(now.timestamp())));
        let time = local.time();
        let day = chrono::Datelike::weekday(&local);
        let (in_window, window_day) = if self.start < self.end {
            (time >= self.start && time < self.end, day)
        } else if time >= self.start {
            // Past midnight windows belong to the day they start on.
            (true, day)
        } else {
            (time < self.end, day.pred())
        };
        in_window && (self.days.is_empty() || self.days.contains(&window_day))
    }
}

fn parse_day(raw: &str) -> Option<Weekday> {
    Some(match raw.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[&str], start: &str, end: &str, zone: &str) -> Conditions {
        Conditions::compile(&ConditionsSpec {
            source_cidrs: vec![],
            time_windows: vec![TimeWindowSpec {
                days: days.iter().map(|d| (*d).to_owned()).collect(),
                start: start.into(),
                end: end.into(),
                zone: zone.into(),
            }],
        })
        .unwrap()
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn office_hours_in_berlin() {
        let c = window(&["mon", "tue", "wed", "thu", "fri"], "08:00", "18:00", "Europe/Berlin");
        // 2026-11-25 is a Wednesday; Berlin is UTC+1 in November.
        assert!(c.time_allowed(at("2026-11-25T07:00:00Z")), "08:00 local is inside");
        assert!(!c.time_allowed(at("2026-11-25T06:59:59Z")), "07:59 local is outside");
        assert!(!c.time_allowed(at("2026-11-25T17:00:00Z")), "18:00 local is outside (end exclusive)");
        assert!(!c.time_allowed(at("2026-11-28T10:00:00Z")), "Saturday is outside");
    }

    #[test]
    fn offsets_follow_daylight_saving_time_and_half_hour_zones() {
        let berlin = window(&[], "08:00", "09:00", "Europe/Berlin");
        // Berlin is UTC+2 in summer: 08:00 local is 06:00Z.
        assert!(berlin.time_allowed(at("2026-07-01T06:00:00Z")));
        assert!(!berlin.time_allowed(at("2026-07-01T07:00:00Z")));
        // Clocks went forward at 01:00Z on 2026-03-29: the day before is still UTC+1.
        assert!(berlin.time_allowed(at("2026-03-28T07:30:00Z")));
        assert!(berlin.time_allowed(at("2026-03-29T06:30:00Z")));
        assert!(!berlin.time_allowed(at("2026-03-29T07:30:00Z")));
        let kolkata = window(&[], "09:00", "10:00", "Asia/Kolkata");
        // UTC+05:30 all year.
        assert!(kolkata.time_allowed(at("2026-11-25T03:30:00Z")));
        assert!(!kolkata.time_allowed(at("2026-11-25T03:29:59Z")));
    }

    #[test]
    fn window_past_midnight_belongs_to_its_start_day() {
        let c = window(&["fri"], "22:00", "02:00", "UTC");
        assert!(c.time_allowed(at("2026-11-27T23:00:00Z")), "Friday 23:00");
        assert!(c.time_allowed(at("2026-11-28T01:00:00Z")), "Saturday 01:00 is Friday's window");
        assert!(!c.time_allowed(at("2026-11-28T23:00:00Z")), "Saturday 23:00");
    }

    #[test]
    fn source_networks() {
        let c = Conditions::compile(&ConditionsSpec {
            source_cidrs: vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "2001:db8::/32".into()],
            time_windows: vec![],
        })
        .unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(c.source_allowed(ip("10.1.2.3")));
        assert!(c.source_allowed(ip("::ffff:10.1.2.3")), "v4-mapped v6");
        assert!(c.source_allowed(ip("192.0.2.7")));
        assert!(!c.source_allowed(ip("192.0.2.8")));
        assert!(c.source_allowed(ip("2001:db8::1")));
        assert!(!c.source_allowed(None), "unknown source fails closed");
        assert!(Conditions::default().source_allowed(None));
    }

    #[test]
    fn load_errors() {
        let bad = |cidr: &str| {
            Conditions::compile(&ConditionsSpec { source_cidrs: vec![cidr.into()], time_windows: vec![] })
                .is_err()
        };
        assert!(bad("10.0.0.0/33"));
        assert!(bad("example.com"));
        let tw = |start: &str, zone: &str, day: &str| {
            Conditions::compile(&ConditionsSpec {
                source_cidrs: vec![],
                time_windows: vec![TimeWindowSpec {
                    days: vec![day.into()],
                    start: start.into(),
                    end: "10:00".into(),
                    zone: zone.into(),
                }],
            })
            .is_err()
        };
        assert!(tw("25:00", "UTC", "mon"));
        assert!(tw("08:00", "Mars/Olympus", "mon"));
        assert!(tw("08:00", "UTC", "funday"));
    }
}
