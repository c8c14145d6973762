//! One device reading followed through OpenTelemetry: the bridge's frame span, the broker's
//! append span, the processor's span and the consumer's span share one trace, linked by the
//! `traceparent` header the records carry; every process exports its spans over OTLP/HTTP to
//! a collector this test runs on loopback.
//!
//! The broker runs in this test's process, so it exports through the subscriber the test
//! installs; the bridge is its own process with `--otlp-endpoint`.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use silt_client::{Consumer, ConsumerConfig, Deployment, FetchFrom};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Spans received, as (span name, trace id hex, service name).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

/// A minimal OTLP/HTTP collector: accepts `POST /v1/traces` (protobuf), keep-alive included.
async fn collector() -> (std::net::SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = socket.into_split();
                let mut rd = BufReader::new(rd);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length.min(16 << 20)];
                    if rd.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(req) = ExportTraceServiceRequest::decode(&body[..]) {
                        let mut out = store.lock().unwrap();
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|a| a.key == "service.name")
                                .and_then(|a| a.value.as_ref())
                                .map(|v| format!("{:?}", v.value))
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    let trace: String =
                                        span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                                    out.push((span.name, trace, service.clone()));
                                }
                            }
                        }
                    }
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if wr.write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_is_followed_from_frame_to_consumer() {
    let (otlp, received) = collector().await;
    let endpoint = format!("http://{otlp}");
    let telemetry = silt_telemetry::init("silt-test", false, Some(&endpoint)).expect("telemetry");
    assert!(silt_telemetry::enabled());

    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &["--otlp-endpoint", &endpoint]).await;
    broker.client.create_topic("sensors.temperature", 1, None, None).await.unwrap();
    let deployment = Deployment {
        name: "copy".into(),
        input: "sensors.temperature".into(),
        output: "copied".into(),
        params: vec![],
        from: Some(FetchFrom::Earliest),
        limits: Default::default(),
    };
    // The passthrough module outputs its input records unchanged, headers included.
    broker.client.deploy_processor(deployment, abi_module(PASSTHROUGH)).await.expect("deploy");

    let key = broker.add_device("traced-1").await;
    let mut dev = TestDevice::connect(bridge.tcp, "traced-1", key).await;
    assert_eq!(dev.hello(0).await, Reply::Ack(0));
    dev.data(1).await;
    dev.wait_ack(1).await;

    // The consumer of the processor's output opens the last span of the reading's trace.
    let config = ConsumerConfig { from: FetchFrom::Earliest, follow: true, ..Default::default() };
    let mut consumer = Consumer::new(&broker.client, "copied", config).await.unwrap();
    let fetched =
        tokio::time::timeout(WAIT, consumer.next_batch()).await.expect("output in time").unwrap().unwrap();
    let record = fetched.records().next().expect("one record").unwrap();
    let span = silt_telemetry::consume_span("copied", fetched.partition, record.offset, record.headers())
        .expect("the processor's output keeps the reading's traceparent");
    drop(span);
    consumer.close().await;

    // The bridge exports its frame span on its batch exporter's schedule (5 s), so it keeps
    // running until the span arrived; this process's spans are flushed by dropping the guard.
    drop(telemetry);
    let deadline = Instant::now() + WAIT;
    let wanted = ["silt.frame", "silt.append", "silt.process", "silt.consume"];
    loop {
        let spans = received.lock().unwrap().clone();
        let mut traces: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (name, trace, _) in &spans {
            traces.entry(trace).or_default().insert(name);
        }
        if traces.values().any(|names| wanted.iter().all(|w| names.contains(w))) {
            let services: HashSet<&str> = spans.iter().map(|(_, _, s)| s.as_str()).collect();
            assert!(services.iter().any(|s| s.contains("silt-bridge")), "{services:?}");
            assert!(
                spans.iter().all(|(name, _, _)| name.starts_with("silt.")),
                "only Silt's spans: {spans:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no trace holds all of {wanted:?}; received {spans:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(bridge);
    broker.stop().await;
}
