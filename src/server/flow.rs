//! Flow control between threads: how many bytes a publisher has put on its way to other
//! workers that they have not taken yet, per connection and per worker.
//!
//! Every message a member publishes carries a [`Credit`] for its size: the shared frame holds it,
//! so it comes back when the last worker that had to take the message has taken it (copied it into
//! its members' send queues, or dropped it). A worker stops reading a connection whose own bytes in
//! flight reach [`Limits::per_conn`], and every connection once its publishers' bytes in flight
//! reach [`Limits::per_worker`]: TCP then pushes back on the publishers, instead of envelopes piling
//! up between threads. The thread that returns the last credit of a waiting worker wakes it.
//!
//! So all frames in flight between threads hold at most `workers × per_worker` bytes (plus one
//! read's worth per worker): the links between workers are bounded without a counter of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Bytes counted for a message besides its frame: the shared allocation, the envelopes that carry
/// it. So a flood of tiny messages is bounded as well as a flood of large ones.
pub const MESSAGE_OVERHEAD: usize = 96;

/// The bounds, derived from `send_queue_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_conn: usize,
    pub per_worker: usize,
}

impl Limits {
    /// A publisher may have a quarter of a reader's queue limit in flight, a worker's publishers
    /// together one whole limit: a burst then never reaches a reader's queue faster than the
    /// reader's worker writes between passes (see `worker.rs`, the pass budget).
    pub fn from_queue_limit(send_queue_limit: usize) -> Limits {
        Limits {
            per_conn: (send_queue_limit / 4).max(1),
            per_worker: send_queue_limit.max(1),
        }
    }
}

/// One worker's publishers' bytes in flight, and how to wake the worker when they go down.
pub struct WorkerFlow {
    bytes: AtomicUsize,
    /// The worker stopped reading someone and wants a wake-up at the next returned credit.
    waiting: AtomicBool,
    waker: Arc<mio::Waker>,
}

impl WorkerFlow {
    pub fn new(waker: Arc<mio::Waker>) -> Arc<WorkerFlow> {
        Arc::new(WorkerFlow {
            bytes: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            waker,
        })
    }

    /// Bytes in flight.
    pub fn in_flight(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// The worker is about to leave some connections unread: wake it when a credit comes back.
    /// The caller must look at the counts again after this, so that a credit returned just
    /// before it is not missed.
    pub fn wait(&self) {
        self.waiting.store(true, Ordering::SeqCst);
    }
}

/// One connection's bytes in flight.
pub struct ConnFlow {
    bytes: AtomicUsize,
    worker: Arc<WorkerFlow>,
}

impl ConnFlow {
    pub fn new(worker: Arc<WorkerFlow>) -> Arc<ConnFlow> {
        Arc::new(ConnFlow {
            bytes: AtomicUsize::new(0),
            worker,
        })
    }

    /// Bytes in flight.
    pub fn in_flight(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Take credit for a message of `len` frame bytes.
    pub fn take(self: &Arc<Self>, len: usize) -> Credit {
        let bytes = len + MESSAGE_OVERHEAD;
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        self.worker.bytes.fetch_add(bytes, Ordering::AcqRel);
        Credit {
            flow: Arc::clone(self),
            bytes,
        }
    }
}

/// Credit for one message in flight; returned when dropped.
pub struct Credit {
    flow: Arc<ConnFlow>,
    bytes: usize,
}

impl Drop for Credit {
    fn drop(&mut self) {
        self.flow.bytes.fetch_sub(self.bytes, Ordering::SeqCst);
        let worker = &self.flow.worker;
        worker.bytes.fetch_sub(self.bytes, Ordering::SeqCst);
        if worker.waiting.load(Ordering::SeqCst) && worker.waiting.swap(false, Ordering::SeqCst) {
            let _ = worker.waker.wake();
        }
    }
}

impl std::fmt::Debug for Credit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credit({})", self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_comes_back_when_the_last_holder_drops_and_wakes_a_waiting_worker() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let worker = WorkerFlow::new(waker);
        let a = ConnFlow::new(Arc::clone(&worker));
        let b = ConnFlow::new(Arc::clone(&worker));
        let c1 = Arc::new(a.take(1000));
        let c2 = b.take(10);
        assert_eq!(a.in_flight(), 1000 + MESSAGE_OVERHEAD);
        assert_eq!(worker.in_flight(), 1010 + 2 * MESSAGE_OVERHEAD);
        let shared = Arc::clone(&c1);
        drop(c1);
        assert_eq!(a.in_flight(), 1000 + MESSAGE_OVERHEAD, "one holder is left");
        worker.wait();
        drop(shared);
        assert_eq!(a.in_flight(), 0);
        assert!(
            !worker.waiting.load(Ordering::SeqCst),
            "the drop took the wake-up"
        );
        drop(c2);
        assert_eq!(worker.in_flight(), 0);
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::ZERO))
            .unwrap();
        assert_eq!(events.iter().count(), 1, "woken once");
    }
}
