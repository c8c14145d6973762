//! The anomaly-zscore example over the NAB sample, replayed through a running broker: every
//! row of every file is produced into one topic (key: the file's name, event time: the row's
//! timestamp, value `{"value":<v>}`), the module is deployed with its defaults, and its alerts
//! are scored against NAB's labelled anomaly windows.
//!
//! The data is a copy of the NAB sample in `processors/examples/anomaly-zscore/nab` (MIT,
//! 3.6 MB; see its SOURCE.md); `SILT_NAB_DIR` points the test at another copy of the same
//! layout. Reproduce, with the table printed:
//!
//! ```sh
//! cargo test -p silt-broker --test nab -- --nocapture
//! ```

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anomaly_zscore::nab::{self, Score, Series};
use silt_client::{
    Client, Consumer, ConsumerConfig, Deployment, FetchFrom, ProcessorState, Producer, ProducerConfig,
    ProducerRecord,
};
use silt_wire::partition_for_key;
use support::{create_topic, example_wasm, BrokerProcess};

/// Bound on producing the sample, on the pipeline catching up and on reading the alerts. All
/// three take a few seconds together on an idle 2-core machine.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Partitions of the replay topic: more than one, so the files are spread over pipeline tasks.
const PARTITIONS: u32 = 2;
/// Records per produced batch, as in the example's own evaluation (`nab_evaluation`).
const BATCH_RECORDS: u32 = 500;
/// What `cargo test -p anomaly-zscore nab_evaluation` measures natively with the defaults
/// (processors/examples/anomaly-zscore/README.md): 37 of the 50 windows flagged, 88 false
/// alarms. The detector is per key and per record, so through the broker the numbers must be
/// the same; the bounds below leave a margin only so that a deliberate retuning of the
/// defaults does not have to touch this test.
const DETECTED_MIN: usize = 35;
const FALSE_ALARMS_MAX: usize = 95;

/// The sample's directory, or `None` when it is not there.
fn nab_dir() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        std::env::var_os("SILT_NAB_DIR").map(PathBuf::from),
        Some(workspace.join("processors/examples/anomaly-zscore/nab")),
        Some(workspace.join("../shared/data/nab")),
    ];
    candidates.into_iter().flatten().find(|d| d.join("labels/combined_windows.json").is_file())
}

/// An alert as the test uses it.
struct Alert {
    timestamp_ms: i64,
    value: f64,
    offset: u64,
}

/// Member `name` of a flat JSON object, as a number.
fn number(json: &str, name: &str) -> Option<f64> {
    let at = json.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &json[at..];
    rest[..rest.find([',', '}'])?].parse().ok()
}

