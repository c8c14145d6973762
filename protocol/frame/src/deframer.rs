//! Finding frames in a byte stream.

use crate::{FrameError, FRAME_BYTES_MAX, STUFFED_BYTES_MAX};

/// What went wrong with one stuffed frame; the deframer has already skipped past it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeframeError {
    /// More than [`STUFFED_BYTES_MAX`] bytes came without a delimiter; they were dropped up to
    /// the next 0x00.
    TooLong,
    /// The bytes between two delimiters are not valid COBS.
    Stuffing,
}

impl From<DeframeError> for FrameError {
    fn from(e: DeframeError) -> FrameError {
        match e {
            DeframeError::TooLong => FrameError::TooLarge,
            DeframeError::Stuffing => FrameError::Stuffing,
        }
    }
}

/// Splits a COBS-stuffed, 0x00-delimited byte stream into unstuffed frames, in a fixed
/// buffer. Feed it whatever chunks the transport gives; it never allocates and never panics.
///
/// ```
/// # use silt_frame::*;
/// let mut stream = [0u8; STUFFED_BYTES_MAX];
/// let n = encode_stuffed(&Frame { seq: 0, ack: 3, body: Body::Ack }, &[1; 32], &mut stream).unwrap();
/// let mut deframer = Deframer::new();
/// let (used, frame) = deframer.push(&stream[..n]);
/// assert_eq!(used, n);
/// let frame = decode_verified(frame.unwrap().unwrap(), &[1; 32]).unwrap();
/// assert_eq!(frame.ack, 3);
/// ```
pub struct Deframer {
    buf: [u8; STUFFED_BYTES_MAX],
    len: usize,
    /// Dropping bytes until the next delimiter, after an overlong frame.
    discarding: bool,
}

impl Default for Deframer {
    fn default() -> Self {
        Deframer::new()
    }
}

impl Deframer {
    pub const fn new() -> Deframer {
        Deframer { buf: [0; STUFFED_BYTES_MAX], len: 0, discarding: false }
    }

    /// Consumes bytes from `input` up to and including the first delimiter that ends a frame.
    /// Returns how many bytes it consumed, and the frame (unstuffed, borrowed from the
    /// deframer until the next call) or the error for that frame, if one ended. Call again
    /// with the rest of `input`. Empty frames (two delimiters in a row) are skipped: senders
    /// may start with a delimiter to resynchronise.
    pub fn push(&mut self, input: &[u8]) -> (usize, Option<Result<&[u8], DeframeError>>) {
        for (i, &b) in input.iter().enumerate() {
            if b != 0 {
                if self.discarding {
                    continue;
                }
                if self.len == self.buf.len() {
                    self.discarding = true;
                    self.len = 0;
                    continue;
                }
                self.buf[self.len] = b;
                self.len += 1;
                continue;
            }
            let used = i + 1;
            if self.discarding {
                self.discarding = false;
                return (used, Some(Err(DeframeError::TooLong)));
            }
            let n = core::mem::take(&mut self.len);
            if n == 0 {
                continue;
            }
            return match cobs::decode_in_place(&mut self.buf[..n]) {
                Ok(m) if m <= FRAME_BYTES_MAX => (used, Some(Ok(&self.buf[..m]))),
                Ok(_) => (used, Some(Err(DeframeError::TooLong))),
                Err(_) => (used, Some(Err(DeframeError::Stuffing))),
            };
        }
        (input.len(), None)
    }

    /// Feeds all of `input` through [`Deframer::push`], calling `each` with every frame (or
    /// frame error) that ends in it, in order. For receivers that handle frames as they come.
    pub fn push_all(&mut self, mut input: &[u8], mut each: impl FnMut(Result<&[u8], DeframeError>)) {
        while !input.is_empty() {
            let (used, frame) = self.push(input);
            input = &input[used..];
            if let Some(frame) = frame {
                each(frame);
            }
        }
    }

    /// Bytes buffered towards a frame that has not ended yet.
    pub fn pending(&self) -> usize {
        self.len
    }
}
