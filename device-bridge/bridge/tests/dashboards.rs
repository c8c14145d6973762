//! Every query of every Grafana dashboard in `grafana/dashboards` returns data from a real
//! Prometheus (Debian's `prometheus`) that scrapes a real broker and the real bridge under a
//! small load of every kind: device frames, MQTT publishes, a producer, a consumer group that
//! commits, a processor that runs and one that fails.
//!
//! Prometheus runs with the repository's `grafana/prometheus.yml` and target files, the
//! targets pointed at the test's ephemeral admin ports and the intervals shortened to 1 s. Grafana's variables are
//! replaced the way Grafana would with every value selected ("All" is `.*`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use silt_client::{
    Client, Consumer, ConsumerConfig, Deployment, FetchFrom, ProcessorState, Producer, ProducerConfig,
    ProducerRecord,
};
use silt_frame::NackReason;
use support::*;
use tokio::task::JoinHandle;

/// The scrape interval the test gives Prometheus instead of the shipped 5 s.
const SCRAPE_INTERVAL: &str = "1s";
/// What Grafana's `$__rate_interval` becomes: Grafana takes at least four scrape intervals;
/// ten leave room for a late scrape on a loaded machine and still cover only recent load.
const RATE_INTERVAL: &str = "10s";
/// `$__interval` (one graph step) and `$__range` (the dashboard's time range).
const INTERVAL: &str = "2s";
const RANGE: &str = "1m";
/// Scrapes of each target before the queries are evaluated: enough for every rate window.
const SCRAPES_MIN: f64 = 5.0;
/// Upper bound for Prometheus to start, for the scrapes above, and for every query to return
/// data (each bound separately).
const PROMETHEUS_WAIT: Duration = Duration::from_secs(20);
/// The uid of the provisioned Prometheus data source every panel reads.
const DATASOURCE_UID: &str = "silt-prometheus";
/// Pause between two rounds of the load tasks: about ten records a second per kind.
const LOAD_PERIOD: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let Some(prometheus) = prometheus_binary() else { return };
    let started = Instant::now();
    let dashboards = Dashboards::load(&grafana_dir().join("dashboards"));
    let queries = dashboards.queries();
    assert!(queries.len() >= 10, "the dashboards hold only {} queries", queries.len());

    let broker = Broker::start().await;
    let bridge = BridgeProcess::start(&broker, "", &[]).await;
    let load = Load::start(&broker, &bridge).await;
    load.wait_for_metrics(&broker, &bridge, &dashboards.metric_names()).await;

    let prometheus = Prometheus::start(&prometheus, broker.admin, bridge.admin).await;
    prometheus.wait_for_scrapes().await;
    prometheus.wait_for_variables(&dashboards.variable_queries()).await;
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    loop {
        let mut failing = Vec::new();
        for q in &queries {
            let result = prometheus.query(&q.promql).await;
            if !has_data(&result) {
                failing.push(format!(
                    "{} / {}: {}\n    sent: {}\n    got: {result}",
                    q.file, q.panel, q.expr, q.promql
                ));
            }
        }
        if failing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            load.check_alive();
            panic!(
                "{} of {} dashboard queries return no data within {PROMETHEUS_WAIT:?}:\n{}",
                failing.len(),
                queries.len(),
                failing.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    load.stop();
    eprintln!("{} dashboard queries return data ({:.1?})", queries.len(), started.elapsed());
    drop(prometheus);
    drop(bridge);
    broker.stop().await;
}

/// Debian's `prometheus` (installed by scripts/test-all.sh): required under CI, skipped with a
/// message elsewhere.
fn prometheus_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file());
    if found.is_none() {
        let message = "prometheus is missing: install Debian's prometheus package (scripts/test-all.sh does)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipped: {message}");
    }
    found
}

fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../grafana")
}

/// One query of a dashboard panel, with Grafana's variables replaced.
struct Query {
    file: String,
    panel: String,
    expr: String,
    promql: String,
}

/// The dashboards' JSON, by file name.
struct Dashboards(BTreeMap<String, Value>);

