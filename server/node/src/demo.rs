//! `silt-broker demo` (and `silt demo`, which runs it): the whole system in one command. A
//! broker and a device bridge in this process (temporary data dir, loopback ports), a fleet of
//! simulated temperature and humidity sensors sending frames to the bridge (`silt_devsim`
//! driven by `silt_devsim::series`), the example smoothing and anomaly processors deployed on
//! their topics, and a live view of what flows, until Ctrl-C or `--duration`.
//!
//! Code map: `stack` (broker and bridge on a runtime of their own, and the temp dir),
//! `modules` (finding or building the example processors' wasm), `view` (what is shown, built
//! from status polls and the output topics; drawn by `view::screen` with ratatui, or printed
//! as lines or JSON by `view::lines`). This file is the glue.
//!
//! Deliberately absent: anything the demo does that a user could not do with `silt`,
//! `silt-bridge` and `silt-devsim` by hand; it only saves the typing.

mod modules;
mod stack;
mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use silt_client::{Client, ClientConfig, Consumer, ConsumerConfig, Deployment, FetchFrom, ProcessorLimits};
use silt_devsim::series::{Kind, Sensors, SeriesConfig};
use silt_devsim::{self as sim, Progress, SimConfig, Transport};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use self::stack::{Stack, StackConfig};
use self::view::{Mode, Observed, View};

/// Run the whole system in this process with simulated sensors, and watch it work.
///
/// Starts, on loopback and with a temporary data directory (removed on exit):
///
///  - a broker (QUIC on --listen, HTTP /health and /metrics on --admin-listen; ephemeral
///    ports by default, printed at the start, so `silt --broker ... --ca-cert ...` and
///    Prometheus can watch the same broker);
///
///  - a device bridge taking frames over TCP on --frames-listen (MQTT off);
///
///  - --devices simulated sensors (sim-00000, sim-00001, ...), registered in the broker's
///    device registry, each on its own connection, each sending a temperature and a humidity
///    reading --rate times a second: a daily cycle (a day lasts --day), a level and noise of
///    its own, slow drift on a --drift share of them, and injected faults (spikes, stuck
///    sensors, dropouts sent as NaN), all generated from --seed, so runs repeat;
///
///  - the example processors ema-smooth (-> sensors.temperature.smooth,
///    sensors.humidity.smooth) and anomaly-zscore (-> sensors.temperature.alerts,
///    sensors.humidity.alerts), deployed on sensors.temperature and sensors.humidity.
///
/// The view shows events per second into the bridge and the topics, each processor's events
/// in and out and lag, the smoothed values of a few devices, the alerts raised (with the
/// fault that caused each, as the simulation knows it) and the faults injected so far. It
/// is redrawn every --interval on a terminal; otherwise one status line per interval is
/// printed (one JSON object per line with --json), plus a line per alert. One device is given
/// a temperature spike at its 20th reading, so every run shows an alert early.
///
/// The processors' modules are ema_smooth.wasm and anomaly_zscore.wasm from --modules, else
/// from the workspace's target/wasm32-unknown-unknown/release or
/// target/wasm-examples/wasm32-unknown-unknown/release; when they are missing and the source
/// tree is there, they are built first, into target/wasm-examples, with
/// `cargo build --release --locked --target wasm32-unknown-unknown -p ema-smooth -p anomaly-zscore`
/// (adding the wasm32 target with rustup if needed).
///
/// Ctrl-C (or SIGTERM), or the end of --duration, stops the devices, shuts the broker down
/// cleanly and removes the data. Exit codes: 0 stopped as asked; 1 the demo could not start
/// or failed (the message says why); 2 bad arguments. `silt demo` runs this command with the
/// same arguments (its --broker and --ca-cert flags do not apply).
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print JSON lines (`started`, `status`, `alert`, `summary`) instead of the view.
    #[arg(long)]
    json: bool,
    /// Simulated devices, each on its own TCP connection to the bridge (1 to 10000).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    devices: u32,
    /// Readings per second of each device (each one a temperature and a humidity), above 0
    /// and at most 50.
    #[arg(long, default_value_t = 1.0, value_name = "PER_S", value_parser = parse_rate)]
    rate: f64,
    /// How long a simulated day lasts (e.g. 120s, 10m, 24h); it must span at least 60
    /// readings at --rate.
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = parse_duration)]
    day: Duration,
    /// Seed of the series, the faults and the devices' timing: the same seed gives the same
    /// readings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this long (e.g. 30s, 5m); default: run until Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Scale of the fault rates: 0 injects none (except the early spike), 1 the default mix,
    /// up to 20.
    #[arg(long, default_value_t = 1.0, value_name = "SCALE", value_parser = parse_faults)]
    faults: f64,
    /// Share of devices whose sensors drift slowly (0 to 1).
    #[arg(long, default_value_t = 0.05, value_name = "SHARE", value_parser = parse_share)]
    drift: f64,
    /// Directory holding ema_smooth.wasm and anomaly_zscore.wasm (default: the workspace's
    /// build output, built if missing).
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// How often the view is redrawn, or a status line printed (100ms to 1m).
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_interval)]
    interval: Duration,
    /// The broker's QUIC address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,
    /// The broker's HTTP admin address: GET /health and /metrics (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    admin_listen: SocketAddr,
    /// The bridge's TCP frame listener (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    frames_listen: SocketAddr,
}

