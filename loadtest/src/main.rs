//! `silt-loadtest`: load-test harness for the Silt broker. See `silt-loadtest --help`.

mod devices;
mod pipeline;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use silt_client::{
    Client, ClientConfig, ClientError, Consumer, ConsumerConfig, ErrorCode, FetchFrom, Producer,
    ProducerConfig, ProducerRecord,
};

use crate::stats::Report;

/// Load-test harness for the Silt broker: drives producers or consumers at full speed
/// (closed loop) and reports events/s, MB/s and latency percentiles, measures a processor
/// pipeline (deploy to first processed event, events/s through a deployed module), or drives a
/// fleet of simulated devices through the device bridge (frames/s, frame to durable ack).
///
/// Exit codes: 0 the run completed; 1 it failed (the message says why); 2 bad arguments.
#[derive(Debug, Parser)]
#[command(name = "silt-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce records with durable acknowledgements; latency is per batch, from sealing the
    /// batch to its acknowledgement.
    Produce(Common),
    /// Read records from the earliest offset; latency is per fetch response, the wait for it.
    Consume(Common),
    /// Produce --count sensor readings (JSON objects) to --topic, then deploy --module three
    /// times: twice from the latest offset to time deploy to first processed event (cold: the
    /// broker compiles the module; warm: it has it already), once from the earliest to time
    /// the pipeline over everything in the topic. All are undeployed afterwards.
    Pipeline(pipeline::PipelineArgs),
    /// Simulated devices (silt_bridge::sim) send readings through a running silt-bridge over
    /// TCP frames or MQTT QoS 1, at --rate per device (0: as fast as --window allows), with
    /// optional faults; reports acked frames/s and frame to durable ack latency. Fails unless
    /// every generated reading was acked within --timeout.
    Devices(devices::DevicesArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// Broker QUIC address.
    #[arg(long, env = "SILT_BROKER", default_value = "127.0.0.1:7400")]
    broker: String,
    /// The broker's certificate (DATA_DIR/tls/cert.pem).
    #[arg(long, env = "SILT_CA_CERT", default_value = "silt-data/tls/cert.pem")]
    ca_cert: PathBuf,
    /// Topic; created with --partitions when it does not exist.
    #[arg(long, default_value = "loadtest")]
    topic: String,
    /// Concurrent producers (or consumers), each on its own connection.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    message_size: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
    /// Batches in flight per partition.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Records in total.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Stop after this long instead (e.g. 30s), whichever comes first.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Compression of the produced batches.
    /// `lz4` or `none`.
    #[arg(long, default_value = "lz4", value_name = "CODEC")]
    compression: silt_client::Compression,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (report, json) = match cli.command {
        Command::Produce(c) => (produce(&c, Shape::Array).await?, c.json),
        Command::Consume(c) => (consume(&c).await?, c.json),
        Command::Pipeline(p) => {
            let report = pipeline::run(&p).await?;
            if p.common.json {
                println!("{}", report.to_json());
            } else {
                println!("{}", report.to_text());
            }
            return Ok(());
        }
        Command::Devices(d) => {
            let report = devices::run(&d).await?;
            devices::print(&report, d.json);
            return Ok(());
        }
    };
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_text());
    }
    Ok(())
}

async fn connect(c: &Common) -> anyhow::Result<Client> {
    let config = ClientConfig::new(c.broker.clone(), &c.ca_cert)?;
    Ok(Client::connect(config).await?)
}

