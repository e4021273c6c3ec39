//! Where a value sits in a config file, for mistakes found after the file loaded: a plugin that
//! refuses its `[plugin.config]` names a path inside it, and the error should name the line.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, line_and_column};

/// One step into a TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Steps of a dotted path such as `rules[0].backends[1].weight` (serde_path_to_error's form;
/// `.` is the root).
pub fn steps(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut indices) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            steps.push(Step::Key(key.to_owned()));
        }
        while let Some(rest) = indices.strip_prefix('[') {
            let Some((index, after)) = rest.split_once(']') else {
                break;
            };
            match index.parse() {
                Ok(i) => steps.push(Step::Index(i)),
                Err(_) => steps.push(Step::Key(index.trim_matches('"').to_owned())),
            }
            indices = after;
        }
    }
    steps
}

/// The byte span of the deepest value along `steps` that `source` has (the whole value when
/// the path ends inside it, e.g. at a field that is missing).
pub fn deepest_span(source: &str, steps: &[Step]) -> Option<Range<usize>> {
    let document = DeTable::parse(source).ok()?;
    let mut span = None;
    let mut table = Some(document.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for step in steps {
        let next = match (step, table, value) {
            (Step::Key(key), Some(t), _) => t.get(key.as_str()),
            (Step::Index(i), _, Some(DeValue::Array(items))) => items.get(*i),
            _ => None,
        };
        let Some(next) = next else {
            break;
        };
        span = Some(next.span());
        value = Some(next.get_ref());
        table = match next.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    span
}

/// An error about the value at `steps` in `file` (read again from disk: the config keeps only
/// its path), at its line when found, else at line 1.
pub fn error_at(file: &Path, steps: &[Step], key: String, message: String) -> ConfigError {
    let source = std::fs::read_to_string(file).unwrap_or_default();
    let at = deepest_span(&source, steps).map_or(0, |span| span.start);
    let (line, column) = line_and_column(&source, at);
    ConfigError {
        file: file.to_path_buf(),
        line,
        column,
        key,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "[[plugin]]\nname = \"a\"\n\n[[plugin]]\nname = \"canary\"\n[plugin.config]\n[[plugin.config.rules]]\nhosts = [\"*\"]\nbackends = [{ cluster = \"v1\", weight = \"x\" }]\n";

    fn line_of(steps: &[Step]) -> Option<usize> {
        deepest_span(SOURCE, steps).map(|span| line_and_column(SOURCE, span.start).0)
    }

    #[test]
    fn a_path_from_serde_becomes_steps() {
        assert_eq!(
            steps("rules[0].backends[12].weight"),
            vec![
                Step::Key("rules".into()),
                Step::Index(0),
                Step::Key("backends".into()),
                Step::Index(12),
                Step::Key("weight".into()),
            ]
        );
        assert_eq!(steps("."), vec![]);
    }

    #[test]
    fn a_value_inside_plugin_config_is_found_at_its_line() {
        let mut path = vec![
            Step::Key("plugin".into()),
            Step::Index(1),
            Step::Key("config".into()),
        ];
        path.extend(steps("rules[0].backends[0].weight"));
        assert_eq!(line_of(&path), Some(9));
        let at = deepest_span(SOURCE, &path).unwrap();
        assert_eq!(&SOURCE[at], "\"x\"");
    }

    #[test]
    fn a_missing_field_points_at_the_deepest_value_that_exists() {
        let mut path = vec![
            Step::Key("plugin".into()),
            Step::Index(1),
            Step::Key("config".into()),
        ];
        path.extend(steps("rules[0].greeting"));
        assert_eq!(line_of(&path), Some(7), "the rule's table");
        assert_eq!(line_of(&[Step::Key("nothing".into())]), None);
    }
}
