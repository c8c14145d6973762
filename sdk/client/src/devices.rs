//! Device registry calls: add, rotate, list, revoke, the key lookup bridges use, and the
//! device tier's module versions.

use bytes::Bytes;
use silt_wire::{DeviceInfo, DeviceModuleInfo, DeviceRefusal, Request, Response};

use crate::connection::{unexpected, Client};
use crate::ClientError;

impl Client {
    /// Registers a device; the answer carries its new 32-byte key.
    pub async fn add_device(&self, id: &str) -> Result<DeviceInfo, ClientError> {
        self.device_call(Request::AddDevice { id: id.into() }).await
    }

    /// Gives a device a new key (in the answer); the old one stays valid for `overlap_ms`.
    pub async fn rotate_device(&self, id: &str, overlap_ms: u64) -> Result<DeviceInfo, ClientError> {
        self.device_call(Request::RotateDevice { id: id.into(), overlap_ms }).await
    }

    /// Every registered device (revoked ones too), without keys.
    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>, ClientError> {
        match self.request(&Request::ListDevices, Bytes::new()).await?.0 {
            Response::Devices(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes a device; bridges refuse its frames once their cached entry expires.
    pub async fn revoke_device(&self, id: &str) -> Result<DeviceInfo, ClientError> {
        self.device_call(Request::RevokeDevice { id: id.into() }).await
    }

    /// One device with its key.
    pub async fn get_device(&self, id: &str) -> Result<DeviceInfo, ClientError> {
        self.device_call(Request::GetDevice { id: id.into() }).await
    }

    /// Writes refusals this bridge made for its devices to the broker's audit (at most
    /// `silt_wire::message::DEVICE_REFUSALS_MAX` at once; needs `device-keys` on each device).
    pub async fn audit_devices(&self, events: Vec<DeviceRefusal>) -> Result<(), ClientError> {
        match self.request(&Request::AuditDevices { events }, Bytes::new()).await?.0 {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Stores `wasm` as the next version of the module device `device` runs on its readings of
    /// kind `input`, and makes it the requested version.
    pub async fn deploy_device_module(
        &self,
        device: &str,
        input: &str,
        params: Vec<(String, String)>,
        wasm: Vec<u8>,
    ) -> Result<DeviceModuleInfo, ClientError> {
        let request = Request::DeployDeviceModule { device: device.into(), input: input.into(), params };
        self.device_module_call(request, Bytes::from(wasm)).await
    }

    /// A device's module versions: requested, running, last error.
    pub async fn device_module(&self, device: &str) -> Result<DeviceModuleInfo, ClientError> {
        self.device_module_call(Request::GetDeviceModule { device: device.into() }, Bytes::new()).await
    }

    /// Makes the version before the requested one requested again.
    pub async fn rollback_device_module(&self, device: &str) -> Result<DeviceModuleInfo, ClientError> {
        self.device_module_call(Request::RollbackDeviceModule { device: device.into() }, Bytes::new()).await
    }

    /// Reports the module version a device says it runs (`None`: none) and, from a module
    /// state, its last module error (`Some("")`: none), for a bridge serving it (needs
    /// `device-keys` on the device).
    pub async fn report_device_module(
        &self,
        device: &str,
        running: Option<u32>,
        error: Option<String>,
    ) -> Result<(), ClientError> {
        match self
            .request(&Request::ReportDeviceModule { device: device.into(), running, error }, Bytes::new())
            .await?
            .0
        {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// A device's module versions and, unless the bridge holds it already (`have`), the module
    /// of the requested version, for the bridge that delivers it (needs `device-keys`).
    pub async fn fetch_device_module(
        &self,
        device: &str,
        have: Option<u32>,
    ) -> Result<(DeviceModuleInfo, Option<Bytes>), ClientError> {
        let request = Request::FetchDeviceModule { device: device.into(), have };
        match self.request(&request, Bytes::new()).await? {
            (Response::DeviceModule(m), module) => Ok((m, (!module.is_empty()).then_some(module))),
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn device_module_call(
        &self,
        request: Request,
        payload: Bytes,
    ) -> Result<DeviceModuleInfo, ClientError> {
        match self.request(&request, payload).await?.0 {
            Response::DeviceModule(m) => Ok(m),
            other => Err(unexpected(&other)),
        }
    }

    async fn device_call(&self, request: Request) -> Result<DeviceInfo, ClientError> {
        match self.request(&request, Bytes::new()).await?.0 {
            Response::Device(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }
}
