//! One frame connection's protocol state, without I/O (docs/device-frames.md, "Exchange").
//!
//! The driver (`stream`) deframes bytes, decodes a frame's structure, looks up the key of the
//! device it names and hands both here; the session verifies the tag, keeps the connection's
//! device and clock offset, consults the shared sequence table and says what to do: reply, or
//! submit readings and ack once they are durable.

use std::collections::HashMap;
use std::sync::Arc;

// Replies about devices the bridge cannot name a key for are tagged with the zero key.
use silt_client::Operation;
use silt_frame::{
    record_value, Body, Data, Frame, FrameError, Key, NackReason, Reading, RecordValue, Unverified, ZERO_KEY,
};

use crate::appender::OutRecord;
use crate::config::TopicConfig;
use crate::delivery::DeviceState;
use crate::registry::Lookup;
use crate::sequences::{Decision, Sequences};

/// A frame the bridge sends: the header's cumulative ack and one of the bridge's kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub ack: u32,
    pub body: ReplyBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyBody {
    Ack,
    Heartbeat,
    Nack(silt_frame::Nack),
}

impl Reply {
    pub fn frame(&self) -> Frame<'static> {
        let body = match self.body {
            ReplyBody::Ack => Body::Ack,
            ReplyBody::Heartbeat => Body::Heartbeat,
            ReplyBody::Nack(n) => Body::Nack(n),
        };
        Frame { seq: 0, ack: self.ack, body }
    }
}

/// What the driver does with one frame.
#[derive(Debug)]
pub enum Step {
    /// Send this reply, tagged with `key`.
    Reply { reply: Reply, key: Key },
    /// Append these readings; once durable, ack the device's cumulative sequence.
    /// `made_on_device` of the records a processor on the device made (`Output` readings).
    Submit { device: Arc<str>, seq: u32, records: Vec<OutRecord>, made_on_device: usize },
    /// The device's module state (module delivery): for the connection's sender and the
    /// broker.
    Module(DeviceState),
    /// Nothing to send (a frame already in flight, or a reply from a device).
    Nothing,
}

/// How a frame counted, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Rejected(NackReason),
    /// A hello was accepted; `module` is the processor module version it reports (0: none),
    /// which the driver passes on to the broker (`silt device status`).
    Greeted {
        module: u32,
    },
    Other,
}

struct Bound {
    device: Arc<str>,
    key: Key,
    /// Wall clock minus the device's tick at its hello: maps `Time::TickMs` to wall time.
    tick_offset_ms: i64,
    /// Topic of each reading kind, built once.
    topics: HashMap<&'static str, Arc<str>>,
}

#[derive(Default)]
pub struct Session {
    bound: Option<Bound>,
    /// The topic of the last reading refused as `Forbidden`, for the driver's audit.
    refused_topic: Option<Arc<str>>,
}

fn nack(seq: u32, ack: u32, reason: NackReason, key: Key) -> (Step, Outcome) {
    let reply = Reply { ack, body: ReplyBody::Nack(silt_frame::Nack { seq, reason }) };
    (Step::Reply { reply, key }, Outcome::Rejected(reason))
}

impl Session {
    /// The device this connection's hello named, if any.
    pub fn device(&self) -> Option<&Arc<str>> {
        self.bound.as_ref().map(|b| &b.device)
    }

    /// The topic a reading was refused for by the last `Forbidden` nack, taken once.
    pub fn take_refused_topic(&mut self) -> Option<Arc<str>> {
        self.refused_topic.take()
    }

    /// The key to tag replies with: the bound device's, or the zero key.
    pub fn reply_key(&self) -> Key {
        self.bound.as_ref().map_or(ZERO_KEY, |b| b.key)
    }

    /// The reply to bytes that are not a frame.
    pub fn undecodable(&self, _error: FrameError) -> (Step, Outcome) {
        nack(0, 0, NackReason::Decode, ZERO_KEY)
    }

    /// Which device's key the driver must look up for `frame`.
    pub fn key_owner<'a>(&'a self, frame: &Unverified<'a>) -> Option<&'a str> {
        frame.device().or(self.bound.as_ref().map(|b| &*b.device))
    }

