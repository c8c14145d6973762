//! Authentication below the request level: client certificates (mTLS) and connections refused
//! or failed before any request, each audited.

use std::net::SocketAddr;
use std::sync::Arc;

use super::audit::Outcome;
use super::{check_user_name, Auth, Method, Principal, Session};

impl Auth {
    /// Makes a connection whose client certificate chained to a configured CA act as the
    /// principal the certificate names (`user:NAME`; `None`: it names none usable).
    pub fn authenticate_certificate(&self, session: &Session, principal: Option<String>) {
        if !self.config.enabled {
            return;
        }
        let usable =
            principal.filter(|p| p.strip_prefix("user:").is_some_and(|n| check_user_name(n).is_ok()));
        match usable {
            Some(name) => {
                self.event(session, &name, "authenticate", name.clone(), Outcome::Ok, "certificate".into());
                let principal = Principal { name, method: Method::Certificate };
                *session.principal.write().expect("session lock") = Some(Arc::new(principal));
            }
            None => self.event(
                session,
                "anonymous",
                "authenticate",
                "certificate".into(),
                Outcome::Denied,
                "the client certificate names no usable DNS name or common name".into(),
            ),
        }
    }

    /// Audits a connection whose TLS handshake failed (a client certificate of a CA the broker
    /// does not trust, say).
    pub fn handshake_failed(&self, remote: SocketAddr, reason: String) {
        let session = self.session(Some(remote));
        self.event(&session, "anonymous", "authenticate", "certificate".into(), Outcome::Denied, reason);
    }

    /// Audits a connection refused before its handshake.
    pub fn refused_connection(&self, remote: SocketAddr, reason: &str) {
        let session = self.session(Some(remote));
        self.event(&session, "anonymous", "connect", String::new(), Outcome::Denied, reason.into());
    }
}
