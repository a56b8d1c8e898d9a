//! The range planner: which chunk groups to ask which holder for, next.
//!
//! A download knows the groups it has verified and the holders that can serve (each with the
//! groups it advertised). The planner keeps a window of requests in flight per holder, each of
//! at most [`PlannerConfig::request_groups`] groups, and hands out the lowest missing groups
//! first, to the holder with the fewest requests in flight: consecutive ranges go to different
//! holders, and a faster holder, finishing sooner, gets asked more often.
//!
//! A holder that sends one chunk group that does not verify is dropped at that group
//! ([`DropReason::BadData`]) and never asked again in this download, even if it re-advertises:
//! the groups it was asked for and had not delivered go back to the missing set, so the others
//! serve them. A request without progress for [`PlannerConfig::request_timeout_ms`] is cancelled
//! and re-planned; a holder that stalls [`PlannerConfig::max_stalls`] times in a row is dropped.

use crate::transfer::GroupSet;
use dopus_proto::transfer::BlobErrorCode;
use dopus_types::Timestamp;
use std::collections::BTreeMap;

/// A source of the blob: one peer device reachable over one blob channel. The runtime chooses
/// the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HolderId(pub u64);

/// One request of this download (local to it; the link maps it to a wire request id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey(pub u64);

/// How the planner asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Most groups in one request (64 groups of 16 KiB = 1 MiB: the proof overhead per request
    /// stays near 0.1 %).
    pub request_groups: u64,
    /// Requests in flight per holder.
    pub window: usize,
    /// A request with no verified group for this long is cancelled and asked elsewhere.
    pub request_timeout_ms: u64,
    /// After a `Busy` refusal or a stall, a holder is not asked again for this long.
    pub backoff_ms: u64,
    /// Consecutive stalls after which a holder is dropped.
    pub max_stalls: u32,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            request_groups: 64,
            window: 4,
            request_timeout_ms: 30_000,
            backoff_ms: 1_000,
            max_stalls: 3,
        }
    }
}

/// Why a holder is no longer asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// It sent a chunk group that did not verify: this one.
    BadData {
        /// The first bad group.
        group: u64,
    },
    /// It sent something that is not a valid answer (malformed frame, too many bytes).
    Malformed,
    /// It refused a request it had advertised.
    Refused(BlobErrorCode),
    /// It stalled [`PlannerConfig::max_stalls`] times in a row.
    Stalled,
}

/// A request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRequest {
    /// Its key.
    pub key: RequestKey,
    /// Whom to ask.
    pub holder: HolderId,
    /// Which groups.
    pub groups: GroupSet,
}

/// What became of a holder's requests when it was dropped or went away.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Withdrawn {
    /// Requests to cancel on the wire (the holder may still be sending).
    pub cancel: Vec<(HolderId, RequestKey)>,
    /// Groups that went back to the missing set.
    pub returned: GroupSet,
}

#[derive(Clone, Debug)]
struct Holder {
    has: GroupSet,
    in_flight: usize,
    dropped: Option<DropReason>,
    retry_at: Option<Timestamp>,
    stalls: u32,
    delivered: u64,
}

#[derive(Clone, Debug)]
struct Pending {
    holder: HolderId,
    remaining: GroupSet,
    last_progress: Timestamp,
}

/// The planner of one download (see the module docs).
#[derive(Clone, Debug)]
pub struct Planner {
    config: PlannerConfig,
    total: u64,
    verified: GroupSet,
    in_flight: GroupSet,
    pending: BTreeMap<RequestKey, Pending>,
    holders: BTreeMap<HolderId, Holder>,
    next_key: u64,
}

