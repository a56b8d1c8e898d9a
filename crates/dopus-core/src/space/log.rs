//! A space's control log: a DAG of verified, signed ops, with a buffer for ops whose parents
//! have not arrived and a cached resolution.
//!
//! Insertion checks what needs no state (format, limits, the author's certificate and the
//! signature: `SpaceOp::verify`), that the op belongs to this space, that its parents are known
//! and that its depth is one more than its deepest parent's. A refused op changes nothing and
//! does not stop later valid ops; an op whose parents are missing waits in a bounded buffer, and
//! the caller asks peers for the missing ids. Cycles cannot form: an op names its parents by
//! hash, and depth strictly grows along every parent link.
//!
//! Resolution (`resolve.rs`) is cached. An op that extends every head (the normal case: a
//! member writes after seeing everything) is applied to the cached state directly; any other
//! insertion marks the cache stale, and the next query resolves again from the genesis op.

use super::resolve::{self, Entry, Graph, Resolution};
use super::state::SpaceState;
use super::{Refusal, SpaceSigner};
use dopus_proto::space::{
    MAX_PARENTS, OpBody, OpError, OpId, Permissions, SPACE_OP_VERSION, SpaceNonce, SpaceOp,
};
use dopus_types::{SpaceId, Timestamp, UserId};
use std::collections::{BTreeSet, HashMap};

/// Most ops one log keeps waiting for missing parents.
pub const MAX_PENDING_OPS: usize = 10_000;

/// Why an op was not inserted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The op itself is invalid (format, limits, certificate, signature).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The op belongs to another space.
    #[error("the op belongs to another space")]
    WrongSpace,
    /// A second genesis op.
    #[error("a space has exactly one create op")]
    SecondGenesis,
    /// The depth is not one more than the deepest parent's.
    #[error("the op's depth is {found}, its parents make it {expected}")]
    Depth {
        /// What the parents make it.
        expected: u64,
        /// What the op says.
        found: u64,
    },
    /// Too many ops wait for missing parents; this one is dropped (it can be fetched again).
    #[error("too many ops are waiting for missing parents")]
    BufferFull,
    /// Stored ops do not form a log (no genesis, or a parent missing).
    #[error("the stored ops do not form a log: {0}")]
    Corrupt(&'static str),
}

/// Why [`ControlLog::author`] wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorError {
    /// The rules forbid it now.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The op could not be inserted (too large, for example).
    #[error(transparent)]
    Insert(#[from] InsertError),
}

/// What an insertion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Insertion {
    /// Ops added to the log, in order: the op itself (unless it waits) and any waiting ops it
    /// released. Persist these.
    pub added: Vec<OpId>,
    /// Parents still missing (neither in the log nor waiting): ask peers for them.
    pub missing: Vec<OpId>,
    /// The op was already known.
    pub duplicate: bool,
    /// Waiting ops that turned out invalid once their parents arrived (dropped).
    pub rejected: Vec<(OpId, InsertError)>,
}

/// Where one op stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpStatus {
    /// In the log and applied in the current resolution.
    Applied,
    /// In the log, but it did not apply.
    Refused(Refusal),
    /// Waiting for parents.
    Pending,
    /// Never seen.
    Unknown,
}

/// One space's control log.
#[derive(Debug, Clone)]
pub struct ControlLog {
    space: SpaceId,
    graph: Graph,
    heads: BTreeSet<OpId>,
    pending: HashMap<OpId, SpaceOp>,
    /// Missing parent -> the waiting ops that need it.
    waiting: HashMap<OpId, Vec<OpId>>,
    resolution: Option<Resolution>,
}

impl ControlLog {
    /// Builds a genesis op: `signer` creates a space named `name`. `nonce` must be random.
    pub fn genesis_op(
        signer: &dyn SpaceSigner,
        name: &str,
        nonce: [u8; 16],
        everyone: Permissions,
        share_history: bool,
        now: Timestamp,
    ) -> SpaceOp {
        sign(
            signer,
            None,
            Vec::new(),
            0,
            now,
            OpBody::Create {
                name: name.to_owned(),
                nonce: SpaceNonce(nonce),
                everyone,
                share_history,
            },
        )
    }

