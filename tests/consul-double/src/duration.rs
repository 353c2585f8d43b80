//! Go `time.Duration` text: parsing (`time.ParseDuration`) and printing
//! (`Duration.String`). Pure functions, no I/O.
//!
//! Consul reads every duration on the wire with Go's parser: blocking-query
//! `wait` (`2.5s`, `1000ms`, `9.9986s`), session `ttl` (`"15.0s"`) and
//! `lockdelay` (SPEC.md §1.4, §3.6). Its error texts print durations
//! with Go's formatter (`[10s=24h0m0s]`, §3.5), so both directions must match
//! Go byte for byte.

use std::time::Duration;

/// Parses Go duration text into signed nanoseconds, with Go's error texts.
pub fn parse_go_duration_ns(s: &str) -> Result<i64, String> {
    let orig = s;
    let invalid = || format!("time: invalid duration \"{orig}\"");
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    // Go special-cases a bare "0" (no unit needed).
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration \"{orig}\""));
        }
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit \"{unit}\" in duration \"{orig}\""
                ))
            }
        };
        let int_val: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut v = int_val.checked_mul(unit_ns).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            // Like Go, digits beyond what can change the result are dropped.
            let mut scale: u128 = 1;
            let mut frac: u128 = 0;
            for d in frac_part.bytes().take(30) {
                frac = frac * 10 + u128::from(d - b'0');
                scale *= 10;
            }
            v += frac * unit_ns / scale;
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > 1u128 << 63 {
            return Err(invalid());
        }
        rest = after;
    }
    if neg {
        Ok((total as i128).wrapping_neg() as i64)
    } else if total > i64::MAX as u128 {
        Err(invalid())
    } else {
        Ok(total as i64)
    }
}

/// Parses Go duration text into a non-negative `Duration` (negative → zero).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let ns = parse_go_duration_ns(s)?;
    Ok(Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
}

/// Formats like Go's `time.Duration.String()`: `10s`, `1m30s`, `24h0m0s`,
/// `1.5s`, `500ms`, `0s`.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    if ns < 1_000_000_000 {
        let (unit_ns, unit) = if ns < 1_000 {
            (1, "ns")
        } else if ns < 1_000_000 {
            (1_000, "\u{b5}s")
        } else {
            (1_000_000, "ms")
        };
        return format!("{}{unit}", fixed(ns, unit_ns));
    }
    let h = ns / 3_600_000_000_000;
    let rem = ns % 3_600_000_000_000;
    let m = rem / 60_000_000_000;
    let s_ns = rem % 60_000_000_000;
    let secs = fixed(s_ns, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `value/unit` as a decimal with trailing zeros (and a bare dot) trimmed.
fn fixed(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_clients_send() {
        // Patroni: wait=9.9986s, ttl "15.0s"; vip-manager: wait=1000ms (§1, §2).
        assert_eq!(parse_go_duration_ns("9.9986s"), Ok(9_998_600_000));
        assert_eq!(parse_go_duration_ns("15.0s"), Ok(15_000_000_000));
        assert_eq!(parse_go_duration_ns("1000ms"), Ok(1_000_000_000));
        assert_eq!(parse_go_duration_ns("2.5s"), Ok(2_500_000_000));
        assert_eq!(parse_go_duration_ns("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration_ns("0.001s"), Ok(1_000_000));
        assert_eq!(parse_go_duration_ns("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_go_duration_ns("5us"), Ok(5_000));
        assert_eq!(parse_go_duration_ns("5\u{b5}s"), Ok(5_000));
        assert_eq!(parse_go_duration_ns("0"), Ok(0));
        assert_eq!(parse_go_duration_ns("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse_go_duration_ns(".5s"), Ok(500_000_000));
    }

    #[test]
    fn rejects_like_go() {
        assert_eq!(
            parse_go_duration_ns(""),
            Err("time: invalid duration \"\"".to_string())
        );
        assert_eq!(
            parse_go_duration_ns("abc"),
            Err("time: invalid duration \"abc\"".to_string())
        );
        assert_eq!(
            parse_go_duration_ns("10"),
            Err("time: missing unit in duration \"10\"".to_string())
        );
        assert_eq!(
            parse_go_duration_ns("10x"),
            Err("time: unknown unit \"x\" in duration \"10x\"".to_string())
        );
        assert!(parse_go_duration_ns("99999999999999h").is_err());
    }

    #[test]
    fn formats_like_go() {
        let f = |ns: u64| format_go_duration(Duration::from_nanos(ns));
        assert_eq!(f(0), "0s");
        assert_eq!(f(10_000_000_000), "10s");
        assert_eq!(f(1_000_000_000), "1s");
        assert_eq!(f(1_500_000_000), "1.5s");
        assert_eq!(f(500_000_000), "500ms");
        assert_eq!(f(1_500), "1.5\u{b5}s");
        assert_eq!(f(7), "7ns");
        assert_eq!(f(60_000_000_000), "1m0s");
        assert_eq!(f(90_000_000_000), "1m30s");
        assert_eq!(f(86_400_000_000_000), "24h0m0s");
    }
}
