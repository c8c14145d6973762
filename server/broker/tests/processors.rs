//! WebAssembly processors through a real broker (issue 3): lifecycle (deploy, versions,
//! rollback, pause, resume, undeploy), consume-time processing, signed modules, and hostile
//! modules that must fail alone while the broker keeps serving.

mod support;

use std::time::{Duration, Instant};

use silt_client::{Client, ClientError, Deployment, ErrorCode, FetchFrom, ProcessorInfo, ProcessorState};
use silt_wire::signature;
use support::{
    abi_module, abi_module_with, create_topic, health, produce, read_all, BrokerProcess, COUNTERS,
    PASSTHROUGH, SKIP_ALL,
};

/// How long a pipeline may take to catch up with a few thousand records.
const CATCH_UP: Duration = Duration::from_secs(20);

fn deployment(name: &str, input: &str, output: &str) -> Deployment {
    Deployment {
        name: name.into(),
        input: input.into(),
        output: output.into(),
        params: vec![],
        from: None,
        limits: Default::default(),
    }
}

fn values(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("v{i}")).collect()
}

/// Waits (bounded) until the processor's status satisfies `done`.
async fn wait_status(
    client: &Client,
    name: &str,
    what: &str,
    done: impl Fn(&ProcessorInfo) -> bool,
) -> ProcessorInfo {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let info = client.processor_status(name).await.expect("processor status");
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "processor {name} did not become {what} within {CATCH_UP:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn caught_up(client: &Client, name: &str) -> ProcessorInfo {
    wait_status(client, name, "caught up", |i| i.state == ProcessorState::Running && i.lag == 0).await
}

async fn failed(client: &Client, name: &str) -> ProcessorInfo {
    wait_status(client, name, "failed", |i| i.state == ProcessorState::Failed).await
}

fn broker_error(e: ClientError) -> (ErrorCode, String) {
    match e {
        ClientError::Broker { code, message } => (code, message),
        other => panic!("expected a broker error, got {other:?}"),
    }
}

/// Deploy, new version, rollback, pause, resume and undeploy, with the derived topic filling
/// and the status reporting events in and out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_deploy_version_rollback_pause_resume_undeploy() {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "in", 2).await;
    produce(&client, "in", 0, &values(0..300), 100).await;
    produce(&client, "in", 1, &values(300..500), 100).await;

    let info =
        client.deploy_processor(deployment("copy", "in", "out"), abi_module(PASSTHROUGH)).await.unwrap();
    assert_eq!((info.version, info.versions), (1, 1));
    let info = caught_up(&client, "copy").await;
    assert_eq!((info.events_in, info.events_out), (500, 500));
    let out = read_all(&client, "out", FetchFrom::Earliest).await;
    let inp = read_all(&client, "in", FetchFrom::Earliest).await;
    assert_eq!(out, inp, "a passthrough keeps partition, offset, time and value");

    // Version 2 drops everything; it continues from where version 1 stopped.
    let drop_all = abi_module("(i32.store offset=4 (local.get $res) (i32.const 0)) (i32.const 0)");
    let info = client.deploy_processor(deployment("copy", "in", "out"), drop_all).await.unwrap();
    assert_eq!(info.version, 2);
    produce(&client, "in", 0, &values(500..600), 50).await;
    let info = caught_up(&client, "copy").await;
    assert_eq!((info.events_in, info.events_out), (600, 500));

    // Rollback: version 1 again, from the current checkpoints.
    let info = client.rollback_processor("copy").await.unwrap();
    assert_eq!(info.version, 1);
    produce(&client, "in", 1, &values(600..650), 50).await;
    let info = caught_up(&client, "copy").await;
    assert_eq!((info.events_in, info.events_out), (650, 550));
    let versions = client.processor_versions("copy").await.unwrap();
    assert_eq!(
        versions.iter().map(|v| (v.version, v.active)).collect::<Vec<_>>(),
        vec![(1, true), (2, false)]
    );
    let err = client.rollback_processor("copy").await.unwrap_err();
    assert!(broker_error(err).1.contains("nothing to roll back"));

    // Paused: input accumulates as lag; resumed: it is processed.
    assert_eq!(client.pause_processor("copy").await.unwrap().state, ProcessorState::Paused);
    produce(&client, "in", 0, &values(650..700), 50).await;
    let info = client.processor_status("copy").await.unwrap();
    assert_eq!((info.state, info.lag), (ProcessorState::Paused, 50));
    client.resume_processor("copy").await.unwrap();
    assert_eq!(caught_up(&client, "copy").await.events_out, 600);

    // A new version from earliest replays history into the same output.
    let mut again = deployment("copy", "in", "out");
    again.from = Some(FetchFrom::Earliest);
    client.deploy_processor(again, abi_module(PASSTHROUGH)).await.unwrap();
    let info = caught_up(&client, "copy").await;
    assert_eq!(info.version, 3);
    assert_eq!(read_all(&client, "out", FetchFrom::Earliest).await.len(), 600 + 700);

    assert_eq!(client.list_processors().await.unwrap().len(), 1);
    client.undeploy_processor("copy").await.unwrap();
    assert!(client.list_processors().await.unwrap().is_empty());
    let (code, _) = broker_error(client.processor_status("copy").await.unwrap_err());
    assert_eq!(code, ErrorCode::UnknownProcessor);
}

