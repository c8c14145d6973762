//! Silt device frames: the codec an MCU and the bridge share (`docs/device-frames.md`).
//!
//! A frame is a fixed 10-byte header (version, kind, sequence, cumulative ack), a postcard body
//! whose shape the kind fixes, and a 16-byte tag: HMAC-SHA256 over header and body with the
//! device's key, truncated. On a byte stream (UART, TCP) each frame is COBS-stuffed and ends
//! with a 0x00 byte; [`Deframer`] finds frames in arbitrary chunks of such a stream.
//!
//! The crate is `no_std` and never allocates: bodies borrow from the frame's bytes and
//! readings go into a fixed-capacity vector, so a firmware sizes every buffer at compile time.
//! It does no I/O and reads no clock. It does not track sequences or retransmissions either:
//! the device (firmware) and the bridge each keep their own state machine on top of it.
#![no_std]
#![forbid(unsafe_code)]

mod deframer;
mod module;

pub use deframer::{DeframeError, Deframer};
pub use module::{
    open_package, write_manifest, ModuleChunk, ModuleManifest, ModuleState, PackageError,
    MODULE_CHUNK_BYTES_MAX, MODULE_ERROR_BYTES_MAX, MODULE_PACKAGE_BYTES_MAX, MODULE_PARAMS_MAX,
};

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// The only frame format version this crate reads and writes.
pub const VERSION: u8 = 1;
/// Header bytes: version (1), kind (1), sequence (4, LE), cumulative ack (4, LE).
pub const HEADER_BYTES: usize = 10;
/// Tag bytes: HMAC-SHA256 truncated to its first 16 bytes (128 bits, as RFC 4868 allows).
pub const TAG_BYTES: usize = 16;
/// Bytes of a device key.
pub const KEY_BYTES: usize = 32;
/// Largest frame, header and tag included, before stuffing. Chosen so that a frame fits a
/// small MCU's stack twice over and a 64-byte-ish sensor record with 16 readings fits easily.
pub const FRAME_BYTES_MAX: usize = 512;
/// Largest frame on a byte stream: COBS adds one byte per 254, plus the 0x00 delimiter.
pub const STUFFED_BYTES_MAX: usize = cobs::max_encoding_length(FRAME_BYTES_MAX) + 1;
/// Most readings one data frame carries.
pub const READINGS_MAX: usize = 16;
/// Longest device id, in bytes (UTF-8).
pub const DEVICE_ID_BYTES_MAX: usize = 64;

/// A per-device secret key.
pub type Key = [u8; KEY_BYTES];

/// The key the bridge tags a reply with when it cannot name the device's key (an unknown or
/// revoked device, bytes it could not decode). A frame tagged with it proves nothing: a device
/// treats such a nack as a hint only.
pub const ZERO_KEY: Key = [0; KEY_BYTES];

/// What a frame is for; the byte after the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Device to bridge: readings.
    Data = 1,
    /// Bridge to device: every sequence up to the header's ack is durable.
    Ack = 2,
    /// Bridge to device: a frame was refused; the body says why.
    Nack = 3,
    /// Device to bridge: who I am; the bridge answers with an ack carrying my last durable
    /// sequence, so a device that lost its counter (a reboot) continues after it.
    Hello = 4,
    /// Either way: keep-alive; the bridge answers with its own, carrying the cumulative ack.
    Heartbeat = 5,
    /// Bridge to device: a piece of a processor module package (`docs/device-frames.md`,
    /// "Module delivery").
    ModuleChunk = 6,
    /// Device to bridge: the module it runs, the one it is receiving and how far, its last
    /// module error.
    ModuleState = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Data,
            2 => Kind::Ack,
            3 => Kind::Nack,
            4 => Kind::Hello,
            5 => Kind::Heartbeat,
            6 => Kind::ModuleChunk,
            7 => Kind::ModuleState,
            _ => return None,
        })
    }
}

/// Event time of a data frame.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub enum Time {
    /// Milliseconds since the Unix epoch, from a device with a real-time clock.
    UnixMs(i64),
    /// Milliseconds since the device booted; the bridge maps it to wall time using the tick
    /// the device's hello carried.
    TickMs(u64),
    /// [`Time::UnixMs`] of a sample numbered apart from frames: the frame's records carry
    /// `sample` where they would carry the frame's sequence (a device that leaves samples
    /// unsent, so that its frames and samples part ways).
    UnixMsOfSample { ms: i64, sample: u32 },
    /// [`Time::TickMs`] of a sample numbered apart from frames, as above.
    TickMsOfSample { ms: u64, sample: u32 },
}

