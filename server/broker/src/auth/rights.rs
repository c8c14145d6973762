//! The rights each request needs: a pure function of the request (and who asks), so that the
//! authorization matrix test can walk every request type through it.

use silt_wire::{Operation, Request};

use super::audit::AUDIT_TOPIC;

/// What a request needs before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Every one of these `(operation, resource)` rights.
    Rights(Vec<(Operation, String)>),
    /// Nothing beyond being authenticated (who am I, one's own tokens and password); list
    /// requests are answered with what the principal may describe.
    Authenticated,
    /// The right to manage the owner of this token, unless the principal is its owner.
    TokenOwner(String),
    /// Refused to everyone: internal topics are the broker's own.
    Internal(String),
}

/// Internal topics (`silt.*`) belong to the broker.
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with("silt.")
}

pub fn topic(name: &str) -> String {
    format!("topic:{name}")
}

fn one(op: Operation, resource: String) -> Need {
    Need::Rights(vec![(op, resource)])
}

fn internal(name: &str) -> Need {
    Need::Internal(format!("topic {name:?} is internal to the broker"))
}

/// The rights `request` needs when `principal` sends it.
pub fn needs(request: &Request, principal: &str) -> Need {
    use Operation as Op;
    let own = |user: &str| principal == format!("user:{user}");
    match request {
        Request::Authenticate { .. } | Request::WhoAmI | Request::ListTopics | Request::ListProcessors => {
            Need::Authenticated
        }
        // Ownership of the id is checked when it is claimed, and on every batch that uses it.
        Request::InitProducer { .. } => Need::Authenticated,
        Request::CreateTopic { name, .. } if is_internal(name) => internal(name),
        Request::CreateTopic { name, .. } => one(Op::CreateTopic, topic(name)),
        Request::DeleteTopic { name } if is_internal(name) => internal(name),
        Request::DeleteTopic { name } => one(Op::DeleteTopic, topic(name)),
        Request::DescribeTopic { name } => one(Op::Describe, topic(name)),
        Request::ClusterStatus => one(Op::Describe, "cluster:status".into()),
        Request::RepairPartition { topic: t, .. } => one(Op::AlterTopic, topic(t)),
        Request::Produce { topic: t, .. } if is_internal(t) => internal(t),
        Request::Produce { topic: t, .. } => one(Op::Produce, topic(t)),
        Request::Fetch { topic: t, processor, .. } => {
            let mut rights = if t == AUDIT_TOPIC {
                vec![(Op::Audit, topic(t))]
            } else if is_internal(t) {
                return internal(t);
            } else {
                vec![(Op::Consume, topic(t))]
            };
            if let Some(p) = processor {
                rights.push((Op::Describe, format!("processor:{}", p.name)));
            }
            Need::Rights(rights)
        }
        Request::DeployProcessor { name, input, output, .. } => {
            if is_internal(input) {
                return internal(input);
            }
            if is_internal(output) {
                return internal(output);
            }
            // A processor reads and writes with the rights of whoever deploys it.
            Need::Rights(vec![
                (Op::Deploy, format!("processor:{name}")),
                (Op::Consume, topic(input)),
                (Op::Produce, topic(output)),
            ])
        }
        Request::ProcessorStatus { name }
        | Request::ProcessorVersions { name }
        | Request::FetchBridgeProcessor { name, .. } => one(Op::Describe, format!("processor:{name}")),
        Request::ListBridgeProcessors => one(Op::Describe, "processor:*".into()),
        Request::DeployBridgeProcessor { name, topic: t, .. } => {
            if is_internal(t) {
                return internal(t);
            }
            // Its output goes where the readings it takes would have gone.
            Need::Rights(vec![(Op::Deploy, format!("processor:{name}")), (Op::Produce, topic(t))])
        }
        Request::UndeployBridgeProcessor { name } => one(Op::ManageProcessors, format!("processor:{name}")),
        Request::RollbackProcessor { name }
        | Request::PauseProcessor { name }
        | Request::ResumeProcessor { name }
        | Request::UndeployProcessor { name } => one(Op::ManageProcessors, format!("processor:{name}")),
        Request::JoinGroup { group, topics, .. } => {
            let mut rights = vec![(Op::Consume, format!("group:{group}"))];
            rights.extend(topics.iter().map(|t| (Op::Consume, topic(t))));
            Need::Rights(rights)
        }
        Request::Heartbeat { group, .. } | Request::LeaveGroup { group, .. } => {
            one(Op::Consume, format!("group:{group}"))
        }
        Request::CommitOffsets { group, offsets, .. } => {
            let mut rights = vec![(Op::Commit, format!("group:{group}"))];
            for o in offsets {
                let right = (Op::Consume, topic(&o.topic));
                if !rights.contains(&right) {
                    rights.push(right);
                }
            }
            Need::Rights(rights)
        }
        Request::FetchOffsets { group, .. } => one(Op::Describe, format!("group:{group}")),
        Request::AddDevice { id } | Request::RevokeDevice { id } | Request::RotateDevice { id, .. } => {
            one(Op::ManageDevices, format!("device:{id}"))
        }
        Request::ListDevices => one(Op::Describe, "device:*".into()),
        Request::DeployDeviceModule { device, .. } | Request::RollbackDeviceModule { device } => {
            one(Op::ManageDevices, format!("device:{device}"))
        }
        Request::GetDeviceModule { device } => one(Op::Describe, format!("device:{device}")),
        Request::ReportDeviceModule { device, .. } | Request::FetchDeviceModule { device, .. } => {
            one(Op::DeviceKeys, format!("device:{device}"))
        }
        Request::GetDevice { id } => one(Op::DeviceKeys, format!("device:{id}")),
        Request::AuditDevices { events } => {
            let mut rights = Vec::new();
            for e in events {
                let right = (Op::DeviceKeys, format!("device:{}", e.device.as_deref().unwrap_or("*")));
                if !rights.contains(&right) {
                    rights.push(right);
                }
            }
            Need::Rights(rights)
        }
        Request::AddUser { name, .. } | Request::RemoveUser { name } => {
            one(Op::ManageAuth, format!("user:{name}"))
        }
        Request::SetPassword { name, .. } | Request::CreateToken { user: name, .. } => {
            if own(name) {
                Need::Authenticated
            } else {
                one(Op::ManageAuth, format!("user:{name}"))
            }
        }
        Request::ListUsers => one(Op::ManageAuth, "user:*".into()),
        Request::ListTokens { user: Some(name) } if own(name) => Need::Authenticated,
        Request::ListTokens { user } => {
            one(Op::ManageAuth, format!("user:{}", user.as_deref().unwrap_or("*")))
        }
        Request::RevokeToken { id } => Need::TokenOwner(id.clone()),
        Request::GrantAcl { .. } | Request::RevokeAcl { .. } => one(Op::ManageAuth, "*".into()),
        Request::ListAcls { principal: Some(p) } if p == principal => Need::Authenticated,
        Request::ListAcls { .. } => one(Op::ManageAuth, "*".into()),
    }
}

