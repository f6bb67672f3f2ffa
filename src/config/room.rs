//! One `[[room]]`: its path (exact or a `/*` pattern), subprotocols, origins, limits and
//! `auth`, each checked with the span of the value at fault.

use std::net::Ipv6Addr;
use std::ops::Range;

use toml::Spanned;

use super::raw::RawRoom;
use super::validate::{Invalid, check_fits_queue, duration, size};
use super::*;

/// A validated room, with the span of its path for the duplicate check.
pub(super) struct CheckedRoom {
    pub config: RoomConfig,
    pub path_span: Range<usize>,
}

/// `has_secret`: the file has an `[auth]` table, so `auth = "jwt"` is possible.
pub(super) fn validate_room(
    mut raw: RawRoom,
    header: Range<usize>,
    server: &ServerConfig,
    has_secret: bool,
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
    let config = room_keys(raw, path.clone(), server, has_secret).map_err(|e| Invalid {
        message: format!("room {path:?}: {}", e.message),
        ..e
    })?;
    Ok(CheckedRoom { config, path_span })
}

/// Every key of a room but its path, which is already checked.
fn room_keys(
    raw: RawRoom,
    path: String,
    server: &ServerConfig,
    has_secret: bool,
) -> Result<RoomConfig, Invalid> {
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

    let max_members = raw
        .max_members
        .map_or(DEFAULT_MAX_MEMBERS, Spanned::into_inner);

    let mut allowed_origins = Vec::with_capacity(raw.allowed_origins.len());
    for origin in raw.allowed_origins {
        if let Err(problem) = check_origin(origin.get_ref()) {
            let message = format!("allowed origin {:?} {problem}", origin.get_ref());
            return Err(Invalid::new(origin.span(), message));
        }
        allowed_origins.push(origin.into_inner());
    }

    let own_size = raw.max_message_size.as_ref().map(Spanned::span);
    let max_message_size = size(
        "max_message_size",
        raw.max_message_size,
        server.max_message_size,
        1,
        MESSAGE_SIZE_CEILING,
    )?;
    // The server's own max_message_size is checked against the limit with the server's keys.
    if let Some(span) = own_size {
        check_fits_queue(max_message_size, server.send_queue_limit, span)?;
    }

    let auth = match raw.auth {
        None => DEFAULT_ROOM_AUTH,
        Some(a) if *a.get_ref() == RoomAuth::Jwt && !has_secret => {
            let message = "auth = \"jwt\" needs the key to check tokens with: add an [auth] table \
                           with jwt_secret or jwt_secret_file";
            return Err(Invalid::new(a.span(), message));
        }
        Some(a) => a.into_inner(),
    };

    let compression_min_size = size(
        "compression_min_size",
        raw.compression_min_size,
        DEFAULT_COMPRESSION_MIN_SIZE,
        0,
        MESSAGE_SIZE_CEILING,
    )?;

    let history_size = match raw.history_size {
        Some(n) if *n.get_ref() > HISTORY_SIZE_CEILING => {
            let message = format!(
                "history_size must be at most {HISTORY_SIZE_CEILING} (kept messages per room)"
            );
            return Err(Invalid::new(n.span(), message));
        }
        Some(n) => n.into_inner(),
        None => DEFAULT_HISTORY_SIZE,
    };
    let (history_ttl, ttl_span) = duration("history_ttl", raw.history_ttl, DEFAULT_HISTORY_TTL)?;
    if let Some(span) = ttl_span
        && history_ttl.is_zero()
    {
        let message = "history_ttl must be greater than 0 (use history_size = 0 for no history)";
        return Err(Invalid::new(span, message));
    }

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
        auth,
        compression: raw.compression.unwrap_or(DEFAULT_COMPRESSION),
        compression_min_size,
        history_size,
        history_ttl,
        presence: raw.presence.unwrap_or(DEFAULT_PRESENCE),
        presence_max_events_per_second: match raw.presence_max_events_per_second {
            Some(n) if *n.get_ref() == 0 => {
                let message = "presence_max_events_per_second must be at least 1 \
                               (use presence = false for no events)";
                return Err(Invalid::new(n.span(), message));
            }
            Some(n) => n.into_inner(),
            None => DEFAULT_PRESENCE_MAX_EVENTS_PER_SECOND,
        },
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
