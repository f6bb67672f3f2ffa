//! What threads tell each other. Every channel is paired with the receiver's `mio::Waker`: a
//! sender pushes, then wakes. Workers batch what they send to each other per loop pass.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crossbeam_channel::{Receiver, Sender};

use super::flow::Credit;
use crate::deflate::{Agreed, WindowBits};
use crate::relay::RoomId;
use crate::relay::admission::Ticket;
use crate::relay::history::{Keep, Message, Want};
use crate::relay::hub::Envelope;

/// A message's frames, encoded once and shared across workers, with the publisher's credit for it
/// (returned when the last worker has taken it: see `flow`).
///
/// A message has one frame per *flavour* a recipient may need, each encoded at most once, by
/// the thread that publishes it: `bytes`, the plain frame, always; `deflated`, the message
/// compressed with our largest window, when its room compresses, it is long enough and
/// compression saves bytes; and `deflated_small`, compressed with the smallest window, for a
/// recipient that asked for a window smaller than `deflated` needs (see `deflate::Agreed`).
/// Each recipient's worker picks the flavour it takes (`worker::fanout`).
///
/// `wsrelay.v1` members get the message framed with its sequence number (`v1`), made by the first
/// worker that has such a member, once (`worker::encode::v1`).
#[derive(Debug)]
pub struct Frame {
    pub bytes: Box<[u8]>,
    pub deflated: Option<Compressed>,
    pub v1: OnceLock<V1>,
    /// Held for its `Drop`: the credit returns when the last worker has let go of the frame.
    #[allow(dead_code)]
    pub credit: Option<Credit>,
}

/// A message as `wsrelay.v1` members get it: a text message in its JSON envelope, a binary one
/// behind its 8-byte sequence number; compressed too when the plain message was.
#[derive(Debug)]
pub struct V1 {
    pub frame: Box<[u8]>,
    /// Compressed with [`WindowBits::MAX`], for members whose agreement takes `needs`.
    pub deflated: Option<(Box<[u8]>, WindowBits)>,
}

/// Bytes a v1 frame adds to the plain one, about: `{"type":"message","seq":N,"data":""}`.
pub const V1_ENVELOPE: usize = 48;

/// Which of a message's frames a member takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Plain,
    /// Compressed with our largest window.
    Compressed,
    /// Compressed with the smallest, for a member that allows less than the message needs.
    Small,
    V1,
    V1Compressed,
}

impl Pick {
    /// What a member takes of `frame`, given its permessage-deflate agreement and whether it
    /// speaks `wsrelay.v1`, without the small-window frame (which must be made first: see
    /// `worker::fanout`). The v1 frames must be made already when `v1`.
    pub fn of(frame: &Frame, deflate: Option<Agreed>, v1: bool) -> Pick {
        match (v1, deflate) {
            (true, Some(a)) => match frame.v1.get().and_then(|v| v.deflated.as_ref()) {
                Some((_, needs)) if a.takes(*needs) => Pick::V1Compressed,
                _ => Pick::V1,
            },
            (true, None) => Pick::V1,
            (false, Some(a)) => match &frame.deflated {
                Some(d) if a.takes(d.needs) => Pick::Compressed,
                _ => Pick::Plain,
            },
            (false, None) => Pick::Plain,
        }
    }

    pub fn compressed(self) -> bool {
        matches!(self, Pick::Compressed | Pick::Small | Pick::V1Compressed)
    }
}

/// A message's compressed frames (RSV1 set).
#[derive(Debug)]
pub struct Compressed {
    /// Compressed with [`WindowBits::MAX`].
    pub frame: Box<[u8]>,
    /// The window a receiver needs to inflate `frame`.
    pub needs: WindowBits,
    /// Compressed with [`WindowBits::MIN`] (any receiver inflates it), for recipients that allow
    /// less than `needs`: made by the first worker that has such a recipient, once (`None`:
    /// compression saves nothing at that window, and they get the plain frame).
    pub small: OnceLock<Option<Box<[u8]>>>,
}

impl Frame {
    /// A frame of these bytes, without credit.
    pub fn new(bytes: Box<[u8]>, deflated: Option<Compressed>) -> Frame {
        Frame {
            bytes,
            deflated,
            v1: OnceLock::new(),
            credit: None,
        }
    }

    /// Bytes this message holds between threads: its plain frame and the compressed one.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.deflated.as_ref().map_or(0, |d| d.frame.len())
    }

    /// The bytes of one of its frames. A frame not made falls back to one that is: the small
    /// window's to the plain frame; the v1 frames are made before they are picked.
    pub fn pick(&self, pick: Pick) -> &[u8] {
        let v1 = || self.v1.get().expect("v1 frame made before it is picked");
        match pick {
            Pick::Plain => &self.bytes,
            Pick::Compressed => self.deflated.as_ref().map_or(&self.bytes, |d| &d.frame),
            Pick::Small => self
                .deflated
                .as_ref()
                .and_then(|d| d.small.get())
                .and_then(Option::as_deref)
                .unwrap_or(&self.bytes),
            Pick::V1 => &v1().frame,
            Pick::V1Compressed => v1().deflated.as_ref().map_or(&v1().frame, |d| &d.0),
        }
    }
}

/// History keeps shared frames. A frame that carries credit is copied (its credit must return
/// when the workers have taken it, not when history drops it); one without is shared.
impl Message for SharedFrame {
    fn kept(&self) -> Self {
        if self.credit.is_none() {
            return Arc::clone(self);
        }
        let deflated = self.deflated.as_ref().map(|d| Compressed {
            frame: d.frame.clone(),
            needs: d.needs,
            small: OnceLock::new(),
        });
        Arc::new(Frame::new(self.bytes.clone(), deflated))
    }

