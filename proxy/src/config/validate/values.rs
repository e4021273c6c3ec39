//! Single values checked where they are written: addresses, durations, sizes, integers in
//! range, one of a fixed set of names — each error at the value's line.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

// Sizes in config (plugin memory, request bodies) take the range of a plugin's memory cap.
use crate::config::duration;
use crate::config::error::Diagnostics;
// Sizes in config (plugin memory, request bodies) take the range of a plugin's memory cap.
use crate::sandbox::{MAX_MEMORY, MIN_MEMORY};

pub(super) fn socket_addr(raw: &Spanned<String>, key: &str, d: &mut Diagnostics<'_>) -> SocketAddr {
    raw.get_ref().parse().unwrap_or_else(|_| {
        d.error(
            raw.span(),
            key,
            format!(
                "{:?} is not an address to listen on; expected IP:port, e.g. \"127.0.0.1:8080\" or \"[::]:8080\"",
                raw.get_ref()
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

pub(in crate::config) fn duration(
    raw: &Spanned<String>,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Duration {
    duration::parse(raw.get_ref()).unwrap_or_else(|| {
        d.error(
            raw.span(),
            key,
            format!(
                "{:?} is not a duration; expected {}",
                raw.get_ref(),
                duration::EXPECTED
            ),
        );
        Duration::ZERO
    })
}

/// [`duration`], and no shorter than `min` (`why` says what the minimum is).
pub(super) fn duration_at_least(
    raw: &Spanned<String>,
    key: &str,
    min: Duration,
    why: &str,
    d: &mut Diagnostics<'_>,
) -> Duration {
    let Some(parsed) = duration::parse(raw.get_ref()) else {
        // Not a duration at all: `duration` says so.
        return duration(raw, key, d);
    };
    if parsed < min {
        d.error(
            raw.span(),
            key,
            format!(
                "{:?} is shorter than {min:?}, {why}; expected at least {min:?}",
                raw.get_ref()
            ),
        );
    }
    parsed
}

/// Sizes as written in config: `"32MiB"`, `"512KiB"`, `"1GiB"` or a number of bytes.
pub(super) fn memory_size(raw: &Spanned<String>, key: &str, d: &mut Diagnostics<'_>) -> usize {
    let text = raw.get_ref().trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let multiplier = match unit.trim() {
        "" | "B" => Some(1),
        "KiB" => Some(1024),
        "MiB" => Some(1024 * 1024),
        "GiB" => Some(1024 * 1024 * 1024),
        _ => None,
    };
    let bytes = number
        .parse::<usize>()
        .ok()
        .zip(multiplier)
        .and_then(|(n, m)| n.checked_mul(m));
    match bytes {
        Some(b) if (MIN_MEMORY..=MAX_MEMORY).contains(&b) => b,
        Some(_) => {
            d.error(
                raw.span(),
                key,
                format!("{text:?} is out of range, expected 64KiB to 256MiB"),
            );
            0
        }
        None => {
            d.error(
                raw.span(),
                key,
                format!("{text:?} is not a size; expected e.g. \"32MiB\" or \"512KiB\""),
            );
            0
        }
    }
}

pub(in crate::config) fn optional_duration(
    raw: &Option<Spanned<String>>,
    default: Duration,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Duration {
    raw.as_ref().map_or(default, |r| duration(r, key, d))
}

pub(in crate::config) fn int_in_range(
    raw: &Spanned<i64>,
    min: i64,
    max: i64,
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Option<usize> {
    let n = *raw.get_ref();
    if (min..=max).contains(&n) {
        usize::try_from(n).ok()
    } else {
        d.error(
            raw.span(),
            key,
            format!("{n} is out of range, expected {min} to {max}"),
        );
        None
    }
}

pub(super) fn one_of<T: Copy>(
    raw: &Spanned<String>,
    choices: &[(&str, T)],
    key: &str,
    d: &mut Diagnostics<'_>,
) -> Option<T> {
    if let Some((_, v)) = choices.iter().find(|(name, _)| *name == raw.get_ref()) {
        return Some(*v);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    d.error(
        raw.span(),
        key,
        format!(
            "unknown value {:?}, expected one of: {}",
            raw.get_ref(),
            names.join(", ")
        ),
    );
    None
}
