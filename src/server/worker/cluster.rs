//! A worker's side of `[cluster]`: the rooms it owns are numbered by the Redis thread, which
//! hands their messages back here (see `server::cluster`).

use std::sync::atomic::Ordering;

use super::super::bus::MemberId;
use super::super::cluster::{FromCluster, ToCluster};
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
                    let origin =
                        origin.map_or(ELSEWHERE, |(worker, member)| Origin { worker, member });
                    let handed =
                        self.hub
                            .sequenced(room, epoch, seq, origin, frame, &mut fanout!(self));
                    if !handed && let Some(c) = &self.cluster {
                        c.state.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
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
