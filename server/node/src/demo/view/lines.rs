//! The demo's output where there is no terminal to draw on: a status line per interval and
//! a line per alert (or the same as JSON objects, one a line), the first line saying where
//! everything listens, and the summary printed at the end. Also the number formats the screen
//! shares.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use silt_client::ProcessorState;
use silt_devsim::series::FaultCounts;

use super::{cause_label, Mode, Seen, View};
use crate::demo::Ending;

/// The first line: where everything listens, as text or JSON.
pub fn print_start(v: &View, json: bool) {
    let h = &v.header;
    match json {
        false => println!(
            "silt demo: broker {} (QUIC), metrics http://{}/metrics, frames {} (TCP); {}; data in {}",
            h.broker,
            h.admin,
            h.frames,
            fleet_text(v),
            h.data_dir.display()
        ),
        true => println!(
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
                "processors": v.plans.iter().map(|p| json!({
                    "name": p.name, "input": p.input, "output": p.output,
                    "params": p.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                })).collect::<Vec<_>>(),
            })
        ),
    }
    let _ = std::io::stdout().flush();
}

fn fleet_text(v: &View) -> String {
    let h = &v.header;
    format!(
        "{} devices, {} reading{}/s each, a day every {}, seed {}",
        h.devices,
        h.rate,
        if h.rate == 1.0 { "" } else { "s" },
        humantime::format_duration(h.day),
        h.seed
    )
}

/// One status line per interval.
pub fn status_line(v: &View, now: Instant) -> String {
    let mut s = format!(
        "[{:>6.1}s] frames {:.0}/s, {} acked, {}/{} devices",
        v.elapsed(now).as_secs_f64(),
        v.frames.per_s,
        v.frames.total,
        v.connected,
        v.header.devices
    );
    for (topic, c) in &v.topics {
        let _ = write!(s, " | {topic} {:.0}/s ({})", c.per_s, c.total);
    }
    for (p, _) in &v.processors {
        let _ = write!(s, " | {} in {} out {} lag {}", p.name, p.events_in, p.events_out, p.lag);
        if p.state != ProcessorState::Running {
            let _ = write!(s, " {}", state(p.state).to_uppercase());
        }
    }
    let f = &v.faults;
    let _ = write!(
        s,
        " | alerts {} | faults: spikes {}, stuck {}, dropouts {}",
        v.alerts,
        f.temperature_spikes + f.humidity_spikes,
        f.stuck,
        f.dropouts
    );
    s
}

/// One status object per interval.
pub fn status_json(v: &View, now: Instant) -> Value {
    json!({
        "type": "status",
        "elapsed_s": v.elapsed(now).as_secs_f64(),
        "devices_connected": v.connected,
        "frames_generated": v.generated,
        "frames_acked": v.frames.total,
        "frames_per_s": v.frames.per_s,
        "topics": topics_json(v),
        "processors": processors_json(v),
        "alerts": v.alerts,
        "faults": faults_json(&v.faults),
    })
}

pub(super) fn topics_json(v: &View) -> Value {
    Value::Object(
        v.topics.iter().map(|(t, c)| (t.clone(), json!({ "total": c.total, "per_s": c.per_s }))).collect(),
    )
}

pub(super) fn processors_json(v: &View) -> Value {
    Value::Array(
        v.processors
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
                    "records_read": v.read.get(&p.name).copied().unwrap_or(0),
                })
            })
            .collect(),
    )
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

pub(super) fn state(s: ProcessorState) -> &'static str {
    match s {
        ProcessorState::Running => "running",
        ProcessorState::Paused => "paused",
        ProcessorState::Failed => "failed",
    }
}

pub(super) fn z_text(z: Option<f64>) -> String {
    match z {
        Some(z) => format!("{z:+.1}"),
        None => "inf".to_string(),
    }
}

/// Prints `line` and flushes, so that a reader of a pipe sees it at once.
pub(super) fn print_line(line: &impl std::fmt::Display) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// One alert, as a line.
pub(super) fn alert_line(s: &Seen) -> String {
    let a = &s.alert;
    format!(
        "[{:>6.1}s] alert {} {} {:.2} {} (expected {:.2}, spread {:.2}, z {}): {}",
        s.at.as_secs_f64(),
        a.device,
        a.kind.as_str(),
        a.value,
        a.kind.unit(),
        a.expected,
        a.spread,
        z_text(a.z),
        cause_label(s.cause)
    )
}

/// One alert, as a JSON object.
pub(super) fn alert_json(s: &Seen) -> Value {
    let a = &s.alert;
    json!({
        "type": "alert",
        "elapsed_s": s.at.as_secs_f64(),
        "device": a.device,
        "kind": a.kind.as_str(),
        "value": a.value,
        "expected": a.expected,
        "spread": a.spread,
        "z": a.z,
        "cause": s.cause.map(|c| c.as_str()),
    })
}

/// `1m05s`, `12s`.
pub(super) fn clock(d: Duration) -> String {
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
pub(super) fn count(n: u64) -> String {
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
}
