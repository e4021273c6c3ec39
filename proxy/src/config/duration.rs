//! Durations as written in config: `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"100us"`.

use std::time::Duration;

/// What a duration string must look like, for error messages.
pub const EXPECTED: &str = r#"a duration like "250ms", "2s", "1m" or "1h""#;

/// Parses one duration; `None` when the text is not a number followed by a known unit.
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let seconds_per_unit = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(number * seconds_per_unit).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("100us"), Some(Duration::from_micros(100)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["", "5", "ms", "5 parsecs", "fast", "-1s", "1e9h9"] {
            assert_eq!(parse(bad), None, "{bad:?} should not parse");
        }
    }
}
