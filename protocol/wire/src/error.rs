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
