//! Resolution: from a DAG of verified ops to one state, the same on every replica.
//!
//! 1. **Order.** A topological walk (Kahn) from the genesis op. Whenever several ops are ready
//!    (all their parents done: they are pairwise concurrent), the next is the one whose author
//!    ranks highest in the state resolved so far (which contains the fork point), then the
//!    lowest depth, then the lowest op id. Each op's rank is taken when it becomes ready.
//! 2. **Authorize.** Each op in that order goes through [`SpaceState::apply`], which applies it
//!    only if its author may do it at that point; otherwise it is refused and changes nothing.
//! 3. **Strong remove.** When an applied op removes or demotes a member ranked below its author,
//!    every op that member made concurrently with it (neither before nor after it) is filtered,
//!    and the walk runs again with that filter, until the filter stops growing. Ops that depended
//!    on a filtered op's effects are refused by step 2 in the next walk. The filter only grows,
//!    so this ends after at most as many walks as there are ops (in practice one or two).
//!
//! Everything is a function of the set of ops: hash maps are never iterated, ranks and ids are
//! totally ordered, and no clock is read. So every replica that has the same ops has the same
//! state.

use super::Refusal;
use super::state::{OpContext, SpaceState};
use dopus_proto::space::{OpId, SpaceOp};
use dopus_types::UserId;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// One op in the log's graph.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub op: SpaceOp,
    pub id: OpId,
    pub depth: u64,
    pub parents: Vec<usize>,
    pub children: Vec<usize>,
}

/// The ops of one space, genesis at index 0, every op after its parents.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub entries: Vec<Entry>,
    pub index: HashMap<OpId, usize>,
}

impl Graph {
    /// Whether `a` is a strict causal ancestor of `b`. Walks back from `b`, never below `a`'s
    /// depth (depths strictly decrease along parent links).
    pub fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let target = self.entries[a].depth;
        if self.entries[b].depth <= target {
            return false;
        }
        let mut stack = vec![b];
        let mut seen = std::collections::HashSet::new();
        while let Some(x) = stack.pop() {
            for &p in &self.entries[x].parents {
                if p == a {
                    return true;
                }
                if self.entries[p].depth > target && seen.insert(p) {
                    stack.push(p);
                }
            }
        }
        false
    }

    /// Every strict ancestor of `i`.
    pub fn ancestors(&self, i: usize) -> Vec<bool> {
        self.closure(&[i], |e| &e.parents, false)
    }

    /// Every strict descendant of `i`.
    pub fn descendants(&self, i: usize) -> Vec<bool> {
        self.closure(&[i], |e| &e.children, false)
    }

    /// The ops reachable from `start` along `next` links; `start` included if `inclusive`.
    pub fn closure(
        &self,
        start: &[usize],
        next: impl Fn(&Entry) -> &Vec<usize>,
        inclusive: bool,
    ) -> Vec<bool> {
        let mut mark = vec![false; self.entries.len()];
        let mut stack: Vec<usize> = Vec::new();
        for &s in start {
            if inclusive {
                mark[s] = true;
            }
            stack.push(s);
        }
        while let Some(x) = stack.pop() {
            for &n in next(&self.entries[x]) {
                if !mark[n] {
                    mark[n] = true;
                    stack.push(n);
                }
            }
        }
        mark
    }
}

/// The result of resolving a set of ops.
#[derive(Debug, Clone)]
pub(crate) struct Resolution {
    pub state: SpaceState,
    /// Per entry: `None` if not part of this resolution, else applied or refused.
    pub status: Vec<Option<Result<(), Refusal>>>,
    /// The order ops were taken in (genesis first).
    pub order: Vec<usize>,
    /// Filtered op -> the removal that filtered it.
    pub filter: BTreeMap<usize, usize>,
}

/// Ready-queue key: pops the highest rank, then the lowest depth, then the lowest id.
#[derive(PartialEq, Eq)]
struct Ready {
    rank: super::Rank,
    depth: u64,
    id: OpId,
    idx: usize,
}