/// Produces every row of every file (file after file, 500 records a batch) and returns, per
/// file, the offset each row got: the producer keeps each partition's records in send order.
async fn produce_all(client: &Client, series: &[Series]) -> Vec<Vec<u64>> {
    let config = ProducerConfig { batch_records_max: BATCH_RECORDS, ..Default::default() };
    let mut next = vec![0u64; PARTITIONS as usize];
    let offsets: Vec<Vec<u64>> = series
        .iter()
        .map(|s| {
            let p = partition_for_key(s.key.as_bytes(), PARTITIONS) as usize;
            let first = next[p];
            next[p] += s.rows.len() as u64;
            (first..next[p]).collect()
        })
        .collect();
    let work = async {
        let p = Producer::new(client, "nab", config).await?;
        for s in series {
            for (t, v) in &s.rows {
                let value = format!(r#"{{"value":{v}}}"#);
                let record = ProducerRecord {
                    key: Some(s.key.as_bytes()),
                    value: value.as_bytes(),
                    timestamp_ms: Some(*t),
                    ..Default::default()
                };
                p.send(record).await?;
            }
        }
        p.close().await
    };
    tokio::time::timeout(IO_TIMEOUT, work).await.expect("producing timed out").expect("produce");
    offsets
}

/// Every alert in the output topic, by key.
async fn read_alerts(client: &Client, topic: &str) -> HashMap<String, Vec<Alert>> {
    let config = ConsumerConfig { from: FetchFrom::Earliest, follow: false, ..Default::default() };
    let work = async {
        let mut c = Consumer::new(client, topic, config).await?;
        let mut out: HashMap<String, Vec<Alert>> = HashMap::new();
        while let Some(r) = c.next_record().await {
            let r = r?;
            let json = String::from_utf8(r.value.to_vec()).expect("UTF-8 alert");
            let alert = Alert {
                timestamp_ms: r.timestamp_ms,
                value: number(&json, "value").unwrap_or_else(|| panic!("no value in {json}")),
                offset: number(&json, "offset").unwrap_or_else(|| panic!("no offset in {json}")) as u64,
            };
            let key = String::from_utf8(r.key.to_vec()).expect("UTF-8 key");
            assert!(json.starts_with(&format!(r#"{{"key":"{key}","#)), "{json}");
            out.entry(key).or_default().push(alert);
        }
        c.close().await;
        Ok::<_, silt_client::ClientError>(out)
    };
    tokio::time::timeout(IO_TIMEOUT, work).await.expect("reading alerts timed out").expect("read")
}

/// anomaly-zscore with its defaults, fed the NAB sample through a 2-partition topic, flags at
/// least 35 of the 50 labelled anomaly windows with at most 95 false alarms (natively: 37
/// and 88) and no alert in the five files without anomalies; every alert names a real row of
/// its file: its time, its value and the offset the row was stored at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_zscore_over_nab_through_the_broker() {
    let Some(dir) = nab_dir() else {
        println!("NAB sample not found (SILT_NAB_DIR, processors/examples/anomaly-zscore/nab, ../shared/data/nab); skipping");
        return;
    };
    let started = Instant::now();
    let series = nab::load(&dir);
    let total: usize = series.iter().map(|s| s.rows.len()).sum();

    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "nab", PARTITIONS).await;
    let offsets = produce_all(&client, &series).await;
    let produced = started.elapsed();
    let module = example_wasm("anomaly-zscore");
    let deploy = Deployment {
        name: "nab-anomaly".into(),
        input: "nab".into(),
        output: "nab-alerts".into(),
        params: vec![],
        from: None,
        limits: Default::default(),
    };
    client.deploy_processor(deploy, module).await.expect("deploy");
    let deadline = Instant::now() + IO_TIMEOUT;
    let info = loop {
        let info = client.processor_status("nab-anomaly").await.expect("status");
        assert_ne!(info.state, ProcessorState::Failed, "processor failed: {:?}", info.error);
        if info.lag == 0 && info.events_in == total as u64 {
            break info;
        }
        assert!(Instant::now() < deadline, "no catch-up within {IO_TIMEOUT:?}: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let processed = started.elapsed();
    let mut alerts = read_alerts(&client, "nab-alerts").await;
    assert_eq!(info.events_out as usize, alerts.values().map(Vec::len).sum::<usize>());

    println!("{:66} {:>8} {:>12} {:>7}", "file (rows)", "windows", "false alarms", "alerts");
    let mut totals = Score::default();
    let mut quiet_files = 0;
    for (s, offsets) in series.iter().zip(&offsets) {
        let file_alerts = alerts.remove(&s.key).unwrap_or_default();
        for a in &file_alerts {
            let row = offsets.iter().position(|&o| o == a.offset).unwrap_or_else(|| {
                panic!("{}: alert offset {} is not one of the file's rows", s.path, a.offset)
            });
            assert_eq!(a.timestamp_ms, s.rows[row].0, "{}: alert time of row {row}", s.path);
            assert_eq!(
                a.value,
                s.rows[row].1.parse::<f64>().unwrap(),
                "{}: alert value of row {row}",
                s.path
            );
        }
        let sc = s.score(file_alerts.iter().map(|a| a.timestamp_ms));
        println!(
            "{:66} {:>8} {:>12} {:>7}",
            format!("{} ({})", s.path, s.rows.len()),
            format!("{}/{}", sc.detected, sc.windows),
            sc.false_alarms,
            sc.alerts
        );
        if s.path.starts_with("artificialNoAnomaly/") {
            assert!(file_alerts.is_empty(), "{}: alerts on a series without anomalies", s.path);
            quiet_files += 1;
        }
        totals += sc;
    }
    assert!(alerts.is_empty(), "alerts under keys that are no file: {:?}", alerts.keys());
    println!(
        "NAB through the broker: {}/{} windows flagged, {} false alarms, {} scored alerts \
         ({} alerts in all; {} files, {total} rows; first 15% of each file not scored); \
         produced in {produced:.1?}, caught up after {processed:.1?}",
        totals.detected,
        totals.windows,
        totals.false_alarms,
        totals.alerts,
        info.events_out,
        series.len(),
    );
    assert_eq!((series.len(), totals.windows, quiet_files), (35, 50, 5), "the NAB sample is complete");
    assert!(totals.detected >= DETECTED_MIN, "only {}/{} windows flagged", totals.detected, totals.windows);
    assert!(totals.false_alarms <= FALSE_ALARMS_MAX, "{} false alarms", totals.false_alarms);
}
