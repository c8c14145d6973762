//! Producer behaviour against a real broker started in this process on a loopback port.

use std::time::Duration;

use silt_client::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

async fn broker(dir: &std::path::Path) -> anyhow::Result<(silt_broker::Running, Client)> {
    let running = silt_broker::start(silt_broker::config::Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    })
    .await?;
    let client = Client::connect(ClientConfig::new(running.listen.to_string(), &running.ca_cert)?).await?;
    Ok((running, client))
}

/// A lone record is sent when its linger expires, without a flush or a full batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_sends_a_partial_batch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (running, client) = broker(dir.path()).await?;
    client.create_topic("slow", 1, None, None).await?;
    let config = ProducerConfig { linger: Duration::from_millis(20), ..Default::default() };
    let producer = Producer::new(&client, "slow", config).await?;
    producer.send(ProducerRecord { value: b"only one", ..Default::default() }).await?;
    let mut consumer = Consumer::new(&client, "slow", ConsumerConfig::default()).await?;
    let record = tokio::time::timeout(Duration::from_secs(10), consumer.next_record())
        .await
        .expect("the record arrives without a flush")
        .expect("stream open")?;
    assert_eq!(&record.value[..], b"only one");
    producer.close().await?;
    consumer.close().await;
    client.close().await;
    running.shutdown().await
}

/// Records keep their order within a partition across many batches, with compression on and
/// off, and `close` returns only after every record is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_with_and_without_compression() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (running, client) = broker(dir.path()).await?;
    for (topic, compression) in
        [("lz4", silt_client::Compression::Lz4), ("plain", silt_client::Compression::None)]
    {
        client.create_topic(topic, 1, None, None).await?;
        let config = ProducerConfig { batch_records_max: 100, window: 4, compression, ..Default::default() };
        let producer = Producer::new(&client, topic, config).await?;
        for i in 0..5_000u32 {
            let v = format!("{{\"reading\":{i},\"unit\":\"celsius\"}}");
            producer.send(ProducerRecord { value: v.as_bytes(), ..Default::default() }).await?;
        }
        producer.close().await?;
        let config = ConsumerConfig { follow: false, ..Default::default() };
        let mut consumer = Consumer::new(&client, topic, config).await?;
        let mut n = 0u32;
        while let Some(r) = consumer.next_record().await {
            let r = r?;
            assert_eq!(r.offset, u64::from(n));
            assert_eq!(r.value, format!("{{\"reading\":{n},\"unit\":\"celsius\"}}").as_bytes());
            n += 1;
        }
        assert_eq!(n, 5_000, "{topic}");
    }
    let info = client.describe_topic("lz4").await?;
    let plain = client.describe_topic("plain").await?;
    assert!(
        info.partitions[0].size_bytes * 2 < plain.partitions[0].size_bytes,
        "LZ4 batches are stored compressed"
    );
    client.close().await;
    running.shutdown().await
}
