//! A worker's side of `[cluster]`: the rooms it owns are numbered by the Redis thread of the
//! room's shard, which hands their messages back here (see `server::cluster`).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::super::bus::MemberId;
use super::super::cluster::{ClusterState, FromCluster, Links, LocalOrigin, ToCluster};
use super::super::wire::{self, Opcode};
use super::fanout::conn_of;
use super::{Fanout, Worker};
use crate::relay::hub::Origin;
use crate::relay::{RoomId, WorkerId};

/// The sender of a message published by another node: never one of ours, so `echo = false`
/// skips nobody.
const ELSEWHERE: Origin<MemberId> = Origin {
    worker: WorkerId(u32::MAX),
    member: MemberId {
        key: u32::MAX,
        generation: 0,
    },
};

/// The Redis threads, and where this worker's messages for them go.
pub(super) struct Cluster {
    links: Links,
    /// What this pass has for each shard, in `links.shards` order.
    batches: Vec<Vec<ToCluster>>,
    /// The shard of each room this worker owns and has attached. `Detach` carries no path, and
    /// the room's record (with its path) may be gone by then: remembering the shard at `Attach`
    /// costs one entry per attached room and spares hashing the path again.
    rooms: HashMap<RoomId, usize>,
}

impl Cluster {
    pub(super) fn new(links: Links) -> Cluster {
        Cluster {
            batches: links.shards.iter().map(|_| Vec::new()).collect(),
            links,
            rooms: HashMap::new(),
        }
    }

    /// Where this worker's own counts go (duplicates, gaps filled or not): the first shard's
    /// state. `/metrics` sums every counter over the shards, so which one holds a count the
    /// worker makes itself does not show.
    pub(super) fn counts(&self) -> &ClusterState {
        &self.links.shards[0].state
    }

    /// The state of the Redis shard the room at `path` lives on.
    pub(super) fn state_for(&self, path: &str) -> &ClusterState {
        &self.links.shards[self.links.shard_of(path)].state
    }

    /// Put `msg` in its room's shard's batch.
    fn route(&mut self, msg: ToCluster) {
        let shard = match &msg {
            ToCluster::Attach { room, path, .. } => {
                let shard = self.links.shard_of(path);
                self.rooms.insert(*room, shard);
                shard
            }
            ToCluster::Publish { path, .. }
            | ToCluster::Range { path, .. }
            | ToCluster::Share { path, .. }
            | ToCluster::History { path, .. } => self.links.shard_of(path),
            // Never attached here (closed before): no Redis thread knows it.
            ToCluster::Detach { room } => match self.rooms.remove(room) {
                Some(shard) => shard,
                None => return,
            },
        };
        self.batches[shard].push(msg);
    }
}

/// What a v1 member gets when its message could not be numbered (Redis unavailable).
const UNAVAILABLE: &str = r#"{"type":"error","code":"unavailable"}"#;

fn origin_of(origin: LocalOrigin) -> Origin<MemberId> {
    origin.map_or(ELSEWHERE, |(worker, member)| Origin { worker, member })
}

