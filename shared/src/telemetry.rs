//! Logging set-up: JSON lines (audit events are fields, not strings-in-strings).

use std::str::FromStr;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where the log filter comes from, first match wins; `info` when neither is set.
const FILTER_VARS: [&str; 2] = ["CREDBROKER_LOG", "RUST_LOG"];
const DEFAULT_LEVEL: LevelFilter = LevelFilter::INFO;

/// Installs the global subscriber once. `with_time`: off in Lambda, where CloudWatch stamps
/// every line already (audit events carry their own `timestamp`).
///
/// The filter is a list of `target=level` directives with an optional default level
/// (`info`, `warn,credbroker=debug`): `tracing-subscriber`'s `Targets`, whose syntax is
/// `EnvFilter`'s without span and field directives. Those need a regex engine in every
/// function binary for something nobody filters broker logs by. A filter that does not
/// parse is reported on the first log line instead of being dropped silently.
///
/// Release builds compile out `debug!` and `trace!` events (the workspace enables
/// `tracing/release_max_level_info`), so `debug` directives only matter in debug builds.
pub fn init(with_time: bool) {
    let (filter, rejected) = filter_from_env(|name| std::env::var(name).ok());
    let format = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests, embedding) is harmless: keep the first subscriber.
    let installed = if with_time {
        registry.with(format).try_init()
    } else {
        registry.with(format.without_time()).try_init()
    };
    if let (Ok(()), Some((var, value, error))) = (installed, rejected) {
        tracing::warn!(%var, %value, %error, "log filter not understood; logging at {DEFAULT_LEVEL}");
    }
}

/// The filter from the first set variable of [`FILTER_VARS`], and what was wrong with it
/// when it did not parse (then the default applies).
fn filter_from_env(
    lookup: impl Fn(&str) -> Option<String>,
) -> (Targets, Option<(&'static str, String, String)>) {
    let default = || Targets::new().with_default(DEFAULT_LEVEL);
    let Some((var, value)) =
        FILTER_VARS.iter().find_map(|var| lookup(var).filter(|v| !v.trim().is_empty()).map(|v| (*var, v)))
    else {
        return (default(), None);
    };
    match Targets::from_str(&value) {
        Ok(filter) => (filter, None),
        Err(error) => (default(), Some((var, value, error.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> (Targets, Option<(&'static str, String, String)>) {
        filter_from_env(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn default_is_info() {
        let (filter, rejected) = from(&[]);
        assert!(rejected.is_none());
        assert!(filter.would_enable("credbroker::broker", &Level::INFO));
        assert!(!filter.would_enable("credbroker::broker", &Level::DEBUG));
    }

    #[test]
    fn per_target_levels_and_precedence() {
        let (filter, rejected) =
            from(&[("CREDBROKER_LOG", "warn,credbroker::revoker=debug"), ("RUST_LOG", "trace")]);
        assert!(rejected.is_none());
        assert!(filter.would_enable("credbroker::revoker", &Level::DEBUG));
        assert!(!filter.would_enable("credbroker::broker", &Level::INFO));
        assert!(filter.would_enable("aws_smithy_runtime", &Level::WARN));

        let (filter, _) = from(&[("RUST_LOG", "off")]);
        assert!(!filter.would_enable("credbroker", &Level::ERROR));
    }

    #[test]
    fn a_bad_filter_is_reported_and_falls_back_to_info() {
        let (filter, rejected) = from(&[("CREDBROKER_LOG", "credbroker=loud")]);
        let (var, value, _error) = rejected.expect("reported");
        assert_eq!((var, value.as_str()), ("CREDBROKER_LOG", "credbroker=loud"));
        assert!(filter.would_enable("credbroker", &Level::INFO));
        assert!(!filter.would_enable("credbroker", &Level::DEBUG));
    }
}