    /// A log holding just a verified genesis op.
    pub fn create(genesis: SpaceOp) -> Result<Self, InsertError> {
        let id = genesis.verify()?;
        let space = genesis
            .genesis_space_id()
            .ok_or(InsertError::Corrupt("not a create op"))?;
        let mut log = Self::empty(space);
        log.push(id, genesis, Vec::new(), 0);
        log.resolution = resolve::resolve(&log.graph, None);
        Ok(log)
    }

    /// Rebuilds a log from ops the node stored earlier (already verified when first inserted,
    /// so signatures are not checked again; structure and depths are).
    pub fn from_stored(space: SpaceId, ops: Vec<SpaceOp>) -> Result<Self, InsertError> {
        // Each id is a hash of the op's signing bytes: compute it once per op.
        let mut ops: Vec<(u64, OpId, SpaceOp)> =
            ops.into_iter().map(|o| (o.depth, o.id(), o)).collect();
        ops.sort_by_key(|(depth, id, _)| (*depth, *id));
        let mut log = Self::empty(space);
        let mut iter = ops.into_iter();
        let (_, id, genesis) = iter.next().ok_or(InsertError::Corrupt("no create op"))?;
        if genesis.genesis_space_id() != Some(space) {
            return Err(InsertError::Corrupt("the create op is not this space's"));
        }
        log.push(id, genesis, Vec::new(), 0);
        for (_, id, op) in iter {
            op.validate()?;
            if op.space != Some(space) {
                return Err(InsertError::WrongSpace);
            }
            if log.graph.index.contains_key(&id) {
                continue;
            }
            let parents = op
                .parents
                .iter()
                .map(|p| log.graph.index.get(p).copied())
                .collect::<Option<Vec<usize>>>()
                .ok_or(InsertError::Corrupt("a parent is missing"))?;
            let expected = log.expected_depth(&parents);
            if op.depth != expected {
                return Err(InsertError::Depth {
                    expected,
                    found: op.depth,
                });
            }
            let depth = op.depth;
            log.push(id, op, parents, depth);
        }
        Ok(log)
    }

    fn empty(space: SpaceId) -> Self {
        Self {
            space,
            graph: Graph::default(),
            heads: BTreeSet::new(),
            pending: HashMap::new(),
            waiting: HashMap::new(),
            resolution: None,
        }
    }

    fn expected_depth(&self, parents: &[usize]) -> u64 {
        parents
            .iter()
            .map(|&p| self.graph.entries[p].depth)
            .max()
            .map_or(0, |d| d.saturating_add(1))
    }

    fn push(&mut self, id: OpId, op: SpaceOp, parents: Vec<usize>, depth: u64) -> usize {
        let i = self.graph.entries.len();
        for &p in &parents {
            self.graph.entries[p].children.push(i);
            self.heads.remove(&self.graph.entries[p].id);
        }
        self.heads.insert(id);
        self.graph.entries.push(Entry {
            op,
            id,
            depth,
            parents,
            children: Vec::new(),
        });
        self.graph.index.insert(id, i);
        i
    }

    /// The space.
    pub fn space(&self) -> &SpaceId {
        &self.space
    }

    /// How many ops the log holds (waiting ones excluded).
    pub fn len(&self) -> usize {
        self.graph.entries.len()
    }

    /// Whether the log holds only… nothing (never true for a built log).
    pub fn is_empty(&self) -> bool {
        self.graph.entries.is_empty()
    }

    /// The current heads (ops nothing else names as parent), ascending.
    pub fn heads(&self) -> Vec<OpId> {
        self.heads.iter().copied().collect()
    }

    /// Whether the op is in the log (not just waiting).
    pub fn contains(&self, id: &OpId) -> bool {
        self.graph.index.contains_key(id)
    }

    /// One op of the log.
    pub fn get(&self, id: &OpId) -> Option<&SpaceOp> {
        self.graph.index.get(id).map(|&i| &self.graph.entries[i].op)
    }

