//! Control-plane records as the store holds them: users, tokens, access-control entries,
//! producer ids, devices ([`devices`]) and processors ([`processors`]).
//!
//! Each value is sealed: a CRC-32C of the rest, then the rkyv encoding of one record. A value
//! longer than its cap ([`VALUE_BYTES_MAX`] unless said otherwise), with a wrong checksum or
//! that does not decode is refused with an error naming it, never trusted. These types are the
//! on-disk format, kept apart from the wire messages they resemble, and their bytes are pinned
//! by tests. The decoders take any bytes without panicking (`server/storage/fuzz`, `records`).

pub mod devices;
pub mod processors;

/// The decoders of the storage's own records of where things are, for fuzzing: a batch's
/// locator in its batches tree, and the copies of the metadata database.
pub use crate::partition::Locator;
pub use crate::store::{decode_metadata_copy, MetadataCopy};

use rkyv::{Archive, Deserialize, Serialize};
use silt_wire::AclEntry;

/// Longest stored value: a user's name and hash, a token's fields, an entry's patterns.
pub const VALUE_BYTES_MAX: usize = 4096;

/// A user. The password is kept only as an Argon2id hash in PHC form (salt and cost inside).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub name: String,
    pub password_hash: String,
    pub created_ms: i64,
}

/// An API token. Only the SHA-256 of its secret part is kept.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: String,
    pub name: String,
    pub user: String,
    pub secret_sha256: [u8; 32],
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// A producer id as the producers tree holds it (under the id's 8 big-endian bytes).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredProducer {
    pub id: u64,
    /// The principal it is bound to, as `user:NAME`.
    pub principal: String,
    pub epoch: u32,
    pub claimed_ms: i64,
}

/// Offset ranges `from..to` of a partition that storage damage destroyed and whose loss an
/// operator accepted (`silt topic repair --accept-loss`): sorted, disjoint and not adjacent.
/// Reads step over them, and appends continue after the last. Kept in the partition's stats
/// tree.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredGaps {
    pub ranges: Vec<(u64, u64)>,
}

/// Most accepted-loss ranges one partition keeps.
pub const GAPS_MAX: usize = 1024;
/// Longest stored [`StoredGaps`]: [`GAPS_MAX`] ranges and the encoding's overhead.
pub const GAPS_BYTES_MAX: usize = 4 + 16 * GAPS_MAX + 64;

impl StoredGaps {
    /// Adds `from..to`, merging it with the ranges it touches.
    pub fn add(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let (mut from, mut to) = (from, to);
        self.ranges.retain(|&(a, b)| {
            let apart = b < from || a > to;
            if !apart {
                from = from.min(a);
                to = to.max(b);
            }
            apart
        });
        let at = self.ranges.partition_point(|&(a, _)| a < from);
        self.ranges.insert(at, (from, to));
    }

    /// Whether offsets `from..to` lie in one range.
    pub fn covers(&self, from: u64, to: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= from && to <= b)
    }

    /// The offset after the range holding `offset`, or `offset` when none does.
    pub fn past(&self, offset: u64) -> u64 {
        self.ranges.iter().fold(offset, |o, &(from, to)| if (from..to).contains(&o) { to } else { o })
    }

    /// The end of the last range, 0 when there is none.
    pub fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |&(_, to)| to)
    }

    /// Whether the ranges are sorted, disjoint, not adjacent and not empty, as `add` keeps
    /// them: stored ranges are checked with this before they are trusted.
    pub fn well_formed(&self) -> bool {
        self.ranges.len() <= GAPS_MAX
            && self.ranges.iter().all(|&(a, b)| a < b)
            && self.ranges.windows(2).all(|w| w[0].1 < w[1].0)
    }
}

/// Encodes one record with its checksum.
pub fn seal<T>(value: &T) -> Vec<u8>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(value).expect("in-memory serialization cannot fail");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks and decodes one record; `what` names it in the error.
pub fn open<T>(what: &str, bytes: &[u8]) -> Result<T, String>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    open_at_most(what, bytes, VALUE_BYTES_MAX)
}

