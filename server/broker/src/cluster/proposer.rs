//! Proposals to one group, in order: a task per group takes what is queued, submits it to the
//! group here when this broker leads it, or sends it in one call to the broker that does, and
//! retries what no leader took until the proposal's deadline. One round is in flight at a time
//! when forwarding, so a stream's batches reach the leader in the order they were sent.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::errors::ClientWriteError;
use openraft::impls::ProgressResponder;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::net::{Proposed, Rpc, RpcReply};
use super::types::{Command, GroupId, Reply};
use super::{Cluster, ProposeError, Raft, PROPOSAL_TIMEOUT};

/// Proposals waiting for their group's task, at most.
const QUEUE_MAX: usize = 1024;
/// Proposals one round takes, at most.
const ROUND_MAX: usize = 256;

type Outcome = Result<(Reply, u64), ProposeError>;

struct Job {
    command: Command,
    deadline: Instant,
    done: oneshot::Sender<Outcome>,
}

/// The queue of one group's proposals.
pub struct Proposer {
    queue: mpsc::Sender<Job>,
}

impl Proposer {
    pub fn start(cluster: Weak<Cluster>, group: GroupId) -> Arc<Proposer> {
        let (queue, jobs) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(cluster, group, jobs));
        Arc::new(Proposer { queue })
    }

    /// Queues a proposal (waiting while the queue is full) and returns where its outcome
    /// arrives.
    pub async fn submit(&self, command: Command) -> oneshot::Receiver<Outcome> {
        let (done, outcome) = oneshot::channel();
        let job = Job { command, deadline: Instant::now() + PROPOSAL_TIMEOUT, done };
        if let Err(mpsc::error::SendError(job)) = self.queue.send(job).await {
            let _ = job.done.send(Err(ProposeError::Unavailable("the broker is stopping".into())));
        }
        outcome
    }
}

async fn run(cluster: Weak<Cluster>, group: GroupId, mut queue: mpsc::Receiver<Job>) {
    let mut jobs: VecDeque<Job> = VecDeque::new();
    let mut leader_hint: Option<u64> = None;
    let mut tries_without_leader = 0u32;
    loop {
        if jobs.is_empty() {
            match queue.recv().await {
                Some(job) => jobs.push_back(job),
                None => return,
            }
        }
        while jobs.len() < ROUND_MAX {
            match queue.try_recv() {
                Ok(job) => jobs.push_back(job),
                Err(_) => break,
            }
        }
        let Some(cluster) = cluster.upgrade() else { return };
        let now = Instant::now();
        while jobs.front().is_some_and(|j| j.deadline <= now) {
            let job = jobs.pop_front().expect("checked");
            let why = format!("no leader of {group} took the proposal within {PROPOSAL_TIMEOUT:?}");
            let _ = job.done.send(Err(ProposeError::Unavailable(why)));
        }
        if jobs.is_empty() {
            continue;
        }
        let round: Vec<Job> = jobs.drain(..jobs.len().min(ROUND_MAX)).collect();
        // The jobs keep their commands for a retry; these copies go to the leader, here or
        // on another broker, chosen first so that they are made once.
        let commands: Vec<Command> = round.iter().map(|j| j.command.clone()).collect();
        let me = cluster.node_id();
        let (here, forward_to) = match cluster.leader_seen(&group) {
            Some(leader) => (leader == Some(me), leader.filter(|l| *l != me)),
            None => {
                let ask = leader_hint.filter(|l| *l != me);
                (false, ask.or_else(|| cluster.some_replica(&group, tries_without_leader)))
            }
        };
        let outcomes = match forward_to {
            Some(target) => {
                match cluster.net.call(target, &Rpc::Propose(group.clone(), commands), PROPOSAL_TIMEOUT).await
                {
                    Ok(RpcReply::Proposed(outcomes)) if outcomes.len() == round.len() => outcomes,
                    Ok(_) | Err(_) => {
                        leader_hint = None;
                        vec![Proposed::NotLeader(None); round.len()]
                    }
                }
            }
            None if here => propose_here(&cluster, &group, commands).await,
            // No leader known yet: wait for an election.
            None => vec![Proposed::NotLeader(None); round.len()],
        };
        let mut retry: Vec<Job> = Vec::new();
        for (job, outcome) in round.into_iter().zip(outcomes) {
            if !retry.is_empty() {
                // Keep the order: once one waits, the ones after it wait too.
                retry.push(job);
                continue;
            }
            match outcome {
                Proposed::Done { reply, index } => {
                    let _ = job.done.send(Ok((reply, index)));
                }
                Proposed::NotLeader(hint) => {
                    leader_hint = hint.or(forward_to);
                    retry.push(job);
                }
                Proposed::Failed(why) => {
                    let _ = job.done.send(Err(ProposeError::Unavailable(why)));
                }
            }
        }
        if !retry.is_empty() {
            tries_without_leader = tries_without_leader.saturating_add(1);
            for job in retry.into_iter().rev() {
                jobs.push_front(job);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        } else {
            tries_without_leader = 0;
        }
    }
}

/// Submits `commands` to the group on this broker, in order, and waits for each: applied
/// (`Done`), refused because another broker leads (`NotLeader`), or failed.
pub async fn propose_here(cluster: &Arc<Cluster>, group: &GroupId, commands: Vec<Command>) -> Vec<Proposed> {
    match cluster.raft_of(group) {
        Some(raft) => super::on_raft!(raft, r => submit(&r, commands).await),
        None => vec![Proposed::NotLeader(None); commands.len()],
    }
}

async fn submit<SM>(raft: &openraft::Raft<super::types::Types, SM>, commands: Vec<Command>) -> Vec<Proposed>
where
    SM: openraft::storage::RaftStateMachine<super::types::Types>,
{
    let mut waiting = Vec::with_capacity(commands.len());
    for command in commands {
        let (responder, outcome) = ProgressResponder::complete_only();
        match raft.write(command).responder(responder).await {
            Ok(()) => waiting.push(Some(outcome)),
            Err(_) => waiting.push(None),
        }
    }
    let mut out = Vec::with_capacity(waiting.len());
    for outcome in waiting {
        out.push(match outcome {
            None => Proposed::Failed("the group stopped".into()),
            Some(outcome) => match outcome.await {
                Ok(Ok(written)) => Proposed::Done { reply: written.data, index: written.log_id.index },
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => Proposed::NotLeader(f.leader_id),
                // The entry may still commit elsewhere: sent again, a batch is deduplicated by
                // its producer sequence.
                Ok(Err(ClientWriteError::LogEntryDiscarded(f))) => Proposed::NotLeader(f.leader_id),
                Ok(Err(e)) => Proposed::Failed(e.to_string()),
                Err(_) => Proposed::NotLeader(None),
            },
        });
    }
    out
}
