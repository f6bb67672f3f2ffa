//! What a request gets, step by step: the head (framing, key, route, limits: refused before the
//! body is read), the body (UTF-8, idempotency, batch lines), the calls into the relay, and the
//! answer once every outcome is in.

use std::time::Instant;

use log::debug;

use super::batch::{self, Line};
use super::calls::{Body, Call, CallId, Outcome};
use super::conn::{Filled, Job, Phase, Work};
use super::front::{Front, Waiter};
use super::idempotency::{Lookup, fingerprint};
use super::reply::{NDJSON, Reply, for_outcome};
use super::request::{BodyKind, Head, HeadError, authorized, body_kind, parse_head};
use super::routes::{Route, endpoint, route};

impl Front {
    /// Read and parse a head; true when the connection moved to another phase.
    pub(super) fn read_head(&mut self, key: usize, now: Instant) -> bool {
        let max = self.config.server.max_header_size;
        let handshake_timeout = self.config.server.handshake_timeout;
        let c = &mut self.conns[key];
        let was_empty = c.buf.is_empty();
        let filled = match parse_head(&c.buf, max) {
            Ok(None) => match c.fill(max + 1) {
                Ok(f) => Some(f),
                Err(_) => {
                    self.drop_conn(key);
                    return false;
                }
            },
            _ => None,
        };
        if was_empty && !c.buf.is_empty() {
            // A new request starts: it has handshake_timeout to come in whole.
            c.deadline = now + handshake_timeout;
        }
        match parse_head(&c.buf, max) {
            Ok(Some(head)) => {
                c.buf.drain(..head.len);
                self.on_head(key, head, now);
                true
            }
            Err(HeadError::TooLarge) => {
                self.refuse(key, 431, "request head too large", true, now);
                true
            }
            Err(HeadError::Invalid(why)) => {
                self.refuse(key, 400, why, true, now);
                true
            }
            Ok(None) => match filled {
                Some(Filled::Eof) | None => {
                    self.drop_conn(key);
                    false
                }
                // Full cannot leave a partial head (the parser says TooLarge), so: drained.
                Some(_) => false,
            },
        }
    }

    /// Read the body; true when it is complete and handled.
    pub(super) fn read_body(&mut self, key: usize, now: Instant) -> bool {
        let c = &mut self.conns[key];
        let Phase::Body { head, .. } = &c.phase else {
            return false;
        };
        // The head is out of the buffer already: the body is at its start.
        let end = head.content_length.unwrap_or(0) as usize;
        if c.buf.len() < end {
            match c.fill(end) {
                Ok(Filled::Drained) | Ok(Filled::Full) if c.buf.len() < end => return false,
                Ok(Filled::Eof) if c.buf.len() < end => {
                    self.drop_conn(key);
                    return false;
                }
                Err(_) => {
                    self.drop_conn(key);
                    return false;
                }
                Ok(_) => {}
            }
        }
        let Phase::Body { head, work } = std::mem::replace(&mut c.phase, Phase::Head) else {
            unreachable!("checked above");
        };
        let rest = c.buf.split_off(end);
        let body = std::mem::replace(&mut c.buf, rest);
        self.on_body(key, head, work, body, now);
        true
    }