/// [`open`] for records of other kinds, with their own cap of `max` bytes.
pub fn open_at_most<T>(what: &str, bytes: &[u8], max: usize) -> Result<T, String>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    if bytes.len() > max || bytes.len() < 4 {
        return Err(format!("stored {what} is {} bytes (at most {max})", bytes.len()));
    }
    let (sum, body) = bytes.split_at(4);
    if crc32c::crc32c(body).to_le_bytes() != sum {
        return Err(format!("stored {what} fails its checksum"));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned)
        .map_err(|e| format!("stored {what} does not decode: {e}"))
}

/// The key of an entry in the entries tree: its fields, so one entry is stored once.
pub fn acl_key(e: &AclEntry) -> Vec<u8> {
    format!("{}\0{}\0{}\0{}", e.principal, e.operation, e.resource, e.permission()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use silt_wire::Operation;

    #[test]
    fn accepted_losses_merge_into_sorted_disjoint_ranges() {
        let mut gaps = StoredGaps::default();
        for (from, to) in [(10, 20), (40, 50), (5, 5), (20, 25), (0, 3), (45, 60), (2, 4)] {
            gaps.add(from, to);
            assert!(gaps.well_formed(), "{gaps:?}");
        }
        assert_eq!(gaps.ranges, [(0, 4), (10, 25), (40, 60)]);
        let sealed = seal(&gaps);
        assert_eq!(open_at_most::<StoredGaps>("gaps", &sealed, GAPS_BYTES_MAX), Ok(gaps));
        let unordered = StoredGaps { ranges: vec![(5, 9), (1, 2)] };
        assert!(!unordered.well_formed());
    }

    fn token() -> StoredToken {
        StoredToken {
            id: "0a1b2c3d4e5f".into(),
            name: "ci".into(),
            user: "alice".into(),
            secret_sha256: [7; 32],
            created_ms: 1_700_000_000_000,
            expires_ms: Some(1_800_000_000_000),
            revoked_ms: None,
        }
    }

    const PINNED_USER: &str =
        "7d87c102246172676f6e32696424780000000000616c696365ffffff8b000000e8ffffff0500000000000000";

    /// The stored bytes are part of the on-disk format: this pins them, so that a change of
    /// field order or type fails here instead of unreadably on a user's disk.
    #[test]
    fn encoding_is_pinned() {
        let user = StoredUser { name: "alice".into(), password_hash: "$argon2id$x".into(), created_ms: 5 };
        let sealed = seal(&user);
        let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, PINNED_USER, "the stored user's bytes changed");
        assert_eq!(crc32c::crc32c(&sealed[4..]).to_le_bytes(), sealed[..4]);
        assert_eq!(open::<StoredUser>("user", &sealed), Ok(user));
        let t = token();
        assert_eq!(open::<StoredToken>("token", &seal(&t)), Ok(t));
        let e = AclEntry {
            principal: "user:a".into(),
            operation: Operation::Consume,
            resource: "topic:x.*".into(),
            allow: true,
        };
        assert_eq!(open::<AclEntry>("entry", &seal(&e)), Ok(e.clone()));
        assert_eq!(acl_key(&e), b"user:a\0consume\0topic:x.*\0allow");
    }

    /// A flipped bit anywhere, a truncation or an oversized value is refused, never misread.
    #[test]
    fn damage_is_refused() {
        let sealed = seal(&token());
        for i in 0..sealed.len() * 8 {
            let mut b = sealed.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(open::<StoredToken>("token", &b).is_err(), "bit {i}");
        }
        assert!(open::<StoredToken>("token", &sealed[..sealed.len() - 1]).is_err());
        assert!(open::<StoredToken>("token", &[]).is_err());
        assert!(open::<StoredToken>("token", &vec![0; VALUE_BYTES_MAX + 1]).is_err());
    }
}
