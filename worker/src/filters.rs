//! Word filters from the master's reference data: a word (matched
//! case-insensitively as a whole word) or `/a regex/`; each masks or rejects.

use chat_shared::ipc::Filter;
use regex::Regex;

/// Compiled filters.
#[derive(Debug, Default)]
pub struct Filters {
    reject: Vec<Regex>,
    mask: Vec<Regex>,
}

/// What a text becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass(String),
    Reject,
}

fn compile(pattern: &str) -> Option<Regex> {
    let p = pattern.trim();
    if p.is_empty() {
        return None;
    }
    let source = match p.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
        Some(re) if !re.is_empty() => format!("(?i){re}"),
        _ => format!(r"(?i)\b{}\b", regex::escape(p)),
    };
    match regex::RegexBuilder::new(&source)
        .size_limit(1 << 20)
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(pattern = %p, error = %e, "skipping an invalid filter pattern");
            None
        }
    }
}

impl Filters {
    pub fn new(filters: &[Filter]) -> Self {
        let mut f = Self::default();
        for filter in filters {
            if let Some(re) = compile(&filter.pattern) {
                if filter.reject {
                    f.reject.push(re);
                } else {
                    f.mask.push(re);
                }
            }
        }
        f
    }

    /// Rejects the text or masks every match with `*`.
    pub fn apply(&self, text: String) -> Verdict {
        if self.reject.iter().any(|r| r.is_match(&text)) {
            return Verdict::Reject;
        }
        let mut text = text;
        for r in &self.mask {
            if r.is_match(&text) {
                text = r
                    .replace_all(&text, |c: &regex::Captures<'_>| {
                        "*".repeat(c[0].chars().count())
                    })
                    .into_owned();
            }
        }
        Verdict::Pass(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(p: &str, reject: bool) -> Filter {
        Filter {
            pattern: p.into(),
            reject,
        }
    }

    #[test]
    fn masks_and_rejects() {
        let fl = Filters::new(&[f("darn", false), f("/sp[a4]m+/", true), f("/(/", true)]);
        assert_eq!(
            fl.apply("Darn it, darned".into()),
            Verdict::Pass("**** it, darned".into())
        );
        assert_eq!(fl.apply("buy SPAMMM".into()), Verdict::Reject);
        assert_eq!(fl.apply("fine".into()), Verdict::Pass("fine".into()));
    }
}
