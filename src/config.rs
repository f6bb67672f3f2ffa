//! The configuration: TOML text → raw serde structs → validated [`Config`]; and room routing.
//!
//! Parsing (serde, `deny_unknown_fields`) and validation are separate steps, and neither touches a
//! file except [`Config::load`], so tests feed literal strings. Every error carries the position of
//! the offending value. What the values *do* is left to the server and the relay core.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

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
/// Subprotocols a room offers (none): most clients ask for none.
pub const DEFAULT_SUBPROTOCOLS: [&str; 0] = [];
/// Members in one room. Bounds the fan-out cost of one message (one refcount per member).
pub const DEFAULT_MAX_MEMBERS: usize = 10_000;
/// Whether the sender gets its own message back, as with socket.io's `io.emit`: a chat client can
/// then draw its message when it comes back in the room's order, like everyone else's.
pub const DEFAULT_ECHO: bool = true;
/// Origins a room accepts (none listed): any origin, including clients that send none.
pub const DEFAULT_ALLOWED_ORIGINS: [&str; 0] = [];

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

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    /// In file order.
    pub rooms: Vec<RoomConfig>,
}

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
    pub max_members: usize,
    pub echo: bool,
    /// Exact `scheme://host[:port]`, lowercase; empty: any origin.
    pub allowed_origins: Vec<String>,
    /// The room's own key, or the server's `max_message_size` when absent.
    pub max_message_size: usize,
    /// Messages a member may send per second, with a burst of as many; 0: no limit.
    pub max_messages_per_second: u32,
}

/// An IP network such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
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
    /// Parses and validates a configuration. Errors carry a position but no path.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let mut message = e.message().to_owned();
            if let Some(key) = e
                .span()
                .and_then(|s| text.get(s))
                .filter(|_| message == "duplicate key")
            {
                message = format!("duplicate key `{key}`");
            }
            Invalid {
                span: e.span(),
                message,
            }
            .at(text)
        })?;
        validate(raw, text).map_err(|e| e.at(text))
    }

    /// Reads and validates a configuration file. Errors carry the path.
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
        Config::from_toml(&text).map_err(with_path)
    }

    /// The configuration used without `--config`: every server default on 127.0.0.1:8080, the
    /// demo page on, and one pattern room `/*` so that every path is a room.
    pub fn builtin_default() -> Config {
        Config {
            server: ServerConfig {
                demo_page: true,
                ..ServerConfig::default()
            },
            rooms: vec![RoomConfig {
                path: "/*".to_owned(),
                pattern: true,
                subprotocols: Vec::new(),
                max_members: DEFAULT_MAX_MEMBERS,
                echo: DEFAULT_ECHO,
                allowed_origins: Vec::new(),
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                max_messages_per_second: DEFAULT_MAX_MESSAGES_PER_SECOND,
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
        }
    }
}

impl RoomConfig {
    /// For a pattern `P/*`, the `P/` every matching path starts with.
    fn pattern_prefix(&self) -> &str {
        &self.path[..self.path.len() - 1]
    }
}

impl IpNet {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports for an IPv4 peer) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(net.to_bits().into(), ip.to_bits().into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => same_prefix(
                net.to_bits(),
                ip.to_ipv6_mapped().to_bits(),
                128,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(net.to_bits(), ip.to_bits(), 128, self.prefix)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

/// Whether the first `prefix` of `width` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let host_bits = width - u32::from(prefix);
    (a ^ b).checked_shr(host_bits).unwrap_or(0) == 0
}

impl FromStr for IpNet {
    type Err = String;

    /// `10.0.0.0/8`, `::1/128`, or a bare address (a network of one). Bits set past the prefix
    /// are refused: `10.0.0.1/8` is more likely a typo than a network.
    fn from_str(s: &str) -> Result<IpNet, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            format!(
                "{s:?} is not an IP address or network \
                 (e.g. \"10.0.0.0/8\", \"::1/128\", \"127.0.0.1\")"
            )
        })?;
        let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => width,
            Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "{s:?}: the prefix after \"/\" must be a number from 0 to {width}"
                ));
            }
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => {
                    return Err(format!(
                        "{s:?}: prefix /{p} is longer than the {width} bits of the address"
                    ));
                }
            },
        };
        let net = IpNet { addr, prefix };
        let masked = net.network();
        if masked != addr {
            return Err(format!(
                "{s:?} has bits set past the prefix; did you mean \"{masked}/{prefix}\"?"
            ));
        }
        Ok(net)
    }
}

impl IpNet {
    /// The address with every bit past the prefix cleared.
    fn network(&self) -> IpAddr {
        let keep = |width: u32| match u32::from(self.prefix) {
            0 => 0,
            p => u128::MAX << (128 - p) >> (128 - width),
        };
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & keep(32) as u32)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & keep(128))),
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

// ---------------------------------------------------------------------------------------------
// Step one: the raw shape of the file. Every key optional; values we validate keep their span.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    room: Vec<Spanned<RawRoom>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: Option<Spanned<RawListen>>,
    workers: Option<Spanned<usize>>,
    max_connections: Option<Spanned<usize>>,
    max_connections_per_ip: Option<usize>,
    handshake_timeout: Option<Spanned<RawDuration>>,
    ping_interval: Option<Spanned<RawDuration>>,
    idle_timeout: Option<Spanned<RawDuration>>,
    close_timeout: Option<Spanned<RawDuration>>,
    max_message_size: Option<Spanned<RawSize>>,
    max_header_size: Option<Spanned<RawSize>>,
    send_queue_limit: Option<Spanned<RawSize>>,
    shutdown_grace: Option<Spanned<RawDuration>>,
    trusted_proxies: Option<Vec<Spanned<String>>>,
    demo_page: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawRoom {
    path: Option<Spanned<String>>,
    subprotocols: Vec<Spanned<String>>,
    max_members: Option<Spanned<usize>>,
    echo: Option<bool>,
    allowed_origins: Vec<Spanned<String>>,
    max_message_size: Option<Spanned<RawSize>>,
    max_messages_per_second: Option<Spanned<u32>>,
}

