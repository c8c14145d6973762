use alloc::string::String;

use thiserror::Error;

/// Everything that can be wrong with bytes handed to this crate.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("invalid {what}")]
    Invalid { what: &'static str },
    #[error("checksum mismatch in {what}")]
    Checksum { what: &'static str },
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion { what: &'static str, version: u8 },
    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { what: &'static str, size: usize, max: usize },
    #[error("malformed control message: {0}")]
    Control(String),
}

impl WireError {
    /// What the error is about, as a static string, for callers whose own errors carry one (the
    /// guest SDK's `Error::MalformedBatch`).
    pub fn what(&self) -> &'static str {
        match self {
            WireError::Truncated { what }
            | WireError::Invalid { what }
            | WireError::Checksum { what }
            | WireError::UnsupportedVersion { what, .. }
            | WireError::TooLarge { what, .. } => what,
            WireError::Control(_) => "control message",
        }
    }
}
