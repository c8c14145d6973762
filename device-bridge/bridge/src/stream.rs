//! Frame connections over byte streams: TCP (devices connecting in, or the bridge connecting
//! out to a listening endpoint such as a QEMU serial socket) and serial lines. Thin: bytes go
//! through the deframer and the session; replies and acks come back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::{BoxFuture, OptionFuture};
use futures::stream::{FuturesUnordered, StreamExt};
use silt_client::ClientError;
use silt_frame::{Body, Deframer, Frame, Key, Nack, NackReason, STUFFED_BYTES_MAX};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::delivery::{DeviceState, Finish, Package, Sender};
use crate::metrics::Metrics;
use crate::registry::Lookup;
use crate::session::{Outcome, Reply, ReplyBody, Session, Step};
use crate::Ingest;
use silt_wire::time::unix_ms;

/// Bytes read from a stream at a time; frames are at most 516 bytes stuffed.
const READ_BYTES: usize = 4096;
/// Pause before the bridge connects out again after a loss.
const RECONNECT_MS: u64 = 250;

/// Counts a connection while it lives, within `connections_max`.
pub struct ConnectionSlot {
    ingest: Arc<Ingest>,
    transport: &'static str,
}

impl ConnectionSlot {
    pub fn take(ingest: &Arc<Ingest>, transport: &'static str) -> Option<ConnectionSlot> {
        let n = ingest.connections.fetch_add(1, Ordering::AcqRel);
        if n >= ingest.config.limits.connections_max {
            ingest.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        ingest.metrics.connections.with_label_values(&[transport]).inc();
        Some(ConnectionSlot { ingest: ingest.clone(), transport })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.ingest.connections.fetch_sub(1, Ordering::AcqRel);
        self.ingest.metrics.connections.with_label_values(&[self.transport]).dec();
    }
}

/// Accepts device connections until the listener fails.
pub async fn listen(listener: TcpListener, ingest: Arc<Ingest>) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "accepting a frame connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = ConnectionSlot::take(&ingest, "tcp") else {
            tracing::warn!(%peer, "refusing a frame connection: limits.connections_max reached");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let ingest = ingest.clone();
        tokio::spawn(async move {
            serve(socket, &peer.to_string(), &ingest).await;
            drop(slot);
        });
    }
}