impl Time {
    /// The same time, of sample `sample` (numbered apart from the frame that carries it).
    pub fn of_sample(self, sample: u32) -> Time {
        match self {
            Time::UnixMs(ms) | Time::UnixMsOfSample { ms, .. } => Time::UnixMsOfSample { ms, sample },
            Time::TickMs(ms) | Time::TickMsOfSample { ms, .. } => Time::TickMsOfSample { ms, sample },
        }
    }

    /// The sample the frame's readings are of, when numbered apart from the frame.
    pub fn sample(self) -> Option<u32> {
        match self {
            Time::UnixMsOfSample { sample, .. } | Time::TickMsOfSample { sample, .. } => Some(sample),
            Time::UnixMs(_) | Time::TickMs(_) => None,
        }
    }

    /// The milliseconds, and whether they count from the device's boot (else the epoch).
    pub fn millis(self) -> (i64, bool) {
        match self {
            Time::UnixMs(ms) | Time::UnixMsOfSample { ms, .. } => (ms, false),
            Time::TickMs(ms) | Time::TickMsOfSample { ms, .. } => {
                (i64::try_from(ms).unwrap_or(i64::MAX), true)
            }
        }
    }
}

/// One typed reading.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub enum Reading<'a> {
    /// Degrees Celsius.
    Temperature(f32),
    /// Relative humidity, percent.
    Humidity(f32),
    /// A numbered generic channel (pressure, voltage, counts...).
    Numeric { channel: u16, value: f64 },
    /// Opaque bytes, stored as they are.
    Raw(#[serde(borrow)] &'a [u8]),
    /// A record a processor on the device made from readings of kind `of` (the device tier,
    /// `docs/processor-abi.md`), keyed by the device like every reading: its value is stored
    /// as it is in the topic readings of that kind go to. `time_ms` is on the frame's clock:
    /// milliseconds since the epoch when the frame's time is [`Time::UnixMs`], since boot when
    /// it is [`Time::TickMs`]. `marked`: the record carries the `silt-device` header naming
    /// the device, as the module wrote it (a record passed through keeps the header of its
    /// input; one the module made has none).
    Output {
        of: ReadingKind,
        time_ms: i64,
        #[serde(borrow)]
        value: &'a [u8],
        marked: bool,
    },
}

/// The kinds of reading a sensor sends, each with a topic of its own in the bridge.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadingKind {
    Temperature,
    Humidity,
    Numeric,
    Raw,
}

impl ReadingKind {
    /// The kind as a short lowercase name, used in topic names (`sensors.<kind>`).
    pub fn name(self) -> &'static str {
        match self {
            ReadingKind::Temperature => "temperature",
            ReadingKind::Humidity => "humidity",
            ReadingKind::Numeric => "numeric",
            ReadingKind::Raw => "raw",
        }
    }

    /// The kind named `name` ([`ReadingKind::name`]).
    pub fn from_name(name: &str) -> Option<ReadingKind> {
        [ReadingKind::Temperature, ReadingKind::Humidity, ReadingKind::Numeric, ReadingKind::Raw]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

impl Reading<'_> {
    /// The kind whose topic the reading goes to: its own, or for an [`Reading::Output`] the
    /// kind of the readings it was made from.
    pub fn kind(&self) -> ReadingKind {
        match self {
            Reading::Temperature(_) => ReadingKind::Temperature,
            Reading::Humidity(_) => ReadingKind::Humidity,
            Reading::Numeric { .. } => ReadingKind::Numeric,
            Reading::Raw(_) => ReadingKind::Raw,
            Reading::Output { of, .. } => *of,
        }
    }

    /// The reading's kind as a short lowercase name, used in topic names (`sensors.<kind>`).
    pub fn kind_name(&self) -> &'static str {
        self.kind().name()
    }
}

/// What the record the bridge stores for a reading holds as its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordValue<'a> {
    /// The JSON object [`record_value`] wrote.
    Json,
    /// These bytes, as the device sent them (raw readings, and processor output).
    Bytes(&'a [u8]),
}

