//! Bad input over real QUIC (issue 2, point 8): malformed, truncated, oversize and mis-versioned
//! frames and corrupt batches each get a clear error response (or their stream is closed with
//! a reason), the broker keeps serving every other client, and nothing already stored changes.
//!
//! Every test starts its own `silt-broker`, stores a known set of records, sends one kind of
//! bad request on a raw QUIC connection, checks the answer, and then checks from a new
//! connection that the stored bytes are unchanged and that produce and consume still work.

mod support;

use std::time::Duration;

use silt_client::{ErrorCode, FetchFrom};
use silt_wire::batch::{self, BATCH_BYTES_MAX, HEADER_LEN};
use silt_wire::frame::{self, HEAD_LEN, PREFIX_LEN, PROTOCOL_VERSION};
use silt_wire::message::encode_request;
use silt_wire::{Request, Response};
use support::{
    batch_of, create_topic, produce, read_all, read_reply, request_frame, stored_bytes, BrokerProcess, Reply,
};

const TOPIC: &str = "sensors";
const PARTITIONS: u32 = 2;
/// The broker's default `frame_bytes_max`: one largest batch plus room for the control part.
const FRAME_BYTES_MAX: usize = BATCH_BYTES_MAX + 64 * 1024;
/// Application code on STOP_SENDING after a frame that could not be read (`quic::close_code`).
const CLOSE_PROTOCOL: u32 = 3;

/// What was stored before the bad request, to compare with afterwards.
struct Before {
    bytes: Vec<Vec<u8>>,
    values: Vec<(u32, String)>,
}

/// Starts a broker and stores three batches in each partition.
async fn broker_with_records() -> (BrokerProcess, Before) {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, TOPIC, PARTITIONS).await;
    for p in 0..PARTITIONS {
        let values: Vec<String> = (0..30).map(|i| format!("before-{p}-{i}")).collect();
        produce(&client, TOPIC, p, &values, 10).await;
    }
    let before = snapshot(&broker).await;
    assert_eq!(before.values.len(), 60);
    client.close().await;
    (broker, before)
}

async fn snapshot(broker: &BrokerProcess) -> Before {
    let client = broker.client().await;
    let mut bytes = Vec::new();
    for p in 0..PARTITIONS {
        bytes.push(stored_bytes(&client, TOPIC, p).await);
    }
    let values = read_all(&client, TOPIC, FetchFrom::Earliest)
        .await
        .into_iter()
        .map(|r| (r.partition, r.value))
        .collect();
    client.close().await;
    Before { bytes, values }
}

/// From a new connection: the stored batches are byte-for-byte what they were, and the broker
/// still takes new records and serves old and new ones.
async fn assert_unchanged_and_serving(broker: &BrokerProcess, before: &Before) {
    let now = snapshot(broker).await;
    for p in 0..PARTITIONS as usize {
        assert!(now.bytes[p] == before.bytes[p], "stored batches of partition {p} changed");
    }
    assert_eq!(now.values, before.values);

    let client = broker.client().await;
    produce(&client, TOPIC, 1, &["after-1".to_string(), "after-2".to_string()], 10).await;
    let records = read_all(&client, TOPIC, FetchFrom::Earliest).await;
    let values: Vec<(u32, String)> = records.into_iter().map(|r| (r.partition, r.value)).collect();
    let mut want = before.values.clone();
    want.extend([(1, "after-1".to_string()), (1, "after-2".to_string())]);
    want.sort();
    let mut got = values.clone();
    got.sort();
    assert_eq!(got, want, "old records plus the new ones");
}

/// Expects an error response with `code` whose message contains every one of `words`.
fn assert_error(reply: Reply, code: ErrorCode, words: &[&str]) -> String {
    match reply {
        Reply::Response(Response::Error { code: got, message }, payload) => {
            assert_eq!(got, code, "error code (message: {message:?})");
            for w in words {
                assert!(message.contains(w), "error message {message:?} should mention {w:?}");
            }
            assert!(payload.is_empty(), "an error response carries no payload");
            message
        }
        other => panic!("expected a {code:?} error response, got {other:?}"),
    }
}

