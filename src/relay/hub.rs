//! One worker's share of the rooms: its local members, and the rooms it sequences as owner.
//!
//! Every room has one owner worker ([`RoomId::owner`]). A member's message goes to the owner, which
//! stamps it with the room's next sequence number and hands it once to every worker that has
//! members of the room; each worker then gives it to its own members. Channels between two workers
//! are FIFO, so every member of a room sees the room's messages in the owner's order.
//!
//! The hub is sans-IO: it is generic over the frame `F` (the server uses a shared, already encoded
//! frame) and the member handle `M` (the server uses its connection key), and it speaks only through
//! a [`Sink`]. The server carries the envelopes between threads and writes the frames to sockets.

use std::collections::HashMap;

use slab::Slab;

use super::{RoomId, WorkerId};

/// Who published a message: used to skip the sender when a room has `echo` off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<M> {
    pub worker: WorkerId,
    pub member: M,
}

/// What one worker's hub tells another's. Travels over a FIFO channel per (sender, receiver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<F, M> {
    /// `from` now has members of `room`: the owner must send it the room's messages.
    Join { room: RoomId, from: WorkerId },
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
}

struct OwnedRoom {
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
    _frame: std::marker::PhantomData<fn(F)>,
}

impl<F: Clone, M: Copy + PartialEq> Hub<F, M> {
    /// The hub of worker `me` among `workers` workers.
    pub fn new(me: WorkerId, workers: usize) -> Self {
        assert!(
            workers > 0 && (me.0 as usize) < workers,
            "worker id out of range"
        );
        Hub {
            me,
            workers,
            local: HashMap::new(),
            owned: HashMap::new(),
            _frame: std::marker::PhantomData,
        }
    }

    /// Add a local member. The first local member of a room registers this worker with the owner.
    /// `echo` is the room's setting; the first member's value holds for the local room.
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
        });
        let first = local.members.is_empty();
        let key = MemberKey(local.members.insert(member));
        if first {
            self.send_to_owner(
                room,
                Envelope::Join {
                    room,
                    from: self.me,
                },
                sink,
            );
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
        self.send_to_owner(
            room,
            Envelope::Leave {
                room,
                from: self.me,
            },
            sink,
        );
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
            Envelope::Join { room, from } => {
                let owned = self.owned.entry(room).or_insert(OwnedRoom {
                    next_seq: 0,
                    workers: Vec::new(),
                });
                if !owned.workers.contains(&from) {
                    owned.workers.push(from);
                }
            }
            Envelope::Leave { room, from } => {
                if let Some(owned) = self.owned.get_mut(&room) {
                    owned.workers.retain(|&w| w != from);
                    if owned.workers.is_empty() {
                        self.owned.remove(&room);
                    }
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
        // No owned room: every member left while the message was in flight. Nobody to give it to.
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
        &self,
        room: RoomId,
        seq: u64,
        origin: Origin<M>,
        frame: &F,
        sink: &mut impl Sink<F, M>,
    ) {
        let Some(local) = self.local.get(&room) else {
            return;
        };
        let skip = (!local.echo && origin.worker == self.me).then_some(origin.member);
        let to = Recipients {
            members: local.members.iter(),
            skip,
        };
        sink.deliver(room, seq, frame, to);
    }
}

#[cfg(test)]
pub(crate) mod tests;
