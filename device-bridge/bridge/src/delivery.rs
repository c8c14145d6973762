//! Module delivery, the bridge's side (docs/device-frames.md, "Module delivery"), without I/O:
//! the package of a device's requested module version, and the chunks of it one connection
//! sends, paced by the device's module states.
//!
//! The device keeps only the chunk that starts where its slot ends, so the sender needs no
//! selective repeat: it keeps [`CHUNKS_IN_FLIGHT`] chunks beyond what the device last said it
//! holds and, when that stands still for [`RESEND_AFTER_MS`], sends again from there. Lost and
//! reordered chunks cost a resend; a new connection resumes from the device's first module
//! state.

use std::sync::Arc;

use silt_frame::{
    write_manifest, ModuleChunk, ModuleManifest, ReadingKind, MODULE_CHUNK_BYTES_MAX, MODULE_PARAMS_MAX,
};
use silt_wire::signature::{hex, module_hash};
use silt_wire::DeviceModuleInfo;

/// Chunks sent beyond what the device holds, at most.
pub const CHUNKS_IN_FLIGHT: u32 = 4;
/// How long the device's progress may stand still, with chunks in flight, before the sender
/// goes back to where the device stands.
pub const RESEND_AFTER_MS: i64 = 1_000;
/// Room for a manifest: four bytes of length, the version, kind and hash, and parameters.
const MANIFEST_BYTES_MAX: usize = 4096;

/// A module version as a device receives it: `u32 LE manifest length | manifest | module`.
#[derive(Debug, PartialEq, Eq)]
pub struct Package {
    pub version: u32,
    pub bytes: Arc<[u8]>,
}

impl Package {
    /// The package of `version` among `info`'s versions, whose module is `module`. The module
    /// came over the network: its hash must be the one the broker stored at deploy.
    pub fn build(info: &DeviceModuleInfo, version: u32, module: &[u8]) -> Result<Package, String> {
        let v = info
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| format!("the broker sent no description of version {version}"))?;
        let sha256 = module_hash(module);
        if hex(&sha256) != v.module_sha256 {
            return Err(format!("module of version {version} does not hash to {}", v.module_sha256));
        }
        let input = ReadingKind::from_name(&v.input)
            .ok_or_else(|| format!("version {version} runs on {:?}, not a kind of reading", v.input))?;
        let mut params = heapless::Vec::<(&str, &str), MODULE_PARAMS_MAX>::new();
        for (k, value) in &v.params {
            params
                .push((k, value))
                .map_err(|_| format!("version {version} has more than {MODULE_PARAMS_MAX} parameters"))?;
        }
        let manifest = ModuleManifest { version, input, module_sha256: sha256, params };
        let mut bytes = vec![0u8; MANIFEST_BYTES_MAX + module.len()];
        let n = write_manifest(&manifest, &mut bytes[..MANIFEST_BYTES_MAX])
            .map_err(|_| format!("the parameters of version {version} exceed {MANIFEST_BYTES_MAX} bytes"))?;
        bytes.truncate(n);
        bytes.extend_from_slice(module);
        if bytes.len() > silt_frame::MODULE_PACKAGE_BYTES_MAX as usize {
            return Err(format!(
                "the package of version {version} is {} bytes, above a device's slot",
                bytes.len()
            ));
        }
        Ok(Package { version, bytes: bytes.into() })
    }

    fn total(&self) -> u32 {
        // At most MODULE_PACKAGE_BYTES_MAX, checked in `build`.
        self.bytes.len() as u32
    }
}

/// What a device said in its last module state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceState {
    pub running: u32,
    pub receiving: u32,
    pub received: u32,
    pub error: String,
}

/// How a delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The device runs the version.
    Running,
    /// The device took the whole package and does not run it (it did not verify or start, or
    /// does not fit): its error says why, and the sender stops.
    Refused,
}

/// One connection's delivery of one package.
#[derive(Debug)]
pub struct Sender {
    package: Arc<Package>,
    /// Bytes of the package the device holds, from its last module state.
    held: u32,
    /// Offset of the next chunk to write.
    next: u32,
    /// When `held` last moved, or the sender last went back.
    progress_ms: i64,
    finished: Option<Finish>,
    stats: SenderStats,
}

/// What a sender did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub chunks: u64,
    pub resends: u64,
}

impl Sender {
    /// Starts delivering `package` to a device whose module state is `state`.
    pub fn new(package: Arc<Package>, state: &DeviceState, now_ms: i64) -> Sender {
        let mut sender = Sender {
            package,
            held: 0,
            next: 0,
            progress_ms: now_ms,
            finished: None,
            stats: SenderStats::default(),
        };
        sender.handle_state(state, now_ms);
        sender.next = sender.held;
        sender
    }

