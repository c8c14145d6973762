//! Signed processor modules: an Ed25519 signature carried in the module's last section.
//!
//! `docs/processor-abi.md` ("Signed modules") specifies the layout: a custom section named
//! `silt.signature` holding a version byte `1`, the 32-byte public key and the 64-byte
//! signature of every module byte before the section. Custom sections do not change what a
//! module does, so a signed module runs as it is. This module only reads the section layout of
//! a WebAssembly binary; it does not validate the module (the runtime does).

use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::{Signer, Verifier};
use thiserror::Error;

use crate::varint;

/// Name of the custom section that carries the signature.
pub const SECTION_NAME: &str = "silt.signature";
const SIGNATURE_VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 32 + 64;
const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// A module's signature, as found in its last section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleSignature {
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

/// Why a module's signature was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    #[error("not a WebAssembly module (no \\0asm magic)")]
    NotWasm,
    #[error("malformed WebAssembly section layout: {0}")]
    Malformed(&'static str),
    #[error("module is not signed; only modules signed by a trusted key run here (silt processor sign)")]
    Unsigned,
    #[error("module is signed by {0}, which is not trusted here")]
    UntrustedKey(String),
    #[error("module signature does not match its bytes: the module was changed after signing")]
    Tampered,
    #[error("signature section version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
}

/// Splits a module into its unsigned bytes and its signature, if its last section is one.
pub fn split(wasm: &[u8]) -> Result<(&[u8], Option<ModuleSignature>), SignatureError> {
    if wasm.len() < 8 || &wasm[..4] != WASM_MAGIC {
        return Err(SignatureError::NotWasm);
    }
    let mut at = 8;
    let mut last: Option<(usize, usize, usize)> = None; // (section start, content start, end)
    while at < wasm.len() {
        let start = at;
        let id = wasm[at];
        at += 1;
        let (size, used) =
            varint::decode(&wasm[at..]).map_err(|_| SignatureError::Malformed("section size"))?;
        at += used;
        let size = usize::try_from(size).map_err(|_| SignatureError::Malformed("section size"))?;
        let end = at
            .checked_add(size)
            .filter(|&e| e <= wasm.len())
            .ok_or(SignatureError::Malformed("section runs past the end"))?;
        last = (id == 0).then_some((start, at, end));
        at = end;
    }
    let Some((start, content, end)) = last else { return Ok((wasm, None)) };
    let body = &wasm[content..end];
    let (name_len, used) =
        varint::decode(body).map_err(|_| SignatureError::Malformed("custom section name"))?;
    let name_end = usize::try_from(name_len)
        .ok()
        .and_then(|n| used.checked_add(n))
        .filter(|&e| e <= body.len())
        .ok_or(SignatureError::Malformed("custom section name"))?;
    if &body[used..name_end] != SECTION_NAME.as_bytes() {
        return Ok((wasm, None));
    }
    let payload = &body[name_end..];
    if payload.first().is_some_and(|&v| v != SIGNATURE_VERSION) {
        return Err(SignatureError::UnsupportedVersion(payload[0]));
    }
    if payload.len() != PAYLOAD_LEN {
        return Err(SignatureError::Malformed("signature section is not 97 bytes"));
    }
    let signature = ModuleSignature {
        public_key: payload[1..33].try_into().expect("32 bytes"),
        signature: payload[33..97].try_into().expect("64 bytes"),
    };
    Ok((&wasm[..start], Some(signature)))
}

/// Signs a module with a 32-byte Ed25519 secret key, replacing an earlier signature.
pub fn sign(wasm: &[u8], secret_key: &[u8; 32]) -> Result<Vec<u8>, SignatureError> {
    let (unsigned, _) = split(wasm)?;
    let key = ed25519_dalek::SigningKey::from_bytes(secret_key);
    let signature = key.sign(unsigned).to_bytes();
    let mut content = Vec::with_capacity(1 + SECTION_NAME.len() + PAYLOAD_LEN);
    varint::encode(SECTION_NAME.len() as u64, &mut content);
    content.extend_from_slice(SECTION_NAME.as_bytes());
    content.push(SIGNATURE_VERSION);
    content.extend_from_slice(key.verifying_key().as_bytes());
    content.extend_from_slice(&signature);
    let mut out = Vec::with_capacity(unsigned.len() + content.len() + 6);
    out.extend_from_slice(unsigned);
    out.push(0);
    varint::encode(content.len() as u64, &mut out);
    out.extend_from_slice(&content);
    Ok(out)
}

/// The public key for a secret key.
pub fn public_key(secret_key: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(secret_key).verifying_key().to_bytes()
}

/// Checks a module's signature against trusted public keys; returns the key that signed it.
pub fn verify(wasm: &[u8], trusted: &[[u8; 32]]) -> Result<[u8; 32], SignatureError> {
    let (unsigned, signature) = split(wasm)?;
    let signature = signature.ok_or(SignatureError::Unsigned)?;
    if !trusted.contains(&signature.public_key) {
        return Err(SignatureError::UntrustedKey(hex(&signature.public_key)));
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&signature.public_key)
        .map_err(|_| SignatureError::Tampered)?;
    key.verify(unsigned, &ed25519_dalek::Signature::from_bytes(&signature.signature))
        .map_err(|_| SignatureError::Tampered)?;
    Ok(signature.public_key)
}

/// SHA-256 of a module's bytes: the key modules and artefacts are stored under.
pub fn module_hash(wasm: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(wasm).into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| alloc::format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into 32 bytes.
pub fn parse_key_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    // Hex digits only: `from_str_radix` alone would take "+f" for 0x0f.
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The smallest module: magic, version, one custom section.
    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[0, 4, 3, b'a', b'b', b'c']);
        m
    }

    #[test]
    fn a_key_in_hex_is_hex_digits_only() {
        let key = [0xab; 32];
        assert_eq!(parse_key_hex(&hex(&key)), Some(key));
        assert_eq!(parse_key_hex(&format!(" {} ", hex(&key).to_uppercase())), Some(key));
        // `u8::from_str_radix` takes a sign: "+b" would read as 0x0b.
        assert_eq!(parse_key_hex(&format!("+b{}", &hex(&key)[2..])), None);
        assert_eq!(parse_key_hex(&hex(&key)[2..]), None);
    }

    #[test]
    fn sign_then_verify() {
        let secret = [7u8; 32];
        let signed = sign(&module(), &secret).unwrap();
        assert_eq!(verify(&signed, &[public_key(&secret)]).unwrap(), public_key(&secret));
        assert_eq!(split(&signed).unwrap().0, &module()[..]);
        // Signing again replaces the signature rather than stacking a second one.
        assert_eq!(sign(&signed, &secret).unwrap(), signed);
    }

    #[test]
    fn refusals() {
        let secret = [7u8; 32];
        let signed = sign(&module(), &secret).unwrap();
        assert_eq!(verify(&module(), &[public_key(&secret)]), Err(SignatureError::Unsigned));
        assert!(matches!(verify(&signed, &[public_key(&[8u8; 32])]), Err(SignatureError::UntrustedKey(_))));
        let mut tampered = signed.clone();
        tampered[12] ^= 1;
        assert_eq!(verify(&tampered, &[public_key(&secret)]), Err(SignatureError::Tampered));
        assert_eq!(verify(b"not wasm", &[]), Err(SignatureError::NotWasm));
    }

    proptest! {
        /// Arbitrary bytes after the magic never panic the section walker.
        #[test]
        fn split_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut m = b"\0asm\x01\0\0\0".to_vec();
            m.extend_from_slice(&tail);
            let _ = split(&m);
        }
    }
}
