//! A worker's side of `[cluster]`: the rooms it owns are numbered by the Redis thread, which
//! hands their messages back here (see `server::cluster`).

use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::super::bus::MemberId;
use super::super::cluster::{FromCluster, LocalOrigin, ToCluster};
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
                        c.state.duplicates.fetch_add(1, Ordering::Relaxed);
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
            c.state.filled.fetch_add(gaps.filled, Ordering::Relaxed);
            c.state.missed.fetch_add(gaps.missed, Ordering::Relaxed);
            c.state.resets.fetch_add(gaps.resets, Ordering::Relaxed);
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

    /// Send the Redis thread what this pass has for it.
    pub(super) fn flush_cluster(&mut self) {
        if let Some(c) = &self.cluster
            && !self.to_cluster.is_empty()
        {
            c.to_redis.send(std::mem::take(&mut self.to_cluster));
        }
    }
}
