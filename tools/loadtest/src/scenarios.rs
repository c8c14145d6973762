//! The scenarios that run against any target: produce, consume, replay, end to end, mixed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::Args;
use silt_client::{Deployment, FetchFrom};

use crate::payload::{self, Readings, Shape};
use crate::schedule::Pacer;
use crate::servers::Server;
use crate::stats::{Recorder, Report};
use crate::targets::{Kind, Target};
use crate::{progress, Common};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Produce,
    Consume,
    Replay,
    EndToEnd,
    Mixed,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct EndToEndArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The processor module Silt runs the events through (a .wasm file); it must keep every
    /// reading (e.g. threshold_filter.wasm with --param min=0). Required for the silt target.
    #[arg(long, value_name = "FILE")]
    module: Option<PathBuf>,
    /// A module parameter; repeat for more.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = crate::pipeline::parse_param)]
    params: Vec<(String, String)>,
}

impl EndToEndArgs {
    pub(crate) fn new(
        common: Common,
        module: Option<PathBuf>,
        params: Vec<(String, String)>,
    ) -> EndToEndArgs {
        EndToEndArgs { common, module, params }
    }
}

/// The throughput-over-time resolution: fine for short runs, a second for long ones.
fn bucket(c: &Common) -> Duration {
    match c.duration {
        Some(d) if d >= Duration::from_secs(60) => Duration::from_secs(1),
        _ => Duration::from_millis(250),
    }
}

/// The target of `kind` as the flags of `c` name it.
pub(crate) fn target_from_flags(kind: Kind, c: &Common) -> Target {
    let (addr, ca_cert) = match kind {
        Kind::Silt => (c.broker.clone(), Some(c.ca_cert.clone())),
        Kind::Nats => (c.nats.clone(), None),
        Kind::Mqtt => (c.mqtt.clone(), None),
    };
    let (token, token_file) = match kind {
        Kind::Silt => (c.token.clone(), c.token_file.clone()),
        Kind::Nats | Kind::Mqtt => (None, None),
    };
    Target { kind, label: kind.name().to_string(), addr, ca_cert, token, token_file }
}

/// Runs `scenario` against each target of `c` in turn (starting and stopping each with
/// `--start`); the reports of all, in order.
pub(crate) async fn run(
    scenario: Scenario,
    c: &Common,
    e2e: Option<&EndToEndArgs>,
) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    for &kind in &c.target {
        let mut server = match c.start {
            true => Some(Server::start(kind, kind.name(), &c.silt_fsync).await?),
            false => None,
        };
        let target = server.as_ref().map_or_else(|| target_from_flags(kind, c), |s| s.target().clone());
        let outcome = run_on(scenario, &target, server.as_mut(), c, e2e).await;
        if let Some(s) = server.as_mut() {
            s.stop().await;
        }
        reports.extend(outcome.with_context(|| format!("target {}", target.label))?);
    }
    Ok(reports)
}

/// Runs `scenario` against one target; `server` is the target's process when the harness
/// started it (replay restarts it).
pub(crate) async fn run_on(
    scenario: Scenario,
    target: &Target,
    server: Option<&mut Server>,
    c: &Common,
    e2e: Option<&EndToEndArgs>,
) -> anyhow::Result<Vec<Report>> {
    if !target.kind.has_log() && matches!(scenario, Scenario::Consume | Scenario::Replay) {
        bail!(
            "{} keeps no log: consume and replay read history, which MQTT brokers do not keep",
            target.kind
        );
    }
    Ok(match scenario {
        Scenario::Produce => vec![produce(target, c, Shape::Array, false, "produce").await?],
        Scenario::Consume => vec![read_back(target, c, c.count, "consume").await?],
        Scenario::Replay => {
            let written = produce(target, c, Shape::Array, false, "replay-write").await?;
            match server {
                Some(server) => server.restart().await?,
                None => eprintln!(
                    "silt-loadtest: {} was not started by the harness (--start): reading without a restart",
                    target.label
                ),
            }
            vec![read_back(target, c, written.events, "replay").await?]
        }
        Scenario::EndToEnd => {
            let e2e = e2e.context("end-to-end needs its arguments")?;
            vec![end_to_end(target, c, e2e).await?]
        }
        Scenario::Mixed => mixed(target, c).await?,
    })
}

