//! The Prometheus text format (0.0.4) as the tests read `/metrics`: a
//! strict parser ([`parse_exposition`]), lookups by name and labels, and the
//! scrape of a [`Server`]'s admin port.

use std::collections::BTreeMap;

use reqwest::Method;

use crate::Server;

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name → type.
    pub types: BTreeMap<String, String>,
    /// Family name → help text.
    pub helps: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

pub fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

pub fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|e| format!("bad value {v:?}: {e}")),
    }
}

/// Parses `{a="x",b="y\"z"}` at the start of `s`; returns the labels and the
/// rest after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = rest[..eq].trim();
        if !valid_metric_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} after a label, got {rest:?}"));
        }
    }
}

/// Parses the Prometheus text format (0.0.4), strictly: a TYPE comes before
/// the samples of its family and at most once.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut seen_samples_of: std::collections::BTreeSet<String> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let ctx = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| ctx("TYPE without name".into()))?;
                    let kind = parts
                        .next()
                        .ok_or_else(|| ctx("TYPE without type".into()))?
                        .trim();
                    if !valid_metric_name(name) {
                        return Err(ctx(format!("bad metric name {name:?}")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(ctx(format!("unknown type {kind:?}")));
                    }
                    if seen_samples_of.contains(name) {
                        return Err(ctx(format!("TYPE of {name} after its samples")));
                    }
                    if e.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(ctx(format!("second TYPE for {name}")));
                    }
                }
                Some("HELP") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| ctx("HELP without name".into()))?;
                    let help = parts.next().unwrap_or("").to_owned();
                    if e.helps.insert(name.to_owned(), help).is_some() {
                        return Err(ctx(format!("second HELP for {name}")));
                    }
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| ctx("sample without value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(ctx(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(ctx)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value =
            parse_value(fields.next().ok_or_else(|| ctx("no value".into()))?).map_err(ctx)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| ctx(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(ctx("trailing fields".into()));
        }
        seen_samples_of.insert(e.family_of(name).to_owned());
        e.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(e)
}

impl Exposition {
    /// The family a sample belongs to (`x_bucket`, `x_sum`, `x_count` of a
    /// histogram or summary `x` belong to `x`).
    pub fn family_of<'a>(&self, sample: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && matches!(
                    self.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
            {
                return base;
            }
        }
        sample
    }

    /// Samples named `name` whose labels include `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of every sample `name`, whatever its labels (0 when none).
    pub fn sum(&self, name: &str) -> f64 {
        self.find(name, &[]).iter().map(|s| s.value).sum()
    }

    /// The value of the one sample `name{labels}`, if present.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, labels);
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches several samples: {found:?}"
        );
        found.first().map(|s| s.value)
    }
}

/// Scrapes `/metrics` without a key and parses it.
pub async fn scrape(s: &Server) -> Exposition {
    let r = s
        .request(Method::GET, &s.admin_url("/metrics"), None, None)
        .await;
    r.expect(200);
    assert!(
        r.content_type().starts_with("text/plain"),
        "content type {:?}",
        r.content_type()
    );
    parse_exposition(&r.text).unwrap_or_else(|e| panic!("bad exposition: {e}\n{}", r.text))
}

/// The value of the sample `name` without labels in the exposition `text`
/// (`None` when absent or when the text does not parse).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    parse_exposition(text)
        .ok()?
        .samples
        .iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_parser_handles_the_format() {
        let text = "# HELP a_total A counter.\n# TYPE a_total counter\na_total 3\n\
                # TYPE g gauge\ng{state=\"re\\\"ady\",x=\"1\"} 2.5 1700000000000\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
        let e = parse_exposition(text).unwrap();
        assert_eq!(e.value("a_total", &[]), Some(3.0));
        assert_eq!(e.value("g", &[("state", "re\"ady")]), Some(2.5));
        assert_eq!(e.family_of("h_bucket"), "h");
        assert_eq!(e.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(e.helps["a_total"], "A counter.");
        assert_eq!(e.sum("h_bucket"), 3.0);
        assert_eq!(e.sum("absent"), 0.0);
        assert!(parse_exposition("x 1\n# TYPE x gauge\n").is_err());
        assert!(parse_exposition("x{a=1} 1\n").is_err());
        assert!(parse_exposition("x one\n").is_err());
        assert!(parse_exposition("# TYPE x gauge\n# TYPE x gauge\n").is_err());
    }
}
