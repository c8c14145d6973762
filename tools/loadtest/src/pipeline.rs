//! `silt-loadtest pipeline`: what a deployed processor costs end to end, through a real broker.
//!
//! 1. *Input*: `--count` sensor readings (JSON objects of `--message-size` bytes) are produced
//!    to `--topic`, as `produce` does.
//! 2. *Deploy to first processed event*: `t0` is taken just before the deploy request of
//!    `--module` with `from = latest` (its output topic is new). When the deploy returns
//!    (module compiled, `silt_init` run, pipeline started: `deploy_ms`), a long-poll fetch of
//!    the output topic's partition 0 is started and one probe reading is produced to input
//!    partition 0. `t1` is when that fetch returns the probe's output: `first_event_ms` is
//!    `t1 - t0`. The module must emit a record for the probe, a reading at 45 degrees. This
//!    runs twice: cold (the broker compiles the module) and warm (the same module deployed
//!    under a second name: the broker has it compiled and loaded already).
//! 3. *Throughput*: the module is deployed again under another name with `from = earliest`,
//!    and the run ends when the processor's lag is 0 with every record that was in the topic
//!    at deploy processed; events/s counts from just before that deploy request (the module is
//!    cached by then, so it is not compiled again). Status is polled every 2 ms.
//!
//! The three processors are undeployed and their output topics deleted afterwards (`--keep`
//! leaves them). Names carry the start time, so runs against one broker do not collide.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::Args;
use silt_client::{
    Client, Compression, Deployment, FetchFrom, ProcessorInfo, ProcessorState, Producer, ProducerConfig,
    ProducerRecord,
};
use silt_wire::{Request, Response};

use crate::payload::{Shape, OBJECT_BYTES_MIN};
use crate::stats::Report;
use crate::targets::{self, Kind};
use crate::{produce, progress, scenarios, Common};

/// The probe of phase 2: a reading any sensor processor keeps (a filter on temperature with a
/// threshold below 45, a smoother, a converter).
const PROBE: &str =
    r#"{"device":"dev-0000","seq":"9999999999","temp":45.00,"humidity":50.00,"battery":3.70}"#;
/// How often the throughput phase reads the processor's status; it bounds the error of the
/// measured duration.
const STATUS_POLL: Duration = Duration::from_millis(2);
/// Long-poll wait of one fetch of the probe's output (the broker may cap it lower).
const FETCH_WAIT_MS: u32 = 1000;

#[derive(Debug, Args)]
pub(crate) struct PipelineArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The processor module to deploy (a .wasm file, signed or not).
    #[arg(long, value_name = "FILE")]
    module: PathBuf,
    /// A module parameter; repeat for more.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Leave the processors and their output topics in place.
    #[arg(long)]
    keep: bool,
}

pub(crate) fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The outcome of one pipeline run.
#[derive(Debug, Clone)]
pub(crate) struct PipelineReport {
    module: String,
    module_bytes: usize,
    params: Vec<(String, String)>,
    partitions: u32,
    produce: Report,
    /// A deploy of a module the broker had not seen (compiled on deploy).
    cold: FirstEvent,
    /// The same module deployed again under another name (compiled and loaded already).
    warm: FirstEvent,
    /// Deploy request round trip of the throughput phase (the module cached).
    cached_deploy_ms: f64,
    events_in: u64,
    events_out: u64,
    seconds: f64,
    events_per_sec: f64,
}

