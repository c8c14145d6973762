//! MQTT 3.1.1 listener: devices publish into the log and subscribe to its tail.
//!
//! Packets are read and written with rumqttc's MQTT codec (`mqttbytes::v4`); this module
//! holds only the session logic. CONNECT needs a registered device: username = device id,
//! password = its key in hex. PUBLISH QoS 0 and 1 appends the payload as one record (key =
//! device id, time = arrival); QoS 1 is acknowledged only once the record is durable.
//! SUBSCRIBE QoS 0 and 1 follows matching Silt topics from their tail (topics created later
//! from their start) and delivers each record's value.
//!
//! Deliberately absent: QoS 2 (refused by closing the connection), persistent sessions and
//! retained messages (every session is clean; the log itself is the history), and
//! redelivery of QoS 1 messages a subscriber did not acknowledge.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{matches, valid_filter, valid_topic, QoS};
use silt_client::{Consumer, ConsumerConfig, FetchFrom};
use silt_wire::message::check_topic_name;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::appender::OutRecord;
use crate::config::MqttMap;
use crate::registry::{Device, Lookup};
use crate::stream::ConnectionSlot;
use crate::Ingest;
use silt_client::Operation;
use silt_frame::Key;
use silt_wire::time::unix_ms;

/// A client must send CONNECT within this long after connecting.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Records waiting to be written to one subscriber; its topic followers wait when it is full.
const DELIVERIES_MAX: usize = 1024;
/// QoS 1 publishes of one session not yet durable; the session is not read further until one
/// completes.
const PUBLISHES_IN_FLIGHT_MAX: usize = 64;
/// How often a subscription looks for new topics matching its filter.
const TOPIC_POLL_MS: u64 = 1_000;
/// Shortest pause between two checks of a session's device (a key cache time of 0 looks the
/// device up on every frame, which MQTT sessions need not copy).
const RECHECK_MS_MIN: u64 = 100;
/// Subscriptions of one session.
const SUBSCRIPTIONS_MAX: usize = 64;
/// MQTT topic names whose Silt topic one session remembers; beyond this each publish maps its
/// name again (a device publishes to a handful of topics).
const TOPIC_NAMES_CACHED_MAX: usize = 1024;

/// The Silt topic of an MQTT topic name: the first prefix rule of `map` that matches
/// rewrites the prefix, then `/` becomes `.`. `None` if the result is not a valid topic name.
pub fn silt_topic(map: &[MqttMap], mqtt: &str) -> Option<String> {
    let (prefix, rest) = map
        .iter()
        .find_map(|m| mqtt.strip_prefix(m.mqtt.as_str()).map(|rest| (m.silt.as_str(), rest)))
        .unwrap_or(("", mqtt));
    let name = format!("{prefix}{}", rest.replace('/', "."));
    check_topic_name(&name).ok().map(|()| name)
}

/// The MQTT topic name of a Silt topic: the reverse of [`silt_topic`].
pub fn mqtt_topic(map: &[MqttMap], silt: &str) -> String {
    let (prefix, rest) = map
        .iter()
        .find_map(|m| silt.strip_prefix(m.silt.as_str()).map(|rest| (m.mqtt.as_str(), rest)))
        .unwrap_or(("", silt));
    format!("{prefix}{}", rest.replace('.', "/"))
}

/// Accepts MQTT connections in clear text until the listener fails.
pub async fn listen(listener: TcpListener, ingest: Arc<Ingest>) {
    accept(listener, None, ingest).await
}

/// Accepts MQTT connections over TLS until the listener fails.
pub async fn listen_tls(listener: TcpListener, acceptor: TlsAcceptor, ingest: Arc<Ingest>) {
    accept(listener, Some(acceptor), ingest).await
}

/// The TLS side of the MQTT listener, from the bridge's certificate and key.
pub fn acceptor((certs, key): silt_tls::Identity) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("the MQTT TLS certificate and key do not go together: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept(listener: TcpListener, tls: Option<TlsAcceptor>, ingest: Arc<Ingest>) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an MQTT connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = ConnectionSlot::take(&ingest, "mqtt") else {
            tracing::warn!(%peer, "refusing an MQTT connection: limits.connections_max reached");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let (ingest, tls) = (ingest.clone(), tls.clone());
        tokio::spawn(async move {
            let source = peer.to_string();
            let ended = match tls {
                None => session(socket, &ingest, &source).await,
                // The handshake counts against the CONNECT deadline too.
                Some(tls) => {
                    match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), tls.accept(socket))
                        .await
                    {
                        Ok(Ok(stream)) => session(stream, &ingest, &source).await,
                        Ok(Err(e)) => Err(SessionError::Protocol(format!("TLS handshake failed: {e}"))),
                        Err(_) => Err(SessionError::Protocol("no TLS handshake in time".into())),
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "MQTT session ended");
            }
            drop(slot);
        });
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("MQTT: {0}")]
    Mqtt(rumqttc::mqttbytes::Error),
    #[error("{0}")]
    Protocol(String),
}

