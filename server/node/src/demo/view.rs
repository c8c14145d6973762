//! What `silt demo` shows: state built from status polls and the processors' output records,
//! rendered as a screen redrawn in place (a terminal), one status line per interval, or JSON
//! lines. No I/O other than printing; the demo's loop feeds it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use silt_bridge::series::{Cause, Condition, FaultCounts, Kind, Sensors};
use silt_bridge::sim::{Progress, SimReport};
use silt_client::{Fetched, ProcessorInfo, ProcessorState};

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
    pub mean: f64,
    pub std: f64,
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
                mean: num("mean").unwrap_or(f64::NAN),
                std: num("std").unwrap_or(f64::NAN),
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
            let id = silt_bridge::sim::device_id(index);
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
                        Mode::Lines => println!("{}", alert_line(&seen)),
                        Mode::Json => println!("{}", alert_json(&seen)),
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

    pub fn print_start(&self, mode: Mode) {
        let h = &self.header;
        match mode {
            Mode::Screen => print!("\x1b[2J\x1b[H"),
            Mode::Lines => println!(
                "silt demo: broker {} (QUIC), metrics http://{}/metrics, frames {} (TCP); {}; data in {}",
                h.broker,
                h.admin,
                h.frames,
                self.fleet_text(),
                h.data_dir.display()
            ),
            Mode::Json => println!(
                "{}",
                json!({
                    "type": "started",
                    "broker": h.broker.to_string(),
                    "admin": h.admin.to_string(),
                    "frames": h.frames.to_string(),
                    "ca_cert": h.ca_cert,
                    "data_dir": h.data_dir,
                    "devices": h.devices,
                    "rate": h.rate,
                    "day_s": h.day.as_secs_f64(),
                    "seed": h.seed,
                    "processors": self.plans.iter().map(|p| json!({
                        "name": p.name, "input": p.input, "output": p.output,
                        "params": p.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                    })).collect::<Vec<_>>(),
                })
            ),
        }
        let _ = std::io::stdout().flush();
    }

    fn fleet_text(&self) -> String {
        let h = &self.header;
        format!(
            "{} devices, {} reading{}/s each, a day every {}, seed {}",
            h.devices,
            h.rate,
            if h.rate == 1.0 { "" } else { "s" },
            humantime::format_duration(h.day),
            h.seed
        )
    }

    /// Draws the screen, or prints a status line.
    pub fn render(&self, mode: Mode) {
        let now = self.updated.unwrap_or(self.started);
        match mode {
            Mode::Screen => {
                // Cut to the terminal, so that a redraw never wraps or scrolls.
                let (rows, cols) = console::Term::stdout().size();
                let mut out = String::from("\x1b[H");
                for line in self.screen(now, usize::from(rows)).iter().take(usize::from(rows.max(2)) - 1) {
                    out.extend(line.chars().take(usize::from(cols.max(1))));
                    out.push_str("\x1b[K\n");
                }
                out.push_str("\x1b[J");
                print!("{out}");
            }
            Mode::Lines => println!("{}", self.status_line(now)),
            Mode::Json => println!("{}", self.status_json(now)),
        }
        let _ = std::io::stdout().flush();
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// The screen's lines, without escape codes.
    /// The screen's lines, without escape codes, at most `rows - 1` of them (fits 80x24): the
    /// alerts and the smoothed values share the rows the fixed part leaves.
    pub fn screen(&self, now: Instant, rows: usize) -> Vec<String> {
        let h = &self.header;
        let mut l = Vec::new();
        l.push(format!(
            "Silt demo {}: {} devices, {} reading/s each, day {}, seed {} (Ctrl-C stops)",
            clock(self.elapsed(now)),
            h.devices,
            h.rate,
            humantime::format_duration(h.day),
            h.seed
        ));
        l.push(format!("broker {} (QUIC)  metrics {}  frames {}", h.broker, h.admin, h.frames));
        l.push(String::new());
        l.push(format!(
            "INGEST  frames {:.0}/s, {} acked, {}/{} devices connected",
            self.frames.per_s,
            count(self.frames.total),
            self.connected,
            h.devices
        ));
        let topics: Vec<String> =
            self.topics.iter().map(|(t, c)| format!("{t} {:.0}/s ({})", c.per_s, count(c.total))).collect();
        l.push(format!("        {}", topics.join("  ")));
        l.push(String::new());
        l.push(format!(
            "{:<22}{:<9}{:>7}{:>12}{:>12}{:>8}",
            "PROCESSORS", "state", "in/s", "in", "out", "lag"
        ));
        for (p, c) in &self.processors {
            l.push(format!(
                "  {:<20}{:<9}{:>7.0}{:>12}{:>12}{:>8}",
                p.name,
                state(p.state),
                c.per_s,
                count(p.events_in),
                count(p.events_out),
                count(p.lag)
            ));
            if let Some(e) = &p.error {
                l.push(format!("    error: {e}"));
            }
        }
        l.push(String::new());
        let f = &self.faults;
        l.push(format!(
            "FAULTS  spikes: {} temperature, {} humidity; stuck {}; dropouts {}; drifting {}",
            f.temperature_spikes,
            f.humidity_spikes,
            f.stuck,
            f.dropouts,
            self.sensors.drifting().len()
        ));
        l.push(String::new());

        // What is left (one row stays free for the cursor) goes to the alerts first, then to
        // the smoothed values; two headers and a blank line between them are fixed.
        let mut devices: Vec<(String, Option<&'static str>)> =
            self.watched.iter().map(|d| (d.clone(), None)).collect();
        if let Some((id, c)) = self.in_trouble() {
            devices.push((id, Some(c)));
        }
        let left = rows.saturating_sub(l.len() + 4);
        let alert_rows = self
            .recent
            .len()
            .min(RECENT_ALERTS)
            .min(left.div_ceil(2).max(left.saturating_sub(devices.len())));
        let device_rows = devices.len().min(left - alert_rows);
        let causes: Vec<String> = self.by_cause.iter().map(|(c, n)| format!("{c} {n}")).collect();
        l.push(format!("ALERTS {}  {}", count(self.alerts), causes.join(", ")));
        for s in self.recent.iter().take(alert_rows) {
            l.push(format!("  {}", alert_text(s)));
        }
        l.push(String::new());
        l.push(format!("{:<13}{:<19}{:<18}{}", "SMOOTHED", "temperature", "humidity", "(last reading)"));
        for (device, now_note) in devices.into_iter().take(device_rows) {
            let cell = |kind: Kind| match self.smoothed.get(&(kind, device.clone())) {
                Some((ema, v)) => format!("{ema:.1} {} ({})", kind.unit(), reading(*v)),
                None => "-".to_string(),
            };
            let note = now_note.map(str::to_string).unwrap_or_else(|| self.note(&device));
            l.push(format!(
                "  {:<11}{:<19}{:<18}{}",
                device,
                cell(Kind::Temperature),
                cell(Kind::Humidity),
                note
            ));
        }
        // Room to spare: how to watch this broker with `silt`.
        if l.len() + 3 <= rows {
            l.push(String::new());
            l.push(format!(
                "try: silt --broker {} --ca-cert {} consume sensors.temperature.alerts --follow",
                h.broker,
                h.ca_cert.display()
            ));
        }
        l
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
        (0..self.header.devices)
            .map(silt_bridge::sim::device_id)
            .filter(|d| !self.watched.contains(d))
            .find_map(|d| match self.sensors.condition_now(&d) {
                Some(Condition::Stuck { .. }) => Some((d, "stuck now")),
                Some(Condition::Dropout { .. }) => Some((d, "dropout now")),
                _ => None,
            })
    }

    pub fn status_line(&self, now: Instant) -> String {
        let mut s = format!(
            "[{:>6.1}s] frames {:.0}/s, {} acked, {}/{} devices",
            self.elapsed(now).as_secs_f64(),
            self.frames.per_s,
            self.frames.total,
            self.connected,
            self.header.devices
        );
        for (topic, c) in &self.topics {
            let _ = write!(s, " | {topic} {:.0}/s ({})", c.per_s, c.total);
        }
        for (p, _) in &self.processors {
            let _ = write!(s, " | {} in {} out {} lag {}", p.name, p.events_in, p.events_out, p.lag);
            if p.state != ProcessorState::Running {
                let _ = write!(s, " {}", state(p.state).to_uppercase());
            }
        }
        let f = &self.faults;
        let _ = write!(
            s,
            " | alerts {} | faults: spikes {}, stuck {}, dropouts {}",
            self.alerts,
            f.temperature_spikes + f.humidity_spikes,
            f.stuck,
            f.dropouts
        );
        s
    }

    pub fn status_json(&self, now: Instant) -> Value {
        json!({
            "type": "status",
            "elapsed_s": self.elapsed(now).as_secs_f64(),
            "devices_connected": self.connected,
            "frames_generated": self.generated,
            "frames_acked": self.frames.total,
            "frames_per_s": self.frames.per_s,
            "topics": self.topics_json(),
            "processors": self.processors_json(),
            "alerts": self.alerts,
            "faults": faults_json(&self.faults),
        })
    }

    fn topics_json(&self) -> Value {
        Value::Object(
            self.topics
                .iter()
                .map(|(t, c)| (t.clone(), json!({ "total": c.total, "per_s": c.per_s })))
                .collect(),
        )
    }

    fn processors_json(&self) -> Value {
        Value::Array(
            self.processors
                .iter()
                .map(|(p, c)| {
                    json!({
                        "name": p.name,
                        "state": state(p.state),
                        "events_in": p.events_in,
                        "events_out": p.events_out,
                        "in_per_s": c.per_s,
                        "lag": p.lag,
                        "error": p.error,
                        "records_read": self.read.get(&p.name).copied().unwrap_or(0),
                    })
                })
                .collect(),
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
            p99_us: report.map(|r| r.p99_us),
            topics: self.topics_json(),
            processors: self.processors_json(),
            alerts: self.alerts,
            by_cause: self.by_cause.clone(),
            faults: self.faults,
            drifting: self.sensors.drifting().len(),
        }
    }
}

/// What the demo did, printed once the broker is down.
#[derive(Debug, Clone)]
pub struct Summary {
    pub ending: Ending,
    pub elapsed: Duration,
    pub devices: u32,
    pub connected: u64,
    pub generated: u64,
    pub acked: u64,
    /// Whether every generated reading was acked (known when the devices finished).
    pub complete: Option<bool>,
    pub p99_us: Option<u64>,
    pub topics: Value,
    pub processors: Value,
    pub alerts: u64,
    pub by_cause: BTreeMap<&'static str, u64>,
    pub faults: FaultCounts,
    pub drifting: usize,
}

impl Summary {
    /// Ctrl-C before the devices started.
    pub fn interrupted_early() -> Summary {
        Summary {
            ending: Ending::Interrupted,
            elapsed: Duration::ZERO,
            devices: 0,
            connected: 0,
            generated: 0,
            acked: 0,
            complete: None,
            p99_us: None,
            topics: json!({}),
            processors: json!([]),
            alerts: 0,
            by_cause: BTreeMap::new(),
            faults: FaultCounts::default(),
            drifting: 0,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "type": "summary",
            "ending": match self.ending { Ending::Duration => "duration", Ending::Interrupted => "interrupted" },
            "elapsed_s": self.elapsed.as_secs_f64(),
            "devices": self.devices,
            "devices_connected": self.connected,
            "frames_generated": self.generated,
            "frames_acked": self.acked,
            "every_reading_acked": self.complete,
            "ack_p99_us": self.p99_us,
            "topics": self.topics,
            "processors": self.processors,
            "alerts": self.alerts,
            "alerts_by_cause": self.by_cause,
            "faults": faults_json(&self.faults),
            "drifting_devices": self.drifting,
            "broker": "stopped",
        })
    }

    pub fn to_text(&self) -> String {
        let how = match self.ending {
            Ending::Duration => "ran for",
            Ending::Interrupted => "interrupted after",
        };
        let acked = match (self.complete, self.p99_us) {
            (Some(true), Some(p99)) => {
                format!(" (every reading acked; p99 frame to durable ack {:.1} ms)", p99 as f64 / 1000.0)
            }
            (Some(false), _) => " (some readings were not acked)".to_string(),
            _ => String::new(),
        };
        let mut s = format!(
            "silt demo {how} {}: {} devices, {} frames acked{acked}",
            clock(self.elapsed),
            self.devices,
            count(self.acked)
        );
        if let Some(list) = self.processors.as_array() {
            for p in list {
                let _ = write!(
                    s,
                    "\n  {:<22} {} in, {} out",
                    p["name"].as_str().unwrap_or("?"),
                    count(p["events_in"].as_u64().unwrap_or(0)),
                    count(p["events_out"].as_u64().unwrap_or(0))
                );
            }
        }
        let causes: Vec<String> = self.by_cause.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let f = &self.faults;
        let _ = write!(
            s,
            "\n  alerts {}{}\n  faults injected: spikes {}, stuck sensors {}, dropouts {}; drifting devices {}\nthe broker stopped cleanly and its data was removed",
            self.alerts,
            if causes.is_empty() { String::new() } else { format!(" ({})", causes.join(", ")) },
            f.temperature_spikes + f.humidity_spikes,
            f.stuck,
            f.dropouts,
            self.drifting
        );
        s
    }
}

