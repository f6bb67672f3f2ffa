//! One connection's send queue: frames waiting for the socket, bounded in bytes, written with
//! gathered writes. Knows nothing of WebSocket beyond "a frame is a run of bytes that must go out
//! whole and in order".

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Frames gathered into one `writev`. Linux allows 1024; past 64 small frames the call is already
/// large enough that the per-call cost no longer matters.
const MAX_IOVECS: usize = 64;

/// Frames up to this size are copied into the caller's scratch buffer, back to back, and go out
/// as one iovec: copying 70 bytes from a frame every recipient shares (hot in cache) costs less
/// than the iovec entry that would carry them, because the kernel copies iovec by iovec at a
/// fixed cost each (`_copy_from_iter` was 17 % of the server's CPU in the 1k fan-out with one
/// iovec per frame). Larger frames are passed by reference. The queue itself still holds
/// shared frames, so a slow reader costs 16 bytes per queued frame, not a copy.
const COPY_MAX: usize = 1024;

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

    /// Write as much as the socket takes, until the queue is empty or the socket would block.
    /// Small frames are gathered through `scratch` (see [`COPY_MAX`]); at most `MAX_IOVECS`
    /// iovecs per call. Returns the bytes written; `WouldBlock` is not an error here.
    pub fn write_to(&mut self, w: &mut impl Write, scratch: &mut [u8]) -> io::Result<usize> {
        let mut total = 0;
        while !self.chunks.is_empty() {
            // (copied, start, end): scratch[start..end], or chunk `start` when not copied.
            let mut segs = [(false, 0usize, 0usize); MAX_IOVECS];
            let mut n = 0;
            let mut used = 0;
            for (i, c) in self.chunks.iter().enumerate() {
                let b = c.bytes();
                let b = if i == 0 { &b[self.head_written..] } else { b };
                let copy = b.len() <= COPY_MAX;
                if copy && used + b.len() > scratch.len() {
                    break;
                }
                let extends = copy && n > 0 && segs[n - 1].0 && segs[n - 1].2 == used;
                if !extends && n == MAX_IOVECS {
                    break;
                }
                if copy {
                    scratch[used..used + b.len()].copy_from_slice(b);
                    if extends {
                        segs[n - 1].2 += b.len();
                    } else {
                        segs[n] = (true, used, used + b.len());
                        n += 1;
                    }
                    used += b.len();
                } else {
                    segs[n] = (false, i, 0);
                    n += 1;
                }
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            for (slot, &(copied, a, b)) in slices.iter_mut().zip(&segs[..n]) {
                *slot = if copied {
                    IoSlice::new(&scratch[a..b])
                } else {
                    let bytes = self.chunks[a].bytes();
                    IoSlice::new(if a == 0 {
                        &bytes[self.head_written..]
                    } else {
                        bytes
                    })
                };
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
        assert_eq!(o.write_to(&mut w, &mut [0; 4096]).unwrap(), 50);
        assert_eq!(o.queued(), 3 + 600 - 50);
        w.budget = usize::MAX;
        o.write_to(&mut w, &mut [0; 4096]).unwrap();
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
    fn small_frames_are_gathered_and_large_ones_passed_through_in_order() {
        let mut o = Outbox::default();
        let small: Rc<[u8]> = Rc::from(&[1u8; 100][..]);
        let big: Rc<[u8]> = Rc::from(&[2u8; COPY_MAX + 1][..]);
        let mut want = Vec::new();
        for k in 0..200 {
            let f = if k % 7 == 3 { &big } else { &small };
            assert_eq!(o.push_shared(f, usize::MAX), Push::Queued);
            want.extend_from_slice(f);
        }
        o.push_owned(vec![9; 5]);
        want.extend_from_slice(&[9; 5]);
        let mut w = Trickle {
            got: vec![],
            cap: 3000,
            budget: usize::MAX,
        };
        // A scratch smaller than the queue: several gathered writes.
        o.write_to(&mut w, &mut [0; 2048]).unwrap();
        assert!(o.is_empty());
        assert_eq!(w.got, want);
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
        o.write_to(&mut w, &mut [0; 4096]).unwrap();
        o.drop_unstarted();
        o.push_owned(vec![9, 9]);
        w.budget = 100;
        o.write_to(&mut w, &mut [0; 4096]).unwrap();
        assert_eq!(w.got, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9]);
        assert_eq!(o.queued(), 0);
    }
}
