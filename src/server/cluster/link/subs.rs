//! The Redis thread's subscriptions on `sub`: confirmations (then the room's state is read),
//! the rooms' messages (to their owners, in order, once attached) and the other nodes' presence.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::warn;

use super::super::FromCluster;
use super::super::envelope::{Parsed, parse_envelope, splitmix64};
use super::super::resp::{self, Value};
use super::super::scripts::{ATTACH, keys, meta_ttl, ms};
use super::{MAX_WAITING, PRESENCE, Pending, Redis, RoomState};
use crate::server::bus::Frame;
use crate::server::wire::{self, Opcode};

impl Redis {
    pub(super) fn on_sub(&mut self) -> io::Result<()> {
        let Some(c) = &mut self.conns else {
            return Ok(());
        };
        c.sub.check_connected()?;
        c.again[1] = c.sub.fill()?;
        let values = c.sub.values()?;
        for v in values {
            let items = match v {
                Value::Array(Some(items)) => items,
                Value::Simple(ok) if ok == "OK" => continue, // CLIENT SETNAME
                v => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("subscription sent {v:?}"),
                    ));
                }
            };
            match &items[..] {
                [
                    Value::Bulk(Some(kind)),
                    Value::Bulk(Some(channel)),
                    Value::Int(_),
                ] if kind == b"subscribe" => self.subscribed(channel),
                [
                    Value::Bulk(Some(kind)),
                    Value::Bulk(Some(channel)),
                    Value::Bulk(Some(data)),
                ] if kind == b"message" => self.message(channel, data),
                _ => {} // unsubscribe confirmations
            }
        }
        Ok(())
    }

    /// Redis confirmed a subscription: from now on the room's messages come in, so its last
    /// number read now leaves no gap.
    pub(super) fn subscribed(&mut self, channel: &[u8]) {
        let Some(c) = &mut self.conns else {
            return;
        };
        let Some(r) = self.rooms.get_mut(channel) else {
            return;
        };
        if r.state != RoomState::Subscribing {
            return;
        }
        r.state = RoomState::Attaching;
        let [epoch_key, seq_key, log_key] = keys(channel);
        let candidate = format!("{:016x}", splitmix64(&mut self.rng));
        let life = ms(meta_ttl(r.keep));
        resp::command(
            &mut c.cmd.wbuf,
            &[
                b"EVAL",
                ATTACH.as_bytes(),
                b"3",
                &epoch_key,
                &seq_key,
                &log_key,
                candidate.as_bytes(),
                life.as_bytes(),
            ],
        );
        let now = Instant::now();
        let (channel, room) = (channel.to_vec(), r.id);
        c.pending
            .push_back((Pending::Attach { channel, room }, now));
        c.last_sent = now;
    }

    pub(super) fn message(&mut self, channel: &[u8], data: &[u8]) {
        if let Some(rest) = data.strip_prefix(PRESENCE.as_bytes()) {
            return self.presence(channel, rest);
        }
        self.state.received.fetch_add(1, Ordering::Relaxed);
        let Some(parsed) = parse_envelope(data, self.node) else {
            warn!(
                "cluster: a message on {} that is not ours; dropped",
                String::from_utf8_lossy(channel)
            );
            return;
        };
        if !self.rooms.contains_key(channel) {
            return;
        }
        let frame = self.frame(&parsed);
        let workers = self.workers.len();
        let Parsed {
            epoch, seq, origin, ..
        } = parsed;
        let Some(r) = self.rooms.get_mut(channel) else {
            return;
        };
        let msg = FromCluster::Message {
            room: r.id,
            epoch,
            seq,
            origin,
            frame,
        };
        if r.state == RoomState::Attached {
            self.out[r.id.owner(workers).0 as usize].push(msg);
        } else if r.waiting.len() < MAX_WAITING {
            r.waiting.push(msg);
        }
    }

    /// Another node's presence (` <node> <members>[ ?]\n<event or nothing>`; `?` asks for
    /// ours) for an attached
    /// room: to its owner.
    pub(super) fn presence(&mut self, channel: &[u8], data: &[u8]) {
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            return;
        };
        let head = std::str::from_utf8(&data[..nl]).unwrap_or("");
        let mut f = head.split_ascii_whitespace();
        let node = f.next().and_then(|n| u64::from_str_radix(n, 16).ok());
        let members = f.next().and_then(|n| n.parse().ok());
        let ask = f.next() == Some("?");
        let (Some(node), Some(members)) = (node, members) else {
            return;
        };
        if node == self.node {
            return;
        }
        let Some(r) = self
            .rooms
            .get(channel)
            .filter(|r| r.state == RoomState::Attached)
        else {
            return;
        };
        let event = &data[nl + 1..];
        let frame = (!event.is_empty())
            .then(|| Arc::new(Frame::new(wire::shared(Opcode::Text, event), None)));
        let room = r.id;
        let owner = self.owner(room);
        self.out[owner].push(FromCluster::Notice {
            room,
            node,
            members,
            frame,
            ask,
        });
    }
}