/// Producers (`c.producers`, each on its own connection) send `c.count` records (or for
/// `c.duration`), closed loop or open loop at `c.rate`; the report of their acks. With
/// `stamped`, each value carries its send time for a subscriber to time delivery.
pub(crate) async fn produce(
    target: &Target,
    c: &Common,
    shape: Shape,
    stamped: bool,
    scenario: &str,
) -> anyhow::Result<Report> {
    let load = c.load();
    target.prepare(&load).await?;
    let producers = u64::from(c.producers.max(1));
    let recorder = Arc::new(Recorder::new(Instant::now(), bucket(c)));
    let mut publishers = Vec::new();
    for i in 0..producers {
        publishers.push(target.publisher(&load, i as u32, recorder.clone()).await?);
    }
    let bar = progress(c.count);
    bar.set_prefix(format!("{} {scenario}", target.label));
    let start = tokio::time::Instant::now();
    recorder.restart(start.into_std());
    let deadline = c.duration.map(|d| start + d);
    let mut tasks = Vec::new();
    for (i, mut publisher) in (0..producers).zip(publishers) {
        let share = c.count / producers + u64::from(i < c.count % producers);
        let mut pacer = Pacer::new(start, c.rate.map(|r| r / producers as f64));
        let (bar, load) = (bar.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut readings = Readings::new(load.message_size, 0x5eed ^ (i + 1), shape);
            let batch = u64::from(load.batch_size);
            let mut sent = 0u64;
            while sent < share {
                let from = pacer.next().await;
                if deadline.is_some_and(|d| from >= d) {
                    break;
                }
                let from = from.into_std();
                let seq = if stamped { payload::stamp(from) } else { i * share + sent };
                let partition = ((i + sent / batch) % u64::from(load.partitions)) as u32;
                publisher.send(partition, readings.next(seq), from).await?;
                sent += 1;
                if sent.is_multiple_of(256) {
                    bar.inc(256);
                }
            }
            publisher.finish().await?;
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.context("producer task")??;
    }
    let end = Instant::now();
    bar.finish_and_clear();
    let mut report = recorder.report(scenario, &target.label, end);
    report.rate = c.rate;
    if report.events < sent {
        bail!("{} of {sent} records were acknowledged", report.events);
    }
    Ok(report)
}

/// Reads up to `count` stored records from the start with `c.consumers` readers, each taking
/// a share of the partitions.
pub(crate) async fn read_back(
    target: &Target,
    c: &Common,
    count: u64,
    scenario: &str,
) -> anyhow::Result<Report> {
    let load = c.load();
    let stored = target.stored(&load).await?.unwrap_or(0);
    let count = count.min(stored);
    if count == 0 {
        bail!("topic {} holds no records to read", load.topic);
    }
    let readers = c.consumers.unwrap_or(c.producers).clamp(1, load.partitions);
    let recorder = Arc::new(Recorder::new(Instant::now(), bucket(c)));
    let bar = progress(count);
    bar.set_prefix(format!("{} {scenario}", target.label));
    let ticker = tick(bar.clone(), recorder.clone());
    let mut tasks = Vec::new();
    for r in 0..readers {
        let partitions: Vec<u32> = (0..load.partitions).filter(|p| p % readers == r).collect();
        let (target, load, recorder) = (target.clone(), load.clone(), recorder.clone());
        tasks.push(tokio::spawn(
            async move { target.read_from_start(&load, partitions, count, recorder).await },
        ));
    }
    for t in tasks {
        t.await.context("reader task")??;
    }
    let end = Instant::now();
    ticker.abort();
    bar.finish_and_clear();
    Ok(recorder.report(scenario, &target.label, end))
}

/// Moves `bar` with the recorder's event count while a run goes on.
fn tick(bar: indicatif::ProgressBar, recorder: Arc<Recorder>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            bar.set_position(recorder.events());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Stamped readings through a processor (Silt) or straight to a subscriber (peers); the
/// report of the subscriber: delivery latency from each reading's send time.
async fn end_to_end(target: &Target, c: &Common, e2e: &EndToEndArgs) -> anyhow::Result<Report> {
    let load = c.load();
    target.prepare(&load).await?;
    let run = silt_wire::time::unix_ms(SystemTime::now());
    let mut deployed = None;
    let watched = match target.kind {
        Kind::Silt => {
            let module = e2e.module.as_ref().context(
                "the silt target needs --module, the processor to run the events through (one that keeps every reading)",
            )?;
            let wasm = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
            let name = format!("{}-e2e-{run}", load.topic);
            let output = format!("{name}-out");
            let client = crate::targets::silt_client(target).await?;
            client
                .deploy_processor(
                    Deployment {
                        name: name.clone(),
                        input: load.topic.clone(),
                        output: output.clone(),
                        params: e2e.params.clone(),
                        from: Some(FetchFrom::Latest),
                        limits: Default::default(),
                    },
                    wasm,
                )
                .await
                .context("deploying the processor")?;
            deployed = Some((client, name));
            output
        }
        _ => load.topic.clone(),
    };
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let delivered = Arc::new(Recorder::new(Instant::now(), bucket(c)));
    let subscription = target.subscribe(&load, &watched, expected.clone(), delivered.clone()).await?;
    let start = Instant::now();
    delivered.restart(start);
    let produced = produce(target, c, Shape::Object, true, "end-to-end (produce)").await;
    let outcome = match produced {
        Ok(p) => {
            expected.store(p.events, Ordering::Relaxed);
            subscription.wait(tokio::time::Instant::now() + c.timeout).await.map(|()| p)
        }
        Err(e) => Err(e),
    };
    let end = Instant::now();
    if let Some((client, name)) = deployed {
        let _ = client.undeploy_processor(&name).await;
        let _ = client.delete_topic(&format!("{name}-out")).await;
        client.close().await;
    }
    outcome?;
    let mut report = delivered.report("end-to-end", &target.label, end);
    report.rate = c.rate;
    Ok(report)
}

/// History first, then live producers, a live subscriber and a replay of the history at once.
async fn mixed(target: &Target, c: &Common) -> anyhow::Result<Vec<Report>> {
    let load = c.load();
    target.prepare(&load).await?;
    let history = match target.kind.has_log() {
        true => produce(target, c, Shape::Object, false, "mixed history").await?.events,
        false => 0,
    };
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let delivered = Arc::new(Recorder::new(Instant::now(), bucket(c)));
    let subscription = target.subscribe(&load, &load.topic, expected.clone(), delivered.clone()).await?;
    delivered.restart(Instant::now());
    let live = async {
        let p = produce(target, c, Shape::Object, true, "mixed produce").await?;
        expected.store(p.events, Ordering::Relaxed);
        subscription.wait(tokio::time::Instant::now() + c.timeout).await?;
        anyhow::Ok((p, delivered.report("mixed deliver", &target.label, Instant::now())))
    };
    let replay = async {
        match history {
            0 => Ok(None),
            n => read_back(target, c, n, "mixed replay").await.map(Some),
        }
    };
    let (live, replay) = tokio::join!(live, replay);
    let (produced, mut deliver) = live?;
    deliver.rate = c.rate;
    let mut reports = vec![produced, deliver];
    reports.extend(replay?);
    Ok(reports)
}