/// `listen`: one address or a list of them.
enum RawListen {
    One(String),
    Many(Vec<Spanned<String>>),
}

/// A duration as written, e.g. `"5s"`; [`parse_duration`] reads it during validation.
struct RawDuration(String);

/// A size as written: bytes, or a string with a unit; [`parse_size`] reads the string.
enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawListen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address \"ip:port\" or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawListen, E> {
                Ok(RawListen::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawListen, A::Error> {
                let mut all = Vec::new();
                while let Some(addr) = seq.next_element()? {
                    all.push(addr);
                }
                Ok(RawListen::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string with a unit (ms, s, m, h), e.g. \"5s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: an integer number of bytes or a string like \"64KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Step two: validation into the real Config.

/// A validation error before its byte span is turned into a line and column.
struct Invalid {
    span: Option<Range<usize>>,
    message: String,
}

impl Invalid {
    fn new(span: impl Into<Option<Range<usize>>>, message: impl Into<String>) -> Invalid {
        Invalid {
            span: span.into(),
            message: message.into(),
        }
    }

    fn at(self, text: &str) -> ConfigError {
        let position = self.span.map(|s| line_col(text, s.start));
        ConfigError {
            path: None,
            position,
            message: self.message,
        }
    }
}

/// 1-based line and column (counted in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

fn validate(raw: RawConfig, text: &str) -> Result<Config, Invalid> {
    let server = validate_server(raw.server)?;
    let mut rooms: Vec<RoomConfig> = Vec::with_capacity(raw.room.len());
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for room in raw.room {
        let header = room.span();
        let room = validate_room(room.into_inner(), header, &server)?;
        if let Some(&first) = first_seen.get(&room.config.path) {
            let (line, _) = line_col(text, first);
            let message = format!(
                "room {:?} is defined twice (first at line {line})",
                room.config.path
            );
            return Err(Invalid::new(room.path_span, message));
        }
        first_seen.insert(room.config.path.clone(), room.path_span.start);
        rooms.push(room.config);
    }
    Ok(Config { server, rooms })
}

fn validate_server(raw: RawServer) -> Result<ServerConfig, Invalid> {
    let listen = match raw.listen {
        None => vec![DEFAULT_LISTEN],
        Some(listen) => validate_listen(listen)?,
    };
    let workers = match raw.workers {
        Some(w) if *w.get_ref() > MAX_WORKERS => {
            let message =
                format!("workers must be at most {MAX_WORKERS} (0 means one per CPU core)");
            return Err(Invalid::new(w.span(), message));
        }
        Some(w) => resolve_workers(w.into_inner()),
        None => resolve_workers(DEFAULT_WORKERS),
    };
    let max_connections = at_least_one(
        "max_connections",
        raw.max_connections,
        DEFAULT_MAX_CONNECTIONS,
    )?;

    let positive = |key, raw, default| {
        let (value, span) = duration(key, raw, default)?;
        if value.is_zero() {
            return Err(Invalid::new(span, format!("{key} must be greater than 0")));
        }
        Ok((value, span))
    };
    let (handshake_timeout, _) = positive(
        "handshake_timeout",
        raw.handshake_timeout,
        DEFAULT_HANDSHAKE_TIMEOUT,
    )?;
    let (ping_interval, ping_span) =
        positive("ping_interval", raw.ping_interval, DEFAULT_PING_INTERVAL)?;
    let (idle_timeout, idle_span) =
        duration("idle_timeout", raw.idle_timeout, DEFAULT_IDLE_TIMEOUT)?;
    if idle_timeout <= ping_interval {
        let message = format!(
            "idle_timeout ({idle_timeout:?}) must be greater than ping_interval ({ping_interval:?}), \
             or a quiet but healthy client is cut before its pong can arrive"
        );
        return Err(Invalid::new(idle_span.or(ping_span), message));
    }
    let (close_timeout, _) = positive("close_timeout", raw.close_timeout, DEFAULT_CLOSE_TIMEOUT)?;
    let (shutdown_grace, _) =
        duration("shutdown_grace", raw.shutdown_grace, DEFAULT_SHUTDOWN_GRACE)?;

    let max_message_size = size(
        "max_message_size",
        raw.max_message_size,
        DEFAULT_MAX_MESSAGE_SIZE,
        1,
        MESSAGE_SIZE_CEILING,
    )?;
    let max_header_size = size(
        "max_header_size",
        raw.max_header_size,
        DEFAULT_MAX_HEADER_SIZE,
        HEADER_SIZE_FLOOR,
        HEADER_SIZE_CEILING,
    )?;
    let send_queue_limit = size(
        "send_queue_limit",
        raw.send_queue_limit,
        DEFAULT_SEND_QUEUE_LIMIT,
        1,
        usize::MAX,
    )?;

    let trusted_proxies = match raw.trusted_proxies {
        None => DEFAULT_TRUSTED_PROXIES.to_vec(),
        Some(list) => list
            .into_iter()
            .map(|net| {
                net.get_ref()
                    .parse()
                    .map_err(|e| Invalid::new(net.span(), format!("trusted_proxies: {e}")))
            })
            .collect::<Result<_, _>>()?,
    };

    Ok(ServerConfig {
        listen,
        workers,
        max_connections,
        max_connections_per_ip: raw
            .max_connections_per_ip
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
        handshake_timeout,
        ping_interval,
        idle_timeout,
        close_timeout,
        max_message_size,
        max_header_size,
        send_queue_limit,
        shutdown_grace,
        trusted_proxies,
        demo_page: raw.demo_page.unwrap_or(DEFAULT_DEMO_PAGE),
    })
}

fn validate_listen(raw: Spanned<RawListen>) -> Result<Vec<SocketAddr>, Invalid> {
    let span = raw.span();
    let written = match raw.into_inner() {
        RawListen::One(addr) => vec![Spanned::new(span, addr)],
        RawListen::Many(list) if list.is_empty() => {
            return Err(Invalid::new(span, "listen must name at least one address"));
        }
        RawListen::Many(list) => list,
    };
    let mut listen = Vec::with_capacity(written.len());
    for addr in written {
        let parsed: SocketAddr = addr.get_ref().parse().map_err(|_| {
            let message = format!(
                "listen address {:?} is not ip:port (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")",
                addr.get_ref()
            );
            Invalid::new(addr.span(), message)
        })?;
        if listen.contains(&parsed) {
            return Err(Invalid::new(
                addr.span(),
                format!("listen address {parsed} is listed twice"),
            ));
        }
        listen.push(parsed);
    }
    Ok(listen)
}

/// A validated room, with the span of its path for the duplicate check.
struct CheckedRoom {
    config: RoomConfig,
    path_span: Range<usize>,
}

fn validate_room(
    mut raw: RawRoom,
    header: Range<usize>,
    server: &ServerConfig,
) -> Result<CheckedRoom, Invalid> {
    let Some(path) = raw.path.take() else {
        let message = "room has no path (add e.g. path = \"/chat\")";
        return Err(Invalid::new(header, message));
    };
    let path_span = path.span();
    let path = path.into_inner();
    if let Err(reason) = check_room_path(&path) {
        return Err(Invalid::new(
            path_span,
            format!("room path {path:?} {reason}"),
        ));
    }
    let config = room_keys(raw, path.clone(), server).map_err(|e| Invalid {
        message: format!("room {path:?}: {}", e.message),
        ..e
    })?;
    Ok(CheckedRoom { config, path_span })
}

/// Every key of a room but its path, which is already checked.
fn room_keys(raw: RawRoom, path: String, server: &ServerConfig) -> Result<RoomConfig, Invalid> {
    let mut subprotocols: Vec<String> = Vec::with_capacity(raw.subprotocols.len());
    for proto in raw.subprotocols {
        let name = proto.get_ref();
        let problem = if !is_token(name) {
            "is not a valid token (letters, digits and !#$%&'*+-.^_`|~ only)"
        } else if subprotocols.contains(name) {
            "is listed twice"
        } else {
            subprotocols.push(proto.into_inner());
            continue;
        };
        return Err(Invalid::new(
            proto.span(),
            format!("subprotocol {name:?} {problem}"),
        ));
    }

    let max_members = at_least_one("max_members", raw.max_members, DEFAULT_MAX_MEMBERS)?;

    let mut allowed_origins = Vec::with_capacity(raw.allowed_origins.len());
    for origin in raw.allowed_origins {
        if let Err(problem) = check_origin(origin.get_ref()) {
            let message = format!("allowed origin {:?} {problem}", origin.get_ref());
            return Err(Invalid::new(origin.span(), message));
        }
        allowed_origins.push(origin.into_inner());
    }

    let max_message_size = size(
        "max_message_size",
        raw.max_message_size,
        server.max_message_size,
        1,
        MESSAGE_SIZE_CEILING,
    )?;

    Ok(RoomConfig {
        pattern: path.ends_with("/*"),
        path,
        subprotocols,
        max_members,
        echo: raw.echo.unwrap_or(DEFAULT_ECHO),
        allowed_origins,
        max_message_size,
        max_messages_per_second: raw
            .max_messages_per_second
            .map_or(DEFAULT_MAX_MESSAGES_PER_SECOND, Spanned::into_inner),
    })
}

/// Why `path` cannot be a room path, if it cannot.
fn check_room_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with \"/\"");
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    if path.contains('?') || path.contains('#') {
        return Err(
            "must not contain \"?\" or \"#\" (a query or fragment is not part of the path)",
        );
    }
    let body = path.strip_suffix("/*").unwrap_or(path);
    if body.contains('*') {
        return Err("may contain \"*\" only as a final \"/*\" (a pattern)");
    }
    Ok(())
}

