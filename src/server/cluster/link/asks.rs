//! The Redis thread's commands and their answers on `cmd`: what the workers ask for (attach,
//! publish, read a stream, share presence, the API's history), matched in order with what Redis
//! answers, and what whoever waits is told when the link fails first.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{info, warn};

use super::super::envelope::splitmix64;
use super::super::resp::{self, Value};
use super::super::scripts::{self, RANGE, keys, meta_ttl, ms};
use super::super::{FromCluster, Sender, ToCluster};
use super::{BACKOFF_MIN, NOBODY, PRESENCE, Pending, Redis, Room, RoomState};
use crate::relay::RoomId;
use crate::relay::hub::Ask;
use crate::server::api::{Body, Kept, Outcome};
use crate::server::bus::Frame;
use crate::server::wire::{self, Opcode};

impl Redis {
    pub(super) fn take(&mut self, msg: ToCluster) {
        match msg {
            ToCluster::Attach { room, path, keep } => {
                let channel = self.channel(&path);
                self.channels.insert(room, channel.clone());
                let r = Room {
                    id: room,
                    keep,
                    state: RoomState::Subscribing,
                    waiting: Vec::new(),
                };
                self.rooms.insert(channel.clone(), r);
                if let Some(c) = &mut self.conns {
                    resp::command(&mut c.sub.wbuf, &[b"SUBSCRIBE", &channel]);
                }
            }
            ToCluster::Detach { room } => {
                let Some(channel) = self.channels.remove(&room) else {
                    return;
                };
                if self.rooms.get(&channel).is_some_and(|r| r.id == room) {
                    self.rooms.remove(&channel);
                    if let Some(c) = &mut self.conns {
                        resp::command(&mut c.sub.wbuf, &[b"UNSUBSCRIBE", &channel]);
                    }
                }
            }
            ToCluster::Publish {
                path,
                keep,
                sender,
                frame,
            } => self.publish(path, keep, sender, frame),
            ToCluster::Range {
                room,
                path,
                req,
                ask,
                ttl,
            } => {
                let newest_first = matches!(ask, Ask::Last(_));
                let (mode, n, limit) = match ask {
                    Ask::After(seq) => ("after", seq, crate::config::HISTORY_SIZE_CEILING),
                    Ask::Last(n) => ("last", n as u64, n),
                };
                let pending = Pending::Range {
                    room,
                    req,
                    newest_first,
                };
                let args = [
                    mode,
                    &n.to_string(),
                    &ttl.map_or("0".into(), ms),
                    &limit.to_string(),
                ];
                if self.try_range(&path, args, pending).is_err() {
                    let owner = self.owner(room);
                    self.out[owner].push(FromCluster::Ranged { req, answer: None });
                }
            }
            ToCluster::Share {
                path,
                frame,
                members,
                ask,
            } => {
                let channel = self.channel(&path);
                let Some(c) = self.conns.as_mut().filter(|c| c.ready) else {
                    return; // presence events are not kept: one lost with the link is gone
                };
                let ask = if ask { " ?" } else { "" };
                let head = format!("{PRESENCE} {:016x} {members}{ask}\n", self.node);
                let mut data = head.into_bytes();
                if let Some(frame) = frame {
                    data.extend_from_slice(wire::parts(&frame.bytes).1);
                }
                resp::command(&mut c.cmd.wbuf, &[b"PUBLISH", &channel, &data]);
                c.pending.push_back((Pending::Shared, Instant::now()));
            }
            ToCluster::History {
                path,
                since,
                limit,
                ttl,
                reply,
            } => {
                let (mode, n) = match since {
                    Some(seq) => ("after", seq),
                    None => ("last", limit as u64),
                };
                let args = [mode, &n.to_string(), &ms(ttl), &limit.to_string()];
                let pending = Pending::History {
                    path: Arc::clone(&path),
                    since,
                    newest_first: since.is_none(),
                    reply,
                };
                if let Err(Pending::History { reply, .. }) = self.try_range(&path, args, pending) {
                    reply.done(unavailable());
                }
            }
        }
    }

