//! API calls on their way through the relay: the acceptor resolves the path and sends a [`Job`] to
//! the worker (or workers) that can carry it out; the answer goes straight back to the API thread,
//! or, for a call that asks several workers, through a [`Gather`] that the last of them sends.

use std::sync::{Arc, Mutex};

use super::calls::{Body, CallId, Member, Outcome, RoomInfo, ToApi};
use crate::relay::RoomId;
use crate::relay::history::Keep;
use crate::server::bus::Mailbox;

/// What a worker does for an API call.
#[derive(Debug)]
pub enum Job {
    /// On the room's owner: sequence the message (the room's record is made if it has none).
    Publish {
        room: RoomId,
        path: Arc<str>,
        keep: Keep,
        compress_from: Option<u32>,
        message: Body,
    },
    /// On an owner: the epoch and last number of these rooms (path, members) it sequences.
    States { rooms: Vec<(RoomId, String, usize)> },
    /// On the room's owner: kept messages after `since`.
    History {
        room: RoomId,
        path: String,
        since: Option<u64>,
        limit: usize,
        /// The room's `history_ttl` (a cluster's stream is read with it).
        ttl: std::time::Duration,
    },
    /// On every worker: its members of the room.
    Presence { room: RoomId },
    /// On one worker (a member) or every worker (a user): close them with 4001.
    Disconnect { room: RoomId, who: Target },
}

/// Whom a disconnect closes on a worker.
#[derive(Debug, Clone)]
pub enum Target {
    /// The connection number in the member's id (`<worker>-<number>`).
    Member(u32),
    User(String),
}

/// Where a job's result goes. A reply dropped unanswered (its worker stopped) answers 503.
#[derive(Debug)]
pub struct Reply(Option<To>);

#[derive(Debug)]
enum To {
    /// Straight to the API thread: the one worker's outcome is the call's.
    Direct { id: CallId, to: Mailbox<ToApi> },
    /// A share of a call several workers answer.
    Gather(Arc<Gather>),
}

impl Reply {
    pub fn direct(id: CallId, to: Mailbox<ToApi>) -> Reply {
        Reply(Some(To::Direct { id, to }))
    }

    pub fn gather(g: &Arc<Gather>) -> Reply {
        Reply(Some(To::Gather(Arc::clone(g))))
    }

    /// Answer with the whole outcome.
    pub fn done(mut self, outcome: Outcome) {
        self.answer(Part::Whole(outcome));
    }

    /// Answer with this worker's share of a gathered call.
    pub fn part(mut self, part: Part) {
        self.answer(part);
    }

    fn answer(&mut self, part: Part) {
        match self.0.take() {
            Some(To::Direct { id, to }) => {
                let outcome = match part {
                    Part::Whole(o) => o,
                    Part::Disconnected(n) => Outcome::Disconnected(n),
                    Part::Rooms(_) | Part::Members(_) => unreachable!("a share of a direct call"),
                };
                to.send(ToApi::Done(id, outcome));
            }
            Some(To::Gather(g)) => g.add(part),
            None => {}
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.0.is_some() {
            let reason = "shutting down".into();
            self.answer(Part::Whole(Outcome::Refused {
                status: 503,
                reason,
            }));
        }
    }
}

/// One worker's share of a gathered call.
#[derive(Debug)]
pub enum Part {
    Rooms(Vec<RoomInfo>),
    Members(Vec<Member>),
    Disconnected(usize),
    Whole(Outcome),
}

/// A call answered by several workers: each adds its part; the last one sends the outcome.
#[derive(Debug)]
pub struct Gather {
    id: CallId,
    to: Mailbox<ToApi>,
    kind: Kind,
    state: Mutex<(usize, Vec<Part>)>,
}

/// What a gathered call answers with.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `Rooms`, sorted by path, at most `limit`.
    Rooms {
        limit: usize,
    },
    /// `Room`, or 404 when no owner knows it.
    Room,
    Presence {
        room: String,
    },
    Disconnected,
}

impl Gather {
    /// A call `parts` workers answer.
    pub fn new(id: CallId, to: Mailbox<ToApi>, kind: Kind, parts: usize) -> Arc<Gather> {
        let g = Arc::new(Gather {
            id,
            to,
            kind,
            state: Mutex::new((parts, Vec::new())),
        });
        if parts == 0 {
            g.finish(Vec::new());
        }
        g
    }

    pub fn add(&self, part: Part) {
        let parts = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.1.push(part);
            s.0 -= 1;
            if s.0 > 0 {
                return;
            }
            std::mem::take(&mut s.1)
        };
        self.finish(parts);
    }

    fn finish(&self, parts: Vec<Part>) {
        let mut rooms = Vec::new();
        let mut members = Vec::new();
        let mut disconnected = 0;
        for p in parts {
            match p {
                Part::Rooms(r) => rooms.extend(r),
                Part::Members(m) => members.extend(m),
                Part::Disconnected(n) => disconnected += n,
                Part::Whole(outcome) => {
                    self.to.send(ToApi::Done(self.id, outcome));
                    return;
                }
            }
        }
        let outcome = match &self.kind {
            Kind::Rooms { limit } => {
                rooms.sort_by(|a, b| a.room.cmp(&b.room));
                rooms.truncate(*limit);
                Outcome::Rooms(rooms)
            }
            Kind::Room => match rooms.pop() {
                Some(r) => Outcome::Room(r),
                None => Outcome::Refused {
                    status: 404,
                    reason: "room not open".into(),
                },
            },
            Kind::Presence { room } => {
                members.sort_by(|a, b| (a.joined, &a.member).cmp(&(b.joined, &b.member)));
                Outcome::Presence {
                    room: room.clone(),
                    members,
                }
            }
            Kind::Disconnected => Outcome::Disconnected(disconnected),
        };
        self.to.send(ToApi::Done(self.id, outcome));
    }
}
