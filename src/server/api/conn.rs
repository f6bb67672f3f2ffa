//! One API connection: its phase, what it has read and not used yet, the answer being written.
//! The socket work (read until `WouldBlock` or a bound, write what the socket takes) is here;
//! what a request means is `handle`'s.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;

use super::calls::Outcome;
use super::request::Head;
use crate::metrics::ApiEndpoint;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;

/// Where a connection is in its current request.
pub enum Phase {
    /// Reading a request head (or nothing yet: between requests).
    Head,
    /// The head is in: reading its `Content-Length` bytes of body.
    Body { head: Head, work: Work },
    /// Calls are with the relay; their outcomes fill `job`. Nothing more is read meanwhile:
    /// pipelined requests wait in the socket.
    Waiting(Job),
    /// Writing `out`; then the next request, or `Closing`.
    Writing,
    /// The answer is out and our side shut: read and drop until EOF (so unread bytes do not
    /// turn the close into a reset that destroys the answer), then drop.
    Closing,
}

/// What a request with a body will do once the body is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Publish { room: String, binary: bool },
    Batch,
}

/// The outcomes a request waits for, one slot per call (a batch has one per line).
pub struct Job {
    pub batch: bool,
    pub results: Vec<Option<Outcome>>,
    pub left: usize,
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// The socket has nothing more for now.
    Drained,
    /// `cap` bytes are buffered; the socket may hold more.
    Full,
    /// The peer closed its side (what came before it is buffered).
    Eof,
}

pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Tells this connection from an earlier one in the same slab slot (for late outcomes).
    pub serial: u64,
    pub phase: Phase,
    /// Read and not used yet: the request in progress, and any pipelined after it.
    pub buf: Vec<u8>,
    pub out: Vec<u8>,
    pub written: usize,
    /// Close once `out` is written.
    pub close_after: bool,
    /// The peer has sent EOF.
    pub eof: bool,
    /// When the current wait (head, body, write, linger) ends.
    pub deadline: Instant,
    /// The endpoint of the request in progress (for metrics).
    pub endpoint: ApiEndpoint,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, serial: u64, deadline: Instant) -> Conn {
        Conn {
            stream,
            peer,
            serial,
            phase: Phase::Head,
            buf: Vec::new(),
            out: Vec::new(),
            written: 0,
            close_after: false,
            eof: false,
            deadline,
            endpoint: ApiEndpoint::Unknown,
        }
    }

    /// Read until the socket has nothing more, EOF, or `cap` bytes are buffered.
    pub fn fill(&mut self, cap: usize) -> io::Result<Filled> {
        if self.eof {
            return Ok(Filled::Eof);
        }
        loop {
            let len = self.buf.len();
            if len >= cap {
                return Ok(Filled::Full);
            }
            let want = (cap - len).min(READ_CHUNK);
            self.buf.resize(len + want, 0);
            match self.stream.read(&mut self.buf[len..]) {
                Ok(0) => {
                    self.buf.truncate(len);
                    self.eof = true;
                    return Ok(Filled::Eof);
                }
                Ok(n) => self.buf.truncate(len + n),
                Err(e) => {
                    self.buf.truncate(len);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(Filled::Drained),
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(e),
                    }
                }
            }
        }
    }

    /// Write what the socket takes of `out`; true once all of it is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out = Vec::new();
        self.written = 0;
        Ok(true)
    }

    /// Shut our side after the last answer.
    pub fn shut(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Read and drop what the peer still sends; true at EOF (or a failed read).
    pub fn discard(&mut self) -> bool {
        if self.eof {
            return true;
        }
        let mut sink = [0u8; 1024];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}
