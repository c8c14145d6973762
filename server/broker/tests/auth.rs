//! Authentication, authorization and audit through the real broker (issue 13): the
//! authorization matrix over every request type, tokens that expire or are revoked, the
//! lock-out after wrong passwords, internal topics, and the audit topic's records.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use silt_client::{AclEntry, Client, ClientError, Credential, ErrorCode, FetchFrom, Operation};
use silt_wire::{Deployment, DeviceRefusal, PartitionOffset, Request, Response};
use support::{
    abi_module, audit_events, await_audit, batch_of, create_topic, read_all, BrokerProcess, AUDIT_WAIT,
    PASSTHROUGH,
};

fn entry(principal: &str, op: Operation, resource: &str) -> AclEntry {
    AclEntry { principal: principal.into(), operation: op, resource: resource.into(), allow: true }
}

/// Makes user `name` with a token and exactly `rights`; returns a client authenticated as it.
async fn user_with(
    broker: &BrokerProcess,
    admin: &Client,
    name: &str,
    rights: &[(Operation, &str)],
) -> Client {
    admin.add_user(name, "correct-horse-battery").await.unwrap();
    for (op, resource) in rights {
        admin.grant_acl(entry(&format!("user:{name}"), *op, resource)).await.unwrap();
    }
    let (_, token) = admin.create_token(name, "test", None).await.unwrap();
    broker.client_with(Some(Credential::Token(token))).await
}

/// Everything a request could change, as the admin sees it.
async fn snapshot(admin: &Client) -> String {
    let topics: Vec<_> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.partitions.iter().map(|p| p.high_watermark).collect::<Vec<_>>()))
        .collect();
    let processors: Vec<_> =
        admin.list_processors().await.unwrap().into_iter().map(|p| (p.name, p.version, p.state)).collect();
    let devices: Vec<_> =
        admin.list_devices().await.unwrap().into_iter().map(|d| (d.id, d.revoked_ms)).collect();
    let users: Vec<_> = admin.list_users().await.unwrap().into_iter().map(|u| u.name).collect();
    let tokens: Vec<_> =
        admin.list_tokens(None).await.unwrap().into_iter().map(|t| (t.id, t.revoked_ms)).collect();
    let acls = admin.list_acls(None).await.unwrap();
    let offsets = match admin
        .request(&Request::FetchOffsets { group: "g1".into(), topic: "mx.t".into() }, Bytes::new())
        .await
    {
        Ok((r, _)) => format!("{r:?}"),
        Err(e) => e.to_string(),
    };
    format!("{topics:?}\n{processors:?}\n{devices:?}\n{users:?}\n{tokens:?}\n{acls:?}\n{offsets}")
}

