//! What `silt demo` shows: state built from status polls and the processors' output records
//! (this file), drawn as a screen on a terminal (`screen`, ratatui), or printed as a status
//! line per interval or JSON lines (`lines`). No I/O other than the terminal and stdout; the
//! demo's loop feeds it.

mod lines;
mod screen;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use silt_client::{Fetched, ProcessorInfo};
use silt_devsim::series::{Cause, Condition, FaultCounts, Kind, Sensors};
use silt_devsim::{Progress, SimReport};

pub use self::lines::{print_stopped, Summary};
use super::{Ending, Plan};

/// Recent alerts kept for the screen.
const RECENT_ALERTS: usize = 6;
/// Devices whose smoothed values are shown (one more row shows a device in trouble now).
const WATCHED: usize = 5;
/// Drifting devices among the watched ones.
const WATCHED_DRIFTING: usize = 2;

/// How the view is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A screen redrawn in place (stdout is a terminal).
    Screen,
    /// One status line per interval, and a line per alert.
    Lines,
    /// One JSON object per line: `started`, `status`, `alert`, `summary`.
    Json,
}

impl Mode {
    pub fn detect(json: bool) -> Mode {
        match (json, std::io::stdout().is_terminal()) {
            (true, _) => Mode::Json,
            (false, true) => Mode::Screen,
            (false, false) => Mode::Lines,
        }
    }
}

/// What the demo runs, for the first lines.
#[derive(Debug, Clone)]
pub struct Header {
    pub devices: u32,
    pub rate: f64,
    pub day: Duration,
    pub seed: u64,
    pub broker: SocketAddr,
    pub admin: SocketAddr,
    pub frames: SocketAddr,
    pub ca_cert: PathBuf,
    pub data_dir: PathBuf,
}

/// What the topic readers pass to the view.
#[derive(Debug)]
pub enum Observed {
    /// Smoothing output: (device, average, reading).
    Smoothed {
        kind: Kind,
        values: Vec<(String, f64, f64)>,
    },
    Alerts(Vec<Alert>),
    /// A reader failed; the demo stops with this message.
    Failed(String),
}

/// One anomaly-zscore output record.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: Kind,
    pub device: String,
    pub value: f64,
    /// What a normal reading would have been (the baseline median).
    pub expected: f64,
    /// The baseline's robust standard deviation.
    pub spread: f64,
    /// `None`: infinite (a flat baseline).
    pub z: Option<f64>,
}

/// Decodes one fetch of a processor's output topic (the formats of the examples' READMEs).
pub fn parse_output(plan: &Plan, fetched: &Fetched) -> Result<Observed, String> {
    let mut smoothed = Vec::new();
    let mut alerts = Vec::new();
    for r in fetched.records() {
        let r = r.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(r.value).map_err(|e| format!("offset {}: {e}", r.offset))?;
        let device = String::from_utf8_lossy(r.key).into_owned();
        let num = |f: &str| v.get(f).and_then(Value::as_f64);
        let missing = |f: &str| format!("offset {}: no number {f:?} in {v}", r.offset);
        if plan.smooth {
            smoothed.push((
                device,
                num("ema").ok_or_else(|| missing("ema"))?,
                num("value").ok_or_else(|| missing("value"))?,
            ));
        } else {
            alerts.push(Alert {
                kind: plan.kind,
                device,
                value: num("value").ok_or_else(|| missing("value"))?,
                expected: num("expected").unwrap_or(f64::NAN),
                spread: num("spread").unwrap_or(f64::NAN),
                z: num("z"),
            });
        }
    }
    Ok(if plan.smooth {
        Observed::Smoothed { kind: plan.kind, values: smoothed }
    } else {
        Observed::Alerts(alerts)
    })
}

/// One poll of the broker.
#[derive(Debug, Clone)]
pub struct Statuses {
    /// Input topics with their high watermarks summed over partitions.
    pub topics: Vec<(String, u64)>,
    pub processors: Vec<ProcessorInfo>,
}