impl PipelineReport {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let params: serde_json::Map<String, serde_json::Value> =
            self.params.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect();
        serde_json::json!({
            "scenario": "pipeline",
            "module": self.module,
            "module_bytes": self.module_bytes,
            "params": params,
            "partitions": self.partitions,
            "produce": self.produce.to_json(),
            "deploy_ms": self.cold.deploy_ms,
            "probe_ack_ms": self.cold.probe_ack_ms,
            "first_event_ms": self.cold.first_event_ms,
            "warm_deploy_ms": self.warm.deploy_ms,
            "warm_probe_ack_ms": self.warm.probe_ack_ms,
            "warm_first_event_ms": self.warm.first_event_ms,
            "cached_deploy_ms": self.cached_deploy_ms,
            "events": self.events_in,
            "events_out": self.events_out,
            "seconds": self.seconds,
            "events_per_sec": self.events_per_sec,
        })
    }

    pub(crate) fn to_text(&self) -> String {
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{}\npipeline: {} ({} bytes{}{}), {} partition(s)\n\
             deploy to first processed event, cold: {:.1} ms (deploy {:.1} ms with compile, probe durable at {:.1} ms)\n\
             deploy to first processed event, warm: {:.1} ms (deploy {:.1} ms, probe durable at {:.1} ms)\n\
             throughput: {} events in {:.2} s: {:.0} events/s, {} events out (deploy of the cached module {:.1} ms)",
            self.produce.to_text(),
            self.module,
            self.module_bytes,
            if params.is_empty() { "" } else { ", " },
            params.join(" "),
            self.partitions,
            self.cold.first_event_ms,
            self.cold.deploy_ms,
            self.cold.probe_ack_ms,
            self.warm.first_event_ms,
            self.warm.deploy_ms,
            self.warm.probe_ack_ms,
            self.events_in,
            self.seconds,
            self.events_per_sec,
            self.events_out,
            self.cached_deploy_ms,
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) async fn run(a: &PipelineArgs) -> anyhow::Result<PipelineReport> {
    let c = &a.common;
    if c.message_size < OBJECT_BYTES_MIN {
        bail!("--message-size must be at least {OBJECT_BYTES_MIN} bytes for sensor reading objects");
    }
    let wasm = std::fs::read(&a.module).with_context(|| format!("reading {}", a.module.display()))?;
    // produce creates the topic when it does not exist.
    let client = targets::silt_client(&scenarios::target_from_flags(Kind::Silt, c)).await?;
    let produced = produce(c, Shape::Object).await?;
    let partitions = client.describe_topic(&c.topic).await?.partitions.len() as u32;

    let run = silt_wire::time::unix_ms(SystemTime::now());
    let cold = format!("{}-cold-{run}", c.topic);
    let warm = format!("{}-warm-{run}", c.topic);
    let all = format!("{}-all-{run}", c.topic);
    let deployment = |name: &str, from: FetchFrom| Deployment {
        name: name.to_string(),
        input: c.topic.clone(),
        output: format!("{name}-out"),
        params: a.params.clone(),
        from: Some(from),
        limits: Default::default(),
    };

    // Phase 2: deploy to first processed event, cold and warm. The probe's producer is set up
    // beforehand so that its metadata request is not timed.
    let probe_config =
        ProducerConfig { linger: Duration::ZERO, compression: Compression::None, ..Default::default() };
    let probe = Producer::new(&client, &c.topic, probe_config).await?;
    let deadline = Instant::now() + c.timeout;
    let cold_run =
        first_event(&client, &probe, deployment(&cold, FetchFrom::Latest), wasm.clone(), deadline).await?;
    let warm_run =
        first_event(&client, &probe, deployment(&warm, FetchFrom::Latest), wasm.clone(), deadline).await?;
    probe.close().await?;

    // Phase 3: throughput from the earliest offset.
    let t0 = Instant::now();
    let info = client
        .deploy_processor(deployment(&all, FetchFrom::Earliest), wasm.clone())
        .await
        .context("deploy")?;
    let cached_deploy = t0.elapsed();
    let target: u64 = info.partitions.iter().map(|p| p.high_watermark.saturating_sub(p.checkpoint)).sum();
    let bar = progress(target);
    let info = loop {
        let info = client.processor_status(&all).await?;
        check_running(&info)?;
        bar.set_position(info.events_in);
        if info.lag == 0 && info.events_in >= target {
            break info;
        }
        if t0.elapsed() > c.timeout {
            bail!("{all} did not catch up within {:?}: {} of {target} events", c.timeout, info.events_in);
        }
        tokio::time::sleep(STATUS_POLL).await;
    };
    let elapsed = t0.elapsed();
    bar.finish_and_clear();

    if !a.keep {
        for name in [&cold, &warm, &all] {
            client.undeploy_processor(name).await?;
            client.delete_topic(&format!("{name}-out")).await?;
        }
    }
    client.close().await;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Ok(PipelineReport {
        module: a
            .module
            .file_name()
            .map_or_else(|| a.module.display().to_string(), |f| f.to_string_lossy().into()),
        module_bytes: wasm.len(),
        params: a.params.clone(),
        partitions,
        produce: produced,
        cold: cold_run,
        warm: warm_run,
        cached_deploy_ms: ms(cached_deploy),
        events_in: info.events_in,
        events_out: info.events_out,
        seconds,
        events_per_sec: info.events_in as f64 / seconds,
    })
}