impl Planner {
    /// A planner for a blob of `total` groups of which `verified` are already verified (resume).
    pub fn new(total: u64, verified: GroupSet, config: PlannerConfig) -> Self {
        let verified = verified.intersection(&GroupSet::from_range(0..total));
        Self {
            config,
            total,
            verified,
            in_flight: GroupSet::new(),
            pending: BTreeMap::new(),
            holders: BTreeMap::new(),
            next_key: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PlannerConfig {
        &self.config
    }

    /// Groups in the blob.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Groups verified so far.
    pub fn verified(&self) -> &GroupSet {
        &self.verified
    }

    /// Groups asked for and not yet verified.
    pub fn in_flight(&self) -> &GroupSet {
        &self.in_flight
    }

    /// Groups neither verified nor asked for.
    pub fn missing(&self) -> GroupSet {
        GroupSet::from_range(0..self.total)
            .difference(&self.verified)
            .difference(&self.in_flight)
    }

    /// Whether every group is verified.
    pub fn is_complete(&self) -> bool {
        self.verified.count() == self.total
    }

    /// Requests in flight.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Holders that may still be asked.
    pub fn active_holders(&self) -> impl Iterator<Item = HolderId> + '_ {
        self.holders
            .iter()
            .filter(|(_, h)| h.dropped.is_none())
            .map(|(id, _)| *id)
    }

    /// How many holders were dropped.
    pub fn dropped_holders(&self) -> usize {
        self.holders
            .values()
            .filter(|h| h.dropped.is_some())
            .count()
    }

    /// Why `holder` was dropped, if it was.
    pub fn dropped(&self, holder: HolderId) -> Option<DropReason> {
        self.holders.get(&holder).and_then(|h| h.dropped)
    }

    /// Groups `holder` delivered that verified.
    pub fn delivered_by(&self, holder: HolderId) -> u64 {
        self.holders.get(&holder).map_or(0, |h| h.delivered)
    }

    /// Adds a holder or updates what it has (clipped to the blob). A dropped holder stays
    /// dropped. Returns whether it may be asked.
    pub fn set_holder(&mut self, holder: HolderId, has: GroupSet) -> bool {
        let has = has.intersection(&GroupSet::from_range(0..self.total));
        let h = self.holders.entry(holder).or_insert_with(|| Holder {
            has: GroupSet::new(),
            in_flight: 0,
            dropped: None,
            retry_at: None,
            stalls: 0,
            delivered: 0,
        });
        h.has = has;
        h.dropped.is_none()
    }

    /// A holder went away (its link closed). Its requests return to the missing set; it may
    /// come back with [`Planner::set_holder`] unless it was dropped.
    pub fn remove_holder(&mut self, holder: HolderId) -> Withdrawn {
        let withdrawn = self.withdraw(holder, |_| true);
        if self
            .holders
            .get(&holder)
            .is_some_and(|h| h.dropped.is_none())
        {
            self.holders.remove(&holder);
        }
        withdrawn
    }

    /// Returns the requests of `holder` matching `which` to the missing set.
    fn withdraw(&mut self, holder: HolderId, which: impl Fn(RequestKey) -> bool) -> Withdrawn {
        let keys: Vec<RequestKey> = self
            .pending
            .iter()
            .filter(|(k, p)| p.holder == holder && which(**k))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Withdrawn::default();
        for key in keys {
            if let Some(p) = self.pending.remove(&key) {
                for r in p.remaining.ranges() {
                    self.in_flight.remove(r.clone());
                    out.returned.insert(r.clone());
                }
                out.cancel.push((holder, key));
            }
            if let Some(h) = self.holders.get_mut(&holder) {
                h.in_flight = h.in_flight.saturating_sub(1);
            }
        }
        out
    }

    fn drop_holder(&mut self, holder: HolderId, reason: DropReason) -> Withdrawn {
        if let Some(h) = self.holders.get_mut(&holder) {
            h.dropped.get_or_insert(reason);
        }
        self.withdraw(holder, |_| true)
    }

    /// The requests to send now: fills every holder's window with the lowest missing groups it
    /// has, fewest-in-flight holder first.
    pub fn plan(&mut self, now: Timestamp) -> Vec<PlannedRequest> {
        let mut missing = self.missing();
        let mut out = Vec::new();
        while !missing.is_empty() {
            let choice = self
                .holders
                .iter()
                .filter(|(_, h)| {
                    h.dropped.is_none()
                        && h.in_flight < self.config.window
                        && h.retry_at.is_none_or(|t| t <= now)
                })
                .map(|(id, h)| (h.in_flight, *id, h.has.intersection(&missing)))
                .filter(|(_, _, can)| !can.is_empty())
                .min_by_key(|(in_flight, id, _)| (*in_flight, *id));
            let Some((_, holder, can)) = choice else {
                break;
            };
            let groups = can.take_first(self.config.request_groups.max(1));
            let key = RequestKey(self.next_key);
            self.next_key += 1;
            for r in groups.ranges() {
                missing.remove(r.clone());
                self.in_flight.insert(r.clone());
            }
            if let Some(h) = self.holders.get_mut(&holder) {
                h.in_flight += 1;
                h.retry_at = None;
            }
            self.pending.insert(
                key,
                Pending {
                    holder,
                    remaining: groups.clone(),
                    last_progress: now,
                },
            );
            out.push(PlannedRequest {
                key,
                holder,
                groups,
            });
        }
        out
    }

    /// Groups of request `key` verified at `now`. Groups that were not asked for in that
    /// request are ignored. Returns how many groups are newly verified.
    pub fn on_verified(&mut self, now: Timestamp, key: RequestKey, groups: &GroupSet) -> u64 {
        let Some(p) = self.pending.get_mut(&key) else {
            return 0;
        };
        let fresh = groups.intersection(&p.remaining);
        if fresh.is_empty() {
            return 0;
        }
        p.last_progress = now;
        let holder = p.holder;
        for r in fresh.ranges() {
            p.remaining.remove(r.clone());
            self.in_flight.remove(r.clone());
            self.verified.insert(r.clone());
        }
        let n = fresh.count();
        if let Some(h) = self.holders.get_mut(&holder) {
            h.delivered += n;
            h.stalls = 0;
        }
        n
    }

    /// Request `key` got its whole answer. Any group it did not verify returns to the missing
    /// set (a holder's answer is complete by construction, so that happens only when the
    /// runtime gave up on the rest).
    pub fn on_complete(&mut self, key: RequestKey) {
        if let Some(p) = self.pending.remove(&key) {
            for r in p.remaining.ranges() {
                self.in_flight.remove(r.clone());
            }
            if let Some(h) = self.holders.get_mut(&p.holder) {
                h.in_flight = h.in_flight.saturating_sub(1);
            }
        }
    }

    /// The answer to `key` failed verification at `group`: its holder is dropped at exactly
    /// that group and all its requests are withdrawn (cancel them on the wire).
    pub fn on_bad_data(&mut self, key: RequestKey, group: u64) -> Withdrawn {
        let Some(holder) = self.pending.get(&key).map(|p| p.holder) else {
            return Withdrawn::default();
        };
        self.drop_holder(holder, DropReason::BadData { group })
    }

    /// The answer to `key` was not a valid answer at all: the holder is dropped.
    pub fn on_malformed(&mut self, key: RequestKey) -> Withdrawn {
        let Some(holder) = self.pending.get(&key).map(|p| p.holder) else {
            return Withdrawn::default();
        };
        self.drop_holder(holder, DropReason::Malformed)
    }

    /// The holder refused `key`. `Busy`: it is left alone for a while and the groups are asked
    /// again (of anyone). Anything else: it cannot serve this blob and is dropped.
    pub fn on_refused(
        &mut self,
        now: Timestamp,
        key: RequestKey,
        code: BlobErrorCode,
    ) -> Withdrawn {
        let Some(holder) = self.pending.get(&key).map(|p| p.holder) else {
            return Withdrawn::default();
        };
        if code == BlobErrorCode::Busy {
            if let Some(h) = self.holders.get_mut(&holder) {
                h.retry_at = Some(now.plus_millis(self.config.backoff_ms));
            }
            let mut w = self.withdraw(holder, |k| k == key);
            // The holder already forgot a refused request: nothing to cancel.
            w.cancel.clear();
            w
        } else {
            let mut w = self.drop_holder(holder, DropReason::Refused(code));
            w.cancel.retain(|(_, k)| *k != key);
            w
        }
    }

    /// Cancels and re-plans requests without progress for the timeout. Returns what to cancel.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Withdrawn {
        let timeout = self.config.request_timeout_ms;
        let stalled: Vec<(RequestKey, HolderId)> = self
            .pending
            .iter()
            .filter(|(_, p)| now.millis_since(p.last_progress) >= timeout)
            .map(|(k, p)| (*k, p.holder))
            .collect();
        let mut out = Withdrawn::default();
        for (key, holder) in stalled {
            let strikes = self.holders.get_mut(&holder).map(|h| {
                h.stalls += 1;
                h.retry_at = Some(now.plus_millis(self.config.backoff_ms));
                h.stalls
            });
            let w = if strikes.is_some_and(|s| s >= self.config.max_stalls) {
                self.drop_holder(holder, DropReason::Stalled)
            } else {
                self.withdraw(holder, |k| k == key)
            };
            out.cancel.extend(w.cancel);
            for r in w.returned.ranges() {
                out.returned.insert(r.clone());
            }
        }
        out
    }

