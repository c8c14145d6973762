//! Framing of requests and responses on a QUIC stream.
//!
//! A stream carries a sequence of frames; each is
//! `u32 LE length | u8 protocol version | u32 LE control length | control | payload`, where
//! `length` counts every byte after itself, `control` is an rkyv-encoded [`crate::Request`] or
//! [`crate::Response`], and `payload` holds raw record batches (produce requests, fetch
//! responses) so that batch bytes are never re-encoded. This module only splits and joins
//! bytes; reading them off a socket is the caller's job.

use crate::WireError;

/// Version of the request/response protocol this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 4;
/// Bytes between the length prefix and the control message.
pub const HEAD_LEN: usize = 1 + 4;
/// Largest control message: names and assignment lists, never data.
pub const CONTROL_BYTES_MAX: usize = 1024 * 1024;

/// Reads the length prefix and checks it against `frame_bytes_max` before anything is
/// allocated for the body.
pub fn body_len(prefix: [u8; PREFIX_LEN], frame_bytes_max: usize) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len < HEAD_LEN {
        return Err(WireError::Truncated { what: "frame head" });
    }
    if len > frame_bytes_max {
        return Err(WireError::TooLarge { what: "frame", size: len, max: frame_bytes_max });
    }
    Ok(len)
}

/// The prefix and head of a frame with these part sizes; the caller writes control and
/// payload after it (separately, so payload bytes need not be copied).
pub fn encode_head(control_len: usize, payload_len: usize) -> [u8; PREFIX_LEN + HEAD_LEN] {
    let total = HEAD_LEN + control_len + payload_len;
    let total = u32::try_from(total).expect("frame sizes are capped below 4 GiB");
    let mut out = [0u8; PREFIX_LEN + HEAD_LEN];
    out[..4].copy_from_slice(&total.to_le_bytes());
    out[4] = PROTOCOL_VERSION;
    out[5..9].copy_from_slice(&(control_len as u32).to_le_bytes());
    out
}

/// The prefix, head and control message of a frame whose payload (`payload_len` bytes) the
/// caller sends separately, so batch bytes are never copied into the frame.
pub fn encode_front(control: &[u8], payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX_LEN + HEAD_LEN + control.len());
    out.extend_from_slice(&encode_head(control.len(), payload_len));
    out.extend_from_slice(control);
    out
}

/// Encodes a whole frame into one buffer.
pub fn encode(control: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = encode_front(control, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A received frame body (everything after the length prefix), split into its parts.
#[derive(Debug)]
pub struct Frame {
    body: Vec<u8>,
    control_end: usize,
}

impl Frame {
    /// Splits a frame body. Fails on an unknown protocol version or a control length that does
    /// not fit; never panics.
    pub fn decode(body: Vec<u8>) -> Result<Frame, WireError> {
        if body.len() < HEAD_LEN {
            return Err(WireError::Truncated { what: "frame head" });
        }
        if body[0] != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion { what: "protocol", version: body[0] });
        }
        let control_len = u32::from_le_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        if control_len > CONTROL_BYTES_MAX {
            return Err(WireError::TooLarge {
                what: "control message",
                size: control_len,
                max: CONTROL_BYTES_MAX,
            });
        }
        let control_end = HEAD_LEN
            .checked_add(control_len)
            .filter(|&end| end <= body.len())
            .ok_or(WireError::Truncated { what: "control message" })?;
        Ok(Frame { body, control_end })
    }

    /// The rkyv-encoded control message.
    pub fn control(&self) -> &[u8] {
        &self.body[HEAD_LEN..self.control_end]
    }
    /// The raw payload after the control message.
    pub fn payload(&self) -> &[u8] {
        &self.body[self.control_end..]
    }
    /// The payload as shared bytes, without copying.
    pub fn into_payload(self) -> bytes::Bytes {
        bytes::Bytes::from(self.body).slice(self.control_end..)
    }
    /// The payload, writable (the broker stamps batch headers in place).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.body[self.control_end..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// encode -> body_len -> decode returns the same control and payload.
        #[test]
        fn round_trip(control in proptest::collection::vec(any::<u8>(), 0..64), payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let bytes = encode(&control, &payload);
            let len = body_len(bytes[..4].try_into().unwrap(), 1 << 20).unwrap();
            prop_assert_eq!(len, bytes.len() - 4);
            let f = Frame::decode(bytes[4..].to_vec()).unwrap();
            prop_assert_eq!(f.control(), &control[..]);
            prop_assert_eq!(f.payload(), &payload[..]);
        }

        /// Arbitrary bodies never panic the decoder.
        #[test]
        fn decode_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Frame::decode(body);
        }
    }

    #[test]
    fn oversize_and_unknown_version_are_refused() {
        assert!(matches!(body_len((100u32).to_le_bytes(), 50), Err(WireError::TooLarge { .. })));
        let mut bytes = encode(b"c", b"p");
        bytes[4] = 9;
        assert!(matches!(
            Frame::decode(bytes[4..].to_vec()),
            Err(WireError::UnsupportedVersion { version: 9, .. })
        ));
    }
}
