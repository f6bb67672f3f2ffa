//! What the API thread asks the relay for, and what comes back: the seam between the HTTP front
//! (the listener, requests, keys, answers) and the relay's threads (the acceptor resolves the
//! room's path, the room's owner or every worker carries the call out).
//!
//! A call goes to the acceptor (`ToAcceptor::Api`) with the mailbox its answer must reach; the
//! answer comes back on that mailbox as [`ToApi::Done`], once per call, in any order between
//! calls. Messages of one room published by calls issued in order are sequenced in that order.

use std::sync::Arc;
use std::time::Duration;

use super::super::bus::{Mailbox, ToAcceptor};
use crate::config::Config;

/// Names a call, for its answer. The front picks them; they must be unique among calls in flight.
pub type CallId = u64;

/// What the front asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Put a message into the room at `path` (with its leading slash), as a member would, with
    /// no sender (echo settings do not apply). The front has checked the size and the UTF-8 of
    /// a text message.
    Publish { path: String, message: Body },
    /// Rooms with members whose path starts with `prefix`, at most `limit`, by path.
    Rooms { prefix: String, limit: usize },
    /// One room with members (404 when it has none).
    Room { path: String },
    /// Kept messages after `since` (all kept when `None`), at most `limit`, oldest first.
    History {
        path: String,
        since: Option<u64>,
        limit: usize,
    },
    /// The members of a room with `presence = true`.
    Presence { path: String },
    /// Close the members named with 4001; with a user and `ban`, refuse that user's tokens issued
    /// before now for that long.
    Disconnect {
        path: String,
        who: Who,
        ban: Option<Duration>,
    },
}

/// A message's bytes and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub binary: bool,
    pub bytes: Vec<u8>,
}

/// Whom a disconnect names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A member id, as its welcome frame gave it.
    Member(String),
    /// Every member admitted with a token whose `sub` is this.
    User(String),
}

/// A room with members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub room: String,
    pub members: usize,
    /// 16 hex digits.
    pub epoch: String,
    pub seq: u64,
}

/// A kept message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub seq: u64,
    pub message: Body,
}

/// A member of a room with presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member: String,
    /// Its token's `sub`, in a room with `auth = "jwt"`.
    pub user: Option<String>,
    /// When it was admitted, in milliseconds since the Unix epoch.
    pub joined: u64,
}

/// What a call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Published {
        room: String,
        epoch: String,
        seq: u64,
    },
    Rooms(Vec<RoomInfo>),
    Room(RoomInfo),
    History {
        room: String,
        epoch: String,
        seq: u64,
        messages: Vec<Kept>,
    },
    Presence {
        room: String,
        members: Vec<Member>,
    },
    Disconnected(usize),
    /// The call cannot be carried out: the HTTP status (404 no such room or not open, 416 `since`
    /// older than what is kept, 503 shutting down, ...) and a one-line reason.
    Refused {
        status: u16,
        reason: String,
    },
}

/// What the API thread receives.
#[derive(Debug)]
pub enum ToApi {
    Done(CallId, Outcome),
    /// The configuration was reloaded: new rooms, limits and key.
    Reload(Arc<Config>),
}

/// The front's handle on the relay.
#[derive(Clone)]
pub struct Backend {
    acceptor: Mailbox<ToAcceptor>,
    answers: Mailbox<ToApi>,
}

impl Backend {
    #[allow(dead_code)] // the API thread makes it (server::api)
    pub(in crate::server) fn new(acceptor: Mailbox<ToAcceptor>, answers: Mailbox<ToApi>) -> Self {
        Backend { acceptor, answers }
    }

    /// Ask; the answer arrives as `ToApi::Done(id, _)`. False when the relay is gone (stopping).
    pub fn call(&self, id: CallId, call: Call) -> bool {
        self.acceptor.send(ToAcceptor::Api {
            id,
            call,
            reply: self.answers.clone(),
        })
    }
}
