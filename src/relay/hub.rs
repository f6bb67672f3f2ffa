//! One worker's share of the rooms: its local members, and the rooms it sequences as owner.
//!
//! Every room has one owner worker ([`RoomId::owner`]). A member's message goes to the owner, which
//! stamps it with the room's next sequence number and hands it once to every worker that has
//! members of the room; each worker then gives it to its own members. Channels between two workers
//! are FIFO, so every member of a room sees the room's messages in the owner's order.
//!
//! **Membership is acknowledged.** A worker's first member of a room registers the worker with the
//! owner (`Join`); the owner answers `Joined` on the FIFO link back, and only then are the worker's
//! waiting members admitted ([`Sink::admitted`]: the server writes their 101 then). Every message
//! the owner sequences after its `Joined` follows it on the same link, so a member gets every
//! message sequenced after its admission. A worker already registered admits new members at once.
//!
//! **A room's life.** The owner keeps a room's record, with its random [`Epoch`] and a sequence that
//! starts at 1, from the first `Join` until it is told the room is over ([`Hub::close`]); workers
//! coming and going in between never restart the sequence. The record's end is the caller's
//! decision, so a room can outlive its members (history will keep it).
//!
//! The hub is sans-IO: it is generic over the frame `F` (the server uses a shared, already encoded
//! frame) and the member handle `M` (the server uses its connection id), and it speaks only through
//! a [`Sink`]. The server carries the envelopes between threads and writes the frames to sockets.

use std::collections::HashMap;
use std::fmt;

use slab::Slab;

use super::{RoomId, WorkerId};

/// One incarnation of a room: random, so a client can tell a room that restarted (and whose
/// sequence numbers mean something else now) from the one it knew. Shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Who published a message: used to skip the sender when a room has `echo` off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<M> {
    pub worker: WorkerId,
    pub member: M,
}

/// What one worker's hub tells another's. Travels over a FIFO channel per (sender, receiver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<F, M> {
    /// `from` now has members of `room`: the owner must send it the room's messages, and answer
    /// with `Joined` carrying the same `ticket`.
    Join {
        room: RoomId,
        from: WorkerId,
        ticket: u64,
    },
    /// The owner registered the `Join` with `ticket`; `seq` is the last number it had sequenced.
    Joined {
        room: RoomId,
        ticket: u64,
        epoch: Epoch,
        seq: u64,
    },
    /// `from` has no members of `room` left.
    Leave { room: RoomId, from: WorkerId },
    /// A member's message, on its way to the room's owner to be sequenced.
    Publish {
        room: RoomId,
        origin: Origin<M>,
        frame: F,
    },
    /// A sequenced message, on its way from the owner to a worker with members.
    Deliver {
        room: RoomId,
        seq: u64,
        origin: Origin<M>,
        frame: F,
    },
}

/// Where a hub's output goes. The server's sink queues envelopes per destination worker (flushed
/// once per loop pass) and writes frames into connections' send queues.
pub trait Sink<F, M> {
    /// Send an envelope to another worker. Never called with the hub's own id.
    fn send(&mut self, to: WorkerId, envelope: Envelope<F, M>);
    /// Give one sequenced message to local members. Called once per (message, worker).
    fn deliver(&mut self, room: RoomId, seq: u64, frame: &F, to: Recipients<'_, M>);
    /// `member` is now a member of `room`: it gets every message sequenced after `seq`. Called
    /// once per member, from [`Hub::join`] itself when the worker is already registered with the
    /// owner, else when the owner's acknowledgement arrives.
    fn admitted(&mut self, room: RoomId, member: M, epoch: Epoch, seq: u64) {
        let _ = (room, member, epoch, seq);
    }
}

/// The local members a message goes to: a room's members minus the sender when echo is off.
pub struct Recipients<'a, M> {
    members: slab::Iter<'a, M>,
    skip: Option<M>,
}

impl<M: Copy + PartialEq> Iterator for Recipients<'_, M> {
    type Item = M;

    fn next(&mut self) -> Option<M> {
        let skip = self.skip;
        self.members
            .by_ref()
            .map(|(_, &m)| m)
            .find(|&m| Some(m) != skip)
    }
}

/// A member's place in its local room, returned by [`Hub::join`] and needed by [`Hub::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberKey(usize);