/// A snapshot once background work (a processor catching up) has settled: two reads 200 ms
/// apart agree.
async fn settled(admin: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = snapshot(admin).await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = snapshot(admin).await;
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn code(r: &Result<(Response, Bytes), ClientError>) -> Option<ErrorCode> {
    match r {
        Err(ClientError::Broker { code, .. }) => Some(*code),
        Err(ClientError::UnknownTopic(_)) => Some(ErrorCode::UnknownTopic),
        _ => None,
    }
}

/// One row of the matrix: a request, its payload, and the rights that let it through.
struct Case {
    request: Request,
    payload: Bytes,
    rights: Vec<(Operation, &'static str)>,
}

fn case(request: Request, rights: &[(Operation, &'static str)]) -> Case {
    Case { request, payload: Bytes::new(), rights: rights.to_vec() }
}

/// Every request type of the protocol that needs a right: sent by a principal without it, it
/// is refused with `PermissionDenied`, changes nothing and leaves a "denied" audit record; sent
/// by a principal with exactly the rights listed, it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix() {
    use Operation as Op;
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, "mx.t", 1).await;
    let module = Bytes::from(abi_module(PASSTHROUGH));
    let deploy = |name: &str, version: &str| {
        Request::from(Deployment {
            name: name.into(),
            input: "mx.t".into(),
            output: "mx.out".into(),
            params: vec![("version".into(), version.into())],
            from: None,
            limits: Default::default(),
        })
    };
    admin.add_user("victim", "correct-horse-battery").await.unwrap();
    let (victim_token, _) = admin.create_token("victim", "t", None).await.unwrap();
    let acl = AclEntry {
        principal: "user:victim".into(),
        operation: Op::Consume,
        resource: "topic:mx.t".into(),
        allow: true,
    };
    let mut cases = vec![
        case(
            Request::CreateTopic {
                name: "mx.new".into(),
                partitions: 1,
                retention_ms: None,
                retention_bytes: None,
                replication_factor: None,
            },
            &[(Op::CreateTopic, "topic:mx.new")],
        ),
        case(Request::DescribeTopic { name: "mx.t".into() }, &[(Op::Describe, "topic:mx.t")]),
        Case {
            request: Request::Produce { topic: "mx.t".into(), partition: 0 },
            payload: Bytes::from(batch_of(&["a", "b"], 1)),
            rights: vec![(Op::Produce, "topic:mx.*")],
        },
        case(
            Request::Fetch {
                topic: "mx.t".into(),
                partition: 0,
                from: FetchFrom::Earliest,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                processor: None,
            },
            &[(Op::Consume, "topic:mx.t")],
        ),
        case(
            Request::JoinGroup {
                group: "g1".into(),
                member_id: None,
                topics: vec!["mx.t".into()],
                session_timeout_ms: 30_000,
            },
            &[(Op::Consume, "group:g1"), (Op::Consume, "topic:mx.t")],
        ),
        case(
            Request::CommitOffsets {
                group: "g1".into(),
                member_id: None,
                offsets: vec![PartitionOffset { topic: "mx.t".into(), partition: 0, offset: 1 }],
            },
            &[(Op::Commit, "group:g1"), (Op::Consume, "topic:mx.t")],
        ),
        case(
            Request::FetchOffsets { group: "g1".into(), topic: "mx.t".into() },
            &[(Op::Describe, "group:g1")],
        ),
        Case {
            request: deploy("p1", "1"),
            payload: module.clone(),
            rights: vec![
                (Op::Deploy, "processor:p1"),
                (Op::Consume, "topic:mx.t"),
                (Op::Produce, "topic:mx.out"),
            ],
        },
        Case {
            request: deploy("p1", "2"),
            payload: module.clone(),
            rights: vec![(Op::Deploy, "processor:*"), (Op::Consume, "topic:*"), (Op::Produce, "topic:mx.*")],
        },
        case(Request::RollbackProcessor { name: "p1".into() }, &[(Op::ManageProcessors, "processor:p1")]),
        case(Request::ProcessorStatus { name: "p1".into() }, &[(Op::Describe, "processor:p1")]),
        case(Request::ProcessorVersions { name: "p1".into() }, &[(Op::Describe, "processor:p1")]),
        case(Request::PauseProcessor { name: "p1".into() }, &[(Op::ManageProcessors, "processor:p1")]),
        case(Request::ResumeProcessor { name: "p1".into() }, &[(Op::ManageProcessors, "processor:p1")]),
        case(Request::UndeployProcessor { name: "p1".into() }, &[(Op::ManageProcessors, "processor:p*")]),
        case(Request::AddDevice { id: "d1".into() }, &[(Op::ManageDevices, "device:d1")]),
        case(Request::ListDevices, &[(Op::Describe, "device:*")]),
        case(Request::GetDevice { id: "d1".into() }, &[(Op::DeviceKeys, "device:*")]),
        case(Request::RotateDevice { id: "d1".into(), overlap_ms: 0 }, &[(Op::ManageDevices, "device:d*")]),
        case(
            Request::AuditDevices {
                events: vec![DeviceRefusal {
                    device: Some("d1".into()),
                    source: "127.0.0.1:9".into(),
                    operation: "frame".into(),
                    resource: "device:d1".into(),
                    detail: "a bad tag".into(),
                }],
            },
            &[(Op::DeviceKeys, "device:d1")],
        ),
        case(Request::RevokeDevice { id: "d1".into() }, &[(Op::ManageDevices, "device:d1")]),
        case(Request::DeleteTopic { name: "mx.new".into() }, &[(Op::DeleteTopic, "topic:mx.new")]),
        case(
            Request::AddUser { name: "u2".into(), password: "another-password".into() },
            &[(Op::ManageAuth, "user:u2")],
        ),
        case(
            Request::SetPassword { name: "u2".into(), password: "yet-another-one".into() },
            &[(Op::ManageAuth, "user:u2")],
        ),
        case(Request::ListUsers, &[(Op::ManageAuth, "user:*")]),
        case(Request::ClusterStatus, &[(Op::Describe, "cluster:status")]),
        case(Request::RemoveUser { name: "u2".into() }, &[(Op::ManageAuth, "user:u*")]),
        case(
            Request::CreateToken { user: "victim".into(), name: "x".into(), expires_ms: None },
            &[(Op::ManageAuth, "user:victim")],
        ),
        case(Request::ListTokens { user: None }, &[(Op::ManageAuth, "user:*")]),
        case(Request::RevokeToken { id: victim_token.id.clone() }, &[(Op::ManageAuth, "user:victim")]),
        case(Request::GrantAcl { entry: acl.clone() }, &[(Op::ManageAuth, "*")]),
        case(Request::ListAcls { principal: None }, &[(Op::ManageAuth, "*")]),
        case(Request::RevokeAcl { entry: acl }, &[(Op::ManageAuth, "*")]),
        case(
            Request::Fetch {
                topic: "silt.audit".into(),
                partition: 0,
                from: FetchFrom::Earliest,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                processor: None,
            },
            &[(Op::Audit, "topic:silt.audit")],
        ),
    ];
    // Heartbeat and leave need the member the granted user's join made; they are sent
    // after it, below.
    let nobody =
        user_with(&broker, &admin, "nobody", &[(Op::Consume, "topic:other"), (Op::Describe, "topic:other")])
            .await;
    let mut operations = BTreeSet::new();
    let mut member = None;
    for (i, c) in cases.iter_mut().enumerate() {
        let before = settled(&admin).await;
        let denied = nobody.request(&c.request, c.payload.clone()).await;
        assert_eq!(
            code(&denied),
            Some(ErrorCode::PermissionDenied),
            "{:?} without the right: {denied:?}",
            c.request
        );
        assert_eq!(settled(&admin).await, before, "{:?} refused yet changed something", c.request);
        operations.insert(silt_broker::auth::rights::name(&c.request));

        let name = format!("granted{i}");
        let granted = user_with(&broker, &admin, &name, &c.rights).await;
        let done = granted.request(&c.request, c.payload.clone()).await;
        assert!(done.is_ok(), "{:?} with {:?}: {done:?}", c.request, c.rights);
        if let Ok((Response::Joined { member_id, .. }, _)) = &done {
            member = Some((member_id.clone(), granted));
        }
    }
    let (member_id, member_client) = member.expect("the join case made a member");
    for request in [
        Request::Heartbeat { group: "g1".into(), member_id: member_id.clone() },
        Request::LeaveGroup { group: "g1".into(), member_id },
    ] {
        let denied = nobody.request(&request, Bytes::new()).await;
        assert_eq!(code(&denied), Some(ErrorCode::PermissionDenied), "{request:?}: {denied:?}");
        operations.insert(silt_broker::auth::rights::name(&request));
        let done = member_client.request(&request, Bytes::new()).await;
        assert!(done.is_ok(), "{request:?} by the member: {done:?}");
    }
    // Lists answer with what the principal may describe; nothing here for `nobody`.
    assert!(nobody.list_topics().await.unwrap().is_empty());
    assert!(nobody.list_processors().await.unwrap().is_empty());
    assert_eq!(nobody.whoami().await.unwrap().principal, "user:nobody");
    // Every refusal is in the audit topic, with principal, source and operation.
    let deadline = Instant::now() + AUDIT_WAIT;
    loop {
        let denied: BTreeSet<String> = audit_events(&admin)
            .await
            .iter()
            .filter(|e| e["principal"] == "user:nobody" && e["outcome"] == "denied")
            .inspect(|e| assert!(e["source"].as_str().is_some_and(|s| s.starts_with("127.0.0.1:")), "{e}"))
            .filter_map(|e| e["operation"].as_str().map(String::from))
            .collect();
        let missing: Vec<_> = operations.iter().filter(|o| !denied.contains(**o)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "refusals missing from the audit: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Without a credential nothing goes through, and each attempt is audited as anonymous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_are_refused() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    let anonymous = broker.client_with(None).await;
    let e = anonymous.create_topic("open.t", 1, None, None).await.unwrap_err();
    assert!(matches!(e, ClientError::Broker { code: ErrorCode::Unauthenticated, .. }), "{e:?}");
    assert!(e.is_refusal());
    let e = anonymous.list_topics().await.unwrap_err();
    assert!(e.is_refusal(), "{e:?}");
    assert!(admin.list_topics().await.unwrap().is_empty(), "nothing was created");
    let event = await_audit(&admin, "the anonymous create", |e| {
        e["principal"] == "anonymous" && e["operation"] == "create-topic" && e["outcome"] == "denied"
    })
    .await;
    assert_eq!(event["resource"], "topic:open.t");
    // A bad token fails at connect, also audited.
    let config = silt_client::ClientConfig::new(broker.listen.to_string(), &broker.ca_cert()).unwrap();
    let e = Client::connect(config.with_token("silt_0000_ffff")).await.err().expect("a bad token is refused");
    assert!(e.is_refusal(), "{e:?}");
    await_audit(&admin, "the bad token", |e| e["operation"] == "authenticate" && e["outcome"] == "denied")
        .await;
}

/// An expired token and a revoked one stop working, the revoked one on a connection that is
/// already open too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_tokens_are_refused() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    admin.add_user("alice", "correct-horse-battery").await.unwrap();
    admin.grant_acl(entry("user:alice", Operation::Describe, "topic:*")).await.unwrap();
    let (_, short) = admin.create_token("alice", "short", Some(300)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let config = silt_client::ClientConfig::new(broker.listen.to_string(), &broker.ca_cert()).unwrap();
    let e = Client::connect(config.clone().with_token(short)).await.err().expect("expired");
    assert!(e.to_string().contains("expired"), "{e}");

    let (info, token) = admin.create_token("alice", "long", None).await.unwrap();
    let alice = Client::connect(config.clone().with_token(token.clone())).await.unwrap();
    alice.list_topics().await.unwrap();
    admin.revoke_token(&info.id).await.unwrap();
    let e = alice.list_topics().await.unwrap_err();
    assert!(matches!(e, ClientError::Broker { code: ErrorCode::Unauthenticated, .. }), "{e:?}");
    let e = Client::connect(config.with_token(token)).await.err().expect("revoked");
    assert!(e.to_string().contains("revoked"), "{e}");
}

/// A connection remembers the produces and fetches it was allowed, but never past a change:
/// a revoked entry, a revoked token or an expired one refuses the next request at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_decisions_follow_every_change() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, "memo", 1).await;
    let rights = [(Operation::Produce, "topic:memo"), (Operation::Consume, "topic:memo")];
    let alice = user_with(&broker, &admin, "alice", &rights).await;
    let fetch = Request::Fetch {
        topic: "memo".into(),
        partition: 0,
        from: FetchFrom::Earliest,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        processor: None,
    };
    let send = |client: &Client, request: &Request, payload: Bytes| {
        let (client, request) = (client.clone(), request.clone());
        async move { code(&client.request(&request, payload).await) }
    };
    let batch = || Bytes::from(batch_of(&["v"], 1));
    for _ in 0..3 {
        assert_eq!(send(&alice, &produce("memo"), batch()).await, None);
        assert_eq!(send(&alice, &fetch, Bytes::new()).await, None);
    }
    admin.revoke_acl(entry("user:alice", Operation::Consume, "topic:memo")).await.unwrap();
    assert_eq!(send(&alice, &fetch, Bytes::new()).await, Some(ErrorCode::PermissionDenied));
    assert_eq!(send(&alice, &produce("memo"), batch()).await, None, "produce is still allowed");
    admin.revoke_acl(entry("user:alice", Operation::Produce, "topic:memo")).await.unwrap();
    assert_eq!(send(&alice, &produce("memo"), batch()).await, Some(ErrorCode::PermissionDenied));
    admin.grant_acl(entry("user:alice", Operation::Consume, "topic:memo")).await.unwrap();
    assert_eq!(send(&alice, &fetch, Bytes::new()).await, None);

    // A token that expires while its connection keeps fetching.
    let (_, token) = admin.create_token("alice", "brief", Some(1500)).await.unwrap();
    let brief = broker.client_with(Some(Credential::Token(token))).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1000) {
        assert_eq!(send(&brief, &fetch, Bytes::new()).await, None);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(send(&brief, &fetch, Bytes::new()).await, Some(ErrorCode::Unauthenticated));

    // A revoked token, on a connection that was fetching.
    for t in admin.list_tokens(Some("alice")).await.unwrap() {
        admin.revoke_token(&t.id).await.unwrap();
    }
    assert_eq!(send(&alice, &fetch, Bytes::new()).await, Some(ErrorCode::Unauthenticated));
}

/// Wrong passwords from one address lock it out: then even the right password is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_lock_the_address_out() {
    let broker =
        BrokerProcess::start_with_config("login_failures_max = 3\nlogin_lockout_ms = 60000\n", &[]).await;
    let admin = broker.client().await;
    admin.add_user("bob", "correct-horse-battery").await.unwrap();
    let login = |password: &str| {
        let credential = Credential::Password { user: "bob".into(), password: password.into() };
        let config = silt_client::ClientConfig::new(broker.listen.to_string(), &broker.ca_cert()).unwrap();
        Client::connect(config.with_credential(Some(credential)))
    };
    login("correct-horse-battery").await.expect("the right password");
    for _ in 0..3 {
        let e = login("wrong").await.err().expect("a wrong password");
        assert!(e.is_refusal(), "{e:?}");
    }
    let e = login("correct-horse-battery").await.err().expect("locked out");
    assert!(e.to_string().contains("too many failed logins"), "{e}");
    await_audit(&admin, "the lock-out", |e| {
        e["operation"] == "authenticate" && e["detail"].as_str().is_some_and(|d| d.contains("too many"))
    })
    .await;
}

/// Internal topics are the broker's: not even the admin may write or delete the audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_topic_is_the_brokers_own() {
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    let produce = admin
        .request(
            &Request::Produce { topic: "silt.audit".into(), partition: 0 },
            Bytes::from(batch_of(&["forged"], 1)),
        )
        .await;
    assert_eq!(code(&produce), Some(ErrorCode::PermissionDenied), "{produce:?}");
    let e = admin.delete_topic("silt.audit").await.unwrap_err();
    assert!(e.is_refusal(), "{e:?}");
    assert!(admin.describe_topic("silt.audit").await.is_ok(), "it is still there");
    await_audit(&admin, "the forged produce", |e| e["operation"] == "produce" && e["outcome"] == "denied")
        .await;
    assert!(
        audit_events(&admin).await.iter().all(|e| e["principal"].is_string()),
        "every record is the broker's"
    );
    // A bridge's report of device refusals is held to its caps.
    let refusal = |device: &str, detail: usize| DeviceRefusal {
        device: Some(device.into()),
        source: "127.0.0.1:9".into(),
        operation: "frame".into(),
        resource: format!("device:{device}"),
        detail: "x".repeat(detail),
    };
    for events in [
        vec![refusal("d1", 1); silt_wire::message::DEVICE_REFUSALS_MAX + 1],
        vec![refusal("d1", silt_wire::message::DEVICE_REFUSAL_FIELD_BYTES_MAX + 1)],
        vec![refusal("not an id", 1)],
    ] {
        let r = admin.request(&Request::AuditDevices { events }, Bytes::new()).await;
        assert_eq!(code(&r), Some(ErrorCode::InvalidRequest), "{r:?}");
    }
}

/// A processor runs with its deployer's rights: one who may not write a topic cannot deploy a
/// processor that writes it, and once a right the processor uses is revoked it stops (failed,
/// with the reason, audited) and writes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_cannot_write_what_its_deployer_may_not() {
    use Operation as Op;
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, "in.t", 1).await;
    let dev = user_with(
        &broker,
        &admin,
        "dev",
        &[(Op::Deploy, "processor:*"), (Op::Consume, "topic:in.*"), (Op::Produce, "topic:dev.*")],
    )
    .await;
    let d = |output: &str| Deployment {
        name: format!("to-{output}"),
        input: "in.t".into(),
        output: output.into(),
        params: vec![],
        from: None,
        limits: Default::default(),
    };
    let e = dev.deploy_processor(d("secret.out"), abi_module(PASSTHROUGH)).await.unwrap_err();
    assert!(e.is_refusal(), "{e:?}");
    assert!(admin.describe_topic("secret.out").await.is_err(), "no output topic was made");
    dev.deploy_processor(d("dev.out"), abi_module(PASSTHROUGH)).await.expect("its own namespace");
    let versions = admin.processor_versions("to-dev.out").await.unwrap();
    assert_eq!(versions[0].deployed_by.as_deref(), Some("user:dev"));

    let produce_in = |value: &'static str| {
        let admin = &admin;
        async move { admin.request(&produce("in.t"), Bytes::from(batch_of(&[value], 1))).await.unwrap() }
    };
    produce_in("before").await;
    let deadline = Instant::now() + AUDIT_WAIT;
    while read_all(&admin, "dev.out", FetchFrom::Earliest).await.is_empty() {
        assert!(Instant::now() < deadline, "the processor never wrote its first output");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.revoke_acl(entry("user:dev", Op::Produce, "topic:dev.*")).await.unwrap();
    produce_in("after").await;
    let info = loop {
        let info = admin.processor_status("to-dev.out").await.unwrap();
        if info.error.is_some() {
            break info;
        }
        assert!(Instant::now() < deadline, "the processor kept running: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = info.error.unwrap();
    assert!(error.contains("user:dev may no longer produce topic:dev.out"), "{error}");
    assert_eq!(
        read_all(&admin, "dev.out", FetchFrom::Earliest).await.len(),
        1,
        "nothing written after the revoke"
    );
    await_audit(&admin, "the stopped processor", |e| {
        e["operation"] == "run-processor" && e["outcome"] == "denied" && e["principal"] == "user:dev"
    })
    .await;
}

/// A producer's batches as `silt_wire::batch::set_producer` would mark them: `values` under
/// `(producer_id, sequence)`.
fn batch_as(values: &[&str], producer_id: u64, sequence: u64) -> Bytes {
    let mut b = batch_of(values, 1);
    silt_wire::batch::set_producer(&mut b, producer_id, sequence);
    b.into()
}

fn produce(topic: &str) -> Request {
    Request::Produce { topic: topic.into(), partition: 0 }
}

/// A second client that reads a producer's id off a fetched batch can neither send under it
/// (which would make the producer's next batch a "duplicate" and lose it) nor claim it; each
/// attempt is refused and audited, and the producer carries on storing everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_producer_id_cannot_be_used_by_another() {
    use Operation as Op;
    let broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, "theft", 1).await;
    let rights = [(Op::Produce, "topic:theft"), (Op::Consume, "topic:theft")];
    let alice = user_with(&broker, &admin, "alice", &rights).await;
    let mallory = user_with(&broker, &admin, "mallory", &rights).await;

    let producer = silt_client::Producer::new(&alice, "theft", Default::default()).await.unwrap();
    producer.send(silt_client::ProducerRecord { value: b"a1", ..Default::default() }).await.unwrap();
    producer.flush().await.unwrap();

    let fetch = Request::Fetch {
        topic: "theft".into(),
        partition: 0,
        from: FetchFrom::Earliest,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        processor: None,
    };
    let (_, fetched) = mallory.request(&fetch, Bytes::new()).await.unwrap();
    let (_, id, sequence, _) = silt_wire::batch::peek_header(&fetched);
    assert_ne!(id, 0, "the producer is idempotent");
    for seq in [sequence, sequence + 1] {
        let stolen = mallory.request(&produce("theft"), batch_as(&["forged"], id, seq)).await;
        assert_eq!(code(&stolen), Some(ErrorCode::PermissionDenied), "sequence {seq}: {stolen:?}");
    }
    let claimed = mallory.claim_producer(id).await.unwrap_err();
    assert!(matches!(claimed, ClientError::Broker { code: ErrorCode::PermissionDenied, .. }), "{claimed:?}");

    producer.send(silt_client::ProducerRecord { value: b"a2", ..Default::default() }).await.unwrap();
    producer.close().await.unwrap();
    let values: Vec<String> =
        read_all(&admin, "theft", FetchFrom::Earliest).await.into_iter().map(|r| r.value).collect();
    assert_eq!(values, ["a1", "a2"], "every batch of the producer is stored, nothing forged");
    for operation in ["produce", "init-producer"] {
        await_audit(&admin, &format!("mallory's {operation}"), |e| {
            e["principal"] == "user:mallory" && e["operation"] == operation && e["outcome"] == "denied"
        })
        .await;
    }
}