/// Writes the value of the record a reading becomes (`docs/device-frames.md`, "What the bridge
/// writes"): for numeric kinds the JSON object `{"device":"dev-1","seq":17,"value":21.5}`
/// (plus `"channel":3` for numeric channels; `null` for NaN and infinities, which JSON lacks)
/// into `json`; raw readings and processor output are their bytes. The bridge and a device
/// running a processor both call it, so a module sees the same input on either tier. Floats
/// are written in the shortest form that reads back to the same value in their own width
/// (`21.5f32` is `21.5`), by `core::fmt`. Device ids are `[A-Za-z0-9._-]`: no escaping.
pub fn record_value<'a, W: core::fmt::Write>(
    device: &str,
    seq: u32,
    reading: &Reading<'a>,
    json: &mut W,
) -> Result<RecordValue<'a>, core::fmt::Error> {
    let prefix = |json: &mut W| write!(json, r#"{{"device":"{device}","seq":{seq},"#);
    match *reading {
        Reading::Raw(bytes) | Reading::Output { value: bytes, .. } => return Ok(RecordValue::Bytes(bytes)),
        Reading::Temperature(v) | Reading::Humidity(v) => {
            prefix(json)?;
            json_number(json, v.is_finite(), v)?
        }
        Reading::Numeric { channel, value } => {
            prefix(json)?;
            write!(json, r#""channel":{channel},"#)?;
            json_number(json, value.is_finite(), value)?
        }
    }
    json.write_char('}')?;
    Ok(RecordValue::Json)
}

fn json_number<W: core::fmt::Write>(
    json: &mut W,
    finite: bool,
    v: impl core::fmt::Display,
) -> core::fmt::Result {
    if finite {
        write!(json, r#""value":{v}"#)
    } else {
        json.write_str(r#""value":null"#)
    }
}

/// Body of a data frame.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Data<'a> {
    pub device: &'a str,
    pub time: Time,
    #[serde(borrow)]
    pub readings: Readings<'a>,
}

/// The readings of one data frame: at most [`READINGS_MAX`], inline.
pub type Readings<'a> = heapless::Vec<Reading<'a>, READINGS_MAX>;

/// Body of a hello frame.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Hello<'a> {
    pub device: &'a str,
    /// The device's tick (ms since boot) when it sent this frame.
    pub tick_ms: u64,
    /// Free text such as a firmware name and version, for the bridge's logs.
    pub firmware: &'a str,
    /// The version of the processor module the device runs (`silt device deploy`, the device
    /// tier); 0 when it runs none.
    pub module: u32,
}

/// Why the bridge refused a frame.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackReason {
    /// The tag does not match the device's key.
    BadTag,
    /// No device with this id is registered.
    UnknownDevice,
    /// The device was revoked.
    Revoked,
    /// The bytes are not a frame (stuffing, header, body or limits).
    Decode,
    /// The sequence is not the next one; resend from the header's ack + 1.
    OutOfOrder,
    /// The frame names another device than the connection's hello.
    WrongDevice,
    /// The bridge could not make the readings durable (broker down, storage error); retry.
    Unavailable,
    /// A data frame came before any hello on this connection.
    NoHello,
    /// The device may not write a topic its readings go to (its access-control entries).
    Forbidden,
}

impl NackReason {
    /// Every reason, in the order of their wire values (0 to 8).
    pub const ALL: [NackReason; 9] = [
        NackReason::BadTag,
        NackReason::UnknownDevice,
        NackReason::Revoked,
        NackReason::Decode,
        NackReason::OutOfOrder,
        NackReason::WrongDevice,
        NackReason::Unavailable,
        NackReason::NoHello,
        NackReason::Forbidden,
    ];

    /// The reason's wire value, which is also its place in [`NackReason::ALL`] (for counters
    /// kept per reason).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short snake_case name, for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            NackReason::BadTag => "bad_tag",
            NackReason::UnknownDevice => "unknown_device",
            NackReason::Revoked => "revoked",
            NackReason::Decode => "decode",
            NackReason::OutOfOrder => "out_of_order",
            NackReason::WrongDevice => "wrong_device",
            NackReason::Unavailable => "unavailable",
            NackReason::NoHello => "no_hello",
            NackReason::Forbidden => "forbidden",
        }
    }
}

