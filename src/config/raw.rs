//! Step one: the raw shape of the file, as serde reads it. Every key is optional; the values that
//! validation checks keep their span, so its errors can point at them. `deny_unknown_fields`
//! everywhere: a typo is an error, not a silently ignored key.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use super::RoomAuth;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub server: RawServer,
    pub auth: Option<Spanned<RawAuth>>,
    pub room: Vec<Spanned<RawRoom>>,
    pub cluster: Option<Spanned<RawCluster>>,
    pub api: Option<Spanned<RawApi>>,
}

/// `[api]`: the server-side API's listener and key (exactly one of `key` and `key_file`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawApi {
    pub listen: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<usize>>,
}

/// `[cluster]`: scale-out over Redis.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCluster {
    /// One URL, or a list: rooms are spread over them (jump hash of the room path).
    pub redis: Option<Spanned<RawRedis>>,
    pub name: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
}

/// `[auth]`: exactly one of the two keys, checked in validation.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    pub jwt_secret: Option<Spanned<String>>,
    pub jwt_secret_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub listen: Option<Spanned<RawListen>>,
    pub workers: Option<Spanned<usize>>,
    pub max_connections: Option<Spanned<usize>>,
    pub max_connections_per_ip: Option<usize>,
    pub handshake_timeout: Option<Spanned<RawDuration>>,
    pub ping_interval: Option<Spanned<RawDuration>>,
    pub idle_timeout: Option<Spanned<RawDuration>>,
    pub close_timeout: Option<Spanned<RawDuration>>,
    pub max_message_size: Option<Spanned<RawSize>>,
    pub max_header_size: Option<Spanned<RawSize>>,
    pub send_queue_limit: Option<Spanned<RawSize>>,
    pub shutdown_grace: Option<Spanned<RawDuration>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub demo_page: Option<bool>,
    pub colocate_members: Option<usize>,
    pub history_memory: Option<Spanned<RawSize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRoom {
    pub path: Option<Spanned<String>>,
    pub subprotocols: Vec<Spanned<String>>,
    pub max_members: Option<Spanned<usize>>,
    pub echo: Option<bool>,
    pub allowed_origins: Vec<Spanned<String>>,
    pub max_message_size: Option<Spanned<RawSize>>,
    pub max_messages_per_second: Option<Spanned<u32>>,
    pub auth: Option<Spanned<RoomAuth>>,
    pub compression: Option<bool>,
    pub compression_min_size: Option<Spanned<RawSize>>,
    pub history_size: Option<Spanned<usize>>,
    pub history_ttl: Option<Spanned<RawDuration>>,
    pub presence: Option<bool>,
    pub presence_max_events_per_second: Option<Spanned<u32>>,
}

/// `listen`: one address or a list of them.
pub(super) enum RawListen {
    One(String),
    Many(Vec<Spanned<String>>),
}

/// `[cluster] redis`: one URL or a list of them, each keeping its span for errors.
pub(super) enum RawRedis {
    One(String),
    Many(Vec<Spanned<String>>),
}

/// A duration as written, e.g. `"5s"`; [`super::units::parse_duration`] reads it during validation.
pub(super) struct RawDuration(pub String);

/// A size as written: bytes, or a string with a unit; [`super::units::parse_size`] reads the string.
pub(super) enum RawSize {
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

impl<'de> Deserialize<'de> for RawRedis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRedis;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a URL \"redis://host[:port]\" or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRedis, E> {
                Ok(RawRedis::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRedis, A::Error> {
                let mut all = Vec::new();
                while let Some(url) = seq.next_element()? {
                    all.push(url);
                }
                Ok(RawRedis::Many(all))
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
