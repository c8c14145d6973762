//! The fleet: one task and one connection per device, started together, and the TCP driver of
//! frame devices.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use silt_frame::Deframer;
use silt_telemetry::latency::Percentiles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use crate::faults::Rng;
use crate::mqtt::{drive_mqtt, MqttDevice};
use crate::report::{latency_histogram, LATENCY_US_MAX};
use crate::{
    Counters, DeviceOutcome, DeviceSettings, FrameDevice, Progress, SimConfig, SimError, SimReport, Transport,
};

/// First and last pause between connection attempts of one device (doubling, with jitter).
const RECONNECT_FIRST: Duration = Duration::from_millis(20);
const RECONNECT_MAX: Duration = Duration::from_millis(1000);
/// Bytes read from a frame connection at a time.
const READ_BYTES: usize = 4096;

/// What every device task of a run shares.
pub(crate) struct Fleet {
    pub(crate) bridge: String,
    pub(crate) progress: Arc<Progress>,
    pub(crate) start: watch::Receiver<Option<Instant>>,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) connect_slots: Semaphore,
    latencies: Mutex<Histogram<u64>>,
}

/// What one device reported to the fleet's progress so far.
#[derive(Debug, Default)]
pub(crate) struct Reported {
    acked: u64,
    generated: u64,
}

impl Fleet {
    /// Moves a device's new latencies into the fleet's histogram, and its new counts into the
    /// run's progress.
    pub(crate) fn record(&self, samples: &mut Vec<u64>, counters: &Counters, reported: &mut Reported) {
        if !samples.is_empty() {
            let mut h = self.latencies.lock().expect("latency histogram");
            for us in samples.drain(..) {
                h.saturating_record(us.clamp(1, LATENCY_US_MAX));
            }
        }
        self.progress.bump(&self.progress.acked, counters.acked - reported.acked);
        self.progress.bump(&self.progress.generated, counters.generated - reported.generated);
        *reported = Reported { acked: counters.acked, generated: counters.generated };
    }
}