    /// Every op, genesis first, each after its parents.
    pub fn ops(&self) -> impl Iterator<Item = &SpaceOp> {
        self.graph.entries.iter().map(|e| &e.op)
    }

    /// Parents that waiting ops need and nobody has sent yet.
    pub fn missing(&self) -> Vec<OpId> {
        let mut out: Vec<OpId> = self
            .waiting
            .keys()
            .filter(|id| !self.pending.contains_key(*id))
            .copied()
            .collect();
        out.sort();
        out
    }

    /// How many ops wait for parents.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Inserts an op received from anyone. See the module docs for what is checked.
    pub fn insert(&mut self, op: SpaceOp) -> Result<Insertion, InsertError> {
        // A copy of an op we hold is dropped before the (costlier) signature check: its id
        // covers every signed field, so it is the op we already verified.
        let id = op.id();
        if self.graph.index.contains_key(&id) || self.pending.contains_key(&id) {
            return Ok(Insertion {
                duplicate: true,
                ..Insertion::default()
            });
        }
        op.verify()?;
        if op.is_genesis() {
            return Err(InsertError::SecondGenesis);
        }
        if op.space != Some(self.space) {
            return Err(InsertError::WrongSpace);
        }
        // The decoder bounds each field; this bounds the whole (what the store keeps).
        op.to_json()?;
        let missing: Vec<OpId> = op
            .parents
            .iter()
            .filter(|p| !self.graph.index.contains_key(*p))
            .copied()
            .collect();
        let mut result = Insertion::default();
        if !missing.is_empty() {
            if self.pending.len() >= MAX_PENDING_OPS {
                return Err(InsertError::BufferFull);
            }
            for m in &missing {
                self.waiting.entry(*m).or_default().push(id);
                if !self.pending.contains_key(m) {
                    result.missing.push(*m);
                }
            }
            self.pending.insert(id, op);
            return Ok(result);
        }
        self.attach(id, op)?;
        result.added.push(id);
        self.release(id, &mut result);
        Ok(result)
    }

    /// Adds an op whose parents are all in the log.
    fn attach(&mut self, id: OpId, op: SpaceOp) -> Result<(), InsertError> {
        let parents: Vec<usize> = op
            .parents
            .iter()
            .filter_map(|p| self.graph.index.get(p).copied())
            .collect();
        let expected = self.expected_depth(&parents);
        if op.depth != expected {
            return Err(InsertError::Depth {
                expected,
                found: op.depth,
            });
        }
        let extends_all = self
            .heads
            .iter()
            .all(|h| op.parents.binary_search(h).is_ok());
        let depth = op.depth;
        let i = self.push(id, op, parents, depth);
        match (&mut self.resolution, extends_all) {
            (Some(res), true) => resolve::extend(res, &self.graph, i),
            _ => self.resolution = None,
        }
        Ok(())
    }

    /// Attaches every waiting op whose last missing parent just arrived, transitively.
    fn release(&mut self, arrived: OpId, result: &mut Insertion) {
        let mut queue = vec![arrived];
        while let Some(a) = queue.pop() {
            let Some(waiters) = self.waiting.remove(&a) else {
                continue;
            };
            for w in waiters {
                let ready = self
                    .pending
                    .get(&w)
                    .is_some_and(|op| op.parents.iter().all(|p| self.graph.index.contains_key(p)));
                if !ready {
                    continue;
                }
                let Some(op) = self.pending.remove(&w) else {
                    continue;
                };
                match self.attach(w, op) {
                    Ok(()) => {
                        result.added.push(w);
                        queue.push(w);
                    }
                    Err(e) => result.rejected.push((w, e)),
                }
            }
        }
    }