/// A processor survives a clean restart: it keeps its version and checkpoint, processes what
/// arrives afterwards, and re-processes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_resumes_after_restart() {
    let mut broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "in", 1).await;
    produce(&client, "in", 0, &values(0..100), 10).await;
    client.deploy_processor(deployment("copy", "in", "out"), abi_module(PASSTHROUGH)).await.unwrap();
    caught_up(&client, "copy").await;
    broker.terminate(Duration::from_secs(10)).await;
    broker.restart().await;
    let client = broker.client().await;
    produce(&client, "in", 0, &values(100..150), 10).await;
    let info = caught_up(&client, "copy").await;
    assert_eq!((info.events_in, info.events_out), (150, 150));
    let out: Vec<String> =
        read_all(&client, "out", FetchFrom::Earliest).await.into_iter().map(|r| r.value).collect();
    assert_eq!(out, values(0..150));
}

/// Consume-time processing applies a deployed module to a read and stores nothing; a version
/// can be chosen, and an unknown one is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_time_processing_stores_nothing() {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "in", 1).await;
    produce(&client, "in", 0, &values(0..250), 100).await;
    let drop_all = abi_module("(i32.store offset=4 (local.get $res) (i32.const 0)) (i32.const 0)");
    let mut d = deployment("f", "in", "derived");
    d.from = Some(FetchFrom::Latest);
    client.deploy_processor(d.clone(), abi_module(PASSTHROUGH)).await.unwrap();
    client.deploy_processor(d, drop_all).await.unwrap();

    let read = |version: Option<u32>, from: FetchFrom| {
        let client = client.clone();
        async move {
            let config = silt_client::ConsumerConfig {
                from,
                follow: false,
                processor: Some(silt_client::ProcessorRef { name: "f".into(), version, params: None }),
                ..Default::default()
            };
            let mut c = silt_client::Consumer::new(&client, "in", config).await?;
            let mut n = Vec::new();
            while let Some(r) = c.next_record().await {
                n.push(String::from_utf8(r?.value.to_vec()).unwrap());
            }
            Ok::<_, ClientError>(n)
        }
    };
    assert!(read(None, FetchFrom::Earliest).await.unwrap().is_empty(), "active version 2 drops all");
    assert_eq!(read(Some(1), FetchFrom::Earliest).await.unwrap(), values(0..250));
    // Starting inside a batch gives only the records from there on.
    assert_eq!(read(Some(1), FetchFrom::Offset(120)).await.unwrap(), values(120..250));
    let (code, message) = broker_error(read(Some(9), FetchFrom::Earliest).await.unwrap_err());
    assert_eq!(code, ErrorCode::UnknownProcessor);
    assert!(message.contains("no version 9"), "{message}");
    assert_eq!(read_all(&client, "derived", FetchFrom::Earliest).await.len(), 0);
    assert_eq!(client.describe_topic("in").await.unwrap().partitions[0].high_watermark, 250);
}