struct LocalRoom<M> {
    members: Slab<M>,
    echo: bool,
    /// The ticket of this worker's `Join`, until the owner's `Joined` arrives; members wait
    /// (and get no messages) meanwhile.
    pending: Option<u64>,
    /// The room's epoch and the last sequence number seen here, once registered: a member
    /// admitted now gets every message after `seq`.
    epoch: Epoch,
    seq: u64,
}

struct OwnedRoom {
    epoch: Epoch,
    /// The number the next message gets; the first is 1.
    next_seq: u64,
    /// Workers with members, in the order they joined. A handful at most: a Vec beats a set.
    workers: Vec<WorkerId>,
}

/// One worker's rooms. See the module doc for the protocol.
pub struct Hub<F, M> {
    me: WorkerId,
    workers: usize,
    local: HashMap<RoomId, LocalRoom<M>>,
    owned: HashMap<RoomId, OwnedRoom>,
    next_ticket: u64,
    /// splitmix64 state for epochs.
    rng: u64,
    _frame: std::marker::PhantomData<fn(F)>,
}

impl<F: Clone, M: Copy + PartialEq> Hub<F, M> {
    /// The hub of worker `me` among `workers` workers. `seed` makes its room epochs: pass a
    /// random one, so that a restarted daemon's rooms never reuse an epoch.
    pub fn new(me: WorkerId, workers: usize, seed: u64) -> Self {
        assert!(
            workers > 0 && (me.0 as usize) < workers,
            "worker id out of range"
        );
        Hub {
            me,
            workers,
            local: HashMap::new(),
            owned: HashMap::new(),
            next_ticket: 0,
            rng: seed,
            _frame: std::marker::PhantomData,
        }
    }

    /// Add a local member. The first local member of a room registers this worker with the
    /// owner; until the owner acknowledges it, members wait. [`Sink::admitted`] tells when each
    /// member is in (during this call when the worker is registered already). `echo` is the
    /// room's setting; the first member's value holds for the local room.
    pub fn join(
        &mut self,
        room: RoomId,
        member: M,
        echo: bool,
        sink: &mut impl Sink<F, M>,
    ) -> MemberKey {
        let local = self.local.entry(room).or_insert_with(|| LocalRoom {
            members: Slab::new(),
            echo,
            pending: None,
            epoch: Epoch(0),
            seq: 0,
        });
        let first = local.members.is_empty();
        let key = MemberKey(local.members.insert(member));
        if first {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            local.pending = Some(ticket);
            let from = self.me;
            self.send_to_owner(room, Envelope::Join { room, from, ticket }, sink);
        } else if local.pending.is_none() {
            sink.admitted(room, member, local.epoch, local.seq);
        }
        key
    }

    /// Remove a local member. The last local member of a room unregisters this worker.
    /// Leaving twice or with a stale key is ignored.
    pub fn leave(&mut self, room: RoomId, key: MemberKey, sink: &mut impl Sink<F, M>) {
        let Some(local) = self.local.get_mut(&room) else {
            return;
        };
        if local.members.try_remove(key.0).is_none() || !local.members.is_empty() {
            return;
        }
        self.local.remove(&room);
        let from = self.me;
        self.send_to_owner(room, Envelope::Leave { room, from }, sink);
    }

    /// A local member sent a message to its room.
    pub fn publish(&mut self, room: RoomId, member: M, frame: F, sink: &mut impl Sink<F, M>) {
        let origin = Origin {
            worker: self.me,
            member,
        };
        self.send_to_owner(
            room,
            Envelope::Publish {
                room,
                origin,
                frame,
            },
            sink,
        );
    }

