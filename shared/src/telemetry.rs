//! Logging set-up: JSON lines (audit events are fields, not strings-in-strings).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once. `with_time`: off in Lambda, where CloudWatch stamps
/// every line already (audit events carry their own `timestamp`).
pub fn init(with_time: bool) {
    let filter = EnvFilter::try_from_env("CREDBROKER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_ansi(false)
        .with_env_filter(filter);
    // A second init (tests, embedding) is harmless: keep the first subscriber.
    let _ = if with_time { builder.try_init() } else { builder.without_time().try_init() };
}