    pub(super) fn publish(
        &mut self,
        path: Arc<str>,
        keep: crate::relay::history::Keep,
        sender: Sender,
        frame: Arc<Frame>,
    ) {
        let channel = self.channel(&path);
        let Some(c) = self.conns.as_mut().filter(|c| c.ready) else {
            self.refuse(sender);
            return;
        };
        let (op, payload) = wire::parts(&frame.bytes);
        let op = match (op, frame.deflated.is_some()) {
            (Opcode::Binary, false) => "b",
            (Opcode::Binary, true) => "bz",
            (_, false) => "t",
            (_, true) => "tz",
        };
        let (worker, member) = match &sender {
            Sender::Member(w, m) => (w.0, *m),
            Sender::Api(_) => (u32::MAX, NOBODY),
        };
        let header = format!(
            "{:016x} {worker} {} {} {op}",
            self.node, member.key, member.generation
        );
        let candidate = format!("{:016x}", splitmix64(&mut self.rng));
        let [epoch_key, seq_key, log_key] = keys(&channel);
        resp::command(
            &mut c.cmd.wbuf,
            &[
                b"EVALSHA",
                &c.publish_sha,
                b"4",
                &epoch_key,
                &seq_key,
                &channel,
                &log_key,
                candidate.as_bytes(),
                header.as_bytes(),
                payload,
                keep.size.to_string().as_bytes(),
                ms(keep.ttl).as_bytes(),
                ms(meta_ttl(keep)).as_bytes(),
            ],
        );
        let now = Instant::now();
        let pending = Pending::Publish {
            path,
            sender,
            frame,
        };
        c.pending.push_back((pending, now));
        c.last_sent = now;
    }

    /// A message Redis did not number: dropped and counted; its sender is told.
    pub(super) fn refuse(&mut self, sender: Sender) {
        self.state.dropped.fetch_add(1, Ordering::Relaxed);
        match sender {
            Sender::Member(worker, member) => {
                if let Some(out) = self.out.get_mut(worker.0 as usize) {
                    out.push(FromCluster::Refused { member });
                }
            }
            Sender::Api(reply) => reply.done(unavailable()),
        }
    }

    /// Send the range script for `path`; `pending` back when Redis is not there to answer.
    pub(super) fn try_range(
        &mut self,
        path: &str,
        args: [&str; 4],
        pending: Pending,
    ) -> Result<(), Pending> {
        let channel = self.channel(path);
        let Some(c) = self.conns.as_mut().filter(|c| c.ready) else {
            return Err(pending);
        };
        let [epoch_key, seq_key, log_key] = keys(&channel);
        let [a, b, t, l] = args.map(str::as_bytes);
        resp::command(
            &mut c.cmd.wbuf,
            &[
                b"EVAL",
                RANGE.as_bytes(),
                b"3",
                &epoch_key,
                &seq_key,
                &log_key,
                a,
                b,
                t,
                l,
            ],
        );
        let now = Instant::now();
        c.pending.push_back((pending, now));
        c.last_sent = now;
        Ok(())
    }

