//! Fuzzes what the broker and its clients read from the network before anything else: a frame
//! (length prefix and body), the rkyv control message inside it (every request and response,
//! the authentication, producer-id and device ones included), and a produce payload's record
//! batch with its records, and a processor module's signature section (what a deploy carries)
//! and a key in hex (what a trust list holds), and the counters block a processor module
//! reports through `silt_counters` (the host reads it out of the module's memory). None may
//! panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use silt_wire::batch::{self, BatchView};
use silt_wire::counters;
use silt_wire::frame::{self, Frame};
use silt_wire::message::{decode_request, decode_response};
use silt_wire::signature;

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    let _ = decode_response(data);
    if let Some(prefix) = data.get(..frame::PREFIX_LEN) {
        let prefix: [u8; frame::PREFIX_LEN] = prefix.try_into().expect("prefix length");
        let _ = frame::body_len(prefix, 1 << 20);
    }
    if let Ok(f) = Frame::decode(data.to_vec()) {
        let _ = decode_request(f.control());
        let _ = decode_response(f.control());
    }
    // A signed module: the split must keep the unsigned bytes a prefix of the module, and a
    // signature from a key nobody trusts must never verify.
    if let Ok((unsigned, _)) = signature::split(data) {
        assert!(data.starts_with(unsigned));
    }
    assert!(signature::verify(data, &[]).is_err());
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(key) = signature::parse_key_hex(text) {
            assert_eq!(signature::hex(&key), text.trim().to_ascii_lowercase());
        }
    }
    if let Ok(decoded) = counters::decode(data) {
        assert!(decoded.len() <= counters::COUNTERS_MAX);
        assert!(decoded.iter().all(|(name, _)| counters::name_is_valid(name.as_bytes())));
    }
    let _ = batch::peek_producer(data);
    if batch::validate(data).is_ok() {
        let _ = batch::peek_header(data);
        if let Ok(plain) = batch::decompress(data) {
            if let Ok(view) = BatchView::new(&plain) {
                for record in view.records() {
                    let _ = record.headers().count();
                }
            }
        }
    }
});
