//! Who is asking, and may they: principals, credentials, access-control entries, audit.
//!
//! Users have Argon2id password hashes and API tokens (random, shown once, kept as SHA-256);
//! access-control entries say which principal may do which operation on which resources
//! (matching rules in `silt_wire::auth`, shared with bridges). The state lives in three sled
//! trees and, for every request's decision, in memory behind one lock. On first start with
//! authentication on, the broker makes a user `admin` with every right and writes a token
//! for it to `DATA_DIR/admin.token` (mode 0600).

pub mod audit;
pub mod changes;
mod decisions;
mod delegated;
pub mod lockout;
mod peers;
pub mod producers;
pub mod rights;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};
use silt_storage::{AuthTree, Store};
use silt_wire::auth::{decide, TokenInfo, UserInfo, WhoAmI};
use silt_wire::{AclEntry, Credential, ErrorCode, Operation, Request, Response};

use self::audit::{Audit, Event, Outcome};
use self::lockout::Lockout;
use silt_storage::records::{open, seal, StoredToken, StoredUser};

/// Settings of authentication.
#[derive(Debug, Clone, Copy)]
pub struct AuthConfig {
    /// Off: every connection acts as `anonymous` with every right (loud warning at start).
    pub enabled: bool,
    /// Failed logins from one address within `login_window_ms` before it is locked out.
    pub login_failures_max: u32,
    pub login_window_ms: u64,
    /// How long a locked-out address is refused every login.
    pub lockout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { enabled: true, login_failures_max: 5, login_window_ms: 60_000, lockout_ms: 60_000 }
    }
}

/// The user made on first start, with every right.
pub const ADMIN_USER: &str = "admin";
/// The admin token's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Longest credential string accepted (a token is 82 bytes).
const CREDENTIAL_BYTES_MAX: usize = 1024;
const TOKEN_PREFIX: &str = "silt_";

/// A refusal: the code the client sees and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

/// How a principal proved itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Token(String),
    Password,
    Certificate,
    /// Authentication is off.
    Open,
}

/// Who a connection acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `user:NAME`, `device:ID`, `anonymous`.
    pub name: String,
    pub method: Method,
}

/// One connection's identity: its address, and its principal once authenticated.
#[derive(Debug)]
pub struct Session {
    pub remote: Option<SocketAddr>,
    principal: RwLock<Option<Arc<Principal>>>,
    /// Producer ids this connection holds.
    producers: producers::Held,
    /// Produces and fetches this connection was allowed, for as long as nothing changed.
    decisions: Mutex<decisions::Decisions>,
    /// The connection's budget of fetch response bytes (`Limits::connection_response_bytes_max`),
    /// set by the QUIC shell; unset, only the broker-wide one applies.
    pub responses: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
}

impl Session {
    /// The connection holds producer id `id` at `epoch` (a claim the cluster decided).
    pub fn hold_producer(&self, id: u64, epoch: u32) {
        self.producers.hold(id, epoch);
    }

    /// The principal, if the connection authenticated.
    pub fn principal(&self) -> Option<Arc<Principal>> {
        self.principal.read().expect("session lock").clone()
    }
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, StoredUser>,
    tokens: BTreeMap<String, StoredToken>,
    entries: BTreeSet<AclEntry>,
}

/// Principals, rights and the audit of a broker.
pub struct Auth {
    config: AuthConfig,
    store: Arc<Store>,
    state: RwLock<State>,
    /// Goes up with every change of `state`: connections' cached decisions older than it
    /// are not used (`decisions.rs`).
    generation: AtomicU64,
    lockout: Mutex<Lockout>,
    pub audit: Audit,
    pub producers: producers::Producers,
}

fn storage(e: impl std::fmt::Display) -> Refusal {
    refuse(ErrorCode::Storage, e.to_string())
}

