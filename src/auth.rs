//! Token auth for rooms with `auth = "jwt"`: finding the token in a request, verifying it as an
//! HS256 JSON Web Token, and reading the claims that decide what the client may do.
//!
//! Pure: the key and the time (`now`, in unix seconds) are arguments, so tests mint tokens and
//! move the clock freely. The acceptor turns a [`Rejection`] into its HTTP status and a valid
//! token's [`Claims`] into the member's rights; the config owns the key
//! ([`crate::config::AuthConfig`]). The crypto is not ours: `hmac` + `sha2` compute the MAC and
//! compare it in constant time.
//!
//! Claims read: `exp` (required), `nbf` (optional), `rooms` (optional: the room paths and
//! `/prefix/*` patterns the token opens; absent: every `auth = "jwt"` room), `publish` (optional,
//! default true: false makes a listen-only member), `sub` (optional: who, for presence and the
//! API's disconnect and ban) and `iat` (optional: a ban refuses tokens issued before it). Other
//! claims are ignored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// Clock skew allowed on `exp` and `nbf`, in seconds: the service that mints tokens runs on
/// another machine whose clock may be a little ahead or behind ours; half a minute covers an
/// NTP-synchronised pair with a wide margin while keeping an expired token's afterlife short.
pub const CLOCK_SKEW_SECS: i64 = 30;

/// The only algorithm accepted. Anything else, `none` above all, is refused before the
/// signature is looked at, so a token can never choose how it is checked.
pub const ALGORITHM: &str = "HS256";

/// Why a request for an `auth = "jwt"` room was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No token in the query (`?token=`) or an `Authorization: Bearer` header.
    Missing,
    /// Not a well-formed HS256 JWT (the reason says which part is wrong).
    Malformed(&'static str),
    /// Well-formed, but the signature does not match: forged, or made with another key.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is still to come.
    NotYetValid,
    /// A valid token whose `rooms` does not include this room.
    NotForRoom,
}

impl Rejection {
    /// True when the client is known but not allowed here (HTTP 403); otherwise it has not
    /// proved who it is (HTTP 401).
    pub fn is_forbidden(self) -> bool {
        self == Rejection::NotForRoom
    }

    /// A short reason for the response body and the log; never contains the token.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "token required",
            Rejection::Malformed(why) => why,
            Rejection::BadSignature => "token signature invalid",
            Rejection::Expired => "token expired",
            Rejection::NotYetValid => "token not yet valid",
            Rejection::NotForRoom => "token does not open this room",
        }
    }
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// Expiry, unix seconds (a fractional `exp` is rounded down).
    pub exp: i64,
    /// Not before, unix seconds, when given.
    pub nbf: Option<i64>,
    /// Room paths and `/prefix/*` patterns; `None`: every `auth = "jwt"` room.
    pub rooms: Option<Vec<String>>,
    /// False: the member may only listen; a message it sends closes it with 1008.
    pub publish: bool,
    /// Who the token is for (`sub`): presence shows it; the API disconnects and bans by it.
    pub sub: Option<String>,
    /// Issued at, unix seconds (`iat`): a ban refuses tokens issued before it.
    pub iat: Option<i64>,
}

impl Claims {
    /// Whether the token opens the room at request path `path`. An entry `P/*` opens every path
    /// that starts with `P/` (as a `[[room]]` pattern routes); any other entry only itself.
    pub fn opens(&self, path: &str) -> bool {
        let Some(rooms) = &self.rooms else {
            return true;
        };
        rooms.iter().any(|entry| match entry.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') => path.starts_with(prefix),
            _ => entry == path,
        })
    }
}

/// Everything the acceptor asks: the request's token (see [`token_in`]), verified with `key` at
/// `now`, opening the room at `path`.
pub fn admit(
    query: Option<&str>,
    authorization: Option<&str>,
    key: &[u8],
    now: u64,
    path: &str,
) -> Result<Claims, Rejection> {
    let token = token_in(query, authorization)?;
    let claims = verify(token, key, now)?;
    if !claims.opens(path) {
        return Err(Rejection::NotForRoom);
    }
    Ok(claims)
}

