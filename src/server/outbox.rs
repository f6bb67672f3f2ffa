//! One connection's send queue: frames waiting for the socket, counted in bytes, written with
//! gathered writes. Knows nothing of WebSocket beyond "a frame is a run of bytes that must go out
//! whole and in order", and that pongs past a small budget may be coalesced.
//!
//! The queue never refuses a frame: whether a connection is too slow is decided by its worker
//! after it has tried to write (a reader that keeps up must never be cut for a burst that arrived
//! between two writes). [`Outbox::queued`] counts everything held for the connection, each queued
//! frame's slot included, so the limit bounds real memory however small the frames.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

use super::bus::{Pick, SharedFrame};

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

/// What a queued frame costs besides its bytes: its slot in the queue.
pub const CHUNK_OVERHEAD: usize = std::mem::size_of::<Chunk>();

/// Bytes of pongs queued and not yet sent before newer ones are coalesced: every ping gets its
/// pong while they go out (Autobahn 2.10 checks that ten pings in one write get ten pongs), but a
/// client that pings and does not read holds this much plus the one latest pong at most
/// (RFC 6455 §5.5.3 allows answering only the most recent ping). Eight pongs of 125 bytes.
pub const PONG_BUDGET: usize = 1024;

/// A frame waiting to go out.
#[derive(Debug)]
pub enum Chunk {
    /// A fan-out frame: the same bytes for every recipient on this worker.
    Shared(Rc<[u8]>),
    /// Bytes for this connection alone: the 101 response, pings, close frames.
    Owned(Vec<u8>),
    /// A pong (counted against [`PONG_BUDGET`] until it is written).
    Pong(Vec<u8>),
    /// A replayed message: one of the frames of a message history keeps, shared by every
    /// worker and every member it is replayed to.
    Kept(SharedFrame, Pick),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(b) => b,
            Chunk::Owned(b) | Chunk::Pong(b) => b,
            Chunk::Kept(f, pick) => f.pick(*pick),
        }
    }
}

/// The send queue.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head_written: usize,
    /// Bytes of the pongs in `chunks`.
    pongs_queued: usize,
    /// The latest pong while the queued ones are over [`PONG_BUDGET`]: a newer one replaces it;
    /// it joins the queue once those have gone out.
    pong: Option<Box<[u8]>>,
    /// Bytes held, with [`CHUNK_OVERHEAD`] per queued chunk.
    queued: usize,
}

impl Outbox {
    /// Queue a fan-out frame.
    pub fn push_shared(&mut self, frame: &Rc<[u8]>) {
        self.queued += frame.len() + CHUNK_OVERHEAD;
        self.chunks.push_back(Chunk::Shared(Rc::clone(frame)));
    }

    /// Queue a replayed message's frame.
    pub fn push_kept(&mut self, frame: SharedFrame, pick: Pick) {
        self.queued += frame.pick(pick).len() + CHUNK_OVERHEAD;
        self.chunks.push_back(Chunk::Kept(frame, pick));
    }

    /// Queue bytes of this connection's own (control frames, the handshake answer).
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len() + CHUNK_OVERHEAD;
        self.chunks.push_back(Chunk::Owned(bytes));
    }

    /// Put bytes ahead of everything queued. Only before anything was written (the 101 of a
    /// connection closed before its admission, ahead of its close frame).
    pub fn push_front_owned(&mut self, bytes: Vec<u8>) {
        debug_assert_eq!(self.head_written, 0, "a frame has started");
        self.queued += bytes.len() + CHUNK_OVERHEAD;
        self.chunks.push_front(Chunk::Owned(bytes));
    }

    /// Queue a pong, or hold it in place of the last one if [`PONG_BUDGET`] bytes of pongs are
    /// waiting already.
    pub fn push_pong(&mut self, pong: Vec<u8>) {
        if self.pong.is_none() && self.pongs_queued + pong.len() <= PONG_BUDGET {
            self.pongs_queued += pong.len();
            self.queued += pong.len() + CHUNK_OVERHEAD;
            self.chunks.push_back(Chunk::Pong(pong));
            return;
        }
        if let Some(old) = self.pong.take() {
            self.queued -= old.len();
        }
        self.queued += pong.len();
        self.pong = Some(pong.into_boxed_slice());
    }

    /// Drop every frame that has not started to go out (a frame half written must be finished,
    /// or the stream would be corrupt). Used before a close frame that must not wait.
    pub fn drop_unstarted(&mut self) {
        let keep = usize::from(self.head_written > 0);
        while self.chunks.len() > keep {
            if let Some(c) = self.chunks.pop_back() {
                self.forget(&c);
            }
        }
        if let Some(p) = self.pong.take() {
            self.queued -= p.len();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.pong.is_none()
    }

    /// Bytes held for the connection, queue slots included.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Write as much as the socket takes, until the queue is empty or the socket would block.
    /// Small frames are gathered through `scratch` (see [`COPY_MAX`]); at most `MAX_IOVECS`
    /// iovecs per call. Returns the bytes written; `WouldBlock` is not an error here.
    pub fn write_to(&mut self, w: &mut impl Write, scratch: &mut [u8]) -> io::Result<usize> {
        let mut total = 0;
        loop {
            if self.pongs_queued == 0
                && let Some(pong) = self.pong.take()
            {
                self.queued -= pong.len();
                self.push_pong(pong.into_vec());
            }
            if self.chunks.is_empty() {
                break;
            }
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

    /// Take a chunk that leaves unwritten out of the counts.
    fn forget(&mut self, c: &Chunk) {
        self.queued -= c.bytes().len() + CHUNK_OVERHEAD;
        if let Chunk::Pong(p) = c {
            self.pongs_queued -= p.len();
        }
    }

    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let left = self.chunks[0].bytes().len() - self.head_written;
            if n >= left {
                n -= left;
                self.head_written = 0;
                if let Some(Chunk::Pong(p)) = self.chunks.pop_front() {
                    self.pongs_queued -= p.len();
                }
                self.queued -= CHUNK_OVERHEAD;
            } else {
                self.head_written += n;
                n = 0;
            }
        }
    }
}