    /// Its frames, and its v1 frames (made on the first replay to a v1 member, so estimated:
    /// the plain frame and the envelope around it).
    fn size(&self) -> usize {
        std::mem::size_of::<Frame>() + self.len() + self.bytes.len() + V1_ENVELOPE
    }
}

/// A frame as it travels between workers.
pub type SharedFrame = Arc<Frame>;

/// A member as the hubs know it: a connection on its worker, by slab key and a generation that
/// tells apart the connections that used the same key one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId {
    pub key: u32,
    pub generation: u32,
}

/// An envelope between workers' hubs.
pub type HubEnvelope = Envelope<SharedFrame, MemberId>;

/// The room settings a connection needs on its worker.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub echo: bool,
    pub max_message_size: usize,
    /// The room's `max_messages_per_second` (0: no limit), with a burst of the same size.
    pub max_messages_per_second: u32,
    /// False for a subscribe-only client (a token with `publish: false`): a message from it is
    /// answered with close 1008.
    pub may_publish: bool,
    /// Admitted with a valid token (the room had `auth = "jwt"`).
    pub authenticated: bool,
    /// permessage-deflate as agreed in the handshake (the room has `compression` on and the
    /// client offered it).
    pub deflate: Option<Agreed>,
    /// The room's `compression_min_size` if it has `compression` on (messages shorter are sent
    /// plain), `None` if it has it off.
    pub compress_from: Option<u32>,
    /// It chose the subprotocol `wsrelay.v1`: welcome frame, messages with their numbers.
    pub v1: bool,
    /// What it asked to be replayed (`?last=`, `?since=&epoch=`).
    pub want: Want,
    /// The room's history settings.
    pub keep: Keep,
    /// Its token's `sub`, in a room with `auth = "jwt"`.
    pub user: Option<Box<str>>,
    /// The room's `presence_max_events_per_second` if it has `presence` on.
    pub presence: Option<u32>,
}

/// A connection the acceptor has admitted, on its way to a worker.
#[derive(Debug)]
pub struct Handoff {
    pub stream: mio::net::TcpStream,
    pub peer: SocketAddr,
    pub ticket: Ticket,
    pub room: RoomId,
    /// The request path, for logs.
    pub path: Box<str>,
    pub settings: RoomSettings,
    /// The 101 response, written by the worker once the member has joined.
    pub response: Vec<u8>,
    /// Bytes the client sent after its request head (its first frames).
    pub early: Vec<u8>,
}

/// What a worker receives.
#[derive(Debug)]
pub enum ToWorker {
    Conn(Box<Handoff>),
    /// Envelopes from one other worker, in the order it produced them.
    Hub(Vec<HubEnvelope>),
    /// These rooms, owned by the receiving worker, are over: no member is left anywhere, and
    /// their ids are never used again.
    RoomsClosed(Vec<RoomId>),
    /// A new configuration: timers and limits for everyone; connections whose room is gone
    /// are closed with 1001.
    Reload(Arc<WorkerConfig>),
    /// Part of an API call: carry out `job`, answer on `reply`.
    Api {
        job: super::api::work::Job,
        reply: super::api::work::Reply,
    },
    /// From the Redis thread (`[cluster]`): rooms this worker owns, attached and their
    /// messages, in order.
    Cluster(Vec<super::cluster::FromCluster>),
    /// Close every connection with 1001 and stop once they are gone (or at the deadline).
    Shutdown {
        deadline: std::time::Instant,
    },
}

/// What a reload tells the workers.
#[derive(Debug)]
pub struct WorkerConfig {
    pub timers: super::conn::Timers,
    pub send_queue_limit: usize,
    /// For routing each connection's path again.
    pub config: crate::config::Config,
}

/// What the acceptor receives from workers.
#[derive(Debug)]
pub enum ToAcceptor {
    /// These connections are gone: their admission tickets are free.
    Closed(Vec<Ticket>),
    /// These rooms, owned by the sender, have no workers and keep nothing: over, unless a member
    /// was admitted meanwhile (the acceptor answers with `RoomsClosed` for those that are).
    Idle(Vec<RoomId>),
    /// A worker has no connections left after a shutdown and has stopped.
    Stopped,
    /// A call from the API thread, to carry out and answer on `reply`.
    Api {
        id: super::api::CallId,
        call: super::api::Call,
        reply: Mailbox<super::api::ToApi>,
    },
    /// A call from the cluster registry (`cluster::registry`): answered from this node's own
    /// rooms and members, never handed on to the registry.
    Local {
        id: super::api::CallId,
        call: super::api::Call,
        reply: Mailbox<super::api::ToApi>,
    },
}

/// A channel's sending side with the receiver's waker.
pub struct Mailbox<T> {
    tx: Sender<T>,
    waker: Arc<mio::Waker>,
}

impl<T> std::fmt::Debug for Mailbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox {
            tx: self.tx.clone(),
            waker: Arc::clone(&self.waker),
        }
    }
}

impl<T> Mailbox<T> {
    pub fn new(waker: Arc<mio::Waker>) -> (Self, Receiver<T>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Mailbox { tx, waker }, rx)
    }

    /// Send and wake the receiver. False when the receiver is gone (it has stopped).
    pub fn send(&self, msg: T) -> bool {
        self.push(msg) && self.wake()
    }

    /// Send without waking: the caller wakes the receiver once after a batch.
    pub fn push(&self, msg: T) -> bool {
        self.tx.send(msg).is_ok()
    }

    /// Wake the receiver. A wake can fail only if its poll is gone, which a send also reports.
    pub fn wake(&self) -> bool {
        let _ = self.waker.wake();
        true
    }
}