/// The broker stops reading a stream whose framing is lost: further writes fail with the
/// protocol close code.
async fn assert_stopped_with_protocol_code(send: &mut quinn::SendStream) {
    let stopped =
        tokio::time::timeout(Duration::from_secs(5), send.stopped()).await.expect("STOP_SENDING in time");
    assert_eq!(stopped.expect("stream state").map(|c| c.into_inner()), Some(u64::from(CLOSE_PROTOCOL)));
}

/// A produce frame around `batch` (whatever its bytes).
fn produce_frame(topic: &str, partition: u32, batch: &[u8]) -> Vec<u8> {
    request_frame(&Request::Produce { topic: topic.into(), partition }, batch)
}

/// A frame that ends early — inside its body, or inside its length prefix — gets an
/// `InvalidRequest` error saying it was truncated, then the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame() {
    let (broker, before) = broker_with_records().await;
    let raw = broker.raw_connection().await;
    let whole = produce_frame(TOPIC, 0, &batch_of(&["lost"], 1));

    let half = whole.len() / 2;
    let (_send, mut recv) = raw.send_raw(&whole[..half], true).await;
    let ended = format!("ended after {} of {} bytes", half - PREFIX_LEN, whole.len() - PREFIX_LEN);
    assert_error(read_reply(&mut recv).await, ErrorCode::InvalidRequest, &["truncated frame body", &ended]);
    assert!(matches!(read_reply(&mut recv).await, Reply::Finished));

    let (_send, mut recv) = raw.send_raw(&whole[..2], true).await;
    let ended = format!("ended after 2 of {PREFIX_LEN} bytes");
    assert_error(
        read_reply(&mut recv).await,
        ErrorCode::InvalidRequest,
        &["truncated frame length prefix", &ended],
    );
    assert!(matches!(read_reply(&mut recv).await, Reply::Finished));

    // A frame head shorter than the protocol version and control length.
    let (_send, mut recv) = raw.send_raw(&(HEAD_LEN as u32 - 1).to_le_bytes(), true).await;
    assert_error(read_reply(&mut recv).await, ErrorCode::InvalidRequest, &["truncated frame head"]);

    assert_unchanged_and_serving(&broker, &before).await;
}

/// A frame whose control part is not a valid message gets `InvalidRequest` naming the
/// malformed control message; the frame boundary is intact, so the same stream keeps serving.
/// A control length that points past the end of its frame is refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_control_bytes() {
    let (broker, before) = broker_with_records().await;
    let raw = broker.raw_connection().await;
    let mut bytes = frame::encode(&[0xff; 48], &[]);
    // A control message valid in itself, cut short by one byte.
    let control = encode_request(&Request::DescribeTopic { name: TOPIC.into() });
    bytes.extend_from_slice(&frame::encode(&control[..control.len() - 1], &[]));
    // An admin request with a payload it does not take.
    bytes.extend_from_slice(&request_frame(&Request::ListTopics, b"unexpected"));
    bytes.extend_from_slice(&request_frame(&Request::DescribeTopic { name: TOPIC.into() }, &[]));
    let (_send, mut recv) = raw.send_raw(&bytes, true).await;
    assert_error(read_reply(&mut recv).await, ErrorCode::InvalidRequest, &["malformed control message"]);
    assert_error(read_reply(&mut recv).await, ErrorCode::InvalidRequest, &["malformed control message"]);
    assert_error(read_reply(&mut recv).await, ErrorCode::InvalidRequest, &["takes no payload"]);
    match read_reply(&mut recv).await {
        Reply::Response(Response::Topic(info), _) => assert_eq!(info.name, TOPIC),
        other => panic!("the stream should still serve a valid request, got {other:?}"),
    }
    assert!(matches!(read_reply(&mut recv).await, Reply::Finished));

    let mut head_lies = request_frame(&Request::ListTopics, &[]);
    head_lies[PREFIX_LEN + 1..PREFIX_LEN + 5].copy_from_slice(&1000u32.to_le_bytes());
    let (_send, mut recv) = raw.send_raw(&head_lies, true).await;
    assert_error(read_reply(&mut recv).await, ErrorCode::InvalidRequest, &["truncated control message"]);
    assert!(matches!(read_reply(&mut recv).await, Reply::Finished));

    assert_unchanged_and_serving(&broker, &before).await;
}

