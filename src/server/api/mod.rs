//! The server-side API: a listener of its own (off unless `[api]` is configured), served by one
//! thread, `wsrelay-api`, with its own mio `Poll`; bearer keys; and calls into the relay
//! ([`calls`], the seam: the acceptor and the workers carry them out).
//!
//! - `request.rs`: a request head, the key, content types, the query (pure; fuzzed).
//! - `routes.rs`: URL and method → [`routes::Route`]; `batch.rs`: NDJSON batches.
//! - `reply.rs`: outcomes → JSON, and the HTTP response; `idempotency.rs`: `Idempotency-Key`.
//! - `conn.rs`: one connection's phases and socket work; `front.rs`: the event loop;
//!   `handle.rs`: what each request gets.
//!
//! The API is exactly as hostile-minded as the public port: non-blocking reads, a head within
//! `max_header_size` (431), a whole request within `handshake_timeout` (408), bodies by
//! `Content-Length` only and within the room's `max_message_size` (413, from the head), a cap on
//! connections (closed at accept), and nothing about the rooms before the key is shown (401).

pub mod batch;
pub mod calls;
mod conn;
mod front;
mod handle;
pub mod idempotency;
pub mod reply;
pub mod request;
pub mod routes;
pub(super) mod work;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use mio::{Poll, Waker};
use slab::Slab;

pub use calls::{Backend, Body, Call, CallId, Kept, Member, Outcome, RoomInfo, ToApi, Who};

use super::bus::{Mailbox, ToAcceptor};
use super::{EXIT_THREAD_DIED, ServerError, setup};
use crate::config::Config;
use crate::metrics::ApiCounters;

/// The API thread, bound and ready to start.
pub struct Api {
    front: front::Front,
    /// Where it listens (the port is known even when `listen` asked for port 0).
    pub addr: SocketAddr,
    pub counters: Arc<ApiCounters>,
    /// Where reloads go (`ToApi::Reload`).
    pub mailbox: Mailbox<ToApi>,
}

/// Bind the API's listener if `[api]` is configured (a bind error fails startup, like the main
/// listener's). Its calls go to `acceptor`.
pub fn bind(config: &Config, acceptor: Mailbox<ToAcceptor>) -> Result<Option<Api>, ServerError> {
    let Some(api) = &config.api else {
        return Ok(None);
    };
    let listener = mio::net::TcpListener::bind(api.listen).map_err(|source| ServerError::Bind {
        addr: api.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(setup("the API listener"))?;
    let poll = Poll::new().map_err(setup("the API's poll"))?;
    let waker =
        Arc::new(Waker::new(poll.registry(), front::WAKER).map_err(setup("the API's waker"))?);
    let (mailbox, inbox) = Mailbox::new(waker);
    let counters = Arc::new(ApiCounters::default());
    let front = front::Front {
        poll,
        listener,
        listen: api.listen,
        inbox,
        backend: Backend::new(acceptor, mailbox.clone()),
        config: Arc::new(config.clone()),
        key: api.key.clone(),
        max_connections: api.max_connections,
        disabled: false,
        conns: Slab::new(),
        calls: HashMap::new(),
        next_call: 1,
        next_serial: 0,
        idempotency: Default::default(),
        counters: Arc::clone(&counters),
        accept_warned: None,
    };
    Ok(Some(Api {
        front,
        addr,
        counters,
        mailbox,
    }))
}

impl Api {
    /// Start the `wsrelay-api` thread. A failed loop ends the process, like a worker's.
    pub fn spawn(self) -> Result<std::thread::JoinHandle<()>, ServerError> {
        let mut front = self.front;
        std::thread::Builder::new()
            .name("wsrelay-api".into())
            .spawn(move || {
                if let Err(e) = front.run() {
                    log::error!(
                        "the API thread failed: {e}; exiting with status {EXIT_THREAD_DIED}"
                    );
                    std::process::exit(EXIT_THREAD_DIED);
                }
            })
            .map_err(setup("the API thread"))
    }
}
