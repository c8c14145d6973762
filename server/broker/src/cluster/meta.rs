//! The metadata group's state machine: the cluster's topics with the brokers keeping each
//! partition, its producer ids, its users, tokens and access-control entries, its devices
//! and its consumer groups' committed offsets. It keeps its state in memory and rebuilds it at start by
//! applying the group's whole log again (the group's log is never purged), so every change it
//! makes elsewhere on apply (a topic in the local store, a partition group started) is made so
//! that doing it twice is doing it once.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, StoredMembership};

use super::replica::NoSnapshots;
use super::types::{Command, Failure, MetaCommand, Reply, Types};

/// Where a topic's partitions live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub partitions: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub created_ms: i64,
    /// By partition: the nodes keeping it.
    pub replicas: Vec<Vec<u64>>,
}

/// The metadata as applied so far.
#[derive(Debug, Default)]
pub struct MetaState {
    pub topics: BTreeMap<String, Placement>,
    pub applied: Option<LogIdOf<Types>>,
    pub membership: StoredMembershipOf<Types>,
}

/// What applying metadata changes does outside the state machine.
pub trait MetaEffects: Send + Sync + 'static {
    /// A topic was created: make it in the local store if absent, and start the groups of
    /// the partitions this node keeps.
    fn topic(&self, name: &str, placement: &Placement);
    /// A producer id claim, decided against the ids applied before it.
    fn claim(&self, principal: &str, id: u64, fresh: bool, now_ms: i64) -> Reply;
    /// A change to users, tokens or entries.
    fn auth(&self, change: &crate::auth::changes::AuthChange) -> Reply;
    /// A consumer group's offsets, committed.
    fn commit_offsets(&self, group: &str, offsets: &[(String, u32, u64)]) -> Reply;
    /// A change to a device's entry.
    fn device(&self, id: &str, change: &crate::devices::DeviceChange) -> Reply;
}

pub struct MetaMachine {
    state: Arc<RwLock<MetaState>>,
    effects: Arc<dyn MetaEffects>,
}

impl MetaMachine {
    pub fn new(state: Arc<RwLock<MetaState>>, effects: Arc<dyn MetaEffects>) -> MetaMachine {
        MetaMachine { state, effects }
    }

    fn apply_command(&self, command: MetaCommand) -> Reply {
        match command {
            MetaCommand::CreateTopic {
                name,
                partitions,
                retention_ms,
                retention_bytes,
                created_ms,
                replicas,
            } => {
                let placement = Placement { partitions, retention_ms, retention_bytes, created_ms, replicas };
                {
                    let mut state = self.state.write().expect("metadata lock");
                    if state.topics.contains_key(&name) {
                        return Reply::Failed {
                            failure: Failure::TopicExists,
                            message: format!("topic {name:?} already exists"),
                        };
                    }
                    state.topics.insert(name.clone(), placement.clone());
                }
                self.effects.topic(&name, &placement);
                Reply::None
            }
            MetaCommand::ClaimProducer { id, fresh, principal, now_ms } => {
                self.effects.claim(&principal, id, fresh, now_ms)
            }
            MetaCommand::Auth(change) => self.effects.auth(&change),
            MetaCommand::CommitOffsets { group, offsets } => self.effects.commit_offsets(&group, &offsets),
            MetaCommand::Device { id, change } => self.effects.device(&id, &change),
        }
    }
}

impl RaftStateMachine<Types> for MetaMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<Types>>, StoredMembershipOf<Types>), io::Error> {
        let state = self.state.read().expect("metadata lock");
        Ok((state.applied, state.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<Types>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let reply = match entry.payload {
                EntryPayload::Normal(Command::Meta(command)) => self.apply_command(command),
                EntryPayload::Normal(Command::Append { .. }) => Reply::Failed {
                    failure: Failure::InvalidRequest,
                    message: "an append in the metadata group".into(),
                },
                EntryPayload::Membership(m) => {
                    self.state.write().expect("metadata lock").membership =
                        StoredMembership::new(Some(entry.log_id), m);
                    Reply::None
                }
                EntryPayload::Blank => Reply::None,
            };
            self.state.write().expect("metadata lock").applied = Some(entry.log_id);
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        Ok(())
    }

    super::replica::no_snapshots!();
}