/// Body of a nack frame: the refused frame's sequence and the reason.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack {
    pub seq: u32,
    pub reason: NackReason,
}

/// A frame's kind-specific body.
// Data is large (its readings live inline, about 400 bytes) and the rest small; boxing is not
// an option without an allocator, and a frame lives once on the stack per receive.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Body<'a> {
    Data(Data<'a>),
    Ack,
    Nack(Nack),
    Hello(Hello<'a>),
    Heartbeat,
    ModuleChunk(ModuleChunk<'a>),
    ModuleState(ModuleState<'a>),
}

impl Body<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Data(_) => Kind::Data,
            Body::Ack => Kind::Ack,
            Body::Nack(_) => Kind::Nack,
            Body::Hello(_) => Kind::Hello,
            Body::Heartbeat => Kind::Heartbeat,
            Body::ModuleChunk(_) => Kind::ModuleChunk,
            Body::ModuleState(_) => Kind::ModuleState,
        }
    }

    /// The device a device-to-bridge frame names, if its kind names one.
    pub fn device(&self) -> Option<&str> {
        match self {
            Body::Data(d) => Some(d.device),
            Body::Hello(h) => Some(h.device),
            Body::ModuleState(m) => Some(m.device),
            _ => None,
        }
    }
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame<'a> {
    /// Sender's sequence number: per device for data frames; for a hello, the next data
    /// sequence the device will send (0: it keeps no counter); 0 where unused.
    pub seq: u32,
    /// Cumulative ack: every sequence up to this one is durable (bridge to device); 0 = none.
    pub ack: u32,
    pub body: Body<'a>,
}

/// Why bytes are not a valid frame, or a frame does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than a header and a tag.
    Truncated,
    /// Longer than [`FRAME_BYTES_MAX`], or an output buffer is too small.
    TooLarge,
    /// The version byte is not [`VERSION`].
    Version(u8),
    /// The kind byte names no kind.
    Kind(u8),
    /// The body does not decode as the kind's body, or has bytes left over.
    Body,
    /// A device id is empty or longer than [`DEVICE_ID_BYTES_MAX`].
    DeviceId,
    /// The tag does not match the key.
    BadTag,
    /// COBS stuffing is broken.
    Stuffing,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "frame shorter than header and tag"),
            FrameError::TooLarge => {
                write!(f, "frame larger than {FRAME_BYTES_MAX} bytes or buffer too small")
            }
            FrameError::Version(v) => write!(f, "frame version {v}, expected {VERSION}"),
            FrameError::Kind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::Body => write!(f, "frame body does not decode"),
            FrameError::DeviceId => write!(f, "device id empty or longer than {DEVICE_ID_BYTES_MAX} bytes"),
            FrameError::BadTag => write!(f, "frame tag does not match the device key"),
            FrameError::Stuffing => write!(f, "broken COBS stuffing"),
        }
    }
}

impl core::error::Error for FrameError {}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn tag_of(key: &Key, signed: &[u8]) -> [u8; TAG_BYTES] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signed);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&full[..TAG_BYTES]);
    tag
}

fn check_device(id: &str) -> Result<(), FrameError> {
    if id.is_empty() || id.len() > DEVICE_ID_BYTES_MAX {
        return Err(FrameError::DeviceId);
    }
    Ok(())
}

/// Writes `frame` (header, body, tag keyed by `key`) into `out`, unstuffed, and returns its
/// length. Use [`encode_stuffed`] for byte streams.
pub fn encode(frame: &Frame<'_>, key: &Key, out: &mut [u8]) -> Result<usize, FrameError> {
    let limit = out.len().min(FRAME_BYTES_MAX);
    if limit < HEADER_BYTES + TAG_BYTES {
        return Err(FrameError::TooLarge);
    }
    if let Some(device) = frame.body.device() {
        check_device(device)?;
    }
    out[0] = VERSION;
    out[1] = frame.body.kind() as u8;
    out[2..6].copy_from_slice(&frame.seq.to_le_bytes());
    out[6..10].copy_from_slice(&frame.ack.to_le_bytes());
    let body_room = &mut out[HEADER_BYTES..limit - TAG_BYTES];
    let body_len = match &frame.body {
        Body::Data(d) => postcard::to_slice(d, body_room).map(|s| s.len()),
        Body::Nack(n) => postcard::to_slice(n, body_room).map(|s| s.len()),
        Body::Hello(h) => postcard::to_slice(h, body_room).map(|s| s.len()),
        Body::ModuleChunk(c) => {
            check_chunk(c)?;
            postcard::to_slice(c, body_room).map(|s| s.len())
        }
        Body::ModuleState(m) => {
            check_state(m)?;
            postcard::to_slice(m, body_room).map(|s| s.len())
        }
        Body::Ack | Body::Heartbeat => Ok(0),
    }
    .map_err(|_| FrameError::TooLarge)?;
    let signed = HEADER_BYTES + body_len;
    let tag = tag_of(key, &out[..signed]);
    out[signed..signed + TAG_BYTES].copy_from_slice(&tag);
    Ok(signed + TAG_BYTES)
}

