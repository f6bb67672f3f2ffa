//! The API's URLs: which endpoint a path names, the method it takes, and its query parameters,
//! checked into a [`Route`]. Room paths go in the URL without their leading slash
//! (`/api/v1/publish/rooms/lobby` is room `/rooms/lobby`), as sent (no decoding: a member's
//! path is not decoded either). Pure; no config, no sockets.

use std::time::Duration;

use super::calls::Who;
use super::request::query_pairs;
use crate::metrics::ApiEndpoint;

/// `limit` of `GET /api/v1/rooms` when absent, and its ceiling.
pub const ROOMS_LIMIT_DEFAULT: usize = 1000;
pub const ROOMS_LIMIT_MAX: usize = 100_000;
/// `limit` of `GET /api/v1/history/…` when absent, and its ceiling (a room keeps at most
/// `history_size`, itself at most 100,000).
pub const HISTORY_LIMIT_DEFAULT: usize = 1000;
pub const HISTORY_LIMIT_MAX: usize = 100_000;
/// The longest `ban`: a year, like every duration in the config.
pub const BAN_MAX_SECS: u64 = 365 * 24 * 3600;

/// A request the API understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Publish {
        room: String,
    },
    Batch,
    Rooms {
        prefix: String,
        limit: usize,
    },
    Room {
        room: String,
    },
    History {
        room: String,
        since: Option<u64>,
        limit: usize,
    },
    Presence {
        room: String,
    },
    Disconnect {
        room: String,
        who: Who,
        ban: Option<Duration>,
    },
}

/// A request refused from its line: the status, the reason, and for 405 the `Allow` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub reason: String,
    pub allow: Option<&'static str>,
}

impl Refused {
    pub fn new(status: u16, reason: impl Into<String>) -> Refused {
        Refused {
            status,
            reason: reason.into(),
            allow: None,
        }
    }
}

/// The endpoint a path names (for the metrics label, before anything else is checked), the
/// method it takes, and the room it names (with its leading slash) if it takes one.
pub fn endpoint(path: &str) -> (ApiEndpoint, &'static str, Option<String>) {
    let room = |rest: &str| (!rest.is_empty()).then(|| format!("/{rest}"));
    if path == "/api/v1/batch" {
        return (ApiEndpoint::Batch, "POST", None);
    }
    if path == "/api/v1/rooms" {
        return (ApiEndpoint::Rooms, "GET", None);
    }
    let with_room = [
        ("/api/v1/publish/", ApiEndpoint::Publish, "POST"),
        ("/api/v1/rooms/", ApiEndpoint::Room, "GET"),
        ("/api/v1/history/", ApiEndpoint::History, "GET"),
        ("/api/v1/presence/", ApiEndpoint::Presence, "GET"),
        ("/api/v1/disconnect/", ApiEndpoint::Disconnect, "POST"),
    ];
    for (prefix, e, method) in with_room {
        if let Some(r) = path.strip_prefix(prefix).and_then(room) {
            return (e, method, Some(r));
        }
    }
    (ApiEndpoint::Unknown, "", None)
}