/// Phase 2's timings, in ms from just before the deploy request.
#[derive(Debug, Clone, Copy)]
struct FirstEvent {
    /// The deploy request's round trip.
    deploy_ms: f64,
    /// The probe acknowledged (durable).
    probe_ack_ms: f64,
    /// A fetch of the output returned the probe's output record.
    first_event_ms: f64,
}

/// Deploys `d` (from the latest offset, to a new output topic), then produces one probe and
/// waits for its output.
async fn first_event(
    client: &Client,
    probe: &Producer,
    d: Deployment,
    wasm: Vec<u8>,
    deadline: Instant,
) -> anyhow::Result<FirstEvent> {
    let output = d.output.clone();
    let t0 = Instant::now();
    client.deploy_processor(d, wasm).await.context("deploy")?;
    let deployed = t0.elapsed();
    let fetch = tokio::spawn(first_output(client.clone(), output, deadline));
    probe.send(ProducerRecord { value: PROBE.as_bytes(), partition: Some(0), ..Default::default() }).await?;
    probe.flush().await?;
    let acked = t0.elapsed();
    let seen = fetch.await.context("fetch task")??;
    Ok(FirstEvent {
        deploy_ms: ms(deployed),
        probe_ack_ms: ms(acked),
        first_event_ms: ms(seen.duration_since(t0)),
    })
}

fn check_running(info: &ProcessorInfo) -> anyhow::Result<()> {
    if info.state != ProcessorState::Running {
        bail!(
            "processor {} is {:?}: {}",
            info.name,
            info.state,
            info.error.as_deref().unwrap_or("no message")
        );
    }
    Ok(())
}

/// Long-polls partition 0 of `topic` from offset 0 until a fetch returns a record; the
/// instant it returned.
async fn first_output(client: Client, topic: String, deadline: Instant) -> anyhow::Result<Instant> {
    loop {
        let request = Request::Fetch {
            topic: topic.clone(),
            partition: 0,
            from: FetchFrom::Offset(0),
            max_bytes: 1 << 20,
            max_wait_ms: FETCH_WAIT_MS,
            processor: None,
        };
        let (response, payload) = client.request(&request, Default::default()).await?;
        let seen = Instant::now();
        match response {
            Response::Fetched { high_watermark, .. } if high_watermark > 0 && !payload.is_empty() => {
                return Ok(seen)
            }
            Response::Fetched { .. } => {}
            other => bail!("unexpected response to a fetch of {topic}: {other:?}"),
        }
        if seen > deadline {
            bail!("no output in {topic} for the probe {PROBE}; does the module emit a record for it?");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters parse as KEY=VALUE, the value may hold '=' and be empty.
    #[test]
    fn params_parse() {
        assert_eq!(parse_param("min=30").unwrap(), ("min".into(), "30".into()));
        assert_eq!(parse_param("expr=a=b").unwrap(), ("expr".into(), "a=b".into()));
        assert_eq!(parse_param("k=").unwrap(), ("k".into(), String::new()));
        assert!(parse_param("=1").is_err());
        assert!(parse_param("novalue").is_err());
    }

    /// The probe is a reading the example processors act on.
    #[test]
    fn probe_is_a_reading() {
        let v: serde_json::Value = serde_json::from_str(PROBE).unwrap();
        assert_eq!(v["temp"].as_f64(), Some(45.0));
    }
}
