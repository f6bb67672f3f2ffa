//! One connection's send queue: frames waiting for the socket, bounded in bytes, written with
//! gathered writes. Knows nothing of WebSocket beyond "a frame is a run of bytes that must go out
//! whole and in order".

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Frames gathered into one `writev`. Linux allows 1024; past 64 small frames the call is already
/// large enough that the per-call cost no longer matters.
const MAX_IOVECS: usize = 64;

/// A frame waiting to go out.
#[derive(Debug)]
pub enum Chunk {
    /// A fan-out frame: the same bytes for every recipient on this worker.
    Shared(Rc<[u8]>),
    /// Bytes for this connection alone: the 101 response, pongs, pings, close frames.
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(b) => b,
            Chunk::Owned(b) => b,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Over the limit: nothing was queued; the connection must be closed as too slow.
    Full,
}

/// The send queue.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head_written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
}

impl Outbox {
    /// Queue a fan-out frame unless that takes the queue past `limit` bytes. An empty queue
    /// takes any frame: a reader that keeps up gets even a message larger than the limit.
    pub fn push_shared(&mut self, frame: &Rc<[u8]>, limit: usize) -> Push {
        if self.queued > 0 && self.queued + frame.len() > limit {
            return Push::Full;
        }
        self.queued += frame.len();
        self.chunks.push_back(Chunk::Shared(Rc::clone(frame)));
        Push::Queued
    }

    /// Queue bytes of this connection's own (control frames, the handshake answer). Never refused:
    /// they are small and each is bounded by the protocol.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        self.chunks.push_back(Chunk::Owned(bytes));
    }

    /// Drop every frame that has not started to go out (a frame half written must be finished,
    /// or the stream would be corrupt). Used before a close frame that must not wait.
    pub fn drop_unstarted(&mut self) {
        let keep = usize::from(self.head_written > 0);
        while self.chunks.len() > keep {
            if let Some(c) = self.chunks.pop_back() {
                self.queued -= c.bytes().len();
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes waiting.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Write as much as the socket takes, `MAX_IOVECS` frames per call, until the queue is empty
    /// or the socket would block. Returns the bytes written; `WouldBlock` is not an error here.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (i, c) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                let b = c.bytes();
                slices[n] = IoSlice::new(if i == 0 { &b[self.head_written..] } else { b });
                n += 1;
            }
            let written = match w.write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += written;
            self.advance(written);
        }
        Ok(total)
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let left = self.chunks[0].bytes().len() - self.head_written;
            if n >= left {
                n -= left;
                self.head_written = 0;
                self.chunks.pop_front();
            } else {
                self.head_written += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, then blocks after `budget` in total.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                for &x in b.iter() {
                    if n == self.cap || n == self.budget {
                        break;
                    }
                    self.got.push(x);
                    n += 1;
                }
            }
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn frames_go_out_whole_and_in_order_across_partial_writes() {
        let mut o = Outbox::default();
        let shared: Rc<[u8]> = Rc::from(&b"abcdef"[..]);
        o.push_owned(b"101".to_vec());
        for _ in 0..100 {
            assert_eq!(o.push_shared(&shared, 10_000), Push::Queued);
        }
        let mut w = Trickle {
            got: vec![],
            cap: 7,
            budget: 50,
        };
        assert_eq!(o.write_to(&mut w).unwrap(), 50);
        assert_eq!(o.queued(), 3 + 600 - 50);
        w.budget = usize::MAX;
        o.write_to(&mut w).unwrap();
        assert!(o.is_empty());
        let mut want = b"101".to_vec();
        for _ in 0..100 {
            want.extend_from_slice(b"abcdef");
        }
        assert_eq!(w.got, want);
    }

    #[test]
    fn an_empty_queue_takes_a_frame_over_the_limit() {
        let mut o = Outbox::default();
        let big: Rc<[u8]> = Rc::from(&[0u8; 100][..]);
        assert_eq!(o.push_shared(&big, 50), Push::Queued);
        assert_eq!(o.push_shared(&big, 50), Push::Full);
    }

    #[test]
    fn limit_refuses_and_drop_keeps_the_half_written_frame() {
        let mut o = Outbox::default();
        let f: Rc<[u8]> = Rc::from(&[1u8; 10][..]);
        assert_eq!(o.push_shared(&f, 25), Push::Queued);
        assert_eq!(o.push_shared(&f, 25), Push::Queued);
        assert_eq!(o.push_shared(&f, 25), Push::Full);
        let mut w = Trickle {
            got: vec![],
            cap: 4,
            budget: 4,
        };
        o.write_to(&mut w).unwrap();
        o.drop_unstarted();
        o.push_owned(vec![9, 9]);
        w.budget = 100;
        o.write_to(&mut w).unwrap();
        assert_eq!(w.got, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9]);
        assert_eq!(o.queued(), 0);
    }
}
