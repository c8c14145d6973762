//! The Cortex-M firmware (device-bridge/firmware/qemu-mps2) booted in qemu-system-arm sends
//! its readings over an emulated UART to the real bridge, which connects out to QEMU's serial
//! socket: every reading lands in the log exactly once, also when the bridge is killed and
//! restarted mid-run.
//!
//! Needs `qemu-system-arm` and the firmware ELF, which `scripts/firmware-qemu.sh` builds (and
//! `scripts/test-all.sh` runs first). Found through `SILT_FW_QEMU_ELF`, else in this target dir.
//! Without them the test says so and passes outside CI; under `CI=true` it fails.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

const SAMPLES: u32 = 300;
/// Upper bound for the whole run: QEMU's UART moves a few hundred frames a second.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_readings_land_exactly_once_across_a_bridge_restart() {
    let Some(elf) = qemu_firmware() else { return };
    let broker = Broker::start().await;
    let key = broker.add_device("qemu-1").await;
    let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let serial = free_tcp_port();
    let qemu_dir = tempfile::tempdir().expect("temp dir");
    let qemu_log_path = qemu_dir.path().join("qemu.log");
    let qemu_log_file = std::fs::File::create(&qemu_log_path).unwrap();
    let qemu_log = || std::fs::read_to_string(&qemu_log_path).unwrap_or_default();
    let mut qemu = tokio::process::Command::new("qemu-system-arm")
        .args(["-machine", "mps2-an386", "-nographic", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-serial", &format!("tcp:127.0.0.1:{serial},server=on,wait=on")])
        .arg("-kernel")
        .arg(&elf)
        .args(["-append", &format!("qemu-1 {key_hex} {SAMPLES}")])
        .stdin(Stdio::null())
        .stdout(qemu_log_file.try_clone().unwrap())
        .stderr(qemu_log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("starting qemu-system-arm");
    // QEMU starts the guest once its serial port has a client, and the bridge, which connects
    // out and retries until QEMU listens, must be that first client: with a probe connection
    // closed before QEMU noticed, the guest's first UART writes went to the dead socket and
    // QEMU's UART model stayed busy for good (the guest printed its banner and then hung).
    let connect = format!("127.0.0.1:{serial}");
    let mut bridge = BridgeProcess::start(&broker, "", &["--connect-tcp", &connect]).await;

    // Kill the bridge once part of the readings is durable.
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let stored = match broker.client.describe_topic("sensors.temperature").await {
            Ok(t) => t.partitions.iter().map(|p| p.high_watermark).sum::<u64>(),
            Err(_) => 0,
        };
        if stored >= u64::from(SAMPLES) / 3 {
            break;
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            panic!(
                "QEMU exited with {status} after {stored} readings:\n{}\n--- bridge ---\n{}",
                qemu_log(),
                bridge.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "only {stored} readings after {RUN_TIMEOUT:?}:\n{}\n--- qemu ---\n{}",
            bridge.log(),
            qemu_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bridge.restart().await;

    let status =
        tokio::time::timeout(RUN_TIMEOUT, qemu.wait()).await.expect("the firmware finished in time").unwrap();
    let out = qemu_log();
    assert!(status.success(), "firmware exited with {status}; its output:\n{out}");
    assert!(out.contains(&format!("done {SAMPLES} frames")), "{out}");
    for topic in ["sensors.temperature", "sensors.humidity", "sensors.numeric"] {
        let records = read_records(&broker.client, topic, SAMPLES as usize).await;
        let seqs: Vec<u32> = records.iter().map(seq_of).collect();
        let unique: BTreeSet<u32> = seqs.iter().copied().collect();
        assert_eq!(seqs.len(), unique.len(), "{topic}: duplicates");
        assert_eq!(unique, (1..=SAMPLES).collect(), "{topic}: missing readings");
    }
    drop(bridge);
    broker.stop().await;
}