    pub(super) fn on_cmd(&mut self) -> io::Result<()> {
        let Some(c) = &mut self.conns else {
            return Ok(());
        };
        c.cmd.check_connected()?;
        c.again[0] = c.cmd.fill()?;
        let values = c.cmd.values()?;
        for v in values {
            let Some(c) = &mut self.conns else {
                return Ok(());
            };
            let Some((pending, _)) = c.pending.pop_front() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an answer nobody asked for",
                ));
            };
            match pending {
                Pending::Ping => {
                    if !c.ready {
                        c.ready = true;
                        self.state.up.store(true, Ordering::Relaxed);
                        if self.failures > 0 {
                            self.state.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        info!("cluster: node {} connected to {}", self.name, self.url);
                        self.failures = 0;
                        self.backoff = BACKOFF_MIN;
                    }
                }
                Pending::Shared => {}
                Pending::Named => {
                    if let Value::Error(e) = v {
                        return Err(io::Error::other(format!("CLIENT SETNAME answered {e}")));
                    }
                }
                Pending::Load => match v {
                    Value::Bulk(Some(sha)) => c.publish_sha = sha,
                    other => {
                        let why = format!("SCRIPT LOAD answered {other:?}");
                        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
                    }
                },
                Pending::Publish { path, sender, .. } => match v {
                    Value::Error(e) => {
                        let noscript = e.starts_with("NOSCRIPT");
                        self.refuse(sender);
                        if noscript {
                            // The script cache was flushed: make the link again, which loads it.
                            return Err(io::Error::other("the publish script left Redis's cache"));
                        }
                        warn!("cluster: redis refused a message: {e}");
                    }
                    v => {
                        let (epoch, seq) = scripts::epoch_and_seq(&v)?;
                        self.state.published.fetch_add(1, Ordering::Relaxed);
                        if let Sender::Api(reply) = sender {
                            let room = path.to_string();
                            let epoch = epoch.to_string();
                            reply.done(Outcome::Published { room, epoch, seq });
                        }
                    }
                },
                Pending::Range {
                    room,
                    req,
                    newest_first,
                } => {
                    let (epoch, _, entries) = scripts::range(&v, newest_first, self.node)?;
                    let read = entries
                        .into_iter()
                        .map(|e| (e.seq, e.origin, self.frame(&e)))
                        .collect();
                    let answer = epoch.map(|epoch| (epoch, read));
                    let owner = self.owner(room);
                    self.out[owner].push(FromCluster::Ranged { req, answer });
                }
                Pending::History {
                    path,
                    since,
                    newest_first,
                    reply,
                } => {
                    let (epoch, last, entries) = scripts::range(&v, newest_first, self.node)?;
                    reply.done(history_page(&path, since, epoch, last, &entries));
                }
                Pending::Attach { channel, room } => self.attached(channel, room, v)?,
            }
        }
        Ok(())
    }

    pub(super) fn attached(&mut self, channel: Vec<u8>, room: RoomId, v: Value) -> io::Result<()> {
        let (epoch, seq) = scripts::epoch_and_seq(&v)?;
        let owner = self.owner(room);
        let Some(r) = self.rooms.get_mut(&channel).filter(|r| r.id == room) else {
            return Ok(()); // detached meanwhile
        };
        r.state = RoomState::Attached;
        self.out[owner].push(FromCluster::Attached { room, epoch, seq });
        self.out[owner].append(&mut r.waiting);
        Ok(())
    }

    /// The link failed before Redis answered `pending`: whoever waits is told.
    pub(super) fn unanswered(&mut self, pending: Pending) {
        match pending {
            Pending::Publish { sender, .. } => {
                // Numbered and published, or not: nobody knows. Members' messages are counted
                // (a gap, if it was numbered, is filled when the link is back); an API call
                // is not told it was sent.
                self.state.unconfirmed.fetch_add(1, Ordering::Relaxed);
                if let Sender::Api(reply) = sender {
                    reply.done(Outcome::Refused {
                        status: 503,
                        reason: "redis unavailable: the message may or may not have been sent"
                            .into(),
                    });
                }
            }
            Pending::Range { room, req, .. } => {
                let owner = self.owner(room);
                self.out[owner].push(FromCluster::Ranged { req, answer: None });
            }
            Pending::History { reply, .. } => reply.done(unavailable()),
            Pending::Ping
            | Pending::Shared
            | Pending::Named
            | Pending::Load
            | Pending::Attach { .. } => {}
        }
    }
}

/// What the API is told when Redis is not there to answer.
fn unavailable() -> Outcome {
    Outcome::Refused {
        status: 503,
        reason: "redis unavailable".into(),
    }
}

/// The API's history page from what the range script read: 404 when Redis has no such room,
/// 416 when `since` is older than what the stream keeps.
fn history_page(
    path: &str,
    since: Option<u64>,
    epoch: Option<crate::relay::hub::Epoch>,
    last: u64,
    entries: &[scripts::Entry<'_>],
) -> Outcome {
    let Some(epoch) = epoch else {
        return Outcome::Refused {
            status: 404,
            reason: "room not open and keeps nothing".into(),
        };
    };
    if let Some(since) = since
        && since < last
        && entries.first().is_none_or(|e| e.seq != since + 1)
    {
        return Outcome::Refused {
            status: 416,
            reason: "since is older than what the room keeps".into(),
        };
    }
    let messages = entries
        .iter()
        .map(|e| Kept {
            seq: e.seq,
            message: Body {
                binary: e.op == Opcode::Binary,
                bytes: e.payload.to_vec(),
            },
        })
        .collect();
    Outcome::History {
        room: path.to_owned(),
        epoch: epoch.to_string(),
        seq: last,
        messages,
    }
}