    /// A complete head: refuse it, start its calls, or wait for its body.
    fn on_head(&mut self, key: usize, head: Head, now: Instant) {
        let (e, _, _) = endpoint(&head.path);
        let c = &mut self.conns[key];
        c.endpoint = e;
        c.close_after = !head.keep_alive;
        // Unread body bytes would be taken for the next request: a refusal closes.
        let has_body = head.content_length.is_some_and(|n| n > 0) || head.transfer_encoding;
        if head.transfer_encoding {
            return self.refuse(
                key,
                501,
                "Transfer-Encoding is not supported: send Content-Length",
                true,
                now,
            );
        }
        if !authorized(head.authorization.as_deref(), self.key.expose()) {
            debug!("api: {}: {} {}: 401", c.peer, head.method, head.path);
            return self.refuse(
                key,
                401,
                "missing or wrong API key (Authorization: Bearer <key>)",
                true,
                now,
            );
        }
        let close = has_body;
        if self.disabled {
            return self.refuse(
                key,
                503,
                "the API was removed from the configuration",
                close,
                now,
            );
        }
        let r = match route(&head.method, &head.path, head.query.as_deref()) {
            Ok(r) => r,
            Err(refused) => {
                let mut reply = Reply::error(refused.status, &refused.reason);
                reply.allow = refused.allow;
                return self.respond(key, reply, close, now);
            }
        };
        let work = match &r {
            Route::Publish { room } => {
                let Some(length) = head.content_length else {
                    return self.refuse(key, 411, "a message needs Content-Length", true, now);
                };
                let binary = match body_kind(head.content_type.as_deref()) {
                    Ok(kind) => kind == BodyKind::Binary,
                    Err(why) => return self.refuse(key, 415, why, close, now),
                };
                let Some(config) = self.config.route(room) else {
                    return self.refuse(key, 404, "no room at this path", close, now);
                };
                if length > config.max_message_size as u64 {
                    let why = format!(
                        "the message is over the room's max_message_size ({} bytes)",
                        config.max_message_size
                    );
                    return self.refuse(key, 413, &why, true, now);
                }
                Work::Publish {
                    room: room.clone(),
                    binary,
                }
            }
            Route::Batch => {
                let Some(length) = head.content_length else {
                    return self.refuse(key, 411, "a batch needs Content-Length", true, now);
                };
                if length > batch::MAX_BYTES as u64 {
                    let why = format!("a batch holds at most {} bytes", batch::MAX_BYTES);
                    return self.refuse(key, 413, &why, true, now);
                }
                Work::Batch
            }
            _ if has_body => {
                return self.refuse(key, 400, "this endpoint takes no body", true, now);
            }
            Route::Room { room }
            | Route::History { room, .. }
            | Route::Presence { room }
            | Route::Disconnect { room, .. }
                if self.config.route(room).is_none() =>
            {
                return self.refuse(key, 404, "no room at this path", close, now);
            }
            _ => return self.start(key, vec![call_of(r)], false, None, now),
        };
        let c = &mut self.conns[key];
        if head.expect_continue {
            // The head passed every check: ask for the body. The socket has nothing queued
            // (the last answer is written), so these few bytes go out whole.
            let _ = std::io::Write::write(&mut c.stream, b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        c.phase = Phase::Body { head, work };
    }

    /// A complete body.
    fn on_body(&mut self, key: usize, head: Head, work: Work, body: Vec<u8>, now: Instant) {
        let close = false;
        match work {
            Work::Publish { room, binary } => {
                if !binary && std::str::from_utf8(&body).is_err() {
                    return self.refuse(
                        key,
                        400,
                        "the body is not UTF-8 (send binary as application/octet-stream)",
                        close,
                        now,
                    );
                }
                let idem = head.idempotency_key;
                if let Some(k) = &idem {
                    match self
                        .idempotency
                        .begin(k, fingerprint(&room, binary, &body), now)
                    {
                        Lookup::New => {}
                        Lookup::Replay(reply) => return self.respond(key, reply, close, now),
                        Lookup::InFlight => {
                            let why = "a request with this Idempotency-Key is still in progress";
                            return self.refuse(key, 409, why, close, now);
                        }
                        Lookup::Mismatch => {
                            let why = "this Idempotency-Key was used with another room or body";
                            return self.refuse(key, 422, why, close, now);
                        }
                    }
                }
                let call = Call::Publish {
                    path: room,
                    message: Body {
                        binary,
                        bytes: body,
                    },
                };
                self.start(key, vec![Ok(call)], false, idem, now);
            }
            Work::Batch => match batch::parse(&body, &self.config) {
                Err(why) => self.refuse(key, 413, &why, close, now),
                Ok(lines) => {
                    let calls = lines
                        .into_iter()
                        .map(|l| match l {
                            Line::Publish { room, message } => Ok(Call::Publish {
                                path: room,
                                message,
                            }),
                            Line::Refused(o) => Err(o),
                        })
                        .collect();
                    self.start(key, calls, true, None, now);
                }
            },
        }
    }

    /// Issue the calls (in order; `Err` slots are answered already) and wait for them.
    fn start(
        &mut self,
        key: usize,
        calls: Vec<Result<Call, Outcome>>,
        batch: bool,
        idempotency_key: Option<String>,
        now: Instant,
    ) {
        let serial = self.conns[key].serial;
        let mut job = Job {
            batch,
            results: Vec::with_capacity(calls.len()),
            left: 0,
        };
        let mut sent: Vec<(CallId, Call)> = Vec::new();
        for (slot, call) in calls.into_iter().enumerate() {
            match call {
                Err(o) => job.results.push(Some(o)),
                Ok(call) => {
                    job.results.push(None);
                    job.left += 1;
                    let id = self.next_call;
                    self.next_call += 1;
                    self.calls.insert(
                        id,
                        Waiter {
                            conn: key,
                            serial,
                            slot,
                            publish: matches!(call, Call::Publish { .. }),
                            idempotency_key: idempotency_key.clone(),
                        },
                    );
                    sent.push((id, call));
                }
            }
        }
        let nothing_to_wait_for = job.left == 0;
        self.conns[key].phase = Phase::Waiting(job);
        if nothing_to_wait_for {
            return self.answer(key, now);
        }
        let failed: Vec<CallId> = sent
            .into_iter()
            .filter_map(|(id, call)| (!self.backend.call(id, call)).then_some(id))
            .collect();
        for id in failed {
            let gone = Outcome::Refused {
                status: 503,
                reason: "the relay is shutting down".into(),
            };
            self.done(id, gone, now);
        }
    }

    /// An outcome is back; the connection it completed the answer of, if any (to be driven).
    pub(super) fn done(&mut self, id: CallId, outcome: Outcome, now: Instant) -> Option<usize> {
        let w = self.calls.remove(&id)?;
        let published = matches!(outcome, Outcome::Published { .. });
        if w.publish && published {
            self.counters.published(1);
        }
        if let Some(k) = &w.idempotency_key {
            // Kept whether or not the client is still there: its retry gets this answer.
            self.idempotency
                .finish(k, published.then(|| for_outcome(&outcome)));
        }
        let c = self
            .conns
            .get_mut(w.conn)
            .filter(|c| c.serial == w.serial)?;
        let Phase::Waiting(job) = &mut c.phase else {
            return None;
        };
        job.results[w.slot] = Some(outcome);
        job.left -= 1;
        if job.left > 0 {
            return None;
        }
        self.answer(w.conn, now);
        Some(w.conn)
    }

    /// Every outcome is in: the answer.
    fn answer(&mut self, key: usize, now: Instant) {
        let c = &mut self.conns[key];
        let Phase::Waiting(job) = std::mem::replace(&mut c.phase, Phase::Head) else {
            return;
        };
        let reply = if job.batch {
            let mut body = Vec::new();
            for o in job.results.iter().flatten() {
                body.extend_from_slice(batch::result_line(o).as_bytes());
                body.push(b'\n');
            }
            Reply {
                status: 200,
                content_type: NDJSON,
                body,
                allow: None,
            }
        } else {
            match job.results.first().and_then(Option::as_ref) {
                Some(o) => for_outcome(o),
                None => Reply::error(500, "no outcome"),
            }
        };
        self.respond(key, reply, false, now);
    }

    /// Answer with `{"error":…}`.
    pub(super) fn refuse(&mut self, key: usize, status: u16, why: &str, close: bool, now: Instant) {
        self.respond(key, Reply::error(status, why), close, now);
    }

    /// Queue `reply` and start writing it; `close`: the connection ends after it.
    fn respond(&mut self, key: usize, reply: Reply, close: bool, now: Instant) {
        let c = &mut self.conns[key];
        self.counters.request(c.endpoint, reply.status);
        let close = close || c.close_after || c.eof;
        c.out = reply.encode(close);
        c.written = 0;
        c.close_after = close;
        c.phase = Phase::Writing;
        c.deadline = now + self.config.server.handshake_timeout;
    }
}

/// The call a route without a body makes.
fn call_of(r: Route) -> Result<Call, Outcome> {
    Ok(match r {
        Route::Rooms { prefix, limit } => Call::Rooms { prefix, limit },
        Route::Room { room } => Call::Room { path: room },
        Route::History { room, since, limit } => Call::History {
            path: room,
            since,
            limit,
        },
        Route::Presence { room } => Call::Presence { path: room },
        Route::Disconnect { room, who, ban } => Call::Disconnect {
            path: room,
            who,
            ban,
        },
        Route::Publish { .. } | Route::Batch => unreachable!("these have bodies"),
    })
}