fn random_hex(bytes: usize) -> Result<String, Refusal> {
    let mut b = vec![0u8; bytes];
    SystemRandom::new().fill(&mut b).map_err(|_| storage("the system random generator failed"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The token a data directory's admin token file holds before the first start, as (id, secret).
fn given_token(path: &Path) -> anyhow::Result<Option<(String, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    let token = text.trim();
    let parsed =
        token.strip_prefix(TOKEN_PREFIX).and_then(|rest| rest.split_once('_')).filter(|(id, secret)| {
            let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
            hex(id, 12) && hex(secret, 64)
        });
    match parsed {
        Some((id, secret)) => Ok(Some((id.to_string(), secret.to_string()))),
        None => anyhow::bail!(
            "{} holds no Silt token (silt_ID_SECRET, 12 and 64 hex digits); remove it to have one made",
            path.display()
        ),
    }
}

/// A new random admin token, `silt_ID_SECRET`, for a cluster's brokers to share.
pub fn new_token() -> anyhow::Result<String> {
    let id = random_hex(6).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let secret = random_hex(32).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(format!("{TOKEN_PREFIX}{id}_{secret}"))
}

fn sha256(s: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref().try_into().expect("SHA-256 has 32 bytes")
}

/// Checks a user name: the same characters and length as a device id.
pub fn check_user_name(name: &str) -> Result<(), Refusal> {
    silt_wire::check_device_id(name)
        .map_err(|e| refuse(ErrorCode::InvalidRequest, e.replace("device id", "user name")))
}

fn check_password(password: &str) -> Result<(), Refusal> {
    if password.len() < 8 || password.len() > CREDENTIAL_BYTES_MAX {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            format!("a password must be 8 to {CREDENTIAL_BYTES_MAX} bytes long"),
        ));
    }
    Ok(())
}

fn hash_password(password: &str) -> Result<String, Refusal> {
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt).map_err(|_| storage("the system random generator failed"))?;
    let salt = SaltString::encode_b64(&salt).map_err(storage)?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(storage)?.to_string())
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

fn token_info(t: &StoredToken) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        user: t.user.clone(),
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
        revoked_ms: t.revoked_ms,
    }
}

fn token_live(t: &StoredToken, now_ms: i64) -> Result<(), &'static str> {
    if t.revoked_ms.is_some() {
        return Err("the token is revoked");
    }
    if t.expires_ms.is_some_and(|e| e <= now_ms) {
        return Err("the token has expired");
    }
    Ok(())
}

/// What every device may do on a new broker: publish readings under the bridge's namespace,
/// and read the topics under its own id (commands to it, say). Entries like any other: an admin
/// may revoke them or grant more.
pub const DEVICE_DEFAULTS: [(Operation, &str); 2] =
    [(Operation::Produce, "topic:sensors.*"), (Operation::Consume, "topic:devices.{id}.*")];

impl Auth {
    /// Loads users, tokens and entries; on first start with authentication on, makes the
    /// admin user and writes its token to `data_dir/admin.token`.
    pub fn open(
        store: Arc<Store>,
        config: AuthConfig,
        data_dir: &Path,
        audit: Audit,
    ) -> anyhow::Result<Arc<Auth>> {
        let mut state = State::default();
        for (key, value) in store.auth_entries(AuthTree::Users)? {
            let user: StoredUser = open("user", &value).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(user.name.as_bytes() == key, "stored user {:?} is under another key", user.name);
            state.users.insert(user.name.clone(), user);
        }
        for (_, value) in store.auth_entries(AuthTree::Tokens)? {
            let token: StoredToken = open("token", &value).map_err(anyhow::Error::msg)?;
            state.tokens.insert(token.id.clone(), token);
        }
        for (_, value) in store.auth_entries(AuthTree::Acls)? {
            state.entries.insert(open("access-control entry", &value).map_err(anyhow::Error::msg)?);
        }
        let producers = producers::Producers::open(store.clone())?;
        let auth = Arc::new(Auth {
            config,
            store,
            state: RwLock::new(state),
            generation: AtomicU64::new(0),
            lockout: Mutex::new(Lockout::new(
                config.login_failures_max,
                config.login_window_ms,
                config.lockout_ms,
            )),
            audit,
            producers,
        });
        if config.enabled && auth.state.read().expect("auth lock").users.is_empty() {
            auth.bootstrap(data_dir)?;
        }
        Ok(auth)
    }

