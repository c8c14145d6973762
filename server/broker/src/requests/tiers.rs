//! The device registry's and the device and bridge tiers' requests that need more than a
//! store call: a device module or a bridge-tier processor checked and stored, and a device
//! change that made a key answered to whoever may read it.

use bytes::Bytes;
use silt_wire::{ErrorCode, Operation, Response};

use super::{error, host_reply, ready, registry_reply, Broker, PendingReply, Reply};
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::{bridge_processors, device_modules, devices};

impl Broker {
    /// `silt device deploy`: the signature as for processors, then the device tier's checks
    /// and the store, on a blocking thread (instantiating the module runs it).
    pub(super) fn deploy_device_module(
        &self,
        device: String,
        input: String,
        params: Vec<(String, String)>,
        wasm: Bytes,
    ) -> PendingReply {
        let signed_by = match self.processors.check_signature(&wasm) {
            Ok(key) => key,
            Err(e) => return ready(host_reply(Err(e))),
        };
        let store = self.store.clone();
        Box::pin(async move {
            let done = tokio::task::spawn_blocking(move || {
                device_modules::check(&wasm, &input, &params)?;
                device_modules::deploy(&store, &device, input, params, &wasm, signed_by, now_ms())
            })
            .await;
            match done {
                Ok(result) => registry_reply(result.map(Response::DeviceModule)),
                Err(e) => error(ErrorCode::Storage, format!("device deploy task failed: {e}")),
            }
        })
    }

    /// `silt processor deploy --tier bridge`: the module checked as a broker processor's
    /// (`ProcessorHost::check_bridge_module`), then stored as the processor's next version.
    pub(super) fn deploy_bridge_processor(
        &self,
        name: String,
        topic: String,
        params: Vec<(String, String)>,
        wasm: Bytes,
    ) -> PendingReply {
        let (processors, store) = (self.processors.clone(), self.store.clone());
        Box::pin(async move {
            if let Err(e) = crate::processors::check_name(&name) {
                return host_reply(Err(e));
            }
            let (sha256, bytes) = (silt_wire::signature::module_hash(&wasm), wasm.len() as u64);
            let signed_by = match processors.check_bridge_module(wasm, &params).await {
                Ok(key) => key,
                Err(e) => return host_reply(Err(e)),
            };
            let deployed =
                bridge_processors::deploy(&store, &name, &topic, params, sha256, bytes, signed_by, now_ms());
            registry_reply(deployed.map(Response::BridgeProcessor))
        })
    }

    /// The answer to a device change that made a key: the key goes only to a principal that
    /// may read device keys.
    pub(super) fn keyed_device(
        &self,
        principal: &Principal,
        id: &str,
        made: Result<silt_wire::DeviceInfo, devices::RegistryError>,
    ) -> Reply {
        let keys = self.auth.allowed(principal, Operation::DeviceKeys, &format!("device:{id}"));
        registry_reply(made.map(|mut d| {
            if !keys {
                d.key = None;
                d.previous_key = None;
            }
            Response::Device(d)
        }))
    }
}
