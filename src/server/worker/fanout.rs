//! The hub's sink on a worker: envelopes to other workers are batched per destination; local
//! deliveries go into connections' send queues; admitted members get their 101.

use std::rc::Rc;

use slab::Slab;

use super::super::bus::{HubEnvelope, MemberId, SharedFrame};
use super::super::conn::Conn;
use crate::metrics::Tally;
use crate::relay::hub::{Epoch, Recipients, Sink};
use crate::relay::{RoomId, WorkerId};

pub(super) struct Fanout<'a> {
    pub conns: &'a mut Slab<Conn>,
    pub dirty: &'a mut Vec<usize>,
    pub outgoing: &'a mut [Vec<HubEnvelope>],
    pub tally: &'a mut Tally,
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
        // One copy per (message, worker) into a thread-local buffer, so that each delivery
        // below costs a non-atomic refcount and a queue slot. Queues take every frame: whether a
        // recipient is too slow is decided after its worker has tried to write to it.
        let mut local: Option<Rc<[u8]>> = None;
        for id in to {
            let Some(c) = conn_of(self.conns, id) else {
                continue;
            };
            let frame = local.get_or_insert_with(|| Rc::from(&frame.bytes[..]));
            if c.deliver(frame) {
                self.tally.frames_out += 1;
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
