//! The one reading of a number of seconds and of a byte size, shared by the flags, the config
//! file and the clients: the same text means the same value wherever it is written.

use std::time::Duration;

use crate::error::{Error, Result};

/// A flag in seconds as a Duration; negative, NaN or absurd values are usage errors.
pub fn seconds(flag: &str, v: f64, zero_ok: bool) -> Result<Duration> {
    if !v.is_finite() || v < 0.0 || (!zero_ok && v == 0.0) || v > 1e9 {
        let least = if zero_ok { "0 or more" } else { "more than 0" };
        // 1e300 is shown as 1e300, not as its 301 digits.
        let shown = if v.is_finite() && v.abs() < 1e9 {
            v.to_string()
        } else {
            format!("{v:e}")
        };
        let most = if v > 1e9 { " (at most 1e9)" } else { "" };
        return Err(Error::Usage(format!(
            "{flag} {shown} is not a number of seconds; give {least}{most}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `"8192"`, `"8k"`, `"8K"`, `"8KiB"`, `"16kb"`, `"1m"`, `"1g"` → bytes (binary multiples, as
/// nginx's `8k`), as whichever integer type the caller keeps it in (a clap value parser as
/// `size::<usize>`).
pub fn size<T: TryFrom<u64>>(s: &str) -> std::result::Result<T, String> {
    let too_large = || format!("`{s}` is too large a size");
    let not_a_size =
        || format!("`{s}` is not a size (a number of bytes, optionally with k, m or g)");
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    // Digits that do not fit in 64 bits are too large; no digits at all are not a size.
    let n: u64 = num.parse().map_err(|_| {
        if digits > 0 {
            too_large()
        } else {
            not_a_size()
        }
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(not_a_size()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(too_large)?;
    T::try_from(bytes).map_err(|_| too_large())
}

/// `bytes` as [`size`] reads it back, in the largest unit that divides it (`8k`, `1m`), as
/// `--help` shows a default.
pub fn show_size(bytes: u64) -> String {
    for (unit, mult) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if bytes >= mult && bytes % mult == 0 {
            return format!("{}{unit}", bytes / mult);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_nginx_sizes() {
        assert_eq!(size::<u64>("8k"), Ok(8192));
        assert_eq!(size::<u64>("8KiB"), Ok(8192));
        assert_eq!(size::<u64>("16kb"), Ok(16384));
        assert_eq!(size::<u64>("1m"), Ok(1 << 20));
        assert_eq!(size::<u64>("1MiB"), Ok(1 << 20));
        assert_eq!(size::<u64>("1g"), Ok(1 << 30));
        assert_eq!(size::<u64>(" 123 "), Ok(123));
        assert!(size::<u64>("12x").unwrap_err().contains("is not a size"));
        assert!(size::<u64>("1.5M").is_err());
        assert!(size::<u64>("k").unwrap_err().contains("is not a size"));
        assert!(size::<u64>("99999999999g")
            .unwrap_err()
            .contains("too large"));
        assert!(size::<u64>("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn a_size_too_large_for_its_type_is_refused_not_cut() {
        assert_eq!(size::<u32>("4194303k"), Ok(4_294_966_272));
        assert!(size::<u32>("4g").unwrap_err().contains("too large"));
        assert_eq!(size::<usize>("64K"), Ok(65536));
    }

    #[test]
    fn a_shown_size_reads_back_as_itself() {
        for (n, shown) in [
            (0, "0"),
            (1000, "1000"),
            (8192, "8k"),
            (1 << 20, "1m"),
            (64 << 20, "64m"),
            (3 << 30, "3g"),
            ((1 << 20) + 1, "1048577"),
        ] {
            assert_eq!(show_size(n), shown);
            assert_eq!(size::<u64>(shown), Ok(n));
        }
    }

    #[test]
    fn seconds_hold_their_edges() {
        assert_eq!(seconds("--x", 0.0, true).unwrap(), Duration::ZERO);
        assert_eq!(
            seconds("--x", 1e9, false).unwrap(),
            Duration::from_secs(1_000_000_000)
        );
        let e = seconds("--x", 0.0, false).unwrap_err().to_string();
        assert_eq!(e, "--x 0 is not a number of seconds; give more than 0");
        let e = seconds("--x", 1e300, true).unwrap_err().to_string();
        assert_eq!(
            e,
            "--x 1e300 is not a number of seconds; give 0 or more (at most 1e9)"
        );
        assert!(seconds("--x", -1.0, true).is_err());
        assert!(seconds("--x", f64::NAN, true).is_err());
    }
}
