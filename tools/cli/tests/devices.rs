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
