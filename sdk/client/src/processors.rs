//! Processor lifecycle calls: deploy, list, status, versions, rollback, pause, resume,
//! undeploy (docs/processor-abi.md for the modules themselves).

use bytes::Bytes;
/// What to deploy: silt-wire's, the fields of the deploy request.
pub use silt_wire::Deployment;
use silt_wire::{BridgeProcessorInfo, ProcessorInfo, ProcessorVersion, Request, Response};

use crate::connection::{unexpected, Client};
use crate::ClientError;

impl Client {
    /// Deploys a module (WebAssembly bytes, signed or not) as a new processor or a new
    /// version of one. Returns once the module compiled, its `silt_init` accepted the
    /// parameters and the pipeline started.
    pub async fn deploy_processor(&self, d: Deployment, wasm: Vec<u8>) -> Result<ProcessorInfo, ClientError> {
        self.processor_call(Request::from(d), Bytes::from(wasm)).await
    }

    pub async fn list_processors(&self) -> Result<Vec<ProcessorInfo>, ClientError> {
        match self.request(&Request::ListProcessors, Bytes::new()).await?.0 {
            Response::Processors(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn processor_status(&self, name: &str) -> Result<ProcessorInfo, ClientError> {
        self.processor_call(Request::ProcessorStatus { name: name.into() }, Bytes::new()).await
    }

    pub async fn processor_versions(&self, name: &str) -> Result<Vec<ProcessorVersion>, ClientError> {
        match self.request(&Request::ProcessorVersions { name: name.into() }, Bytes::new()).await?.0 {
            Response::ProcessorVersions(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes the version before the active one active again.
    pub async fn rollback_processor(&self, name: &str) -> Result<ProcessorInfo, ClientError> {
        self.processor_call(Request::RollbackProcessor { name: name.into() }, Bytes::new()).await
    }

    pub async fn pause_processor(&self, name: &str) -> Result<ProcessorInfo, ClientError> {
        self.processor_call(Request::PauseProcessor { name: name.into() }, Bytes::new()).await
    }

    /// Resumes a paused or failed processor from its last commit.
    pub async fn resume_processor(&self, name: &str) -> Result<ProcessorInfo, ClientError> {
        self.processor_call(Request::ResumeProcessor { name: name.into() }, Bytes::new()).await
    }

    /// Stops a processor and removes it with its checkpoints; its output topic stays.
    pub async fn undeploy_processor(&self, name: &str) -> Result<(), ClientError> {
        match self.request(&Request::UndeployProcessor { name: name.into() }, Bytes::new()).await?.0 {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Deploys a module as a new bridge-tier processor on `topic` (the bridges run it on the
    /// device readings of that topic before they are appended), or a new version of one.
    pub async fn deploy_bridge_processor(
        &self,
        name: &str,
        topic: &str,
        params: Vec<(String, String)>,
        wasm: Vec<u8>,
    ) -> Result<BridgeProcessorInfo, ClientError> {
        let request = Request::DeployBridgeProcessor { name: name.into(), topic: topic.into(), params };
        match self.request(&request, Bytes::from(wasm)).await?.0 {
            Response::BridgeProcessor(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_bridge_processors(&self) -> Result<Vec<BridgeProcessorInfo>, ClientError> {
        match self.request(&Request::ListBridgeProcessors, Bytes::new()).await?.0 {
            Response::BridgeProcessors(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn undeploy_bridge_processor(&self, name: &str) -> Result<(), ClientError> {
        match self.request(&Request::UndeployBridgeProcessor { name: name.into() }, Bytes::new()).await?.0 {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// A bridge-tier processor and the module of its `version`, for a bridge.
    pub async fn fetch_bridge_processor(
        &self,
        name: &str,
        version: u32,
    ) -> Result<(BridgeProcessorInfo, Bytes), ClientError> {
        let request = Request::FetchBridgeProcessor { name: name.into(), version };
        match self.request(&request, Bytes::new()).await? {
            (Response::BridgeProcessor(p), module) => Ok((p, module)),
            (other, _) => Err(unexpected(&other)),
        }
    }

    async fn processor_call(&self, req: Request, payload: Bytes) -> Result<ProcessorInfo, ClientError> {
        match self.request(&req, payload).await?.0 {
            Response::Processor(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }
}
