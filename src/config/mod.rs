//! The configuration: TOML text → raw serde structs → validated [`Config`]; and room routing.
//!
//! Parsing (serde, `deny_unknown_fields`) and validation are separate steps. Neither touches a
//! file except [`Config::load`] and a `jwt_secret_file` the text names, so tests feed literal
//! strings. Every error carries the position of the offending value. What the values *do* is
//! left to the server, the relay core and [`crate::auth`].
//!
//! - `mod.rs`: the validated types, their defaults, loading and routing.
//! - `raw.rs`: the file's shape as serde reads it; `units.rs`: durations and sizes.
//! - `ipnet.rs`: networks for `trusted_proxies`.
//! - `validate.rs` (server, `[auth]`), `room.rs` (each `[[room]]`) and `api.rs` (`[api]`):
//!   raw → validated.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod api;
mod ipnet;
mod raw;
mod room;
mod units;
mod validate;

#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod tests;

pub use ipnet::IpNet;
use units::{GIB, KIB, MIB};
use validate::resolve_workers;

/// A room's message rate per member, in messages per second (0: no limit). Off by default: a
/// chat has no natural rate, and the send-queue bound already protects the server.
pub const DEFAULT_MAX_MESSAGES_PER_SECOND: u32 = 0;

/// Addresses to listen on. Loopback, so a fresh install is reachable only through a reverse proxy
/// on the same host (nginx) until the operator opens it on purpose.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
/// Worker threads; 0 means one per CPU core (one reactor per core, no locks between them).
pub const DEFAULT_WORKERS: usize = 0;
/// Connections, all listeners together. The per-box target; an idle connection costs a few KiB,
/// so this is a few hundred MiB at most. The systemd unit raises the file limit above it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Connections per client address; 0 means no limit. Off by default because every client behind
/// one NAT or an untrusted proxy shares an address, and a default limit would lock them out.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 0;
/// Time from accept to a complete upgrade request. A browser needs one round trip; a client that
/// dribbles its headers (slowloris) must not hold a slot for long.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time between our pings to a quiet client. Well under nginx's 60 s `proxy_read_timeout` and the
/// usual NAT and load-balancer idle timeouts, so an idle but healthy connection is never cut.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(25);
/// Time with nothing received, not even a pong, before we close. Over two ping intervals, so one
/// lost pong alone does not cut a client.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time we wait for the peer's close frame after sending ours, then drop the TCP connection.
/// Long enough for a slow mobile link, short enough that a vanished peer frees its slot soon.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes in one message (after reassembling fragments). Chat messages are small; the bound caps
/// what one client can make us buffer. Over it the client is closed with 1009.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * KIB as usize;
/// Bytes in an HTTP request head. The common 8 KiB limit of HTTP servers; a browser's upgrade
/// request, cookies included, is usually a fraction of it. Over it the answer is 431.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 8 * KIB as usize;
/// Bytes queued for one connection. Sixteen maximum-size messages of slack ride out a short stall;
/// past it the client is closed with 1008 instead of growing memory or slowing the others.
pub const DEFAULT_SEND_QUEUE_LIMIT: usize = MIB as usize;
/// Time after SIGTERM for clients to take their 1001 close before we exit anyway. Well under
/// systemd's default 90 s stop timeout.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Peers whose `X-Forwarded-For` is believed: loopback, where nginx runs in the usual setup.
pub const DEFAULT_TRUSTED_PROXIES: [IpNet; 2] = [
    IpNet {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        prefix: 32,
    },
    IpNet {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        prefix: 128,
    },
];
/// Whether `GET /` serves a small HTML test page. Off in a config file (production serves no HTML
/// it was not asked to); [`Config::builtin_default`] turns it on so `cargo run` shows something.
pub const DEFAULT_DEMO_PAGE: bool = false;
/// Members of a room placed on the room's own worker before new ones are spread over all
/// workers. A small room then relays without crossing threads (no hand-off, no wake-up per
/// message); a large one still fans out on every core. 32: past that many recipients the
/// fan-out itself outweighs the hand-off.
pub const DEFAULT_COLOCATE_MEMBERS: usize = 32;
/// Subprotocols a room offers (none): most clients ask for none.
pub const DEFAULT_SUBPROTOCOLS: [&str; 0] = [];
/// Members in one room: no cap of its own (0). `max_connections` already bounds the server, and a
/// cap per room surprised the operator of a live event whose 10,001st viewer got 503 on a server
/// with room for ten times more; a room that needs one sets it.
pub const DEFAULT_MAX_MEMBERS: usize = 0;
/// `send_queue_limit` must hold at least this many of the largest messages a room allows: a
/// reader that keeps up is then never cut by one burst of full-size messages, and the flow
/// control between threads (a fraction of the limit per pass) always has a whole message of room.
pub const QUEUE_MESSAGES_MIN: usize = 4;
/// Whether the sender gets its own message back, as with socket.io's `io.emit`: a chat client can
/// then draw its message when it comes back in the room's order, like everyone else's.
pub const DEFAULT_ECHO: bool = true;
/// Origins a room accepts (none listed): any origin, including clients that send none.
pub const DEFAULT_ALLOWED_ORIGINS: [&str; 0] = [];
/// Who may join a room: anyone. A relay usually starts as an open chat; a room that needs
/// tokens says so, and then the file must also hold the secret that checks them.
pub const DEFAULT_ROOM_AUTH: RoomAuth = RoomAuth::None;
/// Whether a room compresses messages (permessage-deflate, RFC 7692) for clients that offer it.
/// Off in a config file: it costs a deflate per message and an inflate per compressed message
/// received, worth it for text that compresses (JSON), not for data that is compressed already;
/// [`Config::builtin_default`] turns it on, as browsers expect.
pub const DEFAULT_COMPRESSION: bool = false;
/// Bytes under which a message is sent plain in a room with compression on. On JSON, deflate
/// saves nothing at 64 bytes and about 15% (18 bytes) at 128, against a 2-3 µs reset of the
/// compressor per message and an inflate on every recipient; from 256 bytes it saves a third.
pub const DEFAULT_COMPRESSION_MIN_SIZE: usize = 128;
/// Messages a room keeps for `?last=N` and resuming: none, as before history existed. A room that
/// wants them says how many.
pub const DEFAULT_HISTORY_SIZE: usize = 0;
/// Upper bound for `history_size`: a room keeping more is a message store, not a relay.
pub const HISTORY_SIZE_CEILING: usize = 100_000;
/// How long a kept message stays: long enough for a phone asleep over lunch to resume, short
/// enough that an abandoned room's history does not live on for days.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(3600);
/// Bytes of kept messages in all rooms together (each worker keeps its share for the rooms it
/// sequences); past it the oldest messages of the largest rooms go first. 256 MiB: 100 busy rooms
/// of 1,000 messages of 2 KiB, on a machine that holds 250,000 idle connections in the same.
pub const DEFAULT_HISTORY_MEMORY: usize = 256 * MIB as usize;
/// Whether a room tells its `wsrelay.v1` members who joins and leaves: off, as a room of
/// thousands has little use for a stream of strangers' comings and goings.
pub const DEFAULT_PRESENCE: bool = false;
/// Join and leave events a room with presence sends per second at most; past it, members get
/// the member count instead (`{"type":"members"}`), at most once per second. 50: a chat of a
/// hundred people coming and going is told every event; a stadium is told counts.
pub const DEFAULT_PRESENCE_MAX_EVENTS_PER_SECOND: u32 = 50;
/// Lower bound for `history_memory`: one full-size message per worker must fit.
pub const HISTORY_MEMORY_FLOOR: usize = MIB as usize;

