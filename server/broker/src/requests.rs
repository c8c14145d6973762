//! Request handling: typed requests in, typed responses (plus raw batch payloads) out.
//!
//! Nothing here touches a socket: the QUIC layer (`quic`) decodes frames and hands requests
//! to [`Broker::handle`], then writes what it returns. *Architecture Invariant*: a produce is
//! acknowledged only after its batch is durable under the configured fsync policy, and
//! consumers only see records up to the per-partition visible watermark (with `fsync =
//! always`, only durable ones).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

use bytes::Bytes;
use silt_storage::{Appended, StorageError, Store, TopicMeta};
use silt_wire::batch;
use silt_wire::frame::Frame;
use silt_wire::message;
use silt_wire::{Deployment, ErrorCode, Operation, PartitionOffset, Request, Response, WireError};

mod cluster;
mod fetch;
mod produce;
mod tiers;
mod topics;
mod upkeep;

use crate::auth::audit::Outcome;
use crate::auth::{rights, Auth, Method, Principal, Session};
use crate::clock::now_ms;
use crate::config::{Limits, ProcessorConfig};
use crate::durability::{Durability, Refused};
use crate::metrics::Metrics;
use crate::partitions::{PartitionHandle, Partitions};
use crate::processors::{HostError, ProcessorHost};
use crate::quotas::{QuotaConfig, Quotas, Rate};
use crate::{bridge_processors, device_modules, devices};
use silt_core::groups::{Coordinator, GroupError, Join};

/// A response and the batch bytes that follow it.
pub type Reply = (Response, Bytes);
/// A reply that may still wait (for durability or a long poll).
pub type PendingReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Everything a request handler needs; shared by all connections.
pub struct Broker {
    pub(crate) store: Arc<Store>,
    partitions: Arc<Partitions>,
    durability: Arc<Durability>,
    groups: Arc<Mutex<Coordinator>>,
    limits: Limits,
    processors: Arc<ProcessorHost>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) auth: Arc<Auth>,
    /// Permits, one per byte of `Limits::response_bytes_max`, held by fetch responses from
    /// before they are read until their bytes are dropped.
    responses: Arc<Semaphore>,
    pub(crate) quotas: Arc<Quotas>,
    /// This broker's part in its cluster; unset when it runs alone.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    (Response::Error { code, message: message.into() }, Bytes::new())
}

fn ready(reply: Reply) -> PendingReply {
    Box::pin(std::future::ready(reply))
}

fn storage_error(e: StorageError) -> Reply {
    let code = match &e {
        StorageError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        StorageError::TopicExists(_) => ErrorCode::TopicExists,
        StorageError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
        StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        StorageError::InvalidName { .. } | StorageError::InvalidPartitionCount { .. } => {
            ErrorCode::InvalidRequest
        }
        StorageError::InvalidBatch { .. } => ErrorCode::InvalidBatch,
        StorageError::Corrupt { topic, partition, .. }
        | StorageError::Unopenable { topic, partition, .. } => {
            let hint = format!(
                "; `silt topic repair {topic} --partition {partition}` reports the damage, and with \
                 --accept-loss moves readers past it"
            );
            return error(ErrorCode::DataLoss, e.to_string() + &hint);
        }
        _ => ErrorCode::Storage,
    };
    error(code, e.to_string())
}

/// Maps a bad frame or batch to the error the client sees.
pub fn wire_error(e: &WireError) -> Reply {
    let code = match e {
        WireError::Checksum { .. } => ErrorCode::Checksum,
        WireError::TooLarge { .. } => ErrorCode::TooLarge,
        WireError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        WireError::Control(_) => ErrorCode::InvalidRequest,
        _ => ErrorCode::InvalidBatch,
    };
    error(code, e.to_string())
}

/// The answer to a write the broker does not take.
fn refusal(refused: Refused) -> (Response, Bytes) {
    match refused {
        Refused::DiskFull(message) => error(ErrorCode::DiskFull, message),
        Refused::Failed(e) => error(
            ErrorCode::Storage,
            format!("the broker cannot make writes durable ({e}): it acknowledges no produce until it is restarted"),
        ),
    }
}