/// Encodes `frame`, COBS-stuffs it and appends the 0x00 delimiter: the bytes to write to a
/// UART or TCP stream. `out` needs [`STUFFED_BYTES_MAX`] bytes to fit any frame.
pub fn encode_stuffed(frame: &Frame<'_>, key: &Key, out: &mut [u8]) -> Result<usize, FrameError> {
    let mut raw = [0u8; FRAME_BYTES_MAX];
    let n = encode(frame, key, &mut raw)?;
    if out.len() < cobs::max_encoding_length(n) + 1 {
        return Err(FrameError::TooLarge);
    }
    let m = cobs::encode(&raw[..n], out);
    out[m] = 0;
    Ok(m + 1)
}

/// A frame whose structure decoded but whose tag is not yet checked: the receiver first
/// looks up the key of [`Unverified::device`] (or of the connection), then calls
/// [`Unverified::verify`].
#[derive(Debug)]
pub struct Unverified<'a> {
    bytes: &'a [u8],
    frame: Frame<'a>,
}

impl<'a> Unverified<'a> {
    /// The decoded frame, not yet authenticated: use it only to find the key.
    pub fn frame(&self) -> &Frame<'a> {
        &self.frame
    }

    /// The device the frame names, if its kind names one.
    pub fn device(&self) -> Option<&'a str> {
        match &self.frame.body {
            Body::Data(d) => Some(d.device),
            Body::Hello(h) => Some(h.device),
            Body::ModuleState(m) => Some(m.device),
            _ => None,
        }
    }

    /// Checks the tag in constant time and gives the frame if it matches `key`.
    pub fn verify(self, key: &Key) -> Result<Frame<'a>, FrameError> {
        if !self.tag_matches(key) {
            return Err(FrameError::BadTag);
        }
        Ok(self.frame)
    }

    /// Checks the tag against each of `keys` in turn (a device's current key, then its
    /// previous one while a rotation's overlap lasts); returns the frame and the key it was
    /// tagged with.
    pub fn verify_any<'k>(
        self,
        keys: impl IntoIterator<Item = &'k Key>,
    ) -> Result<(Frame<'a>, Key), FrameError> {
        for key in keys {
            if self.tag_matches(key) {
                return Ok((self.frame, *key));
            }
        }
        Err(FrameError::BadTag)
    }

    fn tag_matches(&self, key: &Key) -> bool {
        let signed = self.bytes.len() - TAG_BYTES;
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.bytes[..signed]);
        mac.verify_truncated_left(&self.bytes[signed..]).is_ok()
    }
}

/// Decodes an unstuffed frame's structure. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Unverified<'_>, FrameError> {
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge);
    }
    if bytes.len() < HEADER_BYTES + TAG_BYTES {
        return Err(FrameError::Truncated);
    }
    if bytes[0] != VERSION {
        return Err(FrameError::Version(bytes[0]));
    }
    let kind = Kind::from_u8(bytes[1]).ok_or(FrameError::Kind(bytes[1]))?;
    let seq = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
    let ack = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let body = &bytes[HEADER_BYTES..bytes.len() - TAG_BYTES];
    let body = match kind {
        Kind::Data => Body::Data(exact(body)?),
        Kind::Nack => Body::Nack(exact(body)?),
        Kind::Hello => Body::Hello(exact(body)?),
        Kind::ModuleChunk => {
            let chunk = exact(body)?;
            check_chunk(&chunk)?;
            Body::ModuleChunk(chunk)
        }
        Kind::ModuleState => {
            let state = exact(body)?;
            check_state(&state)?;
            Body::ModuleState(state)
        }
        Kind::Ack | Kind::Heartbeat if body.is_empty() => {
            if kind == Kind::Ack {
                Body::Ack
            } else {
                Body::Heartbeat
            }
        }
        Kind::Ack | Kind::Heartbeat => return Err(FrameError::Body),
    };
    if let Some(device) = body.device() {
        check_device(device)?;
    }
    Ok(Unverified { bytes, frame: Frame { seq, ack, body } })
}

