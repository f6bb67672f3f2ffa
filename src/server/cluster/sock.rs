//! One TCP connection to Redis, non-blocking: the connect finishing, reads within a budget,
//! writes until `WouldBlock`, and the RESP values read so far.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use super::resp::{self, Value};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one connection per loop pass: the pass then hands what it read to the
/// workers, and reads the rest next pass (a busy subscription never keeps the thread reading).
const READ_BUDGET: usize = 1 << 20;

/// One socket to Redis and its buffers.
pub(super) struct Sock {
    stream: TcpStream,
    connected: bool,
    rbuf: Vec<u8>,
    pub wbuf: Vec<u8>,
}

impl Sock {
    pub(super) fn open(addr: std::net::SocketAddr, poll: &Poll, token: Token) -> io::Result<Sock> {
        let mut stream = TcpStream::connect(addr)?;
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Sock {
            stream,
            connected: false,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
        })
    }

    /// After a writable event: whether the non-blocking connect is done (an error if it failed).
    pub(super) fn check_connected(&mut self) -> io::Result<()> {
        if self.connected {
            return Ok(());
        }
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                let _ = self.stream.set_nodelay(true);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Read until `WouldBlock` or [`READ_BUDGET`]; true when the budget stopped it (read again
    /// next pass: no new event will come for what is already there). EOF is an error: Redis
    /// never closes a healthy link.
    pub(super) fn fill(&mut self) -> io::Result<bool> {
        if !self.connected {
            return Ok(false);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let mut read = 0;
        loop {
            if read >= READ_BUDGET {
                return Ok(true);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Write until done or `WouldBlock`.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if !self.connected {
            return Ok(());
        }
        let mut at = 0;
        let r = loop {
            if at == self.wbuf.len() {
                break Ok(());
            }
            match self.stream.write(&self.wbuf[at..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.wbuf.drain(..at);
        r
    }

    /// The complete values read so far.
    pub(super) fn values(&mut self) -> io::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            match resp::parse(&self.rbuf[at..]) {
                Ok(Some((v, used))) => {
                    out.push(v);
                    at += used;
                }
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
        self.rbuf.drain(..at);
        Ok(out)
    }
}
