//! The rendered metrics as samples, for the dashboard's JSON (the clusters' gauges a scrape
//! refreshes first are `upstream::gauges`).

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (as rendered by our exporter) into samples; comment and
/// malformed lines are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let (labels, value_text) = if let Some(inner) = rest.strip_prefix('{') {
        let (labels, after) = parse_labels(inner)?;
        (labels, after)
    } else {
        (BTreeMap::new(), rest)
    };
    let value_text = value_text.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"}` -> the labels and what follows the closing brace.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        let mut chars = text[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break eq + 1 + i + 1,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.insert(key, value);
        text = &text[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_format_parses_with_escapes_and_infinities() {
        let text = "# TYPE x counter\n\
            switchyard_requests_total{listener=\"a\",route=\"q\\\"uote\"} 12\n\
            up 1\n\
            h_bucket{le=\"+Inf\"} 3\n\
            h_sum 0.5\n\
            broken{x=1} 2\n";
        let all = samples(text);
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all[0].name, "switchyard_requests_total");
        assert_eq!(all[0].labels["route"], "q\"uote");
        assert_eq!(all[0].value, 12.0);
        assert_eq!(all[1].name, "up");
        assert_eq!(all[2].labels["le"], "+Inf");
        assert_eq!(all[3].value, 0.5);
    }
}