    /// Handles one decoded frame whose owner's registry entry is `lookup`.
    pub fn handle(
        &mut self,
        frame: Unverified<'_>,
        lookup: Lookup,
        now_ms: i64,
        sequences: &Sequences,
        topics: &TopicConfig,
    ) -> (Step, Outcome) {
        let seq = frame.frame().seq;
        let device = match lookup {
            Lookup::Active(device) => device,
            Lookup::Unknown => return nack(seq, 0, NackReason::UnknownDevice, ZERO_KEY),
            Lookup::Revoked => return nack(seq, 0, NackReason::Revoked, ZERO_KEY),
        };
        // The current key, or the previous one while a rotation's overlap lasts; replies are
        // tagged with the key the frame was.
        let Ok((frame, key)) = frame.verify_any(device.keys(now_ms)) else {
            return nack(seq, 0, NackReason::BadTag, ZERO_KEY);
        };
        match frame.body {
            Body::Hello(h) => {
                if let Some(b) = &self.bound {
                    if *b.device != *h.device {
                        return nack(seq, 0, NackReason::WrongDevice, b.key);
                    }
                }
                let device: Arc<str> = Arc::from(h.device);
                let ack = sequences.hello(&device, seq);
                self.bound = Some(Bound {
                    tick_offset_ms: now_ms.saturating_sub(i64::try_from(h.tick_ms).unwrap_or(i64::MAX)),
                    topics: ["temperature", "humidity", "numeric", "raw"]
                        .into_iter()
                        .map(|k| (k, Arc::from(topics.topic(k, &device))))
                        .collect(),
                    device,
                    key,
                });
                (
                    Step::Reply { reply: Reply { ack, body: ReplyBody::Ack }, key },
                    Outcome::Greeted { module: h.module },
                )
            }
            Body::Data(data) => {
                let Some(b) = &self.bound else {
                    return nack(seq, 0, NackReason::NoHello, key);
                };
                if *b.device != *data.device {
                    return nack(seq, sequences.durable(&b.device), NackReason::WrongDevice, b.key);
                }
                if let Some(r) = data
                    .readings
                    .iter()
                    .find(|r| !device.may(&b.device, Operation::Produce, &b.topics[r.kind_name()]))
                {
                    let ack = sequences.durable(&b.device);
                    self.refused_topic = Some(b.topics[r.kind_name()].clone());
                    return nack(seq, ack, NackReason::Forbidden, key);
                }
                match sequences.decide(&b.device, seq) {
                    Decision::Next => {
                        let records = records_of(b, seq, &data);
                        let made_on_device =
                            data.readings.iter().filter(|r| matches!(r, Reading::Output { .. })).count();
                        (
                            Step::Submit { device: b.device.clone(), seq, records, made_on_device },
                            Outcome::Accepted,
                        )
                    }
                    Decision::Duplicate { durable } => (
                        Step::Reply { reply: Reply { ack: durable, body: ReplyBody::Ack }, key },
                        Outcome::Duplicate,
                    ),
                    Decision::InFlight => (Step::Nothing, Outcome::Other),
                    Decision::OutOfOrder { durable } => nack(seq, durable, NackReason::OutOfOrder, key),
                }
            }
            Body::Heartbeat => match &self.bound {
                Some(b) => {
                    let ack = sequences.durable(&b.device);
                    (Step::Reply { reply: Reply { ack, body: ReplyBody::Heartbeat }, key }, Outcome::Other)
                }
                None => nack(seq, 0, NackReason::NoHello, key),
            },
            Body::ModuleState(m) => match &self.bound {
                None => nack(seq, 0, NackReason::NoHello, key),
                Some(b) if *b.device != *m.device => {
                    nack(seq, sequences.durable(&b.device), NackReason::WrongDevice, b.key)
                }
                Some(_) => {
                    let state = DeviceState {
                        running: m.running,
                        receiving: m.receiving,
                        received: m.received,
                        error: m.error.to_string(),
                    };
                    (Step::Module(state), Outcome::Other)
                }
            },
            // Acks, nacks and module chunks go the other way; a device has no business
            // sending them.
            Body::Ack | Body::Nack(_) | Body::ModuleChunk(_) => (Step::Nothing, Outcome::Other),
        }
    }
}