/// A total and its rate over the last interval.
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    total: u64,
    per_s: f64,
}

impl Counter {
    fn set(&mut self, total: u64, dt_s: Option<f64>) {
        if let Some(dt) = dt_s.filter(|d| *d > 0.0) {
            self.per_s = total.saturating_sub(self.total) as f64 / dt;
        }
        self.total = total;
    }
}

#[derive(Debug, Clone)]
struct Seen {
    at: Duration,
    alert: Alert,
    cause: Option<Cause>,
}

/// The demo's view.
pub struct View {
    header: Header,
    plans: Vec<Plan>,
    sensors: Arc<Sensors>,
    started: Instant,
    updated: Option<Instant>,
    connected: u64,
    generated: u64,
    frames: Counter,
    topics: Vec<(String, Counter)>,
    processors: Vec<(ProcessorInfo, Counter)>,
    watched: Vec<String>,
    smoothed: HashMap<(Kind, String), (f64, f64)>,
    /// Output records read, per processor name.
    read: HashMap<String, u64>,
    recent: VecDeque<Seen>,
    alerts: u64,
    by_cause: BTreeMap<&'static str, u64>,
    faults: FaultCounts,
    /// The terminal, in [`Mode::Screen`] once started.
    screen: Option<screen::Screen>,
}

/// Label of an alert no injected fault explains.
const UNEXPLAINED: &str = "no injected fault";

fn cause_label(c: Option<Cause>) -> &'static str {
    c.map_or(UNEXPLAINED, |c| c.as_str())
}

impl View {
    pub fn new(header: Header, plans: Vec<Plan>, sensors: Arc<Sensors>, started: Instant) -> View {
        // A few devices worth watching: the one with the early spike, some drifting ones,
        // then the first others.
        let mut watched: Vec<String> = sensors.early_spike_device().map(str::to_string).into_iter().collect();
        for id in sensors.drifting().into_iter().take(WATCHED_DRIFTING) {
            if !watched.iter().any(|w| w == id) {
                watched.push(id.to_string());
            }
        }
        let mut index = 0;
        while watched.len() < WATCHED.min(header.devices as usize) {
            let id = silt_devsim::device_id(index);
            if !watched.contains(&id) {
                watched.push(id);
            }
            index += 1;
        }
        let mut topics: Vec<String> = plans.iter().map(|p| p.input.clone()).collect();
        topics.dedup();
        View {
            topics: topics.into_iter().map(|t| (t, Counter::default())).collect(),
            header,
            plans,
            sensors,
            started,
            updated: None,
            connected: 0,
            generated: 0,
            frames: Counter::default(),
            processors: Vec::new(),
            watched,
            smoothed: HashMap::new(),
            read: HashMap::new(),
            recent: VecDeque::new(),
            alerts: 0,
            by_cause: BTreeMap::new(),
            faults: FaultCounts::default(),
            screen: None,
        }
    }

    pub fn input_topics(&self) -> Vec<String> {
        self.topics.iter().map(|(t, _)| t.clone()).collect()
    }

    pub fn processor_names(&self) -> Vec<String> {
        self.plans.iter().map(|p| p.name.clone()).collect()
    }

    /// Takes a poll's numbers.
    pub fn update(&mut self, now: Instant, progress: &Progress, statuses: Statuses) {
        let dt = self.updated.map(|u| now.saturating_duration_since(u).as_secs_f64());
        self.updated = Some(now);
        self.connected = progress.connected.load(Ordering::Relaxed);
        self.generated = progress.generated.load(Ordering::Relaxed);
        self.frames.set(progress.acked.load(Ordering::Relaxed), dt);
        for (topic, total) in statuses.topics {
            if let Some((_, c)) = self.topics.iter_mut().find(|(t, _)| *t == topic) {
                c.set(total, dt);
            }
        }
        for info in statuses.processors {
            match self.processors.iter_mut().find(|(p, _)| p.name == info.name) {
                Some((p, c)) => {
                    c.set(info.events_in, dt);
                    *p = info;
                }
                None => {
                    let c = Counter { total: info.events_in, per_s: 0.0 };
                    self.processors.push((info, c));
                }
            }
        }
        self.faults = self.sensors.counts();
    }

