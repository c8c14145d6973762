//! `--broker` lists: a client given several brokers connects to the first one that answers.

use std::time::Duration;

use silt_client::{Client, ClientConfig, ClientError};

/// A loopback UDP port nothing listens on (bound a moment ago, then let go).
fn dead_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Brokers that do not answer are passed over, in order, whatever the spacing of the list; a
/// list none of whose brokers answer fails as unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_brokers_connects_to_the_first_that_answers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let running = silt_broker::start(silt_broker::config::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    })
    .await?;
    let token = running.admin_token.clone().expect("authentication is on by default");
    let config = |list: String| -> anyhow::Result<ClientConfig> {
        let mut c = ClientConfig::new(list, &running.ca_cert)?.with_token(token.clone());
        c.connect_timeout = Duration::from_millis(500);
        Ok(c)
    };
    let list = format!("127.0.0.1:{}, 127.0.0.1:{} ,{},", dead_port(), dead_port(), running.listen);
    let client = Client::connect(config(list)?).await?;
    client.create_topic("listed", 1, None, None).await?;
    assert_eq!(client.list_topics().await?.len(), 1);
    client.close().await;

    let none = format!("127.0.0.1:{},127.0.0.1:{}", dead_port(), dead_port());
    match Client::connect(config(none)?).await {
        Err(e @ ClientError::Unreachable { .. }) => assert!(e.to_string().contains("127.0.0.1"), "{e}"),
        Err(e) => panic!("want unreachable, got {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    running.shutdown().await
}