impl Dashboards {
    fn load(dir: &Path) -> Dashboards {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                let json: Value =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.insert(path.file_name().unwrap().to_string_lossy().into_owned(), json);
            }
        }
        for name in ["overview.json", "topics.json", "processors.json", "devices.json"] {
            assert!(out.contains_key(name), "no {name} in {}", dir.display());
        }
        let dashboards = Dashboards(out);
        dashboards.check_panels();
        dashboards
    }

    /// Each dashboard has its own uid; each panel but rows reads the provisioned data source
    /// by its uid and sets a unit.
    fn check_panels(&self) {
        let mut uids = BTreeSet::new();
        for (file, json) in &self.0 {
            let uid = json["uid"].as_str().unwrap_or_else(|| panic!("{file}: no uid"));
            assert!(uids.insert(uid.to_string()), "{file}: uid {uid} is taken");
            for panel in json["panels"].as_array().into_iter().flatten() {
                let title = panel["title"].as_str().unwrap_or_default();
                if panel["type"] == "row" {
                    continue;
                }
                assert_eq!(panel["datasource"]["uid"], DATASOURCE_UID, "{file} / {title}: data source");
                for target in panel["targets"].as_array().into_iter().flatten() {
                    assert_eq!(target["datasource"]["uid"], DATASOURCE_UID, "{file} / {title}: target");
                }
                let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
                assert!(!unit.is_empty(), "{file} / {title}: no unit");
            }
        }
        let provisioned =
            std::fs::read_to_string(grafana_dir().join("provisioning/datasources/prometheus.yml"))
                .expect("grafana/provisioning/datasources/prometheus.yml");
        assert!(provisioned.contains(&format!("uid: {DATASOURCE_UID}")), "the provisioned data source uid");
    }

    /// Every `expr` anywhere in every dashboard, with the title of the panel holding it.
    fn queries(&self) -> Vec<Query> {
        let mut out = Vec::new();
        for (file, json) in &self.0 {
            let variables = variable_names(json);
            walk_exprs(json, "", &mut |panel, expr| {
                out.push(Query {
                    file: file.clone(),
                    panel: panel.to_string(),
                    expr: expr.to_string(),
                    promql: substitute(expr, &variables)
                        .unwrap_or_else(|e| panic!("{file} / {panel}: {expr}: {e}")),
                });
            });
        }
        out
    }

    /// The `silt_*` metric families the queries read, without histogram suffixes.
    fn metric_names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for q in self.queries() {
            for word in q.expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
                if word.starts_with("silt_") {
                    let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| word.strip_suffix(s));
                    out.insert(family.unwrap_or(word).to_string());
                }
            }
        }
        out
    }

    /// `(dashboard file, variable, metric, label)` of every `label_values(metric, label)`
    /// variable.
    fn variable_queries(&self) -> Vec<(String, String, String, String)> {
        let mut out = Vec::new();
        for (file, json) in &self.0 {
            for v in json["templating"]["list"].as_array().into_iter().flatten() {
                let query = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
                let Some(args) = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) else {
                    continue;
                };
                let (metric, label) = args.split_once(',').unwrap_or_else(|| panic!("{file}: {query}"));
                let name = v["name"].as_str().unwrap_or_default().to_string();
                out.push((file.clone(), name, metric.trim().to_string(), label.trim().to_string()));
            }
        }
        out
    }
}

/// Names of a dashboard's template variables.
fn variable_names(dashboard: &Value) -> BTreeSet<String> {
    let list = dashboard["templating"]["list"].as_array().into_iter().flatten();
    list.filter_map(|v| v["name"].as_str().map(str::to_string)).collect()
}