impl Broker {
    pub fn new(
        partitions: Arc<Partitions>,
        durability: Arc<Durability>,
        limits: Limits,
        quotas: QuotaConfig,
        processors: ProcessorConfig,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
    ) -> anyhow::Result<Arc<Broker>> {
        let store = partitions.store().clone();
        let groups = Arc::new(Mutex::new(Coordinator::new(limits.group_members_max)));
        // A processor's output topic, created by the host, is a topic consumer groups see.
        let topic_created = {
            let (groups, store) = (groups.clone(), store.clone());
            Box::new(move |name: &str| {
                let partitions_of = |t: &str| store.topic(t).map_or(0, |m| m.partitions);
                groups.lock().expect("group lock").topic_changed(name, partitions_of);
            })
        };
        let processors = Arc::new(ProcessorHost::new(
            processors,
            store.clone(),
            partitions.clone(),
            durability.clone(),
            metrics.clone(),
            topic_created,
            {
                let auth = auth.clone();
                Box::new(move |name, deployer, input, output| auth.may_run(name, deployer, input, output))
            },
        )?);
        auth.audit.start_writer(partitions.clone(), durability.clone());
        let responses =
            Arc::new(Semaphore::new(usize::try_from(limits.response_bytes_max).unwrap_or(usize::MAX >> 4)));
        Ok(Arc::new(Broker {
            store,
            partitions,
            durability,
            groups,
            limits,
            processors,
            metrics,
            auth,
            responses,
            quotas: Quotas::new(quotas),
            cluster: std::sync::OnceLock::new(),
        }))
    }

    /// Makes this broker one of a cluster (before it serves).
    pub fn join_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// A session for a new connection from `remote`.
    pub fn session(&self, remote: Option<std::net::SocketAddr>) -> Arc<Session> {
        Arc::new(self.auth.session(remote))
    }

    /// Starts the pipelines of every stored processor that is neither paused nor failed.
    pub fn start_processors(&self) {
        self.processors.start_all();
    }

    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<PartitionHandle>, StorageError> {
        self.partitions.get(topic, partition)
    }