/// Whether `s` is an HTTP token (RFC 7230 `1*tchar`), as a subprotocol name must be.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why `origin` is not an origin as a browser sends it (`scheme://host[:port]`), if it is not.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    const SHAPE: &str =
        "is not an origin: write scheme://host[:port], e.g. \"https://example.com\"";
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err(SHAPE);
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || rest.is_empty() {
        return Err(SHAPE);
    }
    if rest.contains(['/', '?', '#']) {
        return Err(
            "must not have a path or a trailing slash (browsers send scheme://host[:port])",
        );
    }
    if origin.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be lowercase, as browsers send it");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        }
    };
    if !host_ok {
        return Err(SHAPE);
    }
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && matches!(port.parse::<u16>(), Ok(1..)))
    {
        return Err("has a port that is not a number from 1 to 65535");
    }
    Ok(())
}

fn resolve_workers(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS),
        n => n,
    }
}

/// A count that must be at least 1.
fn at_least_one(key: &str, raw: Option<Spanned<usize>>, default: usize) -> Result<usize, Invalid> {
    match raw {
        None => Ok(default),
        Some(n) if *n.get_ref() == 0 => {
            Err(Invalid::new(n.span(), format!("{key} must be at least 1")))
        }
        Some(n) => Ok(n.into_inner()),
    }
}

/// A duration key: its value (or the default) and the span of the value when written.
fn duration(
    key: &str,
    raw: Option<Spanned<RawDuration>>,
    default: Duration,
) -> Result<(Duration, Option<Range<usize>>), Invalid> {
    let Some(raw) = raw else {
        return Ok((default, None));
    };
    let span = raw.span();
    let value = parse_duration(&raw.get_ref().0)
        .map_err(|e| Invalid::new(span.clone(), format!("{key}: {e}")))?;
    if value > DURATION_CEILING {
        return Err(Invalid::new(
            span,
            format!(
                "{key} must be at most {}h (a year)",
                DURATION_CEILING.as_secs() / 3600
            ),
        ));
    }
    Ok((value, Some(span)))
}