/// Decodes and verifies in one step, for a receiver that knows the key up front (a device
/// reading the bridge's replies).
pub fn decode_verified<'a>(bytes: &'a [u8], key: &Key) -> Result<Frame<'a>, FrameError> {
    decode(bytes)?.verify(key)
}

/// A chunk lies inside a package of at most [`MODULE_PACKAGE_BYTES_MAX`] and carries at most
/// [`MODULE_CHUNK_BYTES_MAX`].
fn check_chunk(c: &ModuleChunk<'_>) -> Result<(), FrameError> {
    let end = u64::from(c.offset) + c.bytes.len() as u64;
    match c.bytes.len() <= MODULE_CHUNK_BYTES_MAX
        && c.total <= MODULE_PACKAGE_BYTES_MAX
        && end <= u64::from(c.total)
        && c.version != 0
    {
        true => Ok(()),
        false => Err(FrameError::Body),
    }
}

fn check_state(m: &ModuleState<'_>) -> Result<(), FrameError> {
    match m.error.len() <= MODULE_ERROR_BYTES_MAX && m.received <= MODULE_PACKAGE_BYTES_MAX {
        true => Ok(()),
        false => Err(FrameError::Body),
    }
}

fn exact<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        _ => Err(FrameError::Body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = [7; KEY_BYTES];

    #[test]
    fn a_data_frame_round_trips_and_a_wrong_key_fails() {
        let mut readings = heapless::Vec::new();
        readings.push(Reading::Temperature(21.5)).unwrap();
        readings.push(Reading::Raw(b"\x00\x01")).unwrap();
        let frame = Frame {
            seq: 9,
            ack: 0,
            body: Body::Data(Data { device: "dev-1", time: Time::TickMs(1234), readings }),
        };
        let mut buf = [0u8; FRAME_BYTES_MAX];
        let n = encode(&frame, &KEY, &mut buf).unwrap();
        assert_eq!(decode_verified(&buf[..n], &KEY).unwrap(), frame);
        assert_eq!(decode(&buf[..n]).unwrap().verify(&[8; KEY_BYTES]), Err(FrameError::BadTag));
    }

    /// A reason's index is its wire value, and `ALL` lists each reason once, in that order.
    #[test]
    fn nack_reasons_are_listed_in_wire_order() {
        for (i, reason) in NackReason::ALL.into_iter().enumerate() {
            let mut buf = [0u8; 4];
            assert_eq!(postcard::to_slice(&reason, &mut buf).unwrap(), [i as u8]);
            assert_eq!(reason.index(), i);
        }
    }

    #[test]
    fn ack_and_heartbeat_bodies_must_be_empty() {
        let mut buf = [0u8; 64];
        let n = encode(&Frame { seq: 0, ack: 5, body: Body::Ack }, &KEY, &mut buf).unwrap();
        assert_eq!(n, HEADER_BYTES + TAG_BYTES);
        let mut longer = [0u8; 64];
        longer[..HEADER_BYTES].copy_from_slice(&buf[..HEADER_BYTES]);
        assert_eq!(decode(&longer[..HEADER_BYTES + 1 + TAG_BYTES]).unwrap_err(), FrameError::Body);
    }

    #[test]
    fn device_ids_are_bounded() {
        // 65 bytes: one over the limit.
        let long = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        let frame = Frame {
            seq: 1,
            ack: 0,
            body: Body::Hello(Hello { device: long, tick_ms: 0, firmware: "", module: 0 }),
        };
        let mut buf = [0u8; FRAME_BYTES_MAX];
        assert_eq!(encode(&frame, &KEY, &mut buf), Err(FrameError::DeviceId));
    }

    /// The values the bridge stores, as `docs/device-frames.md` spells them: each float in its
    /// own width's shortest form, `null` for what JSON lacks, bytes as sent.
    #[test]
    fn record_values_are_as_documented() {
        let value = |reading: Reading<'static>| {
            let mut json = heapless::String::<128>::new();
            match record_value("dev-1", 17, &reading, &mut json).unwrap() {
                RecordValue::Json => json.as_bytes().to_vec_in_test(),
                RecordValue::Bytes(bytes) => bytes.to_vec_in_test(),
            }
        };
        assert_eq!(value(Reading::Temperature(21.5)), br#"{"device":"dev-1","seq":17,"value":21.5}"#);
        assert_eq!(value(Reading::Humidity(0.1)), br#"{"device":"dev-1","seq":17,"value":0.1}"#);
        assert_eq!(
            value(Reading::Numeric { channel: 3, value: f64::NAN }),
            br#"{"device":"dev-1","seq":17,"channel":3,"value":null}"#
        );
        assert_eq!(value(Reading::Raw(b"\x00ab")), b"\x00ab");
        let output = Reading::Output { of: ReadingKind::Humidity, time_ms: -5, value: b"{}", marked: true };
        assert_eq!((value(output), output.kind_name()), (b"{}".to_vec_in_test(), "humidity"));
    }

    /// `Vec` is not in scope in a `no_std` crate's unit tests: a fixed buffer stands in.
    trait ToVecInTest {
        fn to_vec_in_test(&self) -> heapless::Vec<u8, 128>;
    }
    impl ToVecInTest for [u8] {
        fn to_vec_in_test(&self) -> heapless::Vec<u8, 128> {
            heapless::Vec::from_slice(self).unwrap()
        }
    }

    /// A package opens to its manifest and module; a changed module byte fails the hash, and
    /// a cut or padded package fails to decode, without panicking.
    #[test]
    fn packages_open_and_damage_is_refused() {
        use sha2::Digest;
        let module = b"\0asm\x01\0\0\0 pretend";
        let mut params = heapless::Vec::new();
        params.push(("min", "22")).unwrap();
        let manifest = ModuleManifest {
            version: 3,
            input: ReadingKind::Temperature,
            module_sha256: sha2::Sha256::digest(module).into(),
            params,
        };
        let mut package = [0u8; 256];
        let n = write_manifest(&manifest, &mut package).unwrap();
        package[n..n + module.len()].copy_from_slice(module);
        let whole = &package[..n + module.len()];
        assert_eq!(open_package(whole), Ok((manifest, &module[..])));
        let mut bad = [0u8; 256];
        bad[..whole.len()].copy_from_slice(whole);
        bad[whole.len() - 1] ^= 1;
        assert_eq!(open_package(&bad[..whole.len()]), Err(PackageError::Hash));
        for cut in 0..n + 1 {
            assert_eq!(open_package(&whole[..cut]), Err(PackageError::Malformed), "cut at {cut}");
        }
    }

    /// A chunk must lie inside its package, carry at most the chunk limit and name a version.
    #[test]
    fn chunks_outside_their_package_are_refused() {
        let mut buf = [0u8; FRAME_BYTES_MAX];
        let chunk = |version, total, offset, bytes| Frame {
            seq: 0,
            ack: 7,
            body: Body::ModuleChunk(ModuleChunk { version, total, offset, bytes }),
        };
        let n = encode(&chunk(1, 10, 6, &[1, 2, 3, 4]), &KEY, &mut buf).unwrap();
        assert_eq!(decode_verified(&buf[..n], &KEY).unwrap(), chunk(1, 10, 6, &[1, 2, 3, 4]));
        assert_eq!(encode(&chunk(1, 10, 7, &[1, 2, 3, 4]), &KEY, &mut buf), Err(FrameError::Body));
        assert_eq!(encode(&chunk(0, 10, 0, &[1]), &KEY, &mut buf), Err(FrameError::Body));
        assert_eq!(encode(&chunk(1, u32::MAX, 0, &[1]), &KEY, &mut buf), Err(FrameError::Body));
        // The decoder checks the same rules on what it is given: a valid chunk's total
        // rewritten below its end is refused.
        let n = encode(&chunk(1, 10, 6, &[1, 2, 3, 4]), &KEY, &mut buf).unwrap();
        let total_at = HEADER_BYTES + 1;
        assert_eq!(buf[total_at], 10);
        buf[total_at] = 9;
        assert_eq!(decode(&buf[..n]).unwrap_err(), FrameError::Body);
    }
}
