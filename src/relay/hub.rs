//! One worker's share of the rooms: its local members, and the rooms it sequences as owner.
//!
//! Every room has one owner worker ([`RoomId::owner`]). A member's message goes to the owner, which
//! stamps it with the room's next sequence number and hands it once to every worker that has
//! members of the room; each worker then gives it to its own members. Channels between two workers
//! are FIFO, so every member of a room sees the room's messages in the owner's order.
//!
//! **Membership is acknowledged.** A worker's first member of a room registers the worker with the
//! owner (`Join`); the owner answers `Joined` on the FIFO link back, and only then are the worker's
//! waiting members admitted ([`Sink::admitted`]: the server writes their 101 then). Every message
//! the owner sequences after its `Joined` follows it on the same link, so a member gets every
//! message sequenced after its admission. A worker already registered admits new members at once.
//!
//! **A room's life.** The owner keeps a room's record, with its random [`Epoch`] and a sequence that
//! starts at 1, from the first `Join` until it is told the room is over ([`Hub::close`]); workers
//! coming and going in between never restart the sequence. The record's end is the caller's
//! decision, so a room can outlive its members (history will keep it).
//!
//! **History.** The owner keeps a room's latest messages (`Keep`, see `history`). A member that
//! asks for a replay (`Want`) is admitted only when the owner's answer (`Fetched`) comes back on
//! the FIFO link: it carries the replay, and every message sequenced after it follows it, so the
//! replay and the live messages meet with no gap and no duplicate. The kept messages of all the
//! rooms a hub owns stay under its `memory`; past it the oldest messages of the largest rooms go.
//! A room whose workers are gone and whose history is empty is reported (`Hub::take_idle`) so
//! the acceptor, which alone knows whether a member is on its way, can end it.
//!
//! The hub is sans-IO: it is generic over the frame `F` (the server uses a shared, already encoded
//! frame) and the member handle `M` (the server uses its connection id), and it speaks only through
//! a [`Sink`]. The server carries the envelopes between threads and writes the frames to sockets.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::history::{History, Keep, Message, Want};
use super::{RoomId, WorkerId};
pub use reads::{Ask, GapCounts, Ranged, Read};

/// One incarnation of a room: random, so a client can tell a room that restarted (and whose
/// sequence numbers mean something else now) from the one it knew. Shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Who published a message: used to skip the sender when a room has `echo` off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<M> {
    pub worker: WorkerId,
    pub member: M,
}