/// With trusted keys configured, unsigned, tampered and foreign-signed modules are refused
/// with a clear message, and a module signed by a trusted key deploys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_modules_signed_by_trusted_keys_deploy() {
    let secret = [42u8; 32];
    let toml =
        format!("[processors]\ntrusted_keys = [\"{}\"]\n", signature::hex(&signature::public_key(&secret)));
    let broker = BrokerProcess::start_with_config(&toml, &[]).await;
    let client = broker.client().await;
    create_topic(&client, "in", 1).await;
    let module = abi_module(PASSTHROUGH);

    let (code, message) = broker_error(
        client.deploy_processor(deployment("p", "in", "out"), module.clone()).await.unwrap_err(),
    );
    assert_eq!(code, ErrorCode::Untrusted);
    assert!(message.contains("not signed"), "{message}");

    let foreign = signature::sign(&module, &[7u8; 32]).unwrap();
    let (code, message) =
        broker_error(client.deploy_processor(deployment("p", "in", "out"), foreign).await.unwrap_err());
    assert_eq!(code, ErrorCode::Untrusted);
    assert!(message.contains("is not trusted here"), "{message}");

    let signed = signature::sign(&module, &secret).unwrap();
    let mut tampered = signed.clone();
    let at = tampered.len() / 3;
    tampered[at] ^= 0x01;
    let (code, message) =
        broker_error(client.deploy_processor(deployment("p", "in", "out"), tampered).await.unwrap_err());
    assert_eq!(code, ErrorCode::Untrusted, "{message}");

    let info = client.deploy_processor(deployment("p", "in", "out"), signed).await.unwrap();
    assert_eq!(info.state, ProcessorState::Running);
    let v = &client.processor_versions("p").await.unwrap()[0];
    assert_eq!(v.signed_by.as_deref(), Some(signature::hex(&signature::public_key(&secret)).as_str()));
}

/// A broker with small limits, a healthy processor beside the hostile one, and a check that
/// both the broker and the healthy processor keep working after the hostile one stopped.
struct Arena {
    broker: BrokerProcess,
    client: Client,
    sent: u32,
}

impl Arena {
    async fn new() -> Arena {
        let toml =
            "[processors]\ncall_time_ms_max = 300\nmemory_bytes_max = 16777216\noutput_bytes_max = 1048576\n";
        let broker = BrokerProcess::start_with_config(toml, &[]).await;
        let client = broker.client().await;
        create_topic(&client, "in", 1).await;
        client
            .deploy_processor(deployment("healthy", "in", "healthy-out"), abi_module(PASSTHROUGH))
            .await
            .unwrap();
        Arena { broker, client, sent: 0 }
    }

    /// Deploys a module that must be accepted, feeds it input and waits until it failed;
    /// returns the error it reports.
    async fn fails_at_run_time(&mut self, name: &str, module: Vec<u8>) -> String {
        self.client.deploy_processor(deployment(name, "in", &format!("{name}-out")), module).await.unwrap();
        self.feed().await;
        let info = failed(&self.client, name).await;
        self.still_healthy().await;
        info.error.expect("a failed processor says why")
    }

    /// Deploys a module that must be refused; returns the refusal.
    async fn refused(&mut self, name: &str, module: Vec<u8>) -> (ErrorCode, String) {
        let e = self
            .client
            .deploy_processor(deployment(name, "in", &format!("{name}-out")), module)
            .await
            .unwrap_err();
        self.still_healthy().await;
        broker_error(e)
    }

    async fn feed(&mut self) {
        produce(&self.client, "in", 0, &values(self.sent..self.sent + 20), 10).await;
        self.sent += 20;
    }

    /// The broker answers health checks, takes produce requests, and the healthy processor
    /// processes them.
    async fn still_healthy(&mut self) {
        assert!(health(self.broker.admin).await, "broker health check failed");
        self.feed().await;
        let sent = u64::from(self.sent);
        let info = wait_status(&self.client, "healthy", "caught up", |i| i.events_out == sent).await;
        assert_eq!(info.state, ProcessorState::Running);
    }
}

/// An infinite loop is stopped by the time limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_infinite_loop_is_stopped() {
    let mut arena = Arena::new().await;
    let error = arena.fails_at_run_time("spin", abi_module("(loop $l (br $l)) (i32.const 0)")).await;
    assert!(error.contains("time limit"), "{error}");
}

/// A module that grows its memory without end hits the memory limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_memory_bomb_is_stopped() {
    let mut arena = Arena::new().await;
    let bomb = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
    let error = arena.fails_at_run_time("bomb", abi_module(bomb)).await;
    assert!(error.contains("unreachable") || error.contains("memory"), "{error}");
}

