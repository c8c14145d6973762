//! Fuzzes everything that reads untrusted device bytes: the deframer over the input split at
//! a fuzzer-chosen point (so frames straddle reads), then the decoder and the tag check on
//! every frame found, the decoder on the raw input as a whole, and the input as a module
//! package (what a device opens after module delivery).
#![no_main]

use libfuzzer_sys::fuzz_target;
use silt_frame::{decode, open_package, Deframer, FRAME_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data).map(|u| u.verify(&[0; 32]));
    let _ = open_package(data);
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut deframer = Deframer::new();
    for mut chunk in [&data[..split], &data[split..]] {
        while !chunk.is_empty() {
            let (used, frame) = deframer.push(chunk);
            assert!(used > 0 && used <= chunk.len());
            chunk = &chunk[used..];
            if let Some(Ok(raw)) = frame {
                assert!(raw.len() <= FRAME_BYTES_MAX);
                let _ = decode(raw).map(|u| u.verify(&[0; 32]));
            }
        }
    }
});
