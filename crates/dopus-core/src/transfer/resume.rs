//! Resume bookkeeping: which verified groups are durable, and when to make more of them so.
//!
//! A verified group is durable once its bytes and its proof hashes are on disk (fsync of the
//! blob and the outboard files) *and* the store says it is verified. The store is written in
//! batches, because a commit of the encrypted store costs far more than a group's work
//! (ARCHITECTURE.md, "why batch everywhere"): every [`CommitPolicy::every_bytes`] or
//! [`CommitPolicy::every_ms`], whichever comes first, and at pause, completion and shutdown.
//!
//! Order matters: sync the files first, then commit the store. A crash between the two leaves
//! groups on disk that the store does not list; they are fetched again, which costs bytes but
//! never trusts unverified data. The other order could list groups whose bytes never reached
//! the disk.

use crate::transfer::GroupSet;
use dopus_proto::transfer::CHUNK_GROUP_BYTES;
use dopus_types::Timestamp;

/// When verified groups are committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitPolicy {
    /// Commit once this many bytes were verified since the last commit.
    pub every_bytes: u64,
    /// Commit at least this often while groups are being verified.
    pub every_ms: u64,
}

impl Default for CommitPolicy {
    /// 16 MiB or 2 s: at 100 MiB/s about 6 commits a second, a few milliseconds each; a crash
    /// loses at most 2 s of transfer.
    fn default() -> Self {
        Self {
            every_bytes: 16 << 20,
            every_ms: 2_000,
        }
    }
}

/// The verified groups of one download, and which of them are committed.
#[derive(Clone, Debug)]
pub struct ResumeBook {
    policy: CommitPolicy,
    verified: GroupSet,
    committed: GroupSet,
    uncommitted_groups: u64,
    first_uncommitted_at: Option<Timestamp>,
}

impl ResumeBook {
    /// Starts from what the store says is verified.
    pub fn new(committed: GroupSet, policy: CommitPolicy) -> Self {
        Self {
            policy,
            verified: committed.clone(),
            committed,
            uncommitted_groups: 0,
            first_uncommitted_at: None,
        }
    }

    /// Every verified group, committed or not.
    pub fn verified(&self) -> &GroupSet {
        &self.verified
    }

    /// The groups the store lists.
    pub fn committed(&self) -> &GroupSet {
        &self.committed
    }

    /// Notes groups verified at `now`.
    pub fn on_verified(&mut self, now: Timestamp, groups: &GroupSet) {
        let fresh = groups.difference(&self.verified);
        if fresh.is_empty() {
            return;
        }
        self.uncommitted_groups += fresh.count();
        self.verified = self.verified.union(&fresh);
        self.first_uncommitted_at.get_or_insert(now);
    }

    /// Whether a commit is due at `now` by the policy.
    pub fn due(&self, now: Timestamp) -> bool {
        let Some(since) = self.first_uncommitted_at else {
            return false;
        };
        self.uncommitted_groups.saturating_mul(CHUNK_GROUP_BYTES) >= self.policy.every_bytes
            || now.millis_since(since) >= self.policy.every_ms
    }

    /// When a commit becomes due by time alone.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.first_uncommitted_at
            .map(|t| t.plus_millis(self.policy.every_ms))
    }

    /// Whether anything is verified but not committed.
    pub fn dirty(&self) -> bool {
        self.first_uncommitted_at.is_some()
    }

    /// Takes the set to commit now (everything verified), or `None` when nothing is new. The
    /// caller syncs the files, then writes the set to the store.
    pub fn take_commit(&mut self) -> Option<GroupSet> {
        self.first_uncommitted_at.take()?;
        self.uncommitted_groups = 0;
        self.committed = self.verified.clone();
        Some(self.committed.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB_GROUPS: u64 = (1 << 20) / CHUNK_GROUP_BYTES;

    #[test]
    fn commits_by_bytes_or_time_whichever_first() {
        let policy = CommitPolicy {
            every_bytes: 4 << 20,
            every_ms: 1_000,
        };
        let mut b = ResumeBook::new(GroupSet::from_range(0..10), policy);
        assert!(!b.due(Timestamp(0)) && !b.dirty());
        b.on_verified(
            Timestamp(100),
            &GroupSet::from_range(10..10 + 3 * MIB_GROUPS),
        );
        assert!(!b.due(Timestamp(100)));
        b.on_verified(
            Timestamp(200),
            &GroupSet::from_range(0..10 + 4 * MIB_GROUPS),
        );
        assert!(b.due(Timestamp(200)), "4 MiB new");
        let c = b.take_commit().unwrap();
        assert_eq!(c, GroupSet::from_range(0..10 + 4 * MIB_GROUPS));
        assert_eq!(b.committed(), &c);
        assert!(b.take_commit().is_none());
        // Time: one group, then a second passes.
        b.on_verified(Timestamp(300), &GroupSet::from_range(1000..1001));
        assert!(!b.due(Timestamp(1_299)));
        assert_eq!(b.next_due(), Some(Timestamp(1_300)));
        assert!(b.due(Timestamp(1_300)));
    }

    #[test]
    fn re_verified_groups_are_not_counted_twice() {
        let mut b = ResumeBook::new(GroupSet::from_range(0..100), CommitPolicy::default());
        b.on_verified(Timestamp(1), &GroupSet::from_range(0..100));
        assert!(!b.dirty());
        assert!(b.take_commit().is_none());
    }
}