/// A trap on the first record stops the processor and commits nothing of that batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_trap_on_first_record_is_stopped() {
    let mut arena = Arena::new().await;
    let error = arena.fails_at_run_time("trap", abi_module("unreachable")).await;
    assert!(error.contains("unreachable"), "{error}");
    let info = arena.client.processor_status("trap").await.unwrap();
    assert_eq!((info.events_in, info.events_out), (0, 0));
    assert_eq!(read_all(&arena.client, "trap-out", FetchFrom::Earliest).await.len(), 0);
}

/// An output larger than the limit is refused before it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_huge_output_is_stopped() {
    let mut arena = Arena::new().await;
    let huge = "(i32.store (local.get $res) (i32.const 0)) (i32.store offset=4 (local.get $res) (i32.const 0x7fffffff)) (i32.const 0)";
    let error = arena.fails_at_run_time("huge", abi_module(huge)).await;
    assert!(error.contains("output"), "{error}");
}

/// A module importing a host function is refused at deploy, naming the import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_unknown_import_is_refused() {
    let mut arena = Arena::new().await;
    let module = abi_module_with(r#"(import "env" "wall_clock" (func $clock (result i64)))"#, PASSTHROUGH);
    let (code, message) = arena.refused("clock", module).await;
    assert_eq!(code, ErrorCode::InvalidModule);
    assert!(message.contains("wall_clock"), "{message}");
}

/// Bytes that are not WebAssembly are refused at deploy with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_not_wasm_is_refused() {
    let mut arena = Arena::new().await;
    let (code, message) = arena.refused("text", b"#!/bin/sh\nrm -rf /\n".to_vec()).await;
    assert_eq!(code, ErrorCode::InvalidModule);
    assert!(message.contains("not WebAssembly"), "{message}");
    let (code, _) = arena.refused("truncated", abi_module(PASSTHROUGH)[..40].to_vec()).await;
    assert_eq!(code, ErrorCode::InvalidModule);
}

/// A failed processor resumes from its last commit once fixed by a new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_processor_recovers_with_a_new_version() {
    let mut arena = Arena::new().await;
    arena.fails_at_run_time("flaky", abi_module("unreachable")).await;
    arena
        .client
        .deploy_processor(deployment("flaky", "in", "flaky-out"), abi_module(PASSTHROUGH))
        .await
        .unwrap();
    let info = caught_up(&arena.client, "flaky").await;
    assert_eq!(info.error, None);
    assert_eq!(info.events_out, u64::from(arena.sent));
}

/// Limits are per processor: a deploy may lower the broker's limits (and the processor is
/// stopped at its own limit), but never raise them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_per_processor_and_capped_by_the_broker() {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "in", 1).await;

    let mut too_much = deployment("greedy", "in", "greedy-out");
    too_much.limits.call_time_ms_max = Some(60_000);
    let (code, message) =
        broker_error(client.deploy_processor(too_much, abi_module(PASSTHROUGH)).await.unwrap_err());
    assert_eq!(code, ErrorCode::InvalidRequest);
    assert!(message.contains("above this broker's limit of 1000"), "{message}");

    let mut quick = deployment("spin", "in", "spin-out");
    quick.limits.call_time_ms_max = Some(50);
    client.deploy_processor(quick, abi_module("(loop $l (br $l)) (i32.const 0)")).await.unwrap();
    let mut small = deployment("bomb", "in", "bomb-out");
    small.limits.memory_bytes_max = Some(1 << 20);
    let bomb = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable";
    client.deploy_processor(small, abi_module(bomb)).await.unwrap();
    client.deploy_processor(deployment("copy", "in", "copy-out"), abi_module(PASSTHROUGH)).await.unwrap();
    produce(&client, "in", 0, &values(0..10), 10).await;

    let spin = failed(&client, "spin").await.error.unwrap();
    assert!(spin.contains("time limit of 50 ms"), "{spin}");
    let bomb = failed(&client, "bomb").await.error.unwrap();
    assert!(bomb.contains("1048576"), "the memory limit of this processor is named: {bomb}");
    assert_eq!(caught_up(&client, "copy").await.events_out, 10);
    let versions = client.processor_versions("bomb").await.unwrap();
    assert_eq!(versions[0].limits.memory_bytes_max, Some(1 << 20));
    assert_eq!(versions[0].limits.call_time_ms_max, Some(1000), "unset limits take the broker's");
}

