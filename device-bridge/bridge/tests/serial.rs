//! Frames over a serial line: the bridge opens the device side of a pseudo-terminal pair
//! (`--serial /dev/pts/N`, as it would /dev/ttyUSB0) and a test device on the other side
//! gets its readings stored and acked.

mod support;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use silt_frame::{Body, Data, Deframer, Frame, Hello, Reading, Time, STUFFED_BYTES_MAX};
use support::*;

/// Opens a pty pair in raw mode; returns the controller side and the device path.
fn open_pty() -> (std::fs::File, String) {
    let (mut controller, mut device) = (0, 0);
    // SAFETY: openpty writes two descriptors into the given ints; the name, termios and window
    // size arguments may be null.
    let rc = unsafe {
        libc::openpty(&mut controller, &mut device, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: `device` is an open descriptor we own; the buffer is large enough for a path.
    let mut name = [0 as libc::c_char; 128];
    assert_eq!(unsafe { libc::ttyname_r(device, name.as_mut_ptr(), name.len()) }, 0);
    // SAFETY: ttyname_r wrote a NUL-terminated string.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
    // Raw mode on the controller side, so frame bytes pass unchanged.
    // SAFETY: a zeroed termios is valid input for cfmakeraw and tcsetattr on our descriptor.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(controller, &mut t);
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(controller, libc::TCSANOW, &t);
    }
    // The bridge opens the device side by path; our descriptor `device` is never closed, so the
    // line does not hang up between the bridge's opens (the test process ends soon anyway).
    // SAFETY: `controller` is an open descriptor we own from here on.
    (unsafe { std::fs::File::from_raw_fd(controller) }, path)
}

/// Writes `frame` every 200 ms until an ack verified with `key` reaches `want`.
fn until_acked(line: &mut std::fs::File, frame: &Frame<'_>, key: &[u8; 32], want: u32) {
    let mut stuffed = [0u8; STUFFED_BYTES_MAX];
    let n = silt_frame::encode_stuffed(frame, key, &mut stuffed).unwrap();
    let mut deframer = Deframer::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no ack {want} over the serial line");
        line.write_all(&stuffed[..n]).unwrap();
        let mut pollfd =
            libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(line), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd on an open descriptor.
        if unsafe { libc::poll(&mut pollfd, 1, 200) } <= 0 {
            continue;
        }
        let got = line.read(&mut buf).unwrap();
        let mut rest = &buf[..got];
        while !rest.is_empty() {
            let (used, out) = deframer.push(rest);
            rest = &rest[used..];
            if let Some(Ok(raw)) = out {
                if let Ok(f) = silt_frame::decode_verified(raw, key) {
                    if f.body == Body::Ack && f.ack >= want {
                        return;
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_a_serial_line_are_stored_and_acked() {
    let broker = Broker::start().await;
    let key = broker.add_device("uart-1").await;
    let (line, path) = open_pty();
    let bridge = BridgeProcess::start(&broker, "", &["--serial", &path]).await;
    // Blocking pty I/O on a thread of its own: hello, then one data frame, each resent until
    // acked (the bridge may open the line after the first write).
    let device = tokio::task::spawn_blocking(move || {
        let mut line = line;
        let hello = Frame {
            seq: 0,
            ack: 0,
            body: Body::Hello(Hello { device: "uart-1", tick_ms: 5, firmware: "pty", module: 0 }),
        };
        until_acked(&mut line, &hello, &key, 0);
        let mut readings = heapless::Vec::new();
        readings.push(Reading::Temperature(18.5)).unwrap();
        let data = Frame {
            seq: 1,
            ack: 0,
            body: Body::Data(Data { device: "uart-1", time: Time::TickMs(10), readings }),
        };
        until_acked(&mut line, &data, &key, 1);
    });
    tokio::time::timeout(WAIT + Duration::from_secs(5), device).await.expect("device finished").unwrap();
    let records = read_records(&broker.client, "sensors.temperature", 1).await;
    assert_eq!(records.len(), 1, "retransmissions are stored once");
    assert_eq!(&records[0].value[..], br#"{"device":"uart-1","seq":1,"value":18.5}"#);
    drop(bridge);
    broker.stop().await;
}
