//! Each connection's memory of the produces and fetches it was allowed, so that a stream of
//! them is authorized once per topic rather than once per request (replays send many small
//! fetches; deciding each in full cost 8 % of a four-partition replay).
//!
//! A remembered decision holds only while nothing that could change it happened: `Auth`
//! counts every change of users, tokens and entries (`generation`), and a decision is used only
//! at the generation it was made at, for the same principal of the session, before its token
//! expires. Only allows are remembered, and only for a produce or a fetch without a processor
//! (whose rights are its topic's alone); everything else, and every refusal, is decided in full.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use silt_wire::Request;

use super::{Auth, Method, Principal, Session};

/// Topics remembered per connection and direction at most; past it, decisions are not kept.
const TOPICS_MAX: usize = 1024;

#[derive(Debug, Default)]
pub struct Decisions {
    generation: u64,
    principal: Option<Arc<Principal>>,
    /// When the principal's credential expires (its token's expiry), else `i64::MAX`.
    until_ms: i64,
    produce: HashSet<String>,
    consume: HashSet<String>,
}

/// Whether a request's decision may be remembered: its direction (produce or not) and topic.
fn rememberable(request: &Request) -> Option<(bool, &str)> {
    match request {
        Request::Produce { topic, .. } => Some((true, topic)),
        Request::Fetch { topic, processor: None, .. } => Some((false, topic)),
        _ => None,
    }
}

impl Auth {
    /// The count of changes so far; read before deciding in full, and passed to [`Auth::remember`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The session's principal, when this connection was allowed `request` before and nothing
    /// that could change the decision happened since; `None`: decide in full.
    pub fn decided(&self, session: &Session, request: &Request, now_ms: i64) -> Option<Arc<Principal>> {
        let (produce, topic) = rememberable(request)?;
        let principal = session.principal()?;
        let d = session.decisions.lock().expect("decisions lock");
        let fresh = d.generation == self.generation()
            && now_ms < d.until_ms
            && d.principal.as_ref().is_some_and(|p| Arc::ptr_eq(p, &principal));
        let known = if produce { d.produce.contains(topic) } else { d.consume.contains(topic) };
        (fresh && known).then_some(principal)
    }

    /// Remembers that `principal` was allowed `request` on `session`, decided in full against
    /// the state at `generation` (read before the decision began).
    pub fn remember(
        &self,
        session: &Session,
        principal: &Arc<Principal>,
        request: &Request,
        generation: u64,
    ) {
        let Some((produce, topic)) = rememberable(request) else {
            return;
        };
        let until_ms = match &principal.method {
            Method::Token(id) => {
                let state = self.state.read().expect("auth lock");
                state.tokens.get(id).and_then(|t| t.expires_ms).unwrap_or(i64::MAX)
            }
            _ => i64::MAX,
        };
        let mut d = session.decisions.lock().expect("decisions lock");
        let same =
            d.generation == generation && d.principal.as_ref().is_some_and(|p| Arc::ptr_eq(p, principal));
        if !same {
            *d = Decisions {
                generation,
                principal: Some(principal.clone()),
                until_ms,
                ..Decisions::default()
            };
        }
        let topics = if produce { &mut d.produce } else { &mut d.consume };
        if topics.len() < TOPICS_MAX && !topics.contains(topic) {
            topics.insert(topic.to_string());
        }
    }
}