/// The token of a request: `Authorization: Bearer <token>` when that header is present, else the
/// `token` parameter of the query string (parameters split on `&`; browsers cannot set headers
/// on a WebSocket, so the query is their only way). A JWT's alphabet (base64url and `.`) needs
/// no percent-encoding, so none is undone.
pub fn token_in<'a>(
    query: Option<&'a str>,
    authorization: Option<&'a str>,
) -> Result<&'a str, Rejection> {
    if let Some(value) = authorization
        && let Some((scheme, token)) = value.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        let token = token.trim();
        if token.is_empty() {
            return Err(Rejection::Malformed("empty bearer token"));
        }
        return Ok(token);
    }
    let mut found = None;
    for param in query.unwrap_or("").split('&') {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name != "token" {
            continue;
        }
        if found.is_some() {
            return Err(Rejection::Malformed("token given twice"));
        }
        found = Some(value);
    }
    match found {
        None => Err(Rejection::Missing),
        Some("") => Err(Rejection::Malformed("empty token")),
        Some(token) => Ok(token),
    }
}

/// Verify `token` as an HS256 JWT signed with `key`, valid at `now` (unix seconds). The header
/// is checked first (`alg` must be `HS256`), then the signature, and only a signed payload is
/// parsed for its claims.
pub fn verify(token: &str, key: &[u8], now: u64) -> Result<Claims, Rejection> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed(
            "token is not a JWT (three base64url parts joined by dots)",
        ));
    };

    let header = json_object(header_b64, "token header is not base64url JSON")?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == ALGORITHM => {}
        _ => return Err(Rejection::Malformed("token alg is not HS256")),
    }
    // RFC 7515 §4.1.11: extensions we would have to understand; we understand none.
    if header.contains_key("crit") {
        return Err(Rejection::Malformed("token has a crit header"));
    }

    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Rejection::Malformed("token signature is not base64url"))?;
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(signed.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| Rejection::BadSignature)?;

    let claims = read_claims(&json_object(
        payload_b64,
        "token payload is not base64url JSON",
    )?)?;
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if now >= claims.exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Rejection::Expired);
    }
    if let Some(nbf) = claims.nbf
        && now < nbf.saturating_sub(CLOCK_SKEW_SECS)
    {
        return Err(Rejection::NotYetValid);
    }
    Ok(claims)
}

/// A base64url part decoded and parsed as a JSON object.
fn json_object(part: &str, bad: &'static str) -> Result<Map<String, Value>, Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Rejection::Malformed(bad))?;
    serde_json::from_slice(&bytes).map_err(|_| Rejection::Malformed(bad))
}

fn read_claims(payload: &Map<String, Value>) -> Result<Claims, Rejection> {
    let exp = match payload.get("exp") {
        None | Some(Value::Null) => return Err(Rejection::Malformed("token has no exp claim")),
        Some(v) => numeric_date(v).ok_or(Rejection::Malformed("token exp is not a number"))?,
    };
    let nbf = match payload.get("nbf") {
        None | Some(Value::Null) => None,
        Some(v) => Some(numeric_date(v).ok_or(Rejection::Malformed("token nbf is not a number"))?),
    };
    let rooms = match payload.get("rooms") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => Some(
            list.iter()
                .map(|r| r.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(Rejection::Malformed("token rooms is not a list of paths"))?,
        ),
        Some(_) => return Err(Rejection::Malformed("token rooms is not a list of paths")),
    };
    let publish = match payload.get("publish") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Rejection::Malformed("token publish is not true or false")),
    };
    let sub = match payload.get("sub") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Rejection::Malformed("token sub is not a string")),
    };
    let iat = match payload.get("iat") {
        None | Some(Value::Null) => None,
        Some(v) => Some(numeric_date(v).ok_or(Rejection::Malformed("token iat is not a number"))?),
    };
    Ok(Claims {
        exp,
        nbf,
        rooms,
        publish,
        sub,
        iat,
    })
}

/// A JWT NumericDate (RFC 7519 §2): seconds, possibly fractional; rounded down, saturating.
fn numeric_date(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    // Integers past i64 and fractions; `as` saturates, and no JSON number is NaN.
    v.as_f64().map(|f| f.floor() as i64)
}

#[cfg(test)]
mod tests;