/// Readings a simulated day must span: with fewer, the daily cycle moves more between two
/// readings than the anomaly detector's short window can follow.
const READINGS_PER_DAY_MIN: f64 = 60.0;
/// Highest --rate: 50 readings a second from 10,000 devices is already far past a demo.
const RATE_MAX: f64 = 50.0;
/// The reading at which one device gets its guaranteed temperature spike: after the
/// detector's baseline is full (`ANOMALY_WINDOW` readings), with a margin.
const EARLY_SPIKE_SEQ: u32 = 20;
/// Readings in the anomaly detector's baseline. Short against a day (at least 60 readings),
/// so that the daily cycle within the window stays small next to a spike; long enough that
/// the noise estimate is stable. Checked by `tests::detector_finds_spikes_without_false_alarms`.
const ANOMALY_WINDOW: u32 = 12;
/// EMA smoothing factor: lags the daily cycle by about (1 - a) / a = 4 readings.
const EMA_ALPHA: &str = "0.2";
/// Without --duration the devices are told to run this long (until Ctrl-C, in practice).
const RUN_FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);
/// After --duration, how long the demo waits for the processors and the view to catch up
/// with the last readings.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting every device and waiting for the last acks, beyond --duration.
const SIM_SLACK: Duration = Duration::from_secs(60);
/// Output records buffered between the topic readers and the view.
const OBSERVED_QUEUE: usize = 256;

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        return Err("must be longer than 0 s".into());
    }
    Ok(d)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(60) {
        return Err("must be between 100ms and 1m".into());
    }
    Ok(d)
}

fn parse_number(s: &str, min: f64, max: f64, min_inclusive: bool) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    let above_min = if min_inclusive { v >= min } else { v > min };
    if !(above_min && v <= max) {
        let low = if min_inclusive { "at least" } else { "above" };
        return Err(format!("must be {low} {min} and at most {max}"));
    }
    Ok(v)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    parse_number(s, 0.0, RATE_MAX, false)
}

fn parse_faults(s: &str) -> Result<f64, String> {
    parse_number(s, 0.0, 20.0, true)
}

fn parse_share(s: &str) -> Result<f64, String> {
    parse_number(s, 0.0, 1.0, true)
}

/// One processor the demo deploys.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub name: String,
    pub kind: Kind,
    pub smooth: bool,
    pub input: String,
    pub output: String,
    pub params: Vec<(String, String)>,
}

