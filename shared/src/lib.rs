//! credbroker core: every piece of broker logic lives here, behind narrow ports.
//!
//! The function crates and the CLI only wire configuration and adapters together; see
//! `docs/architecture.md` for the data flow of one request.

pub mod app;
pub mod audit;
pub mod aws_failure;
pub mod broker;
pub mod clock;
pub mod config;
pub mod devissuer;
pub mod http;
pub mod identity;
pub mod issuer;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod policy;
pub mod reason;
pub mod revoker;
pub mod secrets;
pub mod store;
pub mod telemetry;
