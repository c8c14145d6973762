//! Property tests of the frame codec: every frame survives encode, stuffing, arbitrary
//! chunking of the stream and decode; no input of any shape panics the decoder or deframer;
//! a changed byte never verifies.

use proptest::prelude::*;
use silt_frame::*;

fn reading() -> impl Strategy<Value = (u8, f64, u16, Vec<u8>)> {
    (0u8..5, any::<f64>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..24))
}

fn to_reading<'a>(r: &'a (u8, f64, u16, Vec<u8>)) -> Reading<'a> {
    match r.0 {
        0 => Reading::Temperature(r.1 as f32),
        1 => Reading::Humidity(r.1 as f32),
        2 => Reading::Numeric { channel: r.2, value: r.1 },
        3 => Reading::Raw(&r.3),
        _ => Reading::Output {
            of: ReadingKind::Numeric,
            time_ms: r.1 as i64,
            value: &r.3,
            marked: r.2.is_multiple_of(2),
        },
    }
}

/// Frame fields as owned values, to build a borrowed `Frame` from.
#[derive(Debug, Clone)]
struct Spec {
    kind: u8,
    seq: u32,
    ack: u32,
    device: String,
    unix: bool,
    time: i64,
    readings: Vec<(u8, f64, u16, Vec<u8>)>,
    nack: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..7,
        any::<u32>(),
        any::<u32>(),
        "[a-z0-9._-]{1,64}",
        any::<bool>(),
        any::<i64>(),
        proptest::collection::vec(reading(), 0..READINGS_MAX),
        0u8..8,
    )
        .prop_map(|(kind, seq, ack, device, unix, time, readings, nack)| Spec {
            kind,
            seq,
            ack,
            device,
            unix,
            time,
            readings,
            nack,
        })
}

fn frame(s: &Spec) -> Frame<'_> {
    let body = match s.kind {
        0 => {
            let time = if s.unix { Time::UnixMs(s.time) } else { Time::TickMs(s.time as u64) };
            // Every other one numbers its sample apart from the frame.
            let time = if s.seq.is_multiple_of(2) { time.of_sample(s.ack) } else { time };
            let readings = s.readings.iter().map(to_reading).collect::<heapless::Vec<_, READINGS_MAX>>();
            Body::Data(Data { device: &s.device, time, readings })
        }
        1 => Body::Ack,
        2 => Body::Nack(Nack { seq: s.seq, reason: NackReason::ALL[s.nack as usize] }),
        3 => Body::Hello(Hello {
            device: &s.device,
            tick_ms: s.time as u64,
            firmware: "fw 1.0",
            module: s.seq,
        }),
        4 => Body::Heartbeat,
        5 => {
            // A piece inside its package: the raw reading bytes of the first reading, if any.
            let bytes = s.readings.first().map_or(&[][..], |r| &r.3[..]);
            let offset = s.seq % (MODULE_PACKAGE_BYTES_MAX - bytes.len() as u32);
            let total = offset + bytes.len() as u32;
            Body::ModuleChunk(ModuleChunk { version: s.ack | 1, total, offset, bytes })
        }
        _ => Body::ModuleState(ModuleState {
            device: &s.device,
            running: s.seq,
            receiving: s.ack,
            received: s.seq % MODULE_PACKAGE_BYTES_MAX,
            error: if s.unix { "module did not verify" } else { "" },
        }),
    };
    Frame { seq: s.seq, ack: s.ack, body }
}

/// Equality that treats NaN readings as equal to themselves (bit patterns round-trip).
fn same(a: &Frame<'_>, b: &Frame<'_>) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

