//! Value patterns: exact, glob, or regex — always matched against the whole value.
//!
//! Regexes use `regex-lite`: Rust regex syntax with ASCII-only classes (`\w` is
//! `[0-9A-Za-z_]`, `(?i)` folds ASCII only, no `\p{…}`), matched in linear time. Claims that
//! policies constrain (repositories, refs, namespaces, SPIFFE IDs) are identifiers, and an
//! ASCII `\w` cannot be satisfied by a look-alike letter from another script. The AWS SDK
//! already links `regex-lite`, so policy patterns add no regex engine to the functions
//! (the full `regex` crate was ~0.8 MiB of each binary, `docs/benchmarks.md`).

use regex_lite::Regex;

use super::spec::PatternSpec;

/// Compiled patterns are bounded so a policy cannot make evaluation slow.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub enum Pattern {
    Exact(String),
    /// `*` and `?` wildcards, matched against the whole value by [`glob_matches`]: the common
    /// pattern (GitHub subjects, refs) needs no regex engine, and a match takes at most
    /// glob × value steps (one pass for typical subjects).
    Glob(Vec<char>),
    /// A regex compiled anchored (`^(?:…)$`): unanchored patterns matching substrings are a
    /// classic policy bypass (octo-sts, Go regexp).
    Regex {
        source: String,
        regex: Regex,
    },
}

impl Pattern {
    pub fn compile(spec: &PatternSpec) -> Result<Self, String> {
        match spec {
            PatternSpec::Exact(value) => Ok(Self::Exact(value.clone())),
            PatternSpec::Glob(glob) => Ok(Self::Glob(glob.chars().collect())),
            PatternSpec::Regex(source) => {
                // The source must be a regex on its own before it is wrapped: `a)|(b` would
                // close the wrapper's group and become `^(?:a)|(b)$`, which matches every
                // value starting with `a`.
                regex_lite::RegexBuilder::new(source)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("invalid pattern {source:?}: {e}"))?;
                let regex = regex_lite::RegexBuilder::new(&format!("^(?:{source})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("invalid pattern {source:?}: {e}"))?;
                Ok(Self::Regex { source: source.clone(), regex })
            }
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(expected) => expected == value,
            Self::Glob(glob) => glob_matches(glob, value),
            Self::Regex { regex, .. } => regex.is_match(value),
        }
    }
}

/// Whether `value` matches the whole glob: `*` is any run of characters (newlines included),
/// `?` exactly one character, everything else itself.
///
/// The classic greedy matcher with one backtrack point (the last `*`): when a literal stops
/// matching, the last `*` absorbs one more character and matching resumes after it. Earlier
/// stars never need revisiting, because a later `*` can absorb whatever they would have, so
/// the worst case is O(glob × value) and typical subjects take one pass.
fn glob_matches(glob: &[char], value: &str) -> bool {
    // `v` is a byte offset into `value`: no per-call copy of the value on the request path.
    let (mut g, mut v) = (0, 0);
    // After the last `*` seen: where the glob resumes, and where in the value its run ends.
    let mut last_star: Option<(usize, usize)> = None;
    while let Some(ch) = value[v..].chars().next() {
        match glob.get(g) {
            Some('*') => {
                g += 1;
                last_star = Some((g, v));
            }
            Some('?') => (g, v) = (g + 1, v + ch.len_utf8()),
            Some(&literal) if literal == ch => (g, v) = (g + 1, v + ch.len_utf8()),
            _ => match last_star {
                Some((resume, run_end)) => {
                    // `run_end < v`, so a character starts there.
                    let absorbed = value[run_end..].chars().next().map_or(1, char::len_utf8);
                    (g, v) = (resume, run_end + absorbed);
                    last_star = Some((resume, v));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == '*')
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
            ("glob star may be empty", PatternSpec::Glob("a*b".into()), "ab", true),
            ("glob trailing stars match the empty rest", PatternSpec::Glob("ab**".into()), "ab", true),
            ("glob star backtracks", PatternSpec::Glob("*:main".into()), "a:main:x:main", true),
            ("glob star must end on the suffix", PatternSpec::Glob("*:main".into()), "a:main:x", false),
            ("glob two stars", PatternSpec::Glob("repo:*/*:ref:*".into()), "repo:a/b:ref:c", true),
            (
                "glob two stars, missing part",
                PatternSpec::Glob("repo:*/*:ref:*".into()),
                "repo:ab:ref:c",
                false,
            ),
            ("glob question mark is a whole character", PatternSpec::Glob("caf?".into()), "café", true),
            ("glob regex metacharacters are literal", PatternSpec::Glob("a+(b)".into()), "a+(b)", true),
            ("glob regex metacharacters are literal", PatternSpec::Glob("a+(b)".into()), "aab", false),
            ("glob empty matches only empty", PatternSpec::Glob(String::new()), "x", false),
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

    /// Wrapped unchecked, `a)|(b` became `^(?:a)|(b)$` and matched `a-anything`.
    #[test]
    fn a_regex_cannot_break_out_of_its_anchors() {
        for source in ["a)|(b", "main)|(.*", "x)|.*|(y"] {
            let err = Pattern::compile(&PatternSpec::Regex(source.into())).expect_err(source);
            assert!(err.contains("invalid pattern"), "{source}: {err}");
        }
        // A comment switched on by the source cannot swallow the closing anchor either.
        assert!(Pattern::compile(&PatternSpec::Regex("a(?x)#".into())).is_err());
        let balanced = compile(&PatternSpec::Regex("(a)|(b)".into()));
        assert!(balanced.matches("b") && !balanced.matches("a-anything"));
    }

    #[test]
    fn unicode_classes_are_a_load_error_not_a_silent_mismatch() {
        let err = Pattern::compile(&PatternSpec::Regex(r"team-\p{L}+".into())).expect_err("\\p is refused");
        assert!(err.contains("p{L}") && err.contains("Unicode character classes are not supported"), "{err}");
    }

    #[test]
    fn classes_are_ascii_only() {
        let word = compile(&PatternSpec::Regex(r"\w+".into()));
        assert!(word.matches("team_42"));
        // A Cyrillic "а" looks like a Latin "a" but is not a word character here.
        assert!(!word.matches("te\u{430}m"));
        let folded = compile(&PatternSpec::Regex("(?i)main".into()));
        assert!(folded.matches("MAIN"));
        // Literal non-ASCII text still matches exactly.
        assert!(compile(&PatternSpec::Glob("équipe-*".into())).matches("équipe-ß"));
    }

    /// The glob matcher agrees with the anchored regex a glob stands for, on every glob and
    /// value over a small alphabet with a two-byte character (exhaustive up to the lengths below).
    #[test]
    fn glob_agrees_with_its_regex() {
        fn strings(alphabet: &[char], max: usize) -> Vec<String> {
            let mut all = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
                all.extend(last.iter().cloned());
            }
            all
        }
        let values = strings(&['a', 'é'], 5);
        for glob in strings(&['a', 'é', '*', '?'], 4) {
            let translated: String = glob
                .chars()
                .map(|c| match c {
                    '*' => ".*".to_owned(),
                    '?' => ".".to_owned(),
                    other => other.to_string(),
                })
                .collect();
            let regex = regex_lite::Regex::new(&format!("(?s)^(?:{translated})$")).expect("regex");
            let compiled = compile(&PatternSpec::Glob(glob.clone()));
            for value in &values {
                assert_eq!(compiled.matches(value), regex.is_match(value), "glob {glob:?} on {value:?}");
            }
        }
    }
}