/// Runs the simulation: connects every device, starts them together, and returns when every
/// device had all its readings acked, or fails with [`SimError::Incomplete`] (whose report says
/// what is missing) when `config.timeout` passes first.
pub async fn run(config: SimConfig, progress: Arc<Progress>) -> Result<SimReport, SimError> {
    config.validate()?;
    let began = Instant::now();
    let (start_tx, start_rx) = watch::channel(None);
    let fleet = Arc::new(Fleet {
        bridge: config.bridge.clone(),
        progress: progress.clone(),
        start: start_rx,
        deadline: tokio::time::Instant::now() + config.timeout,
        connect_slots: Semaphore::new(config.connect_concurrency.max(1)),
        latencies: Mutex::new(latency_histogram()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..config.devices.len() {
        let s = DeviceSettings::of(&config, i);
        let fleet = fleet.clone();
        match config.transport {
            Transport::Tcp => tasks.spawn(drive_frames(FrameDevice::new(s, Instant::now()), fleet)),
            Transport::Mqtt => tasks.spawn(drive_mqtt(MqttDevice::new(s, Instant::now()), fleet)),
        };
    }
    let n = config.devices.len() as u64;
    let all_connected = progress.wait_for(config.timeout, |p| p.connected.load(Ordering::Relaxed) >= n).await;
    let connect_seconds = began.elapsed().as_secs_f64();
    let started = Instant::now();
    if all_connected {
        let _ = start_tx.send(Some(started));
    }
    let mut outcomes = Vec::with_capacity(config.devices.len());
    let mut counters = Counters::default();
    let mut finished = started;
    while let Some(done) = tasks.join_next().await {
        let (outcome, c, at) = done.expect("a device task panicked");
        counters.add(&c);
        finished = finished.max(at);
        outcomes.push(outcome);
    }
    outcomes.sort_by(|a, b| a.id.cmp(&b.id));
    if !all_connected {
        for o in outcomes.iter_mut().filter(|o| o.problem.is_none()) {
            o.complete = false;
            o.problem = Some("not every device connected in time, so none started".into());
        }
    }
    let seconds = finished.saturating_duration_since(started).as_secs_f64().max(1e-9);
    let h = fleet.latencies.lock().expect("latency histogram").clone();
    let report = SimReport {
        transport: config.transport,
        devices: config.devices.len(),
        seed: config.seed,
        faults: config.faults,
        frames_per_s: counters.acked as f64 / seconds,
        counters,
        connect_seconds,
        seconds,
        latency: Percentiles::of(&h),
        latencies: h,
        outcomes,
    };
    if report.incomplete() > 0 {
        return Err(SimError::Incomplete(Box::new(report)));
    }
    Ok(report)
}

/// Raises this process's soft limit of open files to its hard limit and returns the limit in
/// force (`None` if it cannot be read): each simulated device holds a socket, so 10,000 devices
/// need more than the usual soft limit of 1024.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// Pause before connection attempt `attempt` (0-based): doubling, with jitter from the
/// device's generator so a fleet does not reconnect in lockstep.
pub(crate) fn backoff(attempt: u32, rng: &mut Rng) -> Duration {
    let base = RECONNECT_FIRST.saturating_mul(1 << attempt.min(10)).min(RECONNECT_MAX);
    base.mul_f64(0.5 + rng.next_f64() / 2.0)
}

async fn connect_tcp(fleet: &Fleet, rng: &mut Rng) -> Option<TcpStream> {
    let mut attempt = 0;
    loop {
        let result = {
            let _slot = fleet.connect_slots.acquire().await.expect("never closed");
            tokio::time::timeout_at(fleet.deadline, TcpStream::connect(&fleet.bridge)).await.ok()?
        };
        match result {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            Err(_) => {
                // A refused connection is a bridge not up yet, or restarting: keep trying until
                // the run's deadline.
                let pause = backoff(attempt, rng);
                attempt += 1;
                if tokio::time::timeout_at(fleet.deadline, tokio::time::sleep(pause)).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Drives one frame device over TCP until it is done, fails, or the run's time is up.
async fn drive_frames(mut dev: FrameDevice, fleet: Arc<Fleet>) -> (DeviceOutcome, Counters, Instant) {
    let mut start = fleet.start.clone();
    let mut jitter = Rng::new(dev.s.rng.clone().next_u64());
    let mut counted_connected = false;
    let mut out = Vec::with_capacity(READ_BYTES);
    let mut buf = vec![0u8; READ_BYTES];
    let mut latencies = Vec::new();
    let mut reported = Reported::default();
    let mut deframer = Box::new(Deframer::new());
    let mut problem = None;
    'connection: while !dev.is_done() && dev.failed().is_none() {
        let Some(stream) = connect_tcp(&fleet, &mut jitter).await else {
            problem = Some("the run's time was up while connecting".to_string());
            break;
        };
        let (mut rd, mut wr) = stream.into_split();
        *deframer = Deframer::new();
        dev.connected();
        loop {
            // Until the fleet starts, only the hello goes out.
            if dev.has_base() && !dev.is_started() {
                if let Some(at) = *start.borrow() {
                    dev.start(at);
                }
            }
            out.clear();
            let reconnect = dev.poll_transmit(Instant::now(), &mut out);
            if !out.is_empty() && wr.write_all(&out).await.is_err() {
                dev.connection_lost();
                continue 'connection;
            }
            if dev.is_up() && !counted_connected {
                counted_connected = true;
                fleet.progress.bump(&fleet.progress.connected, 1);
            }
            dev.drain_latencies(&mut latencies);
            fleet.record(&mut latencies, &dev.counters(), &mut reported);
            if dev.is_done() || dev.failed().is_some() {
                break 'connection;
            }
            if reconnect {
                dev.disconnected();
                continue 'connection;
            }
            let wake = dev.poll_timeout().map(tokio::time::Instant::from_std);
            let wait_start = dev.has_base() && !dev.is_started();
            tokio::select! {
                read = rd.read(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        dev.connection_lost();
                        continue 'connection;
                    }
                    Ok(n) => dev.handle_bytes(&mut deframer, &buf[..n], Instant::now()),
                },
                () = sleep_until_opt(wake) => dev.handle_timeout(Instant::now()),
                changed = start.changed(), if wait_start => {
                    if changed.is_err() {
                        break 'connection;
                    }
                }
                () = tokio::time::sleep_until(fleet.deadline) => {
                    break 'connection;
                }
            }
        }
    }
    let finished = Instant::now();
    fleet.progress.bump(&fleet.progress.finished, 1);
    let (first_seq, last_seq) = dev.seqs();
    let complete = dev.is_done();
    let problem = dev.failed().map(str::to_string).or(problem).or_else(|| {
        (!complete).then(|| {
            format!(
                "acked up to {} of {}..={} when the run's time was up",
                dev.acked_seq(),
                first_seq,
                last_seq
            )
        })
    });
    let outcome = DeviceOutcome { id: dev.id().to_string(), first_seq, last_seq, complete, problem };
    (outcome, dev.counters(), finished)
}

pub(crate) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