/// A produce whose batch body does not match its checksum is refused with `Checksum`, and the
/// stream keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_body_checksum() {
    let (broker, before) = broker_with_records().await;
    let raw = broker.raw_connection().await;
    let mut corrupt = batch_of(&["temperature=21.5", "temperature=21.7"], 1_000);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x20; // one bit of the last value
    let mut bytes = produce_frame(TOPIC, 0, &corrupt);
    bytes.extend_from_slice(&request_frame(&Request::DescribeTopic { name: TOPIC.into() }, &[]));
    let (_send, mut recv) = raw.send_raw(&bytes, true).await;

    assert_error(read_reply(&mut recv).await, ErrorCode::Checksum, &["checksum", "batch body"]);
    match read_reply(&mut recv).await {
        Reply::Response(Response::Topic(info), _) => {
            assert_eq!(info.partitions[0].high_watermark, 30, "nothing was appended")
        }
        other => panic!("expected the topic, got {other:?}"),
    }

    assert_unchanged_and_serving(&broker, &before).await;
}

/// A length prefix above the frame limit is refused with `TooLarge` before any of the body is
/// read (none is ever sent), and the stream is stopped with the protocol close code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_is_refused_before_reading_it() {
    let (broker, before) = broker_with_records().await;
    let raw = broker.raw_connection().await;
    for claimed in [FRAME_BYTES_MAX + 1, u32::MAX as usize] {
        let prefix = (claimed as u32).to_le_bytes();
        // The request side stays open: the broker must answer from the prefix alone.
        let (mut send, mut recv) = raw.send_raw(&prefix, false).await;
        let message =
            assert_error(read_reply(&mut recv).await, ErrorCode::TooLarge, &["frame", "exceeds the limit"]);
        assert!(
            message.contains(&claimed.to_string()) && message.contains(&FRAME_BYTES_MAX.to_string()),
            "{message}"
        );
        assert!(matches!(read_reply(&mut recv).await, Reply::Finished));
        assert_stopped_with_protocol_code(&mut send).await;
    }
    assert_unchanged_and_serving(&broker, &before).await;
}

/// A batch above the 8 MiB batch limit inside a frame the broker may read is refused with
/// `TooLarge` naming the record batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_batch() {
    let (broker, before) = broker_with_records().await;
    let raw = broker.raw_connection().await;
    let mut big = batch_of(&["x"], 1);
    let size = BATCH_BYTES_MAX + 1;
    big.resize(size, 0);
    big[..4].copy_from_slice(&(size as u32).to_le_bytes());
    let (_send, mut recv) = raw.send_raw(&produce_frame(TOPIC, 0, &big), true).await;
    assert_error(read_reply(&mut recv).await, ErrorCode::TooLarge, &["record batch", &size.to_string()]);
    assert!(matches!(read_reply(&mut recv).await, Reply::Finished));
    assert_unchanged_and_serving(&broker, &before).await;
}

/// A frame with an unknown protocol version is refused with `UnsupportedVersion` naming the
/// version, and the stream is stopped; a batch with an unknown batch version likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_protocol_version() {
    let (broker, before) = broker_with_records().await;
    let raw = broker.raw_connection().await;
    let mut bytes = request_frame(&Request::ListTopics, &[]);
    bytes[PREFIX_LEN] = PROTOCOL_VERSION + 1;
    let (mut send, mut recv) = raw.send_raw(&bytes, false).await;
    let version = (PROTOCOL_VERSION + 1).to_string();
    assert_error(
        read_reply(&mut recv).await,
        ErrorCode::UnsupportedVersion,
        &["protocol", "version", &version],
    );
    assert!(matches!(read_reply(&mut recv).await, Reply::Finished));
    assert_stopped_with_protocol_code(&mut send).await;

    let mut future_batch = batch_of(&["v2"], 1);
    future_batch[4] = batch::BATCH_VERSION + 1;
    let (_send, mut recv) = raw.send_raw(&produce_frame(TOPIC, 0, &future_batch), true).await;
    assert_error(read_reply(&mut recv).await, ErrorCode::UnsupportedVersion, &["record batch", "version"]);

    assert_unchanged_and_serving(&broker, &before).await;
}

