//! wsrelay: a WebSocket fan-out relay. A client opens `ws://host/<path>`; the path picks a room;
//! every message a member sends is relayed to the room's members, in one order for everyone.
//!
//! ```text
//!  TCP ─▶ acceptor thread (mio)        plain HTTP: /healthz, /metrics, refusals
//!         read the upgrade request under a deadline → route → admit → pick a worker
//!               │ hand-off: socket + 101 response (crossbeam channel + mio::Waker)
//!     ┌─────────┴──────────┬────────────────────┐
//!   worker 0 (mio)       worker 1   …         worker N-1
//!   owns its connections; decodes frames (tungstenite); each room has one owner worker
//!   that acknowledges each worker's membership (the 101 waits for it), sequences the room's
//!   messages (epoch + sequence from 1) and hands each one once to every worker with members
//!   links between workers are FIFO; what a publisher has in flight between them is bounded
//!   (credits), and a pass takes in a bounded amount before it writes; the owner keeps the
//!   room's latest messages (history) and answers replays on the same links
//!
//!  TCP ─▶ API thread (mio, only with [api])   keyed HTTP/1.1 calls → acceptor (resolves the
//!         room) → the room's owner or every worker → the answer straight back
//! ```
//!
//! - [`relay`]: the sans-IO core (rooms, sequencing, history, presence, admission), tested
//!   without sockets.
//! - [`config`]: the TOML file, parsed then validated.
//! - [`http`]: request heads in, HTTP answers out.
//! - [`deflate`]: permessage-deflate (RFC 7692): negotiation, compress once, bounded inflate.
//! - [`metrics`]: counter names and the Prometheus rendering.
//! - [`notify`], [`journal`]: the systemd side: `sd_notify`, socket activation, log priorities.
//! - [`server`]: the threads and sockets; `server::api` is the server-side API (its HTTP front and
//!   the calls it makes into the relay); with `[cluster]`, a Redis thread per shard (each room
//!   on one Redis of the list) numbers the rooms' messages in Redis, keeps their history in
//!   Redis streams and hands every node's messages back to the rooms' owners, and a registry
//!   thread writes this node's rooms and members to Redis for the API's cluster-wide lists
//!   (`server::cluster`).
//!
//! `relay`, `config` and `deflate` never import `server`.

pub mod auth;
pub mod config;
pub mod deflate;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod notify;
pub mod relay;
pub mod server;
