//! Simulated devices over MQTT 3.1.1: QoS 1 publishes that rumqttc's event loop carries, with
//! the same schedule, window, faults and latency accounting as frame devices.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::faults::{Fault, Rng};
use crate::fleet::{backoff, sleep_until_opt, Fleet, Reported};
use crate::schedule::Schedule;
use crate::{Counters, DeviceOutcome, DeviceSettings, MQTT_TOPIC, PENDING_MAX};

/// Keep-alive of MQTT sessions (the bridge closes them after one and a half of it).
const MQTT_KEEP_ALIVE: Duration = Duration::from_secs(60);

/// One MQTT device's bookkeeping: the same schedule, window, faults and latency accounting as
/// [`FrameDevice`], for publishes that rumqttc's event loop carries. Readings are numbered from
/// 1 (MQTT has no bridge-side sequence), acked individually by PUBACK, and retransmitted when
/// unacked for the ack timeout or after a reconnect. QoS 1 is at-least-once: a retransmitted
/// or duplicated publish may be stored twice.
#[derive(Debug)]
pub(crate) struct MqttDevice {
    s: DeviceSettings,
    schedule: Schedule,
    generated: u64,
    /// Unacked readings by sequence: first send, last send, fault.
    unacked: BTreeMap<u32, MqttPending>,
    /// Readings to (re)publish, in order.
    queue: VecDeque<u32>,
    /// A reading with the reorder fault, held back until the next reading's first copy is out.
    held: Option<u32>,
    counters: Counters,
    latencies_us: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct MqttPending {
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    fault: Fault,
}

impl MqttDevice {
    pub(crate) fn new(s: DeviceSettings, now: Instant) -> MqttDevice {
        MqttDevice {
            s,
            schedule: Schedule::new(now),
            generated: 0,
            unacked: BTreeMap::new(),
            queue: VecDeque::new(),
            held: None,
            counters: Counters::default(),
            latencies_us: Vec::new(),
        }
    }

    fn is_done(&self) -> bool {
        self.schedule.started && self.schedule.over && self.unacked.is_empty()
    }

    /// A session opened: every unacked reading is published again (sessions are clean).
    fn connected(&mut self) {
        self.queue = self.unacked.keys().copied().collect();
        self.held = None;
    }

    /// Sequences to publish now, in order (a sequence twice for a duplicate); true when the
    /// session must be closed after them.
    fn poll_publish(&mut self, now: Instant, out: &mut Vec<u32>) -> bool {
        while self.unacked.len() < self.s.window as usize
            && self.schedule.due(
                &self.s,
                self.generated,
                self.unacked.len() < PENDING_MAX && self.generated < u64::from(u32::MAX),
                now,
                &mut self.counters.late,
            )
        {
            self.generated += 1;
            let seq = self.generated as u32;
            let fault = self.s.faults.draw(&mut self.s.rng);
            self.unacked.insert(seq, MqttPending { first_sent: None, last_sent: None, fault });
            self.queue.push_back(seq);
            self.counters.generated += 1;
        }
        let mut reconnect = false;
        while let Some(seq) = self.queue.pop_front() {
            let Some(p) = self.unacked.get_mut(&seq) else { continue };
            p.last_sent = Some(now);
            if p.first_sent.is_some() {
                self.counters.retransmits += 1;
                self.counters.sent += 1;
                out.push(seq);
                continue;
            }
            p.first_sent = Some(now);
            let fault = p.fault;
            if fault == Fault::Reorder && self.held.is_none() {
                // Held until the next reading has gone first (it may not be generated yet).
                self.held = Some(seq);
                continue;
            }
            match fault {
                Fault::Drop => self.counters.dropped += 1,
                Fault::Duplicate => {
                    out.extend([seq, seq]);
                    self.counters.sent += 2;
                    self.counters.duplicated += 1;
                }
                // Refused by `SimConfig::validate` for MQTT; a second reorder while one is held
                // goes out as it is.
                Fault::None | Fault::BadTag | Fault::Reorder | Fault::Reconnect => {
                    out.push(seq);
                    self.counters.sent += 1;
                }
            }
            self.release_held(out, true);
            if fault == Fault::Reconnect {
                self.counters.reconnects += 1;
                reconnect = true;
                break;
            }
        }
        if self.schedule.over && self.queue.is_empty() {
            // The held reading was the last one: no next reading will come.
            self.release_held(out, false);
        }
        reconnect
    }