/// The four processors: smoothing and anomaly detection on each channel. The detector's
/// floors under the standard deviation keep sensor noise on a flat stretch of the day from
/// looking anomalous; they are a few times the noise of the noisiest device. The detector's
/// windows are in time: `ANOMALY_WINDOW` readings at `rate` readings a second.
pub(crate) fn plans(rate: f64) -> Vec<Plan> {
    let mut plans = Vec::new();
    for (kind, min_std) in [(Kind::Temperature, "0.5"), (Kind::Humidity, "2")] {
        let input = format!("sensors.{}", kind.as_str());
        plans.push(Plan {
            name: format!("{}-smooth", kind.as_str()),
            kind,
            smooth: true,
            output: format!("{input}.smooth"),
            input: input.clone(),
            params: vec![("field".into(), "value".into()), ("alpha".into(), EMA_ALPHA.into())],
        });
        let window = format!("{}ms", (f64::from(ANOMALY_WINDOW) * 1000.0 / rate).ceil());
        plans.push(Plan {
            name: format!("{}-anomaly", kind.as_str()),
            kind,
            smooth: false,
            output: format!("{input}.alerts"),
            input,
            params: vec![
                ("field".into(), "value".into()),
                ("window".into(), window.clone()),
                ("warmup".into(), window.clone()),
                ("threshold".into(), "6".into()),
                ("min_std".into(), min_std.into()),
                ("cooldown".into(), window),
            ],
        });
    }
    plans
}

/// SIGINT (Ctrl-C) and SIGTERM, listened to from the start so that neither kills the process
/// before it has cleaned up.
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Runs the demo on a runtime of its own: `silt-broker demo`. Errors are one line on stderr.
pub fn main(args: DemoArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silt-broker demo: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let readings_per_day = args.day.as_secs_f64() * args.rate;
    if readings_per_day < READINGS_PER_DAY_MIN {
        bail!(
            "--day {} at --rate {} spans {readings_per_day:.0} readings; a day needs at least {READINGS_PER_DAY_MIN} (lengthen --day or raise --rate)",
            humantime::format_duration(args.day),
            args.rate
        );
    }
    let mut signals = Signals::new()?;
    let mode = Mode::detect(args.json);
    let modules = tokio::select! {
        m = modules::load(args.modules.as_deref()) => m?,
        () = signals.recv() => return Ok(()),
    };
    if args.devices > 1000 {
        // Each device holds a socket, and so does the bridge's side of it.
        sim::raise_open_files_limit();
    }
    let stack = tokio::select! {
        s = Stack::start(StackConfig {
            listen: args.listen,
            admin_listen: args.admin_listen,
            frames_listen: args.frames_listen,
        }) => s?,
        () = signals.recv() => return Ok(()),
    };
    let result = demo(&stack, &args, &modules, mode, &mut signals).await;
    let stopped = stack.stop().await;
    let summary = result?;
    stopped.context("stopping the broker")?;
    view::print_stopped(mode, &summary);
    Ok(())
}

/// Why the demo ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Duration,
    Interrupted,
}

