//! Fuzzes MQTT packets as the bridge sees them before any I/O: the bytes a device sends,
//! decoded packet after packet under the size cap a session uses, each PUBLISH topic mapped to
//! a Silt topic and each SUBSCRIBE filter classified as the session does, with the topic map of
//! the bridge's docs. None may panic, whatever the bytes; decoding never reads past them, and
//! a topic that maps is a valid Silt topic name.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::v4::Packet;
use silt_bridge::config::{MqttConfig, MqttMap};
use silt_bridge::mqtt::{mqtt_topic, packet_bytes_max, publish_topic, read_packet, subscribe_filter, Filter};
use silt_wire::message::check_topic_name;

fuzz_target!(|data: &[u8]| {
    let map = [MqttMap { mqtt: "devices/".into(), silt: "sensors.".into() }];
    let cap = packet_bytes_max(MqttConfig::default().payload_bytes_max);
    let mut input = BytesMut::from(data);
    let mut left = input.len();
    while let Ok(Some(packet)) = read_packet(&mut input, cap) {
        assert!(input.len() < left, "a packet consumed no bytes");
        left = input.len();
        match packet {
            Packet::Publish(p) => {
                if let Some(topic) = publish_topic(&map, &p.topic) {
                    assert!(check_topic_name(&topic).is_ok(), "{topic:?}");
                    let _ = mqtt_topic(&map, &topic);
                }
            }
            Packet::Subscribe(s) => {
                for f in &s.filters {
                    if let Filter::Exact(Some(topic)) = subscribe_filter(&map, &f.path) {
                        assert!(check_topic_name(&topic).is_ok(), "{topic:?}");
                    }
                }
            }
            Packet::Connect(c) => {
                if let Some(login) = &c.login {
                    let _ = login.password.to_ascii_lowercase();
                }
            }
            _ => {}
        }
    }
});