proptest! {
    /// encode -> stuff -> any chunking -> deframe -> decode -> verify gives the frames back,
    /// in order, for a stream of several frames.
    #[test]
    fn stream_round_trip(specs in proptest::collection::vec(spec(), 1..6), cuts in proptest::collection::vec(1usize..64, 1..40), key in any::<[u8; 32]>()) {
        let mut stream = Vec::new();
        for s in &specs {
            let mut buf = [0u8; STUFFED_BYTES_MAX];
            match encode_stuffed(&frame(s), &key, &mut buf) {
                Ok(n) => stream.extend_from_slice(&buf[..n]),
                // Sixteen large raw readings can exceed the frame limit: refused, not truncated.
                Err(e) => { prop_assert_eq!(e, FrameError::TooLarge); continue; }
            }
        }
        let expected: Vec<&Spec> = specs.iter().filter(|s| {
            let mut buf = [0u8; STUFFED_BYTES_MAX];
            encode_stuffed(&frame(s), &key, &mut buf).is_ok()
        }).collect();
        let mut deframer = Deframer::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let take = cuts[i % cuts.len()].min(rest.len());
            i += 1;
            let mut chunk = &rest[..take];
            rest = &rest[take..];
            while !chunk.is_empty() {
                let (used, out) = deframer.push(chunk);
                chunk = &chunk[used..];
                if let Some(raw) = out {
                    let raw = raw.expect("valid stuffing");
                    got.push(format!("{:?}", decode_verified(raw, &key).expect("verifies")));
                }
            }
        }
        prop_assert_eq!(got.len(), expected.len());
        for (g, s) in got.iter().zip(&expected) {
            prop_assert_eq!(g, &format!("{:?}", frame(s)));
        }
    }

    /// Flipping any bit of an encoded frame makes it fail to decode or to verify.
    #[test]
    fn a_changed_bit_never_verifies(s in spec(), bit in any::<usize>(), key in any::<[u8; 32]>()) {
        let mut buf = [0u8; FRAME_BYTES_MAX];
        let Ok(n) = encode(&frame(&s), &key, &mut buf) else { return Ok(()) };
        let b = bit % (n * 8);
        buf[b / 8] ^= 1 << (b % 8);
        prop_assert!(decode(&buf[..n]).and_then(|u| u.verify(&key)).is_err());
    }

    /// Arbitrary bytes never panic the decoder, and a frame that decodes re-encodes to the
    /// same bytes except its tag.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(u) = decode(&bytes) {
            let f = u.frame().clone();
            let mut buf = [0u8; FRAME_BYTES_MAX];
            if let Ok(n) = encode(&f, &[0; 32], &mut buf) {
                let decoded = decode(&buf[..n]).unwrap();
                prop_assert!(same(decoded.frame(), &f));
            }
        }
    }

    /// Arbitrary streams (garbage, truncated and concatenated frames, overlong runs) never
    /// panic the deframer, and it always consumes input.
    #[test]
    fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000), zero_every in 1usize..1200) {
        let mut bytes = bytes;
        for i in (0..bytes.len()).step_by(zero_every) {
            bytes[i] = 0;
        }
        let mut deframer = Deframer::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (used, out) = deframer.push(rest);
            prop_assert!(used > 0);
            rest = &rest[used..];
            if let Some(Ok(raw)) = out {
                prop_assert!(raw.len() <= FRAME_BYTES_MAX);
                let _ = decode(raw);
            }
        }
    }
}

#[test]
fn an_overlong_run_is_reported_and_the_next_frame_still_decodes() {
    let key = [3; 32];
    let mut stream = vec![0x11; STUFFED_BYTES_MAX * 2];
    stream.push(0);
    let mut buf = [0u8; STUFFED_BYTES_MAX];
    let n = encode_stuffed(&Frame { seq: 0, ack: 9, body: Body::Heartbeat }, &key, &mut buf).unwrap();
    stream.extend_from_slice(&buf[..n]);
    let mut deframer = Deframer::new();
    let mut rest = &stream[..];
    let mut results = Vec::new();
    while !rest.is_empty() {
        let (used, out) = deframer.push(rest);
        rest = &rest[used..];
        if let Some(out) = out {
            results.push(out.map(|raw| decode_verified(raw, &key).unwrap().ack));
        }
    }
    assert_eq!(results, vec![Err(DeframeError::TooLong), Ok(9)]);
}