/// Batches whose length field, record count or size disagree with their bytes are refused
/// with `InvalidBatch` saying what is wrong (checksums fixed up, so only the framing is at fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_wrong_length_or_record_count() {
    let (broker, before) = broker_with_records().await;
    let raw = broker.raw_connection().await;
    let good = batch_of(&["a", "b", "c"], 1);
    let with_count = |count: u32| {
        let mut b = good.clone();
        b[48..52].copy_from_slice(&count.to_le_bytes());
        batch::set_producer(&mut b, 0, 0); // recomputes the body checksum
        b
    };
    let mut long_length = good.clone();
    long_length[..4].copy_from_slice(&(good.len() as u32 + 10).to_le_bytes());
    let mut short_length = good.clone();
    short_length[..4].copy_from_slice(&(good.len() as u32 - 1).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("length field too long", long_length, "length field"),
        ("length field too short", short_length, "length field"),
        ("more records claimed than present", with_count(4), "record count"),
        ("fewer records claimed than present", with_count(2), "bytes after the last record"),
        ("no records", with_count(0), "no records"),
        ("shorter than a header", good[..HEADER_LEN - 1].to_vec(), "truncated batch header"),
        ("empty payload", Vec::new(), "truncated batch header"),
    ];
    for (what, bytes, words) in cases {
        let (_send, mut recv) = raw.send_raw(&produce_frame(TOPIC, 0, &bytes), true).await;
        let reply = read_reply(&mut recv).await;
        eprintln!("{what}: {reply:?}");
        assert_error(reply, ErrorCode::InvalidBatch, &[words]);
    }
    assert_unchanged_and_serving(&broker, &before).await;
}

/// A valid batch for a topic or partition that does not exist is refused with `UnknownTopic` /
/// `UnknownPartition` naming it; so is a fetch from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_unknown_topic_or_partition() {
    let (broker, before) = broker_with_records().await;
    let raw = broker.raw_connection().await;
    let good = batch_of(&["orphan"], 1);
    let mut bytes = produce_frame("no-such-topic", 0, &good);
    bytes.extend_from_slice(&produce_frame(TOPIC, PARTITIONS, &good));
    bytes.extend_from_slice(&produce_frame(TOPIC, u32::MAX, &good));
    let fetch = |topic: &str, partition| Request::Fetch {
        topic: topic.into(),
        partition,
        from: FetchFrom::Earliest,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        processor: None,
    };
    bytes.extend_from_slice(&request_frame(&fetch("no-such-topic", 0), &[]));
    bytes.extend_from_slice(&request_frame(&fetch(TOPIC, PARTITIONS), &[]));
    let (_send, mut recv) = raw.send_raw(&bytes, true).await;

    assert_error(
        read_reply(&mut recv).await,
        ErrorCode::UnknownTopic,
        &["\"no-such-topic\"", "does not exist"],
    );
    assert_error(
        read_reply(&mut recv).await,
        ErrorCode::UnknownPartition,
        &["\"sensors\"", "no partition 2"],
    );
    let max = u32::MAX.to_string();
    assert_error(read_reply(&mut recv).await, ErrorCode::UnknownPartition, &["no partition", &max]);
    assert_error(read_reply(&mut recv).await, ErrorCode::UnknownTopic, &["\"no-such-topic\""]);
    assert_error(read_reply(&mut recv).await, ErrorCode::UnknownPartition, &["no partition 2"]);
    assert!(matches!(read_reply(&mut recv).await, Reply::Finished));

    // Through the client library the same refusal is a typed error.
    let client = broker.client().await;
    let err = silt_client::Producer::new(&client, "no-such-topic", Default::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(&err, silt_client::ClientError::UnknownTopic(t) if t == "no-such-topic"), "{err:?}");

    assert_unchanged_and_serving(&broker, &before).await;
}
