//! What an AWS SDK call's failure was, in the terms every adapter decides on: the service's
//! error code and message, or why no usable answer came back.
//!
//! Why not `DisplayErrorContext(&sdk_error)` directly: walking an `SdkError<E, R>` as a
//! `dyn Error` makes `E` (the operation's error enum) a trait object, which links `E`'s
//! derived `Debug` (every modelled exception with all its fields) into the binary, once per
//! operation the broker calls, for text it never prints that way. Reading the code and
//! message here and walking only the transport errors keeps the same text and links one
//! chain walk for all operations (`docs/benchmarks.md`, "Where the bytes are").

use std::fmt;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::{ErrorMetadata, ProvideErrorMetadata};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsFailure {
    /// The service answered with an error.
    Service { code: String, message: String },
    /// No usable answer: the request timed out, could not be sent or built, or the response
    /// could not be read. The text is the whole cause chain.
    Transport(String),
}

impl AwsFailure {
    /// The service's error code (`NoSuchEntity`, `ThrottlingException`, ...), if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Service { code, .. } => Some(code),
            Self::Transport(_) => None,
        }
    }
}

impl<E: ProvideErrorMetadata, R: fmt::Debug> From<SdkError<E, R>> for AwsFailure {
    fn from(err: SdkError<E, R>) -> Self {
        // Every operation's error becomes the one `ErrorMetadata` type before anything
        // treats it as a `dyn Error` (the module comment says why).
        match err.map_service_error(|service| service.meta().clone()) {
            SdkError::ServiceError(service) => {
                let meta: &ErrorMetadata = service.err();
                Self::Service {
                    code: meta.code().unwrap_or("Unknown").to_owned(),
                    message: meta.message().unwrap_or_default().to_owned(),
                }
            }
            other => Self::Transport(DisplayErrorContext(&other).to_string()),
        }
    }
}

impl fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service { code, message } if message.is_empty() => f.write_str(code),
            Self::Service { code, message } => write!(f, "{code}: {message}"),
            Self::Transport(detail) => f.write_str(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn response() -> HttpResponse {
        HttpResponse::new(400.try_into().unwrap(), SdkBody::empty())
    }

    #[test]
    fn service_errors_keep_code_and_message() {
        let err: SdkError<ErrorMetadata, HttpResponse> = SdkError::service_error(
            ErrorMetadata::builder().code("NoSuchEntity").message("role deploy has no policy").build(),
            response(),
        );
        let failure = AwsFailure::from(err);
        assert_eq!(failure.code(), Some("NoSuchEntity"));
        assert_eq!(failure.to_string(), "NoSuchEntity: role deploy has no policy");

        let bare: SdkError<ErrorMetadata, HttpResponse> =
            SdkError::service_error(ErrorMetadata::builder().build(), response());
        assert_eq!(AwsFailure::from(bare).to_string(), "Unknown");
    }

    #[test]
    fn transport_errors_carry_their_cause_chain() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err: SdkError<ErrorMetadata, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        let failure = AwsFailure::from(err);
        assert_eq!(failure.code(), None);
        let text = failure.to_string();
        assert!(text.starts_with("dispatch failure"), "{text}");
        assert!(text.contains("connection refused"), "{text}");

        let timeout: SdkError<ErrorMetadata, HttpResponse> =
            SdkError::timeout_error("operation timed out after 3s");
        let text = AwsFailure::from(timeout).to_string();
        assert!(text.contains("request has timed out") && text.contains("after 3s"), "{text}");
    }
}