    /// The state, to change: any cached decision is stale from here on.
    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        let state = self.state.write().expect("auth lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        state
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn bootstrap(&self, data_dir: &Path) -> anyhow::Result<()> {
        let now = crate::clock::now_ms();
        let password = random_hex(24)?;
        self.add_user(ADMIN_USER, &password, now)?;
        let all = AclEntry {
            principal: format!("user:{ADMIN_USER}"),
            operation: Operation::All,
            resource: "*".into(),
            allow: true,
        };
        self.grant(all)?;
        for (operation, resource) in DEVICE_DEFAULTS {
            self.grant(AclEntry {
                principal: "device:*".into(),
                operation,
                resource: resource.into(),
                allow: true,
            })?;
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        // The brokers of a cluster share one admin token: `silt-broker cluster-init` writes it
        // into each data directory before their first start, and each adopts it.
        if let Some(given) = given_token(&path)? {
            self.apply_token(self.token_change(ADMIN_USER, "admin", None, now, Some(given))?)?;
            tracing::info!(path = %path.display(), "first start: made user admin with every right; its token is the one this file held");
            return Ok(());
        }
        let secret = self.apply_token(self.token_change(ADMIN_USER, "admin", None, now, None)?)?;
        write_secret(&path, &secret)?;
        tracing::info!(path = %path.display(), "first start: made user admin with every right; its token is in this file (mode 0600)");
        Ok(())
    }

    /// A new session for a connection from `remote`; with authentication off it already acts
    /// as `anonymous`.
    pub fn session(&self, remote: Option<SocketAddr>) -> Session {
        let principal = (!self.config.enabled)
            .then(|| Arc::new(Principal { name: "anonymous".into(), method: Method::Open }));
        Session {
            remote,
            principal: RwLock::new(principal),
            producers: Default::default(),
            decisions: Default::default(),
            responses: Default::default(),
        }
    }

    fn event(
        &self,
        session: &Session,
        principal: &str,
        operation: &str,
        resource: String,
        outcome: Outcome,
        detail: String,
    ) {
        self.audit.record(Event {
            time_ms: crate::clock::now_ms(),
            principal: principal.to_string(),
            source: session.remote,
            operation: operation.to_string(),
            resource,
            outcome,
            detail,
        });
    }

    /// Records the outcome of a request (named `operation`, on `resource`) in the audit.
    pub fn record(
        &self,
        session: &Session,
        operation: &str,
        resource: String,
        outcome: Outcome,
        detail: String,
    ) {
        let principal = session.principal().map_or_else(|| "anonymous".to_string(), |p| p.name.clone());
        self.event(session, &principal, operation, resource, outcome, detail);
    }

    /// Checks `credential` and makes the session act as its principal.
    pub fn authenticate(
        &self,
        session: &Session,
        credential: &Credential,
        now_ms: i64,
    ) -> Result<WhoAmI, Refusal> {
        let claimed = match credential {
            Credential::Token(t) => t.split('_').nth(1).map(|id| format!("token:{id}")).unwrap_or_default(),
            Credential::Password { user, .. } => format!("user:{user}"),
        };
        let ip = session.remote.map(|r| r.ip());
        if let Some(ip) = ip {
            if let Some(wait) = self.lockout.lock().expect("lockout lock").locked(ip, now_ms as u64) {
                let message =
                    format!("too many failed logins from {ip}; try again in {} s", wait.div_ceil(1000));
                self.event(session, "anonymous", "authenticate", claimed, Outcome::Denied, message.clone());
                return Err(refuse(ErrorCode::Unauthenticated, message));
            }
        }
        match self.verify(credential, now_ms) {
            Ok(principal) => {
                if let Some(ip) = ip {
                    self.lockout.lock().expect("lockout lock").succeeded(ip);
                }
                let method = match &principal.method {
                    Method::Token(id) => format!("token {id}"),
                    Method::Password => "password".into(),
                    Method::Certificate => "certificate".into(),
                    Method::Open => "none".into(),
                };
                self.event(session, &principal.name, "authenticate", claimed, Outcome::Ok, method);
                let who = self.whoami(&principal);
                *session.principal.write().expect("session lock") = Some(Arc::new(principal));
                Ok(who)
            }
            Err(reason) => {
                let locked =
                    ip.is_some_and(|ip| self.lockout.lock().expect("lockout lock").failed(ip, now_ms as u64));
                let mut detail = reason.to_string();
                if locked {
                    detail.push_str("; the address is locked out");
                }
                self.event(session, "anonymous", "authenticate", claimed, Outcome::Denied, detail);
                Err(refuse(ErrorCode::Unauthenticated, format!("authentication failed: {reason}")))
            }
        }
    }

    fn verify(&self, credential: &Credential, now_ms: i64) -> Result<Principal, &'static str> {
        match credential {
            Credential::Token(token) => {
                if token.len() > CREDENTIAL_BYTES_MAX {
                    return Err("the token is too long");
                }
                let (id, secret) = token
                    .strip_prefix(TOKEN_PREFIX)
                    .and_then(|t| t.split_once('_'))
                    .ok_or("not a Silt token (silt_ID_SECRET)")?;
                let state = self.state.read().expect("auth lock");
                let stored = state.tokens.get(id).ok_or("unknown token")?;
                // Hashes compared without an early exit (the secret itself is never compared).
                let diff = stored.secret_sha256.iter().zip(sha256(secret)).fold(0u8, |d, (a, b)| d | (a ^ b));
                if diff != 0 {
                    return Err("unknown token");
                }
                token_live(stored, now_ms)?;
                if !state.users.contains_key(&stored.user) {
                    return Err("the token's user was removed");
                }
                Ok(Principal { name: format!("user:{}", stored.user), method: Method::Token(id.to_string()) })
            }
            Credential::Password { user, password } => {
                if user.len() > CREDENTIAL_BYTES_MAX || password.len() > CREDENTIAL_BYTES_MAX {
                    return Err("the user name or password is too long");
                }
                let hash =
                    self.state.read().expect("auth lock").users.get(user).map(|u| u.password_hash.clone());
                // Hash even for an unknown user, so that timing does not tell which users exist.
                let ok = match &hash {
                    Some(h) => verify_password(password, h),
                    None => {
                        let _ = hash_password(password);
                        false
                    }
                };
                if !ok {
                    return Err("wrong user name or password");
                }
                Ok(Principal { name: format!("user:{user}"), method: Method::Password })
            }
        }
    }

    /// Checks a bearer token of the admin port: valid, and its principal may `describe` `*`.
    /// Refusals are audited as `operation` by `remote`.
    pub fn check_bearer(
        &self,
        token: Option<&str>,
        remote: SocketAddr,
        operation: &str,
    ) -> Result<(), Refusal> {
        let session = self.session(Some(remote));
        let principal = match token {
            None => Err("no bearer token".to_string()),
            Some(t) => {
                self.verify(&Credential::Token(t.to_string()), crate::clock::now_ms()).map_err(String::from)
            }
        };
        let refusal = match principal {
            Ok(p) if self.allowed(&p, Operation::Describe, "*") => return Ok(()),
            Ok(p) => (p.name.clone(), format!("{} may not describe *", p.name)),
            Err(reason) => ("anonymous".to_string(), reason),
        };
        self.event(&session, &refusal.0, operation, String::new(), Outcome::Denied, refusal.1.clone());
        Err(refuse(ErrorCode::Unauthenticated, refusal.1))
    }

    /// The session's principal, still valid now: a revoked or expired token, or a removed
    /// user, ends the session's rights at its next request.
    pub fn current(&self, session: &Session, now_ms: i64) -> Result<Arc<Principal>, Refusal> {
        let Some(p) = session.principal() else {
            return Err(refuse(
                ErrorCode::Unauthenticated,
                "not authenticated: pass a token (--token, SILT_TOKEN or --token-file) or a user and password",
            ));
        };
        let state = self.state.read().expect("auth lock");
        let valid = match &p.method {
            Method::Token(id) => match state.tokens.get(id) {
                Some(t) => token_live(t, now_ms).and_then(|()| {
                    if state.users.contains_key(&t.user) {
                        Ok(())
                    } else {
                        Err("the token's user was removed")
                    }
                }),
                None => Err("the token is gone"),
            },
            Method::Password => {
                let user = p.name.strip_prefix("user:").unwrap_or("");
                if state.users.contains_key(user) {
                    Ok(())
                } else {
                    Err("the user was removed")
                }
            }
            Method::Certificate | Method::Open => Ok(()),
        };
        drop(state);
        match valid {
            Ok(()) => Ok(p),
            Err(reason) => {
                *session.principal.write().expect("session lock") = None;
                Err(refuse(ErrorCode::Unauthenticated, format!("{reason}; authenticate again")))
            }
        }
    }

    /// Whether `principal` may do `op` on `resource`.
    pub fn allowed(&self, principal: &Principal, op: Operation, resource: &str) -> bool {
        if principal.method == Method::Open {
            return true;
        }
        decide(&self.state.read().expect("auth lock").entries, &principal.name, op, resource)
    }

    /// The rights `request` needs that `principal` lacks, as a refusal; `None` when it may go.
    pub fn authorize(&self, principal: &Principal, request: &Request) -> Option<Refusal> {
        let denied = |op: Operation, resource: &str| {
            refuse(ErrorCode::PermissionDenied, format!("{} may not {op} {resource}", principal.name))
        };
        match rights::needs(request, &principal.name) {
            rights::Need::Authenticated => None,
            rights::Need::Internal(why) => Some(refuse(ErrorCode::PermissionDenied, why)),
            rights::Need::Rights(list) => {
                list.iter().find(|(op, r)| !self.allowed(principal, *op, r)).map(|(op, r)| denied(*op, r))
            }
            rights::Need::TokenOwner(id) => {
                let owner = self.state.read().expect("auth lock").tokens.get(&id).map(|t| t.user.clone());
                let resource = format!("user:{}", owner.as_deref().unwrap_or("*"));
                let own = owner.is_some_and(|o| principal.name == format!("user:{o}"));
                (!own && !self.allowed(principal, Operation::ManageAuth, &resource))
                    .then(|| denied(Operation::ManageAuth, &resource))
            }
        }
    }

    /// The entries that apply to `device:ID`, for a bridge to check the device's topics
    /// against; `None` with authentication off.
    pub fn device_rights(&self, id: &str) -> Option<Vec<AclEntry>> {
        if !self.config.enabled {
            return None;
        }
        Some(self.entries_of(&format!("device:{id}")))
    }

    /// The entries whose principal pattern matches `principal`.
    fn entries_of(&self, principal: &str) -> Vec<AclEntry> {
        let state = self.state.read().expect("auth lock");
        state
            .entries
            .iter()
            .filter(|e| silt_wire::auth::pattern_matches(&e.principal, principal))
            .cloned()
            .collect()
    }

    pub fn whoami(&self, principal: &Principal) -> WhoAmI {
        let method = match &principal.method {
            Method::Token(_) => "token",
            Method::Password => "password",
            Method::Certificate => "certificate",
            Method::Open => "none",
        };
        let entries = self.entries_of(&principal.name);
        WhoAmI { principal: principal.name.clone(), method: method.into(), entries }
    }

    fn add_user(&self, name: &str, password: &str, now_ms: i64) -> Result<(), Refusal> {
        check_user_name(name)?;
        check_password(password)?;
        let user =
            StoredUser { name: name.into(), password_hash: hash_password(password)?, created_ms: now_ms };
        self.apply_change(&changes::AuthChange::AddUser(seal(&user)))
    }

    /// Applies a new token's change and returns the whole token.
    fn apply_token(
        &self,
        (change, _, token): (changes::AuthChange, TokenInfo, String),
    ) -> Result<String, Refusal> {
        self.apply_change(&change)?;
        Ok(token)
    }

    fn grant(&self, entry: AclEntry) -> Result<(), Refusal> {
        self.apply_change(&changes::AuthChange::Grant(seal(&entry)))
    }

    /// A fresh token for `user`, named `name`, revoking earlier tokens of that user with the
    /// same name: for services the server binary starts beside the broker (the embedded
    /// bridge), which authenticate like any client.
    pub fn service_token(&self, user: &str, name: &str, entries: &[AclEntry]) -> anyhow::Result<String> {
        let now = crate::clock::now_ms();
        let exists = self.state.read().expect("auth lock").users.contains_key(user);
        if !exists {
            let password = random_hex(24)?;
            self.add_user(user, &password, now)?;
            for e in entries {
                self.grant(e.clone())?;
            }
        }
        let old: Vec<String> = self
            .state
            .read()
            .expect("auth lock")
            .tokens
            .values()
            .filter(|t| t.user == user && t.name == name && t.revoked_ms.is_none())
            .map(|t| t.id.clone())
            .collect();
        for id in old {
            self.revoke_token(&id, now)?;
        }
        Ok(self.apply_token(self.token_change(user, name, None, now, None)?)?)
    }

    fn revoke_token(&self, id: &str, now_ms: i64) -> Result<(), Refusal> {
        self.apply_change(&changes::AuthChange::RevokeToken { id: id.to_string(), revoked_ms: now_ms })
    }

    /// Answers the reads about principals and rights (after [`Auth::authorize`]); changes are
    /// decided and applied in `changes.rs`.
    fn read(&self, principal: &Principal, request: Request) -> Result<Response, Refusal> {
        match request {
            Request::WhoAmI => Ok(Response::Authenticated(self.whoami(principal))),
            Request::ListUsers => {
                let state = self.state.read().expect("auth lock");
                Ok(Response::Users(
                    state
                        .users
                        .values()
                        .map(|u| UserInfo { name: u.name.clone(), created_ms: u.created_ms })
                        .collect(),
                ))
            }
            Request::ListTokens { user } => {
                let state = self.state.read().expect("auth lock");
                let list = state
                    .tokens
                    .values()
                    .filter(|t| user.as_ref().is_none_or(|u| &t.user == u))
                    .map(token_info)
                    .collect();
                Ok(Response::Tokens(list))
            }
            Request::ListAcls { principal: filter } => {
                let state = self.state.read().expect("auth lock");
                let list = state
                    .entries
                    .iter()
                    .filter(|e| {
                        filter.as_ref().is_none_or(|p| {
                            silt_wire::auth::pattern_matches(&e.principal, p) || &e.principal == p
                        })
                    })
                    .cloned()
                    .collect();
                Ok(Response::Acls(list))
            }
            other => Err(Self::not_auth(&other)),
        }
    }
}

/// Writes `secret` to a new file readable by its owner only (0600), replacing an old one.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}