/// The name of a request in the audit.
pub fn name(request: &Request) -> &'static str {
    match request {
        Request::CreateTopic { .. } => "create-topic",
        Request::DeleteTopic { .. } => "delete-topic",
        Request::ListTopics => "list-topics",
        Request::ClusterStatus => "cluster-status",
        Request::DescribeTopic { .. } => "describe-topic",
        Request::Produce { .. } => "produce",
        Request::Fetch { .. } => "fetch",
        Request::DeployProcessor { .. } => "deploy",
        Request::DeployBridgeProcessor { .. } => "deploy-bridge-processor",
        Request::ListBridgeProcessors => "list-bridge-processors",
        Request::UndeployBridgeProcessor { .. } => "undeploy-bridge-processor",
        Request::FetchBridgeProcessor { .. } => "fetch-bridge-processor",
        Request::ListProcessors => "list-processors",
        Request::ProcessorStatus { .. } => "processor-status",
        Request::ProcessorVersions { .. } => "processor-versions",
        Request::RollbackProcessor { .. } => "rollback-processor",
        Request::PauseProcessor { .. } => "pause-processor",
        Request::ResumeProcessor { .. } => "resume-processor",
        Request::UndeployProcessor { .. } => "undeploy-processor",
        Request::JoinGroup { .. } => "join-group",
        Request::Heartbeat { .. } => "heartbeat",
        Request::LeaveGroup { .. } => "leave-group",
        Request::CommitOffsets { .. } => "commit-offsets",
        Request::FetchOffsets { .. } => "fetch-offsets",
        Request::AddDevice { .. } => "add-device",
        Request::ListDevices => "list-devices",
        Request::RevokeDevice { .. } => "revoke-device",
        Request::GetDevice { .. } => "get-device",
        Request::DeployDeviceModule { .. } => "deploy-device-module",
        Request::GetDeviceModule { .. } => "get-device-module",
        Request::RollbackDeviceModule { .. } => "rollback-device-module",
        Request::ReportDeviceModule { .. } => "report-device-module",
        Request::FetchDeviceModule { .. } => "fetch-device-module",
        Request::Authenticate { .. } => "authenticate",
        Request::WhoAmI => "whoami",
        Request::AddUser { .. } => "add-user",
        Request::ListUsers => "list-users",
        Request::RemoveUser { .. } => "remove-user",
        Request::SetPassword { .. } => "set-password",
        Request::CreateToken { .. } => "create-token",
        Request::ListTokens { .. } => "list-tokens",
        Request::RevokeToken { .. } => "revoke-token",
        Request::GrantAcl { .. } => "grant-acl",
        Request::RevokeAcl { .. } => "revoke-acl",
        Request::ListAcls { .. } => "list-acls",
        Request::InitProducer { .. } => "init-producer",
        Request::RotateDevice { .. } => "rotate-device",
        Request::AuditDevices { .. } => "audit-devices",
        Request::RepairPartition { .. } => "repair-partition",
    }
}

