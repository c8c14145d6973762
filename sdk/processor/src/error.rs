use alloc::string::String;

/// Everything that can go wrong inside a processor. The message is what the operator sees:
/// the host shows it as the processor's failure (or the deploy's, from `init`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input batch does not follow `docs/record-batch.md`. The host validates batches, so
    /// this means a host bug or a module fed by something other than the host.
    #[error("malformed input batch: {what}")]
    MalformedBatch { what: &'static str },
    /// The parameter bytes do not follow the ABI's parameter encoding.
    #[error("malformed parameters: {what}")]
    MalformedParams { what: &'static str },
    /// A required parameter is absent.
    #[error("missing parameter `{name}`: deploy with --param {name}=...")]
    MissingParam { name: String },
    /// A parameter is present but its value is not usable.
    #[error("parameter `{name}`: {value:?} {reason}")]
    InvalidParam { name: String, value: String, reason: String },
    /// A parameter the processor does not know (usually a typo).
    #[error("unknown parameter `{name}`; this processor takes: {known}")]
    UnknownParam { name: String, known: String },
    /// Bytes read with [`binary::Reader`](crate::binary::Reader) (a snapshot, a binary payload)
    /// are cut short or hold an impossible value.
    #[error("could not decode {context} at byte {at}: {what}")]
    Decode { context: &'static str, at: usize, what: &'static str },
    /// A payload is not the JSON the processor expects.
    #[error("malformed JSON: {what} at byte {at}")]
    Json { at: usize, what: &'static str },
    /// The output of one batch crosses a host limit, or a record cannot be encoded.
    #[error("output: {0}")]
    Output(String),
    /// A counters block breaks the ABI's format (`silt_wire::counters`, the host's decoder).
    #[error("{0}")]
    Counters(#[from] silt_wire::counters::CountersError),
    /// A snapshot is larger than the host accepts.
    #[error("state snapshot of {size} bytes is over the host's limit of {max} bytes")]
    SnapshotTooLarge { size: usize, max: usize },
    /// `silt_process`, `silt_snapshot` or `silt_restore` came before a successful `silt_init`.
    #[error("{call} called before a successful silt_init")]
    NotInitialised { call: &'static str },
    /// Anything else, in the processor's own words.
    #[error("{0}")]
    Message(String),
}

impl Error {
    /// An error with the processor's own message.
    pub fn msg(message: impl core::fmt::Display) -> Self {
        Error::Message(alloc::format!("{message}"))
    }
}
