//! Building blocks for plugin configs that many plugins share, so every plugin spells a duration
//! or a host pattern the same way the proxy's own config does.

use std::time::Duration;

use serde::Deserialize;

/// A duration written as text: `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct DurationText(pub Duration);

impl TryFrom<String> for DurationText {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        parse_duration(&text).map(Self)
    }
}

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`; a bare `"0"` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: expected a number and a unit (ms, s, m, h), e.g. \"250ms\""
            ));
        }
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: {number:?} is not a number"))?;
    Duration::try_from_secs_f64(number * seconds_per_unit)
        .map_err(|_| format!("invalid duration {text:?}: out of range"))
}

/// Which request authorities a rule applies to: `"*"` (any), `"*.example.com"` (any subdomain),
/// or an exact host. Ports are ignored and matching ignores case.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HostPattern {
    /// Matches every value.
    Any,
    /// `*.example.com`, kept as `.example.com`.
    Suffix(String),
    /// Matches this value only.
    Exact(String),
}

impl TryFrom<String> for HostPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let host = text.trim().to_ascii_lowercase();
        if host == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = host.strip_prefix('*') {
            if !suffix.starts_with('.') || suffix.len() < 2 {
                return Err(format!(
                    "invalid host pattern {text:?}: a wildcard must look like \"*.example.com\""
                ));
            }
            return Ok(Self::Suffix(suffix.to_owned()));
        }
        if host.is_empty() || host.contains(['*', '/', ' ']) {
            return Err(format!("invalid host pattern {text:?}"));
        }
        Ok(Self::Exact(host_without_port(&host).to_owned()))
    }
}

impl HostPattern {
    /// Whether `authority` (with or without a port) is one of the hosts this pattern names.
    pub fn matches(&self, authority: &str) -> bool {
        let host = host_without_port(authority);
        match self {
            Self::Any => true,
            Self::Exact(exact) => host.eq_ignore_ascii_case(exact),
            Self::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// `"example.com:8080"` -> `"example.com"`; `"[::1]:80"` -> `"[::1]"`.
pub fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Checks a header name from config: RFC 9110 token characters only.
pub fn check_header_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid header name"))
    }
}

/// A percentage of requests, 0 to 100, as Istio writes them (`percent = 10.0`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Deserialize)]
#[serde(try_from = "f64")]
pub struct Percent(f64);

impl TryFrom<f64> for Percent {
    type Error = String;

    fn try_from(value: f64) -> Result<Self, String> {
        if (0.0..=100.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("{value} is not a percentage between 0 and 100"))
        }
    }
}

impl Percent {
    /// The percentage, from 0 to 100.
    pub fn value(self) -> f64 {
        self.0
    }

    /// Draws from the host's randomness: true for this percentage of calls.
    pub fn sample(self) -> bool {
        self.0 >= 100.0 || (self.0 > 0.0 && crate::random::unit() * 100.0 < self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("2").unwrap_err().contains("unit"));
        assert!(parse_duration("..s").unwrap_err().contains("not a number"));
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::try_from("MyService".to_owned()).unwrap();
        assert!(exact.matches("myservice"));
        assert!(exact.matches("myservice:8080"));
        assert!(!exact.matches("myservice.default"));
        let suffix = HostPattern::try_from("*.example.com".to_owned()).unwrap();
        assert!(suffix.matches("api.example.com:443"));
        assert!(!suffix.matches("example.com"));
        assert!(HostPattern::Any.matches("anything"));
        assert!(HostPattern::try_from("*example".to_owned()).is_err());
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn percent_bounds() {
        assert!(Percent::try_from(100.5).is_err());
        assert!(Percent::try_from(-1.0).is_err());
        assert_eq!(Percent::try_from(5.0).unwrap().value(), 5.0);
    }
}
