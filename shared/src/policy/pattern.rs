//! Value patterns: exact, glob, or regex — always matched against the whole value.

use regex::Regex;

use super::spec::PatternSpec;

/// Compiled patterns are bounded so a policy cannot make evaluation slow.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub enum Pattern {
    Exact(String),
    /// Glob or regex, compiled anchored (`^(?:…)$`): unanchored patterns matching substrings
    /// are a classic policy bypass (octo-sts, Go regexp).
    Anchored {
        source: String,
        regex: Regex,
    },
}

impl Pattern {
    pub fn compile(spec: &PatternSpec) -> Result<Self, String> {
        let (source, anchored) = match spec {
            PatternSpec::Exact(value) => return Ok(Self::Exact(value.clone())),
            // `(?s)`: a glob's `*` matches any character, newlines included.
            PatternSpec::Glob(glob) => (glob.clone(), format!("(?s)^(?:{})$", glob_to_regex(glob))),
            PatternSpec::Regex(regex) => (regex.clone(), format!("^(?:{regex})$")),
        };
        let regex = regex::RegexBuilder::new(&anchored)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid pattern {source:?}: {e}"))?;
        Ok(Self::Anchored { source, regex })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(expected) => expected == value,
            Self::Anchored { regex, .. } => regex.is_match(value),
        }
    }
}

fn glob_to_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() * 2);
    for ch in glob.chars() {
        match ch {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            other => out.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(spec: &PatternSpec) -> Pattern {
        Pattern::compile(spec).expect("pattern compiles")
    }

    #[test]
    fn matching_table() {
        let cases: &[(&str, PatternSpec, &str, bool)] = &[
            ("exact equal", PatternSpec::Exact("a".into()), "a", true),
            ("exact is case-sensitive (GitHub sub)", PatternSpec::Exact("Repo".into()), "repo", false),
            (
                "glob star spans separators",
                PatternSpec::Glob("repo:acme/*".into()),
                "repo:acme/x:ref:y",
                true,
            ),
            ("glob must match from the start", PatternSpec::Glob("acme/*".into()), "evil/acme/x", false),
            ("glob dot is literal", PatternSpec::Glob("a.b".into()), "axb", false),
            ("glob question mark is one char", PatternSpec::Glob("v?".into()), "v12", false),
            ("glob star spans newlines", PatternSpec::Glob("a*".into()), "a\nb", true),
            ("regex anchored at end", PatternSpec::Regex("main".into()), "main-evil", false),
            ("regex anchored at start", PatternSpec::Regex("main".into()), "evil-main", false),
            ("regex alternation stays anchored", PatternSpec::Regex("a|b".into()), "ab", false),
            ("regex alternation matches", PatternSpec::Regex("a|b".into()), "b", true),
            ("regex newline does not sneak past", PatternSpec::Regex("main".into()), "main\nx", false),
        ];
        for (name, spec, value, expected) in cases {
            assert_eq!(compile(spec).matches(value), *expected, "{name}");
        }
    }

    #[test]
    fn invalid_regex_is_a_load_error() {
        assert!(Pattern::compile(&PatternSpec::Regex("(".into())).is_err());
    }
}
