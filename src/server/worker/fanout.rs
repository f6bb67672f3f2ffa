//! The hub's sink on a worker: envelopes to other workers are batched per destination; local
//! deliveries go into connections' send queues; admitted members get their 101.

use std::rc::Rc;

use slab::Slab;

use super::super::bus::{HubEnvelope, MemberId, SharedFrame};
use super::super::conn::Conn;
use super::encode;
use crate::deflate::Compressor;
use crate::metrics::Tally;
use crate::relay::hub::{Epoch, Recipients, Sink};
use crate::relay::{RoomId, WorkerId};

/// Which of a message's frames a recipient takes (`bus::Frame`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Plain,
    /// Compressed with our largest window.
    Compressed,
    /// Compressed with the smallest, for a recipient that allows less than the message needs.
    Small,
}

pub(super) struct Fanout<'a> {
    pub conns: &'a mut Slab<Conn>,
    pub dirty: &'a mut Vec<usize>,
    pub outgoing: &'a mut [Vec<HubEnvelope>],
    pub tally: &'a mut Tally,
    /// For the small-window frame, the rare time a recipient needs it (`encode::small`).
    pub compressor: &'a mut Compressor,
    /// Bytes one recipient may be given between two writes; past it, `full` is set and the
    /// pass stops taking in.
    pub share: usize,
    pub full: &'a mut bool,
}

/// The connection a member id names, if it is still the same connection.
pub(super) fn conn_of(conns: &mut Slab<Conn>, id: MemberId) -> Option<&mut Conn> {
    conns.get_mut(id.key as usize).filter(|c| c.id == id)
}

/// Put the connection on the list of those to write at the end of the pass (once).
pub(super) fn mark_dirty(conns: &mut Slab<Conn>, dirty: &mut Vec<usize>, key: usize) {
    if let Some(c) = conns.get_mut(key)
        && !c.dirty
    {
        c.dirty = true;
        dirty.push(key);
    }
}

impl Sink<SharedFrame, MemberId> for Fanout<'_> {
    fn send(&mut self, to: WorkerId, envelope: HubEnvelope) {
        self.outgoing[to.0 as usize].push(envelope);
    }

    fn deliver(
        &mut self,
        _room: RoomId,
        _seq: u64,
        frame: &SharedFrame,
        to: Recipients<'_, MemberId>,
    ) {
        // One copy per (message, flavour, worker) into a thread-local buffer, so that each
        // delivery below costs a non-atomic refcount and a queue slot. Queues take every frame:
        // whether a recipient is too slow is decided after its worker has tried to write to it.
        let mut local: [Option<Rc<[u8]>>; 3] = [None, None, None];
        for id in to {
            let Some(c) = conn_of(self.conns, id) else {
                continue;
            };
            let flavour = match (c.deflate, &frame.deflated) {
                (Some(agreed), Some(d)) if agreed.takes(d.needs) => Flavour::Compressed,
                (Some(_), Some(d)) => match encode::small(frame, d, self.compressor, self.tally) {
                    Some(_) => Flavour::Small,
                    None => Flavour::Plain,
                },
                _ => Flavour::Plain,
            };
            let local = local[flavour as usize].get_or_insert_with(|| {
                Rc::from(match (flavour, &frame.deflated) {
                    (Flavour::Compressed, Some(d)) => &d.frame[..],
                    (Flavour::Small, Some(d)) => d
                        .small
                        .get()
                        .and_then(Option::as_deref)
                        .unwrap_or(&frame.bytes),
                    _ => &frame.bytes[..],
                })
            });
            if c.deliver(local) {
                self.tally.frames_out += 1;
                if flavour != Flavour::Plain {
                    self.tally.frames_out_compressed += 1;
                }
                if c.pass_bytes as usize > self.share {
                    *self.full = true;
                }
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(id.key as usize);
                }
            }
        }
    }

    fn admitted(&mut self, _room: RoomId, member: MemberId, _epoch: Epoch, _seq: u64) {
        if let Some(c) = conn_of(self.conns, member) {
            c.admitted();
            mark_dirty(self.conns, self.dirty, member.key as usize);
        }
    }
}
