//! Changes to principals and rights as values. The broker that takes a request decides it
//! against its state (checks, password hashes and token secrets made there) and applies the
//! change with [`Auth::apply_change`]: at once when it runs alone; in a cluster every broker
//! applies it, in the order of the metadata group's log, so that users, tokens and entries are
//! the same everywhere. A change carries its records sealed as the store keeps them (checksummed),
//! and never a password or a token's secret.

use serde::{Deserialize, Serialize};
use silt_storage::records::{acl_key, open, seal, StoredToken, StoredUser};
use silt_storage::AuthTree;
use silt_wire::auth::check_entry;
use silt_wire::{AclEntry, ErrorCode, Request, Response};

use super::{
    check_password, check_user_name, hash_password, random_hex, refuse, rights, sha256, storage, token_info,
    Auth, Principal, Refusal, TOKEN_PREFIX,
};

/// One change to principals and rights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AuthChange {
    /// A sealed `StoredUser`, refused when the user exists.
    AddUser(Vec<u8>),
    /// A sealed `StoredUser` with a new password hash, refused when the user does not exist.
    SetPassword(Vec<u8>),
    /// The user, its tokens and the entries of `user:NAME`.
    RemoveUser(String),
    /// A sealed `StoredToken`, refused when its user does not exist or its id is taken.
    AddToken(Vec<u8>),
    RevokeToken {
        id: String,
        revoked_ms: i64,
    },
    /// A sealed `AclEntry`.
    Grant(Vec<u8>),
    Revoke(Vec<u8>),
}

/// What a request about principals and rights comes to.
pub enum Decided {
    /// A read, answered from the state.
    Answer(Response),
    /// A change, and the answer to give once it is applied.
    Change(AuthChange, Response),
}

fn unsealed<T>(what: &str, bytes: &[u8]) -> Result<T, Refusal>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    open(what, bytes).map_err(storage)
}