impl Worker {
    /// Carry out what the Redis thread sent about the rooms this worker owns, in order.
    pub(super) fn carry_out_cluster(&mut self, batch: Vec<FromCluster>) {
        for msg in batch {
            match msg {
                FromCluster::Attached { room, epoch, seq } => {
                    self.hub.attached(room, epoch, seq, &mut fanout!(self));
                }
                FromCluster::Message {
                    room,
                    epoch,
                    seq,
                    origin,
                    frame,
                } => {
                    let origin = origin_of(origin);
                    let handed =
                        self.hub
                            .sequenced(room, epoch, seq, origin, frame, &mut fanout!(self));
                    if !handed && let Some(c) = &self.cluster {
                        c.counts().duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
                FromCluster::Ranged { req, answer } => {
                    let answer = answer.map(|(epoch, read)| {
                        let read = read
                            .into_iter()
                            .map(|(seq, origin, frame)| (seq, origin_of(origin), frame))
                            .collect();
                        (epoch, read)
                    });
                    self.hub.ranged(req, answer, &mut fanout!(self));
                }
                FromCluster::Refused { member } => self.refused(member),
                FromCluster::Notice {
                    room,
                    node,
                    members,
                    frame,
                    ask,
                } => self
                    .hub
                    .noticed(room, node, members, frame, ask, &mut fanout!(self)),
            }
        }
        let gaps = self.hub.take_gap_counts();
        if let Some(c) = &self.cluster {
            let counts = c.counts();
            counts.filled.fetch_add(gaps.filled, Ordering::Relaxed);
            counts.missed.fetch_add(gaps.missed, Ordering::Relaxed);
            counts.resets.fetch_add(gaps.resets, Ordering::Relaxed);
        }
    }

    /// A member's message Redis did not number: a v1 member is told.
    fn refused(&mut self, member: MemberId) {
        let Some(c) = conn_of(&mut self.conns, member) else {
            return;
        };
        if !c.v1 {
            return;
        }
        let frame = wire::frame(Opcode::Text, UNAVAILABLE.as_bytes());
        if c.deliver(&Rc::from(frame)) && !c.dirty {
            c.dirty = true;
            self.dirty.push(member.key as usize);
        }
    }

    /// The room is over here: its subscription goes.
    pub(super) fn detach(&mut self, room: RoomId) {
        if self.cluster.is_some() {
            self.to_cluster.push(ToCluster::Detach { room });
        }
    }

    /// Send each Redis thread what this pass has for it: each message to its room's shard, in
    /// the pass's order (a room's messages all go to one shard, so their order holds).
    pub(super) fn flush_cluster(&mut self) {
        let Some(c) = &mut self.cluster else { return };
        if self.to_cluster.is_empty() {
            return;
        }
        for msg in self.to_cluster.drain(..) {
            c.route(msg);
        }
        for (link, batch) in c.links.shards.iter().zip(&mut c.batches) {
            if !batch.is_empty() {
                link.to_redis.send(std::mem::take(batch));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crossbeam_channel::Receiver;

    use super::super::super::bus::{Frame, Mailbox};
    use super::super::super::cluster::{Link, Sender, shard_of};
    use super::*;
    use crate::relay::history::Keep;
    use crate::relay::hub::Ask;

    fn shards(n: usize) -> (mio::Poll, Cluster, Vec<Receiver<Vec<ToCluster>>>) {
        let poll = mio::Poll::new().unwrap();
        let (mut links, mut inboxes) = (Vec::new(), Vec::new());
        for i in 0..n {
            let waker = mio::Waker::new(poll.registry(), mio::Token(i)).unwrap();
            let (to_redis, inbox) = Mailbox::new(Arc::new(waker));
            links.push(Link {
                to_redis,
                state: Arc::default(),
            });
            inboxes.push(inbox);
        }
        let node = Arc::from("n");
        (
            poll,
            Cluster::new(Links {
                shards: links,
                node,
            }),
            inboxes,
        )
    }

    fn path_on(shard: usize, n: usize) -> Arc<str> {
        let p = (0..)
            .map(|i| format!("/r/{i}"))
            .find(|p| shard_of(p, n) == shard);
        Arc::from(p.unwrap().as_str())
    }

    #[test]
    fn each_message_goes_to_its_rooms_shard_and_detach_follows_attach() {
        let (_poll, mut c, _inboxes) = shards(3);
        let (room, path) = (RoomId(7), path_on(2, 3));
        let frame = Arc::new(Frame::new(Box::from(&b"x"[..]), None));
        let member = MemberId {
            key: 1,
            generation: 0,
        };
        let keep = Keep::NONE;
        c.route(ToCluster::Attach {
            room,
            path: Arc::clone(&path),
            keep,
        });
        c.route(ToCluster::Range {
            room,
            path: Arc::clone(&path),
            req: 1,
            ask: Ask::Last(1),
            ttl: None,
        });
        c.route(ToCluster::Share {
            path: Arc::clone(&path),
            frame: Some(Arc::clone(&frame)),
            members: 1,
            ask: false,
        });
        c.route(ToCluster::Publish {
            path,
            keep,
            sender: Sender::Member(WorkerId(0), member),
            frame,
        });
        c.route(ToCluster::Detach { room });
        // Never attached: no shard knows it, nothing is sent.
        c.route(ToCluster::Detach { room: RoomId(8) });
        let kinds: Vec<Vec<&str>> = c
            .batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|m| match m {
                        ToCluster::Attach { .. } => "attach",
                        ToCluster::Publish { .. } => "publish",
                        ToCluster::Detach { .. } => "detach",
                        ToCluster::Range { .. } => "range",
                        ToCluster::Share { .. } => "share",
                        ToCluster::History { .. } => "history",
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                vec![],
                vec![],
                vec!["attach", "range", "share", "publish", "detach"]
            ]
        );
        assert!(c.rooms.is_empty(), "a detached room is forgotten");
    }
}
