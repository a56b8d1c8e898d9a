//! Group commit for API calls: requests that arrive while the node's lock is taken wait in a
//! queue, and whichever of them gets the lock first does them all in one store transaction.
//!
//! Each commit of the encrypted store costs far more than the work of one message (every
//! changed page is encrypted, authenticated and appended to the WAL), so when several clients
//! post at once, doing their messages in one commit is what lets a node keep up. One caller
//! alone still commits at once: nothing waits for a batch to fill.
//!
//! A request leaves the queue either in a batch (its answer comes back through a oneshot
//! channel) or, if its caller gives up first (the HTTP request was dropped, or the node turned
//! out to be locked), through its [`Ticket`], so nothing is done for a caller that is gone.

use std::sync::{Mutex, PoisonError};
use tokio::sync::oneshot;

/// Requests waiting to be done together.
#[derive(Debug)]
pub struct Combiner<Req, Resp> {
    queue: Mutex<Queue<Req, Resp>>,
}

#[derive(Debug)]
struct Queue<Req, Resp> {
    next: u64,
    waiting: Vec<Waiting<Req, Resp>>,
}

#[derive(Debug)]
struct Waiting<Req, Resp> {
    ticket: u64,
    request: Req,
    answer: oneshot::Sender<Resp>,
}

/// One request taken for a batch: do it and send its answer.
#[derive(Debug)]
pub struct Taken<Req, Resp> {
    /// What was asked.
    pub request: Req,
    answer: oneshot::Sender<Resp>,
}

impl<Req, Resp> Taken<Req, Resp> {
    /// Answers the request (a caller that went away meanwhile is not an error).
    pub fn answer(self, resp: Resp) {
        let _ = self.answer.send(resp);
    }
}

/// A caller's place in the queue. Dropping it takes the request back out if no batch has
/// taken it yet.
#[must_use = "dropping the ticket withdraws the request"]
pub struct Ticket<'a, Req, Resp> {
    combiner: &'a Combiner<Req, Resp>,
    id: u64,
    answer: oneshot::Receiver<Resp>,
}

impl<Req, Resp> Default for Combiner<Req, Resp> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Queue {
                next: 0,
                waiting: Vec::new(),
            }),
        }
    }
}

impl<Req, Resp> Combiner<Req, Resp> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<Req, Resp>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a request.
    pub fn push(&self, request: Req) -> Ticket<'_, Req, Resp> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.lock();
        let id = q.next;
        q.next = q.next.wrapping_add(1);
        q.waiting.push(Waiting {
            ticket: id,
            request,
            answer: tx,
        });
        Ticket {
            combiner: self,
            id,
            answer: rx,
        }
    }

    /// Takes every waiting request, oldest first (empty if another caller's batch took them).
    pub fn take_all(&self) -> Vec<Taken<Req, Resp>> {
        std::mem::take(&mut self.lock().waiting)
            .into_iter()
            .map(|w| Taken {
                request: w.request,
                answer: w.answer,
            })
            .collect()
    }

    /// How many requests wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl<Req, Resp> Ticket<'_, Req, Resp> {
    /// Takes the request back out of the queue; `false` if a batch already took it (its
    /// answer is then on the way: await [`Ticket::answer`]).
    pub fn withdraw(&self) -> bool {
        let mut q = self.combiner.lock();
        let before = q.waiting.len();
        q.waiting.retain(|w| w.ticket != self.id);
        q.waiting.len() != before
    }

    /// The answer, once a batch (ours or another caller's) did the request; `None` if the
    /// batch was dropped without answering (a bug or a panic elsewhere).
    pub async fn answer(mut self) -> Option<Resp> {
        (&mut self.answer).await.ok()
    }
}

impl<Req, Resp> Drop for Ticket<'_, Req, Resp> {
    fn drop(&mut self) {
        let id = self.id;
        self.combiner.lock().waiting.retain(|w| w.ticket != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_batch_answers_every_waiting_caller_in_order() {
        let c: Combiner<u32, u32> = Combiner::default();
        let a = c.push(1);
        let b = c.push(2);
        let batch = c.take_all();
        assert_eq!(batch.iter().map(|t| t.request).collect::<Vec<_>>(), [1, 2]);
        assert!(c.take_all().is_empty(), "a request is taken once");
        for t in batch {
            let r = t.request * 10;
            t.answer(r);
        }
        assert_eq!(b.answer().await, Some(20));
        assert_eq!(a.answer().await, Some(10));
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_withdraws_its_request() {
        let c: Combiner<u32, u32> = Combiner::default();
        let gone = c.push(1);
        let stays = c.push(2);
        drop(gone);
        assert_eq!(c.len(), 1);
        let again = c.push(3);
        assert!(again.withdraw());
        assert!(!again.withdraw(), "withdrawn once");
        assert_eq!(c.len(), 1);
        let batch = c.take_all();
        assert_eq!(batch.iter().map(|t| t.request).collect::<Vec<_>>(), [2]);
        drop(batch);
        assert_eq!(
            stays.answer().await,
            None,
            "an unanswered batch is not a hang"
        );
    }
}
