//! A failed flush stops acknowledgements under every fsync policy that flushes (issue 14,
//! point 4): with an `EIO` injected into the store's flush (`SILT_FAILPOINTS`, debug builds),
//! the produce waiting for that flush and every later one are refused with a `Storage` error
//! that says why, reads go on, and SIGTERM still stops the broker. Under `never` the broker
//! does not flush; sled's own write errors refuse the produce that meets them.
//!
//! One test in this binary: it sets the variable for the whole process.

mod support;

use std::time::Duration;

use silt_client::{ClientError, ErrorCode, FetchFrom};
use silt_wire::{Request, Response};
use support::{batch_of, create_topic, read_all, BrokerProcess};

/// The flush that fails first (and every one after it): late enough that the broker has
/// started and acknowledged produces.
const FAILING_FLUSH: u32 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_stops_acknowledgements_under_always_and_every() {
    // The only test of this binary: no other test's broker inherits the variable.
    std::env::set_var("SILT_FAILPOINTS", format!("flush@{FAILING_FLUSH}"));
    for policy in ["always", "every:20"] {
        let mut broker = BrokerProcess::start(&["--fsync", policy]).await;
        let client = broker.client().await;
        create_topic(&client, "eio", 1).await;
        let request = Request::Produce { topic: "eio".into(), partition: 0 };
        let mut acked = Vec::new();
        let mut refused = None;
        for n in 0..2000 {
            let value = format!("{n:06}");
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                client.request(&request, batch_of(&[&value], 1).into()),
            )
            .await
            .unwrap_or_else(|_| panic!("{policy}: produce {n} hung"));
            match r {
                Ok((Response::Produced { .. }, _)) => acked.push(value),
                Err(ClientError::Broker { code: ErrorCode::Storage, message }) => {
                    refused = Some(message);
                    break;
                }
                other => panic!("{policy}: produce {n}: {other:?}"),
            }
            // Under `every`, give the timer a flush to fail.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let message = refused.unwrap_or_else(|| panic!("{policy}: the failed flush stopped nothing"));
        assert!(message.contains("cannot make writes durable"), "{policy}: {message}");
        // Every later produce is refused too.
        for _ in 0..3 {
            let r = client.request(&request, batch_of(&["late"], 1).into()).await;
            assert!(
                matches!(&r, Err(ClientError::Broker { code: ErrorCode::Storage, .. })),
                "{policy}: a produce after the failed flush: {r:?}"
            );
        }
        // Reads go on: the acknowledged records, then at most the one refused.
        let held: Vec<String> =
            read_all(&client, "eio", FetchFrom::Earliest).await.into_iter().map(|r| r.value).collect();
        assert!(held.len() >= acked.len() && held[..acked.len()] == acked[..], "{policy}: reads");
        let metrics = support::metrics_text(broker.admin).await;
        assert!(!metrics.contains("silt_flush_failures_total 0"), "{policy}: {metrics}");
        drop(client);
        let status = broker.terminate(Duration::from_secs(10)).await;
        assert!(!status.success(), "{policy}: a broker whose flushes fail exited 0");
    }
}
