//! Step two: the raw structs become the validated [`Config`]: defaults filled in, bounds and
//! cross-key rules checked, the `jwt_secret_file` read. Each check fails with the span of the
//! value at fault, turned into a line and column at the end. Rooms are checked in [`super::room`].

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::api::validate_api;
use super::raw::{
    RawAuth, RawCluster, RawConfig, RawDuration, RawListen, RawRedis, RawServer, RawSize,
};
use super::room::validate_room;
use super::units::{human_size, parse_duration, parse_size};
use super::*;

/// Parse and validate `text`. A relative `jwt_secret_file` is taken from `base` (the config
/// file's directory) or else from the current directory.
pub(super) fn parse(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
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
    validate(raw, text, base).map_err(|e| e.at(text))
}

/// A validation error before its byte span is turned into a line and column.
pub(super) struct Invalid {
    pub span: Option<Range<usize>>,
    pub message: String,
}

impl Invalid {
    pub fn new(span: impl Into<Option<Range<usize>>>, message: impl Into<String>) -> Invalid {
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
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

fn validate(raw: RawConfig, text: &str, base: Option<&Path>) -> Result<Config, Invalid> {
    let server = validate_server(raw.server)?;
    let auth = raw.auth.map(|a| validate_auth(a, base)).transpose()?;
    let api = raw.api.map(|a| validate_api(a, base)).transpose()?;
    let mut rooms: Vec<RoomConfig> = Vec::with_capacity(raw.room.len());
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for room in raw.room {
        let header = room.span();
        let room = validate_room(room.into_inner(), header, &server, auth.is_some())?;
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
    let cluster = raw.cluster.map(validate_cluster).transpose()?;
    Ok(Config {
        server,
        auth,
        rooms,
        cluster,
        api,
    })
}

/// `[cluster]`: one `redis://host[:port]` URL or a list of them, each a different server;
/// `name` and `prefix` without spaces.
fn validate_cluster(raw: Spanned<RawCluster>) -> Result<ClusterConfig, Invalid> {
    let table = raw.span();
    let raw = raw.into_inner();
    let Some(redis) = raw.redis else {
        let message = "[cluster] needs redis (a URL such as \"redis://127.0.0.1:6379\", or a list)";
        return Err(Invalid::new(table, message));
    };
    let shards = validate_redis(redis)?;
    let word = |v: Option<Spanned<String>>, default: &str, key: &str| match v {
        None => Ok(default.to_owned()),
        Some(v)
            if v.get_ref()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Err(Invalid::new(
                v.span(),
                format!("[cluster] {key}: no spaces or control characters"),
            ))
        }
        Some(v) => Ok(v.into_inner()),
    };
    let name = word(raw.name, "", "name")?;
    let prefix = word(raw.prefix, super::DEFAULT_CLUSTER_PREFIX, "prefix")?;
    if prefix.is_empty() {
        return Err(Invalid::new(table, "[cluster] prefix: must not be empty"));
    }
    Ok(ClusterConfig {
        redis_url: shards[0].url.clone(),
        redis: shards[0].addr.clone(),
        shards,
        name,
        prefix,
    })
}

/// `redis`: the shards in file order. The same server twice (`redis://a` and
/// `redis://a:6379` too) is refused: it would hold the rooms of two shards, and an operator who
/// wrote it meant something else.
fn validate_redis(raw: Spanned<RawRedis>) -> Result<Vec<RedisShard>, Invalid> {
    let span = raw.span();
    let written = match raw.into_inner() {
        RawRedis::One(url) => vec![Spanned::new(span, url)],
        RawRedis::Many(list) if list.is_empty() => {
            let message = "[cluster] redis: the list is empty; name at least one Redis";
            return Err(Invalid::new(span, message));
        }
        RawRedis::Many(list) => list,
    };
    let mut shards: Vec<RedisShard> = Vec::with_capacity(written.len());
    for url in written {
        let span = url.span();
        let url = url.into_inner();
        let (host, port) = parse_redis_url(&url).map_err(|why| Invalid::new(span.clone(), why))?;
        let addr = (host.to_ascii_lowercase(), port);
        if let Some(first) = shards.iter().find(|s| s.addr == addr) {
            let message = format!(
                "[cluster] redis: {url:?} is the same server as {:?}, listed before it",
                first.url
            );
            return Err(Invalid::new(span, message));
        }
        shards.push(RedisShard { url, addr });
    }
    Ok(shards)
}

/// `redis://host[:port]` (an IPv6 host in brackets). Credentials and database numbers are not
/// supported yet, and said so rather than ignored.
pub(super) fn parse_redis_url(url: &str) -> Result<(String, u16), String> {
    let Some(rest) = url.strip_prefix("redis://") else {
        return Err(format!("[cluster] redis: {url:?} is not a redis:// URL"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') || rest.contains('/') || rest.contains('?') {
        return Err(format!(
            "[cluster] redis: {url:?}: credentials, database numbers and options are not supported"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(format!("[cluster] redis: {url:?}: unclosed '['"));
        };
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("[cluster] redis: {url:?} has no host"));
    }
    let port = match port {
        None => super::DEFAULT_REDIS_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("[cluster] redis: {url:?}: bad port"))?,
    };
    Ok((host.to_owned(), port))
}

/// `[auth]`: exactly one of `jwt_secret` and `jwt_secret_file`, giving a long enough key.
fn validate_auth(raw: Spanned<RawAuth>, base: Option<&Path>) -> Result<AuthConfig, Invalid> {
    let table = raw.span();
    let (secret, span, what) = match raw.into_inner() {
        RawAuth {
            jwt_secret: Some(_),
            jwt_secret_file: Some(file),
        } => {
            let message = "[auth]: set jwt_secret or jwt_secret_file, not both";
            return Err(Invalid::new(file.span(), message));
        }
        RawAuth {
            jwt_secret: None,
            jwt_secret_file: None,
        } => {
            let message = "[auth] needs jwt_secret or jwt_secret_file (the HS256 key for tokens)";
            return Err(Invalid::new(table, message));
        }
        RawAuth {
            jwt_secret: Some(inline),
            ..
        } => {
            let span = inline.span();
            (
                inline.into_inner().into_bytes(),
                span,
                "jwt_secret".to_owned(),
            )
        }
        RawAuth {
            jwt_secret_file: Some(file),
            ..
        } => key_file("jwt_secret_file", file, base)?,
    };
    if secret.len() < JWT_SECRET_FLOOR {
        let message = format!(
            "{what}: the secret is {} bytes; HS256 needs at least {JWT_SECRET_FLOOR} \
             (make one with e.g. `openssl rand -base64 32`)",
            secret.len()
        );
        return Err(Invalid::new(span, message));
    }
    Ok(AuthConfig {
        jwt_secret: Secret::new(secret),
    })
}

/// A key read from the file `key` names (relative to `base`, the config file's directory):
/// its bytes, the span of the key, and how errors name it (`key "path"`).
pub(super) fn key_file(
    key: &str,
    file: Spanned<String>,
    base: Option<&Path>,
) -> Result<(Vec<u8>, Range<usize>, String), Invalid> {
    let span = file.span();
    let written = file.into_inner();
    let path = match base {
        Some(dir) => dir.join(&written),
        None => Path::new(&written).to_owned(),
    };
    let bytes =
        read_secret_file(&path).map_err(|e| Invalid::new(span.clone(), format!("{key} {e}")))?;
    Ok((
        bytes,
        span,
        format!("{key} {:?}", path.display().to_string()),
    ))
}

/// The key in `path`, one trailing newline (LF or CRLF) trimmed, as `echo` and editors leave
/// one. Only a regular file is read, and no more than [`JWT_SECRET_FILE_CEILING`] bytes of it, so
/// a wrong path (a FIFO, `/dev/zero`) fails at once instead of hanging or filling memory.
pub(super) fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display().to_string();
    let cannot = |e: std::io::Error| format!("{shown:?}: cannot read: {e}");
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("{shown:?} is not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(JWT_SECRET_FILE_CEILING as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(cannot)?;
    if bytes.len() > JWT_SECRET_FILE_CEILING {
        return Err(format!(
            "{shown:?} is larger than {}: not a key file",
            human_size(JWT_SECRET_FILE_CEILING)
        ));
    }
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
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

    let size_span = raw.max_message_size.as_ref().map(Spanned::span);
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
    let queue_span = raw.send_queue_limit.as_ref().map(Spanned::span);
    let send_queue_limit = size(
        "send_queue_limit",
        raw.send_queue_limit,
        DEFAULT_SEND_QUEUE_LIMIT,
        1,
        usize::MAX,
    )?;
    if let Some(span) = queue_span.or(size_span) {
        check_fits_queue(max_message_size, send_queue_limit, span)?;
    }

    let history_memory = size(
        "history_memory",
        raw.history_memory,
        DEFAULT_HISTORY_MEMORY,
        HISTORY_MEMORY_FLOOR,
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
        colocate_members: raw.colocate_members.unwrap_or(DEFAULT_COLOCATE_MEMBERS),
        history_memory,
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

/// `workers` as the server uses it: 0 becomes one per CPU core.
pub(super) fn resolve_workers(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS),
        n => n,
    }
}

/// `send_queue_limit` must hold [`QUEUE_MESSAGES_MIN`] messages of `max_message_size`; `span`
/// points at the key that is written (the limit, or the size when the limit is the default).
pub(super) fn check_fits_queue(
    max_message_size: usize,
    send_queue_limit: usize,
    span: Range<usize>,
) -> Result<(), Invalid> {
    if max_message_size.saturating_mul(QUEUE_MESSAGES_MIN) <= send_queue_limit {
        return Ok(());
    }
    let message = format!(
        "send_queue_limit ({send_queue_limit} bytes) must hold at least {QUEUE_MESSAGES_MIN} \
         messages of max_message_size ({max_message_size} bytes), or a reader that keeps up \
         could be cut by one burst: raise send_queue_limit or lower max_message_size"
    );
    Err(Invalid::new(span, message))
}

/// A count that must be at least 1.
pub(super) fn at_least_one(
    key: &str,
    raw: Option<Spanned<usize>>,
    default: usize,
) -> Result<usize, Invalid> {
    match raw {
        None => Ok(default),
        Some(n) if *n.get_ref() == 0 => {
            Err(Invalid::new(n.span(), format!("{key} must be at least 1")))
        }
        Some(n) => Ok(n.into_inner()),
    }
}

/// A duration key: its value (or the default) and the span of the value when written.
pub(super) fn duration(
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
pub(super) fn size(
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
