//! credbroker core: every piece of broker logic lives here, behind narrow ports.
//!
//! The domain (`policy`, `lease`, `broker`, `revoker`, `denylist`, `identity`'s types) imports
//! no adapter; `backend` is the contract between it and the credential backends. Adapters sit
//! behind features, one per dependency, and each function turns on only what it wires
//! (`app`, `docs/architecture.md`):
//!
//! | feature | adapters |
//! |---|---|
//! | `dynamodb` | `store::dynamodb` |
//! | `sts` | `issuer::aws` (`AssumeRole`) |
//! | `iam` | `issuer::iam` (the deny policies STS revocation writes) |
//! | `secrets-manager` | signing keys and database admin passwords from Secrets Manager |
//! | `database` | `issuer::db` (PostgreSQL, MySQL/MariaDB over sqlx) |
//! | `http` | `http` (axum, Lambda), JWKS over HTTPS |
//! | `local` | `store::embedded` (redb), `devissuer`, `app::local` |
//! | `testing` | fakes and the store conformance suite, for other crates' tests |

pub mod app;
pub mod audit;
#[cfg(feature = "aws")]
pub mod aws_env;
#[cfg(feature = "aws")]
pub mod aws_failure;
pub mod backend;
pub mod broker;
pub mod clock;
pub mod config;
pub mod denylist;
#[cfg(feature = "local")]
pub mod devissuer;
#[cfg(feature = "http")]
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
