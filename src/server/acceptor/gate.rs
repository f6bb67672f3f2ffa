//! What a complete request gets: the plain answers (`/healthz`, `/metrics`, the demo page), the
//! checks in their order (route, request shape, origin, token, admission) and the refusal for
//! each, or an admitted upgrade.

use super::*;
use crate::auth::Claims;
use crate::deflate;
use crate::relay::history::{Keep, V1_PROTOCOL, parse_want};

impl Acceptor {
    /// Decide what a complete request gets.
    pub(super) fn answer(&mut self, req: &Request, peer: SocketAddr, early: Vec<u8>) -> Answer {
        let refuse = |counts: &mut AcceptorCounts, status: Status, why: &str| {
            counts.refused(status.code());
            debug!(
                "{peer} {} {}: {} {why}",
                req.method,
                req.path,
                status.code()
            );
            Answer::Http(http::refusal(status, &format!("{why}\n")))
        };
        if req.method == "GET" && req.path == "/healthz" {
            if let Some(w) = self.stalled_worker() {
                let body = format!("worker w{w} stalled\n");
                return Answer::Http(http::response(Status::ServiceUnavailable, &[], &body));
            }
            // Any Redis down: its rooms cannot be served here, send new clients elsewhere.
            if self.cluster.as_ref().is_some_and(|c| !c.all_up()) {
                let body = "redis unavailable\n";
                return Answer::Http(http::response(Status::ServiceUnavailable, &[], body));
            }
            return Answer::Http(http::response(Status::Ok, &[], "ok\n"));
        }
        if req.method == "GET" && req.path == "/metrics" {
            self.counts.connections_open = self.admission.open() as u64;
            self.counts.rooms_open = self.admission.rooms() as u64;
            // Not counting this request, which is still among them.
            self.counts.handshakes_pending = self.pending.len().saturating_sub(1) as u64;
            self.counts.max_connections = self.config.server.max_connections as u64;
            let mut body = metrics::render(&self.counts, &self.worker_counters);
            if let Some(c) = &self.cluster {
                body.push_str(&c.render());
            }
            return Answer::Http(http::response_typed(
                Status::Ok,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            ));
        }
        if req.method == "GET"
            && req.path == "/"
            && !req.upgrade_websocket
            && self.config.server.demo_page
        {
            return Answer::Http(http::response_typed(
                Status::Ok,
                "text/html; charset=utf-8",
                DEMO_PAGE.as_bytes(),
            ));
        }
        if req.method == "GET"
            && req.path == "/wsrelay.js"
            && !req.upgrade_websocket
            && self.config.server.demo_page
        {
            return Answer::Http(http::response_typed(
                Status::Ok,
                "text/javascript; charset=utf-8",
                DEMO_CLIENT.as_bytes(),
            ));
        }
        let Some(room) = self.config.route(&req.path) else {
            return refuse(&mut self.counts, Status::NotFound, "no room at this path");
        };
        if req.method != "GET" {
            return refuse(
                &mut self.counts,
                Status::MethodNotAllowed,
                "use GET to join a room",
            );
        }
        if !req.upgrade_websocket {
            return refuse(
                &mut self.counts,
                Status::UpgradeRequired,
                "this is a WebSocket room: connect with a WebSocket client",
            );
        }
        match req.version.as_deref() {
            Some("13") => {}
            Some(_) => {
                return refuse(
                    &mut self.counts,
                    Status::UpgradeRequired,
                    "unsupported Sec-WebSocket-Version",
                );
            }
            None => {
                return refuse(
                    &mut self.counts,
                    Status::BadRequest,
                    "missing Sec-WebSocket-Version",
                );
            }
        }
        let key = match &req.key {
            Some(k) if http::is_valid_key(k) => k,
            _ => {
                return refuse(
                    &mut self.counts,
                    Status::BadRequest,
                    "missing or invalid Sec-WebSocket-Key",
                );
            }
        };
        if !req.http11 || !req.connection_upgrade || req.malformed {
            return refuse(
                &mut self.counts,
                Status::BadRequest,
                "malformed upgrade request",
            );
        }
        if let Some(origin) = &req.origin
            && !room.allowed_origins.is_empty()
            && !room.allowed_origins.iter().any(|o| o == origin)
        {
            return refuse(&mut self.counts, Status::Forbidden, "origin not allowed");
        }
        let (may_publish, user) = match authorize(req, room, self.config.auth.as_ref()) {
            Ok(claims) => claims,
            Err(r) if r.is_forbidden() => {
                return refuse(&mut self.counts, Status::Forbidden, r.reason());
            }
            Err(r) => return refuse(&mut self.counts, Status::Unauthorized, r.reason()),
        };
        let want = match parse_want(req.query.as_deref(), room.history_size) {
            Ok(want) => want,
            Err(why) => return refuse(&mut self.counts, Status::BadRequest, &why),
        };
        if let Some(c) = &user
            && let Some(sub) = &c.sub
            && self.bans.refuses(&req.path, sub, c.iat)
        {
            return refuse(&mut self.counts, Status::Forbidden, "banned from this room");
        }
        let user = user.and_then(|c| c.sub).map(String::into_boxed_str);
        let ip = client_ip(
            peer.ip(),
            req.forwarded_for.as_deref(),
            &self.config.server.trusted_proxies,
        );
        if self.cluster.as_ref().is_some_and(|c| !c.up_for(&req.path)) {
            // Nothing of the room can be sequenced, and a new room could not learn its epoch:
            // send the client to another node (the load balancer sees /healthz 503 too). Rooms
            // on the other Redis shards still take members.
            return refuse(
                &mut self.counts,
                Status::ServiceUnavailable,
                "redis unavailable",
            );
        }
        let ticket = match self.admission.admit(&req.path, room.max_members, ip) {
            Ok(t) => t,
            Err(r) => {
                let (status, why) = match r {
                    Refusal::ServerFull => (Status::ServiceUnavailable, "server full"),
                    Refusal::RoomFull => (Status::ServiceUnavailable, "room full"),
                    Refusal::TooManyFromAddress => (
                        Status::TooManyRequests,
                        "too many connections from this address",
                    ),
                };
                info!("{ip} {}: refused: {why}", req.path);
                return refuse(&mut self.counts, status, why);
            }
        };
        // Every room speaks wsrelay.v1 to a client that offers it, whatever else it offers.
        let v1 = req.protocols.iter().any(|p| p == V1_PROTOCOL);
        let protocol = match v1 {
            true => Some(V1_PROTOCOL),
            false => http::choose_protocol(&req.protocols, &room.subprotocols),
        };
        let deflate = room
            .compression
            .then(|| deflate::negotiate(req.extensions.iter().map(String::as_str)))
            .flatten();
        self.counts.accepted += 1;
        Answer::Upgrade(Box::new(Admitted {
            peer: SocketAddr::new(ip, peer.port()),
            ticket,
            path: req.path.as_str().into(),
            settings: RoomSettings {
                echo: room.echo,
                max_message_size: room.max_message_size,
                max_messages_per_second: room.max_messages_per_second,
                may_publish,
                authenticated: room.auth == crate::config::RoomAuth::Jwt,
                deflate,
                compress_from: room.compress_from(),
                v1,
                want,
                user,
                presence: room.presence.then_some(room.presence_max_events_per_second),
                keep: Keep {
                    size: room.history_size,
                    ttl: room.history_ttl,
                },
            },
            response: http::switching_protocols(key, protocol, deflate.as_ref()),
            early,
        }))
    }
}

/// Whether the client may join `room` (`Err`: why not) and, if so, publish there. A room with
/// `auth = "jwt"` needs a token, in the query or an `Authorization: Bearer` header, that opens
/// the request path; its `publish` claim is the answer. Checked before admission, so a client
/// without a valid token never holds a slot. The token itself is never logged.
fn authorize(
    req: &Request,
    room: &RoomConfig,
    auth: Option<&AuthConfig>,
) -> Result<(bool, Option<Claims>), Rejection> {
    let key = match (room.auth, auth) {
        (RoomAuth::None, _) => return Ok((true, None)),
        (RoomAuth::Jwt, Some(auth)) => auth.jwt_secret.expose(),
        // The config refuses a jwt room without a key; were one to slip through, no token opens it.
        (RoomAuth::Jwt, None) => return Err(Rejection::BadSignature),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let query = req.query.as_deref();
    let claims = crate::auth::admit(query, req.authorization.as_deref(), key, now, &req.path)?;
    Ok((claims.publish, Some(claims)))
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// rightmost `X-Forwarded-For` address that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for hop in list.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => last = ip,
            Ok(ip) => return ip,
            Err(_) => return last,
        }
    }
    last
}