/// A new module starts on the quick first-tier build and moves to the optimised build while
/// input keeps arriving; the move goes through a commit, so the output is still exactly the
/// input, with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_tier_hands_over_to_the_optimised_build_exactly_once() {
    let broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "in", 1).await;
    client.deploy_processor(deployment("copy", "in", "out"), abi_module(PASSTHROUGH)).await.unwrap();
    let deadline = Instant::now() + CATCH_UP;
    let mut sent = 0;
    loop {
        produce(&client, "in", 0, &values(sent..sent + 50), 10).await;
        sent += 50;
        if broker.log().contains("processor moved to its optimised build") {
            break;
        }
        assert!(Instant::now() < deadline, "no move to the optimised build; log:\n{}", broker.log());
    }
    produce(&client, "in", 0, &values(sent..sent + 50), 10).await;
    sent += 50;
    let info = caught_up(&client, "copy").await;
    assert_eq!(info.events_out, u64::from(sent));
    let out: Vec<String> =
        read_all(&client, "out", FetchFrom::Earliest).await.into_iter().map(|r| r.value).collect();
    assert_eq!(out, values(0..sent));
}

/// The `skipped` counter of each partition, then of the processor.
fn skipped(info: &ProcessorInfo) -> (Vec<Option<u64>>, Option<u64>) {
    let find = |c: &[(String, u64)]| c.iter().find(|(n, _)| n == "skipped").map(|(_, v)| *v);
    (info.partitions.iter().map(|p| find(&p.counters)).collect(), find(&info.counters))
}

/// A stateful module's counters (`silt_counters`) show per partition and summed by name in
/// `status` and the metrics, grow with the records it skips, and carry on across a broker
/// restart from its snapshot instead of starting again at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_counters_show_in_status_and_survive_a_restart() {
    let mut broker = BrokerProcess::start(&[]).await;
    let client = broker.client().await;
    create_topic(&client, "in", 2).await;
    produce(&client, "in", 0, &values(0..30), 10).await;
    produce(&client, "in", 1, &values(30..50), 10).await;
    let module = abi_module_with(COUNTERS, SKIP_ALL);
    client.deploy_processor(deployment("skip", "in", "in.kept"), module).await.unwrap();
    let want = (vec![Some(30), Some(20)], Some(50));
    let info =
        wait_status(&client, "skip", "caught up with 50 skipped", |i| skipped(i) == want && i.lag == 0).await;
    assert_eq!((info.events_in, info.events_out, info.lag), (50, 0, 0));
    // Names in the module's order, summed over partitions; batches as the producer cut them.
    let names: Vec<&str> = info.counters.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["skipped", "batches"]);
    let batches: Vec<u64> = info.partitions.iter().map(|p| p.counters[1].1).collect();
    assert!(batches.iter().all(|b| (1..=30).contains(b)), "{info:?}");
    assert_eq!(info.counters[1].1, batches.iter().sum::<u64>());
    let metrics = support::metrics_text(broker.admin).await;
    let gauge = metrics
        .lines()
        .find(|l| {
            l.starts_with("silt_processor_counts{")
                && l.contains(r#"processor="skip""#)
                && l.contains(r#"counter="skipped""#)
        })
        .unwrap_or_else(|| panic!("no silt_processor_counts of skip/skipped in:\n{metrics}"));
    assert!(gauge.ends_with(" 50"), "{gauge}");

    broker.terminate(Duration::from_secs(10)).await;
    broker.restart().await;
    let client = broker.client().await;
    // Restored from the last commit's snapshot: the same totals before any new input.
    let info =
        wait_status(&client, "skip", "restored with 50 skipped", |i| skipped(i) == want && i.lag == 0).await;
    let batches_before = info.counters[1].1;
    produce(&client, "in", 0, &values(50..60), 10).await;
    let want = (vec![Some(40), Some(20)], Some(60));
    let info =
        wait_status(&client, "skip", "caught up with 60 skipped", |i| skipped(i) == want && i.lag == 0).await;
    assert_eq!(info.events_in, 60);
    assert!(info.counters[1].1 > batches_before, "the new batches counted on top: {info:?}");
}
