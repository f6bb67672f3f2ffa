//! Who may come in: the server-wide, per-address and per-room connection counts, and room ids.
//!
//! Lives on the acceptor thread, the one place that admits connections, so the counts need no
//! locks: a worker reports each closed connection back and the acceptor [`release`]s its ticket.
//! A room exists here from its first admitted member to its last release; each time it comes
//! back it gets a fresh [`RoomId`].
//!
//! [`release`]: Admission::release

use std::collections::HashMap;
use std::net::IpAddr;

use super::RoomId;

/// Why a connection was refused. Each maps to one HTTP status in the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` open already (503).
    ServerFull,
    /// `max_connections_per_ip` open already from this client address (429).
    TooManyFromAddress,
    /// The room has `max_members` already (503).
    RoomFull,
}

/// Proof of admission; give it back with [`Admission::release`] when the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub room: RoomId,
    pub ip: IpAddr,
}

struct RoomSlot {
    path: Box<str>,
    members: usize,
}

/// The acceptor's admission state.
pub struct Admission {
    max_connections: usize,
    max_per_address: usize,
    open: usize,
    per_address: HashMap<IpAddr, usize>,
    by_path: HashMap<Box<str>, RoomId>,
    by_id: HashMap<RoomId, RoomSlot>,
    next_room: u64,
}

impl Admission {
    /// `max_per_address` 0 means no per-address limit.
    pub fn new(max_connections: usize, max_per_address: usize) -> Self {
        Admission {
            max_connections,
            max_per_address,
            open: 0,
            per_address: HashMap::new(),
            by_path: HashMap::new(),
            by_id: HashMap::new(),
            next_room: 0,
        }
    }

    /// New limits (config reload). Connections already admitted stay.
    pub fn set_limits(&mut self, max_connections: usize, max_per_address: usize) {
        self.max_connections = max_connections;
        self.max_per_address = max_per_address;
    }

    /// Admit a connection from `ip` to the room at `path` (the request path, which for a pattern
    /// room is one room of its own), holding at most `max_members` (0: no cap).
    pub fn admit(&mut self, path: &str, max_members: usize, ip: IpAddr) -> Result<Ticket, Refusal> {
        let ip = ip.to_canonical();
        if self.open >= self.max_connections {
            return Err(Refusal::ServerFull);
        }
        let from_ip = self.per_address.get(&ip).copied().unwrap_or(0);
        if self.max_per_address > 0 && from_ip >= self.max_per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        let room = match self.by_path.get(path) {
            Some(&id) => {
                let slot = self.by_id.get_mut(&id).expect("by_path and by_id agree");
                if max_members > 0 && slot.members >= max_members {
                    return Err(Refusal::RoomFull);
                }
                slot.members += 1;
                id
            }
            None => {
                let id = RoomId(self.next_room);
                self.next_room += 1;
                self.by_path.insert(path.into(), id);
                self.by_id.insert(
                    id,
                    RoomSlot {
                        path: path.into(),
                        members: 1,
                    },
                );
                id
            }
        };
        self.open += 1;
        *self.per_address.entry(ip).or_insert(0) += 1;
        Ok(Ticket { room, ip })
    }