/// What one worker's hub tells another's. Travels over a FIFO channel per (sender, receiver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<F, M> {
    /// `from` now has members of `room`: the owner must send it the room's messages, and answer
    /// with `Joined` carrying the same `ticket`.
    Join {
        room: RoomId,
        from: WorkerId,
        ticket: u64,
        /// The room's path (for the owner's records) and history settings.
        path: Arc<str>,
        keep: Keep,
        /// The room's presence events per second, when it has presence.
        presence: Option<u32>,
    },
    /// A member of a room with presence came (`join`) or went: `note` is the event without its
    /// number, which the owner gives it (`Sink::stamp`) in the room's order.
    Note { room: RoomId, join: bool, note: F },
    /// A presence event from the owner, for the room's v1 members.
    Notice { room: RoomId, frame: F },
    /// Cluster mode, from the owner: the room's messages up to `seq` of `epoch` cannot all be
    /// handed out (lost between Redis and this node, and not in the room's stream, or a new
    /// epoch): members go on from `seq`; v1 members get `frame` (`{"type":"reset",…}`).
    Reset {
        room: RoomId,
        epoch: Epoch,
        seq: u64,
        frame: F,
    },
    /// The owner registered the `Join` with `ticket`; `seq` is the last number it had sequenced.
    Joined {
        room: RoomId,
        ticket: u64,
        epoch: Epoch,
        seq: u64,
    },
    /// `from` has no members of `room` left.
    Leave { room: RoomId, from: WorkerId },
    /// A member of `from` (joined as `key`, request `ticket`) wants a replay before live
    /// messages.
    Fetch {
        room: RoomId,
        from: WorkerId,
        member: M,
        key: MemberKey,
        ticket: u64,
        want: Want,
    },
    /// The owner's answer to `Fetch`: `seq` is the last number it had sequenced, `replay` the
    /// kept messages the member gets first (all of those it asked for, or none).
    Fetched {
        room: RoomId,
        member: M,
        key: MemberKey,
        ticket: u64,
        welcome: Welcome<F>,
    },
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
    /// On a room's owner: the frame of a presence event, numbered with the room's last sequence
    /// number (`seq`). Rooms without presence never call it.
    fn stamp(&mut self, room: RoomId, event: Stamp<'_, F>, seq: u64) -> F
    where
        F: Clone,
    {
        let _ = (room, seq);
        match event {
            Stamp::Note(f) => f.clone(),
            Stamp::Count(_) | Stamp::Reset(_) => panic!("this sink has no presence"),
        }
    }
    /// Give a presence event to local members (those that take them).
    fn notice(&mut self, room: RoomId, frame: &F, to: Recipients<'_, M>) {
        let _ = (room, frame, to);
    }
    /// `member` is now a member of `room`: it gets `welcome.replay`, then every message
    /// sequenced after `welcome.seq`. Called once per member, from [`Hub::join`] itself when the
    /// worker is already registered with the owner and no replay is wanted, else when the owner's
    /// answer arrives.
    fn admitted(&mut self, room: RoomId, member: M, welcome: Welcome<F>) {
        let _ = (room, member, welcome);
    }
    /// Cluster mode, on the owner: sequence this message elsewhere (Redis). It comes back
    /// numbered through [`Hub::sequenced`], on this node and every other.
    fn forward(&mut self, room: RoomId, path: &Arc<str>, keep: Keep, origin: Origin<M>, frame: F) {
        let _ = (room, path, keep, origin, frame);
        panic!("this sink has no cluster");
    }
    /// Cluster mode, on the owner: a presence event numbered here, for the room's members on the
    /// other nodes (they get it through [`Hub::noticed`]).
    /// `frame` is `None` for a refresh of `members` (this node's count) alone; `ask`: the other
    /// nodes are asked for their counts (this node has just started counting the room).
    fn share(&mut self, room: RoomId, path: &Arc<str>, share: Share<'_, F>) {
        let _ = (room, path, share);
    }
    /// Cluster mode, on the owner: read the room's messages kept in the cluster (`ask`; those
    /// older than `ttl` left out). The answer is [`Hub::ranged`] with the same `req`, exactly
    /// once, also when the cluster cannot answer.
    fn range(&mut self, room: RoomId, path: &Arc<str>, req: u64, ask: Ask, ttl: Option<Duration>) {
        let _ = (room, path, req, ask, ttl);
        panic!("this sink has no cluster");
    }
    /// Cluster mode, on the owner: a room record was made; learn the room's epoch and last
    /// number from the cluster and subscribe to its messages. The answer is
    /// [`Hub::attached`], before any [`Hub::sequenced`] of the room.
    fn attach(&mut self, room: RoomId, path: &Arc<str>, keep: Keep) {
        let _ = (room, path, keep);
        panic!("this sink has no cluster");
    }
}

/// What a node tells the others about a room with presence (cluster mode).
#[derive(Debug, Clone, Copy)]
pub struct Share<'a, F> {
    /// A join, leave or count event of this node's members, numbered here.
    pub event: Option<&'a F>,
    /// This node's members of the room.
    pub members: usize,
    /// The others are asked for their counts.
    pub ask: bool,
}

/// A presence event to number: a member's join or leave, or the member count that replaces
/// the events dropped past the room's rate.
#[derive(Debug, Clone, Copy)]
pub enum Stamp<'a, F> {
    Note(&'a F),
    Count(usize),
    /// Cluster mode: members must reload, the room goes on at `seq` of this epoch.
    Reset(Epoch),
}

/// What a member learns on admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome<F> {
    pub epoch: Epoch,
    /// The room's last sequence number: live messages start after it.
    pub seq: u64,
    /// It asked to resume (`Want::Since`) and gets everything it missed.
    pub recovered: bool,
    /// Kept messages it gets before live ones, oldest first, with their numbers.
    pub replay: Vec<(u64, F)>,
    /// Members of the room, itself included, in a room with presence.
    pub members: Option<usize>,
}

/// What a member of a local room is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The owner's `Joined` for this worker.
    Joining,
    /// The owner's `Fetched` for this member.
    Fetching,
    /// Nothing: it gets the room's messages.
    In,
}

/// What [`Hub::join`] needs to know of a member's room and request.
#[derive(Debug, Clone)]
pub struct Joining<'a, F> {
    /// The room's `echo`; the first member's value holds for the local room.
    pub echo: bool,
    pub path: &'a str,
    pub keep: Keep,
    pub want: Want,
    /// In a room with presence: its events per second, and this member's join event (without
    /// its number). The member then waits for the owner's answer, which carries the count.
    pub presence: Option<(u32, F)>,
}