    pub fn version(&self) -> u32 {
        self.package.version
    }

    pub fn finished(&self) -> Option<Finish> {
        self.finished
    }

    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// The device's module state.
    pub fn handle_state(&mut self, state: &DeviceState, now_ms: i64) {
        let version = self.package.version;
        if state.running == version {
            self.finished = Some(Finish::Running);
            return;
        }
        // Not receiving this version (yet, or any more): it holds none of it. Chunks in flight
        // may still start it; if not, the resend timer goes back to 0.
        let held = if state.receiving == version { state.received.min(self.package.total()) } else { 0 };
        if state.receiving == version && held == self.package.total() {
            self.finished = Some(Finish::Refused);
            return;
        }
        if held > self.held {
            self.progress_ms = now_ms;
            self.next = self.next.max(held);
        }
        self.held = held;
    }

    /// Goes back to what the device holds when it has not moved for [`RESEND_AFTER_MS`].
    pub fn handle_timeout(&mut self, now_ms: i64) {
        if self.finished.is_none() && self.next > self.held && now_ms >= self.progress_ms + RESEND_AFTER_MS {
            self.next = self.held;
            self.progress_ms = now_ms;
            self.stats.resends += 1;
        }
    }

    /// When [`Sender::handle_timeout`] may have something to do.
    pub fn poll_timeout(&self) -> Option<i64> {
        (self.finished.is_none() && self.next > self.held).then_some(self.progress_ms + RESEND_AFTER_MS)
    }