/// The route for a request line, or why not: 404 unknown path, 405 wrong method, 400 a bad
/// query parameter (unknown, repeated, or not a valid value).
pub fn route(method: &str, path: &str, query: Option<&str>) -> Result<Route, Refused> {
    let (e, allowed, room) = endpoint(path);
    if e == ApiEndpoint::Unknown {
        return Err(Refused::new(404, format!("no API endpoint at {path}")));
    }
    if method != allowed {
        return Err(Refused {
            status: 405,
            reason: format!("{path} takes {allowed} only"),
            allow: Some(allowed),
        });
    }
    let pairs = query_pairs(query).map_err(|e| Refused::new(400, e))?;
    let known: &[&str] = match e {
        ApiEndpoint::Rooms => &["prefix", "limit"],
        ApiEndpoint::History => &["since", "limit"],
        ApiEndpoint::Disconnect => &["member", "user", "ban"],
        _ => &[],
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in &pairs {
        let Some(k) = known.iter().find(|k| *k == name) else {
            return Err(Refused::new(400, format!("unknown parameter {name:?}")));
        };
        if seen.contains(k) {
            return Err(Refused::new(400, format!("parameter {name:?} given twice")));
        }
        seen.push(k);
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let number = |name: &str, max: u64| -> Result<Option<u64>, Refused> {
        get(name)
            .map(|v| {
                v.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| {
                    Refused::new(400, format!("{name} must be a number up to {max}"))
                })
            })
            .transpose()
    };
    let limit = |default: usize, max: usize| -> Result<usize, Refused> {
        match number("limit", max as u64)? {
            Some(0) => Err(Refused::new(400, "limit must be at least 1")),
            Some(n) => Ok(n as usize),
            None => Ok(default),
        }
    };
    let room = room.unwrap_or_default();
    Ok(match e {
        ApiEndpoint::Publish => Route::Publish { room },
        ApiEndpoint::Batch => Route::Batch,
        ApiEndpoint::Rooms => Route::Rooms {
            prefix: get("prefix").unwrap_or("/").to_owned(),
            limit: limit(ROOMS_LIMIT_DEFAULT, ROOMS_LIMIT_MAX)?,
        },
        ApiEndpoint::Room => Route::Room { room },
        ApiEndpoint::History => Route::History {
            room,
            since: number("since", u64::MAX)?,
            limit: limit(HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)?,
        },
        ApiEndpoint::Presence => Route::Presence { room },
        ApiEndpoint::Disconnect => {
            let who = match (get("member"), get("user")) {
                (Some(m), None) if !m.is_empty() => Who::Member(m.to_owned()),
                (None, Some(u)) if !u.is_empty() => Who::User(u.to_owned()),
                _ => {
                    return Err(Refused::new(
                        400,
                        "name exactly one of member=<id> and user=<sub>",
                    ));
                }
            };
            let ban = number("ban", BAN_MAX_SECS)?.map(Duration::from_secs);
            if ban.is_some() && !matches!(who, Who::User(_)) {
                return Err(Refused::new(400, "ban goes with user=<sub>, not member"));
            }
            Route::Disconnect { room, who, ban }
        }
        ApiEndpoint::Unknown => unreachable!("refused above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: &str, path: &str, query: Option<&str>) -> Route {
        route(method, path, query).unwrap_or_else(|r| panic!("{path}: {r:?}"))
    }

    fn status(method: &str, path: &str, query: Option<&str>) -> u16 {
        route(method, path, query).unwrap_err().status
    }

    #[test]
    fn every_endpoint() {
        assert_eq!(
            ok("POST", "/api/v1/publish/rooms/lobby", None),
            Route::Publish {
                room: "/rooms/lobby".into()
            }
        );
        assert_eq!(ok("POST", "/api/v1/batch", None), Route::Batch);
        assert_eq!(
            ok("GET", "/api/v1/rooms", Some("prefix=/rooms/&limit=5")),
            Route::Rooms {
                prefix: "/rooms/".into(),
                limit: 5
            }
        );
        assert_eq!(
            ok("GET", "/api/v1/rooms", None),
            Route::Rooms {
                prefix: "/".into(),
                limit: ROOMS_LIMIT_DEFAULT
            }
        );
        assert_eq!(
            ok("GET", "/api/v1/rooms/chat", None),
            Route::Room {
                room: "/chat".into()
            }
        );
        assert_eq!(
            ok("GET", "/api/v1/history/chat", Some("since=4")),
            Route::History {
                room: "/chat".into(),
                since: Some(4),
                limit: HISTORY_LIMIT_DEFAULT
            }
        );
        assert_eq!(
            ok("GET", "/api/v1/presence/a/b", None),
            Route::Presence {
                room: "/a/b".into()
            }
        );
        assert_eq!(
            ok("POST", "/api/v1/disconnect/chat", Some("user=alice&ban=60")),
            Route::Disconnect {
                room: "/chat".into(),
                who: Who::User("alice".into()),
                ban: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(
            ok("POST", "/api/v1/disconnect/chat", Some("member=1-2")),
            Route::Disconnect {
                room: "/chat".into(),
                who: Who::Member("1-2".into()),
                ban: None
            }
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(status("GET", "/api/v1/nothing", None), 404);
        assert_eq!(status("POST", "/api/v1/publish/", None), 404);
        assert_eq!(status("GET", "/", None), 404);
        let r = route("GET", "/api/v1/publish/chat", None).unwrap_err();
        assert_eq!((r.status, r.allow), (405, Some("POST")));
        let r = route("DELETE", "/api/v1/rooms", None).unwrap_err();
        assert_eq!((r.status, r.allow), (405, Some("GET")));
        assert_eq!(status("GET", "/api/v1/rooms", Some("limit=0")), 400);
        assert_eq!(status("GET", "/api/v1/rooms", Some("limit=x")), 400);
        assert_eq!(status("GET", "/api/v1/rooms", Some("limit=1&limit=2")), 400);
        assert_eq!(status("GET", "/api/v1/rooms", Some("bogus=1")), 400);
        assert_eq!(status("POST", "/api/v1/publish/chat", Some("x=1")), 400);
        assert_eq!(status("POST", "/api/v1/disconnect/chat", None), 400);
        assert_eq!(
            status("POST", "/api/v1/disconnect/chat", Some("member=a&user=b")),
            400
        );
        assert_eq!(
            status("POST", "/api/v1/disconnect/chat", Some("member=a&ban=5")),
            400
        );
    }
}
