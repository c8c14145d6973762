//! Device registry calls: add, rotate, list, revoke, and the key lookup bridges use.

use bytes::Bytes;
use silt_wire::{DeviceInfo, DeviceRefusal, Request, Response};

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

    async fn device_call(&self, request: Request) -> Result<DeviceInfo, ClientError> {
        match self.request(&request, Bytes::new()).await?.0 {
            Response::Device(d) => Ok(d),
            other => Err(unexpected(&other)),
        }
    }
}
