//! The server-side API from the tests' side: a daemon with an `[api]` table, and a small
//! HTTP/1.1 client over one keep-alive connection.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::{Daemon, IO_TIMEOUT, header, read_head, status};

/// The key every test daemon's API takes.
pub const API_KEY: &str = "test-api-key-0123456789abcdef-0123456789";

/// The `Authorization` header line with [`API_KEY`].
pub fn auth() -> String {
    format!("Authorization: Bearer {API_KEY}\r\n")
}

impl Daemon {
    /// Start with `config` and an `[api]` table on a free loopback port with [`API_KEY`];
    /// `api_extra` holds more `[api]` lines (e.g. `max_connections = 4\n`).
    pub fn start_api(config: &str, api_extra: &str) -> Daemon {
        Daemon::start(&with_api(config, api_extra))
    }

    /// A plain connection to the API listener.
    pub fn api_tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.api_addr()).expect("connect to the API");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// One authorized request on a fresh connection: status, head, body.
    pub fn api(&self, method: &str, path: &str, headers: &str, body: &[u8]) -> Response {
        Client::new(self).send(method, path, headers, body)
    }
}

/// `config` with an `[api]` table added (port 0, [`API_KEY`], `api_extra`).
pub fn with_api(config: &str, api_extra: &str) -> String {
    format!("{config}\n[api]\nlisten = \"127.0.0.1:0\"\nkey = \"{API_KEY}\"\n{api_extra}")
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.head, name)
    }

    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {}", self.text()))
            .to_owned()
    }
}

/// One keep-alive connection to the API.
pub struct Client {
    pub s: TcpStream,
}

impl Client {
    pub fn new(d: &Daemon) -> Client {
        Client { s: d.api_tcp() }
    }

    /// Send an authorized request (`headers`: more lines, each ending in CRLF) and read the
    /// answer.
    pub fn send(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> Response {
        self.write(&request(
            method,
            path,
            &format!("{}{headers}", auth()),
            body,
        ));
        self.read()
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to the API");
    }

    /// Read one answer (head, then `Content-Length` bytes).
    pub fn read(&mut self) -> Response {
        read_response(&mut self.s)
    }

    /// Whether the server has closed the connection (EOF, or a reset).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        !matches!(self.s.read(&mut b), Ok(n) if n > 0)
    }
}

/// A request with `headers` as given (no key added) and a `Content-Length` when `body` is not
/// empty.
pub fn request(method: &str, path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let length = match body.is_empty() {
        true => String::new(),
        false => format!("Content-Length: {}\r\n", body.len()),
    };
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}{length}\r\n")
        .into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn read_response(s: &mut TcpStream) -> Response {
    let head = read_head(s);
    let mut body = vec![0; header(&head, "content-length").map_or(0, |l| l.parse().unwrap())];
    s.read_exact(&mut body).expect("read the body");
    Response {
        status: status(&head),
        head,
        body,
    }
}