    /// Signs `body` as `signer`, after checking the rules against the current state, and
    /// inserts it. Returns the op to persist and send.
    pub fn author(
        &mut self,
        signer: &dyn SpaceSigner,
        body: OpBody,
        now: Timestamp,
    ) -> Result<SpaceOp, AuthorError> {
        self.state().check(&signer.certificate().user_id, &body)?;
        let mut parents: Vec<(u64, OpId)> = self
            .heads
            .iter()
            .filter_map(|h| {
                self.graph
                    .index
                    .get(h)
                    .map(|&i| (self.graph.entries[i].depth, *h))
            })
            .collect();
        // At most MAX_PARENTS: the deepest heads; the others stay heads for the next op.
        parents.sort_by(|a, b| b.cmp(a));
        parents.truncate(MAX_PARENTS);
        let depth = parents.iter().map(|(d, _)| d + 1).max().unwrap_or(1);
        let mut ids: Vec<OpId> = parents.into_iter().map(|(_, id)| id).collect();
        ids.sort();
        let op = sign(signer, Some(self.space), ids, depth, now, body);
        self.insert(op.clone())?;
        Ok(op)
    }

    fn resolution(&mut self) -> &Resolution {
        if self.resolution.is_none() {
            self.resolution = resolve::resolve(&self.graph, None);
        }
        // A log always holds a valid genesis op (checked on creation), so resolution succeeds;
        // fall back to resolving again rather than panic if it ever did not.
        self.resolution.get_or_insert_with(|| fallback(&self.graph))
    }

    /// The state at the current heads.
    pub fn state(&mut self) -> &SpaceState {
        &self.resolution().state
    }

    /// The state at some other set of heads (for example the heads a message cites). `None` if
    /// one of them is not in the log.
    pub fn state_at(&self, heads: &[OpId]) -> Option<SpaceState> {
        let start = heads
            .iter()
            .map(|h| self.graph.index.get(h).copied())
            .collect::<Option<Vec<usize>>>()?;
        let mut mask = self.graph.closure(&start, |e| &e.parents, true);
        if let Some(g) = mask.first_mut() {
            *g = true;
        }
        resolve::resolve(&self.graph, Some(&mask)).map(|r| r.state)
    }

    /// Where one op stands.
    pub fn status(&mut self, id: &OpId) -> OpStatus {
        if self.pending.contains_key(id) {
            return OpStatus::Pending;
        }
        let Some(&i) = self.graph.index.get(id) else {
            return OpStatus::Unknown;
        };
        match self.resolution().status.get(i) {
            Some(Some(Ok(()))) => OpStatus::Applied,
            Some(Some(Err(r))) => OpStatus::Refused(r.clone()),
            _ => OpStatus::Unknown,
        }
    }

    /// For an op dropped by the strong-remove rule, the removal or demotion that dropped it.
    pub fn filtered_by(&mut self, id: &OpId) -> Option<OpId> {
        let &i = self.graph.index.get(id)?;
        self.resolution();
        let res = self.resolution.as_ref()?;
        res.filter.get(&i).map(|&r| self.graph.entries[r].id)
    }

    /// Every op in resolution order with whether it applied (genesis first).
    pub fn trace(&mut self) -> Vec<(OpId, Result<(), Refusal>)> {
        self.resolution();
        let Some(res) = &self.resolution else {
            return Vec::new();
        };
        let entries = &self.graph.entries;
        res.order
            .iter()
            .filter_map(|&i| {
                res.status
                    .get(i)
                    .and_then(|s| s.clone())
                    .map(|s| (entries[i].id, s))
            })
            .collect()
    }

    /// Ops a peer whose heads are `have` may lack: every op that is not an ancestor-or-self of
    /// one of the ids in `have` we know (heads we do not know are ignored: the peer is ahead on
    /// that branch, and we cannot tell which of ours it holds below it), plus the ops in `want`,
    /// in causal order, at most `limit`.
    pub fn ops_for(&self, have: &[OpId], want: &[OpId], limit: usize) -> Vec<&SpaceOp> {
        let start: Vec<usize> = have
            .iter()
            .filter_map(|h| self.graph.index.get(h).copied())
            .collect();
        let known = self.graph.closure(&start, |e| &e.parents, true);
        let mut pick: Vec<bool> = known.iter().map(|k| !k).collect();
        for w in want {
            if let Some(&i) = self.graph.index.get(w) {
                pick[i] = true;
            }
        }
        // Entries are stored after their parents, so index order is causal order.
        self.graph
            .entries
            .iter()
            .zip(pick)
            .filter(|(_, p)| *p)
            .map(|(e, _)| &e.op)
            .take(limit)
            .collect()
    }
}