pub fn print_stopped(mode: Mode, summary: &Summary) {
    match mode {
        Mode::Json => println!("{}", summary.to_json()),
        Mode::Screen | Mode::Lines => println!("{}", summary.to_text()),
    }
}

fn faults_json(f: &FaultCounts) -> Value {
    json!({
        "temperature_spikes": f.temperature_spikes,
        "humidity_spikes": f.humidity_spikes,
        "stuck": f.stuck,
        "dropouts": f.dropouts,
        "readings": f.readings,
    })
}

fn state(s: ProcessorState) -> &'static str {
    match s {
        ProcessorState::Running => "running",
        ProcessorState::Paused => "paused",
        ProcessorState::Failed => "failed",
    }
}

fn z_text(z: Option<f64>) -> String {
    match z {
        Some(z) => format!("{z:+.1}"),
        None => "inf".to_string(),
    }
}

fn reading(v: f64) -> String {
    format!("{v:.1}")
}

/// One alert for the screen: when, who, what, why.
fn alert_text(s: &Seen) -> String {
    let a = &s.alert;
    format!(
        "{:>6} {:<10}{:<12}{:>6.1} {:<2} mean {:>5.1} z {:>6} {}",
        clock(s.at),
        a.device,
        a.kind.as_str(),
        a.value,
        a.kind.unit(),
        a.mean,
        z_text(a.z),
        cause_label(s.cause)
    )
}

