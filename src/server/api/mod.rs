//! The server-side API: a listener of its own (off unless `[api]` is configured), bearer keys, and
//! calls into the relay ([`calls`]).

pub mod calls;
pub(super) mod work;

pub use calls::{Backend, Body, Call, CallId, Kept, Member, Outcome, RoomInfo, ToApi, Who};
