//! The example processors (`processors/examples/`) through a running broker: each is deployed
//! on sensor readings produced with keys, event times and headers, and its output topic is
//! checked against results this file computes on its own. Then the determinism requirement:
//! a stateful processor replayed from the earliest offset, across a broker crash, writes a
//! second output identical record for record to the first.
//!
//! Values are read with a small JSON member scanner ([`members`]) because the broker's tests
//! have no JSON dependency; it handles the flat objects the examples read and write.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use silt_client::{
    Client, Compression, ConsumedRecord, Deployment, FetchFrom, ProcessorInfo, ProcessorState, Producer,
    ProducerConfig, ProducerRecord,
};
use support::{create_topic, example_wasm, BrokerProcess};

/// How long a pipeline may take to catch up, and a produce or a read of a topic may take;
/// the largest topic here holds about 3 MB, which takes well under a second on an idle machine.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Event time of the first reading: 2023-11-14 22:13:20 UTC.
const T0_MS: i64 = 1_700_000_000_000;

// ---- producing and reading ----

/// One record to produce.
#[derive(Debug, Clone)]
struct Input {
    key: Option<String>,
    value: String,
    timestamp_ms: i64,
    headers: Vec<(String, String)>,
}

impl Input {
    fn new(key: &str, timestamp_ms: i64, value: String) -> Input {
        Input { key: Some(key.to_string()), value, timestamp_ms, headers: Vec::new() }
    }
}

/// Produces `records` in order (keyed records to the partition of their key) with an
/// idempotent producer sealing a batch every `batch_records` records, and waits for the acks.
async fn produce(
    client: &Client,
    topic: &str,
    records: &[Input],
    batch_records: u32,
    compression: Compression,
) {
    let config = ProducerConfig { batch_records_max: batch_records, compression, ..Default::default() };
    let work = async {
        let p = Producer::new(client, topic, config).await?;
        for r in records {
            let headers: Vec<(&[u8], &[u8])> =
                r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
            p.send(ProducerRecord {
                key: r.key.as_deref().map(str::as_bytes),
                value: r.value.as_bytes(),
                timestamp_ms: Some(r.timestamp_ms),
                headers: &headers,
                partition: None,
            })
            .await?;
        }
        p.close().await
    };
    tokio::time::timeout(IO_TIMEOUT, work).await.expect("produce timed out").expect("produce");
}

/// Every record of `topic`, sorted by (partition, offset).
async fn read_topic(client: &Client, topic: &str) -> Vec<ConsumedRecord> {
    support::read_records(client, topic, IO_TIMEOUT).await
}