/// The API's address when `[api]` leaves `listen` out: loopback, so the API is reachable only
/// from the host itself (the backend, or a proxy that adds TLS) until the operator says otherwise.
pub const DEFAULT_API_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001));
/// API connections at once. A backend keeps a few keep-alive connections (a pool of 10-100 is
/// usual); 256 leaves room for several of them while bounding what a flood of sockets costs
/// (each holds at most a request head, or a body of its room's `max_message_size`).
pub const DEFAULT_API_MAX_CONNECTIONS: usize = 256;
/// Lower bound for the API key, in bytes: 256 bits, too many to guess online or offline.
pub const API_KEY_FLOOR: usize = 32;

/// Upper bound for `workers`: far past any machine we run on; a typo like 10000 fails instead.
pub const MAX_WORKERS: usize = 1024;
/// Upper bound for `max_message_size`, in bytes (1 GiB): beyond it is a typo, not a chat message.
pub const MESSAGE_SIZE_CEILING: usize = GIB as usize;
/// Lower bound for `max_header_size`, in bytes: a real upgrade request does not fit in less.
pub const HEADER_SIZE_FLOOR: usize = 512;
/// Upper bound for `max_header_size`, in bytes (1 MiB).
pub const HEADER_SIZE_CEILING: usize = MIB as usize;
/// Upper bound for every duration (one year): keeps `Instant + duration` far from overflowing.
pub const DURATION_CEILING: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lower bound for the JWT secret, in bytes: HS256 wants a key at least as long as its 256-bit
/// hash (RFC 7518 §3.2); anything shorter can be brute-forced offline from one captured token.
pub const JWT_SECRET_FLOOR: usize = 32;
/// Upper bound for a `jwt_secret_file`, in bytes: a key is a few dozen bytes, so a larger file is
/// the wrong file (and reading stops there, whatever the path names).
pub const JWT_SECRET_FILE_CEILING: usize = 64 * KIB as usize;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    /// The `[auth]` table; `None` when the file has none (then no room may use `auth = "jwt"`).
    pub auth: Option<AuthConfig>,
    /// In file order.
    pub rooms: Vec<RoomConfig>,
    /// The `[cluster]` table; `None`: a node on its own, rooms sequenced by their owner worker.
    pub cluster: Option<ClusterConfig>,
    /// The `[api]` table; `None` when the file has none (then there is no API listener).
    pub api: Option<ApiConfig>,
}

