//! Durations (`"250ms"`, `"5s"`) and sizes (`512`, `"64KiB"`) as the config file writes them.
//! Pure string → value; the keys and their bounds are [`super::validate`]'s business.

use std::time::Duration;

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;
pub(super) const GIB: u64 = 1024 * MIB;

/// `bytes` the way an error message should show a bound: `64KiB`, `1 byte`, `300 bytes`.
pub(super) fn human_size(bytes: usize) -> String {
    let b = bytes as u64;
    match b {
        1 => "1 byte".to_owned(),
        _ if b >= GIB && b.is_multiple_of(GIB) => format!("{}GiB", b / GIB),
        _ if b >= MIB && b.is_multiple_of(MIB) => format!("{}MiB", b / MIB),
        _ if b >= KIB && b.is_multiple_of(KIB) => format!("{}KiB", b / KIB),
        _ => format!("{b} bytes"),
    }
}

/// Splits `"64KiB"` into `("64", "KiB")`: the leading ASCII digits and the rest.
fn split_number(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

/// `"250ms"`, `"5s"`, `"2m"`, `"1h"`: an integer and a unit, nothing else.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(s);
    let bad = || {
        format!(
            "{s:?} is not a duration: write an integer and a unit, ms, s, m or h \
             (e.g. \"250ms\", \"5s\", \"2m\", \"1h\")"
        )
    };
    let too_large = || format!("{s:?} is too large");
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(too_large)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(bad()),
    }
}

/// `"512"`, `"512B"`, `"64KiB"`, `"1MiB"`, `"1GiB"` (1024-based) or `"64KB"`, `"1MB"`, `"1GB"`
/// (1000-based): an integer and an optional unit, nothing else.
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let (number, unit) = split_number(s);
    let bad = || {
        format!(
            "{s:?} is not a size: write an integer of bytes, optionally followed by B, KiB, MiB, GiB \
             (1024-based) or KB, MB, GB (1000-based), e.g. \"64KiB\""
        )
    };
    let too_large = || format!("{s:?} is too large");
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let per = match unit {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        _ => return Err(bad()),
    };
    n.checked_mul(per).ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_an_integer_and_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "", "5", "s", "5 s", " 5s", "5s ", "1.5s", "-5s", "+5s", "5S", "5sec", "5d", "5us",
            "1h30m",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("ms, s, m or h"), "{bad:?}: {e}");
        }
        assert_eq!(
            parse_duration("99999999999999999999s").unwrap_err(),
            "\"99999999999999999999s\" is too large"
        );
        assert_eq!(
            parse_duration("18446744073709551615h").unwrap_err(),
            "\"18446744073709551615h\" is too large"
        );
    }

    #[test]
    fn sizes_are_bytes_with_an_optional_unit() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        for bad in [
            "", "KiB", "64 KiB", "64k", "64kb", "64kib", "64K", "1.5MiB", "-1", "1TiB", "64KiBs",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(
                e.contains("KiB, MiB, GiB") && e.contains("KB, MB, GB"),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            parse_size("18446744073709551615KiB").unwrap_err(),
            "\"18446744073709551615KiB\" is too large"
        );
    }
}