impl Ord for Ready {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank
            .cmp(&other.rank)
            .then_with(|| other.depth.cmp(&self.depth))
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

struct Pass {
    state: SpaceState,
    status: Vec<Option<Result<(), Refusal>>>,
    order: Vec<usize>,
    demotions: Vec<(usize, Vec<UserId>)>,
}

/// Resolves the ops in `mask` (all ops if `None`; the mask must be closed under ancestors and
/// contain the genesis op).
pub(crate) fn resolve(graph: &Graph, mask: Option<&[bool]>) -> Option<Resolution> {
    let n = graph.entries.len();
    let included = |i: usize| mask.is_none_or(|m| m[i]);
    let mut by_author: BTreeMap<UserId, Vec<usize>> = BTreeMap::new();
    for (i, e) in graph.entries.iter().enumerate().skip(1) {
        if included(i) {
            by_author.entry(e.op.author_user()).or_default().push(i);
        }
    }
    let mut filter: BTreeMap<usize, usize> = BTreeMap::new();
    for _ in 0..=n {
        let pass = walk(graph, &included, &filter)?;
        let mut grew = false;
        for (r, users) in &pass.demotions {
            let mut around: Option<(Vec<bool>, Vec<bool>)> = None;
            for u in users {
                let Some(ops) = by_author.get(u) else {
                    continue;
                };
                for &o in ops {
                    if o == *r || filter.contains_key(&o) {
                        continue;
                    }
                    let (anc, desc) =
                        around.get_or_insert_with(|| (graph.ancestors(*r), graph.descendants(*r)));
                    if !anc[o] && !desc[o] {
                        filter.insert(o, *r);
                        grew = true;
                    }
                }
            }
        }
        if !grew {
            return Some(Resolution {
                state: pass.state,
                status: pass.status,
                order: pass.order,
                filter,
            });
        }
    }
    None
}

fn walk(
    graph: &Graph,
    included: &dyn Fn(usize) -> bool,
    filter: &BTreeMap<usize, usize>,
) -> Option<Pass> {
    let n = graph.entries.len();
    let genesis = graph.entries.first()?;
    let mut state = SpaceState::genesis(&genesis.op)?;
    let mut status: Vec<Option<Result<(), Refusal>>> = vec![None; n];
    let mut order = Vec::with_capacity(n);
    let mut demotions = Vec::new();
    let mut indegree: Vec<usize> = graph
        .entries
        .iter()
        .map(|e| e.parents.iter().filter(|&&p| included(p)).count())
        .collect();
    let mut heap = BinaryHeap::new();
    status[0] = Some(Ok(()));
    order.push(0);
    let ready = |state: &SpaceState, c: usize| Ready {
        rank: state.rank(&graph.entries[c].op.author_user()),
        depth: graph.entries[c].depth,
        id: graph.entries[c].id,
        idx: c,
    };
    for &c in &genesis.children {
        if included(c) {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                heap.push(ready(&state, c));
            }
        }
    }
    while let Some(Ready { idx: i, .. }) = heap.pop() {
        let e = &graph.entries[i];
        let result = if filter.contains_key(&i) {
            Err(Refusal::Filtered)
        } else {
            let is_ancestor = |a: &OpId| {
                graph
                    .index
                    .get(a)
                    .is_some_and(|&ai| graph.is_ancestor(ai, i))
            };
            let ctx = OpContext {
                id: e.id,
                depth: e.depth,
                is_ancestor: &is_ancestor,
            };
            state.apply(&e.op, &ctx).map(|applied| {
                if !applied.demoted.is_empty() {
                    demotions.push((i, applied.demoted));
                }
            })
        };
        status[i] = Some(result);
        order.push(i);
        for &c in &e.children {
            if included(c) {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    heap.push(ready(&state, c));
                }
            }
        }
    }
    Some(Pass {
        state,
        status,
        order,
        demotions,
    })
}

/// Extends a resolution with op `i`, whose ancestors are every op already resolved: it comes
/// last in the order whatever its rank, and nothing is concurrent with it, so no filter can
/// change. Exactly what [`resolve`] would compute, in O(1) walks.
pub(crate) fn extend(res: &mut Resolution, graph: &Graph, i: usize) {
    let e = &graph.entries[i];
    let is_ancestor = |a: &OpId| graph.index.get(a).is_some_and(|&ai| ai != i);
    let ctx = OpContext {
        id: e.id,
        depth: e.depth,
        is_ancestor: &is_ancestor,
    };
    let result = res.state.apply(&e.op, &ctx).map(|_| ());
    if res.status.len() < graph.entries.len() {
        res.status.resize(graph.entries.len(), None);
    }
    res.status[i] = Some(result);
    res.order.push(i);
}