struct Conn<S> {
    socket: S,
    input: BytesMut,
    output: BytesMut,
    packet_bytes_max: usize,
}

/// The largest packet a session reads when publishes carry at most `payload_bytes_max`: a
/// publish carries its topic (up to 64 KiB) and payload besides the fixed header.
pub fn packet_bytes_max(payload_bytes_max: usize) -> usize {
    payload_bytes_max + 70_000
}

/// Decodes the packet at the front of `input` as a session does, refusing one of more than
/// `packet_bytes_max` bytes: `Ok(None)` while it is incomplete. The bytes are the device's.
pub fn read_packet(
    input: &mut BytesMut,
    packet_bytes_max: usize,
) -> Result<Option<Packet>, rumqttc::mqttbytes::Error> {
    match Packet::read(input, packet_bytes_max) {
        Ok(p) => Ok(Some(p)),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The Silt topic a PUBLISH to `mqtt` goes to; `None` (and the session is closed) when the
/// name is not a valid MQTT topic name or maps to no valid Silt topic.
pub fn publish_topic(map: &[MqttMap], mqtt: &str) -> Option<String> {
    valid_topic(mqtt).then(|| silt_topic(map, mqtt)).flatten()
}

/// What a SUBSCRIBE filter asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Not a valid MQTT filter: refused.
    Invalid,
    /// A wildcard: the session follows each topic it matches that the device may read.
    Wildcard,
    /// One topic by name: the Silt topic it maps to, if any (refused when none, or when the
    /// device may not read it).
    Exact(Option<String>),
}

/// Classifies a SUBSCRIBE filter.
pub fn subscribe_filter(map: &[MqttMap], filter: &str) -> Filter {
    if !valid_filter(filter) {
        Filter::Invalid
    } else if filter.contains(['+', '#']) {
        Filter::Wildcard
    } else {
        Filter::Exact(silt_topic(map, filter))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// The next packet, reading as needed.
    async fn next(&mut self) -> Result<Packet, SessionError> {
        loop {
            if let Some(p) =
                read_packet(&mut self.input, self.packet_bytes_max).map_err(SessionError::Mqtt)?
            {
                return Ok(p);
            }
            self.input.reserve(4096);
            if self.socket.read_buf(&mut self.input).await? == 0 {
                return Err(SessionError::Closed);
            }
        }
    }

    fn queue(&mut self, p: Packet) -> Result<(), SessionError> {
        p.write(&mut self.output, usize::MAX).map_err(SessionError::Mqtt)?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.output.is_empty() {
            self.socket.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    socket: S,
    ingest: &Arc<Ingest>,
    peer: &str,
) -> Result<(), SessionError> {
    let mut conn = Conn {
        socket,
        input: BytesMut::with_capacity(4096),
        output: BytesMut::with_capacity(4096),
        packet_bytes_max: packet_bytes_max(ingest.config.mqtt.payload_bytes_max),
    };
    let first = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), conn.next())
        .await
        .map_err(|_| SessionError::Protocol("no CONNECT in time".into()))??;
    let Packet::Connect(connect) = first else {
        return Err(SessionError::Protocol("first packet is not CONNECT".into()));
    };
    let refuse = |conn: &mut Conn<S>, code, reason: &str| {
        ingest.metrics.mqtt_refused.with_label_values(&[reason]).inc();
        conn.queue(Packet::ConnAck(ConnAck::new(code, false)))
    };
    let (device, login_key, entry) = match &connect.login {
        None => {
            ingest.audit.refused(
                None,
                peer,
                "mqtt-connect",
                String::new(),
                "CONNECT without username and password",
            );
            refuse(&mut conn, ConnectReturnCode::NotAuthorized, "no_login")?;
            conn.flush().await?;
            return Err(SessionError::Protocol("CONNECT without username and password".into()));
        }
        Some(login) => {
            let now = unix_ms(SystemTime::now());
            let given = login.password.to_ascii_lowercase();
            // The current key, or the previous one during a rotation's overlap.
            let key_of = |d: &Device| {
                d.keys(now)
                    .find(|k| {
                        constant_time_eq(silt_wire::signature::hex(&k[..]).as_bytes(), given.as_bytes())
                    })
                    .copied()
            };
            let bad = || {
                (ConnectReturnCode::BadUserNamePassword, "bad_login", "bad username or password".to_string())
            };
            let found = match ingest.registry.lookup(&login.username).await {
                Ok(Lookup::Active(d)) => match key_of(&d) {
                    Some(k) => Ok((Arc::<str>::from(login.username.as_str()), k, d)),
                    None => Err(bad()),
                },
                Ok(Lookup::Unknown) => Err(bad()),
                Ok(Lookup::Revoked) => {
                    Err((ConnectReturnCode::NotAuthorized, "revoked", "the device is revoked".to_string()))
                }
                Err(e) => Err((
                    ConnectReturnCode::ServiceUnavailable,
                    "unavailable",
                    format!("device registry unreachable: {e}"),
                )),
            };
            match found {
                Ok(found) => found,
                Err((code, reason, why)) => {
                    if code != ConnectReturnCode::ServiceUnavailable {
                        let device = Some(login.username.as_str());
                        let resource = format!("device:{}", login.username);
                        ingest.audit.refused(device, peer, "mqtt-connect", resource, &why);
                    }
                    refuse(&mut conn, code, reason)?;
                    conn.flush().await?;
                    return Err(SessionError::Protocol(format!("{why} ({:?})", login.username)));
                }
            }
        }
    };
    conn.queue(Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false)))?;
    conn.flush().await?;
    ingest.metrics.mqtt_sessions.inc();
    let result = serve(&mut conn, ingest, (&device, peer), (login_key, entry), connect.keep_alive).await;
    ingest.metrics.mqtt_sessions.dec();
    result
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    ingest: &Arc<Ingest>,
    (device, peer): (&Arc<str>, &str),
    (login_key, entry): (Key, Arc<Device>),
    keep_alive_s: u16,
) -> Result<(), SessionError> {
    // MQTT 3.1.1 section 3.1.2.10: the server may close after one and a half keep-alives.
    let idle = match keep_alive_s {
        0 => Duration::from_millis(ingest.config.limits.idle_timeout_ms),
        s => Duration::from_millis(u64::from(s) * 1500),
    };
    let mut acks = FuturesOrdered::new();
    let (deliver_tx, mut deliveries) = mpsc::channel::<(Arc<str>, Bytes, QoS)>(DELIVERIES_MAX);
    let mut subscriptions: HashMap<String, JoinSet<()>> = HashMap::new();
    let mut next_pkid: u16 = 0;
    let mut topics: HashMap<String, Arc<str>> = HashMap::new();
    // The device's keys and rights, looked up again every key-cache interval: a revoked
    // device, or one whose login key was rotated out, is disconnected then.
    let rights = watch::Sender::new(entry);
    let mut recheck = tokio::time::interval(ingest.registry.ttl().max(Duration::from_millis(RECHECK_MS_MIN)));
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                if let Some(d) = current_rights(ingest, (device, peer), &login_key).await? {
                    rights.send_replace(d);
                }
            }
            packet = tokio::time::timeout(idle, conn.next()), if acks.len() < PUBLISHES_IN_FLIGHT_MAX => {
                let packet = packet.map_err(|_| SessionError::Protocol("keep-alive expired".into()))??;
                match packet {
                    Packet::Publish(p) => {
                        ingest.metrics.mqtt_messages.with_label_values(&["in"]).inc();
                        if p.qos == QoS::ExactlyOnce {
                            return Err(SessionError::Protocol("QoS 2 is not supported".into()));
                        }
                        if p.payload.len() > ingest.config.mqtt.payload_bytes_max {
                            return Err(SessionError::Protocol(format!("payload of {} bytes over mqtt.payload_bytes_max", p.payload.len())));
                        }
                        let topic = match topics.get(&p.topic) {
                            Some(t) => t.clone(),
                            None => {
                                let Some(t) = publish_topic(&ingest.config.mqtt.map, &p.topic) else {
                                    return Err(SessionError::Protocol(format!("topic {:?} maps to no valid Silt topic", p.topic)));
                                };
                                let t: Arc<str> = Arc::from(t);
                                if topics.len() < TOPIC_NAMES_CACHED_MAX {
                                    topics.insert(p.topic.clone(), t.clone());
                                }
                                t
                            }
                        };
                        if !rights.borrow().may(device, Operation::Produce, &topic) {
                            ingest.metrics.mqtt_refused.with_label_values(&["forbidden_publish"]).inc();
                            ingest.audit.refused(Some(device), peer, "mqtt-publish", format!("topic:{topic}"), "the device may not publish to the topic; the session is closed");
                            return Err(SessionError::Protocol(format!("device {device:?} may not publish to {topic:?}")));
                        }
                        let mut records = vec![OutRecord { topic, key: device.clone(), device_header: true, timestamp_ms: unix_ms(SystemTime::now()), value: p.payload.to_vec(), headers: Vec::new() }];
                        let span = silt_telemetry::enabled().then(|| {
                            let span = tracing::info_span!("silt.mqtt.publish", device = %device, topic = %p.topic);
                            crate::appender::add_traceparent(&mut records, &span);
                            span
                        });
                        let done = ingest.appender.submit(None, records).await.map_err(|_| SessionError::Closed)?;
                        if p.qos == QoS::AtLeastOnce {
                            let pkid = p.pkid;
                            acks.push_back(async move {
                                let r = done.await.map(|()| pkid);
                                drop(span);
                                r
                            });
                        }
                    }
                    Packet::Subscribe(s) => {
                        let mut codes = Vec::with_capacity(s.filters.len());
                        for f in s.filters {
                            let filter = subscribe_filter(&ingest.config.mqtt.map, &f.path);
                            if filter == Filter::Invalid || subscriptions.len() >= SUBSCRIPTIONS_MAX {
                                codes.push(SubscribeReasonCode::Failure);
                                continue;
                            }
                            // A filter naming one topic is refused outright when the device
                            // may not read it; a wildcard follows only the topics it may.
                            if let Filter::Exact(named) = &filter {
                                if !named.as_ref().is_some_and(|t| rights.borrow().may(device, Operation::Consume, t)) {
                                    ingest.metrics.mqtt_refused.with_label_values(&["forbidden_subscribe"]).inc();
                                    let resource = named.as_ref().map_or_else(|| format!("mqtt:{}", f.path), |t| format!("topic:{t}"));
                                    ingest.audit.refused(Some(device), peer, "mqtt-subscribe", resource, "the device may not read the topic");
                                    codes.push(SubscribeReasonCode::Failure);
                                    continue;
                                }
                            }
                            let qos = if f.qos == QoS::AtMostOnce { QoS::AtMostOnce } else { QoS::AtLeastOnce };
                            let mut set = JoinSet::new();
                            let reader = Reader { ingest: ingest.clone(), device: device.clone(), rights: rights.subscribe(), qos, tx: deliver_tx.clone() };
                            set.spawn(follow_filter(reader, f.path.clone()));
                            subscriptions.insert(f.path, set);
                            codes.push(SubscribeReasonCode::Success(qos));
                        }
                        conn.queue(Packet::SubAck(SubAck::new(s.pkid, codes)))?;
                    }
                    Packet::Unsubscribe(u) => {
                        for t in &u.topics {
                            subscriptions.remove(t);
                        }
                        conn.queue(Packet::UnsubAck(UnsubAck::new(u.pkid)))?;
                    }
                    Packet::PingReq => conn.queue(Packet::PingResp)?,
                    Packet::Disconnect => return Ok(()),
                    // Acks of our QoS 1 deliveries: nothing is redelivered, so nothing to do.
                    Packet::PubAck(_) => {}
                    other => return Err(SessionError::Protocol(format!("unexpected packet {other:?}"))),
                }
            }
            Some(acked) = acks.next(), if !acks.is_empty() => {
                let pkid = acked.map_err(|_| SessionError::Closed)?;
                conn.queue(Packet::PubAck(PubAck::new(pkid)))?;
            }
            Some((topic, payload, qos)) = deliveries.recv() => {
                let mut p = Publish::new(&*topic, qos, payload.to_vec());
                if qos == QoS::AtLeastOnce {
                    next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                    p.pkid = next_pkid;
                }
                ingest.metrics.mqtt_messages.with_label_values(&["out"]).inc();
                conn.queue(Packet::Publish(p))?;
            }
        }
        conn.flush().await?;
    }
}