/// A size key within `min..=max` bytes.
fn size(
    key: &str,
    raw: Option<Spanned<RawSize>>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, Invalid> {
    let Some(raw) = raw else { return Ok(default) };
    let span = raw.span();
    let bytes = match raw.into_inner() {
        RawSize::Bytes(n) => u64::try_from(n)
            .map_err(|_| Invalid::new(span.clone(), format!("{key} must not be negative")))?,
        RawSize::Text(s) => {
            parse_size(&s).map_err(|e| Invalid::new(span.clone(), format!("{key}: {e}")))?
        }
    };
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    if bytes < min {
        return Err(Invalid::new(
            span,
            format!("{key} must be at least {}", human_size(min)),
        ));
    }
    if bytes > max {
        return Err(Invalid::new(
            span,
            format!("{key} must be at most {}", human_size(max)),
        ));
    }
    Ok(bytes)
}

fn human_size(bytes: usize) -> String {
    let b = bytes as u64;
    match b {
        1 => "1 byte".to_owned(),
        _ if b >= GIB && b.is_multiple_of(GIB) => format!("{}GiB", b / GIB),
        _ if b >= MIB && b.is_multiple_of(MIB) => format!("{}MiB", b / MIB),
        _ if b >= KIB && b.is_multiple_of(KIB) => format!("{}KiB", b / KIB),
        _ => format!("{b} bytes"),
    }
}

/// Splits `"64KiB"` into `("64", "KiB")`: the leading ASCII digits and the rest.
fn split_number(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

/// `"250ms"`, `"5s"`, `"2m"`, `"1h"`: an integer and a unit, nothing else.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(s);
    let bad = || {
        format!(
            "{s:?} is not a duration: write an integer and a unit, ms, s, m or h \
             (e.g. \"250ms\", \"5s\", \"2m\", \"1h\")"
        )
    };
    let too_large = || format!("{s:?} is too large");
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let secs = |per: u64| {
        n.checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(too_large)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(bad()),
    }
}

/// `"512"`, `"512B"`, `"64KiB"`, `"1MiB"`, `"1GiB"` (1024-based) or `"64KB"`, `"1MB"`, `"1GB"`
/// (1000-based): an integer and an optional unit, nothing else.
fn parse_size(s: &str) -> Result<u64, String> {
    let (number, unit) = split_number(s);
    let bad = || {
        format!(
            "{s:?} is not a size: write an integer of bytes, optionally followed by B, KiB, MiB, GiB \
             (1024-based) or KB, MB, GB (1000-based), e.g. \"64KiB\""
        )
    };
    let too_large = || format!("{s:?} is too large");
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let per = match unit {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        _ => return Err(bad()),
    };
    n.checked_mul(per).ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Config {
        Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n--- in ---\n{text}"))
    }

    /// The error as `Display` shows it: `LINE:COL: message`.
    fn err(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(config) => panic!("accepted:\n{text}\n--- as ---\n{config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    #[test]
    fn an_empty_file_gets_every_server_default_and_no_rooms() {
        let config = ok("");
        let s = &config.server;
        assert_eq!(
            s.listen,
            vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(s.workers, cores());
        assert_eq!(s.max_connections, 100_000);
        assert_eq!(s.max_connections_per_ip, 0);
        assert_eq!(s.handshake_timeout, Duration::from_secs(5));
        assert_eq!(s.ping_interval, Duration::from_secs(25));
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.close_timeout, Duration::from_secs(5));
        assert_eq!(s.max_message_size, 64 * 1024);
        assert_eq!(s.max_header_size, 8 * 1024);
        assert_eq!(s.send_queue_limit, 1024 * 1024);
        assert_eq!(s.shutdown_grace, Duration::from_secs(10));
        assert_eq!(s.trusted_proxies, vec![net("127.0.0.1/32"), net("::1/128")]);
        assert!(!s.demo_page);
        assert_eq!(*s, ServerConfig::default());
        assert_eq!(config.rooms, vec![]);
        assert_eq!(config.route("/"), None);
        assert_eq!(ok("[server]\n").server, ServerConfig::default());
    }

    #[test]
    fn a_room_gets_every_room_default() {
        let config = ok("[server]\nmax_message_size = \"1MiB\"\n[[room]]\npath = \"/chat\"\n");
        let expected = RoomConfig {
            path: "/chat".into(),
            pattern: false,
            subprotocols: vec![],
            max_members: 10_000,
            echo: true,
            allowed_origins: vec![],
            max_message_size: 1024 * 1024, // the server's
            max_messages_per_second: 0,
        };
        assert_eq!(config.rooms, vec![expected]);
    }

    #[test]
    fn every_key_can_be_set() {
        let config = ok(r#"
            [server]
            listen = ["0.0.0.0:9000", "[::]:9000"]
            workers = 3
            max_connections = 50
            max_connections_per_ip = 4
            handshake_timeout = "250ms"
            ping_interval = "2m"
            idle_timeout = "1h"
            close_timeout = "1s"
            max_message_size = 1000
            max_header_size = "16KB"
            send_queue_limit = "2MiB"
            shutdown_grace = "0s"
            trusted_proxies = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
            demo_page = true

            [[room]]
            path = "/rooms/*"
            subprotocols = ["v2.json", "v1"]
            max_members = 2
            echo = false
            allowed_origins = ["https://example.com", "http://localhost:3000", "http://[::1]:8080"]
            max_message_size = "1MB"
        "#);
        let s = &config.server;
        assert_eq!(
            s.listen,
            vec![
                "0.0.0.0:9000".parse().unwrap(),
                "[::]:9000".parse::<SocketAddr>().unwrap()
            ]
        );
        assert_eq!(
            (s.workers, s.max_connections, s.max_connections_per_ip),
            (3, 50, 4)
        );
        assert_eq!(s.handshake_timeout, Duration::from_millis(250));
        assert_eq!(s.ping_interval, Duration::from_secs(120));
        assert_eq!(s.idle_timeout, Duration::from_secs(3600));
        assert_eq!(s.close_timeout, Duration::from_secs(1));
        assert_eq!(
            (s.max_message_size, s.max_header_size, s.send_queue_limit),
            (1000, 16_000, 2 << 20)
        );
        assert_eq!(s.shutdown_grace, Duration::ZERO);
        assert_eq!(
            s.trusted_proxies,
            vec![net("10.0.0.0/8"), net("fd00::/8"), net("192.0.2.7/32")]
        );
        assert!(s.demo_page);
        let room = &config.rooms[0];
        assert!(room.pattern);
        assert_eq!(room.subprotocols, ["v2.json", "v1"]);
        assert_eq!(
            (room.max_members, room.echo, room.max_message_size),
            (2, false, 1_000_000)
        );
        assert_eq!(
            room.allowed_origins,
            [
                "https://example.com",
                "http://localhost:3000",
                "http://[::1]:8080"
            ]
        );
        assert_eq!(ok("[server]\nworkers = 0").server.workers, cores());
        assert_eq!(ok("[server]\nworkers = 1024").server.workers, 1024);
        assert_eq!(
            ok("[server]\nlisten = \"[::1]:0\"").server.listen,
            vec!["[::1]:0".parse().unwrap()]
        );
        assert_eq!(
            ok("[server]\ntrusted_proxies = []").server.trusted_proxies,
            vec![]
        );
    }

    #[test]
    fn the_builtin_default_makes_every_path_a_room() {
        let config = Config::builtin_default();
        assert_eq!(
            config.server,
            ServerConfig {
                demo_page: true,
                ..ok("").server
            }
        );
        assert_eq!(config.rooms.len(), 1);
        let room = &config.rooms[0];
        assert_eq!(
            (room.path.as_str(), room.pattern, room.echo),
            ("/*", true, true)
        );
        assert!(room.subprotocols.is_empty() && room.allowed_origins.is_empty());
        assert_eq!(
            (room.max_members, room.max_message_size),
            (10_000, 64 * 1024)
        );
        for path in ["/", "/chat", "/a/b/c"] {
            assert_eq!(
                config.route(path).map(|r| r.path.as_str()),
                Some("/*"),
                "{path}"
            );
        }
        assert_eq!(config.route(""), None);
    }

    #[test]
    fn route_prefers_the_exact_path_then_the_longest_pattern() {
        let config = ok(r#"
            [[room]]
            path = "/*"
            [[room]]
            path = "/rooms/*"
            [[room]]
            path = "/rooms/vip/*"
            [[room]]
            path = "/rooms/lobby"
            [[room]]
            path = "/chat"
        "#);
        let route = |p: &str| config.route(p).map(|r| r.path.as_str());
        assert_eq!(route("/chat"), Some("/chat"));
        assert_eq!(route("/rooms/lobby"), Some("/rooms/lobby"));
        assert_eq!(route("/rooms/lobby/x"), Some("/rooms/*"));
        assert_eq!(route("/rooms/a"), Some("/rooms/*"));
        assert_eq!(route("/rooms/a/b"), Some("/rooms/*"));
        assert_eq!(route("/rooms/"), Some("/rooms/*"));
        assert_eq!(route("/rooms/vip/x"), Some("/rooms/vip/*"));
        assert_eq!(route("/rooms/vip"), Some("/rooms/*"));
        assert_eq!(route("/rooms"), Some("/*"));
        assert_eq!(route("/roomsx"), Some("/*"));
        assert_eq!(route("/chat/"), Some("/*"));
        assert_eq!(route("/"), Some("/*"));
        assert_eq!(route("chat"), None);

        let narrow = ok("[[room]]\npath = \"/rooms/*\"\n[[room]]\npath = \"/chat\"\n");
        for path in ["/rooms", "/roomsx", "/", "/chat/x", "/Chat"] {
            assert_eq!(narrow.route(path), None, "{path}");
        }
    }

    #[test]
    fn durations_are_an_integer_and_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "", "5", "s", "5 s", " 5s", "5s ", "1.5s", "-5s", "+5s", "5S", "5sec", "5d", "5us",
            "1h30m",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("ms, s, m or h"), "{bad:?}: {e}");
        }
        assert_eq!(
            parse_duration("99999999999999999999s").unwrap_err(),
            "\"99999999999999999999s\" is too large"
        );
        assert_eq!(
            parse_duration("18446744073709551615h").unwrap_err(),
            "\"18446744073709551615h\" is too large"
        );
    }

    #[test]
    fn sizes_are_bytes_with_an_optional_unit() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        for bad in [
            "", "KiB", "64 KiB", "64k", "64kb", "64kib", "64K", "1.5MiB", "-1", "1TiB", "64KiBs",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(
                e.contains("KiB, MiB, GiB") && e.contains("KB, MB, GB"),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            parse_size("18446744073709551615KiB").unwrap_err(),
            "\"18446744073709551615KiB\" is too large"
        );
        assert_eq!(
            ok("[server]\nsend_queue_limit = \"1MB\"")
                .server
                .send_queue_limit,
            1_000_000
        );
        assert_eq!(
            ok("[server]\nmax_message_size = \"1GiB\"")
                .server
                .max_message_size,
            1 << 30
        );
        assert_eq!(
            ok("[server]\nmax_header_size = 512").server.max_header_size,
            512
        );
        assert_eq!(
            ok("[server]\nmax_header_size = \"1MiB\"")
                .server
                .max_header_size,
            1 << 20
        );
    }

    #[test]
    fn ip_networks_parse_and_contain() {
        assert_eq!(
            net("10.0.0.0/8"),
            IpNet {
                addr: ip("10.0.0.0"),
                prefix: 8
            }
        );
        assert_eq!(
            net("::1"),
            IpNet {
                addr: ip("::1"),
                prefix: 128
            }
        );
        assert_eq!(
            net("192.0.2.1"),
            IpNet {
                addr: ip("192.0.2.1"),
                prefix: 32
            }
        );
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");

        let ten = net("10.0.0.0/8");
        assert!(ten.contains(ip("10.0.0.0")) && ten.contains(ip("10.255.255.255")));
        assert!(!ten.contains(ip("11.0.0.0")) && !ten.contains(ip("9.255.255.255")));
        assert!(
            ten.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!ten.contains(ip("::ffff:11.1.2.3")));
        assert!(
            !ten.contains(ip("::a01:203")),
            "IPv4-compatible is not mapped"
        );
        let host = net("127.0.0.1");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        assert!(host.contains(ip("::ffff:127.0.0.1")));
        assert!(
            net("0.0.0.0/0").contains(ip("203.0.113.9"))
                && !net("0.0.0.0/0").contains(ip("2001:db8::1"))
        );
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(
            net("::/0").contains(ip("203.0.113.9")),
            "an IPv4 peer is ::ffff:a.b.c.d to IPv6"
        );
        let v6 = net("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let loopback6 = net("::1/128");
        assert!(loopback6.contains(ip("::1")) && !loopback6.contains(ip("127.0.0.1")));
        let mapped = net("::ffff:10.0.0.0/104");
        assert!(mapped.contains(ip("10.9.9.9")) && mapped.contains(ip("::ffff:10.9.9.9")));
        assert!(!mapped.contains(ip("11.0.0.1")));
        assert!(
            net("192.168.1.0/31").contains(ip("192.168.1.1"))
                && !net("192.168.1.0/31").contains(ip("192.168.1.2"))
        );
    }

    #[test]
    fn bad_networks_say_why() {
        let e = |s: &str| s.parse::<IpNet>().unwrap_err();
        assert_eq!(
            e("10.0.0.0/33"),
            "\"10.0.0.0/33\": prefix /33 is longer than the 32 bits of the address"
        );
        assert_eq!(
            e("::/129"),
            "\"::/129\": prefix /129 is longer than the 128 bits of the address"
        );
        assert_eq!(
            e("::/300"),
            "\"::/300\": prefix /300 is longer than the 128 bits of the address"
        );
        assert_eq!(
            e("10.0.0.0/"),
            "\"10.0.0.0/\": the prefix after \"/\" must be a number from 0 to 32"
        );
        assert_eq!(
            e("10.0.0.0/+8"),
            "\"10.0.0.0/+8\": the prefix after \"/\" must be a number from 0 to 32"
        );
        assert_eq!(
            e("10.0.0.1/8"),
            "\"10.0.0.1/8\" has bits set past the prefix; did you mean \"10.0.0.0/8\"?"
        );
        assert_eq!(
            e("fd00::1/8"),
            "\"fd00::1/8\" has bits set past the prefix; did you mean \"fd00::/8\"?"
        );
        assert!(e("localhost").starts_with("\"localhost\" is not an IP address or network"));
        assert!(e("10.0.0/8").starts_with("\"10.0.0/8\" is not an IP address or network"));
    }

    #[test]
    fn syntax_unknown_keys_and_wrong_types_are_reported_where_they_are() {
        let fields = "`listen`, `workers`, `max_connections`, `max_connections_per_ip`, \
                      `handshake_timeout`, `ping_interval`, `idle_timeout`, `close_timeout`, \
                      `max_message_size`, `max_header_size`, `send_queue_limit`, `shutdown_grace`, \
                      `trusted_proxies`, `demo_page`";
        assert_eq!(
            err("[server]\nworkrs = 1\n"),
            format!("2:1: unknown field `workrs`, expected one of {fields}")
        );
        assert_eq!(
            err("[[room]]\npath = \"/chat\"\nehco = true\n"),
            "3:1: unknown field `ehco`, expected one of `path`, `subprotocols`, `max_members`, `echo`, \
             `allowed_origins`, `max_message_size`, `max_messages_per_second`"
        );
        assert_eq!(
            err("[sever]\n"),
            "1:2: unknown field `sever`, expected `server` or `room`"
        );
        assert_eq!(err("[server\n"), "1:8: unclosed table, expected `]`");
        assert_eq!(
            err("[server]\nworkers = 1\nworkers = 2\n"),
            "3:1: duplicate key `workers`"
        );
        assert_eq!(
            err("[room]\npath = \"/chat\"\n"),
            "1:1: invalid type: map, expected a sequence"
        );
        assert_eq!(
            err("[server]\nworkers = -1\n"),
            "2:11: invalid value: integer `-1`, expected usize"
        );
        assert_eq!(
            err("[server]\nmax_connections = \"many\"\n"),
            "2:19: invalid type: string \"many\", expected usize"
        );
        assert_eq!(
            err("[server]\ndemo_page = \"yes\"\n"),
            "2:13: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            err("[server]\nping_interval = 25\n"),
            "2:17: invalid type: integer `25`, expected a duration string with a unit (ms, s, m, h), e.g. \"5s\""
        );
        assert_eq!(
            err("[server]\nmax_message_size = 1.5\n"),
            "2:20: invalid type: floating point `1.5`, expected a size: an integer number of bytes or a \
             string like \"64KiB\""
        );
        assert_eq!(
            err("[server]\nlisten = 8080\n"),
            "2:10: invalid type: integer `8080`, expected an address \"ip:port\" or a list of them"
        );
        assert_eq!(
            err("[server]\nlisten = [\"127.0.0.1:1\", 2]\n"),
            "2:26: invalid type: integer `2`, expected a string"
        );
        assert_eq!(
            err("[[room]]\npath = 5\n"),
            "2:8: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            err("[[room]]\npath = \"/a\"\necho = 1\n"),
            "3:8: invalid type: integer `1`, expected a boolean"
        );
        assert_eq!(
            err("[[room]]\npath = \"/a\"\nsubprotocols = \"chat\"\n"),
            "3:16: invalid type: string \"chat\", expected a sequence"
        );
    }

    #[test]
    fn server_limits_are_checked() {
        let e = |body: &str| err(&format!("[server]\n{body}\n"));
        assert_eq!(
            e("workers = 1025"),
            "2:11: workers must be at most 1024 (0 means one per CPU core)"
        );
        assert_eq!(
            e("max_connections = 0"),
            "2:19: max_connections must be at least 1"
        );
        assert_eq!(
            e("max_message_size = 0"),
            "2:20: max_message_size must be at least 1 byte"
        );
        assert_eq!(
            e("max_message_size = \"0KiB\""),
            "2:20: max_message_size must be at least 1 byte"
        );
        assert_eq!(
            e("max_message_size = \"2GiB\""),
            "2:20: max_message_size must be at most 1GiB"
        );
        assert_eq!(
            e("max_message_size = 1073741825"),
            "2:20: max_message_size must be at most 1GiB"
        );
        assert_eq!(
            e("send_queue_limit = 0"),
            "2:20: send_queue_limit must be at least 1 byte"
        );
        assert_eq!(
            e("send_queue_limit = -5"),
            "2:20: send_queue_limit must not be negative"
        );
        assert_eq!(
            e("max_header_size = 511"),
            "2:19: max_header_size must be at least 512 bytes"
        );
        assert_eq!(
            e("max_header_size = \"2MiB\""),
            "2:19: max_header_size must be at most 1MiB"
        );
        assert_eq!(
            e("max_message_size = \"64k\""),
            "2:20: max_message_size: \"64k\" is not a size: write an integer of bytes, optionally followed by \
             B, KiB, MiB, GiB (1024-based) or KB, MB, GB (1000-based), e.g. \"64KiB\""
        );
        assert_eq!(
            e("handshake_timeout = \"0s\""),
            "2:21: handshake_timeout must be greater than 0"
        );
        assert_eq!(
            e("ping_interval = \"0ms\""),
            "2:17: ping_interval must be greater than 0"
        );
        assert_eq!(
            e("close_timeout = \"0s\""),
            "2:17: close_timeout must be greater than 0"
        );
        assert_eq!(
            e("close_timeout = \"5\""),
            "2:17: close_timeout: \"5\" is not a duration: write an integer and a unit, ms, s, m or h \
             (e.g. \"250ms\", \"5s\", \"2m\", \"1h\")"
        );
        assert_eq!(
            e("shutdown_grace = \"9000h\""),
            "2:18: shutdown_grace must be at most 8760h (a year)"
        );
        assert_eq!(
            e("idle_timeout = \"25s\""),
            "2:16: idle_timeout (25s) must be greater than ping_interval (25s), or a quiet but healthy \
             client is cut before its pong can arrive"
        );
        assert_eq!(
            e("idle_timeout = \"10s\"\nping_interval = \"20s\""),
            "2:16: idle_timeout (10s) must be greater than ping_interval (20s), or a quiet but healthy \
             client is cut before its pong can arrive"
        );
        assert_eq!(
            e("ping_interval = \"90s\""),
            "2:17: idle_timeout (60s) must be greater than ping_interval (90s), or a quiet but healthy \
             client is cut before its pong can arrive"
        );
        assert_eq!(
            e("listen = []"),
            "2:10: listen must name at least one address"
        );
        assert_eq!(
            e("listen = \"localhost:8080\""),
            "2:10: listen address \"localhost:8080\" is not ip:port (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"
        );
        assert_eq!(
            e("listen = [\"0.0.0.0:80\",\n  \"0.0.0.0\"]"),
            "3:3: listen address \"0.0.0.0\" is not ip:port (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"
        );
        assert_eq!(
            e("listen = [\"[::]:80\", \"[::]:80\"]"),
            "2:22: listen address [::]:80 is listed twice"
        );
        assert_eq!(
            e("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]"),
            "2:34: trusted_proxies: \"10.0.0.0/33\": prefix /33 is longer than the 32 bits of the address"
        );
        assert_eq!(
            e("trusted_proxies = [\"::1/129\"]"),
            "2:20: trusted_proxies: \"::1/129\": prefix /129 is longer than the 128 bits of the address"
        );
        assert!(
            e("trusted_proxies = [\"nginx\"]")
                .starts_with("2:20: trusted_proxies: \"nginx\" is not an IP")
        );
    }

    #[test]
    fn room_paths_are_checked() {
        let e = |path: &str| err(&format!("[[room]]\npath = {path}\n"));
        assert_eq!(
            e("\"chat\""),
            "2:8: room path \"chat\" must start with \"/\""
        );
        assert_eq!(e("\"\""), "2:8: room path \"\" must start with \"/\"");
        assert_eq!(e("\"*\""), "2:8: room path \"*\" must start with \"/\"");
        let star = "may contain \"*\" only as a final \"/*\" (a pattern)";
        for path in ["/rooms*", "/*/x", "/a/*/*", "/a*/", "/**"] {
            assert_eq!(
                e(&format!("{path:?}")),
                format!("2:8: room path {path:?} {star}")
            );
        }
        let space = "must not contain whitespace or control characters";
        assert_eq!(e("\"/a b\""), format!("2:8: room path \"/a b\" {space}"));
        assert_eq!(
            e("\"/a\\tb\""),
            format!("2:8: room path \"/a\\tb\" {space}")
        );
        assert_eq!(
            e("\"/a\\u007fb\""),
            format!("2:8: room path \"/a\\u{{7f}}b\" {space}")
        );
        let query = "must not contain \"?\" or \"#\" (a query or fragment is not part of the path)";
        assert_eq!(
            e("\"/chat?x=1\""),
            format!("2:8: room path \"/chat?x=1\" {query}")
        );
        assert_eq!(
            e("\"/chat#top\""),
            format!("2:8: room path \"/chat#top\" {query}")
        );
        assert_eq!(
            err("[[room]]\necho = true\n"),
            "1:1: room has no path (add e.g. path = \"/chat\")"
        );
        assert_eq!(
            err("[[room]]\npath = \"/a\"\n[[room]]\n  echo = false\n"),
            "3:1: room has no path (add e.g. path = \"/chat\")"
        );
        assert_eq!(
            err(
                "[[room]]\npath = \"/chat\"\n\n[[room]]\npath = \"/x/*\"\n\n[[room]]\n\npath = \"/chat\"\n"
            ),
            "9:8: room \"/chat\" is defined twice (first at line 2)"
        );
        assert_eq!(
            err("[[room]]\npath = \"/x/*\"\n[[room]]\npath = \"/x/*\"\n"),
            "4:8: room \"/x/*\" is defined twice (first at line 2)"
        );
        // Not duplicates: a pattern and the exact path of its prefix are different rooms.
        assert_eq!(
            ok("[[room]]\npath = \"/x/*\"\n[[room]]\npath = \"/x/\"\n[[room]]\npath = \"/x\"")
                .rooms
                .len(),
            3
        );
    }

    #[test]
    fn room_keys_are_checked() {
        let e = |body: &str| err(&format!("[[room]]\npath = \"/chat\"\n{body}\n"));
        assert_eq!(
            e("max_members = 0"),
            "3:15: room \"/chat\": max_members must be at least 1"
        );
        assert_eq!(
            e("max_message_size = 0"),
            "3:20: room \"/chat\": max_message_size must be at least 1 byte"
        );
        assert_eq!(
            e("max_message_size = \"4GiB\""),
            "3:20: room \"/chat\": max_message_size must be at most 1GiB"
        );
        let token = "is not a valid token (letters, digits and !#$%&'*+-.^_`|~ only)";
        assert_eq!(
            e("subprotocols = [\"chat\", \"super chat\"]"),
            format!("3:25: room \"/chat\": subprotocol \"super chat\" {token}")
        );
        assert_eq!(
            e("subprotocols = [\"\"]"),
            format!("3:17: room \"/chat\": subprotocol \"\" {token}")
        );
        assert_eq!(
            e("subprotocols = [\"a,b\"]"),
            format!("3:17: room \"/chat\": subprotocol \"a,b\" {token}")
        );
        assert_eq!(
            e("subprotocols = [\"é\"]"),
            format!("3:17: room \"/chat\": subprotocol \"é\" {token}")
        );
        assert_eq!(
            e("subprotocols = [\"chat\", \"superchat\", \"chat\"]"),
            "3:38: room \"/chat\": subprotocol \"chat\" is listed twice"
        );
        let shape = "is not an origin: write scheme://host[:port], e.g. \"https://example.com\"";
        let slash = "must not have a path or a trailing slash (browsers send scheme://host[:port])";
        let port = "has a port that is not a number from 1 to 65535";
        for (origin, reason) in [
            ("https://example.com/", slash),
            ("https://example.com/app", slash),
            ("https://example.com?x", slash),
            ("example.com", shape),
            ("*", shape),
            ("null", shape),
            ("https://", shape),
            ("://example.com", shape),
            ("1http://example.com", shape),
            ("https://exa mple.com", shape),
            ("https://user@example.com", shape),
            ("http://[::1", shape),
            (
                "https://Example.com",
                "must be lowercase, as browsers send it",
            ),
            (
                "HTTPS://example.com",
                "must be lowercase, as browsers send it",
            ),
            ("https://example.com:", port),
            ("https://example.com:0", port),
            ("https://example.com:65536", port),
            ("https://example.com:+80", port),
        ] {
            assert_eq!(
                e(&format!("allowed_origins = [{origin:?}]")),
                format!("3:20: room \"/chat\": allowed origin {origin:?} {reason}"),
            );
        }
    }

    #[test]
    fn errors_show_the_path_and_position_they_know() {
        let at = |path: Option<&str>, position| ConfigError {
            path: path.map(PathBuf::from),
            position,
            message: "bad".into(),
        };
        assert_eq!(
            at(Some("/etc/wsrelay.toml"), Some((3, 7))).to_string(),
            "/etc/wsrelay.toml:3:7: bad"
        );
        assert_eq!(
            at(Some("/etc/wsrelay.toml"), None).to_string(),
            "/etc/wsrelay.toml: bad"
        );
        assert_eq!(at(None, Some((3, 7))).to_string(), "3:7: bad");
        assert_eq!(at(None, None).to_string(), "bad");

        let e = Config::from_toml("# é\n[server]\n  demo_page = \"ü\" # é\n").unwrap_err();
        assert_eq!(
            (e.position(), e.path()),
            (Some((3, 15)), None),
            "columns count characters"
        );
        assert_eq!(
            e.message(),
            "invalid type: string \"ü\", expected a boolean"
        );
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 3), (2, 1));
        assert_eq!(line_col("ab\ncd", 5), (2, 3));
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = std::env::temp_dir().join(format!("wsrelay-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "[[room]]\npath = \"/chat\"\n").unwrap();
        assert_eq!(Config::load(&good).unwrap().rooms[0].path, "/chat");

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[server]\nmax_connections = 0\n").unwrap();
        let e = Config::load(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}:2:19: max_connections must be at least 1", bad.display())
        );

        let missing = dir.join("missing.toml");
        let e = Config::load(&missing).unwrap_err();
        assert_eq!(e.position(), None);
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read: ", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const SHIPPED: &str = include_str!("../config/wsrelay.toml");

    #[test]
    fn the_shipped_example_parses_and_routes() {
        let config = ok(SHIPPED);
        assert_eq!(
            config.server,
            ServerConfig::default(),
            "the example shows the defaults"
        );
        let chat = config.route("/chat").unwrap();
        assert_eq!((chat.path.as_str(), chat.pattern), ("/chat", false));
        assert_eq!(chat.subprotocols, ["chat", "superchat"]);
        assert!(chat.echo && chat.allowed_origins.is_empty());
        let pattern = config.route("/rooms/x").unwrap();
        assert_eq!((pattern.path.as_str(), pattern.pattern), ("/rooms/*", true));
        assert_eq!(config.route("/rooms"), None);
        assert_eq!(config.route("/other"), None);
    }

    #[test]
    fn the_shipped_example_documents_every_key() {
        // serde lists every field of a table in its unknown-field message.
        let keys = |table: &str| {
            let message = err(&format!("{table}\nno_such_key = 1\n"));
            let list = message.split_once("expected one of ").unwrap().1.to_owned();
            list.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let documented = |key: &str| {
            SHIPPED
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = ")))
        };
        let (server, room) = (keys("[server]"), keys("[[room]]\npath = \"/x\""));
        assert_eq!((server.len(), room.len()), (14, 7));
        for key in server.into_iter().chain(room) {
            assert!(
                documented(&key),
                "config/wsrelay.toml does not show `{key}`"
            );
        }
    }
}
