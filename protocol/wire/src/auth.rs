//! Who may do what: principals, credentials, operations and access-control entries.
//!
//! The broker decides with these types and so does a bridge checking a device's MQTT publish
//! against the device's entries, so the matching rules live here, once, with no I/O.
//!
//! A principal is written `KIND:NAME`: `user:alice` (a person or service with a password or
//! tokens, or a client certificate whose name maps to it) or `device:sensor-7` (a device with
//! its own key). A resource is written the same way: `topic:sensors.temp`, `group:analysts`,
//! `processor:hot`, `device:sensor-7`, `user:alice`. Patterns in access-control entries may
//! end in `*` (a prefix), be `*` alone (anything), and in an entry of a `device:` principal may
//! say `{id}`, which stands for that device's own id.

use rkyv::{Archive, Deserialize, Serialize};

/// How a client proves who it is, sent in `Request::Authenticate`.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API token as `silt token create` printed it.
    Token(String),
    /// A user's name and password.
    Password { user: String, password: String },
}

impl std::fmt::Debug for Credential {
    // Secrets stay out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
        }
    }
}

/// What a request does, as access-control entries name it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    Produce,
    Consume,
    Commit,
    CreateTopic,
    DeleteTopic,
    AlterTopic,
    Deploy,
    ManageProcessors,
    ManageDevices,
    /// Read a device's key (bridges authenticating devices).
    DeviceKeys,
    /// Manage users, tokens and access-control entries.
    ManageAuth,
    Describe,
    /// Read the audit topic.
    Audit,
    /// Every operation.
    All,
}

impl Operation {
    /// Every operation, in the order of their names in [`Operation::NAMES`].
    pub const ALL: [Operation; 14] = [
        Operation::Produce,
        Operation::Consume,
        Operation::Commit,
        Operation::CreateTopic,
        Operation::DeleteTopic,
        Operation::AlterTopic,
        Operation::Deploy,
        Operation::ManageProcessors,
        Operation::ManageDevices,
        Operation::DeviceKeys,
        Operation::ManageAuth,
        Operation::Describe,
        Operation::Audit,
        Operation::All,
    ];
    /// The names the command line and the audit use.
    pub const NAMES: [&'static str; 14] = [
        "produce",
        "consume",
        "commit",
        "create-topic",
        "delete-topic",
        "alter-topic",
        "deploy",
        "manage-processors",
        "manage-devices",
        "device-keys",
        "manage-auth",
        "describe",
        "audit",
        "all",
    ];

    pub fn name(self) -> &'static str {
        let i = Operation::ALL.iter().position(|o| *o == self).expect("every operation is listed");
        Operation::NAMES[i]
    }

    pub fn parse(s: &str) -> Result<Operation, String> {
        Operation::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Operation::ALL[i])
            .ok_or_else(|| format!("unknown operation {s:?}; one of: {}", Operation::NAMES.join(", ")))
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One access-control entry: `principal` may (or, with `allow` false, may not) do `operation`
/// on resources matching `resource`. Deny wins over allow; nothing is allowed by default.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclEntry {
    /// `user:NAME`, `device:ID`, or a pattern such as `user:*` or `device:*`.
    pub principal: String,
    pub operation: Operation,
    /// `topic:sensors.*`, `group:analysts`, `processor:hot`, `device:*`, `*`.
    pub resource: String,
    pub allow: bool,
}

impl AclEntry {
    /// `allow` or `deny`.
    pub fn permission(&self) -> &'static str {
        if self.allow {
            "allow"
        } else {
            "deny"
        }
    }
}

/// `allow user:reader consume topic:sec.*`: how the audit and the command line write an entry.
impl std::fmt::Display for AclEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} {}", self.permission(), self.principal, self.operation, self.resource)
    }
}

/// Longest principal or resource pattern.
pub const NAME_BYTES_MAX: usize = 256;

/// The kinds of principal.
pub const PRINCIPAL_KINDS: [&str; 2] = ["user", "device"];
/// The kinds of resource.
pub const RESOURCE_KINDS: [&str; 6] = ["topic", "group", "processor", "device", "user", "cluster"];

/// Checks `KIND:NAME` (or a pattern of it) against the allowed kinds and characters.
fn check_kind_name(what: &str, s: &str, kinds: &[&str], any_allowed: bool) -> Result<(), String> {
    if s.is_empty() || s.len() > NAME_BYTES_MAX {
        return Err(format!("{what} must be 1 to {NAME_BYTES_MAX} bytes long"));
    }
    if any_allowed && s == "*" {
        return Ok(());
    }
    let Some((kind, name)) = s.split_once(':') else {
        return Err(format!("{what} {s:?} is not KIND:NAME (kinds: {})", kinds.join(", ")));
    };
    if !kinds.contains(&kind) {
        return Err(format!("{what} {s:?} has kind {kind:?}; one of: {}", kinds.join(", ")));
    }
    let body = name.strip_suffix('*').unwrap_or(name).replace("{id}", "");
    if let Some(c) = body.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{what} {s:?} contains {c:?}; use letters, digits, '.', '_', '-', a final '*'"));
    }
    if name.is_empty() {
        return Err(format!("{what} {s:?} has no name after the kind"));
    }
    Ok(())
}