/// What a subscription's followers share: where records go, and the device's rights, which
/// they check before following a topic and before delivering each record.
#[derive(Clone)]
struct Reader {
    ingest: Arc<Ingest>,
    device: Arc<str>,
    rights: watch::Receiver<Arc<Device>>,
    qos: QoS,
    tx: mpsc::Sender<(Arc<str>, Bytes, QoS)>,
}

impl Reader {
    fn may_read(&self, topic: &str) -> bool {
        self.rights.borrow().may(&self.device, Operation::Consume, topic)
    }
}

/// The device's entry as the registry has it now, if the session may go on: the device is
/// still active and the key it logged in with still accepted. `None`: the registry could not
/// be asked, and the session keeps what it had until the next check.
async fn current_rights(
    ingest: &Ingest,
    (device, peer): (&str, &str),
    login_key: &Key,
) -> Result<Option<Arc<Device>>, SessionError> {
    let now = unix_ms(SystemTime::now());
    let why = match ingest.registry.lookup(device).await {
        Ok(Lookup::Active(d)) if d.keys(now).any(|k| k == login_key) => return Ok(Some(d)),
        Ok(Lookup::Active(_)) => "its key was rotated out",
        Ok(_) => "the device was revoked",
        // The registry being unreachable for a moment ends no session; the next check decides.
        Err(e) => {
            tracing::warn!(%device, error = %e, "device registry unreachable; keeping the session's rights");
            return Ok(None);
        }
    };
    let resource = format!("device:{device}");
    ingest.audit.refused(
        Some(device),
        peer,
        "session",
        resource,
        &format!("the MQTT session is closed: {why}"),
    );
    Err(SessionError::Protocol(format!("device {device:?}: {why}")))
}