/// A socket written with `send(2)` / `sendmsg(2)` rather than `write(2)` / `writev(2)`: the same
/// bytes, without the VFS layer a file write goes through (`vfs_writev` and `fdget_pos` were 5 %
/// of a worker's time in the 1,000 rooms x 10 profile), and `MSG_NOSIGNAL`: a peer gone is an
/// `EPIPE`, never a signal.
pub struct Sender<'a, S: std::os::fd::AsRawFd>(pub &'a S);

impl<S: std::os::fd::AsRawFd> Write for Sender<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes for the call; the fd is the socket's,
        // open while `self.0` is borrowed.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let [one] = bufs {
            return self.write(one);
        }
        // SAFETY: an all-zero msghdr is valid (no name, no control data); IoSlice is
        // ABI-compatible with iovec (std guarantees it on Unix), and the slices outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = bufs.as_ptr().cast_mut().cast();
        msg.msg_iovlen = bufs.len() as _;
        // SAFETY: `msg` points at `bufs`, valid for the call; the fd is the socket's.
        let n = unsafe { libc::sendmsg(self.0.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
            o.push_shared(&shared);
        }
        let mut w = Trickle {
            got: vec![],
            cap: 7,
            budget: 50,
        };
        assert_eq!(o.write_to(&mut w, &mut [0; 4096]).unwrap(), 50);
        // 50 bytes out: the 101 and 7 whole frames gone, the 8th started.
        assert_eq!(o.queued(), 3 + 600 - 50 + 93 * CHUNK_OVERHEAD);
        w.budget = usize::MAX;
        o.write_to(&mut w, &mut [0; 4096]).unwrap();
        assert!(o.is_empty());
        assert_eq!(o.queued(), 0);
        let mut want = b"101".to_vec();
        for _ in 0..100 {
            want.extend_from_slice(b"abcdef");
        }
        assert_eq!(w.got, want);
    }

    #[test]
    fn small_frames_are_gathered_and_large_ones_passed_through_in_order() {
        let mut o = Outbox::default();
        let small: Rc<[u8]> = Rc::from(&[1u8; 100][..]);
        let big: Rc<[u8]> = Rc::from(&[2u8; COPY_MAX + 1][..]);
        let mut want = Vec::new();
        for k in 0..200 {
            let f = if k % 7 == 3 { &big } else { &small };
            o.push_shared(f);
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
    fn drop_keeps_the_half_written_frame() {
        let mut o = Outbox::default();
        let f: Rc<[u8]> = Rc::from(&[1u8; 10][..]);
        o.push_shared(&f);
        o.push_shared(&f);
        o.push_shared(&f);
        let mut w = Trickle {
            got: vec![],
            cap: 4,
            budget: 4,
        };
        o.write_to(&mut w, &mut [0; 4096]).unwrap();
        o.push_pong(vec![7]);
        o.drop_unstarted();
        o.push_owned(vec![9, 9]);
        w.budget = 100;
        o.write_to(&mut w, &mut [0; 4096]).unwrap();
        assert_eq!(w.got, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9]);
        assert_eq!(o.queued(), 0);
    }

    #[test]
    fn pongs_go_out_in_order_and_past_the_budget_only_the_latest_waits() {
        let mut o = Outbox::default();
        let f: Rc<[u8]> = Rc::from(&[1u8; 10][..]);
        o.push_shared(&f);
        // A thousand pongs of 100 bytes while nothing is written: those that fit in the budget
        // wait in order, the rest are coalesced into the latest.
        for p in 0..1000u32 {
            let mut pong = vec![0u8; 100];
            pong[..4].copy_from_slice(&p.to_be_bytes());
            o.push_pong(pong);
        }
        let queued_pongs = PONG_BUDGET / 100;
        assert_eq!(
            o.queued(),
            10 + (1 + queued_pongs) * CHUNK_OVERHEAD + (queued_pongs + 1) * 100,
            "the budget's pongs and one latest, however many pings"
        );
        let mut w = Trickle {
            got: vec![],
            cap: usize::MAX,
            budget: usize::MAX,
        };
        o.write_to(&mut w, &mut [0; 4096]).unwrap();
        assert_eq!(o.queued(), 0);
        let mut want = vec![1u8; 10];
        for p in (0..queued_pongs as u32).chain([999]) {
            let mut pong = vec![0u8; 100];
            pong[..4].copy_from_slice(&p.to_be_bytes());
            want.extend(pong);
        }
        assert_eq!(w.got, want, "in order, the latest last");
        // A socket that keeps up gets a pong for every ping.
        for p in 0..50u8 {
            o.push_pong(vec![p; 100]);
            o.write_to(&mut w, &mut [0; 4096]).unwrap();
        }
        assert_eq!(w.got.len(), want.len() + 50 * 100);
    }

    #[test]
    fn sender_gathers_slices_and_a_gone_peer_is_an_error_not_a_signal() {
        use std::io::Read;
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let slices = [IoSlice::new(b"ab"), IoSlice::new(b""), IoSlice::new(b"cde")];
        assert_eq!(Sender(&a).write_vectored(&slices).unwrap(), 5);
        assert_eq!(Sender(&a).write(b"f").unwrap(), 1);
        let mut got = [0u8; 6];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcdef");
        drop(b);
        let e = Sender(&a).write(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