    /// An envelope from another worker (or from this one, routed through [`Self::publish`] etc.).
    pub fn handle(&mut self, envelope: Envelope<F, M>, sink: &mut impl Sink<F, M>) {
        match envelope {
            Envelope::Join { room, from, ticket } => {
                let owned = self.owned.entry(room).or_insert_with(|| OwnedRoom {
                    epoch: Epoch(splitmix64(&mut self.rng)),
                    next_seq: 1,
                    workers: Vec::new(),
                });
                if !owned.workers.contains(&from) {
                    owned.workers.push(from);
                }
                let (epoch, seq) = (owned.epoch, owned.next_seq - 1);
                let joined = Envelope::Joined {
                    room,
                    ticket,
                    epoch,
                    seq,
                };
                if from == self.me {
                    self.handle(joined, sink);
                } else {
                    sink.send(from, joined);
                }
            }
            Envelope::Joined {
                room,
                ticket,
                epoch,
                seq,
            } => {
                // A stale answer (the worker left and joined again meanwhile) is ignored: the
                // answer to the newer Join is still on its way.
                let Some(local) = self.local.get_mut(&room) else {
                    return;
                };
                if local.pending != Some(ticket) {
                    return;
                }
                local.pending = None;
                local.epoch = epoch;
                local.seq = seq;
                for (_, &m) in &local.members {
                    sink.admitted(room, m, epoch, seq);
                }
            }
            Envelope::Leave { room, from } => {
                if let Some(owned) = self.owned.get_mut(&room) {
                    owned.workers.retain(|&w| w != from);
                }
            }
            Envelope::Publish {
                room,
                origin,
                frame,
            } => self.sequence(room, origin, frame, sink),
            Envelope::Deliver {
                room,
                seq,
                origin,
                frame,
            } => self.deliver_local(room, seq, origin, &frame, sink),
        }
    }

    /// The room is over (no member anywhere, and its id is never used again): the owner forgets
    /// its epoch and sequence. Called on the owner; ignored elsewhere.
    pub fn close(&mut self, room: RoomId) {
        self.owned.remove(&room);
    }

    /// A reload changed the room's `echo`.
    pub fn set_echo(&mut self, room: RoomId, echo: bool) {
        if let Some(local) = self.local.get_mut(&room) {
            local.echo = echo;
        }
    }

    /// Rooms with members on this worker.
    pub fn local_rooms(&self) -> usize {
        self.local.len()
    }

    /// Rooms this worker sequences.
    pub fn owned_rooms(&self) -> usize {
        self.owned.len()
    }

    /// Whether a message published here to `room` now would be handed to another thread: false
    /// only when this worker owns the room and is the only one with members.
    pub fn crosses_threads(&self, room: RoomId) -> bool {
        room.owner(self.workers) != self.me
            || self
                .owned
                .get(&room)
                .is_some_and(|o| o.workers.iter().any(|&w| w != self.me))
    }

    /// The epoch and last sequence number of a room this worker owns.
    pub fn owned_state(&self, room: RoomId) -> Option<(Epoch, u64)> {
        self.owned.get(&room).map(|o| (o.epoch, o.next_seq - 1))
    }

    fn send_to_owner(
        &mut self,
        room: RoomId,
        envelope: Envelope<F, M>,
        sink: &mut impl Sink<F, M>,
    ) {
        let owner = room.owner(self.workers);
        if owner == self.me {
            self.handle(envelope, sink);
        } else {
            sink.send(owner, envelope);
        }
    }

    fn sequence(&mut self, room: RoomId, origin: Origin<M>, frame: F, sink: &mut impl Sink<F, M>) {
        // No record: the room is over (every member left while the message was in flight).
        let Some(owned) = self.owned.get_mut(&room) else {
            return;
        };
        let seq = owned.next_seq;
        owned.next_seq += 1;
        let mut local = false;
        for &w in &owned.workers {
            if w == self.me {
                local = true;
            } else {
                let frame = frame.clone();
                sink.send(
                    w,
                    Envelope::Deliver {
                        room,
                        seq,
                        origin,
                        frame,
                    },
                );
            }
        }
        if local {
            self.deliver_local(room, seq, origin, &frame, sink);
        }
    }

    fn deliver_local(
        &mut self,
        room: RoomId,
        seq: u64,
        origin: Origin<M>,
        frame: &F,
        sink: &mut impl Sink<F, M>,
    ) {
        let Some(local) = self.local.get_mut(&room) else {
            return;
        };
        if local.pending.is_some() {
            // Sequenced for an earlier registration of this worker, before the owner saw it leave.
            return;
        }
        local.seq = seq;
        let skip = (!local.echo && origin.worker == self.me).then_some(origin.member);
        let to = Recipients {
            members: local.members.iter(),
            skip,
        };
        sink.deliver(room, seq, frame, to);
    }
}

/// splitmix64: a well-mixed 64-bit value per call from a counter.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod tests;
