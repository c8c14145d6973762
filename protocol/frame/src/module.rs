//! Module delivery (`docs/device-frames.md`, "Module delivery"): the bodies of module chunk
//! and module state frames, and the package a module travels in (a manifest, then the module),
//! written by the bridge and opened, with its SHA-256 checked, by the device.

use serde::{Deserialize, Serialize};

use crate::{exact, FrameError, ReadingKind};

/// Most module bytes one chunk carries: with its header, body fields and tag, a chunk frame
/// stays under [`FRAME_BYTES_MAX`].
pub const MODULE_CHUNK_BYTES_MAX: usize = 400;
/// Largest module package (manifest and module): a 512 KiB module slot and room for the
/// manifest.
pub const MODULE_PACKAGE_BYTES_MAX: u32 = 512 * 1024 + 4096;
/// Longest module error a device reports, in bytes (UTF-8).
pub const MODULE_ERROR_BYTES_MAX: usize = 160;

/// Body of a module chunk frame: bytes `offset..offset + bytes.len()` of version `version`'s
/// package of `total` bytes. The decoder checks that the piece lies inside the package.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleChunk<'a> {
    pub version: u32,
    pub total: u32,
    pub offset: u32,
    #[serde(borrow)]
    pub bytes: &'a [u8],
}

/// Body of a module state frame.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleState<'a> {
    pub device: &'a str,
    /// The version it runs; 0: none.
    pub running: u32,
    /// The version whose package it is receiving; 0: none.
    pub receiving: u32,
    /// Bytes of that package it holds, from its start.
    pub received: u32,
    /// Its last module error (a package that did not verify, a module that did not start or
    /// stopped); empty when there is none. At most [`MODULE_ERROR_BYTES_MAX`] bytes.
    pub error: &'a str,
}

/// Most parameters a package carries: the processor ABI's limit.
pub const MODULE_PARAMS_MAX: usize = 64;

/// What a module package says about its module: the start of every package, after its
/// length. A package is `u32 LE manifest length | manifest (postcard) | module bytes`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ModuleManifest<'a> {
    /// The version `silt device deploy` gave it; never 0.
    pub version: u32,
    /// The kind of reading it runs on.
    pub input: ReadingKind,
    /// SHA-256 of the module bytes, which the device checks before it switches.
    pub module_sha256: [u8; 32],
    /// Parameters for `silt_init`, as deployed.
    #[serde(borrow)]
    pub params: heapless::Vec<(&'a str, &'a str), MODULE_PARAMS_MAX>,
}

/// Why a received package cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageError {
    /// The length or the manifest do not decode, or the module is empty.
    Malformed,
    /// The module's SHA-256 is not the manifest's.
    Hash,
}

/// Writes `manifest` with its length before it into `out`, and returns the bytes written;
/// the module bytes follow it in the package.
pub fn write_manifest(manifest: &ModuleManifest<'_>, out: &mut [u8]) -> Result<usize, FrameError> {
    if out.len() < 4 {
        return Err(FrameError::TooLarge);
    }
    let (len, rest) = out.split_at_mut(4);
    let n = postcard::to_slice(manifest, rest).map_err(|_| FrameError::TooLarge)?.len();
    len.copy_from_slice(&(n as u32).to_le_bytes());
    Ok(4 + n)
}

/// Splits a whole package into its manifest and module, and checks the module's SHA-256.
pub fn open_package(package: &[u8]) -> Result<(ModuleManifest<'_>, &[u8]), PackageError> {
    let (len, rest) = package.split_first_chunk::<4>().ok_or(PackageError::Malformed)?;
    let len = u32::from_le_bytes(*len) as usize;
    let (manifest, module) = rest.split_at_checked(len).ok_or(PackageError::Malformed)?;
    let manifest: ModuleManifest<'_> = exact(manifest).map_err(|_| PackageError::Malformed)?;
    if module.is_empty() || manifest.version == 0 {
        return Err(PackageError::Malformed);
    }
    use sha2::Digest;
    if sha2::Sha256::digest(module)[..] != manifest.module_sha256[..] {
        return Err(PackageError::Hash);
    }
    Ok((manifest, module))
}