    /// When [`Planner::handle_timeout`] or [`Planner::plan`] has something to do next.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        let requests = self
            .pending
            .values()
            .map(|p| p.last_progress.plus_millis(self.config.request_timeout_ms));
        let retries = self
            .holders
            .values()
            .filter(|h| h.dropped.is_none())
            .filter_map(|h| h.retry_at);
        requests.chain(retries).min()
    }

    /// Withdraws every request (the download pauses). Holders stay known.
    pub fn withdraw_all(&mut self) -> Withdrawn {
        let holders: Vec<HolderId> = self.holders.keys().copied().collect();
        let mut out = Withdrawn::default();
        for h in holders {
            let w = self.withdraw(h, |_| true);
            out.cancel.extend(w.cancel);
            for r in w.returned.ranges() {
                out.returned.insert(r.clone());
            }
        }
        out
    }

    /// The holder asked in request `key`.
    pub fn holder_of(&self, key: RequestKey) -> Option<HolderId> {
        self.pending.get(&key).map(|p| p.holder)
    }

    /// The groups request `key` still waits for.
    pub fn remaining(&self, key: RequestKey) -> Option<&GroupSet> {
        self.pending.get(&key).map(|p| &p.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(n: u64) -> GroupSet {
        GroupSet::from_range(0..n)
    }

    fn cfg(groups: u64, window: usize) -> PlannerConfig {
        PlannerConfig {
            request_groups: groups,
            window,
            ..PlannerConfig::default()
        }
    }

    #[test]
    fn one_holder_gets_a_window_of_consecutive_ranges() {
        let mut p = Planner::new(1000, GroupSet::new(), cfg(64, 4));
        p.set_holder(HolderId(1), all(1000));
        let reqs = p.plan(Timestamp(0));
        assert_eq!(reqs.len(), 4);
        for (i, r) in reqs.iter().enumerate() {
            let i = i as u64;
            assert_eq!(r.groups, GroupSet::from_range(i * 64..(i + 1) * 64));
            assert_eq!(r.holder, HolderId(1));
        }
        assert!(p.plan(Timestamp(0)).is_empty(), "window is full");
        assert_eq!(p.in_flight().count(), 256);
    }

    #[test]
    fn ranges_spread_across_holders_and_follow_what_each_has() {
        let mut p = Planner::new(1000, GroupSet::new(), cfg(10, 2));
        p.set_holder(HolderId(1), all(1000));
        p.set_holder(HolderId(2), all(1000));
        p.set_holder(HolderId(3), GroupSet::from_range(500..600));
        let reqs = p.plan(Timestamp(0));
        let holders: Vec<u64> = reqs.iter().map(|r| r.holder.0).collect();
        assert_eq!(holders, [1, 2, 3, 1, 2, 3]);
        // Holder 3 only has 500..600, so it gets the lowest missing groups there.
        assert_eq!(reqs[2].groups, GroupSet::from_range(500..510));
        assert_eq!(reqs[0].groups, GroupSet::from_range(0..10));
        assert_eq!(reqs[1].groups, GroupSet::from_range(10..20));
    }

    #[test]
    fn resume_asks_only_for_what_is_missing() {
        let verified: GroupSet = [0..100, 150..160].into_iter().collect();
        let mut p = Planner::new(200, verified, cfg(64, 8));
        p.set_holder(HolderId(7), all(200));
        let reqs = p.plan(Timestamp(0));
        let asked: GroupSet = reqs
            .iter()
            .flat_map(|r| r.groups.ranges().to_vec())
            .collect();
        assert_eq!(asked, [100..150, 160..200].into_iter().collect());
        assert_eq!(reqs[0].groups, [100..150, 160..174].into_iter().collect());
    }

    #[test]
    fn a_liar_is_dropped_at_exactly_the_bad_group_and_others_take_over() {
        let mut p = Planner::new(40, GroupSet::new(), cfg(10, 1));
        p.set_holder(HolderId(1), all(40));
        p.set_holder(HolderId(2), all(40));
        let reqs = p.plan(Timestamp(0));
        assert_eq!(reqs.len(), 2);
        let liar = &reqs[1];
        assert_eq!(liar.holder, HolderId(2));
        // The liar delivers three good groups, then a bad one.
        assert_eq!(
            p.on_verified(Timestamp(1), liar.key, &GroupSet::from_range(10..13)),
            3
        );
        let w = p.on_bad_data(liar.key, 13);
        assert_eq!(w.cancel, vec![(HolderId(2), liar.key)]);
        assert_eq!(w.returned, GroupSet::from_range(13..20));
        assert_eq!(
            p.dropped(HolderId(2)),
            Some(DropReason::BadData { group: 13 })
        );
        assert!(p.verified().contains_range(&(10..13)));
        // Re-advertising does not bring it back.
        assert!(!p.set_holder(HolderId(2), all(40)));
        p.on_verified(Timestamp(2), reqs[0].key, &GroupSet::from_range(0..10));
        p.on_complete(reqs[0].key);
        let next = p.plan(Timestamp(2));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].holder, HolderId(1));
        assert_eq!(next[0].groups, GroupSet::from_range(13..23));
        assert_eq!(p.active_holders().collect::<Vec<_>>(), vec![HolderId(1)]);
    }

    #[test]
    fn busy_backs_off_and_other_refusals_drop() {
        let mut p = Planner::new(100, GroupSet::new(), cfg(10, 1));
        p.set_holder(HolderId(1), all(100));
        p.set_holder(HolderId(2), all(100));
        let reqs = p.plan(Timestamp(0));
        let w = p.on_refused(Timestamp(0), reqs[0].key, BlobErrorCode::Busy);
        assert!(w.cancel.is_empty());
        assert_eq!(w.returned, GroupSet::from_range(0..10));
        // Holder 1 waits out its backoff; holder 2's window is full.
        assert!(p.plan(Timestamp(10)).is_empty());
        assert_eq!(p.next_timeout(), Some(Timestamp(1_000)));
        let again = p.plan(Timestamp(1_000));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].holder, HolderId(1));
        assert_eq!(again[0].groups, GroupSet::from_range(0..10));
        let w = p.on_refused(Timestamp(1_000), reqs[1].key, BlobErrorCode::NotFound);
        assert!(w.cancel.is_empty());
        assert_eq!(
            p.dropped(HolderId(2)),
            Some(DropReason::Refused(BlobErrorCode::NotFound))
        );
    }

    #[test]
    fn stalled_requests_are_re_planned_and_a_stalling_holder_dropped() {
        let mut c = cfg(10, 1);
        c.max_stalls = 2;
        let mut p = Planner::new(30, GroupSet::new(), c);
        p.set_holder(HolderId(1), all(30));
        let r = p.plan(Timestamp(0));
        assert_eq!(p.next_timeout(), Some(Timestamp(30_000)));
        assert!(p.handle_timeout(Timestamp(29_999)).cancel.is_empty());
        let w = p.handle_timeout(Timestamp(30_000));
        assert_eq!(w.cancel, vec![(HolderId(1), r[0].key)]);
        assert!(p.plan(Timestamp(30_500)).is_empty(), "backing off");
        let r = p.plan(Timestamp(31_000));
        assert_eq!(r[0].groups, GroupSet::from_range(0..10));
        let w = p.handle_timeout(Timestamp(61_000));
        assert_eq!(w.cancel.len(), 1);
        assert_eq!(p.dropped(HolderId(1)), Some(DropReason::Stalled));
        assert_eq!(p.missing(), all(30));
    }

    #[test]
    fn a_holder_that_goes_away_returns_its_requests_and_may_come_back() {
        let mut p = Planner::new(100, GroupSet::new(), cfg(10, 2));
        p.set_holder(HolderId(1), all(100));
        let r = p.plan(Timestamp(0));
        p.on_verified(Timestamp(1), r[0].key, &GroupSet::from_range(0..4));
        let w = p.remove_holder(HolderId(1));
        assert_eq!(w.returned, GroupSet::from_range(4..20));
        assert_eq!(p.in_flight(), &GroupSet::new());
        assert!(p.set_holder(HolderId(1), all(100)));
        let r = p.plan(Timestamp(2));
        assert_eq!(r[0].groups, GroupSet::from_range(4..14));
    }

    #[test]
    fn verified_groups_outside_the_request_are_ignored() {
        let mut p = Planner::new(100, GroupSet::new(), cfg(10, 1));
        p.set_holder(HolderId(1), all(100));
        let r = p.plan(Timestamp(0));
        assert_eq!(
            p.on_verified(Timestamp(1), r[0].key, &GroupSet::from_range(5..50)),
            5
        );
        assert_eq!(p.verified(), &GroupSet::from_range(5..10));
        assert_eq!(p.on_verified(Timestamp(1), RequestKey(99), &all(100)), 0);
    }

    proptest! {
        /// Random holders, deliveries, liars and departures: the sets stay disjoint, nothing
        /// is asked twice at once, and with one honest full holder the download completes.
        #[test]
        fn planner_invariants(seed in any::<u64>(), total in 1u64..400, window in 1usize..6,
                              groups in 1u64..40, holders in 1u64..5) {
            let mut rng = seed;
            let mut next = move |n: u64| {
                rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
                rng % n.max(1)
            };
            let mut p = Planner::new(total, GroupSet::new(), cfg(groups, window));
            // Holder 0 is honest and has everything; the others have random parts.
            p.set_holder(HolderId(0), all(total));
            for h in 1..holders {
                let s = next(total);
                p.set_holder(HolderId(h), GroupSet::from_range(s..s + next(total) + 1));
            }
            let mut now = 0;
            for _ in 0..10_000 {
                if p.is_complete() {
                    break;
                }
                now += 1;
                let reqs = p.plan(Timestamp(now));
                for r in &reqs {
                    prop_assert!(!r.groups.is_empty());
                    prop_assert!(r.groups.count() <= groups);
                    prop_assert!(r.groups.intersection(p.verified()).is_empty());
                }
                let keys: Vec<RequestKey> = p.pending.keys().copied().collect();
                let Some(&key) = keys.get(next(keys.len() as u64) as usize) else {
                    prop_assert!(false, "stuck: nothing in flight, {:?} missing", p.missing());
                    break;
                };
                let holder = p.holder_of(key).unwrap_or(HolderId(0));
                let rem = p.remaining(key).cloned().unwrap_or_default();
                match next(10) {
                    0 if holder != HolderId(0) => {
                        let g = rem.first().unwrap_or(0);
                        p.on_bad_data(key, g);
                    }
                    1 if holder != HolderId(0) => { p.remove_holder(holder); }
                    _ => {
                        let part = rem.take_first(next(rem.count()) + 1);
                        p.on_verified(Timestamp(now), key, &part);
                        if p.remaining(key).is_some_and(GroupSet::is_empty) {
                            p.on_complete(key);
                        }
                    }
                }
                // Invariants.
                prop_assert!(p.verified().intersection(p.in_flight()).is_empty());
                let mut union = GroupSet::new();
                for q in p.pending.values() {
                    prop_assert!(union.intersection(&q.remaining).is_empty(), "asked twice");
                    union = union.union(&q.remaining);
                }
                prop_assert_eq!(&union, p.in_flight());
                let per_holder: usize = p.holders.values().map(|h| h.in_flight).sum();
                prop_assert_eq!(per_holder, p.pending.len());
                for h in p.holders.values() {
                    prop_assert!(h.in_flight <= window);
                }
            }
            prop_assert!(p.is_complete());
            prop_assert_eq!(p.verified(), &all(total));
        }
    }
}
