use silt_wire::ErrorCode;
use thiserror::Error;

/// Client failures, worded for the person running the program.
#[derive(Debug, Error, Clone)]
pub enum ClientError {
    #[error("cannot reach the broker at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("{message}")]
    Broker { code: ErrorCode, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection to the broker lost: {0}")]
    ConnectionLost(String),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// True when the broker refused for want of a credential (none, a bad, expired or revoked
    /// one) or of a right.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ClientError::Broker { code: ErrorCode::Unauthenticated | ErrorCode::PermissionDenied, .. }
        )
    }

    /// True for failures a retry on a new connection may fix.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::ConnectionLost(_) | ClientError::Timeout(_)
        ) || matches!(
            self,
            ClientError::Broker {
                code: ErrorCode::ShuttingDown
                    | ErrorCode::DiskFull
                    | ErrorCode::Busy
                    | ErrorCode::Unavailable,
                ..
            }
        )
    }

    pub(crate) fn from_response(code: ErrorCode, message: String) -> ClientError {
        match code {
            ErrorCode::UnknownTopic => {
                // The broker's message names the topic; keep the typed variant for callers.
                let name = message.split('"').nth(1).unwrap_or("").to_string();
                ClientError::UnknownTopic(name)
            }
            code => ClientError::Broker { code, message },
        }
    }
}

impl From<quinn::ConnectionError> for ClientError {
    fn from(e: quinn::ConnectionError) -> Self {
        ClientError::ConnectionLost(e.to_string())
    }
}
impl From<quinn::WriteError> for ClientError {
    fn from(e: quinn::WriteError) -> Self {
        ClientError::ConnectionLost(e.to_string())
    }
}
impl From<quinn::ReadExactError> for ClientError {
    fn from(e: quinn::ReadExactError) -> Self {
        ClientError::ConnectionLost(e.to_string())
    }
}
impl From<quinn::ClosedStream> for ClientError {
    fn from(e: quinn::ClosedStream) -> Self {
        ClientError::ConnectionLost(e.to_string())
    }
}
