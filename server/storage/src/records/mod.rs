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