    fn partitions_of(&self) -> impl Fn(&str) -> u32 + '_ {
        |t| self.store.topic(t).map_or(0, |m| m.partitions)
    }

    /// Handles one decoded frame. Returns once the request is started (a produce is queued
    /// for its partition, in the order of the calls); the returned future resolves to the
    /// response, and the caller writes responses of one stream in request order.
    ///
    /// Every request but `Authenticate` needs an authenticated session whose principal has
    /// the rights the request names (`auth::rights`); a refusal changes nothing and is audited,
    /// as is every change, whatever its outcome.
    pub async fn handle(self: &Arc<Self>, frame: Frame, session: &Arc<Session>) -> PendingReply {
        let request = match message::decode_request(frame.control()) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.request_errors.with_label_values(&["invalid"]).inc();
                return ready(wire_error(&e));
            }
        };
        let kind = match &request {
            Request::Produce { .. } => "produce",
            Request::Fetch { .. } => "fetch",
            Request::DeployProcessor { .. }
            | Request::ListProcessors
            | Request::ProcessorStatus { .. }
            | Request::ProcessorVersions { .. }
            | Request::RollbackProcessor { .. }
            | Request::PauseProcessor { .. }
            | Request::ResumeProcessor { .. }
            | Request::UndeployProcessor { .. }
            | Request::DeployBridgeProcessor { .. }
            | Request::ListBridgeProcessors
            | Request::UndeployBridgeProcessor { .. }
            | Request::FetchBridgeProcessor { .. } => "processor",
            Request::AddDevice { .. }
            | Request::RotateDevice { .. }
            | Request::ListDevices
            | Request::RevokeDevice { .. }
            | Request::GetDevice { .. }
            | Request::AuditDevices { .. }
            | Request::DeployDeviceModule { .. }
            | Request::GetDeviceModule { .. }
            | Request::RollbackDeviceModule { .. }
            | Request::ReportDeviceModule { .. }
            | Request::FetchDeviceModule { .. } => "device",
            r if rights::is_auth(r) => "auth",
            _ => "admin",
        };
        self.metrics.requests.with_label_values(&[kind]).inc();
        let errors = self.metrics.request_errors.with_label_values(&[kind]);
        let now = now_ms();
        if let Request::Authenticate { credential } = request {
            // Password hashes take tens of milliseconds by design: off the async threads.
            let (auth, session) = (self.auth.clone(), session.clone());
            return Box::pin(async move {
                let done =
                    tokio::task::spawn_blocking(move || auth.authenticate(&session, &credential, now)).await;
                match done {
                    Ok(Ok(who)) => (Response::Authenticated(who), Bytes::new()),
                    Ok(Err(r)) => {
                        errors.inc();
                        error(r.code, r.message)
                    }
                    Err(e) => error(ErrorCode::Storage, format!("authentication task failed: {e}")),
                }
            });
        }
        let principal = match self.auth.decided(session, &request, now) {
            Some(p) => p,
            None => {
                let generation = self.auth.generation();
                let principal = match self.auth.current(session, now) {
                    Ok(p) => p,
                    Err(r) => return self.refused(session, &request, kind, r),
                };
                if let Some(r) = self.auth.authorize(&principal, &request) {
                    return self.refused(session, &request, kind, r);
                }
                self.auth.remember(session, &principal, &request, generation);
                principal
            }
        };
        // Over its rates, a principal's request waits here, which holds back the rest of its
        // stream: throttled, not refused.
        let mut wait = self.quotas.delay(&principal.name, Rate::Requests, 1, Instant::now());
        if !wait.is_zero() {
            self.throttled(Rate::Requests);
        }
        if let Request::Produce { .. } = &request {
            let bytes = frame.payload().len() as u64;
            let produced = self.quotas.delay(&principal.name, Rate::ProduceBytes, bytes, Instant::now());
            if !produced.is_zero() {
                self.throttled(Rate::ProduceBytes);
            }
            wait = wait.max(produced);
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Request::Produce { .. } = &request {
            // Checked before anything else of the batch: whose producer id it carries.
            let producer_id = batch::peek_producer(frame.payload());
            if let Err(r) = self.auth.producers.check(session, producer_id) {
                return self.refused(session, &request, kind, r);
            }
        }
        if let (Request::InitProducer { id }, Some(cluster)) = (&request, self.cluster.get()) {
            return self.init_producer_replicated(cluster, session, &principal, *id).await;
        }
        if let Request::InitProducer { id } = request {
            // Durable before the answer (a flush): off the async threads.
            let (this, session) = (self.clone(), session.clone());
            return Box::pin(async move {
                let (auth, held) = (this.auth.clone(), session.clone());
                let done =
                    tokio::task::spawn_blocking(move || auth.producers.claim(&held, &principal, id, now))
                        .await;
                match done {
                    Ok(Ok((id, epoch))) => (Response::Producer { id, epoch }, Bytes::new()),
                    Ok(Err(r)) if r.code == ErrorCode::PermissionDenied => {
                        this.refused(&session, &Request::InitProducer { id }, kind, r).await
                    }
                    Ok(Err(r)) => {
                        errors.inc();
                        error(r.code, r.message)
                    }
                    Err(e) => error(ErrorCode::Storage, format!("producer id task failed: {e}")),
                }
            });
        }
        let audited =
            rights::is_change(&request).then(|| (rights::name(&request), rights::resource(&request)));
        let pending = self.dispatch(request, frame, principal, session.responses.get().cloned()).await;
        let (auth, session) = (self.auth.clone(), session.clone());
        Box::pin(async move {
            let reply = pending.await;
            let failure = match &reply.0 {
                Response::Error { message, .. } => {
                    errors.inc();
                    Some(message.clone())
                }
                _ => None,
            };
            if let Some((operation, resource)) = audited {
                let (outcome, detail) = match failure {
                    Some(m) => (Outcome::Failed, m),
                    None => (Outcome::Ok, String::new()),
                };
                auth.record(&session, operation, resource, outcome, detail);
            }
            reply
        })
    }

    fn throttled(&self, rate: Rate) {
        self.metrics.quota_throttled.with_label_values(&[rate.name()]).inc();
    }

    /// Answers a request refused for want of a credential or a right, and audits it.
    fn refused(
        &self,
        session: &Session,
        request: &Request,
        kind: &str,
        r: crate::auth::Refusal,
    ) -> PendingReply {
        self.metrics.request_errors.with_label_values(&[kind]).inc();
        let code = if r.code == ErrorCode::Unauthenticated { "unauthenticated" } else { "denied" };
        self.metrics.auth_refusals.with_label_values(&[code, rights::name(request)]).inc();
        self.auth.record(
            session,
            rights::name(request),
            rights::resource(request),
            Outcome::Denied,
            r.message.clone(),
        );
        ready(error(r.code, r.message))
    }

    async fn dispatch(
        self: &Arc<Self>,
        request: Request,
        frame: Frame,
        principal: Arc<Principal>,
        responses: Option<Arc<Semaphore>>,
    ) -> PendingReply {
        let request = match Deployment::try_from(request) {
            Ok(deployment) => {
                let wasm = frame.into_payload();
                let deployed_by = (principal.method != Method::Open).then(|| principal.name.clone());
                return self.control(|host| async move {
                    host.deploy(deployment, wasm, deployed_by).await.map(Response::Processor)
                });
            }
            Err(other) => other,
        };
        let request = match request {
            Request::DeployDeviceModule { device, input, params } => {
                return self.deploy_device_module(device, input, params, frame.into_payload());
            }
            Request::DeployBridgeProcessor { name, topic, params } => {
                return self.deploy_bridge_processor(name, topic, params, frame.into_payload());
            }
            other => other,
        };
        match request {
            request if rights::is_auth(&request) => {
                if !frame.payload().is_empty() {
                    return ready(error(ErrorCode::InvalidRequest, "this request takes no payload"));
                }
                if let Some(cluster) = self.cluster.get() {
                    return self.auth_replicated(cluster, &principal, request);
                }
                // Setting a password hashes it: off the async threads.
                let auth = self.auth.clone();
                Box::pin(async move {
                    let done =
                        tokio::task::spawn_blocking(move || auth.handle(&principal, request, now_ms())).await;
                    match done {
                        Ok(Ok(r)) => (r, Bytes::new()),
                        Ok(Err(r)) => error(r.code, r.message),
                        Err(e) => error(ErrorCode::Storage, format!("auth task failed: {e}")),
                    }
                })
            }
            Request::Produce { topic, partition } => match self.cluster.get() {
                Some(cluster) if cluster.replicated(&topic) => {
                    self.produce_replicated(cluster, &topic, partition, frame).await
                }
                _ => self.produce(&topic, partition, frame).await,
            },
            Request::CreateTopic { name, partitions, retention_ms, retention_bytes, replication_factor }
                if self.cluster.get().is_some() =>
            {
                let cluster = self.cluster.get().cloned().expect("checked");
                self.create_topic_replicated(
                    &cluster,
                    name,
                    partitions,
                    retention_ms,
                    retention_bytes,
                    replication_factor,
                )
                .await
            }
            Request::DeleteTopic { name } if self.cluster.get().is_some_and(|c| c.replicated(&name)) => {
                ready(error(ErrorCode::InvalidRequest, "deleting a topic of a cluster is not supported yet"))
            }
            Request::CommitOffsets { group, member_id, offsets } if self.cluster.get().is_some() => {
                let cluster = self.cluster.get().cloned().expect("checked");
                self.commit_offsets_replicated(&cluster, group, member_id, offsets).await
            }
            request @ (Request::AddDevice { .. }
            | Request::RotateDevice { .. }
            | Request::RevokeDevice { .. })
                if self.cluster.get().is_some() =>
            {
                let cluster = self.cluster.get().cloned().expect("checked");
                self.device_replicated(&cluster, principal, request).await
            }
            Request::ClusterStatus => {
                let this = self.clone();
                Box::pin(async move { this.cluster_status().await })
            }
            Request::Fetch { topic, partition, from, max_bytes, max_wait_ms, processor } => {
                let this = self.clone();
                Box::pin(async move {
                    let reply = this
                        .fetch(&topic, partition, from, max_bytes, max_wait_ms, processor, responses)
                        .await;
                    // Fetched bytes count after the read: over the rate, the answer waits.
                    let bytes = reply.1.len() as u64;
                    let wait = this.quotas.delay(&principal.name, Rate::FetchBytes, bytes, Instant::now());
                    if !wait.is_zero() {
                        this.throttled(Rate::FetchBytes);
                        tokio::time::sleep(wait).await;
                    }
                    reply
                })
            }
            Request::RepairPartition { topic, partition, accept_loss } => {
                // Accepting a loss writes: not after a failed flush, nor on a full disk.
                let admitted = if accept_loss { self.durability.admit(0) } else { Ok(()) };
                if let Err(refused) = admitted {
                    return ready(refusal(refused));
                }
                let this = self.clone();
                Box::pin(async move {
                    let who = principal.name.clone();
                    let partitions = this.partitions.clone();
                    let done = tokio::task::spawn_blocking(move || {
                        partitions.repair(&topic, partition, accept_loss, &who)
                    })
                    .await;
                    match done {
                        Ok(Ok(info)) => (Response::Repaired(info), Bytes::new()),
                        Ok(Err(e)) => storage_error(e),
                        Err(e) => error(ErrorCode::Storage, format!("repair task failed: {e}")),
                    }
                })
            }
            Request::RollbackProcessor { name } => {
                self.control(|host| async move { host.rollback(&name).await.map(Response::Processor) })
            }
            Request::PauseProcessor { name } => {
                self.control(|host| async move { host.pause(&name).await.map(Response::Processor) })
            }
            Request::ResumeProcessor { name } => {
                self.control(|host| async move { host.resume(&name).await.map(Response::Processor) })
            }
            Request::UndeployProcessor { name } => {
                self.control(|host| async move { host.undeploy(&name).await.map(|()| Response::Done) })
            }
            other => {
                if !frame.payload().is_empty() {
                    return ready(error(ErrorCode::InvalidRequest, "this request takes no payload"));
                }
                let commit = matches!(other, Request::CommitOffsets { .. });
                let reply = self.admin(other, &principal);
                if commit && matches!(reply.0, Response::Done) {
                    return self.once_durable(reply);
                }
                ready(reply)
            }
        }
    }

    /// `reply` to a write outside the log (a group's offsets), given once that write is
    /// durable as an append would be: after the next flush under `fsync = always`, at once
    /// otherwise; refused after a failed flush.
    fn once_durable(&self, reply: Reply) -> PendingReply {
        if !self.durability.acks_wait_for_flush() {
            return ready(match self.durability.healthy() {
                Ok(()) => reply,
                Err(refused) => refusal(refused),
            });
        }
        let ticket = self.durability.register();
        let durability = self.durability.clone();
        Box::pin(async move {
            match durability.wait(ticket).await {
                Ok(()) => reply,
                Err(e) => refusal(Refused::Failed(e)),
            }
        })
    }

    /// A processor control call, answered once the host has done it.
    fn control<F>(&self, call: impl FnOnce(Arc<ProcessorHost>) -> F) -> PendingReply
    where
        F: Future<Output = Result<Response, HostError>> + Send + 'static,
    {
        let done = call(self.processors.clone());
        Box::pin(async move { host_reply(done.await) })
    }

    fn admin(&self, request: Request, principal: &Principal) -> Reply {
        let may = |op: Operation, resource: String| self.auth.allowed(principal, op, &resource);
        match request {
            Request::CreateTopic { name, partitions, retention_ms, retention_bytes, replication_factor } => {
                if replication_factor.is_some_and(|r| r != 1) {
                    return error(
                        ErrorCode::InvalidRequest,
                        "this broker runs alone: a topic's replication factor can only be 1",
                    );
                }
                // The store checks name and partition count; its refusals map to InvalidRequest.
                let meta = TopicMeta {
                    name: name.clone(),
                    partitions,
                    retention_ms,
                    retention_bytes,
                    created_ms: now_ms(),
                };
                if let Err(e) = self.store.create_topic(meta) {
                    return storage_error(e);
                }
                self.groups.lock().expect("group lock").topic_changed(&name, self.partitions_of());
                match self.describe(&name) {
                    Ok(info) => (Response::Topic(info), Bytes::new()),
                    Err(e) => storage_error(e),
                }
            }
            Request::DeleteTopic { name } => {
                if let Err(e) = self.partitions.forget_in_ledger(&name) {
                    return storage_error(e);
                }
                if let Err(e) = self.store.delete_topic(&name) {
                    return storage_error(e);
                }
                self.partitions.forget_topic(&name);
                self.groups.lock().expect("group lock").topic_changed(&name, self.partitions_of());
                (Response::Done, Bytes::new())
            }
            Request::ListTopics => {
                let mut out = Vec::new();
                for meta in self.store.topics() {
                    if rights::is_internal(&meta.name) || !may(Operation::Describe, rights::topic(&meta.name))
                    {
                        continue;
                    }
                    match self.describe(&meta.name) {
                        Ok(info) => out.push(info),
                        Err(StorageError::UnknownTopic(_)) => {} // deleted meanwhile
                        Err(e) => return storage_error(e),
                    }
                }
                (Response::Topics(out), Bytes::new())
            }
            Request::DescribeTopic { name } => match self.describe(&name) {
                Ok(info) => (Response::Topic(info), Bytes::new()),
                Err(e) => storage_error(e),
            },
            Request::JoinGroup { group, member_id, topics, session_timeout_ms } => {
                for t in &topics {
                    if self.store.topic(t).is_none() {
                        return storage_error(StorageError::UnknownTopic(t.clone()));
                    }
                }
                let now = now_ms() as u64;
                let mut groups = self.groups.lock().expect("group lock");
                let joined = groups.join(
                    now,
                    &group,
                    Join { member_id, topics, session_timeout_ms },
                    self.partitions_of(),
                );
                match joined {
                    Ok(s) => (
                        Response::Joined {
                            member_id: s.member_id,
                            generation: s.generation,
                            assignment: s.assignment,
                        },
                        Bytes::new(),
                    ),
                    Err(e) => group_error(e, &group),
                }
            }
            Request::Heartbeat { group, member_id } => {
                match self.groups.lock().expect("group lock").heartbeat(now_ms() as u64, &group, &member_id) {
                    Ok(s) => (
                        Response::Heartbeat { generation: s.generation, assignment: s.assignment },
                        Bytes::new(),
                    ),
                    Err(e) => group_error(e, &group),
                }
            }
            Request::LeaveGroup { group, member_id } => {
                match self.groups.lock().expect("group lock").leave(&group, &member_id, self.partitions_of())
                {
                    Ok(()) => (Response::Done, Bytes::new()),
                    Err(e) => group_error(e, &group),
                }
            }
            Request::CommitOffsets { group, member_id, offsets } => {
                if let Some(m) = &member_id {
                    if !self.groups.lock().expect("group lock").is_member(&group, m) {
                        return group_error(GroupError::UnknownMember, &group);
                    }
                }
                for o in offsets {
                    let checked = self.store.partition(&o.topic, o.partition).map(|_| ());
                    if let Err(e) = checked
                        .and_then(|()| self.store.commit_offset(&group, &o.topic, o.partition, o.offset))
                    {
                        return storage_error(e);
                    }
                }
                (Response::Done, Bytes::new())
            }
            Request::FetchOffsets { group, topic } => match self.store.committed_offsets(&group, &topic) {
                Ok(list) => (
                    Response::Offsets(
                        list.into_iter()
                            .map(|(partition, offset)| PartitionOffset {
                                topic: topic.clone(),
                                partition,
                                offset,
                            })
                            .collect(),
                    ),
                    Bytes::new(),
                ),
                Err(e) => storage_error(e),
            },
            Request::ListProcessors => host_reply(self.processors.list().map(|mut list| {
                list.retain(|p| may(Operation::Describe, format!("processor:{}", p.name)));
                Response::Processors(list)
            })),
            Request::AddDevice { id } => {
                self.keyed_device(principal, &id, devices::add(&self.store, &id, now_ms()))
            }
            Request::RotateDevice { id, overlap_ms } => {
                self.keyed_device(principal, &id, devices::rotate(&self.store, &id, overlap_ms, now_ms()))
            }
            Request::ListDevices => registry_reply(devices::list(&self.store).map(Response::Devices)),
            Request::RevokeDevice { id } => {
                registry_reply(devices::revoke(&self.store, &id, now_ms()).map(Response::Device))
            }
            Request::GetDevice { id } => registry_reply(devices::get(&self.store, &id).map(|mut d| {
                d.rights = self.auth.device_rights(&id);
                Response::Device(d)
            })),
            Request::GetDeviceModule { device } => {
                registry_reply(device_modules::get(&self.store, &device).map(Response::DeviceModule))
            }
            Request::ReportDeviceModule { device, running, error } => registry_reply(
                device_modules::report(&self.store, &device, running, error).map(|()| Response::Done),
            ),
            Request::ListBridgeProcessors => {
                registry_reply(bridge_processors::list(&self.store).map(Response::BridgeProcessors))
            }
            Request::UndeployBridgeProcessor { name } => {
                registry_reply(bridge_processors::undeploy(&self.store, &name).map(|()| Response::Done))
            }
            Request::FetchBridgeProcessor { name, version } => {
                match bridge_processors::fetch(&self.store, &name, version) {
                    Ok((info, module)) => (Response::BridgeProcessor(info), Bytes::from(module)),
                    Err(e) => error(e.code, e.message),
                }
            }
            Request::FetchDeviceModule { device, have } => {
                match device_modules::fetch(&self.store, &device, have) {
                    Ok((info, module)) => {
                        (Response::DeviceModule(info), module.map_or_else(Bytes::new, Bytes::from))
                    }
                    Err(e) => error(e.code, e.message),
                }
            }
            Request::RollbackDeviceModule { device } => {
                registry_reply(device_modules::rollback(&self.store, &device).map(Response::DeviceModule))
            }
            Request::AuditDevices { events } => match self.auth.device_refusals(principal, events) {
                Ok(()) => (Response::Done, Bytes::new()),
                Err(r) => error(r.code, r.message),
            },
            Request::ProcessorStatus { name } => {
                host_reply(self.processors.status(&name).map(Response::Processor))
            }
            Request::ProcessorVersions { name } => {
                host_reply(self.processors.versions(&name).map(Response::ProcessorVersions))
            }
            other => {
                unreachable!("{} is handled before", rights::name(&other))
            }
        }
    }
}

fn registry_reply(result: Result<Response, devices::RegistryError>) -> Reply {
    match result {
        Ok(r) => (r, Bytes::new()),
        Err(e) => error(e.code, e.message),
    }
}

fn host_reply(result: Result<Response, HostError>) -> Reply {
    match result {
        Ok(r) => (r, Bytes::new()),
        Err(e) => error(e.code, e.message),
    }
}

fn group_error(e: GroupError, group: &str) -> Reply {
    match e {
        GroupError::UnknownMember => error(
            ErrorCode::UnknownMember,
            format!("not a member of group {group:?} (expired or left); join again"),
        ),
        GroupError::TooManyMembers => error(ErrorCode::InvalidRequest, format!("group {group:?} is full")),
    }
}