impl Auth {
    /// Decides a request about principals and rights (after [`Auth::authorize`]).
    pub fn decide(&self, principal: &Principal, request: Request, now_ms: i64) -> Result<Decided, Refusal> {
        let state = self.state.read().expect("auth lock");
        let change = |change, answer| Ok(Decided::Change(change, answer));
        match request {
            Request::AddUser { name, password } => {
                check_user_name(&name)?;
                check_password(&password)?;
                if state.users.contains_key(&name) {
                    return Err(refuse(ErrorCode::UserExists, format!("user {name:?} exists")));
                }
                let user = StoredUser {
                    name: name.clone(),
                    password_hash: hash_password(&password)?,
                    created_ms: now_ms,
                };
                change(
                    AuthChange::AddUser(seal(&user)),
                    Response::User(silt_wire::auth::UserInfo { name, created_ms: now_ms }),
                )
            }
            Request::RemoveUser { name } => {
                if !state.users.contains_key(&name) {
                    return Err(refuse(ErrorCode::UnknownUser, format!("no user {name:?}")));
                }
                change(AuthChange::RemoveUser(name), Response::Done)
            }
            Request::SetPassword { name, password } => {
                check_password(&password)?;
                let user = state
                    .users
                    .get(&name)
                    .ok_or_else(|| refuse(ErrorCode::UnknownUser, format!("no user {name:?}")))?;
                let changed = StoredUser { password_hash: hash_password(&password)?, ..user.clone() };
                change(AuthChange::SetPassword(seal(&changed)), Response::Done)
            }
            Request::CreateToken { user, name, expires_ms } => {
                let expires =
                    expires_ms.map(|ms| now_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)));
                drop(state);
                let (change, info, secret) = self.token_change(&user, &name, expires, now_ms, None)?;
                Ok(Decided::Change(change, Response::Token { info, secret: Some(secret) }))
            }
            Request::RevokeToken { id } => {
                let token = state
                    .tokens
                    .get(&id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownToken, format!("no token {id:?}")))?;
                if token.revoked_ms.is_some() {
                    return Ok(Decided::Answer(Response::Token { info: token_info(token), secret: None }));
                }
                let revoked = StoredToken { revoked_ms: Some(now_ms), ..token.clone() };
                change(
                    AuthChange::RevokeToken { id, revoked_ms: now_ms },
                    Response::Token { info: token_info(&revoked), secret: None },
                )
            }
            Request::GrantAcl { entry } => {
                check_entry(&entry).map_err(|e| refuse(ErrorCode::InvalidRequest, e))?;
                change(AuthChange::Grant(seal(&entry)), Response::Done)
            }
            Request::RevokeAcl { entry } => {
                if !state.entries.contains(&entry) {
                    return Err(refuse(ErrorCode::InvalidRequest, "no such entry"));
                }
                change(AuthChange::Revoke(seal(&entry)), Response::Done)
            }
            other => {
                drop(state);
                self.read(principal, other).map(Decided::Answer)
            }
        }
    }

    /// A new token `silt_ID_SECRET` for `user` (the id and secret given, or random), its
    /// description and the whole token.
    pub(super) fn token_change(
        &self,
        user: &str,
        name: &str,
        expires_ms: Option<i64>,
        now_ms: i64,
        given: Option<(String, String)>,
    ) -> Result<(AuthChange, silt_wire::auth::TokenInfo, String), Refusal> {
        if name.is_empty() || name.len() > 64 {
            return Err(refuse(ErrorCode::InvalidRequest, "a token name must be 1 to 64 bytes long"));
        }
        if !self.state.read().expect("auth lock").users.contains_key(user) {
            return Err(refuse(ErrorCode::UnknownUser, format!("no user {user:?}")));
        }
        let (id, secret) = match given {
            Some(given) => given,
            None => (random_hex(6)?, random_hex(32)?),
        };
        let token = StoredToken {
            id: id.clone(),
            name: name.into(),
            user: user.into(),
            secret_sha256: sha256(&secret),
            created_ms: now_ms,
            expires_ms,
            revoked_ms: None,
        };
        Ok((AuthChange::AddToken(seal(&token)), token_info(&token), format!("{TOKEN_PREFIX}{id}_{secret}")))
    }

    /// Applies a decided change: durable in the store (flushed), then in the state. Refused,
    /// with nothing changed, when the state no longer allows it (a user added meanwhile, say).
    pub fn apply_change(&self, change: &AuthChange) -> Result<(), Refusal> {
        let mut state = self.write_state();
        match change {
            AuthChange::AddUser(sealed) => {
                let user: StoredUser = unsealed("user", sealed)?;
                check_user_name(&user.name)?;
                if state.users.contains_key(&user.name) {
                    return Err(refuse(ErrorCode::UserExists, format!("user {:?} exists", user.name)));
                }
                self.store.auth_put(AuthTree::Users, user.name.as_bytes(), sealed).map_err(storage)?;
                self.store.flush().map_err(storage)?;
                state.users.insert(user.name.clone(), user);
            }
            AuthChange::SetPassword(sealed) => {
                let user: StoredUser = unsealed("user", sealed)?;
                if !state.users.contains_key(&user.name) {
                    return Err(refuse(ErrorCode::UnknownUser, format!("no user {:?}", user.name)));
                }
                self.store.auth_put(AuthTree::Users, user.name.as_bytes(), sealed).map_err(storage)?;
                self.store.flush().map_err(storage)?;
                state.users.insert(user.name.clone(), user);
            }
            AuthChange::RemoveUser(name) => {
                if !state.users.contains_key(name) {
                    return Err(refuse(ErrorCode::UnknownUser, format!("no user {name:?}")));
                }
                let principal_name = format!("user:{name}");
                let gone_entries: Vec<AclEntry> =
                    state.entries.iter().filter(|e| e.principal == principal_name).cloned().collect();
                let gone_tokens: Vec<String> =
                    state.tokens.values().filter(|t| &t.user == name).map(|t| t.id.clone()).collect();
                for e in &gone_entries {
                    self.store.auth_remove(AuthTree::Acls, &acl_key(e)).map_err(storage)?;
                }
                for id in &gone_tokens {
                    self.store.auth_remove(AuthTree::Tokens, id.as_bytes()).map_err(storage)?;
                }
                self.store.auth_remove(AuthTree::Users, name.as_bytes()).map_err(storage)?;
                self.store.flush().map_err(storage)?;
                for e in &gone_entries {
                    state.entries.remove(e);
                }
                for id in &gone_tokens {
                    state.tokens.remove(id);
                }
                state.users.remove(name);
            }
            AuthChange::AddToken(sealed) => {
                let token: StoredToken = unsealed("token", sealed)?;
                if !state.users.contains_key(&token.user) {
                    return Err(refuse(ErrorCode::UnknownUser, format!("no user {:?}", token.user)));
                }
                if !self
                    .store
                    .auth_insert_new(AuthTree::Tokens, token.id.as_bytes(), sealed)
                    .map_err(storage)?
                {
                    return Err(storage("token id collision; try again"));
                }
                self.store.flush().map_err(storage)?;
                state.tokens.insert(token.id.clone(), token);
            }
            AuthChange::RevokeToken { id, revoked_ms } => {
                let token = state
                    .tokens
                    .get_mut(id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownToken, format!("no token {id:?}")))?;
                if token.revoked_ms.is_none() {
                    let revoked = StoredToken { revoked_ms: Some(*revoked_ms), ..token.clone() };
                    self.store.auth_put(AuthTree::Tokens, id.as_bytes(), &seal(&revoked)).map_err(storage)?;
                    self.store.flush().map_err(storage)?;
                    *token = revoked;
                }
            }
            AuthChange::Grant(sealed) => {
                let entry: AclEntry = unsealed("access-control entry", sealed)?;
                check_entry(&entry).map_err(|e| refuse(ErrorCode::InvalidRequest, e))?;
                self.store.auth_put(AuthTree::Acls, &acl_key(&entry), sealed).map_err(storage)?;
                self.store.flush().map_err(storage)?;
                state.entries.insert(entry);
            }
            AuthChange::Revoke(sealed) => {
                let entry: AclEntry = unsealed("access-control entry", sealed)?;
                if !state.entries.contains(&entry) {
                    return Err(refuse(ErrorCode::InvalidRequest, "no such entry"));
                }
                self.store.auth_remove(AuthTree::Acls, &acl_key(&entry)).map_err(storage)?;
                self.store.flush().map_err(storage)?;
                state.entries.remove(&entry);
            }
        }
        Ok(())
    }

    /// Answers a request about principals and rights on a broker running alone: decided and
    /// applied here.
    pub fn handle(&self, principal: &Principal, request: Request, now_ms: i64) -> Result<Response, Refusal> {
        match self.decide(principal, request, now_ms)? {
            Decided::Answer(answer) => Ok(answer),
            Decided::Change(change, answer) => {
                self.apply_change(&change)?;
                Ok(answer)
            }
        }
    }

    /// The name of a request that is not about principals and rights, refused.
    pub(super) fn not_auth(request: &Request) -> Refusal {
        refuse(ErrorCode::InvalidRequest, format!("{} is not an auth request", rights::name(request)))
    }
}