    /// A connection admitted with `ticket` is gone. Returns the room when that was its last
    /// member and the room does not linger: the room is over (its id is never used again), and
    /// its owner may forget it. A room whose path `lingers` (it keeps messages) stays, with no
    /// members, until [`Self::expire`]. Releasing an unknown ticket is ignored.
    pub fn release(
        &mut self,
        ticket: Ticket,
        lingers: impl FnOnce(&str) -> bool,
    ) -> Option<RoomId> {
        let slot = self.by_id.get_mut(&ticket.room)?;
        slot.members -= 1;
        let mut closed = None;
        if slot.members == 0 && !lingers(&slot.path) {
            let slot = self.by_id.remove(&ticket.room).expect("present");
            self.by_path.remove(&slot.path);
            closed = Some(ticket.room);
        }
        self.open -= 1;
        if let Some(n) = self.per_address.get_mut(&ticket.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&ticket.ip);
            }
        }
        closed
    }

    /// The owner of a lingering room found it idle (no members it knows of, nothing kept). True
    /// when the room is over now (no member was admitted meanwhile): its id is never used again.
    pub fn expire(&mut self, room: RoomId) -> bool {
        match self.by_id.get(&room) {
            Some(slot) if slot.members == 0 => {
                let slot = self.by_id.remove(&room).expect("present");
                self.by_path.remove(&slot.path);
                true
            }
            _ => false,
        }
    }

    /// The room at `path`, made (with no members) if there is none: a message published from
    /// outside needs a room to be sequenced in. A room made so with nothing to keep is idle at
    /// once, and its owner's report ends it ([`Self::expire`]).
    pub fn room_for(&mut self, path: &str) -> RoomId {
        if let Some(&id) = self.by_path.get(path) {
            return id;
        }
        let id = RoomId(self.next_room);
        self.next_room += 1;
        self.by_path.insert(path.into(), id);
        let slot = RoomSlot {
            path: path.into(),
            members: 0,
        };
        self.by_id.insert(id, slot);
        id
    }

    /// The room at `path`, if it exists (with members, or lingering).
    pub fn find(&self, path: &str) -> Option<RoomId> {
        self.by_path.get(path).copied()
    }

    /// Rooms with members whose path starts with `prefix`: id, path, members.
    pub fn open_rooms<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (RoomId, &'a str, usize)> + 'a {
        self.by_id
            .iter()
            .filter(move |(_, s)| s.members > 0 && s.path.starts_with(prefix))
            .map(|(&id, s)| (id, &*s.path, s.members))
    }

    /// Connections admitted and not yet released.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Rooms with at least one member.
    pub fn rooms(&self) -> usize {
        self.by_id.values().filter(|s| s.members > 0).count()
    }

    /// The room's path, while it has members.
    pub fn path_of(&self, room: RoomId) -> Option<&str> {
        self.by_id.get(&room).map(|s| &*s.path)
    }

    /// Members of `room` (0 when it is gone).
    pub fn members_of(&self, room: RoomId) -> usize {
        self.by_id.get(&room).map_or(0, |s| s.members)
    }

    /// Members of the room at `path` (0 when it does not exist).
    pub fn members(&self, path: &str) -> usize {
        self.by_path
            .get(path)
            .and_then(|id| self.by_id.get(id))
            .map_or(0, |s| s.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::hub::tests::Rng;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
    }

    #[test]
    fn limits_refuse_in_order_server_address_room() {
        let mut a = Admission::new(3, 2);
        let t1 = a.admit("/a", 2, ip(1)).unwrap();
        a.admit("/a", 2, ip(2)).unwrap();
        assert_eq!(a.admit("/a", 2, ip(3)), Err(Refusal::RoomFull));
        a.admit("/b", 2, ip(1)).unwrap();
        assert_eq!(a.admit("/c", 2, ip(9)), Err(Refusal::ServerFull));
        a.release(t1, |_| false);
        let t3 = a.admit("/c", 2, ip(4)).unwrap();
        a.release(t3, |_| false);
        a.admit("/c", 2, ip(1)).unwrap();
        a.set_limits(4, 2);
        assert_eq!(a.admit("/d", 2, ip(1)), Err(Refusal::TooManyFromAddress));
        assert!(a.admit("/d", 2, ip(4)).is_ok());
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let mut a = Admission::new(10, 1);
        a.admit("/a", 9, ip(1)).unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(a.admit("/a", 9, mapped), Err(Refusal::TooManyFromAddress));
    }

    #[test]
    fn max_members_0_is_no_cap() {
        let mut a = Admission::new(100, 0);
        let tickets: Vec<Ticket> = (0..50).map(|_| a.admit("/a", 0, ip(1)).unwrap()).collect();
        assert_eq!(a.members("/a"), 50);
        let closed: Vec<_> = tickets
            .into_iter()
            .filter_map(|t| a.release(t, |_| false))
            .collect();
        assert_eq!(closed.len(), 1, "only the last release closes the room");
    }

    #[test]
    fn a_room_that_empties_comes_back_with_a_new_id() {
        let mut a = Admission::new(10, 0);
        let t = a.admit("/rooms/x", 5, ip(1)).unwrap();
        assert_eq!(a.path_of(t.room), Some("/rooms/x"));
        assert_eq!(
            a.release(t, |_| false),
            Some(t.room),
            "the last member closes the room"
        );
        assert_eq!(a.rooms(), 0);
        let t2 = a.admit("/rooms/x", 5, ip(1)).unwrap();
        assert_ne!(t.room, t2.room);
        a.release(t, |_| false); // stale: ignored
        assert_eq!(a.members("/rooms/x"), 1);
    }

    #[test]
    fn a_room_with_history_lingers_until_its_owner_finds_it_idle() {
        let mut a = Admission::new(10, 0);
        let t = a.admit("/h", 5, ip(1)).unwrap();
        assert_eq!(
            a.release(t, |p| p == "/h"),
            None,
            "it keeps messages: it stays"
        );
        assert_eq!((a.rooms(), a.open()), (0, 0));
        // A member joining while it lingers joins the same room (same epoch, same history).
        let t2 = a.admit("/h", 5, ip(1)).unwrap();
        assert_eq!(t2.room, t.room);
        assert!(!a.expire(t.room), "a member is on its way: not over");
        assert_eq!(a.release(t2, |_| true), None);
        assert!(a.expire(t.room));
        assert!(!a.expire(t.room), "once");
        let t3 = a.admit("/h", 5, ip(1)).unwrap();
        assert_ne!(t3.room, t.room, "over: a new room");
    }

    #[test]
    fn seeded_admit_release_keeps_counts_exact_and_leaks_nothing() {
        for seed in 0..50 {
            let mut rng = Rng::new(seed);
            let mut a = Admission::new(40, 6);
            let mut held: Vec<(Ticket, String)> = Vec::new();
            for _ in 0..3_000 {
                if rng.below(2) == 0 && !held.is_empty() {
                    let (t, _) = held.swap_remove(rng.below(held.len()));
                    a.release(t, |_| false);
                } else {
                    let path = format!("/r/{}", rng.below(8));
                    let who = ip(rng.below(12) as u8);
                    match a.admit(&path, 7, who) {
                        Ok(t) => held.push((t, path)),
                        Err(Refusal::ServerFull) => assert_eq!(held.len(), 40),
                        Err(Refusal::TooManyFromAddress) => {
                            assert_eq!(held.iter().filter(|(t, _)| t.ip == who).count(), 6)
                        }
                        Err(Refusal::RoomFull) => {
                            assert_eq!(held.iter().filter(|(_, p)| *p == path).count(), 7)
                        }
                    }
                }
                assert_eq!(a.open(), held.len(), "seed {seed}");
                for (t, p) in &held {
                    assert_eq!(a.path_of(t.room), Some(p.as_str()), "seed {seed}");
                }
            }
            for (t, _) in held.drain(..) {
                a.release(t, |_| false);
            }
            assert_eq!((a.open(), a.rooms()), (0, 0), "seed {seed}");
            assert!(a.per_address.is_empty(), "seed {seed}");
        }
    }
}
