//! A worker's part of API calls: publishing into a room it sequences, the state and history of
//! its rooms, and the members it holds (presence, disconnect).

use std::sync::Arc;
use std::time::Instant;

use super::super::api::work::{Job, Part, Reply, Target};
use super::super::api::{Body, Kept, Member, Outcome, RoomInfo};
use super::super::bus::{MemberId, SharedFrame};
use super::super::cluster::{Sender, ToCluster};
use super::super::wire::{self, Opcode};
use super::Worker;
use super::encode::encode;
use super::fanout::Fanout;
use crate::metrics::CloseReason;

/// The member id a message from outside the room is published as: never a connection's (its
/// generation is 0; connections count from 1 and skip 0 when the count wraps).
const NOBODY: MemberId = MemberId {
    key: u32::MAX,
    generation: 0,
};

impl Worker {
    pub(super) fn api_job(&mut self, job: Job, reply: Reply, now: Instant) {
        match job {
            Job::Publish {
                room,
                path,
                keep,
                compress_from,
                message,
            } => {
                let op = if message.binary {
                    Opcode::Binary
                } else {
                    Opcode::Text
                };
                let frame = encode(
                    op,
                    &message.bytes,
                    compress_from,
                    &mut self.compressor,
                    &mut self.tally,
                );
                if let Some(c) = &self.cluster {
                    // Numbered in Redis: the answer comes from the Redis thread, with the
                    // cluster's number, or a 503 when the room's Redis cannot take it.
                    if !c.state_for(&path).is_up() {
                        return reply.done(Outcome::Refused {
                            status: 503,
                            reason: "redis unavailable".into(),
                        });
                    }
                    self.to_cluster.push(ToCluster::Publish {
                        path,
                        keep,
                        sender: Sender::Api(reply),
                        frame: Arc::new(frame),
                    });
                    return;
                }
                let mut sink = fanout!(self);
                let (epoch, seq) =
                    self.hub
                        .inject(room, &path, keep, Arc::new(frame), NOBODY, &mut sink);
                reply.done(Outcome::Published {
                    room: path.to_string(),
                    epoch: epoch.to_string(),
                    seq,
                });
            }
            Job::States { rooms } => {
                let infos = rooms
                    .into_iter()
                    .filter_map(|(room, path, members)| {
                        let (epoch, seq) = self.hub.owned_state(room)?;
                        Some(RoomInfo {
                            room: path,
                            members,
                            epoch: epoch.to_string(),
                            seq,
                        })
                    })
                    .collect();
                reply.part(Part::Rooms(infos));
            }
            Job::History {
                path,
                since,
                limit,
                ttl,
                ..
            } if self.cluster.is_some() => {
                // The room's stream in Redis holds its history, whichever node it was sent on.
                self.to_cluster.push(ToCluster::History {
                    path: Arc::from(path.as_str()),
                    since,
                    limit,
                    ttl,
                    reply,
                });
            }
            Job::History {
                room,
                path,
                since,
                limit,
                ..
            } => {
                let outcome = match self.hub.history_page(room, since, limit) {
                    None => Outcome::Refused {
                        status: 404,
                        reason: "room not open and keeps nothing".into(),
                    },
                    Some((_, _, Err(()))) => Outcome::Refused {
                        status: 416,
                        reason: "since is older than what the room keeps".into(),
                    },
                    Some((epoch, seq, Ok(page))) => Outcome::History {
                        room: path,
                        epoch: epoch.to_string(),
                        seq,
                        messages: page.into_iter().map(|(s, f)| kept(s, &f)).collect(),
                    },
                };
                reply.done(outcome);
            }
            Job::Presence { room } => {
                let members = self
                    .hub
                    .local_members(room)
                    .into_iter()
                    .filter_map(|id| {
                        let c = self.conns.get(id.key as usize).filter(|c| c.id == id)?;
                        Some(Member {
                            member: self.names.of(id),
                            user: c.user.as_deref().map(str::to_owned),
                            joined: c.joined,
                        })
                    })
                    .collect();
                reply.part(Part::Members(members));
            }
            Job::Disconnect { room, who } => {
                let targets: Vec<MemberId> = self
                    .hub
                    .local_members(room)
                    .into_iter()
                    .filter(|id| {
                        let Some(c) = self.conns.get(id.key as usize).filter(|c| c.id == *id)
                        else {
                            return false;
                        };
                        match &who {
                            Target::Member(generation) => id.generation == *generation,
                            Target::User(user) => c.user.as_deref() == Some(user.as_str()),
                        }
                    })
                    .collect();
                for id in &targets {
                    let reason = CloseReason::Disconnected;
                    self.close(id.key as usize, 4001, "disconnected by server", reason, now);
                }
                reply.part(Part::Disconnected(targets.len()));
            }
        }
    }
}

/// A kept message as the API shows it.
fn kept(seq: u64, frame: &SharedFrame) -> Kept {
    let (op, payload) = wire::parts(&frame.bytes);
    Kept {
        seq,
        message: Body {
            binary: op == Opcode::Binary,
            bytes: payload.to_vec(),
        },
    }
}