/// Claiming a producer id again (a reconnect, a restarted bridge) raises its epoch: a
/// connection still holding the older epoch is fenced, the new one carries on, and the id
/// stays its principal's across a broker restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_session_of_a_producer_fences_the_older() {
    use Operation as Op;
    let mut broker = BrokerProcess::start(&[]).await;
    let admin = broker.client().await;
    create_topic(&admin, "fence", 1).await;
    let rights = [(Op::Produce, "topic:fence")];
    let old = user_with(&broker, &admin, "writer", &rights).await;
    let (_, token) = admin.create_token("writer", "second", None).await.unwrap();
    let new = broker.client_with(Some(Credential::Token(token.clone()))).await;

    let id = old.init_producer().await.unwrap();
    old.request(&produce("fence"), batch_as(&["one"], id, 1)).await.unwrap();
    assert_eq!(new.claim_producer(id).await.unwrap(), 1, "the second claim is epoch 1");
    let zombie = old.request(&produce("fence"), batch_as(&["two"], id, 2)).await;
    assert_eq!(code(&zombie), Some(ErrorCode::ProducerFenced), "{zombie:?}");
    let (r, _) = new.request(&produce("fence"), batch_as(&["two"], id, 2)).await.unwrap();
    assert_eq!(r, Response::Produced { base_offset: 1, duplicate: false });

    // A batch without a claimed id is refused even for its owner's principal.
    let fresh = broker.client_with(Some(Credential::Token(token.clone()))).await;
    let unclaimed = fresh.request(&produce("fence"), batch_as(&["three"], id, 3)).await;
    assert_eq!(code(&unclaimed), Some(ErrorCode::PermissionDenied), "{unclaimed:?}");
    let unknown = fresh.claim_producer(id ^ 1).await.unwrap_err();
    assert!(matches!(unknown, ClientError::Broker { code: ErrorCode::UnknownProducer, .. }), "{unknown:?}");

    broker.kill();
    broker.restart().await;
    let after = broker.client_with(Some(Credential::Token(token))).await;
    assert_eq!(after.claim_producer(id).await.unwrap(), 2, "the id and its epoch survive a restart");
    let (r, _) = after.request(&produce("fence"), batch_as(&["two"], id, 2)).await.unwrap();
    assert_eq!(r, Response::Produced { base_offset: 1, duplicate: true }, "its dedup state is intact");
}