/// Sets everything up on a running stack, shows the view until the end, and returns the
/// summary to print once the broker is down.
async fn demo(
    stack: &Stack,
    args: &DemoArgs,
    modules: &modules::Modules,
    mode: Mode,
    signals: &mut Signals,
) -> anyhow::Result<view::Summary> {
    let config = ClientConfig::new(stack.broker.to_string(), &stack.ca_cert)?;
    let credential = stack.token.clone().map(silt_client::Credential::Token);
    let client = Client::connect(config.with_credential(credential))
        .await
        .context("connecting to the demo's broker")?;
    let setup = async {
        for kind in [Kind::Temperature, Kind::Humidity] {
            let topic = format!("sensors.{}", kind.as_str());
            client.create_topic(&topic, 1, None, None).await.with_context(|| format!("creating {topic}"))?;
        }
        let plans = plans(args.rate);
        for p in &plans {
            let wasm = if p.smooth { modules.ema_smooth.clone() } else { modules.anomaly_zscore.clone() };
            let d = Deployment {
                name: p.name.clone(),
                input: p.input.clone(),
                output: p.output.clone(),
                params: p.params.clone(),
                from: Some(FetchFrom::Earliest),
                limits: ProcessorLimits::default(),
            };
            client.deploy_processor(d, wasm).await.with_context(|| format!("deploying {}", p.name))?;
        }
        let devices =
            sim::provision(&client, 0, args.devices, 64).await.context("registering the devices")?;
        anyhow::Ok((plans, devices))
    };
    let (plans, devices) = tokio::select! {
        r = setup => r?,
        () = signals.recv() => {
            client.close().await;
            return Ok(view::Summary::interrupted_early());
        }
    };

    let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
    let sensors = Arc::new(
        Sensors::new(
            SeriesConfig {
                seed: args.seed,
                rate_per_s: args.rate,
                day: args.day,
                drift_fraction: args.drift,
                faults: args.faults,
                early_spike_seq: Some(EARLY_SPIKE_SEQ),
            },
            &ids,
        )
        .map_err(anyhow::Error::msg)?,
    );
    let run_for = args.duration.unwrap_or(RUN_FOREVER);
    let mut config = SimConfig::new(stack.frames.to_string(), Transport::Tcp, devices);
    config.rate_per_s = args.rate;
    config.frames = None;
    config.duration = Some(run_for);
    config.seed = args.seed;
    config.source = Some(sensors.clone());
    config.timeout = run_for + SIM_SLACK;
    let progress = Arc::new(Progress::default());
    let mut fleet = tokio::spawn(sim::run(config, progress.clone()));

    let (tx, mut observed) = mpsc::channel(OBSERVED_QUEUE);
    let readers: Vec<_> =
        plans.iter().map(|p| tokio::spawn(read_output(client.clone(), p.clone(), tx.clone()))).collect();
    drop(tx);

    let started = Instant::now();
    let mut view = View::new(
        view::Header {
            devices: args.devices,
            rate: args.rate,
            day: args.day,
            seed: args.seed,
            broker: stack.broker,
            admin: stack.admin,
            frames: stack.frames,
            ca_cert: stack.ca_cert.clone(),
            data_dir: stack.data_dir.clone(),
        },
        plans,
        sensors.clone(),
        started,
    );
    view.print_start(mode)?;
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set once the devices are done (after --duration): from then on the view only waits to
    // catch up with what they sent.
    let mut drain_until: Option<Instant> = None;
    let mut sim_report = None;
    let ending = loop {
        tokio::select! {
            _ = tick.tick() => {
                let statuses = gather(&client, &view).await?;
                view.update(Instant::now(), &progress, statuses);
                view.render(mode);
                if let Some(until) = drain_until {
                    if view.caught_up() || Instant::now() >= until {
                        break Ending::Duration;
                    }
                }
            }
            Some(o) = observed.recv() => {
                if let Observed::Failed(e) = o {
                    bail!(e);
                }
                view.observe(o, Instant::now(), mode);
            }
            done = &mut fleet, if drain_until.is_none() => {
                let report = done.context("the device simulation panicked")?;
                sim_report = Some(report.map_err(|e| anyhow::anyhow!("the simulated devices: {e}"))?);
                drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            () = signals.recv() => break Ending::Interrupted,
        }
    };
    fleet.abort();
    for r in &readers {
        r.abort();
    }
    // The last numbers, for the summary.
    if let Ok(statuses) = gather(&client, &view).await {
        view.update(Instant::now(), &progress, statuses);
    }
    client.close().await;
    let connected = progress.connected.load(Ordering::Relaxed);
    Ok(view.summary(ending, Instant::now(), connected, sim_report.as_ref()))
}

/// Topic and processor status, polled each interval.
async fn gather(client: &Client, view: &View) -> anyhow::Result<view::Statuses> {
    let mut topics = Vec::new();
    for topic in view.input_topics() {
        let info = client.describe_topic(&topic).await.with_context(|| format!("describing {topic}"))?;
        topics.push((topic, info.partitions.iter().map(|p| p.high_watermark).sum()));
    }
    let mut processors = Vec::new();
    for name in view.processor_names() {
        processors.push(client.processor_status(&name).await.with_context(|| format!("status of {name}"))?);
    }
    Ok(view::Statuses { topics, processors })
}

/// Follows one processor's output topic from the start and passes its records to the view.
async fn read_output(client: Client, plan: Plan, tx: mpsc::Sender<Observed>) {
    let config = ConsumerConfig { from: FetchFrom::Earliest, follow: true, ..Default::default() };
    let mut consumer = match Consumer::new(&client, &plan.output, config).await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Observed::Failed(format!("reading {}: {e}", plan.output))).await;
            return;
        }
    };
    while let Some(fetched) = consumer.next_batch().await {
        let parsed = fetched.map_err(|e| e.to_string()).and_then(|f| view::parse_output(&plan, &f));
        let msg = parsed.unwrap_or_else(|e| Observed::Failed(format!("reading {}: {e}", plan.output)));
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anomaly_zscore::AnomalyZscore;
    use silt_devsim::series::{Cause, Condition, FrameReadings, ReadingSource};
    use silt_processor::testing::Harness;

    /// The detector as the demo deploys it, over the demo's series (40 devices, for days, at
    /// the default settings, at the integration test's faster rate and with a longer day): it
    /// alerts on nearly every spike, and almost never on a reading the series did not disturb.
    #[test]
    fn detector_finds_spikes_without_false_alarms() {
        for (rate, day_s, days) in [(1.0, 120, 10), (4.0, 120, 3), (1.0, 600, 2)] {
            let readings = days * (rate * day_s as f64) as u32;
            let devices: Vec<String> = (0..40).map(sim::device_id).collect();
            let sensors = Sensors::new(
                SeriesConfig {
                    seed: 11,
                    rate_per_s: rate,
                    day: Duration::from_secs(day_s),
                    drift_fraction: 0.05,
                    faults: 1.0,
                    early_spike_seq: Some(EARLY_SPIKE_SEQ),
                },
                &devices,
            )
            .unwrap();
            for plan in plans(rate).iter().filter(|p| !p.smooth) {
                let params: Vec<(&str, &str)> =
                    plan.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mut h = Harness::<AnomalyZscore>::new(&params).unwrap();
                let (mut spikes, mut found, mut false_alarms, mut explained) = (0, 0, 0, 0);
                for seq in 1..=readings {
                    let mut batch = Vec::new();
                    for id in &devices {
                        let mut out = FrameReadings::new();
                        sensors.readings(id, seq, &mut out);
                        let sample = sensors.sample(sensors.model(id).unwrap(), seq);
                        let spiked = match sample.condition {
                            Condition::Spike { temperature, humidity } => match plan.kind {
                                Kind::Temperature => temperature,
                                Kind::Humidity => humidity,
                            },
                            _ => false,
                        };
                        spikes += u32::from(spiked);
                        let v = match plan.kind {
                            Kind::Temperature => sample.temperature,
                            Kind::Humidity => sample.humidity,
                        };
                        let value = if v.is_finite() { v.to_string() } else { "null".into() };
                        batch.push((
                            (f64::from(seq) * 1000.0 / rate) as i64,
                            id.clone(),
                            format!(r#"{{"device":"{id}","seq":{seq},"value":{value}}}"#),
                            spiked,
                        ));
                    }
                    let records: Vec<(i64, &str, &str)> =
                        batch.iter().map(|(t, k, v, _)| (*t, k.as_str(), v.as_str())).collect();
                    for alert in h.process(&records).unwrap() {
                        let value = alert.number("value").unwrap();
                        match sensors.explain(alert.key_str(), plan.kind, value) {
                            Some(Cause::Spike) => found += 1,
                            Some(_) => explained += 1,
                            None => false_alarms += 1,
                        }
                    }
                }
                let total = readings as usize * devices.len();
                eprintln!(
                    "rate {rate} day {day_s}s {}: {spikes} spikes, {found} found, {explained} after episodes, {false_alarms} false alarms in {total} readings",
                    plan.name
                );
                assert!(spikes > 0);
                assert!(
                    found as f64 >= 0.9 * spikes as f64,
                    "{}: found {found} of {spikes} spikes",
                    plan.name
                );
                assert!(
                    false_alarms as f64 <= total as f64 / 5000.0,
                    "{}: {false_alarms} false alarms",
                    plan.name
                );
            }
        }
    }

    /// Bad flag values are refused by the parsers, with a message, never a panic.
    #[test]
    fn flag_parsers() {
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("51").is_err());
        assert!(parse_rate("nan").is_err());
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_faults("-1").is_err());
        assert_eq!(parse_faults("0"), Ok(0.0));
        assert!(parse_share("1.5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_interval("10ms").is_err());
    }
}
