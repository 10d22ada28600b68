//! revoker Lambda: on every EventBridge schedule tick, end every due lease; on a second,
//! slower schedule whose input is `{"task": "reconcile_orphans"}`, remove backend credentials
//! no live lease names (older than `revoker.orphan_min_age`).
//!
//! Wiring only: configuration and clients once at init; each invocation sweeps until the
//! lease store has nothing due or the invocation's time is nearly up (the next tick
//! continues). A lease-store failure fails the invocation (Lambda `Errors` metric, alarmed);
//! backend failures are recorded per lease with retries. Duplicate deliveries of the same
//! event are harmless: every lease is claimed with a conditional write. Each sweep first writes
//! the STS deny lists the lease API changed (role cut-offs) to IAM: this is the only function
//! that may edit IAM.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use credbroker::app::revoker::revoker;
use credbroker::config::Config;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    credbroker::telemetry::init(false);
    let config = Config::from_lambda_env()?;
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "revoker".to_owned());
    let (revoker, due) = revoker(&config, &function)?;
    let orphan_min_age = config.revoker.orphan_min_age;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (revoker, due) = (revoker.clone(), Arc::clone(&due));
        async move {
            if event.payload["task"] == "reconcile_orphans" {
                let report = revoker.reconcile_orphans(orphan_min_age).await?;
                return Ok::<_, Error>(serde_json::to_value(report)?);
            }
            let deadline = tokio::time::Instant::now() + time_left(event.context.deadline);
            let report = revoker.sweep(&*due, &event.context.request_id, deadline).await?;
            Ok(serde_json::to_value(report)?)
        }
    }))
    .await
}

/// Time until the invocation's deadline (epoch milliseconds).
fn time_left(deadline_ms: u64) -> Duration {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