fn alert_line(s: &Seen) -> String {
    let a = &s.alert;
    format!(
        "[{:>6.1}s] alert {} {} {:.2} {} (mean {:.2}, std {:.2}, z {}): {}",
        s.at.as_secs_f64(),
        a.device,
        a.kind.as_str(),
        a.value,
        a.kind.unit(),
        a.mean,
        a.std,
        z_text(a.z),
        cause_label(s.cause)
    )
}

fn alert_json(s: &Seen) -> Value {
    let a = &s.alert;
    json!({
        "type": "alert",
        "elapsed_s": s.at.as_secs_f64(),
        "device": a.device,
        "kind": a.kind.as_str(),
        "value": a.value,
        "mean": a.mean,
        "std": a.std,
        "z": a.z,
        "cause": s.cause.map(|c| c.as_str()),
    })
}

/// `1m05s`, `12s`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `19,500`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use silt_bridge::series::{FrameReadings, ReadingSource, SeriesConfig};

    fn view(devices: u32) -> View {
        let ids: Vec<String> = (0..devices).map(silt_bridge::sim::device_id).collect();
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
        View::new(header, super::super::plans(), Arc::new(sensors), Instant::now())
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
            partitions: Vec::new(),
        }
    }

    /// Numbers are grouped in thousands and times read as clocks.
    #[test]
    fn formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(clock(Duration::from_secs(5)), "5s");
        assert_eq!(clock(Duration::from_secs(65)), "1m05s");
        assert_eq!(clock(Duration::from_secs(3725)), "1h02m05s");
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
            mean: 21.0,
            std: 0.5,
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
                mean: 50.0,
                std: 2.0,
                z: None,
            }]),
            t0,
            Mode::Screen,
        );
        assert!(v.caught_up());

        let screen = v.screen(t0 + Duration::from_secs(65), 100).join("\n");
        assert!(screen.contains("1m05s"), "{screen}");
        assert!(screen.contains("temperature-anomaly"), "{screen}");
        assert!(screen.contains("20.0 °C (20.5)"), "{screen}");
        assert!(screen.contains("ALERTS 3"), "{screen}");
        assert!(screen.contains(" inf "), "{screen}");
        // An 80x24 terminal: 23 lines at most, none wider than 80 columns but the hint on
        // how to connect (cut by the terminal), and the alerts still there.
        let small = v.screen(t0 + Duration::from_secs(65), 24);
        assert!(small.len() <= 23, "{}", small.join("\n"));
        for l in small.iter().filter(|l| !l.starts_with("try:")) {
            assert!(l.chars().count() <= 80, "{} columns: {l}", l.chars().count());
        }
        assert!(small.iter().any(|l| l.contains(" spike")), "{}", small.join("\n"));
        let line = v.status_line(t0 + Duration::from_secs(5));
        assert!(line.starts_with("[   5.0s] frames 0/s"), "{line}");
        assert!(line.contains("sensors.humidity 100/s (300)"), "{line}");
        let j = v.status_json(t0);
        assert_eq!(j["processors"][0]["records_read"], 300);
        let s = v.summary(Ending::Interrupted, t0 + Duration::from_secs(7), 10, None);
        assert!(s.to_text().starts_with("silt demo interrupted after 7s: 10 devices"), "{}", s.to_text());
        assert_eq!(s.to_json()["alerts_by_cause"]["spike"], 1);
    }
}
