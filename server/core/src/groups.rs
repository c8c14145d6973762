//! Consumer-group membership: a plain state machine over explicit time.
//!
//! The broker assigns partitions itself (round-robin over members sorted by id), so a member
//! learns its share from the join or heartbeat response. Any membership change bumps the
//! group's generation; members see the new generation on their next heartbeat and switch to
//! the new assignment. Members that miss heartbeats for their session timeout are expired.
//! Membership lives in memory only: after a broker restart members simply join again, while
//! committed offsets are stored durably by `silt-storage`.

use std::collections::{BTreeMap, HashMap};

use silt_wire::TopicPartition;

/// Shortest and longest session timeout accepted from clients.
pub const SESSION_TIMEOUT_MS_MIN: u32 = 1_000;
pub const SESSION_TIMEOUT_MS_MAX: u32 = 300_000;

#[derive(Debug)]
struct Member {
    topics: Vec<String>,
    session_timeout_ms: u64,
    last_seen_ms: u64,
}

#[derive(Debug, Default)]
struct Group {
    generation: u64,
    members: BTreeMap<String, Member>,
    assignment: HashMap<String, Vec<TopicPartition>>,
}

/// Why a group call failed.
#[derive(Debug, PartialEq, Eq)]
pub enum GroupError {
    UnknownMember,
    TooManyMembers,
}

/// All groups of one broker.
#[derive(Debug)]
pub struct Coordinator {
    groups: HashMap<String, Group>,
    next_member: u64,
    members_max: usize,
}

/// A join request.
#[derive(Debug, Clone)]
pub struct Join {
    /// The id of a member rejoining; `None` for a new member.
    pub member_id: Option<String>,
    pub topics: Vec<String>,
    pub session_timeout_ms: u32,
}

/// A member's view after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub member_id: String,
    pub generation: u64,
    pub assignment: Vec<TopicPartition>,
}

impl Coordinator {
    /// A coordinator admitting at most `members_max` members per group.
    pub fn new(members_max: usize) -> Coordinator {
        Coordinator { groups: HashMap::new(), next_member: 0, members_max }
    }

    /// Adds a member (or refreshes one that rejoins with its id) and rebalances.
    /// `partitions_of` gives the partition count of a topic (0 when it does not exist).
    pub fn join(
        &mut self,
        now_ms: u64,
        group: &str,
        join: Join,
        partitions_of: impl Fn(&str) -> u32,
    ) -> Result<MemberState, GroupError> {
        let Join { member_id, topics, session_timeout_ms } = join;
        let members_max = self.members_max;
        let g = self.groups.entry(group.to_string()).or_default();
        let id = match member_id {
            Some(id) if g.members.contains_key(&id) => id,
            _ => {
                if g.members.len() >= members_max {
                    return Err(GroupError::TooManyMembers);
                }
                self.next_member += 1;
                format!("{group}-{now_ms:x}-{}", self.next_member)
            }
        };
        let timeout = u64::from(session_timeout_ms.clamp(SESSION_TIMEOUT_MS_MIN, SESSION_TIMEOUT_MS_MAX));
        let changed = match g.members.get(&id) {
            Some(m) => m.topics != topics,
            None => true,
        };
        g.members.insert(id.clone(), Member { topics, session_timeout_ms: timeout, last_seen_ms: now_ms });
        if changed {
            rebalance(g, &partitions_of);
        }
        Ok(state(g, &id))
    }