/// A certificate authority for the mTLS tests: its PEM, and an issuer of client certificates.
fn authority(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, rcgen::Issuer::new(params, key))
}

/// A client certificate for DNS name `name` from `issuer`, written as `dir/name.{crt,key}`.
fn client_certificate(
    dir: &std::path::Path,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    name: &str,
    file: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let (crt, pem) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    (crt, pem)
}

/// mTLS: a client certificate of the configured CA authenticates its connection as the user it
/// names, with that user's rights and no token; one of a foreign CA is refused at the
/// handshake, and the refusal is in the audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_of_the_configured_ca_authenticate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca_pem, ca) = authority("silt test CA");
    let (_, foreign) = authority("foreign CA");
    let ca_path = certs.path().join("clients-ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let (crt, key) = client_certificate(certs.path(), &ca, "bridge-1", "good");
    let (bad_crt, bad_key) = client_certificate(certs.path(), &foreign, "bridge-1", "foreign");

    let broker = BrokerProcess::start_with_config(&format!("client_ca = {:?}\n", ca_path), &[]).await;
    let admin = broker.client().await;
    admin.grant_acl(entry("user:bridge-1", Operation::DeviceKeys, "device:*")).await.unwrap();
    admin.add_device("d1").await.unwrap();
    let config = silt_client::ClientConfig::new(broker.listen.to_string(), &broker.ca_cert()).unwrap();
    let client = Client::connect(config.clone().with_client_cert(&crt, &key).unwrap()).await.unwrap();
    let who = client.whoami().await.unwrap();
    assert_eq!((who.principal.as_str(), who.method.as_str()), ("user:bridge-1", "certificate"));
    assert!(client.get_device("d1").await.unwrap().key.is_some(), "the certificate's user reads device keys");
    let e = client.create_topic("mtls.t", 1, None, None).await.unwrap_err();
    assert!(matches!(e, ClientError::Broker { code: ErrorCode::PermissionDenied, .. }), "{e:?}");

    let refused = async {
        let c = Client::connect(config.with_client_cert(&bad_crt, &bad_key).unwrap()).await?;
        c.whoami().await
    };
    let refused = tokio::time::timeout(Duration::from_secs(20), refused).await.expect("refused in time");
    assert!(refused.is_err(), "a certificate of a foreign CA is refused: {refused:?}");
    let event = await_audit(&admin, "the foreign certificate", |e| {
        e["operation"] == "authenticate" && e["outcome"] == "denied" && e["resource"] == "certificate"
    })
    .await;
    assert!(event["detail"].as_str().unwrap().contains("TLS handshake failed"), "{event}");
}
