//! The sans-IO relay core: who is in which room, who sequences a room, and who may come in.
//!
//! Nothing here touches a socket or reads a clock. The server module feeds events in and carries
//! out what comes back; the tests drive the same types with plain values (see `hub` and
//! `admission` for their seeded simulations).

pub mod admission;
pub mod history;
pub mod hub;

use std::fmt;

/// Index of a worker thread, `0..workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u32);

/// One incarnation of a room. Ids are never reused: a pattern room dropped when empty and joined
/// again is a new room with a new id, so nothing in flight for the old one can reach the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u64);

impl RoomId {
    /// The worker that sequences this room. Ids are handed out in order, so consecutive rooms land
    /// on consecutive workers: an even spread without hashing.
    pub fn owner(self, workers: usize) -> WorkerId {
        WorkerId((self.0 % workers as u64) as u32)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.0)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}