/// Connects to `addr` and serves frames from it; reconnects after every loss, forever.
pub async fn connect_out(addr: String, ingest: Arc<Ingest>) {
    let mut logged = false;
    loop {
        match TcpStream::connect(&addr).await {
            Ok(socket) => {
                logged = false;
                tracing::info!(%addr, "connected out to a frame endpoint");
                let _ = socket.set_nodelay(true);
                if let Some(slot) = ConnectionSlot::take(&ingest, "tcp") {
                    serve(socket, &addr, &ingest).await;
                    drop(slot);
                }
                tracing::info!(%addr, "frame endpoint closed; reconnecting");
            }
            Err(e) if !logged => {
                tracing::warn!(%addr, error = %e, "cannot connect to a frame endpoint; retrying");
                logged = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(RECONNECT_MS)).await;
    }
}

/// Opens a serial line and serves frames from it; reopens after every loss, forever.
pub async fn serial(config: crate::config::SerialConfig, ingest: Arc<Ingest>) {
    let path = config.path.display().to_string();
    let mut logged = false;
    loop {
        let opened = tokio_serial::SerialStream::open(&tokio_serial::new(&path, config.baud));
        match opened {
            Ok(port) => {
                logged = false;
                tracing::info!(%path, baud = config.baud, "serial line open");
                if let Some(slot) = ConnectionSlot::take(&ingest, "serial") {
                    serve(port, &path, &ingest).await;
                    drop(slot);
                }
            }
            Err(e) if !logged => {
                tracing::warn!(%path, error = %e, "cannot open serial line; retrying");
                logged = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(RECONNECT_MS)).await;
    }
}

fn encode_into(out: &mut Vec<u8>, frame: &Frame<'_>, key: &Key) {
    let mut buf = [0u8; STUFFED_BYTES_MAX];
    // Replies are header-sized plus at most a nack body or a module chunk of at most
    // MODULE_CHUNK_BYTES_MAX: they always fit.
    let n = silt_frame::encode_stuffed(frame, key, &mut buf).expect("replies fit a frame");
    out.extend_from_slice(&buf[..n]);
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One connection's module delivery: the device's last module state, the package of its
/// requested version (fetched from the broker through the registry, again every TTL), and the
/// sender of it. A device that never sent a module state takes no modules, and costs the
/// broker no fetch.
#[derive(Default)]
struct Delivery {
    state: Option<DeviceState>,
    package: Option<Arc<Package>>,
    sender: Option<Sender>,
    /// The version the device refused whole on this connection: not sent again.
    refused: Option<u32>,
    /// When the next fetch is due (connection clock, ms); `None` while one runs or no state
    /// came yet.
    fetch_at: Option<i64>,
}

impl Delivery {
    /// A hello: the device may have restarted, so wait for its module state.
    fn greeted(&mut self) {
        self.state = None;
        self.sender = None;
    }

    fn handle_state(&mut self, state: DeviceState, now_ms: i64) {
        if self.state.is_none() && self.fetch_at.is_none() {
            self.fetch_at = Some(now_ms);
        }
        if let Some(sender) = &mut self.sender {
            sender.handle_state(&state, now_ms);
        }
        self.state = Some(state);
    }

    /// The device's running version, when a fetch is due.
    fn fetch_due(&mut self, now_ms: i64) -> Option<u32> {
        let running = self.state.as_ref()?.running;
        if self.fetch_at.is_some_and(|at| now_ms >= at) {
            self.fetch_at = None;
            return Some(running);
        }
        None
    }

    /// The answer to a fetch; the next is due after `every_ms`.
    fn fetched(&mut self, package: Option<Arc<Package>>, now_ms: i64, every_ms: i64) {
        self.package = package;
        self.fetch_at = Some(now_ms + every_ms);
    }

    fn fetch_failed(&mut self, now_ms: i64, every_ms: i64) {
        self.fetch_at = Some(now_ms + every_ms);
    }

    /// When something is due: a resend, or the next fetch.
    fn deadline(&self) -> Option<i64> {
        let resend = self.sender.as_ref().and_then(Sender::poll_timeout);
        [resend, self.fetch_at].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, now_ms: i64) {
        if let Some(sender) = &mut self.sender {
            sender.handle_timeout(now_ms);
        }
    }

    /// Starts or replaces the sender for the requested package, and writes the chunks due,
    /// carrying the device's cumulative ack (`ack`, asked only when a chunk is written: this
    /// runs after every frame of every connection).
    fn write_chunks(
        &mut self,
        out: &mut Vec<u8>,
        ack: impl FnOnce() -> u32,
        key: &Key,
        now_ms: i64,
        peer: &str,
        metrics: &Metrics,
    ) {
        let (Some(state), Some(package)) = (&self.state, &self.package) else {
            self.sender = None;
            return;
        };
        let current = self.sender.as_ref().map(Sender::version);
        if current != Some(package.version) && self.refused != Some(package.version) {
            self.sender = Some(Sender::new(package.clone(), state, now_ms));
        }
        let Some(sender) = &mut self.sender else { return };
        let mut ack = Some(ack);
        let mut acked = 0;
        while let Some(chunk) = sender.poll_chunk(now_ms) {
            if let Some(ack) = ack.take() {
                acked = ack();
            }
            encode_into(out, &Frame { seq: 0, ack: acked, body: Body::ModuleChunk(chunk) }, key);
            metrics.module_chunks.inc();
        }
        let outcome = match sender.finished() {
            None => return,
            Some(Finish::Running) => {
                tracing::info!(%peer, version = sender.version(), chunks = sender.stats().chunks, "the device runs its new module");
                "running"
            }
            Some(Finish::Refused) => {
                let error = self.state.as_ref().map_or("", |s| &s.error);
                tracing::warn!(%peer, version = sender.version(), %error, "the device refused its module package");
                self.refused = Some(sender.version());
                "refused"
            }
        };
        metrics.module_deliveries.with_label_values(&[outcome]).inc();
        self.package = None;
        self.sender = None;
    }
}

/// Serves one frame connection until it closes, fails or idles out.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, peer: &str, ingest: &Arc<Ingest>) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut deframer = Box::new(Deframer::new());
    let mut session = Session::default();
    let mut buf = vec![0u8; READ_BYTES];
    let mut out = Vec::with_capacity(READ_BYTES);
    let mut in_flight = FuturesUnordered::new();
    let limits = &ingest.config.limits;
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let mut bound = false;
    let mut closing = false;
    let started = tokio::time::Instant::now();
    let clock = || i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let mut delivery = Delivery::default();
    // A deployed version reaches a connected device within this (the registry's TTL, at which
    // it answers from its cache).
    let fetch_every_ms = i64::try_from(ingest.registry.ttl().as_millis()).unwrap_or(i64::MAX);
    let mut fetching: Option<BoxFuture<'_, Result<Option<Arc<Package>>, ClientError>>> = None;
    loop {
        let wake = delivery.deadline().map(|ms| started + Duration::from_millis(ms as u64));
        tokio::select! {
            read = tokio::time::timeout(idle, rd.read(&mut buf)), if in_flight.len() < limits.in_flight_per_connection_max => {
                let n = match read {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        tracing::info!(%peer, "closing an idle frame connection");
                        break;
                    }
                };
                let mut input = &buf[..n];
                while !input.is_empty() {
                    let (used, frame) = deframer.push(input);
                    input = &input[used..];
                    let Some(frame) = frame else { continue };
                    let mut named = None;
                    let (step, outcome) = match frame.map_err(silt_frame::FrameError::from).and_then(silt_frame::decode) {
                        Err(e) => session.undecodable(e),
                        Ok(unverified) => {
                            named = unverified.device();
                            let lookup = match session.key_owner(&unverified) {
                                None => Ok(Lookup::Unknown),
                                Some(owner) => ingest.registry.lookup(owner).await,
                            };
                            match lookup {
                                Ok(lookup) => session.handle(unverified, lookup, unix_ms(SystemTime::now()), &ingest.sequences, &ingest.config.topics),
                                Err(e) => {
                                    tracing::warn!(error = %e, "device registry unreachable");
                                    let seq = unverified.frame().seq;
                                    let reason = NackReason::Unavailable;
                                    let reply = Reply { ack: 0, body: ReplyBody::Nack(Nack { seq, reason }) };
                                    (Step::Reply { reply, key: session.reply_key() }, Outcome::Rejected(reason))
                                }
                            }
                        }
                    };
                    count(ingest, outcome);
                    if let (Outcome::Greeted { module }, Some(device)) = (outcome, session.device()) {
                        ingest.registry.report_module(device, module, None);
                        delivery.greeted();
                    }
                    if let Outcome::Rejected(reason) = outcome {
                        audit(ingest, &mut session, named, peer, reason);
                    }
                    if bound && matches!(outcome, Outcome::Rejected(NackReason::Revoked | NackReason::UnknownDevice)) {
                        // The connection's device was revoked: its nack goes out, then the
                        // connection closes.
                        closing = true;
                    }
                    match step {
                        Step::Reply { reply, key } => encode_into(&mut out, &reply.frame(), &key),
                        Step::Nothing => {}
                        Step::Module(state) => {
                            if let Some(device) = session.device() {
                                ingest.registry.report_module(device, state.running, Some(&state.error));
                            }
                            delivery.handle_state(state, clock());
                        }
                        Step::Submit { device, seq, mut records, made_on_device } => {
                            let m = &ingest.metrics;
                            m.records_from_device_processors.inc_by(made_on_device as u64);
                            m.records_from_sensors.inc_by((records.len() - made_on_device) as u64);
                            // With tracing on, a span per frame until it is durable; its
                            // context rides along in every record.
                            let span = silt_telemetry::enabled().then(|| {
                                let span = tracing::info_span!("silt.frame", device = %device, seq);
                                crate::appender::add_traceparent(&mut records, &span);
                                span
                            });
                            match ingest.appender.submit(Some((device.clone(), seq)), records).await {
                                Ok(done) => in_flight.push(async move {
                                    let durable = done.await.is_ok();
                                    drop(span);
                                    (device, durable)
                                }),
                                Err(_) => return,
                            }
                        }
                    }
                }
                if !bound && session.device().is_some() {
                    bound = true;
                    ingest.metrics.devices_connected.inc();
                }
            }
            Some((device, durable)) = in_flight.next(), if !in_flight.is_empty() => {
                if !durable {
                    // The appender stopped: the bridge is shutting down.
                    break;
                }
                let ack = ingest.sequences.durable(&device);
                encode_into(&mut out, &Frame { seq: 0, ack, body: Body::Ack }, &session.reply_key());
            }
            Some(fetched) = OptionFuture::from(fetching.as_mut()), if fetching.is_some() => {
                fetching = None;
                match fetched {
                    Ok(package) => delivery.fetched(package, clock(), fetch_every_ms),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot fetch the device's requested module");
                        delivery.fetch_failed(clock(), fetch_every_ms);
                    }
                }
            }
            () = sleep_until(wake), if wake.is_some() => delivery.handle_timeout(clock()),
        }
        if let (Some(device), None) = (session.device(), &fetching) {
            if let Some(running) = delivery.fetch_due(clock()) {
                let device = device.clone();
                let registry = &ingest.registry;
                fetching = Some(Box::pin(async move { registry.module_to_deliver(&device, running).await }));
            }
        }
        if let Some(device) = session.device() {
            let ack = || ingest.sequences.durable(device);
            delivery.write_chunks(&mut out, ack, &session.reply_key(), clock(), peer, &ingest.metrics);
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if closing {
            let device = session.device().map(|d| &**d);
            let resource = format!("device:{}", device.unwrap_or("-"));
            ingest.audit.refused(
                device,
                peer,
                "session",
                resource,
                "the frame connection is closed: its device was revoked",
            );
            break;
        }
    }
    if bound {
        ingest.metrics.devices_connected.dec();
    }
}

/// Reports a frame refused for its device's identity or rights (not for its form or order).
fn audit(ingest: &Ingest, session: &mut Session, named: Option<&str>, peer: &str, reason: NackReason) {
    let why = match reason {
        NackReason::BadTag => "the frame's tag does not match the device's key",
        NackReason::UnknownDevice => "no device with this id is registered",
        NackReason::Revoked => "the device is revoked",
        NackReason::WrongDevice => "the frame names another device than the connection's hello",
        NackReason::Forbidden => "the device may not produce to the topic",
        _ => return,
    };
    let refused_topic = session.take_refused_topic();
    let device = named.or(session.device().map(|d| &**d));
    let resource = match refused_topic {
        Some(topic) => format!("topic:{topic}"),
        None => format!("device:{}", device.unwrap_or("-")),
    };
    ingest.audit.refused(device, peer, "frame", resource, why);
}

fn count(ingest: &Ingest, outcome: Outcome) {
    let m = &ingest.metrics;
    match outcome {
        Outcome::Accepted => m.frames_accepted.inc(),
        Outcome::Duplicate => m.duplicates_dropped.inc(),
        Outcome::Rejected(reason) => m.frames_rejected.with_label_values(&[reason.as_str()]).inc(),
        Outcome::Greeted { .. } | Outcome::Other => {}
    }
}