impl<F> Joining<'static, F> {
    /// A member of a room without history that asks for nothing but live messages.
    pub fn live(echo: bool) -> Self {
        Joining {
            echo,
            path: "",
            keep: Keep::NONE,
            want: Want::Live,
            presence: None,
        }
    }
}

/// Presence events of the rooms a hub owns: handed out (member counts included), and dropped
/// past a room's rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceCounts {
    pub sent: u64,
    pub coalesced: u64,
}

/// Kept messages, over the rooms a hub owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kept {
    pub messages: usize,
    pub bytes: usize,
}

/// The local members a message goes to: a room's admitted members minus the sender when echo
/// is off.
pub struct Recipients<'a, M> {
    members: slab::Iter<'a, (M, State)>,
    skip: Option<M>,
}

impl<M: Copy + PartialEq> Iterator for Recipients<'_, M> {
    type Item = M;

    fn next(&mut self) -> Option<M> {
        let skip = self.skip;
        self.members
            .by_ref()
            .find(|(_, (m, state))| *state == State::In && Some(*m) != skip)
            .map(|(_, &(m, _))| m)
    }
}

/// A member's place in its local room, returned by [`Hub::join`] and needed by [`Hub::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberKey(usize);

struct LocalRoom<M> {
    members: Slab<(M, State)>,
    echo: bool,
    /// The ticket of this worker's `Join`, until the owner's `Joined` arrives; members wait
    /// (and get no messages) meanwhile.
    pending: Option<u64>,
    /// The room's epoch and the last sequence number seen here, once registered: a member
    /// admitted now gets every message after `seq`.
    epoch: Epoch,
    seq: u64,
    /// Members waiting for their replay: their key and the ticket of their `Fetch`, so that an
    /// answer meant for an earlier member with the same key is told apart.
    fetching: Vec<(usize, u64)>,
}

struct OwnedRoom<F> {
    epoch: Epoch,
    /// The number the next message gets; the first is 1.
    next_seq: u64,
    /// Workers with members, in the order they joined. A handful at most: a Vec beats a set.
    workers: Vec<WorkerId>,
    path: Arc<str>,
    keep: Keep,
    history: History<F>,
    /// Reported by `take_idle` since it last had workers or kept messages.
    reported: bool,
    /// Its presence bookkeeping, when it has presence.
    presence: Option<Presence>,
}

/// A room's members and the bucket that paces its presence events.
struct Presence {
    members: usize,
    /// Events per second, and the bucket's size.
    rate: u32,
    tokens: f64,
    refilled: Instant,
    /// Events were dropped since the last count sent: send the count when the bucket allows.
    dropped: bool,
    /// Cluster mode: the other nodes' members of the room, as they last told (node, count,
    /// when), and when this node last told them its own.
    remote: Vec<(u64, usize, Instant)>,
    shared: Option<Instant>,
}

impl Presence {
    fn new(rate: u32, now: Instant) -> Presence {
        Presence {
            members: 0,
            rate,
            tokens: f64::from(rate),
            refilled: now,
            dropped: false,
            remote: Vec::new(),
            shared: None,
        }
    }

    /// Members on every node (this one's, and the others' as they last told).
    fn total(&self) -> usize {
        self.members + self.remote.iter().map(|r| r.1).sum::<usize>()
    }

    /// Take a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.rate);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One worker's rooms. See the module doc for the protocol.
pub struct Hub<F, M> {
    me: WorkerId,
    workers: usize,
    local: HashMap<RoomId, LocalRoom<M>, RoomIds>,
    owned: HashMap<RoomId, OwnedRoom<F>, RoomIds>,
    next_ticket: u64,
    /// The time the caller last gave (`set_clock`): when kept messages were kept.
    now: Instant,
    /// Bytes of kept messages this hub may hold, all its rooms together.
    memory: usize,
    kept: Kept,
    /// Owned rooms that may have become idle (no workers, nothing kept).
    maybe_idle: Vec<RoomId>,
    /// Presence events numbered and handed out, and dropped past a room's rate, since the
    /// caller last took them.
    presence_counts: PresenceCounts,
    /// splitmix64 state for epochs.
    rng: u64,
    /// Rooms are numbered by the cluster (Redis), not here: see [`Hub::set_cluster`].
    cluster: bool,
    /// Cluster mode: owned rooms waiting for [`Hub::attached`], with the envelopes about them
    /// that wait too (joins, leaves, fetches, presence notes), in order.
    parked: HashMap<RoomId, Vec<Envelope<F, M>>, RoomIds>,
    /// Cluster mode: reads of the cluster's kept messages awaited, and gaps being filled.
    cl: reads::Reads<F, M>,
    _frame: std::marker::PhantomData<fn(F)>,
}

impl<F: Message, M: Copy + PartialEq> Hub<F, M> {
    /// The hub of worker `me` among `workers` workers. `seed` makes its room epochs: pass a
    /// random one, so that a restarted daemon's rooms never reuse an epoch.
    pub fn new(me: WorkerId, workers: usize, seed: u64) -> Self {
        assert!(
            workers > 0 && (me.0 as usize) < workers,
            "worker id out of range"
        );
        Hub {
            me,
            workers,
            local: HashMap::default(),
            owned: HashMap::default(),
            next_ticket: 0,
            now: Instant::now(),
            memory: usize::MAX,
            kept: Kept::default(),
            maybe_idle: Vec::new(),
            presence_counts: PresenceCounts::default(),
            rng: seed,
            cluster: false,
            parked: HashMap::default(),
            cl: reads::Reads::default(),
            _frame: std::marker::PhantomData,
        }
    }