/// Calls `found(panel title, expr)` for every `expr` string under `value`.
fn walk_exprs(value: &Value, panel: &str, found: &mut impl FnMut(&str, &str)) {
    match value {
        Value::Object(map) => {
            let panel = map
                .get("title")
                .and_then(Value::as_str)
                .filter(|_| map.contains_key("type"))
                .unwrap_or(panel);
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => found(panel, e),
                    _ => walk_exprs(v, panel, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk_exprs(v, panel, found)),
        _ => {}
    }
}

/// Replaces Grafana's variables the way Grafana does with every value selected: built-in
/// intervals by durations, and each dashboard variable (multi-value, "All" = `.*`) by `.*`,
/// which only makes sense after `=~`.
fn substitute(expr: &str, variables: &BTreeSet<String>) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').ok_or("unclosed ${")?;
                (braced[..end].split(':').next().unwrap_or_default(), end + 2)
            }
            None => {
                let end =
                    after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let value = match name {
            "__rate_interval" => RATE_INTERVAL,
            "__interval" => INTERVAL,
            "__range" => RANGE,
            _ if name.starts_with("__") => return Err(format!("unknown built-in variable ${name}")),
            _ if !variables.contains(name) => {
                return Err(format!("${name} is not a variable of this dashboard"))
            }
            _ if !out.ends_with("=~\"") => {
                return Err(format!("${name} selects every value as .*, so it needs =~\"${name}\""))
            }
            _ => ".*",
        };
        out.push_str(value);
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether a `/api/v1/query` answer holds at least one sample with a number (not NaN, which
/// Grafana shows as no value).
fn has_data(answer: &Value) -> bool {
    let finite = |v: &Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(f64::is_finite);
    let data = &answer["data"];
    match data["resultType"].as_str() {
        Some("vector") => data["result"].as_array().is_some_and(|r| r.iter().any(|s| finite(&s["value"]))),
        Some("scalar") => finite(&data["result"]),
        Some("matrix") => data["result"]
            .as_array()
            .is_some_and(|r| r.iter().any(|s| s["values"].as_array().is_some_and(|v| v.iter().any(finite)))),
        _ => false,
    }
}

/// Percent-encoding of a query string value: everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Debian's Prometheus on an ephemeral loopback port with a temp TSDB, killed when dropped;
/// its log is printed when the test fails (by `Drop`, so panics need not include it).
struct Prometheus {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: tokio::process::Child,
}

impl Prometheus {
    /// Starts Prometheus with `grafana/prometheus.yml` and its target files, the targets
    /// replaced by `broker_admin` and `bridge_admin` and the interval by [`SCRAPE_INTERVAL`],
    /// and waits until it is ready.
    async fn start(binary: &Path, broker_admin: SocketAddr, bridge_admin: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let every = format!("{SCRAPE_INTERVAL}\n");
        for (file, from, to) in [
            ("prometheus.yml", "5s\n", every.as_str()),
            ("targets-broker.json", "127.0.0.1:7401", &broker_admin.to_string()),
            ("targets-bridge.json", "127.0.0.1:7411", &bridge_admin.to_string()),
        ] {
            let shipped = std::fs::read_to_string(grafana_dir().join(file)).expect(file);
            assert!(shipped.contains(from), "grafana/{file} should hold {from:?}");
            std::fs::write(dir.path().join(file), shipped.replace(from, to)).unwrap();
        }
        // promtool comes with the same package; it checks the shipped files as a user runs them.
        let promtool = binary.with_file_name("promtool");
        let check = std::process::Command::new(&promtool)
            .args(["check", "config"])
            .arg(grafana_dir().join("prometheus.yml"))
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", promtool.display()));
        assert!(
            check.status.success(),
            "promtool check config grafana/prometheus.yml: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting prometheus");
        let mut prometheus = Prometheus { dir, addr, child };
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited with {status}");
            }
            if http_get(addr, "/-/ready").await.is_some_and(|b| b.contains("Ready")) {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "prometheus not ready within {PROMETHEUS_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        format!("--- prometheus log ---\n{log}")
    }

    async fn get(&self, path: &str) -> Value {
        let body =
            http_get(self.addr, path).await.unwrap_or_else(|| panic!("prometheus does not answer {path}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// The answer of `/api/v1/query` at the current time.
    async fn query(&self, promql: &str) -> Value {
        self.get(&format!("/api/v1/query?query={}", url_encode(promql))).await
    }

    /// Waits until both jobs are up and each has been scraped [`SCRAPES_MIN`] times.
    async fn wait_for_scrapes(&self) {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            let scrapes = self.query("min by (job) (count_over_time(up[1m]) and up == 1)").await;
            let jobs: BTreeMap<String, f64> = scrapes["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    let job = s["metric"]["job"].as_str()?.to_string();
                    Some((job, s["value"][1].as_str()?.parse().ok()?))
                })
                .collect();
            if ["silt-broker", "silt-bridge"].iter().all(|j| jobs.get(*j).is_some_and(|n| *n >= SCRAPES_MIN))
            {
                return;
            }
            if Instant::now() > deadline {
                let targets = self.get("/api/v1/targets").await;
                panic!(
                    "fewer than {SCRAPES_MIN} successful scrapes of each job within {PROMETHEUS_WAIT:?}: \
                     {jobs:?}\ntargets: {targets:#}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every `label_values(metric, label)` variable has values, as Grafana lists
    /// them from `/api/v1/label/<label>/values?match[]=<metric>`.
    async fn wait_for_variables(&self, variables: &[(String, String, String, String)]) {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        for (file, name, metric, label) in variables {
            let path =
                format!("/api/v1/label/{label}/values?{}={}", url_encode("match[]"), url_encode(metric));
            loop {
                let answer = self.get(&path).await;
                if answer["data"].as_array().is_some_and(|v| !v.is_empty()) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{file}: variable ${name} = label_values({metric}, {label}) has no values: {answer}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

/// Background tasks that keep a little of everything going, aborted by [`Load::stop`] or
/// when dropped.
struct Load {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Load {
    async fn start(broker: &Broker, bridge: &BridgeProcess) -> Load {
        let client = &broker.client;
        let mut tasks = Vec::new();

        // One request without a credential, refused (the refusals panel).
        let config = silt_client::ClientConfig::new(broker.listen.to_string(), &broker.ca_cert).unwrap();
        let anonymous = Client::connect(config).await.expect("connecting without a credential");
        let refused = anonymous.list_topics().await.expect_err("a request without a credential");
        assert!(refused.is_refusal(), "{refused:?}");

        // A bridge-tier processor on the frames' humidity readings (the tiers panels), running
        // before the first frame: the bridge waits for its first look at the list.
        let passthrough = abi_module_with(COUNTERS, &format!("{COUNT_BATCH} {PASSTHROUGH}"));
        client
            .deploy_bridge_processor("edge-copy", "sensors.humidity", vec![], passthrough)
            .await
            .expect("deploying a bridge-tier processor");

        // Frames: one rejected (data before hello), one duplicate, then a steady stream, in
        // which every tenth frame carries a record a processor on the device made.
        let key = broker.add_device("dev-1").await;
        let mut early = TestDevice::connect(bridge.tcp, "dev-1", key).await;
        early.data(1).await;
        assert!(matches!(early.recv().await, Reply::Nack { reason: NackReason::NoHello, .. }));
        drop(early);
        let mut dev = TestDevice::connect(bridge.tcp, "dev-1", key).await;
        assert_eq!(dev.hello(0).await, Reply::Ack(0));
        dev.data(1).await;
        dev.wait_ack(1).await;
        dev.data(1).await;
        assert_eq!(dev.recv().await, Reply::Ack(1), "a duplicate is acked again");
        tasks.push((
            "device frames",
            tokio::spawn(async move {
                for seq in 2.. {
                    if seq % 10 == 0 {
                        let mut readings = heapless::Vec::new();
                        let of = silt_frame::ReadingKind::Temperature;
                        let output =
                            silt_frame::Reading::Output { of, time_ms: 1_000, value: b"{}", marked: false };
                        readings.push(output).unwrap();
                        let data = silt_frame::Data {
                            device: "dev-1",
                            time: silt_frame::Time::TickMs(1_000),
                            readings,
                        };
                        dev.send(&silt_frame::Frame { seq, ack: 0, body: silt_frame::Body::Data(data) })
                            .await;
                    } else {
                        dev.data(seq).await;
                    }
                    dev.wait_ack(seq).await;
                    tokio::time::sleep(LOAD_PERIOD).await;
                }
            }),
        ));

        // MQTT: one refused login, then QoS 1 publishes.
        let key = broker.add_device("mqtt-1").await;
        broker.grant("device:mqtt-1", silt_client::Operation::Produce, "topic:plant.*").await;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mqtt = |password: &str| {
            let mut options = MqttOptions::new("mqtt-1-client", "127.0.0.1", bridge.mqtt.port());
            options.set_credentials("mqtt-1", password);
            options.set_keep_alive(Duration::from_secs(30));
            AsyncClient::new(options, 64)
        };
        let (_refused, mut events) = mqtt(&"00".repeat(32));
        let got = tokio::time::timeout(WAIT, events.poll()).await.expect("an MQTT answer in time");
        assert!(matches!(got, Err(rumqttc::ConnectionError::ConnectionRefused(_))), "{got:?}");
        let (publisher, mut events) = mqtt(&hex);
        tokio::time::timeout(WAIT, async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) if a.code == ConnectReturnCode::Success => break,
                    Ok(_) => {}
                    Err(e) => panic!("MQTT connect: {e}"),
                }
            }
        })
        .await
        .expect("MQTT CONNACK in time");
        tasks.push((
            "MQTT event loop",
            tokio::spawn(async move {
                loop {
                    if let Err(e) = events.poll().await {
                        panic!("MQTT event loop: {e}");
                    }
                }
            }),
        ));
        tasks.push((
            "MQTT publisher",
            tokio::spawn(async move {
                for i in 0u64.. {
                    publisher
                        .publish("plant/line1/temp", QoS::AtLeastOnce, false, format!("{i}"))
                        .await
                        .unwrap();
                    tokio::time::sleep(LOAD_PERIOD).await;
                }
            }),
        ));

        // A producer and a consumer group that commits (for lag).
        client.create_topic("load", 2, None, None).await.expect("creating topic load");
        let producer = Producer::new(client, "load", ProducerConfig::default()).await.unwrap();
        tasks.push((
            "producer",
            tokio::spawn(async move {
                for i in 0u64.. {
                    let key = format!("k{}", i % 7);
                    let value = format!("{{\"n\":{i}}}");
                    let record = ProducerRecord {
                        key: Some(key.as_bytes()),
                        value: value.as_bytes(),
                        timestamp_ms: None,
                        headers: &[],
                        partition: None,
                    };
                    producer.send(record).await.unwrap();
                    producer.flush().await.unwrap();
                    tokio::time::sleep(LOAD_PERIOD).await;
                }
            }),
        ));
        let config = ConsumerConfig {
            from: FetchFrom::Earliest,
            follow: true,
            group: Some("dashboards".into()),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(client, "load", config).await.expect("joining group dashboards");
        tasks.push((
            "group consumer",
            tokio::spawn(async move {
                while let Some(record) = consumer.next_record().await {
                    record.unwrap();
                    consumer.commit().await.unwrap();
                }
            }),
        ));

        // A processor that copies the load topic and reports counters (silt_counters), and one
        // that traps on its first batch.
        let deployment = |name: &str| Deployment {
            name: name.into(),
            input: "load".into(),
            output: format!("load.{name}"),
            params: vec![],
            from: None,
            limits: Default::default(),
        };
        let copy = abi_module_with(COUNTERS, &format!("{COUNT_BATCH} {PASSTHROUGH}"));
        for (name, module) in [("copy", copy), ("broken", abi_module("(unreachable)"))] {
            client
                .deploy_processor(deployment(name), module)
                .await
                .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
        }
        wait_processor(client, "copy", |i| i.state == ProcessorState::Running && i.events_out > 0).await;
        wait_processor(client, "broken", |i| i.state == ProcessorState::Failed).await;
        Load { tasks }
    }

    /// Waits until the broker's and the bridge's `/metrics` hold a sample of every family in
    /// `names`, so that a missing one is reported as the load's fault, not Prometheus's.
    async fn wait_for_metrics(&self, broker: &Broker, bridge: &BridgeProcess, names: &BTreeSet<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = format!(
                "{}{}",
                http_get(broker.admin, "/metrics").await.unwrap_or_default(),
                http_get(bridge.admin, "/metrics").await.unwrap_or_default()
            );
            let exported: BTreeSet<&str> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .map(|n| ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(n))
                .collect();
            let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(n.as_str())).collect();
            if missing.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                self.check_alive();
                panic!("no samples of {missing:?} in /metrics of the broker or the bridge within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails with the task's panic if a load task ended (they run until stopped).
    fn check_alive(&self) {
        for (name, task) in &self.tasks {
            assert!(!task.is_finished(), "the load task {name:?} ended early (its panic is printed above)");
        }
    }

    fn stop(self) {
        self.check_alive();
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

/// Waits (bounded by [`WAIT`]) until the processor's status satisfies `done`.
async fn wait_processor(client: &Client, name: &str, done: impl Fn(&silt_client::ProcessorInfo) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = client.processor_status(name).await.expect("processor status");
        if done(&info) {
            return;
        }
        assert!(Instant::now() < deadline, "processor {name} not as expected within {WAIT:?}: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