impl ControlLog {
    /// The applied ops that removed `user`: a kick or ban naming it, its own leave; and for
    /// a join of it that does not stand, the removal that filtered it (strong remove) or the
    /// removals of the member who admitted it. What a user who held the log and is not a
    /// member any more is sent so it learns where it stands.
    pub fn removal_anchors(&mut self, user: &UserId) -> Vec<OpId> {
        let removes = |e: &Entry, who: &UserId| match &e.op.body {
            OpBody::Kick { user: u } | OpBody::Ban { user: u } => u == who,
            OpBody::Leave => e.op.author.user_id == *who,
            _ => false,
        };
        let mut anchors: Vec<OpId> = Vec::new();
        let mut admitters: Vec<UserId> = Vec::new();
        let mut joins: Vec<OpId> = Vec::new();
        for e in &self.graph.entries {
            if removes(e, user) {
                anchors.push(e.id);
            }
            if let OpBody::Join { joiner, .. } = &e.op.body
                && joiner.user_id == *user
            {
                joins.push(e.id);
                admitters.push(e.op.author.user_id);
            }
        }
        for join in joins {
            if matches!(self.status(&join), OpStatus::Applied) {
                continue;
            }
            if let Some(by) = self.filtered_by(&join) {
                anchors.push(by);
            }
        }
        for e in &self.graph.entries {
            if admitters.iter().any(|a| removes(e, a)) {
                anchors.push(e.id);
            }
        }
        anchors.sort();
        anchors.dedup();
        anchors.retain(|id| matches!(self.status(id), OpStatus::Applied));
        anchors
    }

    /// What a removed member may still fetch: the ops up to (and including) the applied ops
    /// that removed it (a kick or a ban naming it, or its own leave), minus those below
    /// `have`, plus those of `want` among them, in causal order, at most `limit`. So it can
    /// learn of its own removal, and of nothing written after it. Empty for a user who was
    /// never removed.
    pub fn ops_for_removed(
        &mut self,
        user: &UserId,
        have: &[OpId],
        want: &[OpId],
        limit: usize,
    ) -> Vec<&SpaceOp> {
        let applied: Vec<usize> = self
            .removal_anchors(user)
            .iter()
            .filter_map(|id| self.graph.index.get(id).copied())
            .collect();
        if applied.is_empty() {
            return Vec::new();
        }
        let allowed = self.graph.closure(&applied, |e| &e.parents, true);
        let start: Vec<usize> = have
            .iter()
            .filter_map(|h| self.graph.index.get(h).copied())
            .collect();
        let known = self.graph.closure(&start, |e| &e.parents, true);
        let mut pick: Vec<bool> = known.iter().map(|k| !k).collect();
        for w in want {
            if let Some(&i) = self.graph.index.get(w) {
                pick[i] = true;
            }
        }
        self.graph
            .entries
            .iter()
            .zip(pick.into_iter().zip(allowed))
            .filter(|(_, (p, a))| *p && *a)
            .map(|(e, _)| &e.op)
            .take(limit)
            .collect()
    }
}

fn fallback(graph: &Graph) -> Resolution {
    #[allow(
        clippy::expect_used,
        reason = "a log is only built around a verified genesis op, which always resolves"
    )]
    resolve::resolve(graph, None).expect("a log with a genesis op resolves")
}

fn sign(
    signer: &dyn SpaceSigner,
    space: Option<SpaceId>,
    parents: Vec<OpId>,
    depth: u64,
    now: Timestamp,
    body: OpBody,
) -> SpaceOp {
    let author = signer.certificate().clone();
    let bytes = SpaceOp::signing_bytes_for(
        SPACE_OP_VERSION,
        space.as_ref(),
        &author,
        &parents,
        depth,
        now,
        &body,
    );
    SpaceOp {
        version: SPACE_OP_VERSION,
        space,
        signature: signer.sign(&bytes),
        author,
        parents,
        depth,
        created_at: now,
        body,
    }
}