    /// Add a local member. The first local member of a room registers this worker with the
    /// owner; until the owner acknowledges it, members wait. A member that wants a replay waits
    /// for the owner's answer to its own request. [`Sink::admitted`] tells when each member is in
    /// (during this call when the worker is registered already and no replay is wanted).
    pub fn join(
        &mut self,
        room: RoomId,
        member: M,
        joining: Joining<'_, F>,
        sink: &mut impl Sink<F, M>,
    ) -> MemberKey {
        let local = self.local.entry(room).or_insert_with(|| LocalRoom {
            members: Slab::new(),
            echo: joining.echo,
            pending: None,
            epoch: Epoch(0),
            seq: 0,
            fetching: Vec::new(),
        });
        let first = local.members.is_empty();
        let fetches = joining.want.fetches() || joining.presence.is_some();
        let state = if fetches {
            State::Fetching
        } else if first || local.pending.is_some() {
            State::Joining
        } else {
            State::In
        };
        let key = MemberKey(local.members.insert((member, state)));
        if state == State::In {
            let welcome = Welcome {
                epoch: local.epoch,
                seq: local.seq,
                recovered: false,
                replay: Vec::new(),
                members: None,
            };
            sink.admitted(room, member, welcome);
        }
        let from = self.me;
        let join_ticket = first.then(|| {
            self.next_ticket += 1;
            self.next_ticket - 1
        });
        let fetch_ticket = fetches.then(|| {
            self.next_ticket += 1;
            self.next_ticket - 1
        });
        if let Some(t) = join_ticket {
            local.pending = Some(t);
        }
        if let Some(t) = fetch_ticket {
            local.fetching.push((key.0, t));
        }
        if let Some(ticket) = join_ticket {
            let (path, keep) = (Arc::from(joining.path), joining.keep);
            let presence = joining.presence.as_ref().map(|p| p.0);
            let join = Envelope::Join {
                room,
                from,
                ticket,
                path,
                keep,
                presence,
            };
            self.send_to_owner(room, join, sink);
        }
        if let Some((_, note)) = joining.presence {
            let note = Envelope::Note {
                room,
                join: true,
                note,
            };
            self.send_to_owner(room, note, sink);
        }
        if let Some(ticket) = fetch_ticket {
            let want = joining.want;
            let fetch = Envelope::Fetch {
                room,
                from,
                member,
                key,
                ticket,
                want,
            };
            self.send_to_owner(room, fetch, sink);
        }
        key
    }

    /// Remove a local member. The last local member of a room unregisters this worker.
    /// Leaving twice or with a stale key is ignored.
    pub fn leave(&mut self, room: RoomId, key: MemberKey, sink: &mut impl Sink<F, M>) {
        let Some(local) = self.local.get_mut(&room) else {
            return;
        };
        if local.members.try_remove(key.0).is_none() {
            return;
        }
        local.fetching.retain(|f| f.0 != key.0);
        if !local.members.is_empty() {
            return;
        }
        self.local.remove(&room);
        let from = self.me;
        self.send_to_owner(room, Envelope::Leave { room, from }, sink);
    }