/// The `[api]` table: the server-side API's own listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The bearer key every request must carry, from `key` or read from `key_file` (trailing
    /// newline trimmed); at least [`API_KEY_FLOOR`] bytes.
    pub key: Secret,
    /// API connections at once; past it a new one is closed at accept.
    pub max_connections: usize,
}

/// `[cluster]`: several nodes share rooms through Redis (see `server::cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Every Redis, in file order (one when `redis` is a single URL); no two the same server.
    /// A room lives on `shards[shard_of(path, shards.len())]` (`server::cluster::shard`), so
    /// every node must list the same Redis in the same order.
    pub shards: Vec<RedisShard>,
    /// The Redis one Redis thread serves: the first shard's, and each thread gets a copy with
    /// its own ([`ClusterConfig::for_shard`]). `redis://host[:port]`, as given.
    pub redis_url: String,
    /// Host and port of `redis_url` (see [`RedisShard::addr`]).
    pub redis: (String, u16),
    /// This node in logs; empty in the file means hostname:port, filled in at start.
    pub name: String,
    /// Keys and channels start with it (`<prefix>:room:{<path>}`).
    pub prefix: String,
}

/// One Redis of `[cluster] redis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisShard {
    /// `redis://host[:port]`, as given: logs and the `redis` label of metrics name it so.
    pub url: String,
    /// Host and port (6379 when the URL has none); resolved when the node connects.
    pub addr: (String, u16),
}

impl ClusterConfig {
    /// This configuration as the Redis thread of shard `i` sees it: `redis_url` and `redis`
    /// name that shard.
    pub fn for_shard(&self, i: usize) -> ClusterConfig {
        let shard = &self.shards[i];
        ClusterConfig {
            redis_url: shard.url.clone(),
            redis: shard.addr.clone(),
            ..self.clone()
        }
    }
}

/// Keys and channels start with this when `[cluster]` sets no `prefix`.
pub const DEFAULT_CLUSTER_PREFIX: &str = "wsrelay";

/// Redis's port when a `redis://` URL gives none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// The `[server]` table, defaults filled in. Field docs give the TOML key where it differs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// At least one address.
    pub listen: Vec<SocketAddr>,
    /// Already resolved: never 0.
    pub workers: usize,
    pub max_connections: usize,
    /// 0: no limit.
    pub max_connections_per_ip: usize,
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    /// Always greater than `ping_interval`.
    pub idle_timeout: Duration,
    pub close_timeout: Duration,
    pub max_message_size: usize,
    pub max_header_size: usize,
    pub send_queue_limit: usize,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub demo_page: bool,
    /// A room's first `colocate_members` members are placed on the worker that sequences the
    /// room; later ones are spread over all workers. 0: always spread.
    pub colocate_members: usize,
    /// Bytes of kept messages, all rooms together (see [`DEFAULT_HISTORY_MEMORY`]).
    pub history_memory: usize,
}

/// One `[[room]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomConfig {
    /// As written: an exact path like `/chat`, or a pattern like `/rooms/*`.
    pub path: String,
    /// `path` ends with `/*`: one room per request path under it.
    pub pattern: bool,
    /// In preference order; valid HTTP tokens, no duplicates.
    pub subprotocols: Vec<String>,
    /// Members at once; 0: no cap.
    pub max_members: usize,
    pub echo: bool,
    /// Exact `scheme://host[:port]`, lowercase; empty: any origin.
    pub allowed_origins: Vec<String>,
    /// The room's own key, or the server's `max_message_size` when absent.
    pub max_message_size: usize,
    /// Messages a member may send per second, with a burst of as many; 0: no limit.
    pub max_messages_per_second: u32,
    /// Who may join.
    pub auth: RoomAuth,
    /// Compress for clients that offer permessage-deflate.
    pub compression: bool,
    /// Messages shorter than this are sent plain even with `compression` on.
    pub compression_min_size: usize,
    /// Messages kept for replay and resume (0: none).
    pub history_size: usize,
    /// A kept message is dropped after this long.
    pub history_ttl: Duration,
    /// v1 members get join and leave events, and the API lists the members.
    pub presence: bool,
    /// Presence events per second at most; past it, member counts instead.
    pub presence_max_events_per_second: u32,
}