    /// The next chunk to write, while the window has room; call until `None`.
    pub fn poll_chunk(&mut self, now_ms: i64) -> Option<ModuleChunk<'_>> {
        let total = self.package.total();
        let window = CHUNKS_IN_FLIGHT * MODULE_CHUNK_BYTES_MAX as u32;
        if self.finished.is_some() || self.next >= total || self.next - self.held >= window {
            return None;
        }
        if self.next == self.held {
            // Nothing was in flight: the timer starts now.
            self.progress_ms = now_ms;
        }
        let offset = self.next;
        let end = total.min(offset + MODULE_CHUNK_BYTES_MAX as u32);
        self.next = end;
        self.stats.chunks += 1;
        Some(ModuleChunk {
            version: self.package.version,
            total,
            offset,
            bytes: &self.package.bytes[offset as usize..end as usize],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silt_wire::DeviceModuleVersion;

    pub(crate) fn info(version: u32, module: &[u8]) -> DeviceModuleInfo {
        DeviceModuleInfo {
            device: "d".into(),
            requested_version: Some(version),
            running_version: None,
            last_error: None,
            versions: vec![DeviceModuleVersion {
                version,
                module_sha256: hex(&module_hash(module)),
                module_bytes: module.len() as u64,
                input: "temperature".into(),
                params: vec![("k".into(), "v".into())],
                deployed_ms: 0,
                signed_by: None,
            }],
        }
    }

    #[test]
    fn a_package_opens_on_the_device_and_a_changed_module_is_refused() {
        let module = b"\0asm\x01\0\0\0".repeat(200);
        let p = Package::build(&info(3, &module), 3, &module).unwrap();
        let (manifest, opened) = silt_frame::open_package(&p.bytes).unwrap();
        assert_eq!((manifest.version, manifest.input), (3, ReadingKind::Temperature));
        assert_eq!(&manifest.params[..], &[("k", "v")]);
        assert_eq!(opened, &module[..]);
        let mut changed = module.clone();
        changed[9] ^= 1;
        assert!(Package::build(&info(3, &module), 3, &changed).unwrap_err().contains("does not hash"));
        assert!(Package::build(&info(3, &module), 4, &module).is_err());
    }

    fn state(running: u32, receiving: u32, received: u32) -> DeviceState {
        DeviceState { running, receiving, received, error: String::new() }
    }

    #[test]
    fn the_window_follows_the_device_and_goes_back_when_it_stands_still() {
        let module = vec![7u8; 3000];
        let p = Arc::new(Package::build(&info(1, &module), 1, &module).unwrap());
        let total = p.total();
        let mut s = Sender::new(p, &state(0, 0, 0), 0);
        let offsets: Vec<u32> = std::iter::from_fn(|| s.poll_chunk(0).map(|c| c.offset)).collect();
        assert_eq!(offsets, [0, 400, 800, 1200]);
        s.handle_state(&state(0, 1, 400), 10);
        assert_eq!(s.poll_chunk(10).map(|c| c.offset), Some(1600));
        assert_eq!(s.poll_chunk(10), None);
        s.handle_timeout(1009);
        assert_eq!(s.poll_chunk(1009), None, "not yet a second without progress");
        s.handle_timeout(1010);
        assert_eq!(s.poll_chunk(1010).map(|c| c.offset), Some(400), "back to what the device holds");
        s.handle_state(&state(0, 1, total), 1020);
        assert_eq!(s.finished(), Some(Finish::Refused));
        let mut s = Sender::new(s.package.clone(), &state(0, 1, 800), 0);
        assert_eq!(s.poll_chunk(0).map(|c| c.offset), Some(800), "a new connection resumes");
        s.handle_state(&state(1, 0, 0), 5);
        assert_eq!((s.finished(), s.poll_chunk(5)), (Some(Finish::Running), None));
    }

    /// What travels between the bridge's sender and the device's receiver, as bytes would:
    /// chunks one way, module states the other.
    enum InTransit {
        Chunk { version: u32, total: u32, offset: u32, bytes: Vec<u8> },
        State(DeviceState),
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// The sender and the device's receiver (`silt-link`) over a link that loses,
        /// duplicates and reorders frames both ways and drops the connection now and then:
        /// the whole package arrives, byte for byte, once, and the device is never handed a
        /// package that is not the one sent.
        #[test]
        fn a_package_survives_loss_reordering_and_reconnects(
            seed: u64,
            module_len in 1usize..6000,
            loss_pct in 0u64..40,
            reorder_pct in 0u64..40,
            reconnect_per_mille in 0u64..30,
        ) {
            let mut rng = Rng(seed | 1);
            let module: Vec<u8> = (0..module_len).map(|i| (i * 7 + 3) as u8).collect();
            let package = Arc::new(Package::build(&info(9, &module), 9, &module).unwrap());
            let mut receiver = silt_link::Receiver::new(0);
            let mut slot = vec![0u8; 8192];
            let mut sender: Option<Sender> = None;
            let mut to_device: Vec<InTransit> = Vec::new();
            let mut to_bridge: Vec<InTransit> = Vec::new();
            receiver.handle_hello_acked(0);
            let mut now = 0i64;
            while receiver.pending().is_none() {
                now += 5;
                proptest::prop_assert!(now < 10_000_000, "no progress");
                if rng.below(1000) < reconnect_per_mille {
                    // The connection drops: what is in transit is lost, the bridge forgets
                    // its sender, and after the new hello the device says where it stands.
                    to_device.clear();
                    to_bridge.clear();
                    sender = None;
                    receiver.handle_hello_acked(now as u64);
                }
                receiver.handle_timeout(now as u64);
                if let Some(s) = &mut sender {
                    s.handle_timeout(now);
                    while let Some(c) = s.poll_chunk(now) {
                        let c = InTransit::Chunk { version: c.version, total: c.total, offset: c.offset, bytes: c.bytes.to_vec() };
                        send(&mut rng, &mut to_device, c, loss_pct, reorder_pct);
                    }
                }
                if let Some(InTransit::Chunk { version, total, offset, bytes }) = take(&mut rng, &mut to_device) {
                    let chunk = ModuleChunk { version, total, offset, bytes: &bytes };
                    receiver.handle_chunk(&chunk, &mut slot);
                }
                if receiver.take_state_due() {
                    let s = receiver.state("d");
                    let s = DeviceState { running: s.running, receiving: s.receiving, received: s.received, error: s.error.into() };
                    send(&mut rng, &mut to_bridge, InTransit::State(s), loss_pct, reorder_pct);
                }
                if let Some(InTransit::State(state)) = take(&mut rng, &mut to_bridge) {
                    match &mut sender {
                        Some(s) => s.handle_state(&state, now),
                        None => sender = Some(Sender::new(package.clone(), &state, now)),
                    }
                }
            }
            let (version, len) = receiver.pending().unwrap();
            proptest::prop_assert_eq!(version, 9);
            proptest::prop_assert_eq!(&slot[..len], &package.bytes[..]);
            let (_, opened) = silt_frame::open_package(&slot[..len]).unwrap();
            proptest::prop_assert_eq!(opened, &module[..]);
        }
    }

    /// xorshift64: the faults of a case follow from its seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Puts `item` in transit: lost, or at the back, or (reordered) somewhere before.
    fn send(rng: &mut Rng, queue: &mut Vec<InTransit>, item: InTransit, loss_pct: u64, reorder_pct: u64) {
        if rng.below(100) < loss_pct {
            return;
        }
        let at = if !queue.is_empty() && rng.below(100) < reorder_pct {
            rng.below(queue.len() as u64) as usize
        } else {
            queue.len()
        };
        queue.insert(at, item);
    }

    /// The next item to arrive, some of the time (so that several are in transit).
    fn take(rng: &mut Rng, queue: &mut Vec<InTransit>) -> Option<InTransit> {
        (!queue.is_empty() && rng.below(3) > 0).then(|| queue.remove(0))
    }
}