async fn ensure_topic(client: &Client, c: &Common) -> anyhow::Result<()> {
    match client.create_topic(&c.topic, c.partitions, None, None).await {
        Ok(_) => Ok(()),
        Err(ClientError::Broker { code: ErrorCode::TopicExists, .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn progress(total: u64) -> ProgressBar {
    let visible = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events ({per_sec}, eta {eta})").expect("template"),
    );
    bar
}

/// Generates record values that look like sensor readings: JSON objects with a device id,
/// a sequence number and noisy temperature, humidity and battery values, repeated in an array
/// up to the requested size, or one object padded to it ([`Shape`]). Values are drawn once
/// into a pool (xorshift noise) and only the sequence digits are rewritten per record, because
/// formatting a whole value per record cost more CPU than the broker spends storing it. The
/// values compress about as well as real sensor data (3-4x with LZ4), neither better (a
/// constant payload) nor worse (random bytes).
struct Readings {
    /// Pre-generated values; `next` cycles through them and rewrites only the sequence field.
    pool: Vec<Vec<u8>>,
    /// (start, digits) of each sequence field (the same in every pooled value).
    seq_fields: Vec<(usize, usize)>,
}

/// `~` marks a digit to fill.
const READING: &str =
    r#"{"device":"dev-~~~~","seq":"~~~~~~~~~~","temp":~~.~~,"humidity":~~.~~,"battery":~.~~}"#;

/// Distinct values in the pool: far more than the ~650 records that fit LZ4's 64 KiB window,
/// so the pool does not make batches more compressible than freshly drawn values would be.
const POOL_VALUES: usize = 4096;

/// What generated values look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Readings repeated in a JSON array and cut to the size (not always valid JSON): what
    /// `produce` and `consume` have always measured, so their results stay comparable.
    Array,
    /// One reading object padded to the size with a `"pad"` string member: valid JSON that
    /// processors can read (`temp` from 10 to 49.99).
    Object,
}

/// Bytes of a `"pad"` member around its padding: `,"pad":"` and `"`.
const PAD_MEMBER_BYTES: usize = 9;
/// Smallest value size [`Shape::Object`] can produce.
const OBJECT_BYTES_MIN: usize = READING.len() + PAD_MEMBER_BYTES;

impl Readings {
    fn new(size: usize, seed: u64, shape: Shape) -> Readings {
        let template = match shape {
            Shape::Array => {
                let mut text = String::from("[");
                while text.len() + 1 < size.max(1) {
                    if text.len() > 1 {
                        text.push(',');
                    }
                    text.push_str(READING);
                }
                text.push(']');
                let mut template = text.into_bytes();
                template.truncate(size.max(1));
                template
            }
            Shape::Object => {
                assert!(size >= OBJECT_BYTES_MIN, "objects take at least {OBJECT_BYTES_MIN} bytes");
                let pad = "x".repeat(size - OBJECT_BYTES_MIN);
                let text = format!("{},\"pad\":\"{pad}\"}}", &READING[..READING.len() - 1]);
                text.into_bytes()
            }
        };
        Readings::from_template(template, seed)
    }

    fn from_template(template: Vec<u8>, seed: u64) -> Readings {
        let mut fields = Vec::new();
        let mut at = 0;
        while at < template.len() {
            if template[at] == b'~' {
                let len = template[at..].iter().take_while(|b| **b == b'~').count();
                fields.push((at, len));
                at += len;
            } else {
                at += 1;
            }
        }
        let mut rng = seed | 1;
        let mut random = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let pool = (0..POOL_VALUES)
            .map(|_| {
                let mut v = template.clone();
                for &(start, len) in &fields {
                    // Noise everywhere but the sequence (ten digits), with the leading digits of
                    // temperature and humidity kept plausible.
                    let mut x = random();
                    for d in v[start..start + len].iter_mut().rev() {
                        *d = b'0' + (x % 10) as u8;
                        x /= 10;
                    }
                    if len == 2 && v.get(start + 2) == Some(&b'.') {
                        v[start] = b'1' + (random() % 4) as u8;
                    }
                }
                v
            })
            .collect();
        let seq_fields = fields.into_iter().filter(|(_, len)| *len == 10).collect();
        Readings { pool, seq_fields }
    }

    /// The next value; `seq` goes into every sequence field.
    fn next(&mut self, seq: u64) -> &[u8] {
        let v = &mut self.pool[(seq % POOL_VALUES as u64) as usize];
        for &(start, len) in &self.seq_fields {
            let mut x = seq;
            for d in v[start..start + len].iter_mut().rev() {
                *d = b'0' + (x % 10) as u8;
                x /= 10;
            }
        }
        v
    }
}

async fn produce(c: &Common, shape: Shape) -> anyhow::Result<Report> {
    let admin = connect(c).await?;
    ensure_topic(&admin, c).await?;
    let producers = u64::from(c.producers.max(1));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds")));
    let bar = progress(c.count);
    let deadline = c.duration.map(|d| Instant::now() + d);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..producers {
        let share = c.count / producers + u64::from(i < c.count % producers);
        let client = connect(c).await?;
        let hist = hist.clone();
        let bar = bar.clone();
        let on_ack: Arc<dyn Fn(&silt_client::Ack) + Send + Sync> = Arc::new(move |a: &silt_client::Ack| {
            let us = a.sealed_at.elapsed().as_micros() as u64;
            let _ = hist.lock().expect("histogram").record(us.max(1));
            bar.inc(u64::from(a.records));
        });
        let config = ProducerConfig {
            batch_records_max: c.batch_size.max(1),
            batch_bytes_max: silt_wire::batch::BATCH_BYTES_MAX - 1024,
            window: c.window.max(1),
            compression: c.compression,
            on_ack: Some(on_ack),
            ..Default::default()
        };
        let producer = Producer::new(&client, &c.topic, config).await?;
        let size = c.message_size;
        tasks.push(tokio::spawn(async move {
            let mut readings = Readings::new(size, 0x5eed ^ (i + 1), shape);
            let mut sent = 0u64;
            while sent < share {
                if sent.is_multiple_of(1024) && deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let value = readings.next(i * share + sent);
                producer.send(ProducerRecord { value, ..Default::default() }).await?;
                sent += 1;
            }
            producer.close().await?;
            client.close().await;
            anyhow::Ok(sent)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.context("producer task")??;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    admin.close().await;
    let hist = hist.lock().expect("histogram").clone();
    Ok(Report::new("produce", total, (total as f64) * c.message_size as f64, elapsed, &hist))
}

async fn consume(c: &Common) -> anyhow::Result<Report> {
    let admin = connect(c).await?;
    let info = admin.describe_topic(&c.topic).await?;
    let partitions: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
    let available: u64 = info.partitions.iter().map(|p| p.high_watermark - p.log_start).sum();
    let target = c.count.min(available);
    if target < c.count {
        eprintln!("silt-loadtest: topic {} holds {available} records; reading those", c.topic);
    }
    let consumers = (c.producers.max(1) as usize).min(partitions.len().max(1));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds")));
    let bar = progress(target);
    let deadline = c.duration.map(|d| Instant::now() + d);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..consumers {
        let mine: Vec<(u32, FetchFrom)> = partitions
            .iter()
            .copied()
            .filter(|p| *p as usize % consumers == i)
            .map(|p| (p, FetchFrom::Earliest))
            .collect();
        let client = connect(c).await?;
        let config = ConsumerConfig { follow: false, ..Default::default() };
        let mut consumer = Consumer::assign(&client, &c.topic, mine, config).await?;
        let (hist, bar) = (hist.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let (mut records, mut bytes) = (0u64, 0u64);
            loop {
                let waited = Instant::now();
                let Some(fetched) = consumer.next_batch().await else { break };
                let fetched = fetched?;
                let _ = hist.lock().expect("histogram").record((waited.elapsed().as_micros() as u64).max(1));
                let mut n = 0u64;
                for r in fetched.records() {
                    bytes += r?.value.len() as u64;
                    n += 1;
                }
                records += n;
                bar.inc(n);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
            consumer.close().await;
            client.close().await;
            anyhow::Ok((records, bytes))
        }));
    }
    let (mut total, mut bytes) = (0u64, 0u64);
    for t in tasks {
        let (r, b) = t.await.context("consumer task")??;
        total += r;
        bytes += b;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    admin.close().await;
    let hist = hist.lock().expect("histogram").clone();
    Ok(Report::new("consume", total, bytes as f64, elapsed, &hist))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated values have the requested size, carry the sequence number, and vary.
    #[test]
    fn readings_have_the_size_and_vary() {
        for size in [1, 50, 100, 1024] {
            let mut r = Readings::new(size, 7, Shape::Array);
            let a = r.next(42).to_vec();
            let b = r.next(43).to_vec();
            assert_eq!(a.len(), size);
            assert_eq!(b.len(), size);
            if size >= 100 {
                assert!(std::str::from_utf8(&a).unwrap().contains("\"seq\":\"0000000042\""));
                assert_ne!(a, b);
            }
        }
        let full = Readings::new(READING.len() + 2, 1, Shape::Array).next(1).to_vec();
        assert!(
            serde_json::from_slice::<serde_json::Value>(&full).is_ok(),
            "{}",
            String::from_utf8_lossy(&full)
        );
    }

    /// Object values are valid JSON objects of exactly the requested size, with a
    /// temperature a processor can read.
    #[test]
    fn object_readings_are_json_of_the_size() {
        for size in [OBJECT_BYTES_MIN, 100, 400] {
            let mut r = Readings::new(size, 3, Shape::Object);
            for seq in [0, 1, 99_999] {
                let v = r.next(seq).to_vec();
                assert_eq!(v.len(), size);
                let json: serde_json::Value = serde_json::from_slice(&v).expect("valid JSON");
                let temp = json["temp"].as_f64().expect("numeric temp");
                assert!((10.0..50.0).contains(&temp), "{temp}");
                assert_eq!(json["seq"].as_str().unwrap(), format!("{seq:010}"));
            }
        }
    }
}