fn deployment(name: &str, input: &str, output: &str, params: &[(&str, &str)]) -> Deployment {
    Deployment {
        name: name.into(),
        input: input.into(),
        output: output.into(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        from: None,
        limits: Default::default(),
    }
}

/// Waits (bounded) until the processor has taken in `events_in` records and has no lag; a
/// failed processor fails the test at once with its error.
async fn caught_up(client: &Client, name: &str, events_in: usize) -> ProcessorInfo {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let info = client.processor_status(name).await.expect("processor status");
        assert_ne!(info.state, ProcessorState::Failed, "processor {name} failed: {:?}", info.error);
        if info.state == ProcessorState::Running && info.lag == 0 && info.events_in == events_in as u64 {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "processor {name} did not catch up within {IO_TIMEOUT:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A broker with `topic` (2 partitions) holding `records`, produced 50 to a batch so that the
/// processors see several batches per partition.
async fn broker_with(topic: &str, records: &[Input]) -> (BrokerProcess, Client) {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, topic, 2).await;
    produce(&client, topic, records, 50, Compression::Lz4).await;
    (broker, client)
}

/// Deploys `module` as `name`, reading `readings` and writing `<name>-out`, and returns both
/// topics' records once it has processed all `events_in` input records.
async fn run(
    client: &Client,
    name: &str,
    module: Vec<u8>,
    params: &[(&str, &str)],
    events_in: usize,
) -> (Vec<ConsumedRecord>, Vec<ConsumedRecord>) {
    let output = format!("{name}-out");
    client.deploy_processor(deployment(name, "readings", &output, params), module).await.expect("deploy");
    let info = caught_up(client, name, events_in).await;
    let (input, output) = (read_topic(client, "readings").await, read_topic(client, &output).await);
    assert_eq!(input.len(), events_in);
    assert_eq!(info.events_out, output.len() as u64, "status counts what the output topic holds");
    (input, output)
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8")
}

// ---- test data ----

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        bits as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn device(d: usize) -> String {
    format!("dev-{:04}", d + 1)
}

/// A reading as the device bridge forwards it.
fn reading(device: &str, seq: usize, temp: f64, humidity: f64) -> String {
    format!(
        r#"{{"device":"{device}","seq":{seq},"temp":{temp:.2},"humidity":{humidity:.1},"battery":{:.2}}}"#,
        3.7 - seq as f64 * 0.0005
    )
}

/// `per_device` readings from each of `devices` devices, interleaved in time (one round every
/// 5 s, each device a few ms after the previous one). Device `d` hovers around
/// `base + spread * d` °C with a slow swing of ±`swing` and noise of ±0.3.
fn readings(devices: usize, per_device: usize, base: f64, spread: f64, swing: f64, seed: u64) -> Vec<Input> {
    let mut noise = Noise(seed);
    let mut out = Vec::with_capacity(devices * per_device);
    for i in 0..per_device {
        for d in 0..devices {
            let temp = base + spread * d as f64 + swing * (i as f64 / 15.0).sin() + 0.3 * noise.next();
            let humidity = 45.0 + 10.0 * noise.next();
            let ts = T0_MS + i as i64 * 5_000 + d as i64 * 7;
            out.push(Input::new(&device(d), ts, reading(&device(d), i, temp, humidity)));
        }
    }
    out
}

// ---- reading JSON ----

/// The top-level members of a JSON object, as (name, raw value text), in order. For the flat
/// objects of these tests: names without escapes, values that are numbers, strings, literals
/// or nested arrays and objects (skipped as text). A value that is not an object has none.
fn members(json: &str) -> Vec<(String, String)> {
    let b = json.as_bytes();
    if !(b.first() == Some(&b'{') && b.last() == Some(&b'}')) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut i = 1;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if b[i] == b'}' {
            break;
        }
        assert_eq!(b[i], b'"', "member name expected at {i} in {json}");
        let end = i + 1 + json[i + 1..].find('"').expect("name ends");
        let name = json[i + 1..end].to_string();
        i = end + 1;
        skip_ws(&mut i);
        assert_eq!(b[i], b':', "':' expected at {i} in {json}");
        i += 1;
        skip_ws(&mut i);
        let start = i;
        let (mut depth, mut in_string) = (0i32, false);
        while i < b.len() {
            let c = b[i];
            if in_string {
                match c {
                    b'\\' => i += 1,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else {
                match c {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' if depth > 0 => depth -= 1,
                    b',' | b'}' if depth == 0 => break,
                    _ => {}
                }
            }
            i += 1;
        }
        out.push((name, json[start..i].trim_end().to_string()));
        if b[i] == b'}' {
            break;
        }
        i += 1;
    }
    out
}

/// The raw text of member `name`.
fn member(json: &str, name: &str) -> Option<String> {
    members(json).into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

/// Member `name` as a number, when it is one.
fn number(json: &str, name: &str) -> Option<f64> {
    member(json, name)?.parse().ok()
}

/// Like [`number`] for a value that must be there.
fn num(json: &str, name: &str) -> f64 {
    number(json, name).unwrap_or_else(|| panic!("no number {name:?} in {json}"))
}

// ---- one test per example ----

/// threshold-filter keeps exactly the readings strictly inside (min, max), byte for byte with
/// key, event time and headers, in input order per partition; it drops readings on the
/// bounds, outside them, without the field, with a non-numeric field and values that are not
/// JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_filter_keeps_exactly_the_readings_in_range() {
    let mut records = readings(6, 60, 24.0, 1.5, 5.0, 1);
    for (i, r) in records.iter_mut().enumerate() {
        if i % 7 == 0 {
            r.headers = vec![("source".into(), "gateway-3".into()), ("seq".into(), i.to_string())];
        }
    }
    let t = T0_MS + 400_000;
    records.extend([
        Input::new("dev-0001", t, r#"{"device":"dev-0001","temp":30}"#.into()),
        Input::new("dev-0001", t + 1, r#"{"device":"dev-0001","temp":30.01}"#.into()),
        Input::new("dev-0002", t + 2, r#"{"device":"dev-0002","temp":40}"#.into()),
        Input::new("dev-0002", t + 3, r#"{"device":"dev-0002","temp":85.0}"#.into()),
        Input::new("dev-0003", t + 4, r#"{"device":"dev-0003","humidity":50.0}"#.into()),
        Input::new("dev-0003", t + 5, r#"{"device":"dev-0003","temp":"31"}"#.into()),
        Input::new("dev-0004", t + 6, "temp=31.5".into()),
    ]);
    let (_broker, client) = broker_with("readings", &records).await;
    let params = [("field", "temp"), ("min", "30"), ("max", "40")];
    let (input, output) =
        run(&client, "threshold", example_wasm("threshold-filter"), &params, records.len()).await;

    let inside = |r: &&ConsumedRecord| number(text(&r.value), "temp").is_some_and(|v| v > 30.0 && v < 40.0);
    for p in 0..2 {
        let want: Vec<&ConsumedRecord> = input.iter().filter(|r| r.partition == p).filter(inside).collect();
        let got: Vec<&ConsumedRecord> = output.iter().filter(|r| r.partition == p).collect();
        assert_eq!(got.len(), want.len(), "partition {p}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.offset, i as u64, "output offsets are dense");
            assert_eq!(
                (&g.key, &g.value, g.timestamp_ms, &g.headers),
                (&w.key, &w.value, w.timestamp_ms, &w.headers)
            );
        }
    }
    let kept: Vec<&str> = output.iter().map(|r| text(&r.value)).collect();
    assert!(kept.contains(&r#"{"device":"dev-0001","temp":30.01}"#));
    assert!(!kept.iter().any(|v| v.ends_with(":30}") || v.ends_with(":40}") || v.contains("85.0")));
    assert!(output.iter().any(|r| !r.headers.is_empty()), "some kept records carry headers");
    // The data straddles the range, so a filter that kept or dropped everything would fail.
    assert!(output.len() > 60 && output.len() < records.len() - 60, "{} kept", output.len());
}

/// unit-convert turns every Celsius reading into Fahrenheit rounded to 2 decimals, appends
/// (or replaces) `unit`, keeps every other member as written and keeps key, time, headers,
/// partition and offset; records it cannot convert pass unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_convert_converts_every_reading() {
    let mut records = readings(4, 50, 12.0, 4.0, 8.0, 2);
    records[3].headers = vec![("source".into(), "gateway-1".into())];
    let t = T0_MS + 300_000;
    records.extend([
        Input::new(
            "dev-0001",
            t,
            r#"{"device":"dev-0001","seq":"0000000001","temp":21.53,"humidity":40.12,"battery":3.71}"#.into(),
        ),
        Input::new("dev-0002", t + 1, r#"{"device":"dev-0002","unit":"c","temp":-40}"#.into()),
        Input::new("dev-0003", t + 2, r#"{"device":"dev-0003","humidity":50.0}"#.into()),
        Input::new("dev-0004", t + 3, "temp=31.5".into()),
    ]);
    let (_broker, client) = broker_with("readings", &records).await;
    let params = [("from", "c"), ("to", "f"), ("decimals", "2")];
    let (input, output) = run(&client, "convert", example_wasm("unit-convert"), &params, records.len()).await;
    assert_eq!(output.len(), input.len(), "a map emits one record per input record");

    for (o, i) in output.iter().zip(&input) {
        assert_eq!(
            (o.partition, o.offset, &o.key, o.timestamp_ms, &o.headers),
            (i.partition, i.offset, &i.key, i.timestamp_ms, &i.headers)
        );
        let (iv, ov) = (text(&i.value), text(&o.value));
        let Some(celsius) = number(iv, "temp") else {
            assert_eq!(ov, iv, "passes unchanged");
            continue;
        };
        let (im, om) = (members(iv), members(ov));
        let mut want_names: Vec<&str> = im.iter().map(|(n, _)| n.as_str()).collect();
        if !want_names.contains(&"unit") {
            want_names.push("unit");
        }
        assert_eq!(om.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), want_names, "{ov}");
        for (name, raw) in &om {
            match name.as_str() {
                "temp" => {
                    let f: f64 = raw.parse().expect("a number");
                    let exact = celsius * 9.0 / 5.0 + 32.0;
                    assert!((f - exact).abs() <= 0.005 + 1e-9, "{celsius} °C is {exact} °F, got {f}");
                    assert!(((f * 100.0).round() - f * 100.0).abs() < 1e-6, "{f} has at most 2 decimals");
                }
                "unit" => assert_eq!(raw, "\"f\""),
                _ => assert_eq!(Some(raw.clone()), member(iv, name), "{name} copied as written"),
            }
        }
    }
    let values: Vec<&str> = output.iter().map(|r| text(&r.value)).collect();
    assert!(values.contains(
        &r#"{"device":"dev-0001","seq":"0000000001","temp":70.75,"humidity":40.12,"battery":3.71,"unit":"f"}"#
    ));
    assert!(values.contains(&r#"{"device":"dev-0002","unit":"f","temp":-40}"#));
}

/// ema-smooth emits, for every reading with the field, the key's exponential moving average
/// (seeded by its first reading) equal within 1e-9 to the sequence computed here, with the
/// reading's key and time; records without the field produce nothing and leave it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ema_smooth_follows_the_per_key_average() {
    let mut records = readings(5, 80, 18.0, 2.0, 3.0, 3);
    for i in (0..records.len()).step_by(37) {
        let key = records[i].key.clone().unwrap();
        records[i].value = format!(r#"{{"device":"{key}","humidity":41.0}}"#);
    }
    let (_broker, client) = broker_with("readings", &records).await;
    let alpha = 0.2;
    let params = [("field", "temp"), ("alpha", "0.2")];
    let (input, output) = run(&client, "ema", example_wasm("ema-smooth"), &params, records.len()).await;

    let mut ema: BTreeMap<Vec<u8>, f64> = BTreeMap::new();
    let mut want = Vec::new();
    for r in &input {
        let Some(x) = number(text(&r.value), "temp") else { continue };
        let e = ema.entry(r.key.to_vec()).or_insert(x);
        *e += alpha * (x - *e);
        want.push((r.partition, r.key.clone(), r.timestamp_ms, *e, x));
    }
    assert_eq!(ema.len(), 5);
    assert_eq!(output.len(), want.len(), "one output per reading with the field");
    assert!(want.len() < input.len());
    for (o, (partition, key, ts, e, x)) in output.iter().zip(&want) {
        let v = text(&o.value);
        assert_eq!((o.partition, &o.key, o.timestamp_ms), (*partition, key, *ts), "{v}");
        assert_eq!(member(v, "key").unwrap(), format!("\"{}\"", text(key)));
        assert!((num(v, "ema") - e).abs() < 1e-9, "{v}: want ema {e}");
        assert_eq!(num(v, "value"), *x);
    }
}

/// One key's readings: (event time, value), in offset order.
type Readings = Vec<(i64, f64)>;

/// The aggregates of one key's windows, as the README defines them: tumbling windows of
/// `window_ms`, emitted when an event at or past a window's end arrives, events for a closed
/// window dropped and counted in the key's next aggregate. `events` are (time, value) in
/// offset order; returns (start, count, min, max, mean, late).
fn windows_of(events: &[(i64, f64)], window_ms: i64) -> Vec<(i64, u64, f64, f64, f64, u64)> {
    let mut open: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    let (mut newest, mut late, mut out) = (i64::MIN, 0, Vec::new());
    for &(ts, x) in events {
        let start = ts.div_euclid(window_ms) * window_ms;
        if start + window_ms <= newest {
            late += 1;
            continue;
        }
        newest = newest.max(ts);
        open.entry(start).or_default().push(x);
        let closed: Vec<i64> = open.keys().copied().filter(|s| s + window_ms <= newest).collect();
        for s in closed {
            let xs = open.remove(&s).unwrap();
            let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            out.push((s, xs.len() as u64, min, max, mean, late));
            late = 0;
        }
    }
    out
}

/// window-aggregate emits count, min, max and mean per key and 20 s window for exactly the
/// windows a later event of that key closed, at the window's start time, and reports late
/// events in the key's next aggregate; still-open windows are not emitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_aggregate_emits_closed_windows() {
    let mut records = readings(4, 100, 20.0, 1.0, 2.0, 4);
    // Two readings of dev-0002 that arrive after their window closed.
    let late_ts = T0_MS + 100_000;
    for (i, ts) in [(250, late_ts), (330, late_ts + 20_000)] {
        records.insert(i, Input::new("dev-0002", ts, reading("dev-0002", 9_999, 99.0, 50.0)));
    }
    let (_broker, client) = broker_with("readings", &records).await;
    let window_ms = 20_000;
    let params = [("field", "temp"), ("window_ms", "20000")];
    let (input, output) =
        run(&client, "windows", example_wasm("window-aggregate"), &params, records.len()).await;

    // Per key: its partition and its (time, temperature) readings in offset order.
    let mut by_key: BTreeMap<Vec<u8>, (u32, Readings)> = BTreeMap::new();
    for r in &input {
        let e = by_key.entry(r.key.to_vec()).or_insert((r.partition, Vec::new()));
        e.1.push((r.timestamp_ms, num(text(&r.value), "temp")));
    }
    let mut total = 0;
    for (key, (partition, events)) in &by_key {
        let want = windows_of(events, window_ms);
        let got: Vec<&ConsumedRecord> = output.iter().filter(|r| &r.key[..] == key.as_slice()).collect();
        assert_eq!(got.len(), want.len(), "windows of {}", text(key));
        for (o, &(start, count, min, max, mean, late)) in got.iter().zip(&want) {
            let v = text(&o.value);
            assert_eq!((o.partition, o.timestamp_ms), (*partition, start), "{v}");
            assert_eq!(member(v, "key").unwrap(), format!("\"{}\"", text(key)));
            assert_eq!(
                (num(v, "window_start") as i64, num(v, "window_end") as i64),
                (start, start + window_ms)
            );
            assert_eq!((num(v, "count") as u64, num(v, "late") as u64), (count, late), "{v}");
            assert_eq!((num(v, "min"), num(v, "max")), (min, max), "{v}");
            assert!((num(v, "mean") - mean).abs() < 1e-9, "{v}: want mean {mean}");
        }
        total += want.len();
    }
    // 100 readings 5 s apart span 25 windows of 20 s; the last of each key stays open.
    assert_eq!(total, 4 * 24);
    let lates: u64 = output.iter().map(|r| num(text(&r.value), "late") as u64).sum();
    assert_eq!(lates, 2, "both late readings are reported");
}

/// anomaly-zscore raises exactly one alert for each injected spike, with the spike's key,
/// event time, value and input offset, and none for thousands of normal readings; the
/// records without a reading are counted in `silt processor status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_zscore_flags_injected_spikes_only() {
    let mut records = readings(4, 400, 21.0, 0.5, 0.5, 5);
    // dev-0002 reads 48 °C once (a heat gun); dev-0004 drops to -5 °C once (a loose probe).
    let spikes = [(1, 250, 48.0), (3, 300, -5.0)];
    for (d, i, temp) in spikes {
        let r = &mut records[i * 4 + d];
        r.value = reading(&device(d), i, temp, 45.0);
    }
    // Three status messages without a reading: skipped, and counted where status shows them.
    for i in [100, 200, 300] {
        records[i * 4].value = r#"{"status":"recalibrating"}"#.to_string();
    }
    let (_broker, client) = broker_with("readings", &records).await;
    // 100 readings 5 s apart.
    let params = [("field", "temp"), ("window", "500s")];
    let (input, output) =
        run(&client, "anomaly", example_wasm("anomaly-zscore"), &params, records.len()).await;

    assert_eq!(output.len(), spikes.len(), "{:?}", output.iter().map(|r| text(&r.value)).collect::<Vec<_>>());
    for (d, i, temp) in spikes {
        let spike = &records[i * 4 + d];
        let source =
            input.iter().find(|r| r.timestamp_ms == spike.timestamp_ms).expect("the spike is stored");
        let alert = output.iter().find(|r| r.key == source.key).expect("an alert for the spike's key");
        let v = text(&alert.value);
        assert_eq!((alert.partition, alert.timestamp_ms), (source.partition, spike.timestamp_ms), "{v}");
        assert_eq!(num(v, "value"), temp);
        assert_eq!(num(v, "offset") as u64, source.offset);
        let (expected, spread, z) = (num(v, "expected"), num(v, "spread"), num(v, "z"));
        assert!((expected - 21.0 - 0.5 * d as f64).abs() < 0.6 && spread > 0.1 && spread < 1.0, "{v}");
        assert!(z.abs() >= 5.5 && (z - (temp - expected) / spread).abs() < 1e-9, "{v}");
    }
    let status = client.processor_status("anomaly").await.expect("status");
    let counters: Vec<(&str, u64)> = status.counters.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(counters, [("skipped_no_field", 3), ("skipped_out_of_order", 0), ("skipped_keys_max", 0)]);
}

/// The hand-written WAT module keeps exactly the records of one key whose value has at least
/// `min_len` bytes, byte for byte with time and headers; keyless records never match a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wat_threshold_keeps_one_keys_long_values() {
    let mut records = readings(4, 60, 20.0, 1.0, 1.0, 6);
    for (i, r) in records.iter_mut().enumerate() {
        if i % 3 == 0 {
            r.value.insert_str(r.value.len() - 1, r#","status":"recalibrating""#);
        }
        if i % 5 == 0 {
            r.headers = vec![("gateway".into(), format!("gw-{}", i % 4))];
        }
    }
    records.push(Input { key: None, ..Input::new("", T0_MS, "x".repeat(200)) });
    let (_broker, client) = broker_with("readings", &records).await;
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../processors/examples/wat-threshold/threshold.wat");
    let module = wat::parse_file(&path).expect("threshold.wat assembles");
    let min_len = 90;
    let params = [("key", "dev-0002"), ("min_len", "90")];
    let (input, output) = run(&client, "wat", module, &params, records.len()).await;

    let want: Vec<&ConsumedRecord> =
        input.iter().filter(|r| &r.key[..] == b"dev-0002" && r.value.len() >= min_len).collect();
    let of_key = input.iter().filter(|r| &r.key[..] == b"dev-0002").count();
    assert!(!want.is_empty() && want.len() < of_key, "the data has short and long values of the key");
    assert_eq!(output.len(), want.len());
    for (i, (o, w)) in output.iter().zip(&want).enumerate() {
        assert_eq!(o.offset, i as u64);
        assert_eq!(
            (o.partition, &o.key, &o.value, o.timestamp_ms, &o.headers),
            (w.partition, &w.key, &w.value, w.timestamp_ms, &w.headers)
        );
    }
    assert!(output.iter().any(|r| !r.headers.is_empty()));
}

// ---- determinism ----

/// A history of 12,000 readings from 12 vibration sensors (a temperature and a 32-sample
/// acceleration trace each, about 350 bytes), in 6 rounds of 2,000. Every 50th reading
/// arrives up to 25 s out of order, so window state holds several windows and late events.
fn history() -> Vec<Vec<Input>> {
    let mut noise = Noise(7);
    let (devices, rounds, per_round) = (12, 6, 2_000);
    let mut n = 0usize;
    (0..rounds)
        .map(|_| {
            (0..per_round)
                .map(|_| {
                    let d = n % devices;
                    let i = n / devices;
                    let mut ts = T0_MS + i as i64 * 1_000 + (noise.next() * 400.0) as i64;
                    if n.is_multiple_of(50) {
                        ts -= 5_000 + (noise.next().abs() * 20_000.0) as i64;
                    }
                    let temp = 30.0 + d as f64 + 4.0 * (i as f64 / 40.0).sin() + noise.next();
                    let accel: Vec<String> = (0..32)
                        .map(|k| format!("{:.3}", (k as f64 / 3.0).sin() + 0.1 * noise.next()))
                        .collect();
                    let value = format!(
                        r#"{{"device":"{}","seq":{i},"temp":{temp:.3},"accel":[{}]}}"#,
                        device(d),
                        accel.join(",")
                    );
                    n += 1;
                    Input::new(&device(d), ts, value)
                })
                .collect()
        })
        .collect()
}

/// Runs `package` live over a history as it is produced (to output A), then deploys it again
/// under another name from the earliest offset (to output B), SIGKILLs the broker while B
/// is replaying, restarts it, and checks that A and B hold the same records: partition,
/// offset, key, value, event time and headers. Returns the output.
async fn replay_is_identical(package: &str, params: &[(&str, &str)]) -> Vec<ConsumedRecord> {
    let mut broker = BrokerProcess::start(&[]).await;
    let mut client = broker.client().await;
    create_topic(&client, "history", 2).await;
    let rounds = history();
    let total: usize = rounds.iter().map(Vec::len).sum();
    let module = example_wasm(package);

    // Uncompressed, so the ~2 MB per partition takes several commits of at most 1 MiB of
    // stored input each (COMMIT_INPUT_BYTES_MAX), and a crash can fall between two.
    produce(&client, "history", &rounds[0], 500, Compression::None).await;
    client.deploy_processor(deployment("live", "history", "out-a", params), module.clone()).await.unwrap();
    for (round, records) in rounds.iter().enumerate().skip(1) {
        let batch = [100, 250, 1_000, 37, 500][round % 5];
        produce(&client, "history", records, batch, Compression::None).await;
    }
    let live = caught_up(&client, "live", total).await;
    assert!(live.events_out > 0);

    let mut replay = deployment("replay", "history", "out-b", params);
    replay.from = Some(FetchFrom::Earliest);
    client.deploy_processor(replay, module).await.unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    let seen = loop {
        let info = client.processor_status("replay").await.unwrap();
        if info.events_in > 0 || info.lag == 0 {
            break info;
        }
        assert!(Instant::now() < deadline, "replay made no progress: {info:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    broker.kill();
    println!(
        "{package}: broker killed with the replay at {}/{total} records (lag {})",
        seen.events_in, seen.lag
    );
    broker.restart().await;
    client = broker.client().await;
    let replayed = caught_up(&client, "replay", total).await;

    let (a, b) = (read_topic(&client, "out-a").await, read_topic(&client, "out-b").await);
    assert_eq!(replayed.events_out, b.len() as u64);
    assert_eq!(a.len(), b.len(), "both outputs hold as many records");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "record {i} differs between the live run and the replay");
    }
    assert!(a.iter().any(|r| r.partition == 0) && a.iter().any(|r| r.partition == 1));
    a
}

/// ema-smooth replayed from the earliest offset, with a broker crash during the replay,
/// writes output identical record for record to the live run over the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ema_smooth_replay_is_identical_to_the_live_run() {
    let out = replay_is_identical("ema-smooth", &[("field", "temp"), ("alpha", "0.05")]).await;
    assert_eq!(out.len(), 12_000, "one average per reading");
}

/// window-aggregate (with lateness, so snapshots hold open windows and late counts) replayed
/// from the earliest offset, with a broker crash during the replay, writes output identical
/// record for record to the live run over the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_aggregate_replay_is_identical_to_the_live_run() {
    let params = [("field", "temp"), ("window_ms", "10000"), ("lateness_ms", "3000")];
    let out = replay_is_identical("window-aggregate", &params).await;
    let late: u64 = out.iter().map(|r| num(text(&r.value), "late") as u64).sum();
    assert!(late > 0, "the history has late readings");
}
