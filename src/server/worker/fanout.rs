//! The hub's sink on a worker: envelopes to other workers are batched per destination; local
//! deliveries go into connections' send queues; admitted members get their 101.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use slab::Slab;

use super::super::bus::{Frame, HubEnvelope, MemberId, Pick, SharedFrame};
use super::super::cluster::{Sender, ToCluster};
use super::super::conn::{Behind, Conn};
use super::super::wire::{self, Opcode};
use super::encode;
use crate::deflate::Compressor;
use crate::metrics::Tally;
use crate::relay::history::Keep;
use crate::relay::hub::{Ask, Origin, Recipients, Share, Sink, Stamp, Welcome};
use crate::relay::{RoomId, WorkerId};

pub(super) struct Fanout<'a> {
    pub names: &'a MemberNames,
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
    /// `[cluster]`: what goes to the Redis thread at the end of the pass.
    pub to_cluster: &'a mut Vec<ToCluster>,
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

    fn forward(
        &mut self,
        _room: RoomId,
        path: &Arc<str>,
        keep: Keep,
        origin: Origin<MemberId>,
        frame: SharedFrame,
    ) {
        let path = Arc::clone(path);
        let sender = Sender::Member(origin.worker, origin.member);
        self.to_cluster.push(ToCluster::Publish {
            path,
            keep,
            sender,
            frame,
        });
    }

    fn attach(&mut self, room: RoomId, path: &Arc<str>, keep: Keep) {
        let path = Arc::clone(path);
        self.to_cluster.push(ToCluster::Attach { room, path, keep });
    }

    fn share(&mut self, _: RoomId, path: &Arc<str>, share: Share<'_, SharedFrame>) {
        self.to_cluster.push(ToCluster::Share {
            path: Arc::clone(path),
            frame: share.event.map(Arc::clone),
            members: share.members,
            ask: share.ask,
        });
    }

    fn range(&mut self, room: RoomId, path: &Arc<str>, req: u64, ask: Ask, ttl: Option<Duration>) {
        let path = Arc::clone(path);
        self.to_cluster.push(ToCluster::Range {
            room,
            path,
            req,
            ask,
            ttl,
        });
    }

    fn deliver(
        &mut self,
        _room: RoomId,
        seq: u64,
        frame: &SharedFrame,
        to: Recipients<'_, MemberId>,
    ) {
        // One copy per (message, frame picked, worker) into a thread-local buffer, so that each
        // delivery below costs a non-atomic refcount and a queue slot. Queues take every frame:
        // whether a recipient is too slow is decided after its worker has tried to write to it.
        let mut local: [Option<Rc<[u8]>>; 5] = Default::default();
        for id in to {
            let Some(c) = conn_of(self.conns, id) else {
                continue;
            };
            if c.v1 {
                encode::v1(frame, seq, self.compressor, self.tally);
            }
            let mut pick = Pick::of(frame, c.deflate, c.v1);
            if pick == Pick::Plain
                && c.deflate.is_some()
                && let Some(d) = &frame.deflated
                && encode::small(frame, d, self.compressor, self.tally).is_some()
            {
                pick = Pick::Small;
            }
            let local = local[pick as usize].get_or_insert_with(|| Rc::from(frame.pick(pick)));
            if c.deliver(local) {
                self.tally.frames_out += 1;
                if pick.compressed() {
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

    fn stamp(&mut self, _room: RoomId, event: Stamp<'_, SharedFrame>, seq: u64) -> SharedFrame {
        let mut json = match event {
            Stamp::Note(note) => note.bytes.to_vec(),
            Stamp::Count(n) => format!("{{\"type\":\"members\",\"count\":{n}").into_bytes(),
            Stamp::Reset(epoch) => {
                format!("{{\"type\":\"reset\",\"epoch\":\"{epoch}\"").into_bytes()
            }
        };
        json.extend_from_slice(format!(",\"seq\":{seq}}}").as_bytes());
        Arc::new(Frame::new(wire::shared(Opcode::Text, &json), None))
    }

    fn notice(&mut self, _room: RoomId, frame: &SharedFrame, to: Recipients<'_, MemberId>) {
        let mut local: Option<Rc<[u8]>> = None;
        for id in to {
            let Some(c) = conn_of(self.conns, id) else {
                continue;
            };
            if !c.v1 {
                continue;
            }
            let local = local.get_or_insert_with(|| Rc::from(&frame.bytes[..]));
            if c.deliver(local) && !c.dirty {
                c.dirty = true;
                self.dirty.push(id.key as usize);
            }
        }
    }

    fn admitted(&mut self, _room: RoomId, member: MemberId, welcome: Welcome<SharedFrame>) {
        if let Some(c) = conn_of(self.conns, member) {
            let first =
                c.v1.then(|| welcome_frame(&c.path, self.names, member, &welcome));
            if c.resuming {
                match welcome.recovered {
                    true => self.tally.resumes_recovered += 1,
                    false => self.tally.resumes_unrecovered += 1,
                }
            }
            c.admitted(first, welcome.replay);
            mark_dirty(self.conns, self.dirty, member.key as usize);
        }
    }
}

/// How this worker names its members: `<worker>-<connection number>`, unique in a room on one
/// node, then `@<node>` with `[cluster]`, unique among every node's members.
#[derive(Debug, Clone)]
pub(super) struct MemberNames {
    pub me: WorkerId,
    /// `""`, or `"@<node>"` with `[cluster]`.
    pub suffix: Arc<str>,
}

impl MemberNames {
    pub(super) fn of(&self, id: MemberId) -> String {
        format!("{}-{}{}", self.me.0, id.generation, self.suffix)
    }
}

/// A v1 member's first frame.
fn welcome_frame(
    path: &str,
    names: &MemberNames,
    id: MemberId,
    w: &Welcome<SharedFrame>,
) -> Vec<u8> {
    let mut json = serde_json::json!({
        "type": "welcome",
        "room": path,
        "epoch": w.epoch.to_string(),
        "seq": w.seq,
        "member": names.of(id),
        "recovered": w.recovered,
        "replayed": w.replay.len(),
    });
    if let Some(n) = w.members {
        json["members"] = n.into();
    }
    wire::frame(Opcode::Text, json.to_string().as_bytes())
}

/// A member's join or leave event, without its number (the room's owner adds it: `stamp`):
/// `{"type":"join","member":"<id>","user":<sub or null>` — not a frame yet.
pub(super) fn presence_note(names: &MemberNames, c: &Conn, join: bool) -> SharedFrame {
    let json = serde_json::json!({
        "type": if join { "join" } else { "leave" },
        "member": names.of(c.id),
        "user": c.user.as_deref(),
    })
    .to_string();
    let open = json.strip_suffix('}').unwrap_or(&json);
    Arc::new(Frame::new(open.as_bytes().into(), None))
}

/// Move frames from behind a connection's replay into its send queue while it holds less than
/// `share` bytes. Returns whether some are still behind.
pub(super) fn top_up(
    c: &mut Conn,
    share: usize,
    compressor: &mut Compressor,
    tally: &mut Tally,
) -> bool {
    if !c.is_open() {
        return false;
    }
    while c.out.queued() < share {
        match c.next_behind() {
            None => return false,
            Some(Behind::Kept(seq, f)) => {
                if c.v1 {
                    encode::v1(&f, seq, compressor, tally);
                }
                let pick = Pick::of(&f, c.deflate, c.v1);
                tally.frames_out += 1;
                tally.messages_replayed += 1;
                if pick.compressed() {
                    tally.frames_out_compressed += 1;
                }
                c.out.push_kept(f, pick);
            }
            Some(Behind::Live(f)) => c.out.push_shared(&f),
        }
    }
    c.has_behind()
}