/// Whether a request is about principals and rights, answered by `Auth::handle` (or, for
/// `Authenticate`, by `Auth::authenticate`).
pub fn is_auth(request: &Request) -> bool {
    matches!(
        request,
        Request::Authenticate { .. }
            | Request::WhoAmI
            | Request::AddUser { .. }
            | Request::ListUsers
            | Request::RemoveUser { .. }
            | Request::SetPassword { .. }
            | Request::CreateToken { .. }
            | Request::ListTokens { .. }
            | Request::RevokeToken { .. }
            | Request::GrantAcl { .. }
            | Request::RevokeAcl { .. }
            | Request::ListAcls { .. }
    )
}

/// Whether a request changes principals, rights, topics, processors or devices: those are
/// audited whatever their outcome (other requests only when refused).
pub fn is_change(request: &Request) -> bool {
    matches!(
        request,
        Request::CreateTopic { .. }
            | Request::DeleteTopic { .. }
            | Request::DeployProcessor { .. }
            | Request::RollbackProcessor { .. }
            | Request::PauseProcessor { .. }
            | Request::ResumeProcessor { .. }
            | Request::UndeployProcessor { .. }
            | Request::AddDevice { .. }
            | Request::RevokeDevice { .. }
            | Request::RotateDevice { .. }
            | Request::DeployDeviceModule { .. }
            | Request::RollbackDeviceModule { .. }
            | Request::DeployBridgeProcessor { .. }
            | Request::UndeployBridgeProcessor { .. }
            | Request::AddUser { .. }
            | Request::RemoveUser { .. }
            | Request::SetPassword { .. }
            | Request::CreateToken { .. }
            | Request::RevokeToken { .. }
            | Request::GrantAcl { .. }
            | Request::RevokeAcl { .. }
            | Request::RepairPartition { accept_loss: true, .. }
    )
}

/// The main resource a request names, for the audit.
pub fn resource(request: &Request) -> String {
    match request {
        Request::CreateTopic { name, .. }
        | Request::DeleteTopic { name }
        | Request::DescribeTopic { name } => topic(name),
        Request::Produce { topic: t, partition }
        | Request::Fetch { topic: t, partition, .. }
        | Request::RepairPartition { topic: t, partition, .. } => {
            format!("topic:{t}/{partition}")
        }
        Request::DeployProcessor { name, .. }
        | Request::ProcessorStatus { name }
        | Request::ProcessorVersions { name }
        | Request::RollbackProcessor { name }
        | Request::PauseProcessor { name }
        | Request::ResumeProcessor { name }
        | Request::UndeployProcessor { name }
        | Request::DeployBridgeProcessor { name, .. }
        | Request::UndeployBridgeProcessor { name }
        | Request::FetchBridgeProcessor { name, .. } => format!("processor:{name}"),
        Request::JoinGroup { group, .. }
        | Request::Heartbeat { group, .. }
        | Request::LeaveGroup { group, .. }
        | Request::CommitOffsets { group, .. }
        | Request::FetchOffsets { group, .. } => format!("group:{group}"),
        Request::AddDevice { id }
        | Request::RevokeDevice { id }
        | Request::GetDevice { id }
        | Request::RotateDevice { id, .. }
        | Request::DeployDeviceModule { device: id, .. }
        | Request::GetDeviceModule { device: id }
        | Request::RollbackDeviceModule { device: id }
        | Request::ReportDeviceModule { device: id, .. }
        | Request::FetchDeviceModule { device: id, .. } => format!("device:{id}"),
        Request::AddUser { name, .. }
        | Request::RemoveUser { name }
        | Request::SetPassword { name, .. }
        | Request::CreateToken { user: name, .. } => format!("user:{name}"),
        Request::RevokeToken { id } => format!("token:{id}"),
        Request::GrantAcl { entry } | Request::RevokeAcl { entry } => entry.to_string(),
        Request::InitProducer { id: Some(id) } => format!("producer:{id}"),
        Request::AuditDevices { .. } => "device:*".into(),
        Request::ClusterStatus => "cluster:status".into(),
        Request::InitProducer { id: None }
        | Request::Authenticate { .. }
        | Request::WhoAmI
        | Request::ListTopics
        | Request::ListProcessors
        | Request::ListBridgeProcessors
        | Request::ListDevices
        | Request::ListUsers
        | Request::ListTokens { .. }
        | Request::ListAcls { .. } => String::new(),
    }
}