/// One record per reading: key = device id, time = the frame's event time, value as
/// [`record_value`] gives it; a processor's output on the device keeps its own time, and the
/// device header only where the module's record had it.
fn records_of(b: &Bound, seq: u32, data: &Data<'_>) -> Vec<OutRecord> {
    let (ms, on_tick) = data.time.millis();
    let wall_ms = |on_frame_clock: i64| match on_tick {
        false => on_frame_clock,
        true => b.tick_offset_ms.saturating_add(on_frame_clock),
    };
    let frame_ms = wall_ms(ms);
    // The sample the readings are of: the frame's, unless the device numbers them apart.
    let seq = data.time.sample().unwrap_or(seq);
    data.readings
        .iter()
        .map(|r| {
            let mut json = String::new();
            let value = match record_value(&b.device, seq, r, &mut json) {
                Ok(RecordValue::Bytes(bytes)) => bytes.to_vec(),
                // Writing to a String cannot fail.
                Ok(RecordValue::Json) | Err(_) => json.into_bytes(),
            };
            let (timestamp_ms, device_header) = match r {
                Reading::Output { time_ms, marked, .. } => (wall_ms(*time_ms), *marked),
                _ => (frame_ms, true),
            };
            OutRecord {
                topic: b.topics[r.kind_name()].clone(),
                key: b.device.clone(),
                device_header,
                timestamp_ms,
                value,
                headers: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use silt_frame::{decode, encode, Hello, Time, FRAME_BYTES_MAX};

    const KEY: Key = [5; 32];

    fn run(
        session: &mut Session,
        frame: &Frame<'_>,
        key: &Key,
        lookup: Lookup,
        seqs: &Sequences,
    ) -> (Step, Outcome) {
        let mut buf = [0u8; FRAME_BYTES_MAX];
        let n = encode(frame, key, &mut buf).unwrap();
        session.handle(decode(&buf[..n]).unwrap(), lookup, 1_000_000, seqs, &TopicConfig::default())
    }

    fn data(seq: u32, device: &str) -> Frame<'_> {
        let mut readings = heapless::Vec::new();
        readings.push(Reading::Temperature(21.5)).unwrap();
        readings.push(Reading::Numeric { channel: 3, value: f64::NAN }).unwrap();
        Frame { seq, ack: 0, body: Body::Data(Data { device, time: Time::TickMs(500), readings }) }
    }

    #[test]
    fn hello_then_data_submits_records_and_retransmits_are_acked_not_stored() {
        let seqs = Sequences::default();
        let mut s = Session::default();
        let active = Lookup::active(KEY);
        let (step, _) = run(&mut s, &data(1, "d1"), &KEY, active.clone(), &seqs);
        assert!(
            matches!(step, Step::Reply { reply: Reply { body: ReplyBody::Nack(n), .. }, .. } if n.reason == NackReason::NoHello)
        );
        let hello = Frame {
            seq: 0,
            ack: 0,
            body: Body::Hello(Hello { device: "d1", tick_ms: 100, firmware: "t", module: 0 }),
        };
        let (step, _) = run(&mut s, &hello, &KEY, active.clone(), &seqs);
        assert!(matches!(step, Step::Reply { reply: Reply { ack: 0, body: ReplyBody::Ack }, .. }));
        let (step, outcome) = run(&mut s, &data(1, "d1"), &KEY, active.clone(), &seqs);
        assert_eq!(outcome, Outcome::Accepted);
        let Step::Submit { records, .. } = step else { panic!("{step:?}") };
        assert_eq!(&*records[0].topic, "sensors.temperature");
        assert_eq!(records[0].timestamp_ms, 1_000_000 - 100 + 500);
        assert_eq!(records[0].value, br#"{"device":"d1","seq":1,"value":21.5}"#);
        assert_eq!(records[1].value, br#"{"device":"d1","seq":1,"channel":3,"value":null}"#);
        assert!(matches!(run(&mut s, &data(1, "d1"), &KEY, active.clone(), &seqs).0, Step::Nothing));
        seqs.complete("d1", 1);
        assert_eq!(run(&mut s, &data(1, "d1"), &KEY, active.clone(), &seqs).1, Outcome::Duplicate);
        assert_eq!(
            run(&mut s, &data(3, "d1"), &KEY, active.clone(), &seqs).1,
            Outcome::Rejected(NackReason::OutOfOrder)
        );
        assert_eq!(
            run(&mut s, &data(2, "d2"), &KEY, active.clone(), &seqs).1,
            Outcome::Rejected(NackReason::WrongDevice)
        );
    }

    /// A frame that names its sample (a device that leaves samples unsent): its records carry
    /// the sample's number where they would carry the frame's, at the same time.
    #[test]
    fn a_frame_of_a_numbered_sample_makes_records_of_that_sample() {
        let seqs = Sequences::default();
        let mut s = Session::default();
        let hello = Frame {
            seq: 0,
            ack: 0,
            body: Body::Hello(Hello { device: "d1", tick_ms: 100, firmware: "t", module: 0 }),
        };
        run(&mut s, &hello, &KEY, Lookup::active(KEY), &seqs);
        let mut numbered = data(1, "d1");
        if let Body::Data(d) = &mut numbered.body {
            d.time = d.time.of_sample(40);
        }
        let Step::Submit { records, .. } = run(&mut s, &numbered, &KEY, Lookup::active(KEY), &seqs).0 else {
            panic!("not submitted")
        };
        assert_eq!(records[0].value, br#"{"device":"d1","seq":40,"value":21.5}"#);
        assert_eq!(records[0].timestamp_ms, 1_000_000 - 100 + 500);
    }

    /// A processor's output on the device goes to the topic of the kind it was made from,
    /// keyed by the device, its time mapped from the device's clock like a frame's, its value
    /// as sent.
    #[test]
    fn processor_output_from_the_device_is_stored_as_sent() {
        let seqs = Sequences::default();
        let mut s = Session::default();
        let active = Lookup::active(KEY);
        let hello = Frame {
            seq: 0,
            ack: 0,
            body: Body::Hello(Hello { device: "d1", tick_ms: 100, firmware: "t", module: 0 }),
        };
        run(&mut s, &hello, &KEY, active.clone(), &seqs);
        let mut readings = heapless::Vec::new();
        let output = Reading::Output {
            of: silt_frame::ReadingKind::Humidity,
            time_ms: 400,
            value: b"{\"n\":2}",
            marked: false,
        };
        readings.push(output).unwrap();
        let frame = Frame {
            seq: 1,
            ack: 0,
            body: Body::Data(Data { device: "d1", time: Time::TickMs(500), readings }),
        };
        let (step, _) = run(&mut s, &frame, &KEY, active, &seqs);
        let Step::Submit { records, .. } = step else { panic!("{step:?}") };
        assert_eq!(&*records[0].topic, "sensors.humidity");
        assert_eq!(&*records[0].key, "d1");
        assert_eq!(records[0].timestamp_ms, 1_000_000 - 100 + 400);
        assert_eq!(records[0].value, b"{\"n\":2}");
        assert!(!records[0].device_header);
    }

    #[test]
    fn bad_tags_unknown_and_revoked_devices_are_refused() {
        let seqs = Sequences::default();
        let mut s = Session::default();
        let hello = Frame {
            seq: 0,
            ack: 0,
            body: Body::Hello(Hello { device: "d1", tick_ms: 0, firmware: "", module: 0 }),
        };
        assert_eq!(
            run(&mut s, &hello, &[9; 32], Lookup::active(KEY), &seqs).1,
            Outcome::Rejected(NackReason::BadTag)
        );
        assert_eq!(
            run(&mut s, &hello, &KEY, Lookup::Unknown, &seqs).1,
            Outcome::Rejected(NackReason::UnknownDevice)
        );
        assert_eq!(
            run(&mut s, &hello, &KEY, Lookup::Revoked, &seqs).1,
            Outcome::Rejected(NackReason::Revoked)
        );
        assert!(s.device().is_none());
    }

    /// During a rotation's overlap frames under the old key pass (and are answered under it);
    /// after it they do not. A reading for a topic the device may not write is refused.
    #[test]
    fn rotated_keys_and_device_rights() {
        use crate::registry::Device;
        let seqs = Sequences::default();
        let old = [6u8; 32];
        let entry = |resource: &str| silt_client::AclEntry {
            principal: "device:*".into(),
            operation: Operation::Produce,
            resource: resource.into(),
            allow: true,
        };
        let device = |until: i64, resource: &str| {
            Lookup::Active(Arc::new(Device {
                key: KEY,
                previous: Some((old, until)),
                rights: Some(vec![entry(resource)]),
            }))
        };
        let hello = Frame {
            seq: 0,
            ack: 0,
            body: Body::Hello(Hello { device: "d1", tick_ms: 0, firmware: "", module: 0 }),
        };
        let mut s = Session::default();
        let (step, _) = run(&mut s, &hello, &old, device(1_000_001, "topic:sensors.*"), &seqs);
        assert!(matches!(step, Step::Reply { key, reply: Reply { body: ReplyBody::Ack, .. } } if key == old));
        assert_eq!(
            run(&mut s, &data(1, "d1"), &old, device(1_000_000, "topic:sensors.*"), &seqs).1,
            Outcome::Rejected(NackReason::BadTag)
        );
        assert_eq!(
            run(&mut s, &data(1, "d1"), &KEY, device(0, "topic:sensors.temperature"), &seqs).1,
            Outcome::Rejected(NackReason::Forbidden),
            "the numeric reading's topic is not allowed"
        );
        assert_eq!(
            run(&mut s, &data(1, "d1"), &KEY, device(0, "topic:sensors.*"), &seqs).1,
            Outcome::Accepted
        );
    }
}