    /// Takes output records; in line modes, prints each alert as it comes.
    pub fn observe(&mut self, o: Observed, now: Instant, mode: Mode) {
        let at = now.saturating_duration_since(self.started);
        match o {
            Observed::Smoothed { kind, values } => {
                *self.read.entry(self.plan_name(kind, true)).or_default() += values.len() as u64;
                for (device, ema, value) in values {
                    self.smoothed.insert((kind, device), (ema, value));
                }
            }
            Observed::Alerts(alerts) => {
                for alert in alerts {
                    *self.read.entry(self.plan_name(alert.kind, false)).or_default() += 1;
                    let cause = self.sensors.explain(&alert.device, alert.kind, alert.value);
                    self.alerts += 1;
                    *self.by_cause.entry(cause_label(cause)).or_default() += 1;
                    let seen = Seen { at, alert, cause };
                    match mode {
                        Mode::Lines => println!("{}", lines::alert_line(&seen)),
                        Mode::Json => println!("{}", lines::alert_json(&seen)),
                        Mode::Screen => {}
                    }
                    if self.recent.len() == RECENT_ALERTS {
                        self.recent.pop_back();
                    }
                    self.recent.push_front(seen);
                }
            }
            Observed::Failed(_) => {}
        }
    }

    fn plan_name(&self, kind: Kind, smooth: bool) -> String {
        self.plans
            .iter()
            .find(|p| p.kind == kind && p.smooth == smooth)
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    /// Every processor has processed everything and the view has read everything it wrote.
    pub fn caught_up(&self) -> bool {
        self.processors.len() == self.plans.len()
            && self
                .processors
                .iter()
                .all(|(p, _)| p.lag == 0 && self.read.get(&p.name).copied().unwrap_or(0) >= p.events_out)
    }

    /// Starts the output: takes over the terminal, or prints where everything listens.
    pub fn print_start(&mut self, mode: Mode) -> anyhow::Result<()> {
        match mode {
            Mode::Screen => self.screen = Some(screen::Screen::new().context("drawing on the terminal")?),
            Mode::Lines | Mode::Json => lines::print_start(self, mode == Mode::Json),
        }
        Ok(())
    }

    /// Draws the screen, or prints a status line.
    pub fn render(&mut self, mode: Mode) {
        let now = self.updated.unwrap_or(self.started);
        match mode {
            Mode::Screen => {
                if let Some(mut screen) = self.screen.take() {
                    screen.draw(self, now);
                    self.screen = Some(screen);
                }
            }
            Mode::Lines => lines::print_line(&lines::status_line(self, now)),
            Mode::Json => lines::print_line(&lines::status_json(self, now)),
        }
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// The devices whose smoothed values are shown, each with a note: the watched ones, and
    /// one more whose sensor is in trouble now.
    fn shown_devices(&self) -> Vec<(String, String)> {
        let mut devices: Vec<(String, String)> =
            self.watched.iter().map(|d| (d.clone(), self.note(d))).collect();
        if let Some((id, note)) = self.in_trouble() {
            devices.push((id, note.to_string()));
        }
        devices
    }

    /// A note on a watched device: what makes it interesting.
    fn note(&self, device: &str) -> String {
        let mut notes = Vec::new();
        if self.sensors.early_spike_device() == Some(device) {
            notes.push("spike at reading 20".to_string());
        }
        if let Some(m) = self.sensors.model(device).filter(|m| m.is_drifting()) {
            notes.push(format!("drift {:+.1} °C/day", m.temperature_drift));
        }
        match self.sensors.condition_now(device) {
            Some(Condition::Stuck { .. }) => notes.push("stuck now".into()),
            Some(Condition::Dropout { .. }) => notes.push("dropout now".into()),
            _ => {}
        }
        notes.join(", ")
    }

    /// The first device (by id) whose sensor is stuck or silent right now, not watched.
    fn in_trouble(&self) -> Option<(String, &'static str)> {
        (0..self.header.devices).map(silt_devsim::device_id).filter(|d| !self.watched.contains(d)).find_map(
            |d| match self.sensors.condition_now(&d) {
                Some(Condition::Stuck { .. }) => Some((d, "stuck now")),
                Some(Condition::Dropout { .. }) => Some((d, "dropout now")),
                _ => None,
            },
        )
    }

    /// The numbers at the end.
    pub fn summary(
        &self,
        ending: Ending,
        now: Instant,
        connected: u64,
        report: Option<&SimReport>,
    ) -> Summary {
        Summary {
            ending,
            elapsed: self.elapsed(now),
            devices: self.header.devices,
            connected,
            generated: self.generated,
            acked: self.frames.total,
            complete: report.map(|r| r.incomplete() == 0),
            p99_us: report.map(|r| r.latency.p99_us),
            topics: lines::topics_json(self),
            processors: lines::processors_json(self),
            alerts: self.alerts,
            by_cause: self.by_cause.clone(),
            faults: self.faults,
            drifting: self.sensors.drifting().len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silt_client::ProcessorState;
    use silt_devsim::series::{FrameReadings, ReadingSource, SeriesConfig};

    fn view(devices: u32) -> View {
        let ids: Vec<String> = (0..devices).map(silt_devsim::device_id).collect();
        let sensors = Sensors::new(
            SeriesConfig {
                seed: 3,
                rate_per_s: 1.0,
                day: Duration::from_secs(120),
                drift_fraction: 0.2,
                faults: 1.0,
                early_spike_seq: Some(20),
            },
            &ids,
        )
        .unwrap();
        let header = Header {
            devices,
            rate: 1.0,
            day: Duration::from_secs(120),
            seed: 3,
            broker: "127.0.0.1:40001".parse().unwrap(),
            admin: "127.0.0.1:40002".parse().unwrap(),
            frames: "127.0.0.1:40003".parse().unwrap(),
            ca_cert: "/tmp/x/cert.pem".into(),
            data_dir: "/tmp/x".into(),
        };
        View::new(header, super::super::plans(1.0), Arc::new(sensors), Instant::now())
    }

    fn info(name: &str, events_in: u64, events_out: u64, lag: u64) -> ProcessorInfo {
        ProcessorInfo {
            name: name.into(),
            input: String::new(),
            output: String::new(),
            state: ProcessorState::Running,
            version: 1,
            versions: 1,
            error: None,
            lag,
            events_in,
            events_out,
            counters: Vec::new(),
            partitions: Vec::new(),
        }
    }

    /// Watched devices: the early-spike one, drifting ones, then the first others; a fleet
    /// smaller than the list shows every device once.
    #[test]
    fn watched_devices() {
        let v = view(50);
        assert_eq!(v.watched.len(), WATCHED);
        assert_eq!(v.watched[0], "sim-00003", "seed 3 picks device 3 for the early spike");
        assert!(v.sensors.model(&v.watched[1]).unwrap().is_drifting());
        let mut unique = v.watched.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), v.watched.len());
        assert_eq!(view(2).watched.len(), 2);
    }

    /// Rates come from the difference between polls; alerts are explained by the series and
    /// listed newest first; the view is caught up only when every processor has no lag and
    /// every output record was read.
    #[test]
    fn updates_alerts_and_catching_up() {
        let mut v = view(10);
        let t0 = v.started;
        let progress = Progress::default();
        let statuses = |n: u64, lag: u64| Statuses {
            topics: vec![("sensors.temperature".into(), n), ("sensors.humidity".into(), n)],
            processors: v
                .plans
                .iter()
                .map(|p| info(&p.name, n - lag, if p.smooth { n - lag } else { 1 }, lag))
                .collect(),
        };
        let first = statuses(100, 10);
        let second = statuses(300, 0);
        v.update(t0 + Duration::from_secs(1), &progress, first);
        v.update(t0 + Duration::from_secs(3), &progress, second);
        assert_eq!(v.topics[0].1.per_s, 100.0);
        assert!(!v.caught_up());

        // The early spike, as the bridge would have stored it and the detector reported it.
        let device = v.sensors.early_spike_device().unwrap().to_string();
        let mut out = FrameReadings::new();
        for seq in 1..=20 {
            out.clear();
            v.sensors.readings(&device, seq, &mut out);
        }
        let t = v.sensors.sample(v.sensors.model(&device).unwrap(), 20).temperature;
        let alert = Alert {
            kind: Kind::Temperature,
            device: device.clone(),
            value: f64::from(t),
            expected: 21.0,
            spread: 0.5,
            z: Some(20.0),
        };
        let other = Alert { value: 99.0, device: "sim-00001".into(), ..alert.clone() };
        v.observe(Observed::Alerts(vec![alert, other]), t0 + Duration::from_secs(4), Mode::Screen);
        v.observe(Observed::Alerts(vec![]), t0, Mode::Screen);
        assert_eq!(v.alerts, 2);
        assert_eq!(v.by_cause.get("spike"), Some(&1));
        assert_eq!(v.by_cause.get(UNEXPLAINED), Some(&1));
        assert_eq!(v.recent[0].alert.device, "sim-00001");
        for kind in [Kind::Temperature, Kind::Humidity] {
            let values = (0..300).map(|i| (format!("sim-{:05}", i % 10), 20.0, 20.5)).collect();
            v.observe(Observed::Smoothed { kind, values }, t0, Mode::Screen);
        }
        assert!(!v.caught_up(), "no humidity alert read yet");
        v.observe(
            Observed::Alerts(vec![Alert {
                kind: Kind::Humidity,
                device: "sim-00002".into(),
                value: 80.0,
                expected: 50.0,
                spread: 2.0,
                z: None,
            }]),
            t0,
            Mode::Screen,
        );
        assert!(v.caught_up());

        let screen = screen::text(&v, t0 + Duration::from_secs(65), 100, 100).join("\n");
        assert!(screen.contains("1m05s"), "{screen}");
        assert!(screen.contains("temperature-anomaly"), "{screen}");
        assert!(screen.contains("20.0 °C (20.5)"), "{screen}");
        assert!(screen.contains("ALERTS 3"), "{screen}");
        assert!(screen.contains(" inf "), "{screen}");
        assert!(screen.contains("try: silt --broker 127.0.0.1:40001"), "{screen}");
        // An 80x24 terminal: every part there and whole (only the hint on how to connect
        // gives way), the alerts too, and the last row left to the cursor.
        let small = screen::text(&v, t0 + Duration::from_secs(65), 80, 24);
        let text = small.join("\n");
        assert_eq!(small.len(), 24, "{text}");
        assert!(small[23].trim().is_empty(), "{text}");
        for part in [
            "(Ctrl-C stops)",
            "devices connected",
            "PROCESSORS",
            "humidity-smooth",
            "FAULTS",
            "drifting",
            "SMOOTHED",
        ] {
            assert!(text.contains(part), "{part} missing:\n{text}");
        }
        assert!(small.iter().any(|l| l.contains(" spike")), "{text}");
        assert!(small.iter().any(|l| l.contains(&v.watched[0])), "{text}");
        let line = lines::status_line(&v, t0 + Duration::from_secs(5));
        assert!(line.starts_with("[   5.0s] frames 0/s"), "{line}");
        assert!(line.contains("sensors.humidity 100/s (300)"), "{line}");
        let j = lines::status_json(&v, t0);
        assert_eq!(j["processors"][0]["records_read"], 300);
        let s = v.summary(Ending::Interrupted, t0 + Duration::from_secs(7), 10, None);
        assert!(s.to_text().starts_with("silt demo interrupted after 7s: 10 devices"), "{}", s.to_text());
        assert_eq!(s.to_json()["alerts_by_cause"]["spike"], 1);
    }
}
