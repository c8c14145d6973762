//! Principals and rights: who am I, users, API tokens and access-control entries.

use bytes::Bytes;
use silt_wire::auth::{TokenInfo, UserInfo, WhoAmI};
use silt_wire::{AclEntry, Request, Response};

use crate::connection::{unexpected, Client};
use crate::ClientError;

impl Client {
    async fn call(&self, request: Request) -> Result<Response, ClientError> {
        Ok(self.request(&request, Bytes::new()).await?.0)
    }

    async fn done(&self, request: Request) -> Result<(), ClientError> {
        match self.call(request).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Who the broker takes this client for, with the entries that apply to it.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        match self.call(Request::WhoAmI).await? {
            Response::Authenticated(w) => Ok(w),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates a user with a password (at least 8 bytes).
    pub async fn add_user(&self, name: &str, password: &str) -> Result<UserInfo, ClientError> {
        match self.call(Request::AddUser { name: name.into(), password: password.into() }).await? {
            Response::User(u) => Ok(u),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>, ClientError> {
        match self.call(Request::ListUsers).await? {
            Response::Users(u) => Ok(u),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes a user with its tokens and entries.
    pub async fn remove_user(&self, name: &str) -> Result<(), ClientError> {
        self.done(Request::RemoveUser { name: name.into() }).await
    }

    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), ClientError> {
        self.done(Request::SetPassword { name: name.into(), password: password.into() }).await
    }

    /// Makes a token for `user`; returns it with its secret, the whole token a client passes.
    pub async fn create_token(
        &self,
        user: &str,
        name: &str,
        expires_ms: Option<u64>,
    ) -> Result<(TokenInfo, String), ClientError> {
        match self.call(Request::CreateToken { user: user.into(), name: name.into(), expires_ms }).await? {
            Response::Token { info, secret: Some(secret) } => Ok((info, secret)),
            other => Err(unexpected(&other)),
        }
    }

    /// Tokens of `user`, or of every user.
    pub async fn list_tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>, ClientError> {
        match self.call(Request::ListTokens { user: user.map(Into::into) }).await? {
            Response::Tokens(t) => Ok(t),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ClientError> {
        match self.call(Request::RevokeToken { id: id.into() }).await? {
            Response::Token { info, .. } => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn grant_acl(&self, entry: AclEntry) -> Result<(), ClientError> {
        self.done(Request::GrantAcl { entry }).await
    }

    pub async fn revoke_acl(&self, entry: AclEntry) -> Result<(), ClientError> {
        self.done(Request::RevokeAcl { entry }).await
    }

    /// Entries of principals matching `principal`, or every entry.
    pub async fn list_acls(&self, principal: Option<&str>) -> Result<Vec<AclEntry>, ClientError> {
        match self.call(Request::ListAcls { principal: principal.map(Into::into) }).await? {
            Response::Acls(a) => Ok(a),
            other => Err(unexpected(&other)),
        }
    }
}
