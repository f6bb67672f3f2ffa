//! The acceptor's part of an API call: the room's path is resolved here, where rooms are admitted,
//! and the call goes on to the worker that carries it out.

use super::*;
use crate::server::api::{Call, CallId, Outcome, ToApi};

impl Acceptor {
    pub(super) fn api_call(&mut self, id: CallId, call: Call, reply: Mailbox<ToApi>) {
        let _ = call;
        let refused = Outcome::Refused {
            status: 503,
            reason: "the relay side of the API is not wired yet".into(),
        };
        reply.send(ToApi::Done(id, refused));
    }
}