/// Follows every Silt topic whose MQTT name matches `filter` and that the device may read:
/// topics that exist now from their tail, topics that appear later (or become readable) from
/// their start.
async fn follow_filter(reader: Reader, filter: String) {
    let mut followed = HashSet::new();
    let mut followers = JoinSet::new();
    let mut first = true;
    loop {
        match reader.ingest.client.list_topics().await {
            Ok(topics) => {
                for t in topics {
                    let name = mqtt_topic(&reader.ingest.config.mqtt.map, &t.name);
                    if matches(&name, &filter) && reader.may_read(&t.name) && followed.insert(t.name.clone())
                    {
                        let from = if first { FetchFrom::Latest } else { FetchFrom::Earliest };
                        followers.spawn(follow_topic(reader.clone(), t.name, Arc::from(name), from));
                    }
                }
                first = false;
            }
            Err(e) => tracing::warn!(error = %e, "listing topics for an MQTT subscription failed"),
        }
        // Followers that stopped (their topic was deleted or its right taken) may start again.
        while let Some(Ok(topic)) = followers.try_join_next() {
            followed.remove(&topic);
        }
        if reader.tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(TOPIC_POLL_MS)).await;
    }
}

/// Delivers `topic`'s records while the device may read it; returns the topic when it stops.
async fn follow_topic(mut reader: Reader, topic: String, mqtt_name: Arc<str>, from: FetchFrom) -> String {
    let config = ConsumerConfig { from, follow: true, ..ConsumerConfig::default() };
    let mut consumer = match Consumer::new(&reader.ingest.client, &topic, config).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%topic, error = %e, "cannot follow topic for an MQTT subscription");
            return topic;
        }
    };
    while let Some(record) = consumer.next_record().await {
        match record {
            Ok(r) => {
                // The right was checked before following; again only when the session looked
                // the device up anew (a closed session ends the follower too).
                if reader.rights.has_changed().unwrap_or(true) {
                    let entry = reader.rights.borrow_and_update().clone();
                    if !entry.may(&reader.device, Operation::Consume, &topic) {
                        break;
                    }
                }
                if reader.tx.send((mqtt_name.clone(), r.value, reader.qos)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(%topic, error = %e, "MQTT subscription stopped following topic");
                break;
            }
        }
    }
    consumer.close().await;
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_map_both_ways() {
        let map = vec![MqttMap { mqtt: "devices/".into(), silt: "raw.".into() }];
        assert_eq!(silt_topic(&[], "sensors/bar").as_deref(), Some("sensors.bar"));
        assert_eq!(silt_topic(&map, "devices/a/b").as_deref(), Some("raw.a.b"));
        assert_eq!(mqtt_topic(&map, "raw.a.b"), "devices/a/b");
        assert_eq!(mqtt_topic(&map, "alerts.temp"), "alerts/temp");
        assert_eq!(silt_topic(&[], "bad topic"), None);
        assert_eq!(silt_topic(&[], ""), None);
    }
}