    /// Publishes the held reading (`reordered`: after a later one), if it is still unacked.
    fn release_held(&mut self, out: &mut Vec<u32>, reordered: bool) {
        if let Some(h) = self.held.take() {
            if self.unacked.contains_key(&h) {
                out.push(h);
                self.counters.sent += 1;
                if reordered {
                    self.counters.reordered += 1;
                }
            }
        }
    }

    fn acked(&mut self, seq: u32, now: Instant) {
        match self.unacked.remove(&seq) {
            Some(p) => {
                let first = p.first_sent.expect("an acked reading was sent");
                self.latencies_us.push(now.saturating_duration_since(first).as_micros() as u64);
                self.counters.acked += 1;
            }
            None => self.counters.duplicate_acks += 1,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.s.ack_timeout;
        let mut expired = false;
        for (seq, p) in &self.unacked {
            if p.last_sent.is_some_and(|t| now >= t + timeout) && !self.queue.contains(seq) {
                self.queue.push_back(*seq);
                expired = true;
                if self.held == Some(*seq) {
                    // It goes out with the retransmissions instead.
                    self.held = None;
                }
            }
        }
        if expired {
            self.counters.ack_timeouts += 1;
            self.queue.make_contiguous().sort_unstable();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let ack = self.unacked.values().filter_map(|p| p.last_sent).min().map(|t| t + self.s.ack_timeout);
        [ack, self.schedule.wake(&self.s)].into_iter().flatten().min()
    }
}

fn mqtt_payload(device: &str, seq: u32) -> Vec<u8> {
    let value = 15.0 + f64::from(seq % 1000) / 100.0;
    format!(r#"{{"device":"{device}","seq":{seq},"value":{value}}}"#).into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Drives one MQTT device until it is done, fails, or the run's time is up. Each session gets a
/// fresh rumqttc client and event loop: sessions are clean, so nothing of an old one carries
/// over, and the device republishes what is unacked itself.
pub(crate) async fn drive_mqtt(mut dev: MqttDevice, fleet: Arc<Fleet>) -> (DeviceOutcome, Counters, Instant) {
    use rumqttc::{
        AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing, Packet, QoS,
    };
    let mut start = fleet.start.clone();
    let mut jitter = Rng::new(dev.s.rng.clone().next_u64());
    let (host, port) =
        match fleet.bridge.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))) {
            Some(hp) => hp,
            None => {
                let outcome = DeviceOutcome {
                    id: dev.s.id.clone(),
                    first_seq: 1,
                    last_seq: 0,
                    complete: false,
                    problem: Some(format!("{:?} is not HOST:PORT", fleet.bridge)),
                };
                fleet.progress.bump(&fleet.progress.finished, 1);
                return (outcome, dev.counters, Instant::now());
            }
        };
    let mut options = MqttOptions::new(dev.s.id.clone(), host, port);
    options.set_credentials(dev.s.id.clone(), hex(&dev.s.key));
    options.set_keep_alive(MQTT_KEEP_ALIVE);
    options.set_clean_session(true);
    // Room for the window, each reading possibly twice (duplicates) plus retransmissions.
    let inflight = (dev.s.window * 4 + 8).min(u32::from(u16::MAX)) as u16;
    options.set_inflight(inflight);
    let mut counted_connected = false;
    let mut attempt = 0u32;
    let mut problem = None;
    let mut latencies = Vec::new();
    let mut to_publish = Vec::new();
    let mut reported = Reported::default();
    'session: while !dev.is_done() && problem.is_none() {
        let mut permit = match tokio::time::timeout_at(fleet.deadline, fleet.connect_slots.acquire()).await {
            Ok(p) => Some(p.expect("never closed")),
            Err(_) => {
                problem = Some("the run's time was up while connecting".to_string());
                break;
            }
        };
        let (client, mut events) = AsyncClient::new(options.clone(), usize::from(inflight) * 2);
        // Publishes handed to the client whose packet id is not known yet, in order; then packet
        // id to sequence.
        let mut unassigned: VecDeque<u32> = VecDeque::new();
        let mut by_pkid: HashMap<u16, u32> = HashMap::new();
        let mut up = false;
        loop {
            if up {
                if !dev.schedule.started {
                    if let Some(at) = *start.borrow() {
                        dev.schedule.start(&mut dev.s, at);
                    }
                }
                to_publish.clear();
                let reconnect = dev.poll_publish(Instant::now(), &mut to_publish);
                for &seq in &to_publish {
                    // The request channel holds several windows; if it is full anyway, the ack
                    // timeout publishes the reading again.
                    if client
                        .try_publish(MQTT_TOPIC, QoS::AtLeastOnce, false, mqtt_payload(&dev.s.id, seq))
                        .is_ok()
                    {
                        unassigned.push_back(seq);
                    }
                }
                if reconnect {
                    // Let the event loop write what was just published, then drop the session.
                    while !unassigned.is_empty() {
                        match tokio::time::timeout_at(fleet.deadline, events.poll()).await {
                            Ok(Ok(Event::Outgoing(Outgoing::Publish(_)))) => {
                                unassigned.pop_front();
                            }
                            Ok(Ok(_)) => {}
                            Ok(Err(_)) | Err(_) => break,
                        }
                    }
                    continue 'session;
                }
            }
            latencies.append(&mut dev.latencies_us);
            fleet.record(&mut latencies, &dev.counters, &mut reported);
            if dev.is_done() {
                let _ = client.disconnect().await;
                break 'session;
            }
            let wake = if up { dev.poll_timeout().map(tokio::time::Instant::from_std) } else { None };
            let wait_start = up && !dev.schedule.started;
            tokio::select! {
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        up = true;
                        attempt = 0;
                        drop(permit.take());
                        dev.connected();
                        if !counted_connected {
                            counted_connected = true;
                            fleet.progress.bump(&fleet.progress.connected, 1);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(seq) = unassigned.pop_front() {
                            by_pkid.insert(pkid, seq);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = by_pkid.remove(&ack.pkid) {
                            dev.acked(seq, Instant::now());
                        }
                    }
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(
                        code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
                    )) => {
                        problem = Some(format!("the bridge refused the MQTT login: {code:?}"));
                        break 'session;
                    }
                    Err(_) => {
                        dev.counters.connection_losses += 1;
                        drop(permit.take());
                        let pause = backoff(attempt, &mut jitter);
                        attempt += 1;
                        if tokio::time::timeout_at(fleet.deadline, tokio::time::sleep(pause)).await.is_err() {
                            break 'session;
                        }
                        continue 'session;
                    }
                },
                () = sleep_until_opt(wake) => dev.handle_timeout(Instant::now()),
                changed = start.changed(), if wait_start => {
                    if changed.is_err() {
                        break 'session;
                    }
                }
                () = tokio::time::sleep_until(fleet.deadline) => break 'session,
            }
        }
    }
    let finished = Instant::now();
    fleet.progress.bump(&fleet.progress.finished, 1);
    let complete = dev.is_done();
    let problem = problem.or_else(|| {
        (!complete).then(|| format!("{} readings unacked when the run's time was up", dev.unacked.len()))
    });
    let outcome = DeviceOutcome {
        id: dev.s.id.clone(),
        first_seq: 1,
        last_seq: dev.generated as u32,
        complete,
        problem,
    };
    (outcome, dev.counters, finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_settings;
    use crate::FaultPlan;

    /// MQTT readings with the reorder fault go out after the next reading, the last one alone.
    #[test]
    fn mqtt_reorders_swap_each_reading_with_the_next_and_the_last_goes_alone() {
        let mut s = test_settings(FaultPlan { reorder: 1.0, ..FaultPlan::default() }, 5, 1);
        s.window = 16;
        let t0 = Instant::now();
        let mut dev = MqttDevice::new(s, t0);
        dev.connected();
        dev.schedule.start(&mut dev.s, t0);
        let mut out = Vec::new();
        dev.poll_publish(t0, &mut out);
        assert_eq!(out, [2, 1, 4, 3, 5]);
        assert_eq!(dev.counters.reordered, 2);
        for seq in [1, 2, 3, 4, 5, 5] {
            dev.acked(seq, t0 + Duration::from_millis(1));
        }
        assert!(dev.is_done());
        assert_eq!(dev.counters.duplicate_acks, 1);
    }
}
