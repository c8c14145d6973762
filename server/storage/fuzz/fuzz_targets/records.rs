//! Fuzzes the decoders of the control-plane records the store holds (`silt_storage::records`):
//! users, tokens, access-control entries, producer ids, devices (both formats), processor
//! definitions (both formats) and checkpoints, a partition's accepted losses, the
//! acknowledgement ledger's file, batch locators and the copies of the metadata database.
//! Bytes on
//! disk are not trusted: none may panic, whatever the bytes, and a record one accepts encodes
//! back to bytes it reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use silt_storage::ledger;
use silt_storage::records::devices::StoredDevice;
use silt_storage::records::processors::{Checkpoint, StoredBridgeProcessor, StoredDefinition};
use silt_storage::records::{
    decode_metadata_copy, open, open_at_most, seal, Locator, StoredGaps, StoredProducer, StoredToken,
    StoredUser, GAPS_BYTES_MAX,
};
use silt_wire::AclEntry;

/// Opens `data` as a `T`; what opens must seal and open again unchanged.
macro_rules! round_trip {
    ($t:ty, $data:expr) => {
        if let Ok(v) = open::<$t>(stringify!($t), $data) {
            assert_eq!(open::<$t>(stringify!($t), &seal(&v)), Ok(v));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    // The bytes as a whole value, and as the body of one whose checksum matches (so the
    // fuzzer reaches the decoding behind the checksum too).
    let sealed = [&crc32c::crc32c(data).to_le_bytes()[..], data].concat();
    for bytes in [data, &sealed[..]] {
        round_trip!(StoredUser, bytes);
        round_trip!(StoredToken, bytes);
        round_trip!(StoredProducer, bytes);
        round_trip!(AclEntry, bytes);
        if let Ok(gaps) = open_at_most::<StoredGaps>("gaps", bytes, GAPS_BYTES_MAX) {
            let _ = gaps.well_formed();
            assert_eq!(open_at_most::<StoredGaps>("gaps", &seal(&gaps), GAPS_BYTES_MAX), Ok(gaps));
        }
        if let Ok(def) = StoredDefinition::decode(bytes) {
            assert_eq!(StoredDefinition::decode(&def.encode()), Ok(def));
        }
        if let Ok(p) = StoredBridgeProcessor::decode("fuzz", bytes) {
            assert_eq!(StoredBridgeProcessor::decode("fuzz", &seal(&p)), Ok(p));
        }
    }
    if let Ok(d) = StoredDevice::decode("fuzz", data) {
        assert_eq!(StoredDevice::decode("fuzz", &seal(&d)), Ok(d));
    }
    if let Ok(cp) = Checkpoint::decode(data) {
        assert_eq!(Checkpoint::decode(&cp.encode()), Ok(cp));
    }
    if let Some(Ok(locator)) = Locator::decode(data) {
        assert_eq!(Locator::decode(&locator.encode()), Some(Ok(locator)));
    }
    // A metadata copy, also under a matching checksum (it comes last there).
    let _ = decode_metadata_copy(data);
    let checked = [data, &crc32c::crc32c(data).to_le_bytes()[..]].concat();
    if let Ok(copy) = decode_metadata_copy(&checked) {
        assert!(copy.entries.len() <= data.len());
    }
    let reading = ledger::decode(data);
    let again: Vec<u8> = reading.entries.iter().flat_map(ledger::encode).collect();
    assert_eq!(ledger::decode(&again).entries, reading.entries);
    assert!(reading.torn_tail as usize <= data.len());
});