    /// A member of a room with presence is leaving: tell the owner (before [`Self::leave`]).
    pub fn note_leave(&mut self, room: RoomId, note: F, sink: &mut impl Sink<F, M>) {
        let note = Envelope::Note {
            room,
            join: false,
            note,
        };
        self.send_to_owner(room, note, sink);
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
        let Some(envelope) = self.park(envelope, sink) else {
            return;
        };
        match envelope {
            Envelope::Join {
                room,
                from,
                ticket,
                path,
                keep,
                presence,
            } => {
                let now = self.now;
                let owned = self.owned.entry(room).or_insert_with(|| OwnedRoom {
                    epoch: Epoch(splitmix64(&mut self.rng)),
                    next_seq: 1,
                    workers: Vec::new(),
                    path,
                    keep,
                    history: History::default(),
                    reported: false,
                    presence: None,
                });
                owned.reported = false;
                if let Some(rate) = presence {
                    let p = owned
                        .presence
                        .get_or_insert_with(|| Presence::new(rate, now));
                    p.rate = rate;
                }
                if !owned.workers.contains(&from) {
                    owned.workers.push(from);
                }
                let (epoch, seq) = (owned.epoch, owned.next_seq - 1);
                let joined = Envelope::Joined {
                    room,
                    ticket,
                    epoch,
                    seq,
                };
                self.send_to(from, joined, sink);
            }
            Envelope::Joined {
                room,
                ticket,
                epoch,
                seq,
            } => {
                // A stale answer (the worker left and joined again meanwhile) is ignored: the
                // answer to the newer Join is still on its way.
                let Some(local) = self.local.get_mut(&room) else {
                    return;
                };
                if local.pending != Some(ticket) {
                    return;
                }
                local.pending = None;
                local.epoch = epoch;
                local.seq = seq;
                for (_, (m, state)) in &mut local.members {
                    if *state == State::Joining {
                        *state = State::In;
                        let replay = Vec::new();
                        let welcome = Welcome {
                            epoch,
                            seq,
                            recovered: false,
                            replay,
                            members: None,
                        };
                        sink.admitted(room, *m, welcome);
                    }
                }
            }
            Envelope::Leave { room, from } => {
                if let Some(owned) = self.owned.get_mut(&room) {
                    owned.workers.retain(|&w| w != from);
                    if owned.workers.is_empty() {
                        self.maybe_idle.push(room);
                    }
                }
            }
            Envelope::Fetch {
                room,
                from,
                member,
                key,
                ticket,
                want,
            } => {
                // The worker's Join came first on the same link: the record exists.
                if !self.owned.contains_key(&room) {
                    return;
                }
                if self.cluster && self.fetch_remote(room, from, member, key, ticket, want, sink) {
                    return;
                }
                let Some(owned) = self.owned.get(&room) else {
                    return;
                };
                let last = owned.next_seq - 1;
                let (recovered, replay) = match want {
                    Want::Live => (false, Vec::new()),
                    Want::Last(n) => (false, owned.history.last(n as usize)),
                    Want::Since { seq, epoch } if epoch == owned.epoch.0 => {
                        match owned.history.since(seq, last) {
                            Some(replay) => (true, replay),
                            None => (false, Vec::new()),
                        }
                    }
                    Want::Since { .. } => (false, Vec::new()),
                };
                let welcome = Welcome {
                    epoch: owned.epoch,
                    seq: last,
                    recovered,
                    replay,
                    members: owned.presence.as_ref().map(Presence::total),
                };
                let fetched = Envelope::Fetched {
                    room,
                    member,
                    key,
                    ticket,
                    welcome,
                };
                self.send_to(from, fetched, sink);
            }
            Envelope::Fetched {
                room,
                member,
                key,
                ticket,
                welcome,
            } => {
                // Gone meanwhile (it left, or the worker left the room and came back): ignored.
                let Some(local) = self.local.get_mut(&room) else {
                    return;
                };
                let Some(i) = local.fetching.iter().position(|&f| f == (key.0, ticket)) else {
                    return;
                };
                local.fetching.swap_remove(i);
                if let Some((m, state)) = local.members.get_mut(key.0)
                    && *m == member
                {
                    *state = State::In;
                    sink.admitted(room, member, welcome);
                }
            }
            Envelope::Note { room, join, note } => {
                let now = self.now;
                let Some(owned) = self.owned.get_mut(&room) else {
                    return;
                };
                let Some(p) = owned.presence.as_mut() else {
                    return;
                };
                if join {
                    p.members += 1;
                } else {
                    p.members = p.members.saturating_sub(1);
                }
                if p.take(now) {
                    let seq = owned.next_seq - 1;
                    let frame = sink.stamp(room, Stamp::Note(&note), seq);
                    self.presence_counts.sent += 1;
                    self.announce(room, frame, sink);
                } else {
                    p.dropped = true;
                    self.presence_counts.coalesced += 1;
                }
            }
            Envelope::Notice { room, frame } => self.notice_local(room, &frame, sink),
            Envelope::Reset {
                room,
                epoch,
                seq,
                frame,
            } => self.reset_local(room, epoch, seq, &frame, sink),
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

    /// The room is over (no member anywhere, and its id is never used again): the owner forgets
    /// its epoch, sequence and kept messages. Called on the owner; ignored elsewhere.
    pub fn close(&mut self, room: RoomId) {
        self.parked.remove(&room);
        self.forget(room);
        if let Some(owned) = self.owned.remove(&room) {
            self.kept.messages -= owned.history.len();
            self.kept.bytes -= owned.history.bytes();
        }
    }

    /// The time now, for the messages kept from here on and for [`Self::expire`].
    pub fn set_clock(&mut self, now: Instant) {
        self.now = now;
    }

    /// Bytes of kept messages this hub may hold over all its rooms.
    pub fn set_memory(&mut self, bytes: usize) {
        self.memory = bytes;
        self.enforce_memory();
    }

    /// New history settings for the owned rooms (a reload): `keep_of` gives a room's from its
    /// path, `None` when no room matches it any more (it keeps nothing then). Lower settings
    /// trim at once.
    pub fn set_keep(&mut self, keep_of: impl Fn(&str) -> Option<Keep>) {
        for (&room, owned) in &mut self.owned {
            owned.keep = keep_of(&owned.path).unwrap_or(Keep::NONE);
            let (n, bytes) = (owned.history.len(), owned.history.bytes());
            owned.history.trim(owned.keep.size);
            owned.history.expire(self.now, owned.keep.ttl);
            self.kept.messages -= n - owned.history.len();
            self.kept.bytes -= bytes - owned.history.bytes();
            if owned.history.is_empty() {
                self.maybe_idle.push(room);
            }
        }
    }

    /// Rooms whose presence events were dropped get the member count, when their bucket allows
    /// (called with the timers, about once a second).
    pub fn send_counts(&mut self, sink: &mut impl Sink<F, M>) {
        if self.cluster {
            self.refresh_counts(sink);
        }
        let now = self.now;
        let mut due = Vec::new();
        for (&room, owned) in &mut self.owned {
            if let Some(p) = owned.presence.as_mut()
                && p.dropped
                && p.take(now)
            {
                p.dropped = false;
                due.push((room, p.total(), owned.next_seq - 1));
            }
        }
        for (room, members, seq) in due {
            let frame = sink.stamp(room, Stamp::Count(members), seq);
            self.presence_counts.sent += 1;
            self.announce(room, frame, sink);
        }
    }

    /// Drop the kept messages past their room's `history_ttl` (at the time of `set_clock`).
    pub fn expire(&mut self) {
        for (&room, owned) in &mut self.owned {
            if owned.history.is_empty() {
                continue;
            }
            let n = owned.history.len();
            self.kept.bytes -= owned.history.expire(self.now, owned.keep.ttl);
            self.kept.messages -= n - owned.history.len();
            if owned.history.is_empty() {
                self.maybe_idle.push(room);
            }
        }
    }

    /// Owned rooms with no workers and nothing kept, each reported once until it has either
    /// again: the acceptor ends those that have no member on the way ([`Self::close`]).
    pub fn take_idle(&mut self) -> Vec<RoomId> {
        let mut idle = std::mem::take(&mut self.maybe_idle);
        idle.retain(|room| match self.owned.get_mut(room) {
            Some(o) if o.workers.is_empty() && o.history.is_empty() && !o.reported => {
                o.reported = true;
                true
            }
            _ => false,
        });
        idle
    }

    /// A message from outside the room (the API), on the room's owner: the room's record is made
    /// if it has none (a new epoch), and the message is sequenced like a member's, with no sender
    /// (`nobody` is never a member, so echo settings do not apply). Its epoch and number.
    pub fn inject(
        &mut self,
        room: RoomId,
        path: &str,
        keep: Keep,
        frame: F,
        nobody: M,
        sink: &mut impl Sink<F, M>,
    ) -> (Epoch, u64) {
        if self.cluster && !self.owned.contains_key(&room) {
            let path = Arc::from(path);
            sink.attach(room, &path, keep);
            self.parked.insert(room, Vec::new());
        }
        let owned = self.owned.entry(room).or_insert_with(|| OwnedRoom {
            epoch: Epoch(splitmix64(&mut self.rng)),
            next_seq: 1,
            workers: Vec::new(),
            path: Arc::from(path),
            keep,
            history: History::default(),
            reported: false,
            presence: None,
        });
        let epoch = owned.epoch;
        let seq = owned.next_seq;
        if owned.workers.is_empty() && keep.size == 0 {
            // Nobody to tell and nothing to keep: the room is idle as soon as it is made.
            self.maybe_idle.push(room);
        }
        let origin = Origin {
            worker: WorkerId(u32::MAX),
            member: nobody,
        };
        self.sequence(room, origin, frame, sink);
        (epoch, seq)
    }

    /// On the owner: the room's epoch, its last number, and its kept messages after `since` (the
    /// latest when `None`), at most `limit`, oldest first; `Err` when `since` is older than what
    /// is kept (some after it are gone). `None`: no such room here.
    #[allow(clippy::type_complexity)]
    pub fn history_page(
        &self,
        room: RoomId,
        since: Option<u64>,
        limit: usize,
    ) -> Option<(Epoch, u64, Result<Vec<(u64, F)>, ()>)> {
        let owned = self.owned.get(&room)?;
        let last = owned.next_seq - 1;
        let page = match since {
            None => Ok(owned.history.last(limit)),
            Some(since) if since >= last => Ok(Vec::new()),
            Some(since) => match owned.history.since(since, last) {
                Some(mut all) => {
                    all.truncate(limit);
                    Ok(all)
                }
                None => Err(()),
            },
        };
        Some((owned.epoch, last, page))
    }

    /// This worker's admitted members of a room.
    pub fn local_members(&self, room: RoomId) -> Vec<M> {
        self.local.get(&room).map_or_else(Vec::new, |l| {
            l.members
                .iter()
                .filter(|(_, (_, state))| *state == State::In)
                .map(|(_, &(m, _))| m)
                .collect()
        })
    }

    /// Presence events since the last call.
    pub fn take_presence_counts(&mut self) -> PresenceCounts {
        std::mem::take(&mut self.presence_counts)
    }

    /// Kept messages over the rooms this hub owns.
    pub fn kept(&self) -> Kept {
        self.kept
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

    /// Whether a message published here to `room` now would be handed to another thread: false
    /// only when this worker owns the room and is the only one with members.
    pub fn crosses_threads(&self, room: RoomId) -> bool {
        self.cluster
            || room.owner(self.workers) != self.me
            || self
                .owned
                .get(&room)
                .is_some_and(|o| o.workers.iter().any(|&w| w != self.me))
    }

    /// The epoch and last sequence number of a room this worker owns.
    pub fn owned_state(&self, room: RoomId) -> Option<(Epoch, u64)> {
        self.owned.get(&room).map(|o| (o.epoch, o.next_seq - 1))
    }

    /// On the owner: give a presence event to every worker with members, in the room's order
    /// (and, in cluster mode, to the other nodes).
    fn announce(&mut self, room: RoomId, frame: F, sink: &mut impl Sink<F, M>) {
        let now = self.now;
        if self.cluster
            && let Some(owned) = self.owned.get_mut(&room)
            && let Some(p) = owned.presence.as_mut()
        {
            let ask = p.shared.is_none();
            p.shared = Some(now);
            let share = Share {
                event: Some(&frame),
                members: p.members,
                ask,
            };
            sink.share(room, &owned.path, share);
        }
        self.announce_here(room, frame, sink);
    }

    /// On the owner: give a presence event to every worker with members of this node.
    pub(super) fn announce_here(&mut self, room: RoomId, frame: F, sink: &mut impl Sink<F, M>) {
        let local =
            self.to_other_workers(room, sink, |frame| Envelope::Notice { room, frame }, &frame);
        if local {
            self.notice_local(room, &frame, sink);
        }
    }

    fn notice_local(&mut self, room: RoomId, frame: &F, sink: &mut impl Sink<F, M>) {
        let Some(local) = self.local.get(&room) else {
            return;
        };
        if local.pending.is_some() {
            return;
        }
        let to = Recipients {
            members: local.members.iter(),
            skip: None,
        };
        sink.notice(room, frame, to);
    }

    /// Drop the oldest kept messages of the largest rooms until the hub holds at most 15/16 of
    /// its `memory` (so the next messages do not each start an eviction).
    fn enforce_memory(&mut self) {
        if self.kept.bytes <= self.memory {
            return;
        }
        let target = self.memory - self.memory / 16;
        let mut largest: BinaryHeap<(usize, RoomId)> = self
            .owned
            .iter()
            .filter(|(_, o)| !o.history.is_empty())
            .map(|(&r, o)| (o.history.bytes(), r))
            .collect();
        while self.kept.bytes > target {
            let Some((_, room)) = largest.pop() else {
                break;
            };
            let Some(owned) = self.owned.get_mut(&room) else {
                continue;
            };
            self.kept.bytes -= owned.history.pop_oldest();
            self.kept.messages -= 1;
            if owned.history.is_empty() {
                self.maybe_idle.push(room);
            } else {
                largest.push((owned.history.bytes(), room));
            }
        }
    }

    /// On the owner: send `envelope(frame)` to every other worker with members of the room.
    /// Returns whether this worker has members too (the caller gives them the frame itself).
    fn to_other_workers(
        &self,
        room: RoomId,
        sink: &mut impl Sink<F, M>,
        envelope: impl Fn(F) -> Envelope<F, M>,
        frame: &F,
    ) -> bool {
        let Some(owned) = self.owned.get(&room) else {
            return false;
        };
        let mut local = false;
        for &w in &owned.workers {
            if w == self.me {
                local = true;
            } else {
                sink.send(w, envelope(frame.clone()));
            }
        }
        local
    }

    /// Send to worker `to`, or carry it out here when `to` is this worker.
    fn send_to(&mut self, to: WorkerId, envelope: Envelope<F, M>, sink: &mut impl Sink<F, M>) {
        if to == self.me {
            self.handle(envelope, sink);
        } else {
            sink.send(to, envelope);
        }
    }

    fn send_to_owner(
        &mut self,
        room: RoomId,
        envelope: Envelope<F, M>,
        sink: &mut impl Sink<F, M>,
    ) {
        let owner = room.owner(self.workers);
        self.send_to(owner, envelope, sink);
    }

    fn sequence(&mut self, room: RoomId, origin: Origin<M>, frame: F, sink: &mut impl Sink<F, M>) {
        // No record: the room is over (every member left while the message was in flight).
        let Some(owned) = self.owned.get_mut(&room) else {
            return;
        };
        if self.cluster {
            sink.forward(room, &owned.path, owned.keep, origin, frame);
            return;
        }
        let seq = owned.next_seq;
        owned.next_seq += 1;
        self.fan_out(room, seq, origin, frame, sink);
    }

    /// On the owner: keep a message numbered `seq` and hand it to every worker with members.
    fn fan_out(
        &mut self,
        room: RoomId,
        seq: u64,
        origin: Origin<M>,
        frame: F,
        sink: &mut impl Sink<F, M>,
    ) {
        let Some(owned) = self.owned.get_mut(&room) else {
            return;
        };
        if owned.keep.size > 0 || !owned.history.is_empty() {
            let before = owned.history.len();
            let grew = owned.history.push(seq, &frame, self.now, owned.keep.size);
            self.kept.messages = self.kept.messages + owned.history.len() - before;
            self.kept.bytes = self.kept.bytes.saturating_add_signed(grew);
            owned.reported = false;
            if self.kept.bytes > self.memory {
                self.enforce_memory();
            }
        }
        let deliver = |frame| Envelope::Deliver {
            room,
            seq,
            origin,
            frame,
        };
        let local = self.to_other_workers(room, sink, deliver, &frame);
        if local {
            self.deliver_local(room, seq, origin, &frame, sink);
        }
    }

    fn deliver_local(
        &mut self,
        room: RoomId,
        seq: u64,
        origin: Origin<M>,
        frame: &F,
        sink: &mut impl Sink<F, M>,
    ) {
        let Some(local) = self.local.get_mut(&room) else {
            return;
        };
        if local.pending.is_some() {
            // Sequenced for an earlier registration of this worker, before the owner saw it leave.
            return;
        }
        local.seq = seq;
        let skip = (!local.echo && origin.worker == self.me).then_some(origin.member);
        let to = Recipients {
            members: local.members.iter(),
            skip,
        };
        sink.deliver(room, seq, frame, to);
    }
}

/// Hashing for room ids, which the server makes itself (consecutive numbers, never chosen by a
/// client): one multiplication instead of SipHash, which was 1.7 % of a worker's time in the 1,000
/// rooms x 10 benchmark (two lookups per message). Not the identity: the map takes its control
/// bits from the top of the hash, where consecutive ids would all be equal.
#[derive(Clone, Copy, Default)]
pub struct RoomIds;

impl std::hash::BuildHasher for RoomIds {
    type Hasher = RoomIdHasher;
    fn build_hasher(&self) -> RoomIdHasher {
        RoomIdHasher(0)
    }
}

/// See [`RoomIds`].
#[derive(Clone, Copy, Default)]
pub struct RoomIdHasher(u64);

impl std::hash::Hasher for RoomIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only ids hash here, through `write_u64`; anything else still gets a fair hash.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// splitmix64: a well-mixed 64-bit value per call from a counter.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

mod cluster;
mod cluster_presence;
#[cfg(test)]
mod cluster_sim;
mod reads;

#[cfg(test)]
pub(crate) mod tests;
