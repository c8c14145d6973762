//! `silt device add|rotate|list|revoke` through the real `silt` binary against a real broker:
//! the key is printed once (text and `--json`), list never shows keys, a revoked id stays listed
//! until an admin enrols it again with a new key, rotation gives a new key with an overlap, and
//! bad ids and duplicates fail with one-line messages.

mod support;

use serde_json::Value;
use support::Broker;

#[test]
fn devices_are_added_listed_and_revoked() {
    let broker = Broker::start();
    let text = broker.silt(&["device", "add", "dev-1"]).run();
    let key = text.ok().trim().to_string();
    assert_eq!(key.len(), 64, "{text:?}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));

    let added: Value =
        serde_json::from_str(broker.silt(&["device", "add", "dev-2", "--json"]).run().ok()).unwrap();
    assert_eq!(added["id"], "dev-2");
    assert_eq!(added["key"].as_str().unwrap().len(), 64);
    assert_ne!(added["key"].as_str().unwrap(), key, "every device gets its own key");

    let dup = broker.silt(&["device", "add", "dev-1"]).run();
    assert!(dup.fails(1).contains("already registered"), "{dup:?}");
    let bad = broker.silt(&["device", "add", "has space"]).run();
    assert!(bad.fails(1).contains("device id"), "{bad:?}");

    assert_eq!(broker.silt(&["device", "revoke", "dev-1"]).run().ok(), "device dev-1 revoked\n");
    let unknown = broker.silt(&["device", "revoke", "nobody"]).run();
    assert!(unknown.fails(1).contains("no device"), "{unknown:?}");

    let listed: Value = serde_json::from_str(broker.silt(&["device", "list", "--json"]).run().ok()).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], "dev-1");
    assert_eq!(listed[0]["state"], "revoked");
    assert_eq!(listed[1]["state"], "active");
    assert!(listed.iter().all(|d| d.get("key").is_none()), "list never shows keys");
    let text = broker.silt(&["device", "list"]).run();
    assert!(text.ok().starts_with("dev-1\trevoked\tcreated "), "{text:?}");
    // A revoked id is enrolled again by `add`, with a new key.
    let again = broker.silt(&["device", "add", "dev-1"]).run();
    let new_key = again.ok().trim().to_string();
    assert_eq!(new_key.len(), 64, "{again:?}");
    assert_ne!(new_key, key, "re-enrolment makes a new key");
    let listed: Value = serde_json::from_str(broker.silt(&["device", "list", "--json"]).run().ok()).unwrap();
    assert_eq!(listed[0]["state"], "active");

    // Rotation: a new key, and the old one's end of validity.
    let rotated: Value = serde_json::from_str(
        broker.silt(&["device", "rotate", "dev-1", "--overlap", "10m", "--json"]).run().ok(),
    )
    .unwrap();
    let rotated_key = rotated["key"].as_str().unwrap();
    assert_eq!(rotated_key.len(), 64);
    assert_ne!(rotated_key, new_key);
    assert!(rotated["previous_key_until_ms"].as_i64().is_some(), "{rotated}");
    let unknown = broker.silt(&["device", "rotate", "nobody"]).run();
    assert!(unknown.fails(1).contains("no device"), "{unknown:?}");
}

/// `silt device deploy|status|rollback`: versions are numbered per device, the last deployed is
/// requested, a rollback requests the one before it, and a module the device tier cannot run
/// (not WebAssembly, parameters its `silt_init` refuses), a device that does not exist and a
/// rollback with nothing before fail with one-line messages and change nothing.
#[test]
fn device_modules_are_deployed_shown_and_rolled_back() {
    let broker = Broker::start();
    broker.silt(&["device", "add", "dev-1"]).run().ok();
    let wat = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../processors/examples/wat-threshold/threshold.wat");
    let wat = wat.to_str().unwrap();
    let status = |broker: &Broker| -> Value {
        serde_json::from_str(broker.silt(&["device", "status", "dev-1", "--json"]).run().ok()).unwrap()
    };
    let before = status(&broker);
    assert_eq!(
        (before["requested_version"].clone(), before["running_version"].clone()),
        (Value::Null, Value::Null)
    );

    let deploy = |min_len: &str| {
        broker
            .silt(&["device", "deploy", wat, "--device", "dev-1", "--param", "key=dev-1", "--param", min_len])
            .run()
    };
    let text = deploy("min_len=20");
    assert!(text.ok().starts_with("device dev-1: deployed; requested version 1\n"), "{text:?}");
    deploy("min_len=30").ok();
    let after = status(&broker);
    assert_eq!(after["requested_version"], 2);
    assert_eq!(after["running_version"], Value::Null);
    assert_eq!(after["versions"].as_array().unwrap().len(), 2);
    assert_eq!(after["versions"][1]["params"]["min_len"], "30");
    assert_eq!(after["versions"][1]["input"], "temperature");
    assert_eq!(after["versions"][0]["module_sha256"].as_str().unwrap().len(), 64);

    let refused = deploy("min_len=lots");
    assert!(refused.fails(1).contains("the device tier cannot run this module"), "{refused:?}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a module").unwrap();
    let refused = broker.silt(&["device", "deploy", junk.to_str().unwrap(), "--device", "dev-1"]).run();
    assert!(refused.fails(1).contains("not WebAssembly"), "{refused:?}");
    let unknown = broker.silt(&["device", "deploy", wat, "--device", "nobody", "--param", "key=a"]).run();
    assert!(unknown.fails(1).contains("no device"), "{unknown:?}");
    assert_eq!(status(&broker)["requested_version"], 2, "refused deploys changed nothing");

    let text = broker.silt(&["device", "rollback", "dev-1"]).run();
    assert!(text.ok().starts_with("device dev-1: rolled back; requested version 1\n"), "{text:?}");
    let again = broker.silt(&["device", "rollback", "dev-1"]).run();
    assert!(again.fails(1).contains("no version before 1"), "{again:?}");
    let shown = broker.silt(&["device", "status", "dev-1"]).run();
    assert!(shown.ok().contains("  requested version: 1\n  running version:   none\n"), "{shown:?}");

    // A group: every active device whose id starts with the prefix, each its own next version.
    for id in ["line-a", "line-b", "line-c", "other"] {
        broker.silt(&["device", "add", id]).run().ok();
    }
    broker.silt(&["device", "revoke", "line-c"]).run().ok();
    let group = broker
        .silt(&[
            "device", "deploy", wat, "--device", "line-*", "--device", "dev-1", "--param", "key=x", "--json",
        ])
        .run();
    let deployed: Value = serde_json::from_str(group.ok()).unwrap();
    let got: Vec<(&str, u64)> = deployed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["device"].as_str().unwrap(), m["requested_version"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [("line-a", 1), ("line-b", 1), ("dev-1", 3)], "revoked and unmatched devices left out");
    let none = broker.silt(&["device", "deploy", wat, "--device", "nobody-*"]).run();
    assert!(none.fails(1).contains("no active device matches"), "{none:?}");
}