    /// Records a heartbeat and returns the member's current generation and assignment.
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        group: &str,
        member_id: &str,
    ) -> Result<MemberState, GroupError> {
        let g = self.groups.get_mut(group).ok_or(GroupError::UnknownMember)?;
        let m = g.members.get_mut(member_id).ok_or(GroupError::UnknownMember)?;
        m.last_seen_ms = now_ms;
        Ok(state(g, member_id))
    }

    /// Removes a member and rebalances the rest.
    pub fn leave(
        &mut self,
        group: &str,
        member_id: &str,
        partitions_of: impl Fn(&str) -> u32,
    ) -> Result<(), GroupError> {
        let g = self.groups.get_mut(group).ok_or(GroupError::UnknownMember)?;
        g.members.remove(member_id).ok_or(GroupError::UnknownMember)?;
        rebalance(g, &partitions_of);
        if g.members.is_empty() {
            self.groups.remove(group);
        }
        Ok(())
    }

    /// True when `member_id` is a current member of `group`.
    pub fn is_member(&self, group: &str, member_id: &str) -> bool {
        self.groups.get(group).is_some_and(|g| g.members.contains_key(member_id))
    }

    /// Expires members whose session timed out; returns how many were removed.
    pub fn expire(&mut self, now_ms: u64, partitions_of: impl Fn(&str) -> u32) -> usize {
        let mut removed = 0;
        for g in self.groups.values_mut() {
            let before = g.members.len();
            g.members.retain(|_, m| now_ms.saturating_sub(m.last_seen_ms) <= m.session_timeout_ms);
            if g.members.len() != before {
                removed += before - g.members.len();
                rebalance(g, &partitions_of);
            }
        }
        self.groups.retain(|_, g| !g.members.is_empty());
        removed
    }

    /// Rebalances every group that reads `topic` (after it was created or deleted).
    pub fn topic_changed(&mut self, topic: &str, partitions_of: impl Fn(&str) -> u32) {
        for g in self.groups.values_mut() {
            if g.members.values().any(|m| m.topics.iter().any(|t| t == topic)) {
                rebalance(g, &partitions_of);
            }
        }
    }
}

fn state(g: &Group, id: &str) -> MemberState {
    MemberState {
        member_id: id.to_string(),
        generation: g.generation,
        assignment: g.assignment.get(id).cloned().unwrap_or_default(),
    }
}

/// Round-robin of every subscribed partition over the members that subscribe to its topic,
/// members in id order, so the result depends only on membership.
fn rebalance(g: &mut Group, partitions_of: &impl Fn(&str) -> u32) {
    g.generation += 1;
    g.assignment.clear();
    let mut topics: Vec<&String> = g.members.values().flat_map(|m| m.topics.iter()).collect();
    topics.sort();
    topics.dedup();
    for topic in topics {
        let readers: Vec<&String> =
            g.members.iter().filter(|(_, m)| m.topics.contains(topic)).map(|(id, _)| id).collect();
        for p in 0..partitions_of(topic) {
            let owner = readers[p as usize % readers.len()];
            g.assignment
                .entry(owner.clone())
                .or_default()
                .push(TopicPartition { topic: topic.clone(), partition: p });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four(_: &str) -> u32 {
        4
    }

    fn join(member_id: Option<String>, topics: Vec<String>) -> Join {
        Join { member_id, topics, session_timeout_ms: 10_000 }
    }

    fn all(c: &mut Coordinator, now: u64, ids: &[&str]) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> =
            ids.iter().flat_map(|id| c.heartbeat(now, "g", id).unwrap().assignment).collect();
        v.sort();
        v
    }

    /// Every partition is owned by exactly one member, through joins, leaves and expiry.
    #[test]
    fn assignment_covers_each_partition_once() {
        let mut c = Coordinator::new(10);
        let a = c.join(0, "g", join(None, vec!["t".into()]), four).unwrap();
        assert_eq!(a.assignment.len(), 4);
        let b = c.join(1, "g", join(None, vec!["t".into()]), four).unwrap();
        assert!(b.generation > a.generation);
        let got = all(&mut c, 2, &[&a.member_id, &b.member_id]);
        let want: Vec<_> = (0..4).map(|p| TopicPartition { topic: "t".into(), partition: p }).collect();
        assert_eq!(got, want);
        // b keeps heartbeating, a goes silent and expires: b owns everything.
        c.heartbeat(9_000, "g", &b.member_id).unwrap();
        assert_eq!(c.expire(12_000, four), 1);
        assert_eq!(c.heartbeat(12_000, "g", &b.member_id).unwrap().assignment.len(), 4);
        assert_eq!(c.heartbeat(12_000, "g", &a.member_id), Err(GroupError::UnknownMember));
        c.leave("g", &b.member_id, four).unwrap();
        assert!(!c.is_member("g", &b.member_id));
    }

    /// A rejoin with the same id and topics keeps the generation (no needless rebalance).
    #[test]
    fn rejoin_is_stable() {
        let mut c = Coordinator::new(10);
        let a = c.join(0, "g", join(None, vec!["t".into()]), four).unwrap();
        let again = c.join(5, "g", join(Some(a.member_id.clone()), vec!["t".into()]), four).unwrap();
        assert_eq!(again, a);
        let mut full = Coordinator::new(1);
        full.join(0, "g", join(None, vec![]), four).unwrap();
        assert_eq!(full.join(6, "g", join(None, vec![]), four), Err(GroupError::TooManyMembers));
    }
}