/// Checks an entry's principal and resource patterns.
pub fn check_entry(e: &AclEntry) -> Result<(), String> {
    check_kind_name("principal", &e.principal, &PRINCIPAL_KINDS, false)?;
    check_kind_name("resource", &e.resource, &RESOURCE_KINDS, true)?;
    if e.resource.contains("{id}") && !e.principal.starts_with("device:") {
        return Err("only entries of device principals may say {id} in the resource".into());
    }
    Ok(())
}

/// Whether `pattern` matches `name`: equal, `*`, or a prefix ending in `*`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl AclEntry {
    /// Whether this entry speaks of `principal` doing `operation` on `resource`.
    pub fn applies(&self, principal: &str, operation: Operation, resource: &str) -> bool {
        if !(self.operation == operation || self.operation == Operation::All) {
            return false;
        }
        if !pattern_matches(&self.principal, principal) {
            return false;
        }
        if self.resource.contains("{id}") {
            let Some(id) = principal.strip_prefix("device:") else { return false };
            return pattern_matches(&self.resource.replace("{id}", id), resource);
        }
        pattern_matches(&self.resource, resource)
    }
}

/// The decision of `entries` for `principal` doing `operation` on `resource`: allowed only if
/// some entry allows it and none denies it. Any allowed operation on a resource also lets the
/// principal describe it (one who may read a topic may see its partitions), unless describing
/// it is denied.
pub fn decide<'a>(
    entries: impl IntoIterator<Item = &'a AclEntry>,
    principal: &str,
    operation: Operation,
    resource: &str,
) -> bool {
    let mut allowed = false;
    for e in entries {
        if e.applies(principal, operation, resource) {
            if !e.allow {
                return false;
            }
            allowed = true;
        } else if operation == Operation::Describe && e.allow && e.applies(principal, e.operation, resource) {
            allowed = true;
        }
    }
    allowed
}

/// A user, as listed (never with a password or its hash).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub created_ms: i64,
}

/// An API token, as listed (its secret is shown once, when it is created).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token's public id (its first part); what `silt token revoke` takes.
    pub id: String,
    pub name: String,
    /// The user whose rights the token carries.
    pub user: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// Who the broker takes a connection for.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    /// `user:NAME`, `device:ID`; `anonymous` when authentication is off.
    pub principal: String,
    /// `token`, `password`, `certificate` or `none`.
    pub method: String,
    /// The access-control entries that apply to the principal.
    pub entries: Vec<AclEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(principal: &str, op: Operation, resource: &str, allow: bool) -> AclEntry {
        AclEntry { principal: principal.into(), operation: op, resource: resource.into(), allow }
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("topic:sensors.*", "topic:sensors.temp"));
        assert!(pattern_matches("*", "group:g"));
        assert!(pattern_matches("topic:a", "topic:a"));
        assert!(!pattern_matches("topic:a", "topic:ab"));
        assert!(!pattern_matches("topic:sensors.*", "topic:sensorsX"));
    }

    #[test]
    fn deny_wins_and_nothing_is_allowed_by_default() {
        let reader = "user:reader";
        let mut acl = vec![entry("user:reader", Operation::Consume, "topic:sec.*", true)];
        assert!(decide(&acl, reader, Operation::Consume, "topic:sec.t"));
        assert!(!decide(&acl, reader, Operation::Produce, "topic:sec.t"));
        assert!(!decide(&acl, "user:other", Operation::Consume, "topic:sec.t"));
        assert!(!decide(&[], reader, Operation::Consume, "topic:sec.t"));
        acl.push(entry("user:*", Operation::All, "topic:sec.secret", false));
        assert!(!decide(&acl, reader, Operation::Consume, "topic:sec.secret"));
        assert!(decide(&acl, reader, Operation::Consume, "topic:sec.t"));
    }

    #[test]
    fn any_right_lets_one_describe_unless_denied() {
        let mut acl = vec![entry("user:r", Operation::Consume, "topic:a.*", true)];
        assert!(decide(&acl, "user:r", Operation::Describe, "topic:a.t"));
        assert!(!decide(&acl, "user:r", Operation::Describe, "topic:b.t"));
        assert!(!decide(&acl, "user:r", Operation::Produce, "topic:a.t"));
        acl.push(entry("user:r", Operation::Describe, "topic:a.secret", false));
        assert!(!decide(&acl, "user:r", Operation::Describe, "topic:a.secret"));
    }

    #[test]
    fn device_entries_may_name_the_device_itself() {
        let acl = [entry("device:*", Operation::Consume, "topic:commands.{id}", true)];
        assert!(decide(&acl, "device:d1", Operation::Consume, "topic:commands.d1"));
        assert!(!decide(&acl, "device:d1", Operation::Consume, "topic:commands.d2"));
        assert!(!decide(&acl, "user:d1", Operation::Consume, "topic:commands.d1"));
    }

    #[test]
    fn entries_are_checked() {
        assert!(check_entry(&entry("user:a", Operation::All, "*", true)).is_ok());
        assert!(check_entry(&entry("device:*", Operation::Consume, "topic:c.{id}", true)).is_ok());
        for (p, r) in [
            ("bob", "*"),
            ("user:a", "topics:x"),
            ("user:a", "topic:a b"),
            ("user:", "*"),
            ("user:a", "topic:{id}"),
            ("robot:a", "*"),
        ] {
            assert!(check_entry(&entry(p, Operation::All, r, true)).is_err(), "{p} {r}");
        }
    }

    #[test]
    fn operation_names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.name()), Ok(op));
        }
        assert!(Operation::parse("rule").is_err());
    }
}
