//! The transport under a blob channel, as small as a transfer needs, so a WebRTC data channel,
//! a second peer connection or an in-memory pipe can carry it.
//!
//! The transfer asks how much it may hand over now ([`BlobTransport::room`]: its share of the
//! connection's send buffer, so chat on the same connection always finds room) and never
//! queues beyond it; received messages are taken without waiting. Whoever drives the transfer
//! decides how to wait for more room or more messages.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The transport is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the blob channel is closed")]
pub struct Closed;

/// One blob channel's transport.
pub trait BlobTransport {
    /// The largest message the peer accepts.
    fn max_message(&self) -> usize;
    /// Bytes the transfer may hand over now without exceeding its share of the send buffer.
    fn room(&self) -> usize;
    /// Hands over one message (1 to [`BlobTransport::max_message`] bytes).
    fn send(&mut self, message: Vec<u8>) -> Result<(), Closed>;
    /// The next received message, if one is there.
    fn try_recv(&mut self) -> Result<Option<Vec<u8>>, Closed>;
}

#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<Vec<u8>>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Shared {
    /// One queue per direction; end `i` sends into `queues[i]` and reads `queues[1 - i]`.
    queues: Mutex<([Queue; 2], bool)>,
    changed: Condvar,
}

/// One end of an in-memory pipe: messages in order, a byte budget per direction standing in
/// for the send buffer. For tests and benchmarks.
#[derive(Debug)]
pub struct MemoryPipe {
    shared: Arc<Shared>,
    end: usize,
    capacity: usize,
    max_message: usize,
}

impl MemoryPipe {
    /// Two connected ends; each direction holds at most `capacity` bytes in flight.
    pub fn pair(capacity: usize, max_message: usize) -> (MemoryPipe, MemoryPipe) {
        let shared = Arc::new(Shared::default());
        let end = |end| MemoryPipe {
            shared: shared.clone(),
            end,
            capacity,
            max_message,
        };
        (end(0), end(1))
    }

    /// Waits at most `timeout` for a message to arrive or for room to appear (any change on the
    /// pipe wakes it), unless a message is already there.
    pub fn wait(&self, timeout: Duration) {
        self.clone_waiter().wait(timeout);
    }

    /// A handle that waits on this end after the pipe itself was handed to a transfer.
    pub fn clone_waiter(&self) -> PipeWaiter {
        PipeWaiter {
            shared: self.shared.clone(),
            end: self.end,
        }
    }

    /// Closes both directions.
    pub fn close(&self) {
        if let Ok(mut g) = self.shared.queues.lock() {
            g.1 = true;
        }
        self.shared.changed.notify_all();
    }
}

/// Waits on one end of a [`MemoryPipe`] (see [`MemoryPipe::wait`]).
#[derive(Debug, Clone)]
pub struct PipeWaiter {
    shared: Arc<Shared>,
    end: usize,
}

impl PipeWaiter {
    /// Waits at most `timeout` for a message to arrive or for room to appear, unless a message
    /// is already there.
    pub fn wait(&self, timeout: Duration) {
        let Ok(guard) = self.shared.queues.lock() else {
            return;
        };
        let (queues, closed) = &*guard;
        let idle = queues[1 - self.end].messages.is_empty() && !closed;
        if idle {
            let _ = self.shared.changed.wait_timeout(guard, timeout);
        }
    }
}

impl Drop for MemoryPipe {
    fn drop(&mut self) {
        self.close();
    }
}

impl BlobTransport for MemoryPipe {
    fn max_message(&self) -> usize {
        self.max_message
    }

    fn room(&self) -> usize {
        self.shared
            .queues
            .lock()
            .map_or(0, |g| self.capacity.saturating_sub(g.0[self.end].bytes))
    }

    fn send(&mut self, message: Vec<u8>) -> Result<(), Closed> {
        let mut g = self.shared.queues.lock().map_err(|_| Closed)?;
        if g.1 {
            return Err(Closed);
        }
        let q = &mut g.0[self.end];
        q.bytes += message.len();
        q.messages.push_back(message);
        drop(g);
        self.shared.changed.notify_all();
        Ok(())
    }

    fn try_recv(&mut self) -> Result<Option<Vec<u8>>, Closed> {
        let mut g = self.shared.queues.lock().map_err(|_| Closed)?;
        let closed = g.1;
        let q = &mut g.0[1 - self.end];
        match q.messages.pop_front() {
            Some(m) => {
                q.bytes -= m.len();
                drop(g);
                // The sender may be waiting for room.
                self.shared.changed.notify_all();
                Ok(Some(m))
            }
            None if closed => Err(Closed),
            None => Ok(None),
        }
    }
}