/// A room's `auth` key: who may join it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomAuth {
    /// Anyone whose origin is allowed.
    None,
    /// Only clients presenting a valid HS256 token (see [`crate::auth`]) that opens the room.
    Jwt,
}

/// The `[auth]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// The HS256 key, from `jwt_secret` or read from `jwt_secret_file` (trailing newline
    /// trimmed) when the configuration is loaded; at least [`JWT_SECRET_FLOOR`] bytes.
    pub jwt_secret: Secret,
}

/// Key bytes. `Debug` shows only the length, so a logged config never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The key itself, for the one place that needs it: verification.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a configuration was refused. `Display` gives `PATH:LINE:COL: message`, dropping the parts
/// that are not known (no path when parsed from a string, no position when the file can't be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    path: Option<PathBuf>,
    position: Option<(usize, usize)>,
    message: String,
}

impl ConfigError {
    /// What is wrong, without path or position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 1-based line and column (in characters) of the offending text, when known.
    pub fn position(&self) -> Option<(usize, usize)> {
        self.position
    }

    /// The file, when the configuration came from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}:", path.display())?;
        }
        if let Some((line, col)) = self.position {
            write!(f, "{line}:{col}:")?;
        }
        if self.path.is_some() || self.position.is_some() {
            f.write_str(" ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates a configuration. Errors carry a position but no path. A relative
    /// `jwt_secret_file` is read from the current directory.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        validate::parse(text, None)
    }

    /// Reads and validates a configuration file. Errors carry the path. A relative
    /// `jwt_secret_file` is read from the directory of the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let with_path = |mut e: ConfigError| {
            e.path = Some(path.to_owned());
            e
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            with_path(ConfigError {
                path: None,
                position: None,
                message: format!("cannot read: {e}"),
            })
        })?;
        validate::parse(&text, path.parent()).map_err(with_path)
    }

    /// The configuration used without `--config`: every server default on 127.0.0.1:8080, the
    /// demo page on, and one pattern room `/*` so that every path is a room, with compression.
    pub fn builtin_default() -> Config {
        Config {
            server: ServerConfig {
                demo_page: true,
                ..ServerConfig::default()
            },
            auth: None,
            cluster: None,
            api: None,
            rooms: vec![RoomConfig {
                path: "/*".to_owned(),
                pattern: true,
                subprotocols: Vec::new(),
                max_members: DEFAULT_MAX_MEMBERS,
                echo: DEFAULT_ECHO,
                allowed_origins: Vec::new(),
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                max_messages_per_second: DEFAULT_MAX_MESSAGES_PER_SECOND,
                auth: DEFAULT_ROOM_AUTH,
                compression: true,
                compression_min_size: DEFAULT_COMPRESSION_MIN_SIZE,
                // The demo chat shows a newcomer the room's recent messages and resumes.
                history_size: 100,
                history_ttl: DEFAULT_HISTORY_TTL,
                // The demo chat shows who is in the room.
                presence: true,
                presence_max_events_per_second: DEFAULT_PRESENCE_MAX_EVENTS_PER_SECOND,
            }],
        }
    }

    /// The room for a request path (without its query string): the room with exactly this path,
    /// else the pattern with the longest prefix. `P/*` matches every path that starts with `P/`.
    pub fn route(&self, path: &str) -> Option<&RoomConfig> {
        let exact = self.rooms.iter().find(|r| !r.pattern && r.path == path);
        exact.or_else(|| {
            self.rooms
                .iter()
                .filter(|r| r.pattern && path.starts_with(r.pattern_prefix()))
                .max_by_key(|r| r.path.len())
        })
    }
}

impl Default for ServerConfig {
    /// The values a config file gets for keys it leaves out (so `demo_page` is off).
    fn default() -> Self {
        ServerConfig {
            listen: vec![DEFAULT_LISTEN],
            workers: resolve_workers(DEFAULT_WORKERS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            send_queue_limit: DEFAULT_SEND_QUEUE_LIMIT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            trusted_proxies: DEFAULT_TRUSTED_PROXIES.to_vec(),
            demo_page: DEFAULT_DEMO_PAGE,
            colocate_members: DEFAULT_COLOCATE_MEMBERS,
            history_memory: DEFAULT_HISTORY_MEMORY,
        }
    }
}

impl RoomConfig {
    /// Its `compression_min_size` if it has `compression` on, `None` if off (a worker keeps it
    /// in 4 bytes per connection; a threshold past 4 GiB, over any message, is the same as 4 GiB).
    pub fn compress_from(&self) -> Option<u32> {
        self.compression
            .then(|| u32::try_from(self.compression_min_size).unwrap_or(u32::MAX))
    }

    /// For a pattern `P/*`, the `P/` every matching path starts with.
    pub(crate) fn pattern_prefix(&self) -> &str {
        &self.path[..self.path.len() - 1]
    }
}
