//! Audit: exactly one structured event per decision, allow or deny.
//!
//! The event carries the detail the caller never sees (why a signature failed, what STS said).
//! It never carries a token, password or key: only identifiers.

use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// A request was granted.
    Allow,
    /// A request was refused.
    Deny,
    /// An operation (e.g. a revocation) completed.
    Success,
    /// An operation failed (it will be retried unless the event says otherwise).
    Failure,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub timestamp: DateTime<Utc>,
    pub request_id: String,
    pub action: &'static str,
    pub decision: Decision,
    /// Stable reason code (see `reason.rs`), the same string the caller received.
    pub reason: String,
    /// Internal detail for operators; never returned to the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub token_jti: Option<String>,
    pub policy: Option<String>,
    pub grant: Option<String>,
    pub lease_id: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub ttl_seconds: Option<u64>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The policy's replay mode (`once`, `once_per_grant`, `until_expiry`), once it is known.
    pub replay_mode: Option<&'static str>,
    /// Which use of the token this exchange was (1 for the first), when the token has a `jti`.
    pub token_uses: Option<u32>,
}

impl AuditEvent {
    pub fn new(action: &'static str, request_id: &str, timestamp: DateTime<Utc>) -> Self {
        Self {
            timestamp,
            request_id: request_id.to_owned(),
            action,
            decision: Decision::Deny,
            reason: String::new(),
            detail: None,
            issuer: None,
            subject: None,
            token_jti: None,
            policy: None,
            grant: None,
            lease_id: None,
            source_ip: None,
            ttl_seconds: None,
            expires_at: None,
            replay_mode: None,
            token_uses: None,
        }
    }
}

pub trait AuditSink: Send + Sync + std::fmt::Debug {
    fn record(&self, event: &AuditEvent);
}

/// Emits each event as one `tracing` event (target `audit`) whose fields are the event's
/// fields; with the JSON subscriber that is one JSON line per decision in CloudWatch/stdout.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAuditSink;

impl AuditSink for TracingAuditSink {
    fn record(&self, e: &AuditEvent) {
        let decision = match e.decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Success => "success",
            Decision::Failure => "failure",
        };
        tracing::info!(
            target: "audit",
            audit = true,
            timestamp = %e.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            request_id = %e.request_id,
            action = e.action,
            decision,
            reason = %e.reason,
            detail = e.detail.as_deref(),
            issuer = e.issuer.as_deref(),
            subject = e.subject.as_deref(),
            token_jti = e.token_jti.as_deref(),
            policy = e.policy.as_deref(),
            grant = e.grant.as_deref(),
            lease_id = e.lease_id.as_deref(),
            source_ip = e.source_ip.map(|ip| ip.to_string()),
            ttl_seconds = e.ttl_seconds,
            expires_at = e.expires_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            replay_mode = e.replay_mode,
            token_uses = e.token_uses,
            "decision"
        );
    }
}

#[cfg(any(test, feature = "testing"))]
/// Collects events in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryAuditSink(std::sync::Mutex<Vec<AuditEvent>>);

#[cfg(any(test, feature = "testing"))]
impl MemoryAuditSink {
    pub fn events(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[cfg(any(test, feature = "testing"))]
impl AuditSink for MemoryAuditSink {
    fn record(&self, event: &AuditEvent) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event.clone());
    }
}
